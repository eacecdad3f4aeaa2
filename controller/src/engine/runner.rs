//! One task's runner: starts what may start, records what finished, and repeats until
//! nothing runs, forwards for EXECUTE and RETRY, backwards for ROLLBACK.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::graph::Graph;
use super::steps::{self, StepError};
use super::{Control, Shared, Start};
use crate::model::{Operation, SubtaskStatus, Task, TaskStatus, now_millis};
use crate::store::{Fence, Outcome, StoreError};

/// Runs the task; a store failure (database gone for a moment) is retried from the
/// stored state rather than losing the task until the next restart.
pub(super) async fn drive_until_done(
    shared: &Arc<Shared>,
    fence: Fence,
    start: Start,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut start = start;
    loop {
        match run_task(shared, &fence, start, &mut control).await {
            Ok(()) => return,
            Err(e @ StoreError::Fenced { .. }) => {
                tracing::warn!("fenced: {e}; this controller stops driving it");
                return;
            }
            Err(e) => {
                tracing::error!("task runner failed, retrying from the store: {e}");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match shared.store.requeue_interrupted(&fence, now_millis()).await {
                    Ok(_) => {}
                    Err(e @ StoreError::Fenced { .. }) => {
                        tracing::warn!("fenced: {e}; this controller stops driving it");
                        return;
                    }
                    Err(e) => tracing::error!("could not requeue task {}: {e}", fence.task_id),
                }
                start = Start::Resumed;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

async fn run_task(
    shared: &Arc<Shared>,
    fence: &Fence,
    start: Start,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<(), StoreError> {
    let Some(task) = shared.store.get_task(fence.task_id).await? else {
        tracing::warn!("task vanished from the store");
        return Ok(());
    };
    if task.status != TaskStatus::Running {
        return Ok(());
    }
    let direction = if task.operation == Operation::Rollback {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let task = Arc::new(task);
    let mut graph = Graph::new(&task);
    let mut queue: VecDeque<i64> = match direction {
        Direction::Forward => {
            let (ready, promoted_ids) = graph.startable();
            if !promoted_ids.is_empty() {
                let promoted: Vec<(i64, Operation)> = promoted_ids
                    .iter()
                    .map(|id| {
                        (
                            *id,
                            graph.node(*id).map_or(Operation::Execute, |n| n.operation),
                        )
                    })
                    .collect();
                shared
                    .store
                    .record_outcomes(fence, &task.trace_id, now_millis(), &[], &promoted)
                    .await?;
                for (id, op) in &promoted {
                    graph.set(*id, SubtaskStatus::Ready, *op);
                }
            }
            ready.into_iter().chain(promoted_ids).collect()
        }
        Direction::Backward => graph.undoable_now().into(),
    };
    // A task that had failed before this controller stopped only finishes what ran.
    let mut failed = start == Start::Resumed
        && graph.any(SubtaskStatus::Failed)
        && direction == Direction::Forward;
    let mut running = Running::default();
    let concurrency = shared.options.task_concurrency.max(1);
    let operation_of = |graph: &Graph, id: i64| match direction {
        Direction::Forward => graph.node(id).map_or(Operation::Execute, |n| n.operation),
        Direction::Backward => Operation::Rollback,
    };

    loop {
        let room = if failed {
            0
        } else {
            concurrency.saturating_sub(running.len())
        };
        let batch: Vec<(i64, Operation)> = queue
            .drain(..room.min(queue.len()))
            .map(|id| (id, operation_of(&graph, id)))
            .collect();
        if !batch.is_empty() {
            shared
                .store
                .start_subtasks(fence, &batch, &shared.options.executor, now_millis())
                .await?;
            for &(id, operation) in &batch {
                running.spawn(shared, &task, fence, id, direction)?;
                graph.set(id, SubtaskStatus::Running, operation);
            }
        }
        if running.is_empty() {
            break;
        }
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => {
                running.set.abort_all();
                return Ok(());
            }
            Some(request) = control.recv() => match request {
                Control::Cancel { subtask_id, by } => {
                    running.cancel(subtask_id, by);
                    continue;
                }
                Control::Lost => {
                    running.set.abort_all();
                    return Err(StoreError::Fenced {
                        task_id: fence.task_id,
                        generation: fence.generation,
                        holder: "another controller".to_string(),
                    });
                }
            },
            joined = running.set.join_next_with_id() => joined,
        };
        // Whatever else finished meanwhile is recorded with it, in one write.
        let mut finished = Vec::new();
        let mut next = first;
        while let Some(joined) = next {
            finished.push(running.outcome(joined));
            next = running.set.try_join_next_with_id();
        }
        let mut outcomes = Vec::with_capacity(finished.len());
        for (id, result) in finished {
            let (status, operation, log) = match (result, direction, running.cancelled.remove(&id))
            {
                (_, _, Some(by)) => (
                    SubtaskStatus::Failed,
                    Operation::Cancel,
                    Some(format!("CANCELLED by {by}")),
                ),
                (Ok(()), Direction::Forward, None) => {
                    (SubtaskStatus::Successful, operation_of(&graph, id), None)
                }
                (Ok(()), Direction::Backward, None) => {
                    (SubtaskStatus::Pending, Operation::Rollback, None)
                }
                (Err(e), _, None) => (
                    SubtaskStatus::Failed,
                    operation_of(&graph, id),
                    Some(format!("FAILED: {e}")),
                ),
            };
            if status == SubtaskStatus::Failed {
                failed = true;
            }
            graph.set(id, status, operation);
            outcomes.push(Outcome {
                id,
                status,
                operation,
                log,
            });
        }
        let mut ready = Vec::new();
        for o in &outcomes {
            match (direction, o.status) {
                (Direction::Forward, SubtaskStatus::Successful) => {
                    for unblocked in graph.unblocked_by(o.id) {
                        let operation = operation_of(&graph, unblocked);
                        graph.set(unblocked, SubtaskStatus::Ready, operation);
                        ready.push((unblocked, operation));
                        queue.push_back(unblocked);
                    }
                }
                (Direction::Backward, SubtaskStatus::Pending) => {
                    for upstream in graph.undo_unblocked_by(o.id) {
                        if !queue.contains(&upstream) {
                            queue.push_back(upstream);
                        }
                    }
                }
                _ => {}
            }
        }
        // The steps' own lines first, so a failure's reason reads last in its log.
        shared.logbook.flush().await;
        shared
            .store
            .record_outcomes(fence, &task.trace_id, now_millis(), &outcomes, &ready)
            .await?;
    }
    let (status, operation) = match direction {
        Direction::Forward if graph.all_successful() => (TaskStatus::Successful, task.operation),
        Direction::Forward => (TaskStatus::Failed, task.operation),
        Direction::Backward if !graph.anything_to_undo() && !failed => {
            (TaskStatus::Successful, Operation::Rollback)
        }
        Direction::Backward => (TaskStatus::Failed, Operation::Rollback),
    };
    shared
        .store
        .finish_task(fence, status, operation, now_millis())
        .await?;
    tracing::info!(%status, %operation, "task ended");
    Ok(())
}

type StepResult = (i64, Result<(), StepError>);
type Joined = Result<(tokio::task::Id, StepResult), tokio::task::JoinError>;

/// The steps in flight, which subtask each tokio task runs (so that even a step that
/// panicked or was aborted is recorded against its subtask), and the cancels asked for.
#[derive(Default)]
struct Running {
    set: JoinSet<StepResult>,
    ids: HashMap<tokio::task::Id, i64>,
    handles: HashMap<i64, tokio::task::AbortHandle>,
    /// Subtasks being cancelled, and by whom.
    cancelled: HashMap<i64, String>,
}

impl Running {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn outcome(&mut self, joined: Joined) -> StepResult {
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
        self.handles.remove(&id);
        result.unwrap_or((
            id,
            Err(StepError("the step stopped before it finished".to_string())),
        ))
    }

    /// Cancel: the operator's request recorded CANCELING; dropping the step's future
    /// drops its in-flight gRPC call, and the outcome is recorded when the join reports it.
    fn cancel(&mut self, subtask_id: i64, by: String) {
        if self.cancelled.contains_key(&subtask_id) {
            return;
        }
        if let Some(handle) = self.handles.get(&subtask_id) {
            handle.abort();
            self.cancelled.insert(subtask_id, by);
        }
    }

    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        task: &Arc<Task>,
        fence: &Fence,
        id: i64,
        direction: Direction,
    ) -> Result<(), StoreError> {
        let Some(subtask) = task.subtasks.iter().find(|s| s.id == id).cloned() else {
            return Err(StoreError::Corrupt {
                table: "subtasks",
                detail: format!("subtask {id} is not part of task {}", task.id),
            });
        };
        let mut timeout =
            Duration::from_secs(u64::try_from(subtask.timeout_secs).unwrap_or(0).max(1));
        if let Some(cap) = shared.options.max_subtask_timeout {
            timeout = timeout.min(cap);
        }
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
        let handle = self.set.spawn(
            async move {
                let run = steps::StepRun {
                    shared: &shared,
                    fence: &fence,
                    trace_id: &task.trace_id,
                    subtask: &subtask,
                    deadline: Instant::now() + timeout,
                };
                let work = async {
                    match direction {
                        Direction::Forward => run.run().await,
                        Direction::Backward => run.undo().await,
                    }
                };
                let outcome = match tokio::time::timeout(timeout, work).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(StepError(format!(
                        "timed out after {}s",
                        timeout.as_secs_f64()
                    ))),
                };
                (id, outcome)
            }
            .instrument(span),
        );
        self.ids.insert(handle.id(), id);
        self.handles.insert(id, handle);
        Ok(())
    }
}
