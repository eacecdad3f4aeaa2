//! The engine's rules, checked by feeding the decision machine events for tasks built
//! from every template, with the store's side played by applying the effects to a `Task`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::{Effect, Event, Machine, StepEnd};
use crate::engine::Start;
use crate::model::{AgentAction, NewTask};
use crate::model::{Operation, Step, Subtask, SubtaskStatus, Task, TaskStatus};
use crate::plans;

const HOSTS: [i64; 3] = [101, 102, 103];

/// The task as `Store::create_task` writes a plan: subtask ids 1.. in node order.
fn task_from(plan: &NewTask) -> Task {
    let subtasks = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let idx = |j: usize| j as i64 + 1;
            Subtask {
                id: idx(i),
                task_id: 1,
                series_id: node.series_id,
                step: node.step,
                name: node.step.name().to_string(),
                description: node.step.name().to_string(),
                class_name: node.step.class_name().to_string(),
                host_id: node.host_id,
                operation: Operation::Execute,
                status: node.status,
                parallel_idx: node.parallel_idx,
                timeout_secs: node.timeout_secs,
                run_time: 1,
                executor: None,
                start_time: None,
                finish_time: None,
                prohibit_rollback: false,
                upstreams: plan
                    .edges
                    .iter()
                    .filter(|e| e.1 == i)
                    .map(|e| idx(e.0))
                    .collect(),
                downstreams: plan
                    .edges
                    .iter()
                    .filter(|e| e.0 == i)
                    .map(|e| idx(e.1))
                    .collect(),
            }
        })
        .collect();
    Task {
        id: 1,
        name: plan.name.clone(),
        creator: "admin".to_string(),
        executor: "127.0.0.1".to_string(),
        host_id: plan.host_id,
        operation: Operation::Execute,
        status: TaskStatus::Running,
        prohibit_rollback: false,
        context: plan.context.clone(),
        trace_id: "trace".to_string(),
        start_time: 0,
        finish_time: None,
        rollout: plan.rollout,
        paused: false,
        canary_held: false,
        last_event_seq: 0,
        subtasks,
    }
}

fn batch_restart(hosts: &[i64]) -> Task {
    task_from(&plans::batch(AgentAction::Restart, hosts))
}

/// One runner's life: the machine, and the stored task as its effects leave it.
struct Sim {
    machine: Machine,
    task: Task,
    /// Steps in flight, as the executor's join set holds them.
    running: BTreeSet<i64>,
    /// Every `Start`, in order.
    starts: Vec<Vec<(i64, Operation)>>,
    /// Every effect that writes to the store, in order.
    writes: usize,
    logs: HashMap<i64, String>,
    finish: Option<(TaskStatus, Operation)>,
    stopped: bool,
    most_running: usize,
}

impl Sim {
    /// As the store would say: a FAILED subtask failed since the last reopen, unless a
    /// test says otherwise with `take_up_with`.
    fn take_up(task: Task, start: Start, concurrency: usize) -> (Sim, Vec<Effect>) {
        let failed = task
            .subtasks
            .iter()
            .any(|s| s.status == SubtaskStatus::Failed);
        Sim::take_up_with(task, start, concurrency, failed)
    }

    fn take_up_with(
        task: Task,
        start: Start,
        concurrency: usize,
        failed_since_reopen: bool,
    ) -> (Sim, Vec<Effect>) {
        let mut sim = Sim {
            machine: Machine::new(&task, concurrency, failed_since_reopen),
            task,
            running: BTreeSet::new(),
            starts: Vec::new(),
            writes: 0,
            logs: HashMap::new(),
            finish: None,
            stopped: false,
            most_running: 0,
        };
        let effects = sim.feed(Event::TakenUp(start));
        (sim, effects)
    }

    fn feed(&mut self, event: Event) -> Vec<Effect> {
        let effects = self.machine.on(event);
        for effect in &effects {
            self.apply(effect);
        }
        effects
    }

    fn sub(&mut self, id: i64) -> &mut Subtask {
        self.task.subtasks.iter_mut().find(|s| s.id == id).unwrap()
    }

