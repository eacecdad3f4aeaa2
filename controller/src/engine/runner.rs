//! One task's executor: feeds events to the task's `decide::Machine` and carries out the
//! effects it answers with, through the store and the steps it spawns.
//!
//! Every store write of a runner is in one function per effect kind, so that what guards
//! a write (the lease's fence) is added in one place each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::decide::{Effect, Event, Machine, StepEnd};
use super::leases::Hold;
use super::steps;
use super::{Control, Shared, Start};
use crate::model::{Operation, Step, Task, TaskStatus, now_millis};
use crate::store::{Fence, LogEntry, Outcome, StoreError};

/// Runs the task; a store failure (database gone for a moment) is retried from the
/// stored state rather than losing the task until the next restart.
pub(super) async fn drive_until_done(
    shared: &Arc<Shared>,
    fence: Fence,
    start: Start,
    mut read: Option<Arc<Task>>,
    mut control: mpsc::UnboundedReceiver<Control>,
    hold: &Arc<Hold>,
) {
    let mut start = start;
    loop {
        // A resumed task first queues again what was running under its last owner (or
        // before a store failure), so that no subtask stays RUNNING without a step.
        let ran = match start {
            Start::Resumed => match shared.store.requeue_interrupted(&fence, now_millis()).await {
                Ok(_) => run_task(shared, &fence, start, None, &mut control, hold).await,
                Err(e) => Err(e),
            },
            Start::Fresh => run_task(shared, &fence, start, read.take(), &mut control, hold).await,
        };
        match ran {
            Ok(()) => return,
            Err(e) if lease_lost(&e) => {
                tracing::warn!("fenced: {e}; this controller stops driving the task");
                return;
            }
            Err(e) => {
                tracing::error!("task runner failed, retrying from the store: {e}");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                start = Start::Resumed;
            }
        }
    }
}

/// Whether a refused write means another controller drives the task now, so that this
/// one stops at once instead of retrying.
fn lease_lost(e: &StoreError) -> bool {
    matches!(e, StoreError::Fenced { .. })
}

/// Whether the runner goes on after carrying out a list of effects.
enum Flow {
    Continue,
    Over,
}

async fn run_task(
    shared: &Arc<Shared>,
    fence: &Fence,
    start: Start,
    read: Option<Arc<Task>>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    hold: &Arc<Hold>,
) -> Result<(), StoreError> {
    let task = match read {
        Some(task) => task,
        None => match shared.store.get_task(fence.task_id).await? {
            Some(task) => Arc::new(task),
            None => {
                tracing::warn!("task vanished from the store");
                return Ok(());
            }
        },
    };
    let failed_since_reopen = match start {
        Start::Resumed => shared.store.failed_since_reopen(fence.task_id).await?,
        Start::Fresh => false,
    };
    let mut machine = Machine::new(&task, shared.options.task_concurrency, failed_since_reopen);
    let mut steps = Steps {
        hold: hold.clone(),
        set: JoinSet::new(),
        ids: HashMap::new(),
        running: HashMap::new(),
        cancelled: HashMap::new(),
    };
    let mut event = Some(Event::TakenUp(start));
    loop {
        // None: a notice that came to nothing.
        let effects = event.map(|e| machine.on(e)).unwrap_or_default();
        match carry_out(shared, &task, fence, &mut steps, effects).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Over) => return Ok(()),
            Err(e) if lease_lost(&e) => {
                tracing::warn!("fenced: {e}; this controller stops driving the task");
                let effects = machine.on(Event::LeaseLost);
                carry_out(shared, &task, fence, &mut steps, effects).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        event = tokio::select! {
            _ = shared.cancel.cancelled() => Some(Event::ShuttingDown),
            Some(request) = control.recv() => match request {
                Control::Cancel { subtask_id, by } => {
                    Some(Event::CancelAsked { id: subtask_id, by })
                }
                // Read here, in turn with the runner's own writes, so that a notice sent
                // before the canary's hold cannot undo it. A failed read costs nothing
                // but time: the next lease round sends the notice again.
                Control::PauseChanged => match shared.store.task_paused(fence.task_id).await {
                    Ok(paused) => Some(Event::Paused(paused.unwrap_or(false))),
                    Err(e) => {
                        tracing::warn!("reading whether the task is paused: {e}");
                        None
                    }
                },
                Control::Lost => {
                    tracing::warn!(
                        generation = fence.generation,
                        "fenced: this controller no longer holds the task's lease; it stops \
                         driving it"
                    );
                    Some(Event::LeaseLost)
                }
            },
            Some(first) = steps.set.join_next_with_id() => {
                // Whatever else finished meanwhile is recorded with it, in one write.
                let mut ends = Vec::new();
                let mut next = Some(first);
                while let Some(joined) = next {
                    ends.push(steps.ended(shared, joined));
                    next = steps.set.try_join_next_with_id();
                }
                Some(Event::StepsEnded(ends))
            }
        };
    }
}

