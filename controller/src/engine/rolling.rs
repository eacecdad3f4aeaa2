//! A rolling task's rules at its barriers: once the batch before a barrier has settled,
//! whether the next batch starts, waits for an operator, or never starts.
//!
//! Pure, like `decide`, which asks it at each barrier. A host has settled when its
//! chain succeeded to the end or stopped at a failure with nothing of it running; a
//! failed host does not hold its batch's barrier forever, which is what lets a budget
//! above 0 carry a rollout past it.

use std::collections::{BTreeSet, HashMap};

use super::graph::Graph;
use crate::model::{SubtaskStatus, Task};
use crate::rollout::Rollout;

/// What a barrier does once its batch has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The next batch starts (after the rollout's pause).
    Pass,
    /// More hosts failed than the budget allows: no further batch starts.
    Stop,
    /// Held until resumed: paused by an operator, or by the canary's pause. `canary`:
    /// this hold is the canary's, which then never holds again.
    Hold { canary: bool },
}

/// The budget first: a paused rollout that is over it stops rather than waits, since
/// resuming it could not start the next batch anyway.
pub(super) fn verdict(failed_hosts: usize, budget: u32, paused: bool, canary_due: bool) -> Verdict {
    if failed_hosts > budget as usize {
        Verdict::Stop
    } else if paused || canary_due {
        Verdict::Hold { canary: canary_due }
    } else {
        Verdict::Pass
    }
}

/// A barrier's decision with the line its log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Judged {
    pub verdict: Verdict,
    pub line: String,
}

/// What a rolling task's runner knows of its batches and barriers, and of the pause.
pub(super) struct Rolling {
    task_id: i64,
    rollout: Rollout,
    paused: bool,
    canary_held: bool,
    /// Barrier ids in batch order: `barriers[k]` comes after batch k.
    barriers: Vec<i64>,
    /// Which k each barrier is.
    index: HashMap<i64, usize>,
    /// The hosts of batch k, for `barriers[k]`.
    batch_hosts: Vec<Vec<i64>>,
    /// Which barrier comes after a host's batch; none for the last batch.
    after_host: HashMap<i64, usize>,
    /// Each host's steps.
    chains: HashMap<i64, Vec<i64>>,
    /// Barriers held by a pause, waiting for a resume.
    held: BTreeSet<i64>,
}