    fn apply(&mut self, effect: &Effect) {
        assert!(
            self.finish.is_none() && !self.stopped,
            "{effect:?} after the end"
        );
        match effect {
            Effect::Start(batch) => {
                self.writes += 1;
                for &(id, operation) in batch {
                    let s = self.sub(id);
                    let startable = match operation {
                        // An undo reruns what ran, or what it was undoing at a crash.
                        Operation::Rollback => matches!(
                            s.status,
                            SubtaskStatus::Successful
                                | SubtaskStatus::Failed
                                | SubtaskStatus::Ready
                        ),
                        _ => s.status == SubtaskStatus::Ready,
                    };
                    assert!(startable, "subtask {id} started while {}", s.status);
                    s.status = SubtaskStatus::Running;
                    s.operation = operation;
                    assert!(self.running.insert(id));
                }
                self.most_running = self.most_running.max(self.running.len());
                self.starts.push(batch.clone());
            }
            Effect::Record { outcomes, ready } => {
                self.writes += 1;
                for o in outcomes {
                    let s = self.sub(o.id);
                    s.status = o.status;
                    s.operation = o.operation;
                    if let Some(line) = &o.log {
                        self.logs.insert(o.id, line.clone());
                    }
                }
                for &(id, _) in ready {
                    let s = self.sub(id);
                    assert_eq!(s.status, SubtaskStatus::Pending, "{id} made READY twice");
                    s.status = SubtaskStatus::Ready;
                }
            }
            Effect::Cancel { id, .. } => {
                self.writes += 1;
                self.sub(*id).status = SubtaskStatus::Canceling;
            }
            Effect::RefuseCancel(_) => {}
            Effect::Note { id, line } => {
                self.logs.insert(*id, line.clone());
            }
            Effect::Hold { id, canary, line } => {
                self.writes += 1;
                let s = self.sub(*id);
                assert!(
                    matches!(
                        s.status,
                        SubtaskStatus::Pending | SubtaskStatus::Ready | SubtaskStatus::Running
                    ),
                    "barrier {id} held while {}",
                    s.status
                );
                s.status = SubtaskStatus::Ready;
                self.running.remove(id);
                self.logs.insert(*id, line.clone());
                if *canary {
                    self.task.paused = true;
                    self.task.canary_held = true;
                }
            }
            Effect::Finish { status, operation } => {
                self.writes += 1;
                self.task.status = *status;
                self.task.operation = *operation;
                self.finish = Some((*status, *operation));
            }
            Effect::Stop => {
                self.running.clear();
                self.stopped = true;
            }
        }
    }

    /// These steps end together, as one join round of the executor.
    fn end(&mut self, ends: Vec<(i64, StepEnd)>) -> Vec<Effect> {
        for (id, _) in &ends {
            assert!(self.running.remove(id), "subtask {id} is not running");
        }
        self.feed(Event::StepsEnded(ends))
    }

    /// Every running step ends at once: successfully unless `fate` says otherwise.
    fn round(&mut self, fate: &dyn Fn(&Subtask) -> Option<StepEnd>) -> Vec<Effect> {
        let ends: Vec<(i64, StepEnd)> = self
            .running
            .clone()
            .into_iter()
            .map(|id| {
                let s = self.task.subtasks.iter().find(|s| s.id == id).unwrap();
                (id, fate(s).unwrap_or(StepEnd::Succeeded))
            })
            .collect();
        self.end(ends)
    }

    fn run_to_end(
        &mut self,
        fate: &dyn Fn(&Subtask) -> Option<StepEnd>,
    ) -> (TaskStatus, Operation) {
        for _ in 0..1000 {
            if let Some(end) = self.finish {
                return end;
            }
            assert!(
                !self.running.is_empty(),
                "nothing runs and the task did not end"
            );
            self.round(fate);
        }
        panic!("the task never ended");
    }

    fn status(&self, id: i64) -> (SubtaskStatus, Operation) {
        let s = self.get(id);
        (s.status, s.operation)
    }

    fn ids(&self, step: Step) -> Vec<i64> {
        self.task
            .subtasks
            .iter()
            .filter(|s| s.step == step)
            .map(|s| s.id)
            .collect()
    }

    fn get(&self, id: i64) -> &Subtask {
        self.task.subtasks.iter().find(|s| s.id == id).unwrap()
    }

    fn step_of(&self, id: i64) -> Step {
        self.get(id).step
    }

