//! The DAG shapes of OCP's agent operations, node for node as its API pages show them.
//!
//! A plan is a chain of slots; a per-host slot becomes one subtask per host
//! (`parallelIdx` = the host's index), and in batch plans a barrier ("Wait node")
//! sits between two per-host slots so that a stage starts only when every host
//! finished the one before.
//!
//! `seriesId` in OCP's examples is not the chain order but a fixed permutation of it;
//! each plan keeps the seed's permutation as the slots' ranks. For N hosts, slots
//! are numbered in rank order and a per-host slot takes N consecutive numbers, so that
//! the one-host batch is exactly the seed and every N gets unique ids `0..len`.

use std::time::Duration;

use crate::model::{AgentAction, NewSubtask, NewTask, Step, SubtaskStatus, TaskContext};
use crate::rollout::Rollout;

/// How long a step may take on its own, as OCP's templates give it.
fn own_timeout(step: Step) -> Duration {
    Duration::from_secs(match step {
        Step::StopAll | Step::StartAll => 600,
        Step::Wait => 30,
        // A 256 MiB binary over a slow link, and the agent's fsync of it.
        Step::PushPackage => 600,
        // The self-check, the drain of the agent's connections and the way back up.
        Step::SwitchAgent => 120,
        _ => 60,
    })
}

/// How long a step of a rolling task may take on top of its own time: a barrier waits
/// the pause, Start all watches its host for the health time.
fn waits(step: Step, rollout: Option<&Rollout>) -> Duration {
    let Some(rollout) = rollout else {
        return Duration::ZERO;
    };
    match step {
        Step::Wait => Duration::from_secs(u64::from(rollout.pause_seconds)),
        Step::StartAll | Step::VerifyAgent => {
            Duration::from_secs(u64::from(rollout.min_healthy_seconds))
        }
        _ => Duration::ZERO,
    }
}

/// The timeout a subtask of `step` is planned with, in seconds, as the task shows it:
/// its own, plus what its rollout asks it to wait (a barrier's pause, Start all's
/// watch of its host's health).
pub fn timeout_secs(step: Step, rollout: Option<&Rollout>) -> i64 {
    let total = own_timeout(step) + waits(step, rollout);
    i64::try_from(total.as_secs()).unwrap_or(i64::MAX)
}

/// How long a subtask may run: its planned timeout, with its own work shortened to
/// `cap` when the controller sets one; the waits its rollout asks for are kept.
pub fn run_timeout(
    planned_secs: i64,
    step: Step,
    rollout: Option<&Rollout>,
    cap: Option<Duration>,
) -> Duration {
    let planned = Duration::from_secs(u64::try_from(planned_secs).unwrap_or(0).max(1));
    match cap {
        Some(cap) => planned.min(cap + waits(step, rollout)),
        None => planned,
    }
}

/// The chain of slots of `action`, each with its seed rank.
fn slots(action: AgentAction, batch: bool) -> &'static [(Slot, i32)] {
    use Slot::{PerHost as H, Wait as W};
    match (action, batch) {
        (AgentAction::Restart, false) => &[
            (H(Step::PrepareRestart), 2),
            (H(Step::RestartProxy), 0),
            (H(Step::StopAll), 4),
            (H(Step::StartAll), 1),
            (H(Step::Finish), 3),
        ],
        (AgentAction::Restart, true) => &[
            (H(Step::PrepareRestart), 2),
            (W, 0),
            (H(Step::RestartProxy), 8),
            (W, 4),
            (H(Step::StopAll), 1),
            (W, 7),
            (H(Step::StartAll), 5),
            (W, 3),
            (H(Step::Finish), 6),
        ],
        (AgentAction::Stop, false) => &[
            (H(Step::PrepareStop), 2),
            (H(Step::StopAll), 1),
            (H(Step::Finish), 0),
        ],
        (AgentAction::Stop, true) => &[
            (H(Step::PrepareStop), 4),
            (W, 0),
            (H(Step::StopAll), 3),
            (W, 1),
            (H(Step::Finish), 2),
        ],
        (AgentAction::Start, false) => &[
            (H(Step::PrepareStart), 2),
            (H(Step::StartAll), 1),
            (H(Step::Finish), 0),
        ],
        (AgentAction::Start, true) => &[
            (H(Step::PrepareStart), 4),
            (W, 0),
            (H(Step::StartAll), 3),
            (W, 1),
            (H(Step::Finish), 2),
        ],
        // No seed shows an upgrade: its ranks follow the chain.
        (AgentAction::Upgrade, false) => &[
            (H(Step::PrepareUpgrade), 0),
            (H(Step::PushPackage), 1),
            (H(Step::SwitchAgent), 2),
            (H(Step::VerifyAgent), 3),
            (H(Step::CommitAgent), 4),
        ],
        (AgentAction::Upgrade, true) => &[
            (H(Step::PrepareUpgrade), 0),
            (W, 1),
            (H(Step::PushPackage), 2),
            (W, 3),
            (H(Step::SwitchAgent), 4),
            (W, 5),
            (H(Step::VerifyAgent), 6),
            (W, 7),
            (H(Step::CommitAgent), 8),
        ],
    }
}

