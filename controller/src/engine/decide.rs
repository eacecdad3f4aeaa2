//! What a task's runner decides: a state machine over the task's DAG that takes events
//! (taken up, steps ended, cancel asked, lease lost, paused or resumed) and answers with
//! effects to carry out.
//!
//! Pure: no store, no clock, no tokio. The executor (`runner.rs`) owns every side effect,
//! so each rule of the engine (event-driven starts, the concurrency cap, fail-fast,
//! backwards rollback, skip promotion, cancel) is tested here by feeding events alone.
//! The machine updates its graph as it decides, on the promise that the executor writes
//! each effect before it acts on the next one, and drops the machine if a write fails.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::Start;
use super::graph::Graph;
use super::rolling::{Rolling, Verdict};
use crate::model::{Operation, SubtaskStatus, Task, TaskStatus};
use crate::store::Outcome;

/// Something that happened to the task, as the executor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// This controller takes the task up: `Fresh` after creation, retry, skip or
    /// rollback; `Resumed` after a restart, once interrupted steps were requeued.
    TakenUp(Start),
    /// Steps that ended since the last event, recorded together in one write.
    StepsEnded(Vec<(i64, StepEnd)>),
    /// An operator asks to cancel a subtask.
    CancelAsked { id: i64, by: String },
    /// Another controller owns the task now: whatever this one would write is stale.
    LeaseLost,
    /// The controller is stopping; running steps rerun at the next start.
    ShuttingDown,
    /// A rolling task was paused or resumed (as the store has it now).
    Paused(bool),
}

/// How one step's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StepEnd {
    Succeeded,
    Failed(String),
    TimedOut(Duration),
    /// Panicked or aborted without a result of its own.
    Stopped,
    /// Aborted because an operator cancelled it; wins over whatever the step returned.
    Cancelled {
        by: String,
    },
}

/// What the executor must do, in order.
#[derive(Debug, Clone)]
pub(super) enum Effect {
    /// Mark these RUNNING under their operation in one write, then run their steps.
    Start(Vec<(i64, Operation)>),
    /// Write how steps ended and which downstreams that made READY, in one write.
    Record {
        outcomes: Vec<Outcome>,
        ready: Vec<(i64, Operation)>,
    },
    /// Abort the step of a subtask the operator marked CANCELING; its end comes as
    /// `Cancelled`.
    Cancel { id: i64, by: String },
    /// The subtask has no step running here: it just ended, and its outcome stands.
    RefuseCancel(i64),
    /// Write a line to a subtask's log: why a barrier lets the next batch go.
    Note { id: i64, line: String },
    /// Hold a barrier until the task is resumed: READY, the reason in its log, and for
    /// the canary the task paused in the same write.
    Hold { id: i64, canary: bool, line: String },
    /// The task ends; nothing runs any more.
    Finish {
        status: TaskStatus,
        operation: Operation,
    },
    /// Abort every step and write nothing more.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// EXECUTE and RETRY: downstream after upstream.
    Forward,
    /// ROLLBACK: a subtask is undone after everything downstream of it.
    Backward,
}

pub(super) struct Machine {
    graph: Graph,
    direction: Direction,
    task_status: TaskStatus,
    task_operation: Operation,
    /// Set by the first failure of a stage-wise task: nothing new starts, what runs
    /// finishes. A rolling task's failures are judged at its barriers instead.
    failed: bool,
    /// See [`Machine::new`].
    failed_since_reopen: bool,
    /// Startable subtasks waiting for room under the concurrency cap, in start order.
    queue: VecDeque<i64>,
    running: HashSet<i64>,
    concurrency: usize,
    /// Finished or stopped: every later event is ignored.
    over: bool,
    /// A rolling task's barriers; None for a stage-wise task and for a rollback.
    rolling: Option<Rolling>,
}