    /// The steps each `Start` began, one entry per start.
    fn stages(&self) -> Vec<(Step, usize)> {
        self.starts
            .iter()
            .map(|batch| {
                let step = self.step_of(batch[0].0);
                assert!(
                    batch.iter().all(|&(id, _)| self.step_of(id) == step),
                    "{batch:?} mixes stages"
                );
                (step, batch.len())
            })
            .collect()
    }
}

fn ok(_: &Subtask) -> Option<StepEnd> {
    None
}

fn fail_on(id: i64) -> impl Fn(&Subtask) -> Option<StepEnd> {
    move |s: &Subtask| (s.id == id).then(|| StepEnd::Failed("agent said no".to_string()))
}

/// What `Store::retry_task` leaves: every FAILED subtask READY again under RETRY.
fn retried(mut task: Task) -> Task {
    task.status = TaskStatus::Running;
    task.operation = Operation::Retry;
    for s in &mut task.subtasks {
        if s.status == SubtaskStatus::Failed {
            s.status = SubtaskStatus::Ready;
            s.operation = Operation::Retry;
        }
    }
    task
}

/// What `Store::skip_subtask` leaves: the FAILED subtask counts as done.
fn skipped(mut task: Task, id: i64) -> Task {
    task.status = TaskStatus::Running;
    let s = task.subtasks.iter_mut().find(|s| s.id == id).unwrap();
    assert_eq!(s.status, SubtaskStatus::Failed);
    s.status = SubtaskStatus::Successful;
    s.operation = Operation::Skip;
    task
}

/// What `Store::begin_rollback` leaves: RUNNING under ROLLBACK, READY back to PENDING.
fn rolling_back(mut task: Task) -> Task {
    task.status = TaskStatus::Running;
    task.operation = Operation::Rollback;
    for s in &mut task.subtasks {
        if s.status == SubtaskStatus::Ready {
            s.status = SubtaskStatus::Pending;
        }
    }
    task
}

/// What `Store::requeue_interrupted` leaves after a crash.
fn requeued(mut task: Task) -> Task {
    for s in &mut task.subtasks {
        match s.status {
            SubtaskStatus::Running => s.status = SubtaskStatus::Ready,
            SubtaskStatus::Canceling => {
                s.status = SubtaskStatus::Failed;
                s.operation = Operation::Cancel;
            }
            _ => {}
        }
    }
    task
}

/// A batch restart of three hosts whose Prepare on the second host failed.
fn failed_batch() -> Task {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let prepare = sim.ids(Step::PrepareRestart);
    assert_eq!(
        sim.run_to_end(&fail_on(prepare[1])),
        (TaskStatus::Failed, Operation::Execute)
    );
    sim.task
}

#[test]
fn every_template_runs_its_chain_stage_by_stage_with_hosts_in_parallel() {
    for op in [AgentAction::Restart, AgentAction::Stop, AgentAction::Start] {
        for (plan, width) in [
            (plans::single_host(op, 7), 1),
            (plans::batch(op, &HOSTS), HOSTS.len()),
        ] {
            let mut chain: Vec<Step> = Vec::new();
            for node in &plan.nodes {
                if chain.last() != Some(&node.step) {
                    chain.push(node.step);
                }
            }
            let (mut sim, _) = Sim::take_up(task_from(&plan), Start::Fresh, 256);
            assert_eq!(
                sim.run_to_end(&ok),
                (TaskStatus::Successful, Operation::Execute)
            );
            let expected: Vec<(Step, usize)> = chain
                .iter()
                .map(|&step| (step, if step == Step::Wait { 1 } else { width }))
                .collect();
            assert_eq!(sim.stages(), expected, "{}", plan.name);
            for s in &sim.task.subtasks {
                assert_eq!(
                    (s.status, s.operation),
                    (SubtaskStatus::Successful, Operation::Execute)
                );
            }
            for batch in &sim.starts {
                let hosts: BTreeSet<Option<i64>> =
                    batch.iter().map(|&(id, _)| sim.get(id).host_id).collect();
                assert_eq!(hosts.len(), batch.len(), "one step per host in a stage");
            }
            // Per stage one start and one record of all its hosts, then the finish.
            assert_eq!(sim.writes, 2 * chain.len() + 1, "{}", plan.name);
        }
    }
}