/// The task's name as OCP's API pages show it.
pub fn task_name(action: AgentAction, batch: bool) -> &'static str {
    match (action, batch) {
        (AgentAction::Restart, false) => "Restart OCP agent",
        (AgentAction::Stop, false) => "Stop OCP agent",
        (AgentAction::Start, false) => "Start OCP agent",
        (AgentAction::Restart, true) => "Batch restart OCP agent",
        (AgentAction::Stop, true) => "Batch stop OCP agent",
        (AgentAction::Start, true) => "Batch start OCP agent",
        (AgentAction::Upgrade, false) => "Upgrade OCP agent",
        (AgentAction::Upgrade, true) => "Batch upgrade OCP agent",
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    PerHost(Step),
    Wait,
}

/// The single-host task: a plain chain, every `parallelIdx` -1.
pub fn single_host(op: AgentAction, host_id: i64) -> NewTask {
    let slots = slots(op, false);
    let nodes: Vec<NewSubtask> = slots
        .iter()
        .enumerate()
        .map(|(i, (slot, rank))| NewSubtask {
            step: slot.step(),
            timeout_secs: timeout_secs(slot.step(), None),
            host_id: Some(host_id),
            parallel_idx: -1,
            series_id: *rank,
            status: if i == 0 {
                SubtaskStatus::Ready
            } else {
                SubtaskStatus::Pending
            },
        })
        .collect();
    let edges = (1..nodes.len()).map(|i| (i - 1, i)).collect();
    let mut context = base_context();
    context
        .string_map
        .insert("host_id".to_string(), host_id.to_string());
    NewTask {
        name: task_name(op, false).to_string(),
        host_id: Some(host_id),
        host_ids: vec![host_id],
        context,
        rollout: None,
        nodes,
        edges,
    }
}

/// The batch task over `host_ids` (already validated: non-empty, distinct).
pub fn batch(op: AgentAction, host_ids: &[i64]) -> NewTask {
    let slots = slots(op, true);
    let n = host_ids.len() as i32;
    let series_base = series_bases(slots, n);
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    // Node indexes of the previous slot, to link the next one to.
    let mut previous: Vec<usize> = Vec::new();
    for (slot_idx, (slot, _)) in slots.iter().enumerate() {
        let current: Vec<usize> = match slot {
            Slot::Wait => {
                nodes.push(NewSubtask {
                    step: Step::Wait,
                    timeout_secs: timeout_secs(Step::Wait, None),
                    host_id: None,
                    parallel_idx: -1,
                    series_id: series_base[slot_idx],
                    status: SubtaskStatus::Pending,
                });
                vec![nodes.len() - 1]
            }
            Slot::PerHost(step) => host_ids
                .iter()
                .enumerate()
                .map(|(i, &host_id)| {
                    nodes.push(NewSubtask {
                        step: *step,
                        timeout_secs: timeout_secs(*step, None),
                        host_id: Some(host_id),
                        parallel_idx: i as i32,
                        series_id: series_base[slot_idx] + i as i32,
                        status: if slot_idx == 0 {
                            SubtaskStatus::Ready
                        } else {
                            SubtaskStatus::Pending
                        },
                    });
                    nodes.len() - 1
                })
                .collect(),
        };
        for &up in &previous {
            for &down in &current {
                // Per-host stages only meet through barriers: Prepare_i never feeds RestartPosProxy_j.
                edges.push((up, down));
            }
        }
        previous = current;
    }
    batch_task(op, host_ids, None, nodes, edges)
}

