//! A host's agent and processes as the faces show them, refreshed from the agent when
//! stale, and the per-process operations, which act on the agent at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::MutexGuard;

use super::{ApiOperation, Caller, Core, CoreError};
use crate::agent_client::{self, AgentClient, CallOrigin, ProcessAction};
use crate::model::{AgentProcess, Host, Page, PageRequest};

/// A host's agent with its processes: what an operator looks at before acting on them.
#[derive(Debug, Clone)]
pub struct HostAgentView {
    pub host: Host,
    pub processes: Vec<AgentProcess>,
}

impl Core {
    /// The host's agent and processes, refreshed from the agent when it answers in time,
    /// else as last recorded.
    pub async fn host_agent(
        &self,
        caller: &Caller,
        host_id: i64,
    ) -> Result<HostAgentView, CoreError> {
        caller.admitted(ApiOperation::GetHostAgent)?;
        self.inventory(caller, host_id).await
    }

    async fn inventory(&self, caller: &Caller, host_id: i64) -> Result<HostAgentView, CoreError> {
        let mut host = self.find_host(host_id).await?;
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
            host = self.find_host(host_id).await?;
        }
        let processes = self.store.list_processes(host_id).await?;
        Ok(HostAgentView { host, processes })
    }

    pub async fn host_processes(
        &self,
        caller: &Caller,
        host_id: i64,
        page: PageRequest,
    ) -> Result<Page<AgentProcess>, CoreError> {
        caller.admitted(ApiOperation::ListHostAgentProcesses)?;
        let view = self.inventory(caller, host_id).await?;
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

    /// Whether the host's inventory was read from its agent less than `refresh_ttl` ago.
    fn fresh(&self, host_id: i64) -> bool {
        self.lock_refreshed()
            .get(&host_id)
            .is_some_and(|at| at.elapsed() < self.options.refresh_ttl)
    }

    /// A deleted host's refresh state goes with it.
    pub(super) fn forget_inventory(&self, host_id: i64) {
        self.lock_refreshed().remove(&host_id);
        self.lock_refreshing().remove(&host_id);
    }

    fn lock_refreshed(&self) -> MutexGuard<'_, HashMap<i64, Instant>> {
        self.refreshed.lock()
    }

    fn lock_refreshing(&self) -> MutexGuard<'_, HashMap<i64, Arc<tokio::sync::Mutex<()>>>> {
        self.refreshing.lock()
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

    /// Restarts, stops or starts one process and answers once the agent is done.
    pub async fn operate_process(
        &self,
        caller: &Caller,
        action: ProcessAction,
        host_id: i64,
        process_id: i64,
    ) -> Result<AgentProcess, CoreError> {
        caller.admitted(ApiOperation::process(action))?;
        let (host, process) = self.find_process(host_id, process_id).await?;
        if self.store.lock_holder(host_id).await?.is_some() {
            return Err(self.busy(host_id).await);
        }
        let response = self
            .client(&host, caller)?
            .process(
                action,
                &process.snapshot.alias,
                self.options.process_op_timeout,
            )
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

    /// A client of the host's agent for calls made on the caller's behalf.
    pub(super) fn client(
        &self,
        host: &Host,
        caller: &Caller,
    ) -> Result<AgentClient<'_>, CoreError> {
        let origin = CallOrigin {
            trace_id: caller.trace_id().to_string(),
            ..CallOrigin::default()
        };
        self.agents
            .client(host, origin)
            .map_err(|e| CoreError::agent(host.id, e))
    }
}
