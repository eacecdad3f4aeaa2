//! What each subtask does: the agent calls behind OCP's step names.
//!
//! Every step is safe to run again (the agent's calls are idempotent), which is what
//! lets the engine rerun a step that was running when the controller died.

use std::future::Future;
use std::time::Duration;

use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{
    AgentInfo, BulkRequest, BulkResponse, GetAgentInfoRequest, ListProcessesRequest,
};
use tokio::time::Instant;

use super::Shared;
use super::leases::{Hold, call_margin};
use crate::agents::{self, CallOrigin};
use crate::model::{Host, HostStatus, Step, Subtask, now_millis};
use crate::store::{Fence, LogEntry};

/// Why a step did not succeed, as it is written to the subtask log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl From<crate::store::StoreError> for StepError {
    fn from(e: crate::store::StoreError) -> Self {
        StepError(format!("store: {e}"))
    }
}

/// One run of one subtask.
pub(super) struct StepRun<'a> {
    pub shared: &'a Shared,
    pub fence: &'a Fence,
    /// Waited on before each agent call: see `leases::Hold`.
    pub hold: &'a Hold,
    pub trace_id: &'a str,
    pub subtask: &'a Subtask,
    pub deadline: Instant,
}

impl StepRun<'_> {
    pub async fn run(&self) -> Result<(), StepError> {
        match self.subtask.step {
            Step::Wait => {
                self.log("every upstream step finished");
                Ok(())
            }
            Step::PrepareRestart | Step::PrepareStop | Step::PrepareStart => self.prepare().await,
            Step::RestartProxy => {
                self.bulk("RestartProxy", |mut c, r| async move {
                    c.restart_proxy(r).await
                })
                .await
            }
            Step::StopAll => {
                self.bulk("StopAll", |mut c, r| async move { c.stop_all(r).await })
                    .await
            }
            Step::StartAll => {
                self.bulk("StartAll", |mut c, r| async move { c.start_all(r).await })
                    .await
            }
            Step::Finish => self.finish().await,
        }
    }

    /// Undoes what `run` did, for a rollback: a stop is undone by a start and the other
    /// way round; a prepare gives the host back; the rest has nothing to undo and says so.
    pub async fn undo(&self) -> Result<(), StepError> {
        match self.subtask.step {
            Step::Wait => {
                self.log("rollback: nothing to undo for a barrier");
                Ok(())
            }
            Step::PrepareRestart | Step::PrepareStop | Step::PrepareStart => {
                let host = self.host().await?;
                self.shared
                    .store
                    .release_host_lock(self.fence, host.id)
                    .await?;
                self.log(&format!("rollback: host {} released", host.id));
                Ok(())
            }
            Step::RestartProxy => {
                self.log("rollback: nothing to undo, a restarted proxy runs as before");
                Ok(())
            }
            Step::Finish => {
                self.log("rollback: nothing to undo, Finish only recorded the inventory");
                Ok(())
            }
            Step::StopAll => {
                if self.hold_host().await? {
                    self.log("rollback: starting what Stop all stopped");
                    self.bulk("StartAll", |mut c, r| async move { c.start_all(r).await })
                        .await?;
                }
                Ok(())
            }
            Step::StartAll => {
                if self.hold_host().await? {
                    self.log("rollback: stopping what Start all started");
                    self.bulk("StopAll", |mut c, r| async move { c.stop_all(r).await })
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// A rollback acts on a host only while this task holds it: Finish may have let it
    /// go, and another task may have taken it since.
    async fn hold_host(&self) -> Result<bool, StepError> {
        let host = self.host().await?;
        match self
            .shared
            .store
            .reacquire_host_lock(self.fence, host.id)
            .await?
        {
            None => Ok(true),
            Some(other) => {
                self.log(&format!(
                    "rollback: host {} is held by task {other} now; left as it is",
                    host.id
                ));
                Ok(false)
            }
        }
    }

    pub fn log(&self, line: &str) {
        tracing::info!(subtask_id = self.subtask.id, "{line}");
        self.shared.logbook.write(LogEntry {
            fence: self.fence.clone(),
            subtask_id: self.subtask.id,
            trace_id: self.trace_id.to_string(),
            at: now_millis(),
            line: line.to_string(),
        });
    }

    fn origin(&self) -> CallOrigin {
        CallOrigin {
            trace_id: self.trace_id.to_string(),
            task_id: Some(self.fence.task_id),
            subtask_id: Some(self.subtask.id),
        }
    }

    async fn host(&self) -> Result<Host, StepError> {
        let host_id = self
            .subtask
            .host_id
            .ok_or_else(|| StepError(format!("step {} has no host", self.subtask.name)))?;
        self.shared
            .store
            .get_host(host_id)
            .await?
            .ok_or_else(|| StepError(format!("host {host_id} no longer exists")))
    }

    /// The step's host, refused at once when heartbeats found it OFFLINE: waiting out
    /// the step's whole timeout would tell the operator nothing more.
    async fn online_host(&self) -> Result<Host, StepError> {
        let host = self.host().await?;
        offline_error(&host).map_or(Ok(host), Err)
    }

    /// Resolves once heartbeats mark the host OFFLINE while a call to it is out. A call
    /// to a partitioned host does not fail, it hangs (the packets are dropped), and
    /// would hold the step for its whole timeout (600 s for Start all) although the
    /// controller knows the host is gone. Polled: another controller sharing the store
    /// may be the one that saw it go. Errors reading the store are left to the call.
    async fn until_offline(&self) -> StepError {
        loop {
            tokio::time::sleep(OFFLINE_POLL).await;
            if let Some(error) = self.host().await.ok().as_ref().and_then(offline_error) {
                return error;
            }
        }
    }

    /// The step's host, a client of its agent, and what the agent says of itself: the
    /// first thing every step that talks to an agent needs.
    async fn reach_agent(
        &self,
    ) -> Result<
        (
            Host,
            AgentServiceClient<crate::agents::AgentChannel>,
            AgentInfo,
        ),
        StepError,
    > {
        let host = self.online_host().await?;
        let client = self
            .shared
            .agents
            .client(&host)
            .map_err(|e| StepError(e.to_string()))?;
        let info = self
            .call_with_retries("GetAgentInfo", &host, |timeout| {
                let mut client = client.clone();
                let request = agents::request(GetAgentInfoRequest {}, timeout, &self.origin());
                async move { client.get_agent_info(request).await }
            })
            .await?;
        Ok((host, client, info))
    }

    /// Checks the host is known and its agent answers.
    async fn prepare(&self) -> Result<(), StepError> {
        let (host, _, info) = self.reach_agent().await?;
        self.log(&format!(
            "host {} ({}:{}) is online: agent {} on {}, up {}s",
            host.id,
            host.inner_ip_address,
            host.agent_port,
            info.version,
            info.hostname,
            info.uptime_secs
        ));
        Ok(())
    }

    async fn bulk<F, Fut>(&self, call: &str, send: F) -> Result<(), StepError>
    where
        F: Fn(
            proto::agent::v1::agent_service_client::AgentServiceClient<crate::agents::AgentChannel>,
            tonic::Request<BulkRequest>,
        ) -> Fut,
        Fut: Future<Output = Result<tonic::Response<BulkResponse>, tonic::Status>>,
    {
        let host = self.online_host().await?;
        let client = self
            .shared
            .agents
            .client(&host)
            .map_err(|e| StepError(e.to_string()))?;
        let response = self
            .call_with_retries(call, &host, |timeout| {
                let request = agents::request(
                    BulkRequest {
                        timeout_ms: agents::timeout_ms(timeout),
                    },
                    timeout,
                    &self.origin(),
                );
                send(client.clone(), request)
            })
            .await?;
        for p in &response.processes {
            self.log(&format!(
                "{call}: {} is {} (pid {}, state {:?})",
                p.alias,
                agents::agent_status_word(p.status()),
                p.pid,
                p.state()
            ));
        }
        if response.processes.is_empty() {
            self.log(&format!("{call}: nothing to do on host {}", host.id));
        }
        if response.failures.is_empty() {
            return Ok(());
        }
        let reasons: Vec<String> = response
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.alias, f.reason))
            .collect();
        Err(StepError(format!(
            "{call} on host {} left {} process(es) short of the asked state: {}",
            host.id,
            reasons.len(),
            reasons.join("; ")
        )))
    }

    /// Refreshes the host's process inventory and lets go of the host.
    async fn finish(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let list = self
            .call_with_retries("ListProcesses", &host, |timeout| {
                let mut client = client.clone();
                let request = agents::request(ListProcessesRequest {}, timeout, &self.origin());
                async move { client.list_processes(request).await }
            })
            .await?;
        let snapshots: Vec<_> = list.processes.iter().map(agents::snapshot).collect();
        self.shared
            .store
            .record_inventory(
                host.id,
                &agents::summary(&info),
                &snapshots,
                Some(self.fence),
            )
            .await?;
        self.log(&format!(
            "host {}: {} process(es) recorded, agent {}; host released",
            host.id,
            snapshots.len(),
            agents::agent_status_word(info.status())
        ));
        Ok(())
    }

    /// Calls the agent until it answers, retrying transient failures with a doubling
    /// pause, until the step's deadline. Each failed attempt is logged.
    async fn call_with_retries<T, F, Fut>(
        &self,
        call: &str,
        host: &Host,
        send: F,
    ) -> Result<T, StepError>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let retries = self.subtask.step.transient_retries();
        let mut pause = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(StepError(format!(
                    "{call} to host {} ({}) got no answer before the step's deadline",
                    host.id,
                    self.shared.agents.uri(host)
                )));
            }
            // The only controller of its store (SQLite) loses no task to another.
            if !self.shared.options.sole {
                self.hold
                    .ready(
                        &self.shared.clock,
                        call_margin(self.shared.options.lease_ttl),
                    )
                    .await;
            }
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::select! {
                outcome = send(remaining) => outcome,
                offline = self.until_offline() => {
                    self.log(&format!("{call} to host {} abandoned: {offline}", host.id));
                    return Err(offline);
                }
            };
            match outcome {
                Ok(response) => {
                    self.shared.agents.answered(host.id);
                    return Ok(response.into_inner());
                }
                Err(status) if agents::is_transient(&status) => {
                    let failure = format!(
                        "{call} to host {} ({}) attempt {attempt} failed: {:?}: {}",
                        host.id,
                        self.shared.agents.uri(host),
                        status.code(),
                        status.message()
                    );
                    self.log(&failure);
                    // Heartbeats may have given up on the host meanwhile.
                    self.online_host().await?;
                    if attempt > retries {
                        return Err(StepError(format!(
                            "gave up after {attempt} attempts; last: {failure}"
                        )));
                    }
                    let remaining = self.deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(jittered(pause).min(remaining)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                Err(status) => {
                    let failure = match agents::tls_refusal(&status) {
                        Some(words) => format!(
                            "{call} to host {} ({}) failed: {words}",
                            host.id,
                            self.shared.agents.uri(host)
                        ),
                        None => format!(
                            "{call} to host {} refused: {:?}: {}",
                            host.id,
                            status.code(),
                            status.message()
                        ),
                    };
                    return Err(StepError(failure));
                }
            }
        }
    }
}

/// How often a step waiting on an agent looks whether its host went OFFLINE. Small
/// next to the heartbeat's grace (30 s by default), and one read by key per running
/// step and second.
const OFFLINE_POLL: Duration = Duration::from_secs(1);

/// The error for a host heartbeats found OFFLINE, None for one they did not.
fn offline_error(host: &Host) -> Option<StepError> {
    if host.status != HostStatus::Offline {
        return None;
    }
    let since = host
        .last_available_time
        .map(|t| format!("last answered at {}", crate::time::format_millis(t)))
        .unwrap_or_else(|| "never answered".to_string());
    Some(StepError(format!(
        "host {} ({}:{}) is OFFLINE: its agent does not answer heartbeats ({since})",
        host.id, host.inner_ip_address, host.agent_port
    )))
}

/// Between half and one and a half times `pause`, so that hosts retrying together
/// do not call in lockstep.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + rand::random::<f64>())
}
