//! The service core: every operation of the controller, whichever face it came through.
//!
//! The gRPC services and the REST gateway only translate requests and results; all
//! checks, all store access and every agent call live here, so both faces behave alike.
//! `Core` and what it is built from are here; its operations are in `hosts`,
//! `inventory`, `tasks`, `profiles` and `packages`, what they refuse in `errors`.

mod errors;
mod finished_cache;
mod hosts;
mod inventory;
mod operations;
mod packages;
mod process_log;
mod profiles;
mod tasks;
mod upgrades;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::agent_client::AgentPool;
pub use crate::agent_client::ProcessAction;
use crate::engine::Engine;
use crate::model::StoreCounts;
use crate::store::{Dialect, Store};
pub use errors::{CoreError, Field, MAX_BATCH_HOSTS, NAMED_IDS, first_few, name_hosts, thousands};
pub use hosts::{HostQuery, MAX_KEYWORD_CHARS, host_filter};
pub use inventory::HostAgentView;
pub use operations::{Access, ApiOperation, Caller, admit};
pub use packages::DEFAULT_MAX_PACKAGE_BYTES;
pub use process_log::{DEFAULT_LOG_LINES, MAX_LOG_LINES};
pub use profiles::CurrentUser;
pub use tasks::{
    TaskQuery, allowed_subtask_operations, allowed_task_operations, log_text, task_filter,
};
pub use watch::DEFAULT_MAX_WATCHES_PER_USER;

#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// How long a per-process operation may take at the agent.
    pub process_op_timeout: Duration,
    /// How long a live refresh of a host's inventory may take before stored data is shown.
    pub refresh_timeout: Duration,
    /// How long a refreshed inventory is served from the store before the agent is asked
    /// again: a dashboard polling many hosts must not turn every read into agent calls.
    pub refresh_ttl: Duration,
    /// How long reading a process's log from its agent may take, up to 4 MiB of it.
    pub log_timeout: Duration,
    /// How long a host's delete waits for its agent to forget this cluster.
    pub release_timeout: Duration,
    /// Watches of tasks (SSE and WatchTask) one user may hold open at once.
    pub max_watches_per_user: usize,
    /// The largest agent package an upload may bring; reading stops there.
    pub max_package_bytes: u64,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            process_op_timeout: Duration::from_secs(120),
            refresh_timeout: Duration::from_secs(3),
            refresh_ttl: Duration::from_secs(1),
            log_timeout: Duration::from_secs(30),
            release_timeout: Duration::from_secs(3),
            max_watches_per_user: DEFAULT_MAX_WATCHES_PER_USER,
            max_package_bytes: DEFAULT_MAX_PACKAGE_BYTES,
        }
    }
}

#[derive(Clone)]
pub struct Core {
    store: Store,
    engine: Engine,
    agents: Arc<AgentPool>,
    options: CoreOptions,
    /// Woken when a host is added, so the heartbeat checks it at once.
    host_added: Arc<Notify>,
    /// When each host's inventory was last read from its agent.
    refreshed: Arc<Mutex<HashMap<i64, Instant>>>,
    /// One refresh per host at a time: readers that find the inventory stale while a
    /// refresh is out wait for it instead of all calling the agent at once.
    refreshing: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>>,
    finished: Arc<finished_cache::FinishedTasks>,
    watches: Arc<watch::Watches>,
}

impl Core {
    pub fn new(store: Store, engine: Engine, agents: Arc<AgentPool>, options: CoreOptions) -> Core {
        let finished = Arc::new(finished_cache::FinishedTasks::new(
            store.dialect() == Dialect::Sqlite,
        ));
        let watches = watch::Watches::new(store.clone(), options.max_watches_per_user);
        Core {
            store,
            engine,
            agents,
            options,
            host_added: Arc::new(Notify::new()),
            refreshed: Arc::new(Mutex::new(HashMap::new())),
            refreshing: Arc::new(Mutex::new(HashMap::new())),
            finished,
            watches,
        }
    }

    /// The store's counts of tasks, subtasks and hosts, for the metrics.
    pub async fn counts(&self) -> Result<StoreCounts, CoreError> {
        Ok(self.store.counts().await?)
    }

    pub fn host_added(&self) -> Arc<Notify> {
        self.host_added.clone()
    }
}
