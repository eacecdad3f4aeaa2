//! Rolling tasks: batches one after another, the failure budget, the canary, pause and
//! resume, and how a rolling task is taken up again.

use super::*;
use crate::rollout::{Rollout, RolloutInput};

const FIVE: [i64; 5] = [101, 102, 103, 104, 105];

fn rollout(batch_size: &str, max_failed_hosts: i64, canary: bool) -> Rollout {
    RolloutInput {
        batch_size: Some(batch_size.to_string()),
        max_failed_hosts: Some(max_failed_hosts),
        pause_after_first_batch: Some(canary),
        ..RolloutInput::default()
    }
    .validate()
    .unwrap()
}

fn rolling_restart(hosts: &[i64], rollout: Rollout) -> Task {
    task_from(&plans::rolling(AgentAction::Restart, hosts, &rollout))
}

impl Sim {
    fn of_host(&self, host: i64) -> Vec<i64> {
        self.task
            .subtasks
            .iter()
            .filter(|s| s.host_id == Some(host))
            .map(|s| s.id)
            .collect()
    }

    fn untouched(&self, host: i64) -> bool {
        self.of_host(host)
            .iter()
            .all(|&id| self.get(id).status == SubtaskStatus::Pending)
    }

    fn barriers(&self) -> Vec<i64> {
        self.ids(Step::Wait)
    }

    /// Rounds until nothing runs: the task ended, or it waits for an operator.
    fn run_while_running(&mut self, fate: &dyn Fn(&Subtask) -> Option<StepEnd>) {
        for _ in 0..1000 {
            if self.running.is_empty() {
                return;
            }
            self.round(fate);
        }
        panic!("the task never stopped running");
    }
}

/// A rolling restart of five hosts, just taken up.
fn start(rollout: Rollout) -> (Sim, Vec<Effect>) {
    Sim::take_up(rolling_restart(&FIVE, rollout), Start::Fresh, 256)
}

fn prepare_fails_on(host: i64) -> impl Fn(&Subtask) -> Option<StepEnd> {
    move |s: &Subtask| {
        (s.host_id == Some(host) && s.step == Step::PrepareRestart)
            .then(|| StepEnd::Failed("agent unreachable".to_string()))
    }
}

#[test]
fn a_batch_starts_only_after_every_host_of_the_one_before_finished() {
    let (mut sim, _) = start(rollout("2", 0, false));
    let batch_of = |host: i64| FIVE.iter().position(|&h| h == host).unwrap() / 2;
    for _ in 0..1000 {
        if sim.finish.is_some() {
            break;
        }
        // Whatever runs belongs to one batch, or is the barrier between two.
        let batches: BTreeSet<usize> = sim
            .running
            .iter()
            .filter_map(|&id| sim.get(id).host_id)
            .map(batch_of)
            .collect();
        assert!(batches.len() <= 1, "batches {batches:?} run at once");
        if let Some(&b) = batches.first() {
            for host in FIVE.iter().copied().filter(|&h| batch_of(h) < b) {
                let finish = *sim.of_host(host).last().unwrap();
                assert_eq!(sim.get(finish).status, SubtaskStatus::Successful);
            }
        }
        sim.round(&|_| None);
    }
    assert_eq!(
        sim.finish,
        Some((TaskStatus::Successful, Operation::Execute))
    );
    // The hosts of a batch ran side by side: Prepare of 101 and 102 in one start.
    assert_eq!(sim.starts[0].len(), 2);
    assert!(sim.logs[&sim.barriers()[0]].contains("batch 1 of 3 settled"));
}