impl Machine {
    /// `failed_since_reopen`: a subtask failed since the task was last created, retried,
    /// skipped or rolled back (the store's events say so). It decides what a resumed
    /// task does: one that had failed only finishes what ran, while one reopened for a
    /// retry of one subtask, with another still FAILED, runs that retry.
    pub fn new(task: &Task, concurrency: usize, failed_since_reopen: bool) -> Machine {
        let direction = if task.operation == Operation::Rollback {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let graph = Graph::new(task);
        let rolling = match direction {
            Direction::Forward => Rolling::new(task, &graph),
            Direction::Backward => None,
        };
        Machine {
            graph,
            direction,
            task_status: task.status,
            task_operation: task.operation,
            failed: false,
            failed_since_reopen,
            queue: VecDeque::new(),
            running: HashSet::new(),
            concurrency: concurrency.max(1),
            over: false,
            rolling,
        }
    }

    pub fn on(&mut self, event: Event) -> Vec<Effect> {
        if self.over {
            return Vec::new();
        }
        match event {
            Event::TakenUp(start) => self.take_up(start),
            Event::StepsEnded(ends) => self.steps_ended(ends),
            Event::CancelAsked { id, by } if self.running.contains(&id) => {
                vec![Effect::Cancel { id, by }]
            }
            Event::CancelAsked { id, .. } => vec![Effect::RefuseCancel(id)],
            Event::LeaseLost | Event::ShuttingDown => {
                self.over = true;
                vec![Effect::Stop]
            }
            Event::Paused(paused) => self.paused(paused),
        }
    }

    fn paused(&mut self, paused: bool) -> Vec<Effect> {
        let Some(rolling) = self.rolling.as_mut() else {
            return Vec::new();
        };
        if rolling.paused() == paused {
            return Vec::new();
        }
        let released = rolling.set_paused(paused);
        if released.is_empty() {
            return Vec::new();
        }
        let mut effects = Vec::new();
        self.open_barriers(&released, &mut effects);
        self.advance(&mut effects);
        effects
    }

    /// Judges the barriers among `candidates` whose batch has settled.
    fn open_barriers(&mut self, candidates: &[i64], effects: &mut Vec<Effect>) {
        let Some(rolling) = self.rolling.as_mut() else {
            return;
        };
        for &id in candidates {
            if !rolling.due(&self.graph, id) || self.queue.contains(&id) {
                continue;
            }
            let Some(judged) = rolling.judge(&self.graph, id) else {
                continue;
            };
            let operation = self
                .graph
                .node(id)
                .map_or(Operation::Execute, |n| n.operation);
            match judged.verdict {
                Verdict::Pass => {
                    if self.graph.status(id) == Some(SubtaskStatus::Pending) {
                        self.graph.set(id, SubtaskStatus::Ready, operation);
                        effects.push(Effect::Record {
                            outcomes: Vec::new(),
                            ready: vec![(id, operation)],
                        });
                    }
                    effects.push(Effect::Note {
                        id,
                        line: judged.line,
                    });
                    self.queue.push_back(id);
                }
                // The barrier stays as it is: the task ends FAILED for its failed hosts,
                // and once a retry or skip has them settle again, the barrier is judged
                // again like any other.
                Verdict::Stop => effects.push(Effect::Note {
                    id,
                    line: judged.line,
                }),
                Verdict::Hold { canary } => {
                    self.graph.set(id, SubtaskStatus::Ready, operation);
                    effects.push(Effect::Hold {
                        id,
                        canary,
                        line: judged.line,
                    });
                }
            }
        }
    }

    fn take_up(&mut self, start: Start) -> Vec<Effect> {
        if self.task_status != TaskStatus::Running {
            self.over = true;
            return vec![Effect::Stop];
        }
        let mut effects = Vec::new();
        match self.direction {
            Direction::Forward => {
                let (ready, promoted) = self.graph.startable();
                // PENDING subtasks a skip left with every upstream done: READY first.
                if !promoted.is_empty() {
                    let ready_now: Vec<(i64, Operation)> = promoted
                        .iter()
                        .map(|&id| (id, self.operation(id)))
                        .collect();
                    for &(id, operation) in &ready_now {
                        self.graph.set(id, SubtaskStatus::Ready, operation);
                    }
                    effects.push(Effect::Record {
                        outcomes: Vec::new(),
                        ready: ready_now,
                    });
                }
                self.queue = ready.into_iter().chain(promoted).collect();
                // A task that had failed before its last owner stopped only finishes what
                // ran; a rolling one goes on as its barriers let it.
                self.failed =
                    start == Start::Resumed && self.failed_since_reopen && self.rolling.is_none();
                let barriers = self
                    .rolling
                    .as_ref()
                    .map(Rolling::all_barriers)
                    .unwrap_or_default();
                self.open_barriers(&barriers, &mut effects);
            }
            Direction::Backward => self.queue = self.graph.undoable_now().into(),
        }
        self.advance(&mut effects);
        effects
    }

    fn steps_ended(&mut self, ends: Vec<(i64, StepEnd)>) -> Vec<Effect> {
        let mut outcomes = Vec::with_capacity(ends.len());
        let mut holds = Vec::new();
        for (id, end) in ends {
            if !self.running.remove(&id) {
                continue;
            }
            if let Some(line) = self.hold_after_pause(id, &end) {
                holds.push(line);
                continue;
            }
            let outcome = self.outcome(id, end);
            // A rolling task's failures are counted at its barriers, against the budget;
            // the other hosts of the batch finish their chains meanwhile.
            if outcome.status == SubtaskStatus::Failed && self.rolling.is_none() {
                self.failed = true;
            }
            self.graph.set(id, outcome.status, outcome.operation);
            outcomes.push(outcome);
        }
        if outcomes.is_empty() && holds.is_empty() {
            return Vec::new();
        }
        let ended: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
        let mut ready = Vec::new();
        for o in &outcomes {
            match (self.direction, o.status) {
                (Direction::Forward, SubtaskStatus::Successful) => {
                    for unblocked in self.graph.unblocked_by(o.id) {
                        let operation = self.operation(unblocked);
                        self.graph.set(unblocked, SubtaskStatus::Ready, operation);
                        ready.push((unblocked, operation));
                        self.queue.push_back(unblocked);
                    }
                }
                (Direction::Backward, SubtaskStatus::Pending) => {
                    for upstream in self.graph.undo_unblocked_by(o.id) {
                        if !self.queue.contains(&upstream) {
                            self.queue.push_back(upstream);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut effects = Vec::new();
        if !outcomes.is_empty() {
            effects.push(Effect::Record { outcomes, ready });
        }
        effects.extend(holds);
        if let Some(rolling) = &self.rolling {
            let barriers = rolling.barriers_after(&self.graph, &ended);
            self.open_barriers(&barriers, &mut effects);
        }
        self.advance(&mut effects);
        effects
    }

    /// A barrier that finished its pause while the task was paused does not let the
    /// next batch go: it is held until the resume, which runs it again.
    fn hold_after_pause(&mut self, id: i64, end: &StepEnd) -> Option<Effect> {
        let rolling = self.rolling.as_mut()?;
        let barrier = self.graph.node(id).is_some_and(|n| n.barrier);
        if !barrier || *end != StepEnd::Succeeded || !rolling.paused() {
            return None;
        }
        let line = rolling.hold_after_pause(id)?;
        let operation = self.operation(id);
        self.graph.set(id, SubtaskStatus::Ready, operation);
        Some(Effect::Hold {
            id,
            canary: false,
            line,
        })
    }

    /// Starts what the cap and fail-fast allow; ends the task once nothing runs.
    fn advance(&mut self, effects: &mut Vec<Effect>) {
        let room = if self.failed {
            0
        } else {
            self.concurrency.saturating_sub(self.running.len())
        };
        let ids: Vec<i64> = self.queue.drain(..room.min(self.queue.len())).collect();
        let batch: Vec<(i64, Operation)> = ids
            .into_iter()
            .map(|id| (id, self.start_operation(id)))
            .collect();
        for &(id, operation) in &batch {
            self.graph.set(id, SubtaskStatus::Running, operation);
            self.running.insert(id);
        }
        if !batch.is_empty() {
            effects.push(Effect::Start(batch));
        }
        let holding = self.rolling.as_ref().is_some_and(Rolling::holding);
        if self.running.is_empty() && !holding {
            let (status, operation) = self.verdict();
            self.over = true;
            effects.push(Effect::Finish { status, operation });
        }
    }

    fn outcome(&self, id: i64, end: StepEnd) -> Outcome {
        let ran = self.start_operation(id);
        let (status, operation, log) = match (end, self.direction) {
            (StepEnd::Cancelled { by }, _) => (
                SubtaskStatus::Failed,
                Operation::Cancel,
                Some(format!("CANCELLED by {by}")),
            ),
            (StepEnd::Succeeded, Direction::Forward) => (SubtaskStatus::Successful, ran, None),
            // Undone: as if it never ran, so that a retry or rollback sees it so.
            (StepEnd::Succeeded, Direction::Backward) => {
                (SubtaskStatus::Pending, Operation::Rollback, None)
            }
            (StepEnd::Failed(why), _) => {
                (SubtaskStatus::Failed, ran, Some(format!("FAILED: {why}")))
            }
            (StepEnd::TimedOut(after), _) => (
                SubtaskStatus::Failed,
                ran,
                Some(format!("FAILED: timed out after {}s", after.as_secs_f64())),
            ),
            (StepEnd::Stopped, _) => (
                SubtaskStatus::Failed,
                ran,
                Some("FAILED: the step stopped before it finished".to_string()),
            ),
        };
        Outcome {
            id,
            status,
            operation,
            log,
        }
    }

    fn verdict(&self) -> (TaskStatus, Operation) {
        match self.direction {
            Direction::Forward if self.graph.all_successful() => {
                (TaskStatus::Successful, self.task_operation)
            }
            Direction::Forward => (TaskStatus::Failed, self.task_operation),
            Direction::Backward if !self.graph.anything_to_undo() && !self.failed => {
                (TaskStatus::Successful, Operation::Rollback)
            }
            Direction::Backward => (TaskStatus::Failed, Operation::Rollback),
        }
    }

    /// The subtask's own operation (EXECUTE, RETRY), which its run keeps.
    fn operation(&self, id: i64) -> Operation {
        self.graph
            .node(id)
            .map_or(Operation::Execute, |n| n.operation)
    }

    fn start_operation(&self, id: i64) -> Operation {
        match self.direction {
            Direction::Forward => self.operation(id),
            Direction::Backward => Operation::Rollback,
        }
    }
}

#[cfg(test)]
mod tests;
