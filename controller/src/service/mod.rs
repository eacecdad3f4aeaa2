//! The service core: every operation of the controller, whichever face it came through.
//!
//! The gRPC services and the REST gateway only translate requests and results; all
//! checks, all store access and every agent call live here, so both faces behave alike.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::agent_client::{self, AgentClient, AgentError, AgentPool, CallOrigin};
use crate::engine::Engine;
use crate::model::{
    AgentProcess, Host, NewHost, Page, PageRequest, Task, TaskFilter, TaskStatus, now_millis,
};
use crate::store::{Dialect, Store, StoreError, TaskOrigin, TransitionRefused};
use crate::templates::{self, AgentOperation};

/// Who asks, and under which trace id their request runs.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub trace_id: String,
}

mod finished;
mod tasks;

pub use tasks::{SubtaskOp, TaskOp, TaskQuery, log_text, task_filter};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{field}: {message}")]
    InvalidArgument {
        field: String,
        rejected: String,
        message: String,
    },
    #[error("host {0} does not exist")]
    HostNotFound(i64),
    /// Names the first few missing hosts and counts the rest, so that a batch of unknown
    /// ids is answered in a line, not with the batch read back.
    #[error("{} not exist", name_hosts(.named, *.more, "does", "do"))]
    HostsNotFound { named: Vec<i64>, more: usize },
    #[error("agent process {process_id} does not exist on host {host_id}")]
    ProcessNotFound { host_id: i64, process_id: i64 },
    #[error("task {0} does not exist")]
    TaskNotFound(i64),
    #[error("a host at {address} already exists, with id {existing_id}")]
    HostExists { address: String, existing_id: i64 },
    #[error("host {host_id} is held by task {task_id} ({task_name}, {task_status}); {advice}")]
    HostBusy {
        host_id: i64,
        task_id: i64,
        task_name: String,
        task_status: TaskStatus,
        advice: &'static str,
    },
    /// The holder let go between the refusal and the look-up of who it was.
    #[error("host {0} was held by a task that has just ended; try again")]
    HostJustReleased(i64),
    #[error("the agent of host {host_id} at {address} cannot be reached: {reason}")]
    AgentUnavailable {
        host_id: i64,
        address: String,
        reason: String,
    },
    #[error("the agent of host {host_id} refused: {message}")]
    AgentRefused {
        host_id: i64,
        code: tonic::Code,
        message: String,
    },
    #[error("subtask {subtask_id} does not exist in task {task_id}")]
    SubtaskNotFound { task_id: i64, subtask_id: i64 },
    /// The task or subtask is in a state the operation does not apply to.
    #[error("{0}")]
    IllegalState(String),
    #[error("{0}")]
    RollbackProhibited(String),
    #[error("internal store error: {0}")]
    Store(StoreError),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(refused) => match refused {
                TransitionRefused::NoTask(id) => CoreError::TaskNotFound(id),
                TransitionRefused::NoSubtask {
                    task_id,
                    subtask_id,
                } => CoreError::SubtaskNotFound {
                    task_id,
                    subtask_id,
                },
                TransitionRefused::RollbackProhibited(_) => {
                    CoreError::RollbackProhibited(refused.to_string())
                }
                TransitionRefused::TaskState { .. } | TransitionRefused::SubtaskState { .. } => {
                    CoreError::IllegalState(refused.to_string())
                }
            },
            e => CoreError::Store(e),
        }
    }
}

impl CoreError {
    /// An agent's failure as the faces tell it: one that could not be reached (a bad
    /// address, a lost connection, a refused certificate) or one that refused.
    fn agent(host_id: i64, error: AgentError) -> CoreError {
        match error {
            AgentError::Refused { code, message } => CoreError::AgentRefused {
                host_id,
                code,
                message,
            },
            AgentError::BadAddress { ref address, .. } => CoreError::AgentUnavailable {
                host_id,
                address: address.clone(),
                reason: error.reason(),
            },
            AgentError::Unreachable {
                address, reason, ..
            }
            | AgentError::Untrusted {
                address, reason, ..
            } => CoreError::AgentUnavailable {
                host_id,
                address,
                reason,
            },
        }
    }

    fn invalid(field: &str, rejected: impl ToString, message: impl Into<String>) -> CoreError {
        CoreError::InvalidArgument {
            field: field.to_string(),
            rejected: rejected.to_string(),
            message: message.into(),
        }
    }
}

pub use crate::agent_client::ProcessOp;