/// The rolling batch task over `host_ids`: batches of `rollout.hosts_per_batch` hosts
/// in the order given, each host running the single-host chain on its own, the hosts
/// of a batch side by side, and a "Wait node" between two batches that every host of
/// the first feeds and that feeds every host of the next. Per-host steps keep the
/// host's `parallelIdx`; `seriesId` follows the nodes' order, which no seed fixes.
pub fn rolling(op: AgentAction, host_ids: &[i64], rollout: &Rollout) -> NewTask {
    let chain = slots(op, false);
    let per_batch = rollout.hosts_per_batch(host_ids.len());
    let mut nodes: Vec<NewSubtask> = Vec::new();
    let mut edges = Vec::new();
    // The last steps of the batch before, which the next barrier waits for.
    let mut ends: Vec<usize> = Vec::new();
    for (batch, hosts) in host_ids.chunks(per_batch).enumerate() {
        let barrier = (batch > 0).then(|| {
            nodes.push(NewSubtask {
                step: Step::Wait,
                timeout_secs: timeout_secs(Step::Wait, Some(rollout)),
                host_id: None,
                parallel_idx: -1,
                series_id: nodes.len() as i32,
                status: SubtaskStatus::Pending,
            });
            let barrier = nodes.len() - 1;
            edges.extend(ends.drain(..).map(|end| (end, barrier)));
            barrier
        });
        for (offset, &host_id) in hosts.iter().enumerate() {
            let parallel_idx = (batch * per_batch + offset) as i32;
            for (position, (slot, _)) in chain.iter().enumerate() {
                let first = position == 0;
                nodes.push(NewSubtask {
                    step: slot.step(),
                    timeout_secs: timeout_secs(slot.step(), Some(rollout)),
                    host_id: Some(host_id),
                    parallel_idx,
                    series_id: nodes.len() as i32,
                    status: if first && barrier.is_none() {
                        SubtaskStatus::Ready
                    } else {
                        SubtaskStatus::Pending
                    },
                });
                let node = nodes.len() - 1;
                match (first, barrier) {
                    (true, Some(barrier)) => edges.push((barrier, node)),
                    (true, None) => {}
                    (false, _) => edges.push((node - 1, node)),
                }
            }
            ends.push(nodes.len() - 1);
        }
    }
    batch_task(op, host_ids, Some(*rollout), nodes, edges)
}

fn batch_task(
    op: AgentAction,
    host_ids: &[i64],
    rollout: Option<Rollout>,
    nodes: Vec<NewSubtask>,
    edges: Vec<(usize, usize)>,
) -> NewTask {
    let mut context = base_context();
    context.list_map.insert(
        crate::model::ocp::HOST_IDS.to_string(),
        host_ids.iter().map(i64::to_string).collect(),
    );
    NewTask {
        name: task_name(op, true).to_string(),
        host_id: None,
        host_ids: host_ids.to_vec(),
        context,
        rollout,
        nodes,
        edges,
    }
}

impl Slot {
    fn step(self) -> Step {
        match self {
            Slot::PerHost(step) => step,
            Slot::Wait => Step::Wait,
        }
    }

    fn width(self, hosts: i32) -> i32 {
        match self {
            Slot::PerHost(_) => hosts,
            Slot::Wait => 1,
        }
    }
}

/// The first `seriesId` of each slot: slots take numbers in the order of their ranks.
fn series_bases(slots: &[(Slot, i32)], hosts: i32) -> Vec<i32> {
    let mut by_rank: Vec<usize> = (0..slots.len()).collect();
    by_rank.sort_by_key(|&i| slots[i].1);
    let mut bases = vec![0; slots.len()];
    let mut next = 0;
    for i in by_rank {
        bases[i] = next;
        next += slots[i].0.width(hosts);
    }
    bases
}