#[test]
fn past_a_budget_of_0_no_further_batch_starts_and_the_rest_stays_pending() {
    let (mut sim, _) = start(rollout("2", 0, false));
    sim.run_while_running(&prepare_fails_on(101));
    assert_eq!(sim.finish, Some((TaskStatus::Failed, Operation::Execute)));
    // The other host of the batch went through its whole chain.
    assert!(
        sim.of_host(102)
            .iter()
            .all(|&id| sim.get(id).status == SubtaskStatus::Successful)
    );
    // The barrier did not run: it says why, and is judged again after a retry or skip.
    let barrier = sim.barriers()[0];
    assert_eq!(sim.get(barrier).status, SubtaskStatus::Pending);
    assert!(
        sim.logs[&barrier]
            .contains("stopped: 1 host(s) failed (host 101), more than maxFailedHosts 0"),
        "{}",
        sim.logs[&barrier]
    );
    for host in [103, 104, 105] {
        assert!(sim.untouched(host), "host {host} was touched");
    }
    assert_eq!(sim.get(sim.barriers()[1]).status, SubtaskStatus::Pending);
}

#[test]
fn a_retry_after_the_budget_stopped_the_rollout_carries_on_from_there() {
    let (mut sim, _) = start(rollout("2", 0, false));
    sim.run_while_running(&prepare_fails_on(101));
    let (mut sim, _) = Sim::take_up_with(retried(sim.task.clone()), Start::Fresh, 256, false);
    // The failed host goes first; the barrier waits for it.
    let barrier = sim.barriers()[0];
    assert!(!sim.running.contains(&barrier));
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Retry)
    );
}

#[test]
fn a_skip_of_the_failed_step_after_the_budget_stopped_the_rollout_lets_it_go_on() {
    let (mut sim, _) = start(rollout("2", 0, false));
    sim.run_while_running(&prepare_fails_on(101));
    let failed = sim.of_host(101)[0];
    let (mut sim, _) =
        Sim::take_up_with(skipped(sim.task.clone(), failed), Start::Fresh, 256, false);
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_rollback_of_a_stopped_rollout_undoes_only_the_hosts_it_touched() {
    let (mut sim, _) = start(rollout("2", 0, false));
    sim.run_while_running(&prepare_fails_on(101));
    let mut task = sim.task.clone();
    task.status = TaskStatus::Running;
    task.operation = Operation::Rollback;
    let (mut sim, _) = Sim::take_up_with(task, Start::Fresh, 256, false);
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Rollback)
    );
    let undone: BTreeSet<i64> = sim.starts.iter().flatten().map(|&(id, _)| id).collect();
    let touched: BTreeSet<i64> = [101, 102].iter().flat_map(|&h| sim.of_host(h)).collect();
    assert!(undone.is_subset(&touched), "undid {undone:?}");
    for host in [103, 104, 105] {
        assert!(
            sim.untouched(host),
            "host {host} was touched by the rollback"
        );
    }
    assert!(sim.barriers().iter().all(|&b| !undone.contains(&b)));
}

#[test]
fn a_budget_of_1_goes_on_past_one_failure_and_still_ends_failed() {
    let (mut sim, _) = start(rollout("2", 1, false));
    sim.run_while_running(&prepare_fails_on(101));
    assert_eq!(sim.finish, Some((TaskStatus::Failed, Operation::Execute)));
    for host in [102, 103, 104, 105] {
        assert!(
            sim.of_host(host)
                .iter()
                .all(|&id| sim.get(id).status == SubtaskStatus::Successful),
            "host {host}"
        );
    }
    assert!(sim.logs[&sim.barriers()[0]].contains("1 host(s) failed so far, maxFailedHosts 1"));
}

#[test]
fn a_second_failure_past_a_budget_of_1_stops_at_the_next_barrier() {
    let (mut sim, _) = start(rollout("2", 1, false));
    sim.run_while_running(&|s: &Subtask| {
        (matches!(s.host_id, Some(101 | 103)) && s.step == Step::StartAll)
            .then(|| StepEnd::Failed("crashed".to_string()))
    });
    assert_eq!(sim.finish, Some((TaskStatus::Failed, Operation::Execute)));
    let barriers = sim.barriers();
    assert_eq!(sim.get(barriers[0]).status, SubtaskStatus::Successful);
    assert_eq!(sim.get(barriers[1]).status, SubtaskStatus::Pending);
    assert!(sim.logs[&barriers[1]].contains("stopped: 2 host(s) failed (host 101, host 103)"));
    assert!(sim.untouched(105));
}