#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// How long a per-process operation may take at the agent.
    pub process_op_timeout: Duration,
    /// How long a live refresh of a host's inventory may take before stored data is shown.
    pub refresh_timeout: Duration,
    /// How long a refreshed inventory is served from the store before the agent is asked
    /// again: a dashboard polling many hosts must not turn every read into agent calls.
    pub refresh_ttl: Duration,
    pub executor: String,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            process_op_timeout: Duration::from_secs(120),
            refresh_timeout: Duration::from_secs(3),
            refresh_ttl: Duration::from_secs(1),
            executor: "127.0.0.1".to_string(),
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
    finished: Arc<finished::FinishedTasks>,
}

/// A host's agent with its processes, as `GET /compute/hosts/{id}/agent` shows it.
#[derive(Debug, Clone)]
pub struct HostAgentView {
    pub host: Host,
    pub processes: Vec<AgentProcess>,
}

impl Core {
    pub fn new(store: Store, engine: Engine, agents: Arc<AgentPool>, options: CoreOptions) -> Core {
        let finished = Arc::new(finished::FinishedTasks::new(
            store.dialect() == Dialect::Sqlite,
        ));
        Core {
            store,
            engine,
            agents,
            options,
            host_added: Arc::new(Notify::new()),
            refreshed: Arc::new(Mutex::new(HashMap::new())),
            refreshing: Arc::new(Mutex::new(HashMap::new())),
            finished,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn host_added(&self) -> Arc<Notify> {
        self.host_added.clone()
    }

    pub async fn add_host(
        &self,
        inner_ip_address: &str,
        agent_port: u32,
        name: Option<&str>,
    ) -> Result<Host, CoreError> {
        let address = inner_ip_address.trim();
        if address.parse::<IpAddr>().is_err() {
            return Err(CoreError::invalid(
                "innerIpAddress",
                inner_ip_address,
                "must be an IPv4 or IPv6 address",
            ));
        }
        let port = u16::try_from(agent_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                CoreError::invalid("agentPort", agent_port, "must be between 1 and 65535")
            })?;
        let name = match name.map(str::trim) {
            Some(n) if n.len() > 128 => {
                return Err(CoreError::invalid(
                    "name",
                    n,
                    "must be at most 128 characters",
                ));
            }
            Some(n) if !n.is_empty() => n.to_string(),
            _ => address.to_string(),
        };
        let new = NewHost {
            name,
            inner_ip_address: address.to_string(),
            agent_port: port,
        };
        match self.store.insert_host(&new).await {
            Ok(host) => {
                self.host_added.notify_one();
                Ok(host)
            }
            Err(StoreError::HostExists {
                inner_ip_address,
                agent_port,
                existing_id,
            }) => Err(CoreError::HostExists {
                address: format!("{inner_ip_address}:{agent_port}"),
                existing_id,
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_hosts(&self, page: PageRequest) -> Result<Page<Host>, CoreError> {
        Ok(self.store.list_hosts(page).await?)
    }

    pub async fn get_host(&self, id: i64) -> Result<Host, CoreError> {
        check_id("hostId", id)?;
        self.store
            .get_host(id)
            .await?
            .ok_or(CoreError::HostNotFound(id))
    }

    pub async fn delete_host(&self, id: i64) -> Result<Host, CoreError> {
        check_id("hostId", id)?;
        match self.store.delete_host(id).await {
            Ok(Some(host)) => {
                self.lock_refreshed().remove(&id);
                self.lock_refreshing().remove(&id);
                Ok(host)
            }
            Ok(None) => Err(CoreError::HostNotFound(id)),
            Err(StoreError::HostBusy { host_id, .. }) => Err(self.busy(host_id).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the DAG task of a whole-agent operation on one host and starts it.
    pub async fn submit_single(
        &self,
        op: AgentOperation,
        host_id: i64,
        caller: &Caller,
    ) -> Result<Task, CoreError> {
        self.get_host(host_id).await?;
        self.create_and_drive(templates::single_host(op, host_id), caller)
            .await
    }

    /// Validates the whole batch first: nothing is created unless every host can be taken.
    pub async fn submit_batch(
        &self,
        op: AgentOperation,
        host_ids: &[i64],
        caller: &Caller,
    ) -> Result<Task, CoreError> {
        if host_ids.is_empty() {
            return Err(CoreError::invalid(
                "hostIds",
                "[]",
                "must name at least one host",
            ));
        }
        if host_ids.len() > MAX_BATCH_HOSTS {
            return Err(CoreError::invalid(
                "hostIds",
                format!("{} ids", thousands(host_ids.len())),
                format!(
                    "names {} hosts; a batch may name at most {}",
                    thousands(host_ids.len()),
                    thousands(MAX_BATCH_HOSTS)
                ),
            ));
        }
        for &id in host_ids {
            check_id("hostIds", id)?;
        }
        let mut seen = HashSet::new();
        let mut repeated = HashSet::new();
        let duplicates: Vec<i64> = host_ids
            .iter()
            .copied()
            .filter(|id| !seen.insert(*id) && repeated.insert(*id))
            .collect();
        if !duplicates.is_empty() {
            let (named, more) = first_few(&duplicates);
            return Err(CoreError::invalid(
                "hostIds",
                format!("{} ids", thousands(host_ids.len())),
                name_hosts(
                    named,
                    more,
                    "is listed more than once",
                    "are listed more than once",
                ),
            ));
        }
        let existing = self.store.existing_host_ids(host_ids).await?;
        let missing: Vec<i64> = host_ids
            .iter()
            .copied()
            .filter(|id| !existing.contains(id))
            .collect();
        if !missing.is_empty() {
            let (named, more) = first_few(&missing);
            return Err(CoreError::HostsNotFound {
                named: named.to_vec(),
                more,
            });
        }
        self.create_and_drive(templates::batch(op, host_ids), caller)
            .await
    }

    async fn create_and_drive(
        &self,
        plan: templates::TaskPlan,
        caller: &Caller,
    ) -> Result<Task, CoreError> {
        let claim = self.engine.claim();
        let origin = TaskOrigin {
            creator: &caller.name,
            executor: &self.options.executor,
            trace_id: &caller.trace_id,
            at: now_millis(),
            claim: &claim,
        };
        let fence = match self.store.create_task(&plan, &origin).await {
            Ok(fence) => fence,
            Err(StoreError::HostBusy { host_id, .. }) => return Err(self.busy(host_id).await),
            Err(e) => return Err(e.into()),
        };
        // Read back before the engine moves it on, so the caller sees the task as submitted.
        let id = fence.task_id;
        let task = self
            .store
            .get_task(id)
            .await?
            .ok_or(CoreError::TaskNotFound(id))?;
        self.engine.drive_created(fence, task.clone());
        Ok(task)
    }

    /// The refusal for a host some task holds, naming the task and what to do.
    async fn busy(&self, host_id: i64) -> CoreError {
        match self.store.lock_holder(host_id).await {
            Ok(Some(holder)) => CoreError::HostBusy {
                host_id,
                task_id: holder.task_id,
                task_name: holder.name,
                task_status: holder.status,
                advice: if holder.status == TaskStatus::Failed {
                    "retry or roll back that task first"
                } else {
                    "wait for that task to finish"
                },
            },
            // Released in between: tell the caller the truth, that a retry will do.
            Ok(None) => CoreError::HostJustReleased(host_id),
            Err(e) => e.into(),
        }
    }

    pub async fn get_task(&self, id: i64) -> Result<Task, CoreError> {
        check_id("id", id)?;
        if let Some(task) = self.finished.get(id) {
            return Ok(task);
        }
        let epoch = self.finished.epoch();
        let task = self
            .store
            .get_task(id)
            .await?
            .ok_or(CoreError::TaskNotFound(id))?;
        self.finished.offer(&task, epoch);
        Ok(task)
    }

    pub async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, CoreError> {
        Ok(self.store.list_tasks(filter, page).await?)
    }

    /// Restarts, stops or starts one process and answers once the agent is done.
    pub async fn process_op(
        &self,
        host_id: i64,
        process_id: i64,
        op: ProcessOp,
        caller: &Caller,
    ) -> Result<AgentProcess, CoreError> {
        check_id("agentProcessId", process_id)?;
        let host = self.get_host(host_id).await?;
        let process = self.store.get_process(host_id, process_id).await?.ok_or(
            CoreError::ProcessNotFound {
                host_id,
                process_id,
            },
        )?;
        if self.store.lock_holder(host_id).await?.is_some() {
            return Err(self.busy(host_id).await);
        }
        let response = self
            .client(&host, caller)?
            .process(op, &process.snapshot.alias, self.options.process_op_timeout)
            .await
            .map_err(|e| CoreError::agent(host_id, e))?;
        let info = response.process.ok_or_else(|| CoreError::AgentRefused {
            host_id,
            code: tonic::Code::Internal,
            message: "the agent answered without the process".to_string(),
        })?;
        Ok(self
            .store
            .record_process(host_id, &agent_client::snapshot(&info))
            .await?)
    }

    /// The host's agent and processes, refreshed from the agent when it answers in time,
    /// else as last recorded.
    pub async fn host_agent(
        &self,
        host_id: i64,
        caller: &Caller,
    ) -> Result<HostAgentView, CoreError> {
        let mut host = self.get_host(host_id).await?;
        if !self.fresh(host_id) {
            let gate = Arc::clone(self.lock_refreshing().entry(host_id).or_default());
            let _refreshing = gate.lock().await;
            if !self.fresh(host_id) {
                match self.refresh(&host, caller).await {
                    Ok(()) => {
                        self.lock_refreshed().insert(host_id, Instant::now());
                    }
                    Err(e) => tracing::info!(host_id, "showing stored inventory: {e}"),
                }
            }
            // This refresh, or the one waited for, may have changed the agent's summary
            // and the host's status.
            host = self.get_host(host_id).await?;
        }
        let processes = self.store.list_processes(host_id).await?;
        Ok(HostAgentView { host, processes })
    }

    fn lock_refreshing(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<tokio::sync::Mutex<()>>>> {
        self.refreshing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, host_id: i64) -> bool {
        self.lock_refreshed()
            .get(&host_id)
            .is_some_and(|at| at.elapsed() < self.options.refresh_ttl)
    }

    pub async fn host_processes(
        &self,
        host_id: i64,
        page: PageRequest,
        caller: &Caller,
    ) -> Result<Page<AgentProcess>, CoreError> {
        let view = self.host_agent(host_id, caller).await?;
        let total = view.processes.len() as i64;
        let contents = view
            .processes
            .into_iter()
            .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
            .take(page.size as usize)
            .collect();
        Ok(Page {
            contents,
            total_elements: total,
            number: page.number,
            size: page.size,
        })
    }

    fn lock_refreshed(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.refreshed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the agent for its summary and processes and records them.
    async fn refresh(&self, host: &Host, caller: &Caller) -> Result<(), CoreError> {
        let timeout = self.options.refresh_timeout;
        let client = self.client(host, caller)?;
        let failed = |e| CoreError::agent(host.id, e);
        let info = client.agent_info(timeout).await.map_err(failed)?;
        let processes = client.processes(timeout).await.map_err(failed)?;
        let snapshots: Vec<_> = processes.iter().map(agent_client::snapshot).collect();
        self.store
            .record_inventory(host.id, &agent_client::summary(&info), &snapshots, None)
            .await?;
        Ok(())
    }

    /// A client of the host's agent for calls made on the caller's behalf.
    fn client(&self, host: &Host, caller: &Caller) -> Result<AgentClient<'_>, CoreError> {
        let origin = CallOrigin {
            trace_id: caller.trace_id.clone(),
            ..CallOrigin::default()
        };
        self.agents
            .client(host, origin)
            .map_err(|e| CoreError::agent(host.id, e))
    }
}

/// The most hosts one batch may name, on both faces. A batch is one task of 5N+4
/// subtasks written in one transaction and one host lock each; past this it is an
/// operation on a whole fleet that belongs in several tasks, and refusing it costs
/// nothing while accepting it holds the store and the controller's CPU for long.
pub const MAX_BATCH_HOSTS: usize = 10_000;

/// How many ids an error about a batch names before it counts the rest.
pub const NAMED_IDS: usize = 5;

/// The ids an error names, and how many more there are.
pub fn first_few(ids: &[i64]) -> (&[i64], usize) {
    let named = &ids[..ids.len().min(NAMED_IDS)];
    (named, ids.len() - named.len())
}

/// "host 7 does", "hosts 7, 8, 9, 10, 11 and 99,995 more do": `one` and `many` are
/// the verb for one host and for several.
pub fn name_hosts(named: &[i64], more: usize, one: &str, many: &str) -> String {
    let list = named
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (noun, verb) = if named.len() + more == 1 {
        ("host", one)
    } else {
        ("hosts", many)
    };
    let rest = if more > 0 {
        format!(" and {} more", thousands(more))
    } else {
        String::new()
    };
    format!("{noun} {list}{rest} {verb}").trim_end().to_string()
}

/// 99995 as "99,995".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",")
}

fn check_id(field: &str, id: i64) -> Result<(), CoreError> {
    if id <= 0 {
        return Err(CoreError::invalid(field, id, "must be a positive id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_hosts_are_named_a_few_and_counted() {
        let ids: Vec<i64> = (7..100_009).collect();
        let (named, more) = first_few(&ids);
        assert_eq!((named, more), (&[7, 8, 9, 10, 11][..], 99_997));
        assert_eq!(
            CoreError::HostsNotFound {
                named: named.to_vec(),
                more
            }
            .to_string(),
            "hosts 7, 8, 9, 10, 11 and 99,997 more do not exist"
        );
        assert_eq!(
            CoreError::HostsNotFound {
                named: vec![3],
                more: 0
            }
            .to_string(),
            "host 3 does not exist"
        );
        assert_eq!(
            CoreError::HostsNotFound {
                named: vec![3, 4],
                more: 0
            }
            .to_string(),
            "hosts 3, 4 do not exist"
        );
        assert_eq!(name_hosts(&[3], 0, "", ""), "host 3");
    }

    #[test]
    fn thousands_are_grouped() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (10_001, "10,001"),
            (999_995, "999,995"),
            (1_000_000, "1,000,000"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }
}