fn base_context() -> TaskContext {
    TaskContext {
        parallel_idx: -1,
        ..TaskContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_restart_has_5n_plus_4_nodes_with_barriers_between_stages() {
        let plan = batch(AgentAction::Restart, &[10, 11, 12]);
        assert_eq!(plan.nodes.len(), 5 * 3 + 4);
        let waits: Vec<usize> = (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].step == Step::Wait)
            .collect();
        assert_eq!(waits.len(), 4);
        for w in waits {
            let ups = plan.edges.iter().filter(|e| e.1 == w).count();
            let downs = plan.edges.iter().filter(|e| e.0 == w).count();
            assert_eq!((ups, downs), (3, 3), "each barrier joins every host");
        }
        let mut series: Vec<i32> = plan.nodes.iter().map(|n| n.series_id).collect();
        series.sort();
        assert_eq!(series, (0..19).collect::<Vec<_>>());
        let ready = plan
            .nodes
            .iter()
            .filter(|n| n.status == SubtaskStatus::Ready)
            .count();
        assert_eq!(ready, 3, "only the Prepare steps start READY");
    }

    #[test]
    fn one_host_batch_restart_matches_the_seed_series_ids() {
        let plan = batch(AgentAction::Restart, &[2]);
        let got: Vec<(&str, i32, i32)> = plan
            .nodes
            .iter()
            .map(|n| (n.step.name(), n.series_id, n.parallel_idx))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Prepare restart OCP agent", 2, 0),
                ("Wait node", 0, -1),
                ("Restart pos proxy", 8, 0),
                ("Wait node", 4, -1),
                ("Stop all OCP agent processes", 1, 0),
                ("Wait node", 7, -1),
                ("Start all OCP agent processes", 5, 0),
                ("Wait node", 3, -1),
                ("Finish OCP agent operation", 6, 0),
            ]
        );
        assert_eq!(plan.context.list_map["host_ids"], vec!["2".to_string()]);
    }

    fn rollout(batch_size: &str) -> Rollout {
        crate::rollout::RolloutInput {
            batch_size: Some(batch_size.to_string()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn a_subtask_is_planned_with_its_steps_time_plus_its_rollouts_waits() {
        let plain = batch(AgentAction::Restart, &[1, 2]);
        let of = |plan: &NewTask, step| {
            let node = plan.nodes.iter().find(|n| n.step == step).expect("step");
            node.timeout_secs
        };
        assert_eq!(of(&plain, Step::StartAll), 600);
        assert_eq!(of(&plain, Step::Wait), 30);
        assert_eq!(of(&plain, Step::PrepareRestart), 60);
        let mut slow = rollout("1");
        slow.pause_seconds = 45;
        slow.min_healthy_seconds = 20;
        let rolling = rolling(AgentAction::Restart, &[1, 2], &slow);
        assert_eq!(of(&rolling, Step::StartAll), 620);
        assert_eq!(of(&rolling, Step::Wait), 75);
        assert_eq!(of(&rolling, Step::StopAll), 600);
    }

    #[test]
    fn a_cap_shortens_a_steps_own_work_but_not_its_rollouts_waits() {
        let mut slow = rollout("1");
        slow.min_healthy_seconds = 20;
        let cap = Some(Duration::from_secs(5));
        let planned = timeout_secs(Step::StartAll, Some(&slow));
        assert_eq!(
            run_timeout(planned, Step::StartAll, Some(&slow), cap),
            Duration::from_secs(25)
        );
        assert_eq!(
            run_timeout(600, Step::StopAll, None, cap),
            Duration::from_secs(5)
        );
        assert_eq!(
            run_timeout(600, Step::StopAll, None, None),
            Duration::from_secs(600)
        );
        assert_eq!(
            run_timeout(0, Step::Finish, None, None),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn rolling_restart_chains_each_host_and_puts_a_barrier_between_batches() {
        let plan = rolling(AgentAction::Restart, &[10, 11, 12, 13, 14], &rollout("2"));
        // 5 chains of 5 steps, and 2 barriers between 3 batches.
        assert_eq!(plan.nodes.len(), 5 * 5 + 2);
        let barriers: Vec<usize> = (0..plan.nodes.len())
            .filter(|&i| plan.nodes[i].step == Step::Wait)
            .collect();
        assert_eq!(barriers.len(), 2);
        let ups = |n: usize| -> Vec<usize> {
            plan.edges
                .iter()
                .filter(|e| e.1 == n)
                .map(|e| e.0)
                .collect()
        };
        let downs = |n: usize| -> Vec<usize> {
            plan.edges
                .iter()
                .filter(|e| e.0 == n)
                .map(|e| e.1)
                .collect()
        };
        let host_of = |n: usize| plan.nodes[n].host_id.unwrap();
        // The first barrier waits for the Finish of hosts 10 and 11 and lets 12 and 13 go.
        let first = barriers[0];
        assert!(
            ups(first)
                .iter()
                .all(|&n| plan.nodes[n].step == Step::Finish)
        );
        assert_eq!(
            ups(first).into_iter().map(host_of).collect::<Vec<_>>(),
            [10, 11]
        );
        assert!(
            downs(first)
                .iter()
                .all(|&n| plan.nodes[n].step == Step::PrepareRestart)
        );
        assert_eq!(
            downs(first).into_iter().map(host_of).collect::<Vec<_>>(),
            [12, 13]
        );
        assert_eq!(
            downs(barriers[1])
                .into_iter()
                .map(host_of)
                .collect::<Vec<_>>(),
            [14]
        );
        // Only the first batch starts; parallelIdx is the host's index in hostIds.
        let ready: Vec<i64> = plan
            .nodes
            .iter()
            .filter(|n| n.status == SubtaskStatus::Ready)
            .map(|n| n.host_id.unwrap())
            .collect();
        assert_eq!(ready, [10, 11]);
        let last = plan.nodes.last().unwrap();
        assert_eq!((last.step, last.parallel_idx), (Step::Finish, 4));
        // Each host's chain is the single-host chain, one edge per step.
        let chain: Vec<Step> = plan
            .nodes
            .iter()
            .filter(|n| n.host_id == Some(13))
            .map(|n| n.step)
            .collect();
        assert_eq!(
            chain,
            [
                Step::PrepareRestart,
                Step::RestartProxy,
                Step::StopAll,
                Step::StartAll,
                Step::Finish
            ]
        );
        // Chains, then each barrier: 2 up and 2 down, 2 up and 1 down.
        assert_eq!(plan.edges.len(), 5 * 4 + (2 + 2) + (2 + 1));
        assert_eq!(plan.rollout, Some(rollout("2")));
    }

    #[test]
    fn one_batch_has_no_barrier() {
        let plan = rolling(AgentAction::Stop, &[1, 2, 3], &rollout("100%"));
        assert_eq!(plan.nodes.len(), 9);
        assert!(plan.nodes.iter().all(|n| n.step != Step::Wait));
    }

    #[test]
    fn batch_stop_is_3n_plus_2() {
        assert_eq!(batch(AgentAction::Stop, &[1, 2, 3, 4]).nodes.len(), 14);
        assert_eq!(batch(AgentAction::Start, &[1]).nodes.len(), 5);
    }

    #[test]
    fn single_restart_is_the_seed_chain() {
        let plan = single_host(AgentAction::Restart, 2);
        let got: Vec<(&str, i32)> = plan
            .nodes
            .iter()
            .map(|n| (n.step.name(), n.series_id))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Prepare restart OCP agent", 2),
                ("Restart pos proxy", 0),
                ("Stop all OCP agent processes", 4),
                ("Start all OCP agent processes", 1),
                ("Finish OCP agent operation", 3),
            ]
        );
        assert_eq!(plan.edges, vec![(0, 1), (1, 2), (2, 3), (3, 4)]);
        assert_eq!(plan.context.string_map["host_id"], "2");
        assert!(plan.nodes.iter().all(|n| n.parallel_idx == -1));
    }
}