#[test]
fn a_success_starts_its_downstream_in_the_same_turn() {
    let (mut sim, effects) = Sim::take_up(
        task_from(&plans::single_host(AgentAction::Restart, 7)),
        Start::Fresh,
        256,
    );
    assert!(matches!(&effects[..], [Effect::Start(b)] if b == &vec![(1, Operation::Execute)]));
    let effects = sim.end(vec![(1, StepEnd::Succeeded)]);
    match &effects[..] {
        [Effect::Record { outcomes, ready }, Effect::Start(started)] => {
            assert_eq!(outcomes.len(), 1);
            assert_eq!(ready, &vec![(2, Operation::Execute)]);
            assert_eq!(started, &vec![(2, Operation::Execute)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_barrier_waits_for_every_host_and_outcomes_ending_together_are_one_record() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let prepare = sim.ids(Step::PrepareRestart);
    let effects = sim.end(vec![(prepare[0], StepEnd::Succeeded)]);
    assert!(matches!(&effects[..], [Effect::Record { ready, .. }] if ready.is_empty()));
    let effects = sim.end(vec![
        (prepare[1], StepEnd::Succeeded),
        (prepare[2], StepEnd::Succeeded),
    ]);
    let wait = sim.ids(Step::Wait)[0];
    match &effects[..] {
        [Effect::Record { outcomes, ready }, Effect::Start(started)] => {
            assert_eq!(outcomes.len(), 2, "two ends, one write");
            assert_eq!(ready, &vec![(wait, Operation::Execute)]);
            assert_eq!(started, &vec![(wait, Operation::Execute)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_more_steps_run_at_once_than_the_concurrency_allows() {
    let hosts = [1, 2, 3, 4, 5];
    let (mut sim, effects) = Sim::take_up(batch_restart(&hosts), Start::Fresh, 2);
    let prepare = sim.ids(Step::PrepareRestart);
    assert!(matches!(&effects[..], [Effect::Start(b)] if b.len() == 2));
    // One ends: the next queued host starts at once, not when its stage would.
    let effects = sim.end(vec![(prepare[0], StepEnd::Succeeded)]);
    assert!(
        matches!(&effects[..], [Effect::Record { .. }, Effect::Start(b)] if b == &vec![(prepare[2], Operation::Execute)])
    );
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Execute)
    );
    assert_eq!(sim.most_running, 2);
    assert!(sim.starts.iter().all(|b| b.len() <= 2));
    assert_eq!(
        sim.starts.iter().map(Vec::len).sum::<usize>(),
        sim.task.subtasks.len()
    );
}

#[test]
fn a_failure_stops_new_starts_while_siblings_finish_and_the_task_fails() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let prepare = sim.ids(Step::PrepareRestart);
    let effects = sim.end(vec![(
        prepare[1],
        StepEnd::Failed("host is offline".to_string()),
    )]);
    assert!(
        matches!(&effects[..], [Effect::Record { .. }]),
        "{effects:?}"
    );
    assert_eq!(sim.logs[&prepare[1]], "FAILED: host is offline");
    let effects = sim.end(vec![
        (prepare[0], StepEnd::Succeeded),
        (prepare[2], StepEnd::Succeeded),
    ]);
    match &effects[..] {
        [
            Effect::Record { outcomes, ready },
            Effect::Finish { status, operation },
        ] => {
            assert_eq!(outcomes.len(), 2, "siblings drain");
            assert!(ready.is_empty());
            assert_eq!(
                (*status, *operation),
                (TaskStatus::Failed, Operation::Execute)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.status(sim.ids(Step::Wait)[0]).0, SubtaskStatus::Pending);
}

#[test]
fn a_failure_keeps_queued_steps_from_starting() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 1);
    let prepare = sim.ids(Step::PrepareRestart);
    let effects = sim.end(vec![(prepare[0], StepEnd::Failed("no".to_string()))]);
    assert!(matches!(
        &effects[..],
        [
            Effect::Record { .. },
            Effect::Finish {
                status: TaskStatus::Failed,
                ..
            }
        ]
    ));
    assert_eq!(sim.status(prepare[1]).0, SubtaskStatus::Ready);
    assert_eq!(sim.starts.len(), 1);
}

#[test]
fn timeouts_and_stopped_steps_fail_with_their_reason() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let prepare = sim.ids(Step::PrepareRestart);
    sim.end(vec![
        (prepare[0], StepEnd::TimedOut(Duration::from_millis(1500))),
        (prepare[1], StepEnd::Stopped),
        (prepare[2], StepEnd::Succeeded),
    ]);
    assert_eq!(sim.logs[&prepare[0]], "FAILED: timed out after 1.5s");
    assert_eq!(
        sim.logs[&prepare[1]],
        "FAILED: the step stopped before it finished"
    );
    assert_eq!(
        sim.status(prepare[0]),
        (SubtaskStatus::Failed, Operation::Execute)
    );
    assert_eq!(sim.finish, Some((TaskStatus::Failed, Operation::Execute)));
}

#[test]
fn a_retried_task_reruns_only_what_failed_and_goes_on() {
    let task = retried(failed_batch());
    let prepare: Vec<i64> = task
        .subtasks
        .iter()
        .filter(|s| s.step == Step::PrepareRestart)
        .map(|s| s.id)
        .collect();
    let (mut sim, effects) = Sim::take_up(task, Start::Fresh, 256);
    assert!(
        matches!(&effects[..], [Effect::Start(b)] if b == &vec![(prepare[1], Operation::Retry)])
    );
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Retry)
    );
    assert_eq!(
        sim.status(prepare[1]),
        (SubtaskStatus::Successful, Operation::Retry)
    );
    assert_eq!(
        sim.status(prepare[0]),
        (SubtaskStatus::Successful, Operation::Execute)
    );
    assert_eq!(
        sim.starts
            .iter()
            .flatten()
            .filter(|(id, _)| prepare.contains(id))
            .count(),
        1
    );
}

#[test]
fn a_skip_lets_the_downstream_go() {
    let failed = failed_batch();
    let prepare: Vec<i64> = failed
        .subtasks
        .iter()
        .filter(|s| s.step == Step::PrepareRestart)
        .map(|s| s.id)
        .collect();
    let (mut sim, effects) = Sim::take_up(skipped(failed, prepare[1]), Start::Fresh, 256);
    let wait = sim.ids(Step::Wait)[0];
    match &effects[..] {
        [Effect::Record { outcomes, ready }, Effect::Start(started)] => {
            assert!(outcomes.is_empty());
            assert_eq!(ready, &vec![(wait, Operation::Execute)]);
            assert_eq!(started, &vec![(wait, Operation::Execute)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Execute)
    );
    assert_eq!(
        sim.status(prepare[1]),
        (SubtaskStatus::Successful, Operation::Skip)
    );
}

#[test]
fn a_skip_in_a_single_host_chain_promotes_the_next_step() {
    let plan = plans::single_host(AgentAction::Stop, 7);
    let (mut sim, _) = Sim::take_up(task_from(&plan), Start::Fresh, 256);
    assert_eq!(
        sim.run_to_end(&fail_on(2)),
        (TaskStatus::Failed, Operation::Execute)
    );
    let (mut sim, effects) = Sim::take_up(skipped(sim.task, 2), Start::Fresh, 256);
    assert!(
        matches!(&effects[..], [Effect::Record { ready, .. }, Effect::Start(_)] if ready == &vec![(3, Operation::Execute)])
    );
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Execute)
    );
}

/// Runs a batch restart of two hosts that fails at one host's Stop, then rolls it back.
fn rolled_back(undo_fate: &dyn Fn(&Subtask) -> Option<StepEnd>) -> (Sim, Task) {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS[..2]), Start::Fresh, 256);
    let stop = sim.ids(Step::StopAll);
    assert_eq!(
        sim.run_to_end(&fail_on(stop[0])),
        (TaskStatus::Failed, Operation::Execute)
    );
    let before = sim.task.clone();
    let (mut sim, _) = Sim::take_up(rolling_back(sim.task), Start::Fresh, 256);
    sim.run_to_end(undo_fate);
    (sim, before)
}

#[test]
fn a_rollback_undoes_only_what_ran_in_reverse_order() {
    let (sim, before) = rolled_back(&ok);
    assert_eq!(
        sim.finish,
        Some((TaskStatus::Successful, Operation::Rollback))
    );
    assert!(
        sim.starts
            .iter()
            .flatten()
            .all(|&(_, op)| op == Operation::Rollback)
    );
    let ran: BTreeSet<i64> = before
        .subtasks
        .iter()
        .filter(|s| matches!(s.status, SubtaskStatus::Successful | SubtaskStatus::Failed))
        .map(|s| s.id)
        .collect();
    let undone: BTreeSet<i64> = sim.starts.iter().flatten().map(|&(id, _)| id).collect();
    assert_eq!(undone, ran, "what never ran has nothing to undo");
    // Each subtask is undone in a later start than everything downstream of it.
    let round: HashMap<i64, usize> = sim
        .starts
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.iter().map(move |&(id, _)| (id, i)))
        .collect();
    for s in &before.subtasks {
        for d in s.downstreams.iter().filter(|d| undone.contains(d)) {
            assert!(
                round[&s.id] > round[d],
                "{} undone before its downstream {d}",
                s.id
            );
        }
    }
    let stages: Vec<(Step, usize)> = sim.stages();
    assert_eq!(
        stages,
        vec![
            (Step::StopAll, 2),
            (Step::Wait, 1),
            (Step::RestartProxy, 2),
            (Step::Wait, 1),
            (Step::PrepareRestart, 2),
        ]
    );
    for s in &sim.task.subtasks {
        let expected = if ran.contains(&s.id) {
            (SubtaskStatus::Pending, Operation::Rollback)
        } else {
            (SubtaskStatus::Pending, Operation::Execute)
        };
        assert_eq!((s.status, s.operation), expected, "subtask {}", s.id);
    }
}