async fn carry_out(
    shared: &Arc<Shared>,
    task: &Arc<Task>,
    fence: &Fence,
    steps: &mut Steps,
    effects: Vec<Effect>,
) -> Result<Flow, StoreError> {
    for effect in effects {
        match effect {
            Effect::Start(batch) => start(shared, task, fence, steps, &batch).await?,
            Effect::Record { outcomes, ready } => {
                record(shared, task, fence, &outcomes, &ready).await?;
            }
            Effect::Cancel { id, by } => steps.cancel(id, by),
            Effect::Note { id, line } => note(shared, task, fence, id, line),
            Effect::Hold { id, canary, line } => {
                shared
                    .store
                    .hold_barrier(fence, id, canary, now_millis(), &line)
                    .await?;
                note(shared, task, fence, id, line);
            }
            Effect::RefuseCancel(id) => {
                tracing::info!(
                    subtask_id = id,
                    "cancel came after the step ended; its outcome stands"
                );
            }
            Effect::Finish { status, operation } => {
                finish(shared, fence, status, operation).await?;
                return Ok(Flow::Over);
            }
            Effect::Stop => {
                steps.set.abort_all();
                return Ok(Flow::Over);
            }
        }
    }
    Ok(Flow::Continue)
}

async fn start(
    shared: &Arc<Shared>,
    task: &Arc<Task>,
    fence: &Fence,
    steps: &mut Steps,
    batch: &[(i64, Operation)],
) -> Result<(), StoreError> {
    shared
        .store
        .start_subtasks(fence, batch, &shared.options.executor, now_millis())
        .await?;
    for &(id, operation) in batch {
        steps.spawn(shared, task, fence, id, operation == Operation::Rollback)?;
    }
    Ok(())
}

async fn record(
    shared: &Arc<Shared>,
    task: &Task,
    fence: &Fence,
    outcomes: &[Outcome],
    ready: &[(i64, Operation)],
) -> Result<(), StoreError> {
    if !outcomes.is_empty() {
        // The steps' own lines first, so a failure's reason reads last in its log.
        shared.logbook.flush().await;
    }
    shared
        .store
        .record_outcomes(fence, &task.trace_id, now_millis(), outcomes, ready)
        .await
}

fn note(shared: &Shared, task: &Task, fence: &Fence, id: i64, line: String) {
    tracing::info!(subtask_id = id, "{line}");
    shared.logbook.write(LogEntry {
        fence: fence.clone(),
        subtask_id: id,
        trace_id: task.trace_id.clone(),
        at: now_millis(),
        line,
    });
}

async fn finish(
    shared: &Arc<Shared>,
    fence: &Fence,
    status: TaskStatus,
    operation: Operation,
) -> Result<(), StoreError> {
    // Notes (a barrier's reason to stop the rollout) land before the end.
    shared.logbook.flush().await;
    shared
        .store
        .finish_task(fence, status, operation, now_millis())
        .await?;
    tracing::info!(%status, %operation, "task ended");
    Ok(())
}

type Joined = Result<(tokio::task::Id, (i64, StepEnd)), tokio::task::JoinError>;

