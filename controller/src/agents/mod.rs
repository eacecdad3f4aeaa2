//! Clients of the agents (one HTTP/2 connection each, mutual TLS when the controller
//! has a PKI), and the translation of what agents say (and why they could not be
//! reached) into the model.

mod channel;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub use channel::AgentChannel;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{AgentInfo, ProcessInfo, ProcessStatus};
use trust::ClientTls;

use crate::model::{AgentSummary, Host, Millis, ProcessSnapshot, now_millis};

/// Who a call to an agent is made for: carried as gRPC metadata so that the agent's
/// log lines of that call can be found from the task, and the other way round.
#[derive(Debug, Clone, Default)]
pub struct CallOrigin {
    pub trace_id: String,
    pub task_id: Option<i64>,
    pub subtask_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent address {address}: {reason}")]
    BadAddress { address: String, reason: String },
}

/// Connections are made at the first call to an agent and kept, so a thousand hosts cost
/// a thousand idle HTTP/2 connections at most; a restarted agent is dialled again at
/// the next call.
pub struct AgentPool {
    /// Every agent connection is mutual TLS when set; see SPEC section 7.
    tls: Option<ClientTls>,
    channel: Mutex<AgentChannel>,
    /// When each host's agent last answered any call. An agent busy with a fleet-wide
    /// restart may miss a heartbeat's short deadline while it plainly answers the steps:
    /// those answers count as signs of life too.
    answered: Mutex<HashMap<i64, Millis>>,
}

impl AgentPool {
    pub fn new(tls: Option<ClientTls>) -> AgentPool {
        AgentPool {
            channel: Mutex::new(AgentChannel::new(tls.clone())),
            tls,
            answered: Mutex::default(),
        }
    }

    /// Re-reads the CA, certificate and key, and drops every connection so that the
    /// next call to each agent connects, and is verified, with what was just read.
    pub async fn reload_tls(&self) -> Result<bool, trust::TrustError> {
        let Some(tls) = &self.tls else {
            return Ok(false);
        };
        tls.reload().await?;
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) =
            AgentChannel::new(Some(tls.clone()));
        Ok(true)
    }

    pub fn answered(&self, host_id: i64) {
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host_id, now_millis());
    }

    pub fn last_answer(&self, host_id: i64) -> Option<Millis> {
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host_id)
            .copied()
    }

    pub fn client(&self, host: &Host) -> Result<AgentServiceClient<AgentChannel>, AgentError> {
        let uri = self.uri(host);
        let origin = uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| AgentError::BadAddress {
                address: uri.clone(),
                reason: e.to_string(),
            })?;
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(AgentServiceClient::with_origin(channel, origin))
    }

    /// The agent's endpoint as this pool dials it.
    pub fn uri(&self, host: &Host) -> String {
        host.agent_uri(self.tls.is_some())
    }
}

/// A request to an agent, bounded by `timeout` on the wire (grpc-timeout) as well as in
/// the body, and tagged with where it comes from.
pub fn request<T>(message: T, timeout: Duration, origin: &CallOrigin) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request.extensions_mut().insert(channel::Deadline(timeout));
    let metadata = request.metadata_mut();
    if let Ok(v) = origin.trace_id.parse() {
        metadata.insert("x-trace-id", v);
    }
    if let Some(Ok(v)) = origin.task_id.map(|id| id.to_string().parse()) {
        metadata.insert("x-task-id", v);
    }
    if let Some(Ok(v)) = origin.subtask_id.map(|id| id.to_string().parse()) {
        metadata.insert("x-subtask-id", v);
    }
    request
}

/// Why TLS between the controller and the agent failed, in plain words, when it did
/// ("the agent at 10.0.0.5 presented a certificate for 10.0.0.6").
pub fn tls_refusal(status: &tonic::Status) -> Option<String> {
    trust::refusal(status)
}

/// Why a call failed, as a step log or a host's reason says it.
pub fn reason(status: &tonic::Status) -> String {
    tls_refusal(status).unwrap_or_else(|| status.message().to_string())
}

pub fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

/// Errors worth another try: the agent may be restarting or the network hiccuped.
/// Not a refused certificate: that does not mend itself between two attempts.
pub fn is_transient(status: &tonic::Status) -> bool {
    tls_refusal(status).is_none()
        && matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        )
}

pub fn snapshot(info: &ProcessInfo) -> ProcessSnapshot {
    let status = if info.status() == ProcessStatus::Started {
        "STARTED"
    } else {
        "STOPPED"
    };
    ProcessSnapshot {
        alias: info.alias.clone(),
        pid: i64::from(info.pid),
        user: info.user.clone(),
        start_command: info.start_command.clone(),
        ports: info
            .ports
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        elapsed_time: i64::try_from(info.elapsed_time_secs).unwrap_or(i64::MAX),
        last_active_time: (info.last_active_time_ms > 0).then_some(info.last_active_time_ms),
        status: status.to_string(),
        operable: info.operable,
        log_file_pattern: info.log_file_pattern.clone(),
    }
}

/// The words of an agent's status, as OCP shows them.
pub fn agent_status_word(status: ProcessStatus) -> &'static str {
    match status {
        ProcessStatus::Started => "STARTED",
        ProcessStatus::Stopped => "STOPPED",
        ProcessStatus::Unspecified => "UNKNOWN",
    }
}

pub fn summary(info: &AgentInfo) -> AgentSummary {
    AgentSummary {
        version: info.version.clone(),
        install_home: info.install_home.clone(),
        log_home: info.log_home.clone(),
        status: agent_status_word(info.status()).to_string(),
    }
}
