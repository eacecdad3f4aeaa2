//! The DAG engine: drives each RUNNING task from its stored state to an end.
//!
//! Event-driven: a subtask that succeeds makes its downstreams READY and starts them at
//! once, in the same turn, instead of waiting for a poller. Per-host steps of a stage run
//! in parallel, up to `task_concurrency` per task. The first failure stops new starts
//! (fail-fast) while running siblings finish, and the task ends FAILED, keeping its host
//! locks. A rollback runs the DAG backwards, undoing what ran. Every transition is
//! written to the store before it is acted on; a controller that dies mid-task resumes
//! from there, running again whatever was RUNNING.

mod graph;
mod logbook;
mod runner;
mod steps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agents::AgentPool;
use crate::model::now_millis;
use crate::store::{Store, StoreError};

pub use steps::StepError;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Written as the `executor` of tasks and subtasks: this controller's address.
    pub executor: String,
    /// How many subtasks of one task may run at once.
    pub task_concurrency: usize,
    /// Caps every subtask's timeout (OCP's go up to 600 s), for impatient operators and tests.
    pub max_subtask_timeout: Option<Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            executor: "127.0.0.1".to_string(),
            task_concurrency: 256,
            max_subtask_timeout: None,
        }
    }
}

/// What an operator asks of a task while its runner works on it.
pub(crate) enum Control {
    Cancel {
        subtask_id: i64,
        by: String,
        done: oneshot::Sender<Result<(), CancelRefused>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CancelRefused {
    #[error("subtask {0} is not running in this controller's engine")]
    NotRunning(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) struct Shared {
    store: Store,
    agents: Arc<AgentPool>,
    options: EngineOptions,
    cancel: CancellationToken,
    tracker: TaskTracker,
    logbook: logbook::LogBook,
    /// Tasks with a runner in this process, so a task is never driven twice, and the
    /// way to reach each runner.
    active: Mutex<HashMap<i64, mpsc::UnboundedSender<Control>>>,
}

#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// How a runner takes over a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Just created, retried or skipped: everything READY may start.
    Fresh,
    /// Picked up after a restart: a task that had already failed only drains.
    Resumed,
}

impl Engine {
    pub fn new(
        store: Store,
        agents: Arc<AgentPool>,
        options: EngineOptions,
        cancel: CancellationToken,
    ) -> Engine {
        let tracker = TaskTracker::new();
        let logbook = logbook::LogBook::start(store.clone(), &tracker, cancel.clone());
        Engine {
            shared: Arc::new(Shared {
                store,
                agents,
                options,
                cancel,
                tracker,
                logbook,
                active: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts driving a stored RUNNING task, unless this controller already does.
    pub fn drive(&self, task_id: i64, start: Start) {
        if self.shared.cancel.is_cancelled() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut active = self.lock_active();
            if active.contains_key(&task_id) {
                return;
            }
            active.insert(task_id, tx);
        }
        let shared = self.shared.clone();
        self.shared.tracker.spawn(
            async move {
                runner::drive_until_done(&shared, task_id, start, rx).await;
                shared
                    .active
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&task_id);
            }
            .instrument(tracing::info_span!("task", task_id)),
        );
    }

    /// Picks up every task the store says is RUNNING: what a controller does on start.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let ids = self.shared.store.running_task_ids().await?;
        for &id in &ids {
            let requeued = self
                .shared
                .store
                .requeue_interrupted(id, now_millis())
                .await?;
            tracing::info!(task_id = id, requeued, "resuming task");
            self.drive(id, Start::Resumed);
        }
        Ok(ids.len())
    }

    /// Cancels a RUNNING subtask: its agent call is dropped (the agent stops waiting) and
    /// the subtask ends FAILED with operation CANCEL. Returns once that is recorded.
    pub async fn cancel(
        &self,
        task_id: i64,
        subtask_id: i64,
        by: &str,
    ) -> Result<(), CancelRefused> {
        let runner = self.lock_active().get(&task_id).cloned();
        let Some(runner) = runner else {
            return Err(CancelRefused::NotRunning(subtask_id));
        };
        let (done, answer) = oneshot::channel();
        let control = Control::Cancel {
            subtask_id,
            by: by.to_string(),
            done,
        };
        if runner.send(control).is_err() {
            return Err(CancelRefused::NotRunning(subtask_id));
        }
        answer
            .await
            .unwrap_or(Err(CancelRefused::NotRunning(subtask_id)))
    }

    /// Waits for every runner to stop after the cancellation token fired. Runners stop at
    /// once, leaving running subtasks RUNNING in the store for the next start to rerun.
    pub async fn drained(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    fn lock_active(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<i64, mpsc::UnboundedSender<Control>>> {
        self.shared.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}