#[test]
fn a_failed_undo_stops_the_rollback_and_fails_it() {
    let (sim, before) = rolled_back(&|s: &Subtask| {
        (s.step == Step::RestartProxy).then(|| StepEnd::Failed("proxy gone".to_string()))
    });
    assert_eq!(sim.finish, Some((TaskStatus::Failed, Operation::Rollback)));
    let prepare: Vec<i64> = before
        .subtasks
        .iter()
        .filter(|s| s.step == Step::PrepareRestart)
        .map(|s| s.id)
        .collect();
    assert!(
        sim.starts
            .iter()
            .flatten()
            .all(|(id, _)| !prepare.contains(id)),
        "upstreams of a failed undo stay"
    );
}

/// A batch restart whose controller died with one Prepare running, one failed and one
/// done; also the Prepare ids.
fn interrupted_with_one_prepare_failed() -> (Task, Vec<i64>) {
    let mut task = batch_restart(&HOSTS);
    let prepare: Vec<i64> = task
        .subtasks
        .iter()
        .filter(|s| s.step == Step::PrepareRestart)
        .map(|s| s.id)
        .collect();
    for (s, status) in task
        .subtasks
        .iter_mut()
        .filter(|s| s.step == Step::PrepareRestart)
        .zip([
            SubtaskStatus::Running,
            SubtaskStatus::Failed,
            SubtaskStatus::Successful,
        ])
    {
        s.status = status;
    }
    (task, prepare)
}

