//! The DAG engine: drives each RUNNING task from its stored state to an end.
//!
//! Event-driven: a subtask that succeeds makes its downstreams READY and starts them at
//! once, in the same turn, instead of waiting for a poller. Per-host steps of a stage run
//! in parallel, up to `task_concurrency` per task. The first failure stops new starts
//! (fail-fast) while running siblings finish, and the task ends FAILED, keeping its host
//! locks. A rollback runs the DAG backwards, undoing what ran. Every transition is
//! written to the store before it is acted on; a controller that dies mid-task resumes
//! from there, running again whatever was RUNNING.
//!
//! Several controllers may share one PostgreSQL store: each task is driven by the one
//! holding its lease, and every write is fenced by the lease's generation (see
//! `leases`), so a controller that lost a task can no longer change it.
//!
//! The rules live in `decide`, a pure machine from events to effects; `runner` carries
//! the effects out, so the rules are tested without a store or an agent.

mod decide;
mod graph;
mod health;
mod leases;
mod logbook;
mod rolling;
mod runner;
mod steps;
mod upgrade;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::agent_client::AgentPool;
use crate::membership::Membership;
use crate::metrics::EngineMetrics;
use crate::model::Task;
use crate::store::{Claim, Fence, Store, StoreError};

pub use leases::new_owner;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Written as the `executor` of tasks and subtasks: this controller's address.
    pub executor: String,
    /// How many subtasks of one task may run at once.
    pub task_concurrency: usize,
    /// Caps every subtask's timeout (OCP's go up to 600 s), for impatient operators and tests.
    pub max_subtask_timeout: Option<Duration>,
    /// Who this controller is in task leases: unique to this run of this controller.
    pub owner: Arc<str>,
    /// How long a silent owner keeps its tasks (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// The only controller of its store (SQLite): at start it takes over every unfinished
    /// task at once, without waiting for leases of its previous run to expire.
    pub sole: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            executor: "127.0.0.1".to_string(),
            task_concurrency: 256,
            max_subtask_timeout: None,
            owner: leases::new_owner("127.0.0.1"),
            lease_ttl: Duration::from_secs(10),
            sole: true,
        }
    }
}

/// What the engine tells a task's runner while it works on it.
pub(crate) enum Control {
    /// The operator marked the subtask CANCELING: stop its step.
    Cancel { subtask_id: i64, by: String },
    /// Another controller took the task over: stop at once, write nothing.
    Lost,
    /// The task may have been paused or resumed: read the store's flag again.
    PauseChanged,
}

/// A task with a runner in this process.
struct Active {
    generation: i64,
    /// How long its lease is known to last; its steps wait on it before agent calls.
    hold: Arc<leases::Hold>,
    control: mpsc::UnboundedSender<Control>,
    /// A newer claim that came while the runner was ending (a retry right after the
    /// task failed): driven as soon as the runner is gone.
    next: Option<(Fence, Start)>,
}

pub(crate) struct Shared {
    store: Store,
    agents: Arc<AgentPool>,
    options: EngineOptions,
    cancel: CancellationToken,
    tracker: TaskTracker,
    logbook: logbook::LogBook,
    clock: leases::Clock,
    /// Tasks with a runner in this process, so a task is never driven twice, and the
    /// way to reach each runner.
    active: Mutex<HashMap<i64, Active>>,
    membership: watch::Sender<Membership>,
    metrics: EngineMetrics,
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
    /// Picked up after a restart or a takeover: a task that had already failed only drains.
    Resumed,
}

impl Engine {
    pub fn new(
        store: Store,
        agents: Arc<AgentPool>,
        options: EngineOptions,
        cancel: CancellationToken,
        metrics: EngineMetrics,
    ) -> Engine {
        let tracker = TaskTracker::new();
        let logbook = logbook::LogBook::start(store.clone(), &tracker, cancel.clone());
        let (membership, _) = watch::channel(Membership::default());
        Engine {
            shared: Arc::new(Shared {
                store,
                agents,
                options,
                cancel,
                tracker,
                logbook,
                clock: leases::Clock::start(),
                active: Mutex::new(HashMap::new()),
                membership,
                metrics,
            }),
        }
    }

    /// The lease a request hands to this controller: the task it creates, retries,
    /// skips or rolls back is driven here.
    pub fn claim(&self) -> Claim {
        leases::claim(&self.shared)
    }

    /// Starts driving a task this controller holds, unless it already does.
    pub fn drive(&self, fence: Fence, start: Start) {
        drive(&self.shared, fence, start, None);
    }

    /// `drive` for a task just created, read back by its submitter a moment ago: the
    /// runner starts from that read instead of making its own (5,004 subtasks at 1,000
    /// hosts, 150 ms of a batch restart's start).
    pub fn drive_created(&self, fence: Fence, task: Task) {
        drive(&self.shared, fence, Start::Fresh, Some(Arc::new(task)));
    }

    /// Takes over what this controller may drive at start: every unfinished task when
    /// it is the store's only controller, else those whose lease ran out. Runs before
    /// the controller serves, so no request sees a task half resumed.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let sole = self.shared.options.sole;
        leases::take_over(&self.shared, sole).await
    }

    /// Keeps this controller's leases, takes over those of controllers that went
    /// silent, and passes on cancels sent to other controllers, until shutdown.
    pub fn run_leases(&self) {
        let shared = self.shared.clone();
        self.shared.tracker.spawn(leases::run(shared));
    }

    /// Which live controller this is, among how many: hosts are heartbeated by one each.
    pub fn membership(&self) -> watch::Receiver<Membership> {
        self.shared.membership.subscribe()
    }

    /// Waits for every runner to stop after the cancellation token fired. Runners stop at
    /// once, leaving running subtasks RUNNING in the store for the next owner to rerun,
    /// and the leases are given up so that another controller takes over at once.
    pub async fn drained(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        let owner = &self.shared.options.owner;
        if let Err(e) = self.shared.store.release_leases(owner).await {
            tracing::warn!("could not give up this controller's leases: {e}");
        }
        if let Err(e) = self.shared.store.controller_gone(owner).await {
            tracing::warn!("could not leave the controllers table: {e}");
        }
    }
}

fn lock_active(shared: &Shared) -> MutexGuard<'_, HashMap<i64, Active>> {
    shared.active.lock()
}

fn drive(shared: &Arc<Shared>, fence: Fence, start: Start, read: Option<Arc<Task>>) {
    if shared.cancel.is_cancelled() {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    // The claim was made a moment ago, by the caller: the margin steps keep covers the
    // time since.
    let ttl = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let hold = leases::Hold::new(shared.clock.now().saturating_add(ttl));
    {
        let mut active = lock_active(shared);
        if let Some(running) = active.get_mut(&fence.task_id) {
            if fence.generation > running.generation {
                running.next = Some((fence, start));
            }
            return;
        }
        active.insert(
            fence.task_id,
            Active {
                generation: fence.generation,
                hold: hold.clone(),
                control: tx,
                next: None,
            },
        );
        shared.metrics.set_leases_held(active.len());
    }
    let task_id = fence.task_id;
    let runner_shared = shared.clone();
    shared.tracker.spawn(
        async move {
            runner::drive_until_done(&runner_shared, fence, start, read, rx, &hold).await;
            let next = {
                let mut active = lock_active(&runner_shared);
                let ended = active.remove(&task_id);
                runner_shared.metrics.set_leases_held(active.len());
                ended.and_then(|a| a.next)
            };
            if let Some((fence, start)) = next {
                drive(&runner_shared, fence, start, None);
            }
        }
        .instrument(tracing::info_span!("task", task_id)),
    );
}