impl Rolling {
    /// None for a stage-wise task.
    pub fn new(task: &Task, graph: &Graph) -> Option<Rolling> {
        let rollout = task.rollout?;
        let mut barriers: Vec<i64> = graph
            .nodes()
            .filter(|(_, n)| n.barrier)
            .map(|(id, _)| id)
            .collect();
        barriers.sort_unstable();
        let mut chains: HashMap<i64, Vec<i64>> = HashMap::new();
        for s in &task.subtasks {
            if let Some(host) = s.host_id {
                chains.entry(host).or_default().push(s.id);
            }
        }
        let mut batch_hosts = Vec::with_capacity(barriers.len());
        let mut after_host = HashMap::new();
        for (k, &barrier) in barriers.iter().enumerate() {
            let mut hosts: Vec<i64> = graph
                .node(barrier)
                .map(|n| {
                    n.upstreams
                        .iter()
                        .filter_map(|u| graph.node(*u).and_then(|n| n.host_id))
                        .collect()
                })
                .unwrap_or_default();
            hosts.dedup();
            for &h in &hosts {
                after_host.insert(h, k);
            }
            batch_hosts.push(hosts);
        }
        Some(Rolling {
            task_id: task.id,
            index: barriers.iter().enumerate().map(|(k, &b)| (b, k)).collect(),
            rollout,
            paused: task.paused,
            canary_held: task.canary_held,
            barriers,
            batch_hosts,
            after_host,
            chains,
            held: BTreeSet::new(),
        })
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Whether a barrier is held: the task waits for a resume, not for a step.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Sets the operator's pause; on a resume, the barriers it held, to judge again.
    pub fn set_paused(&mut self, paused: bool) -> Vec<i64> {
        self.paused = paused;
        if paused {
            Vec::new()
        } else {
            std::mem::take(&mut self.held).into_iter().collect()
        }
    }

    /// Every barrier, for a task just taken up.
    pub fn all_barriers(&self) -> Vec<i64> {
        self.barriers.clone()
    }

    /// The barriers after the batches of the hosts these steps belong to.
    pub fn barriers_after(&self, graph: &Graph, steps: &[i64]) -> Vec<i64> {
        let mut found: Vec<i64> = steps
            .iter()
            .filter_map(|s| graph.node(*s)?.host_id)
            .filter_map(|h| self.after_host.get(&h))
            .map(|&k| self.barriers[k])
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Whether the barrier waits for nothing but its verdict: its batch settled, and it
    /// neither ran nor is held.
    pub fn due(&self, graph: &Graph, barrier: i64) -> bool {
        let Some(&k) = self.index.get(&barrier) else {
            return false;
        };
        matches!(
            graph.status(barrier),
            Some(SubtaskStatus::Pending | SubtaskStatus::Ready)
        ) && !self.held.contains(&barrier)
            && self.batch_hosts[k].iter().all(|&h| self.settled(graph, h))
    }

    /// A host has settled when nothing of its chain runs or waits to, and the chain
    /// either got to its end or stopped at a failure.
    fn settled(&self, graph: &Graph, host: i64) -> bool {
        let statuses: Vec<Option<SubtaskStatus>> = self
            .chains
            .get(&host)
            .map(|chain| chain.iter().map(|&s| graph.status(s)).collect())
            .unwrap_or_default();
        let idle = statuses.iter().all(|s| {
            matches!(
                s,
                Some(SubtaskStatus::Successful | SubtaskStatus::Failed | SubtaskStatus::Pending)
            )
        });
        let done = statuses.contains(&Some(SubtaskStatus::Failed))
            || statuses
                .iter()
                .all(|s| *s == Some(SubtaskStatus::Successful));
        idle && done
    }

    /// Hosts with a FAILED step, in id order: what the budget counts.
    fn failed_hosts(&self, graph: &Graph) -> Vec<i64> {
        let mut failed: Vec<i64> = self
            .chains
            .iter()
            .filter(|(_, chain)| {
                chain
                    .iter()
                    .any(|&s| graph.status(s) == Some(SubtaskStatus::Failed))
            })
            .map(|(&h, _)| h)
            .collect();
        failed.sort_unstable();
        failed
    }

    /// Decides a due barrier, and remembers a hold. None for an id that is not one of
    /// the task's barriers.
    pub fn judge(&mut self, graph: &Graph, barrier: i64) -> Option<Judged> {
        let k = *self.index.get(&barrier)?;
        let batches = self.barriers.len() + 1;
        let failed = self.failed_hosts(graph);
        let budget = self.rollout.max_failed_hosts;
        let canary_due = k == 0 && self.rollout.pause_after_first_batch && !self.canary_held;
        let verdict = verdict(failed.len(), budget, self.paused, canary_due);
        let (done, next) = (k + 1, k + 2);
        let line = match verdict {
            Verdict::Pass => {
                let pause = match self.rollout.pause_seconds {
                    0 => String::new(),
                    p => format!(" after a pause of {p}s"),
                };
                format!(
                    "batch {done} of {batches} settled ({} host(s)); {} host(s) failed so far, \
                     maxFailedHosts {budget}: batch {next} starts{pause}",
                    self.batch_hosts[k].len(),
                    failed.len()
                )
            }
            Verdict::Stop => format!(
                "stopped: {} host(s) failed ({}), more than maxFailedHosts {budget}: batch \
                 {next} of {batches} and the ones after it do not start; once the hosts are \
                 fixed, retry the task (or skip the failed steps) and the rollout goes on",
                failed.len(),
                failed
                    .iter()
                    .map(|h| format!("host {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Verdict::Hold { canary: true } => format!(
                "paused after batch 1 of {batches} (pauseAfterFirstBatch): {}",
                resume_hint(self.task_id, next, batches)
            ),
            Verdict::Hold { canary: false } => {
                format!("paused: {}", resume_hint(self.task_id, next, batches))
            }
        };
        if let Verdict::Hold { canary } = verdict {
            self.held.insert(barrier);
            if canary {
                self.canary_held = true;
                self.paused = true;
            }
        }
        Some(Judged { verdict, line })
    }

    /// A barrier whose pause ended while the task was paused: held, not passed.
    pub fn hold_after_pause(&mut self, barrier: i64) -> Option<String> {
        let k = *self.index.get(&barrier)?;
        self.held.insert(barrier);
        Some(format!(
            "paused: {}",
            resume_hint(self.task_id, k + 2, self.barriers.len() + 1)
        ))
    }
}

/// What a held barrier's log says the operator can do.
fn resume_hint(task_id: i64, next: usize, batches: usize) -> String {
    format!(
        "batch {next} of {batches} starts when the task is resumed (REST POST \
         /tasks/instances/{task_id}/resume, gRPC TaskService.ResumeTask)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_failures_tolerated_not_a_threshold_reached() {
        assert_eq!(verdict(0, 0, false, false), Verdict::Pass);
        assert_eq!(verdict(1, 0, false, false), Verdict::Stop);
        assert_eq!(verdict(1, 1, false, false), Verdict::Pass);
        assert_eq!(verdict(2, 1, false, false), Verdict::Stop);
    }

    #[test]
    fn a_pause_holds_and_the_canary_holds_once_but_never_past_the_budget() {
        assert_eq!(verdict(0, 0, true, false), Verdict::Hold { canary: false });
        assert_eq!(verdict(0, 0, false, true), Verdict::Hold { canary: true });
        // An operator's pause at the first barrier is the canary's pause as well: one
        // resume goes on.
        assert_eq!(verdict(0, 0, true, true), Verdict::Hold { canary: true });
        assert_eq!(verdict(1, 0, true, true), Verdict::Stop);
    }
}