#[test]
fn a_canary_waits_after_the_first_batch_until_resumed() {
    let (mut sim, _) = start(rollout("1", 0, true));
    sim.run_while_running(&|_| None);
    // Held, not ended: the task is RUNNING and paused, batch 2 untouched.
    assert_eq!(sim.finish, None);
    assert!(sim.task.paused && sim.task.canary_held);
    let barrier = sim.barriers()[0];
    assert_eq!(sim.get(barrier).status, SubtaskStatus::Ready);
    assert!(sim.logs[&barrier].contains("paused after batch 1 of 5 (pauseAfterFirstBatch)"));
    assert!(sim.untouched(102));
    // A pause asked again changes nothing; the resume lets the rest go, with no more holds.
    assert!(sim.feed(Event::Paused(true)).is_empty());
    let effects = sim.feed(Event::Paused(false));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Start(s) if s[0].0 == barrier))
    );
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_pause_during_a_batch_holds_the_next_one_until_resumed() {
    let (mut sim, _) = start(rollout("2", 0, false));
    assert!(sim.feed(Event::Paused(true)).is_empty());
    sim.run_while_running(&|_| None);
    assert_eq!(sim.finish, None);
    let barrier = sim.barriers()[0];
    assert!(sim.logs[&barrier].contains("paused: batch 2 of 3 starts when the task is resumed"));
    assert!(sim.untouched(103));
    // Not the canary's pause: the task was paused by the operator, not by itself.
    assert!(!sim.task.canary_held);
    sim.feed(Event::Paused(false));
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_barrier_whose_pause_ends_while_the_task_is_paused_is_held() {
    let (mut sim, _) = start(rollout("2", 0, false));
    let barrier = sim.barriers()[0];
    while !sim.running.contains(&barrier) {
        sim.round(&|_| None);
    }
    sim.feed(Event::Paused(true));
    sim.end(vec![(barrier, StepEnd::Succeeded)]);
    assert_eq!(sim.get(barrier).status, SubtaskStatus::Ready);
    assert!(sim.running.is_empty() && sim.finish.is_none());
    assert!(sim.untouched(103));
    sim.feed(Event::Paused(false));
    assert!(
        sim.running.contains(&barrier),
        "the resume runs the barrier again"
    );
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_paused_task_taken_up_after_a_restart_stays_paused() {
    let (mut sim, _) = start(rollout("2", 0, true));
    sim.run_while_running(&|_| None);
    assert!(sim.task.paused);
    // A new runner, after the controller restarted: the barrier is held again, with no
    // step run and no end.
    let (mut sim, effects) = Sim::take_up(sim.task.clone(), Start::Resumed, 256);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Hold { canary: false, .. })),
        "{effects:?}"
    );
    assert!(sim.running.is_empty() && sim.finish.is_none());
    sim.feed(Event::Paused(false));
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_rolling_task_resumed_with_a_failure_within_budget_goes_on() {
    let (mut sim, _) = start(rollout("2", 1, false));
    // Batch 1 settles with host 101 failed, and the controller stops there.
    while sim.finish.is_none() && sim.untouched(103) {
        sim.round(&prepare_fails_on(101));
    }
    sim.feed(Event::ShuttingDown);
    let mut task = sim.task.clone();
    for s in &mut task.subtasks {
        if s.status == SubtaskStatus::Running {
            s.status = SubtaskStatus::Ready;
        }
    }
    let (mut sim, _) = Sim::take_up_with(task, Start::Resumed, 256, true);
    assert!(
        !sim.running.is_empty(),
        "a failure within budget does not drain the task"
    );
    assert_eq!(
        sim.run_to_end(&|_| None),
        (TaskStatus::Failed, Operation::Execute)
    );
    assert!(
        sim.of_host(105)
            .iter()
            .all(|&id| sim.get(id).status == SubtaskStatus::Successful)
    );
}
