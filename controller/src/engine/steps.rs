//! What each subtask does: the agent calls behind OCP's step names.
//!
//! Every step is safe to run again (the agent's calls are idempotent), which is what
//! lets the engine rerun a step that was running when the controller died.

use std::future::Future;
use std::time::Duration;

use proto::agent::v1::{AgentInfo, ProcessInfo, ProcessKind};
use tokio::time::Instant;

use super::Shared;
use super::leases::{Hold, call_margin};
use crate::agent_client::{self, AgentClient, AgentError, BulkCall, CallOrigin, Next, RetryPolicy};
use crate::model::{Host, HostStatus, Step, Subtask, TaskContext, now_millis};
use crate::rollout::Rollout;
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
    /// The task's rollout, for a rolling task: its pause and health time.
    pub rollout: Option<Rollout>,
    /// The task's context: an upgrade's version, and each host's version before it.
    pub context: &'a TaskContext,
}

impl StepRun<'_> {
    pub async fn run(&self) -> Result<(), StepError> {
        match self.subtask.step {
            Step::Wait => self.barrier().await,
            Step::PrepareRestart | Step::PrepareStop | Step::PrepareStart => self.prepare().await,
            Step::RestartProxy => self.bulk(BulkCall::RestartProxy).await.map(drop),
            Step::StopAll => self.bulk(BulkCall::StopAll).await.map(drop),
            Step::StartAll => {
                let started = self.bulk(BulkCall::StartAll).await?;
                self.stays_healthy(started).await
            }
            Step::Finish => self.finish().await,
            Step::PrepareUpgrade => self.prepare_upgrade().await,
            Step::PushPackage => self.push_package().await,
            Step::SwitchAgent => self.switch_agent().await,
            Step::VerifyAgent => self.verify_agent().await,
            Step::CommitAgent => self.commit_agent().await,
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
            Step::PrepareRestart
            | Step::PrepareStop
            | Step::PrepareStart
            | Step::PrepareUpgrade => {
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
            Step::PushPackage => {
                self.log(
                    "rollback: nothing to undo, the agent keeps the binary and runs what it ran",
                );
                Ok(())
            }
            Step::VerifyAgent => {
                self.log("rollback: nothing to undo, Verify only looked");
                Ok(())
            }
            Step::SwitchAgent | Step::CommitAgent => self.undo_upgrade().await,
            Step::StopAll => {
                if self.hold_host().await? {
                    self.log("rollback: starting what Stop all stopped");
                    self.bulk(BulkCall::StartAll).await?;
                }
                Ok(())
            }
            Step::StartAll => {
                if self.hold_host().await? {
                    self.log("rollback: stopping what Start all started");
                    self.bulk(BulkCall::StopAll).await?;
                }
                Ok(())
            }
        }
    }

    /// A rollback acts on a host only while this task holds it: Finish may have let it
    /// go, and another task may have taken it since.
    pub(super) async fn hold_host(&self) -> Result<bool, StepError> {
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

    /// A client of the host's agent, its calls tagged with this step.
    fn client(&self, host: &Host) -> Result<AgentClient<'_>, StepError> {
        self.shared
            .agents
            .client(host, self.origin())
            .map_err(|e| StepError(e.to_string()))
    }

    /// The step's host, a client of its agent, and what the agent says of itself: the
    /// first thing every step that talks to an agent needs.
    pub(super) async fn reach_agent(
        &self,
    ) -> Result<(Host, AgentClient<'_>, AgentInfo), StepError> {
        let host = self.online_host().await?;
        let client = self.client(&host)?;
        let info = self
            .call_with_retries("GetAgentInfo", &host, |timeout| client.agent_info(timeout))
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

    /// A barrier: every step before it ended. A rolling task's barrier also waits the
    /// rollout's pause before the next batch.
    async fn barrier(&self) -> Result<(), StepError> {
        let pause = self.rollout.map_or(0, |r| r.pause_seconds);
        if pause == 0 {
            self.log("every upstream step finished");
            return Ok(());
        }
        self.log(&format!("pausing {pause}s before the next batch"));
        tokio::time::sleep(Duration::from_secs(u64::from(pause))).await;
        self.log("pause over");
        Ok(())
    }

    /// The health gate of a rolling task: the host's basic processes, as Start all
    /// left them, must still run, with the same pids, `minHealthySeconds` later. A
    /// process that crashed meanwhile was restarted by its supervisor under a new pid,
    /// or is waiting out a backoff; either way the host fails.
    async fn stays_healthy(&self, started: Vec<ProcessInfo>) -> Result<(), StepError> {
        let seconds = self.rollout.map_or(0, |r| r.min_healthy_seconds);
        if seconds == 0 {
            return Ok(());
        }
        let watched: Vec<(String, u32)> = started
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
            .map(|p| (p.alias.clone(), p.pid))
            .collect();
        self.log(&format!(
            "watching {} basic process(es) for {seconds}s (minHealthySeconds)",
            watched.len()
        ));
        tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
        let host = self.online_host().await?;
        let client = self.client(&host)?;
        let now = self
            .call_with_retries("ListProcesses", &host, |timeout| client.processes(timeout))
            .await?;
        let unhealthy = super::health::unhealthy(&watched, &now);
        if unhealthy.is_empty() {
            self.log(&format!(
                "healthy: every basic process stayed up {seconds}s"
            ));
            return Ok(());
        }
        Err(StepError(format!(
            "host {} unhealthy within minHealthySeconds {seconds}: {}",
            host.id,
            unhealthy.join("; ")
        )))
    }

    async fn bulk(&self, op: BulkCall) -> Result<Vec<ProcessInfo>, StepError> {
        let call = op.name();
        let host = self.online_host().await?;
        let client = self.client(&host)?;
        let response = self
            .call_with_retries(call, &host, |timeout| client.bulk(op, timeout))
            .await?;
        for p in &response.processes {
            self.log(&format!(
                "{call}: {} is {} (pid {}, state {:?})",
                p.alias,
                agent_client::agent_status_word(p.status()),
                p.pid,
                p.state()
            ));
        }
        if response.processes.is_empty() {
            self.log(&format!("{call}: nothing to do on host {}", host.id));
        }
        if response.failures.is_empty() {
            return Ok(response.processes);
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
    pub(super) async fn finish(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let processes = self
            .call_with_retries("ListProcesses", &host, |timeout| client.processes(timeout))
            .await?;
        let snapshots: Vec<_> = processes.iter().map(agent_client::snapshot).collect();
        self.shared
            .store
            .record_inventory(
                host.id,
                &agent_client::summary(&info),
                &snapshots,
                Some(self.fence),
            )
            .await?;
        self.log(&format!(
            "host {}: {} process(es) recorded, agent {}; host released",
            host.id,
            snapshots.len(),
            agent_client::agent_status_word(info.status())
        ));
        Ok(())
    }

    /// Calls the agent until it answers, as the agent client's `RetryPolicy` has it.
    /// What is the engine's own: each attempt waits on the task's lease, is abandoned
    /// when heartbeats find the host OFFLINE, and is logged when it fails.
    pub(super) async fn call_with_retries<T, F, Fut>(
        &self,
        call: &str,
        host: &Host,
        send: F,
    ) -> Result<T, StepError>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = Result<T, AgentError>>,
    {
        let policy = RetryPolicy {
            retries: self.subtask.step.transient_retries(),
            deadline: self.deadline,
        };
        let mut attempt = 1;
        loop {
            if policy.time_left(Instant::now()).is_none() {
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
            let error = match outcome {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let failure = attempt_failed(call, host.id, attempt, &error);
            if error.is_transient() {
                self.log(&failure);
                // Heartbeats may have given up on the host meanwhile.
                self.online_host().await?;
            }
            match policy.after_failure(attempt, &error, Instant::now(), rand::random()) {
                Next::RetryAfter(pause) => {
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Next::GiveUp => {
                    return Err(StepError(format!(
                        "gave up after {attempt} attempts; last: {failure}"
                    )));
                }
                Next::Fail => return Err(StepError(failure)),
            }
        }
    }
}

/// A failed call as the subtask log says it: a transient failure with its attempt, for
/// the operator to see the retries, a refusal once.
fn attempt_failed(call: &str, host_id: i64, attempt: u32, error: &AgentError) -> String {
    match error {
        AgentError::Unreachable {
            address, status, ..
        } => format!(
            "{call} to host {host_id} ({address}) attempt {attempt} failed: {:?}: {}",
            status.code(),
            status.message()
        ),
        AgentError::Untrusted {
            address, reason, ..
        } => format!("{call} to host {host_id} ({address}) failed: {reason}"),
        AgentError::Refused { code, message } => {
            format!("{call} to host {host_id} refused: {code:?}: {message}")
        }
        AgentError::BadAddress { .. } => error.to_string(),
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
    // The heartbeat's reason says why, when it is more than silence: an agent that
    // refuses this controller (another cluster's, a wrong certificate).
    let why = host
        .status_reason
        .as_deref()
        .map(|reason| format!("; the last one failed: {reason}"))
        .unwrap_or_default();
    Some(StepError(format!(
        "host {} ({}:{}) is OFFLINE: its agent does not answer heartbeats ({since}){why}",
        host.id, host.inner_ip_address, host.agent_port
    )))
}