#[test]
fn a_resumed_failed_task_only_drains() {
    // The controller died with one Prepare failed, one running and one done.
    let (task, prepare) = interrupted_with_one_prepare_failed();
    let (sim, effects) = Sim::take_up(requeued(task), Start::Resumed, 256);
    assert!(
        matches!(
            &effects[..],
            [Effect::Finish {
                status: TaskStatus::Failed,
                operation: Operation::Execute
            }]
        ),
        "{effects:?}"
    );
    assert!(sim.starts.is_empty());
    assert_eq!(sim.status(prepare[0]).0, SubtaskStatus::Ready);
}

#[test]
fn a_resumed_retry_of_one_subtask_runs_it_though_another_stays_failed() {
    // One host's Prepare failed, another's too; the operator retried the first one
    // only, and the controller died while it ran. The store's events say no subtask
    // failed since that retry reopened the task.
    let (mut task, prepare) = interrupted_with_one_prepare_failed();
    task.operation = Operation::Retry;
    let (sim, _) = Sim::take_up_with(requeued(task), Start::Resumed, 256, false);
    assert_eq!(
        sim.starts
            .first()
            .map(|batch| batch.iter().map(|&(id, _)| id).collect::<Vec<_>>()),
        Some(vec![prepare[0]]),
        "the retried subtask runs again"
    );
}

#[test]
fn a_resumed_task_reruns_what_was_running() {
    let mut task = batch_restart(&HOSTS);
    let prepare: Vec<i64> = task
        .subtasks
        .iter()
        .filter(|s| s.step == Step::PrepareRestart)
        .map(|s| s.id)
        .collect();
    task.subtasks[0].status = SubtaskStatus::Running;
    task.subtasks[1].status = SubtaskStatus::Successful;
    let (mut sim, effects) = Sim::take_up(requeued(task), Start::Resumed, 256);
    assert!(
        matches!(&effects[..], [Effect::Start(b)] if b == &vec![(prepare[0], Operation::Execute), (prepare[2], Operation::Execute)])
    );
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Execute)
    );
}