/// The steps in flight, which subtask each tokio task runs (so that even a step that
/// panicked or was aborted is recorded against its subtask), and the cancels asked for.
struct Steps {
    /// The task's lease as far as this controller knows; every step waits on it before
    /// it calls an agent.
    hold: Arc<Hold>,
    set: JoinSet<(i64, StepEnd)>,
    ids: HashMap<tokio::task::Id, i64>,
    running: HashMap<i64, Running>,
    /// Subtasks whose step was stopped for a cancel, and by whom.
    cancelled: HashMap<i64, String>,
}

/// A step in flight: how to stop it, and what its duration is recorded under.
struct Running {
    abort: tokio::task::AbortHandle,
    step: Step,
    started: Instant,
}

/// How a step ended, as the step duration metric labels it.
fn outcome_label(end: &StepEnd) -> &'static str {
    match end {
        StepEnd::Succeeded => "succeeded",
        StepEnd::Failed(_) => "failed",
        StepEnd::TimedOut(_) => "timed_out",
        StepEnd::Stopped => "stopped",
        StepEnd::Cancelled { .. } => "cancelled",
    }
}

impl Steps {
    fn ended(&mut self, shared: &Shared, joined: Joined) -> (i64, StepEnd) {
        let (id, end) = self.end_of(joined);
        if let Some(running) = self.running.remove(&id) {
            shared
                .metrics
                .step_ended(running.step, outcome_label(&end), running.started.elapsed());
        }
        (id, end)
    }

    fn end_of(&mut self, joined: Joined) -> (i64, StepEnd) {
        let (tokio_id, result) = match joined {
            Ok((tokio_id, done)) => (tokio_id, Some(done)),
            Err(e) => {
                if e.is_panic() {
                    tracing::error!("a step panicked: {e}");
                }
                (e.id(), None)
            }
        };
        let id = self.ids.remove(&tokio_id).unwrap_or_default();
        if let Some(by) = self.cancelled.remove(&id) {
            return (id, StepEnd::Cancelled { by });
        }
        result.unwrap_or((id, StepEnd::Stopped))
    }

    /// The operator's request already marked the subtask CANCELING; dropping the step's
    /// future drops its in-flight gRPC call, and the outcome is recorded when the join
    /// reports it.
    fn cancel(&mut self, id: i64, by: String) {
        if self.cancelled.contains_key(&id) {
            return;
        }
        if let Some(running) = self.running.get(&id) {
            running.abort.abort();
            self.cancelled.insert(id, by);
        }
    }

    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        task: &Arc<Task>,
        fence: &Fence,
        id: i64,
        undo: bool,
    ) -> Result<(), StoreError> {
        let Some(subtask) = task.subtasks.iter().find(|s| s.id == id).cloned() else {
            return Err(StoreError::Corrupt {
                table: "subtasks",
                detail: format!("subtask {id} is not part of task {}", task.id),
            });
        };
        let timeout = crate::plans::run_timeout(
            subtask.timeout_secs,
            subtask.step,
            task.rollout.as_ref(),
            shared.options.max_subtask_timeout,
        );
        let step = subtask.step;
        let span = tracing::info_span!(
            "subtask",
            subtask_id = id,
            host_id = subtask.host_id,
            trace_id = %task.trace_id,
            name = %subtask.name
        );
        let shared = shared.clone();
        let task = task.clone();
        let fence = fence.clone();
        let hold = self.hold.clone();
        let handle = self.set.spawn(
            async move {
                let run = steps::StepRun {
                    shared: &shared,
                    fence: &fence,
                    hold: &hold,
                    trace_id: &task.trace_id,
                    subtask: &subtask,
                    deadline: Instant::now() + timeout,
                    rollout: task.rollout,
                    context: &task.context,
                };
                let work = async {
                    if undo {
                        run.undo().await
                    } else {
                        run.run().await
                    }
                };
                let end = match tokio::time::timeout(timeout, work).await {
                    Ok(Ok(())) => StepEnd::Succeeded,
                    Ok(Err(e)) => StepEnd::Failed(e.to_string()),
                    Err(_) => StepEnd::TimedOut(timeout),
                };
                (id, end)
            }
            .instrument(span),
        );
        self.ids.insert(handle.id(), id);
        self.running.insert(
            id,
            Running {
                abort: handle,
                step,
                started: Instant::now(),
            },
        );
        Ok(())
    }
}