#[test]
fn a_resumed_rollback_undoes_again_what_it_was_undoing() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS[..1]), Start::Fresh, 256);
    let stop = sim.ids(Step::StopAll)[0];
    sim.run_to_end(&fail_on(stop));
    let (sim, _) = Sim::take_up(rolling_back(sim.task), Start::Fresh, 256);
    assert_eq!(sim.running, BTreeSet::from([stop]));
    // The controller dies during the undo; the next one finds it RUNNING under ROLLBACK.
    let (mut sim, effects) = Sim::take_up(requeued(sim.task), Start::Resumed, 256);
    assert!(matches!(&effects[..], [Effect::Start(b)] if b == &vec![(stop, Operation::Rollback)]));
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Successful, Operation::Rollback)
    );
}

#[test]
fn a_cancelled_step_fails_under_cancel_and_the_task_fails() {
    let (mut sim, _) = Sim::take_up(
        task_from(&plans::batch(AgentAction::Stop, &HOSTS[..2])),
        Start::Fresh,
        256,
    );
    let prepare = sim.ids(Step::PrepareStop);
    let wait = sim.ids(Step::Wait)[0];
    let effects = sim.feed(Event::CancelAsked {
        id: wait,
        by: "alice".to_string(),
    });
    assert!(
        matches!(&effects[..], [Effect::RefuseCancel(id)] if *id == wait),
        "not running: refused"
    );
    let effects = sim.feed(Event::CancelAsked {
        id: prepare[0],
        by: "alice".to_string(),
    });
    assert!(
        matches!(&effects[..], [Effect::Cancel { id, by }] if *id == prepare[0] && by == "alice")
    );
    assert_eq!(sim.status(prepare[0]).0, SubtaskStatus::Canceling);
    let effects = sim.end(vec![(
        prepare[0],
        StepEnd::Cancelled {
            by: "alice".to_string(),
        },
    )]);
    assert!(
        matches!(&effects[..], [Effect::Record { .. }]),
        "the sibling still runs"
    );
    assert_eq!(
        sim.status(prepare[0]),
        (SubtaskStatus::Failed, Operation::Cancel)
    );
    assert_eq!(sim.logs[&prepare[0]], "CANCELLED by alice");
    assert_eq!(
        sim.run_to_end(&ok),
        (TaskStatus::Failed, Operation::Execute)
    );
    assert_eq!(sim.status(wait).0, SubtaskStatus::Pending);
}

#[test]
fn a_lost_lease_stops_everything_and_writes_nothing_more() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let prepare = sim.ids(Step::PrepareRestart);
    sim.end(vec![(prepare[0], StepEnd::Succeeded)]);
    let writes = sim.writes;
    let effects = sim.feed(Event::LeaseLost);
    assert!(matches!(&effects[..], [Effect::Stop]));
    assert!(
        sim.machine
            .on(Event::StepsEnded(vec![(prepare[1], StepEnd::Succeeded)]))
            .is_empty()
    );
    assert!(
        sim.machine
            .on(Event::CancelAsked {
                id: prepare[2],
                by: "bob".to_string()
            })
            .is_empty()
    );
    assert_eq!(sim.writes, writes);
    assert_eq!(sim.finish, None);
}

#[test]
fn shutting_down_stops_and_leaves_running_steps_to_the_next_start() {
    let (mut sim, _) = Sim::take_up(batch_restart(&HOSTS), Start::Fresh, 256);
    let effects = sim.feed(Event::ShuttingDown);
    assert!(matches!(&effects[..], [Effect::Stop]));
    assert!(
        sim.task
            .subtasks
            .iter()
            .any(|s| s.status == SubtaskStatus::Running)
    );
}

#[test]
fn a_task_that_is_not_running_is_left_alone() {
    let mut task = batch_restart(&HOSTS);
    task.status = TaskStatus::Failed;
    let (sim, effects) = Sim::take_up(task, Start::Fresh, 256);
    assert!(matches!(&effects[..], [Effect::Stop]));
    assert_eq!(sim.writes, 0);
}

mod rolling;
