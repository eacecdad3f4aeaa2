//! The controller's one way of calling an agent: the pool of connections, a client of
//! one host's agent whose every call is timed, tagged with this controller's cluster,
//! classified into an [`AgentError`] and counted as a sign of life when answered, the
//! retry policy of the steps, and the translation of what agents say into the model.

mod channel;
mod cluster;
mod mismatch;
mod retry;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub use channel::AgentChannel;
pub use cluster::{BadClusterId, CLUSTER_METADATA, ClusterId};
use parking_lot::Mutex;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{
    AgentInfo, BulkRequest, BulkResponse, CommitVersionRequest, GetAgentInfoRequest,
    ListProcessesRequest, PackageChunk, ProcessInfo, ProcessRequest, ProcessResponse,
    ProcessStatus, ReceivePackageResponse, ReleaseClusterRequest, SwitchVersionRequest,
    SwitchVersionResponse, TailLogRequest,
};
pub use retry::{Next, RetryPolicy};
use trust::ClientTls;

use crate::metrics::AgentCalls;
use crate::model::{AgentSummary, Host, Millis, ProcessSnapshot, now_millis};

/// Who a call to an agent is made for: carried as gRPC metadata so that the agent's
/// log lines of that call can be found from the task, and the other way round.
#[derive(Debug, Clone, Default)]
pub struct CallOrigin {
    pub trace_id: String,
    pub task_id: Option<i64>,
    pub subtask_id: Option<i64>,
}

/// Why a call to an agent got no answer, or what the agent answered instead.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The host's address makes no URI: nothing was sent.
    #[error("invalid agent address {address}: {reason}")]
    BadAddress { address: String, reason: String },
    /// No answer, for a reason that may pass: the agent restarting, the network
    /// hiccuping, an answer later than the deadline. Worth another try.
    #[error("the agent at {address} cannot be reached: {reason}")]
    Unreachable {
        address: String,
        reason: String,
        #[source]
        status: tonic::Status,
    },
    /// TLS between the controller and the agent failed ("the agent at 10.0.0.5
    /// presented a certificate for 10.0.0.6"): that does not mend between two attempts.
    #[error("the agent at {address} cannot be reached: {reason}")]
    Untrusted {
        address: String,
        reason: String,
        #[source]
        status: tonic::Status,
    },
    /// The agent answered, with an error of its own.
    #[error("the agent refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
}

impl AgentError {
    /// The outcome label of the call in the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::BadAddress { .. } => "bad_address",
            AgentError::Unreachable { .. } => "unreachable",
            AgentError::Untrusted { .. } => "untrusted",
            AgentError::Refused { .. } => "refused",
        }
    }

    /// Whether another attempt may fare better.
    pub fn is_transient(&self) -> bool {
        matches!(self, AgentError::Unreachable { .. })
    }

    /// Why the call failed, in the plain words a host's reason shows.
    pub fn reason(&self) -> String {
        match self {
            AgentError::Unreachable { reason, .. } | AgentError::Untrusted { reason, .. } => {
                reason.clone()
            }
            AgentError::Refused { message, .. } => message.clone(),
            AgentError::BadAddress { .. } => self.to_string(),
        }
    }
}

/// The one reading of a failed call. Transient are the codes a restarting agent or a
/// lost connection give, and a call refused by a draining agent's GOAWAY (INTERNAL to
/// tonic, though the agent did nothing with it); not a refused certificate, whose status
/// may carry the same codes but which no retry mends.
fn classify(status: tonic::Status, address: &str) -> AgentError {
    let address = address.to_string();
    let mismatch = std::error::Error::source(&status)
        .and_then(|e| e.downcast_ref::<mismatch::SpeaksTls>())
        .map(|e| e.0.clone());
    if let Some(reason) = mismatch.or_else(|| trust::refusal(&status)) {
        return AgentError::Untrusted {
            address,
            reason,
            status,
        };
    }
    if trust::untaken(&status) {
        return AgentError::Unreachable {
            address,
            reason: "the agent was closing the connection and did not take the call".into(),
            status,
        };
    }
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Unknown
        | tonic::Code::Cancelled => AgentError::Unreachable {
            address,
            reason: status.message().to_string(),
            status,
        },
        code => AgentError::Refused {
            code,
            message: status.message().to_string(),
        },
    }
}

/// The three calls that act on an agent's processes as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkCall {
    RestartProxy,
    StopAll,
    StartAll,
}

impl BulkCall {
    /// The RPC's name, as step logs name the call.
    pub fn name(self) -> &'static str {
        match self {
            BulkCall::RestartProxy => "RestartProxy",
            BulkCall::StopAll => "StopAll",
            BulkCall::StartAll => "StartAll",
        }
    }
}

/// The three per-process operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessAction {
    Restart,
    Stop,
    Start,
}

/// Connections are made at the first call to an agent and kept, so a thousand hosts cost
/// a thousand idle HTTP/2 connections at most; a restarted agent is dialled again at
/// the next call.
pub struct AgentPool {
    /// Every agent connection is mutual TLS when set; see docs/trust.md.
    tls: Option<ClientTls>,
    /// Carried by every call: the agent serves one cluster only.
    cluster: ClusterId,
    channel: Mutex<AgentChannel>,
    /// When each host's agent last answered any call. An agent busy with a fleet-wide
    /// restart may miss a heartbeat's short deadline while it plainly answers the steps:
    /// those answers count as signs of life too.
    answered: Mutex<HashMap<i64, Millis>>,
    calls: AgentCalls,
}

impl AgentPool {
    pub fn new(tls: Option<ClientTls>, cluster: ClusterId, calls: AgentCalls) -> AgentPool {
        AgentPool {
            channel: Mutex::new(AgentChannel::new(tls.clone())),
            tls,
            cluster,
            answered: Mutex::default(),
            calls,
        }
    }

    /// Re-reads the CA, certificate and key, and drops every connection so that the
    /// next call to each agent connects, and is verified, with what was just read.
    pub async fn reload_tls(&self) -> Result<bool, trust::TrustError> {
        let Some(tls) = &self.tls else {
            return Ok(false);
        };
        tls.reload().await?;
        *self.channel.lock() = AgentChannel::new(Some(tls.clone()));
        Ok(true)
    }

    fn answered(&self, host_id: i64) {
        self.answered.lock().insert(host_id, now_millis());
    }

    pub fn last_answer(&self, host_id: i64) -> Option<Millis> {
        self.answered.lock().get(&host_id).copied()
    }

    /// A client of the host's agent for calls made on behalf of `origin`.
    pub fn client(&self, host: &Host, origin: CallOrigin) -> Result<AgentClient<'_>, AgentError> {
        let address = self.uri(host);
        let uri = address
            .parse()
            .map_err(|e: http::uri::InvalidUri| AgentError::BadAddress {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let channel = self.channel.lock().clone();
        Ok(AgentClient {
            pool: self,
            host_id: host.id,
            address,
            origin,
            grpc: AgentServiceClient::with_origin(channel, uri),
        })
    }

    /// The cluster this controller is of, as agents know it.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// The agent's endpoint as this pool dials it.
    pub fn uri(&self, host: &Host) -> String {
        host.agent_uri(self.tls.is_some())
    }
}

/// One host's agent. Each call is bounded by its `timeout` on the wire (grpc-timeout),
/// in the request's body where the agent waits, and on this side; an answer is recorded
/// in the pool as a sign of life, a failure comes back classified.
pub struct AgentClient<'a> {
    pool: &'a AgentPool,
    host_id: i64,
    address: String,
    origin: CallOrigin,
    grpc: AgentServiceClient<AgentChannel>,
}

impl AgentClient<'_> {
    /// The agent's endpoint, as errors and logs name it.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn agent_info(&self, timeout: Duration) -> Result<AgentInfo, AgentError> {
        let request = self.request(GetAgentInfoRequest {}, timeout);
        let mut grpc = self.grpc.clone();
        self.answer("GetAgentInfo", grpc.get_agent_info(request))
            .await
    }

    pub async fn processes(&self, timeout: Duration) -> Result<Vec<ProcessInfo>, AgentError> {
        let request = self.request(ListProcessesRequest {}, timeout);
        let mut grpc = self.grpc.clone();
        let list = self
            .answer("ListProcesses", grpc.list_processes(request))
            .await?;
        Ok(list.processes)
    }

    pub async fn bulk(&self, op: BulkCall, timeout: Duration) -> Result<BulkResponse, AgentError> {
        let body = BulkRequest {
            timeout_ms: timeout_ms(timeout),
        };
        let request = self.request(body, timeout);
        let mut grpc = self.grpc.clone();
        match op {
            BulkCall::RestartProxy => self.answer(op.name(), grpc.restart_proxy(request)).await,
            BulkCall::StopAll => self.answer(op.name(), grpc.stop_all(request)).await,
            BulkCall::StartAll => self.answer(op.name(), grpc.start_all(request)).await,
        }
    }

    pub async fn process(
        &self,
        op: ProcessAction,
        alias: &str,
        timeout: Duration,
    ) -> Result<ProcessResponse, AgentError> {
        let body = ProcessRequest {
            alias: alias.to_string(),
            timeout_ms: timeout_ms(timeout),
        };
        let request = self.request(body, timeout);
        let mut grpc = self.grpc.clone();
        match op {
            ProcessAction::Restart => {
                self.answer("RestartProcess", grpc.restart_process(request))
                    .await
            }
            ProcessAction::Stop => self.answer("StopProcess", grpc.stop_process(request)).await,
            ProcessAction::Start => {
                self.answer("StartProcess", grpc.start_process(request))
                    .await
            }
        }
    }

    /// Asks the agent to forget this controller's cluster; whether it belonged to it.
    pub async fn release_cluster(&self, timeout: Duration) -> Result<bool, AgentError> {
        let request = self.request(ReleaseClusterRequest {}, timeout);
        let mut grpc = self.grpc.clone();
        let answer = self
            .answer("ReleaseCluster", grpc.release_cluster(request))
            .await?;
        Ok(answer.released)
    }

    /// Streams a new agent binary to the agent, which keeps it once its size and sha256
    /// check out: `chunks` is the header, then the bytes.
    pub async fn receive_package(
        &self,
        chunks: impl futures::Stream<Item = PackageChunk> + Send + 'static,
        timeout: Duration,
    ) -> Result<ReceivePackageResponse, AgentError> {
        let request = self.request(chunks, timeout);
        let mut grpc = self.grpc.clone();
        self.answer("ReceivePackage", grpc.receive_package(request))
            .await
    }

    /// Asks the agent to self-check `version` and become it, on trial for `trial`.
    pub async fn switch_version(
        &self,
        version: &str,
        trial: Duration,
        timeout: Duration,
    ) -> Result<SwitchVersionResponse, AgentError> {
        let body = SwitchVersionRequest {
            version: version.to_string(),
            trial_seconds: u32::try_from(trial.as_secs()).unwrap_or(u32::MAX).max(1),
        };
        let request = self.request(body, timeout);
        let mut grpc = self.grpc.clone();
        self.answer("SwitchVersion", grpc.switch_version(request))
            .await
    }

    /// Makes the running `version` the one the agent starts from.
    pub async fn commit_version(&self, version: &str, timeout: Duration) -> Result<(), AgentError> {
        let body = CommitVersionRequest {
            version: version.to_string(),
        };
        let request = self.request(body, timeout);
        let mut grpc = self.grpc.clone();
        self.answer("CommitVersion", grpc.commit_version(request))
            .await
            .map(drop)
    }

    /// The last `lines` lines of the process's log: the agent's TailLog stream, without
    /// following, read whole within `timeout`. Past [`MAX_LOG_TEXT`], the oldest
    /// messages are dropped: a tail keeps its newest lines.
    pub async fn tail_log(
        &self,
        alias: &str,
        lines: u32,
        timeout: Duration,
    ) -> Result<String, AgentError> {
        let body = TailLogRequest {
            alias: alias.to_string(),
            lines,
            follow: false,
        };
        let request = self.request(body, timeout);
        let mut grpc = self.grpc.clone();
        let read = async move {
            let mut stream = grpc.tail_log(request).await?.into_inner();
            let mut kept = std::collections::VecDeque::new();
            let mut size = 0;
            while let Some(chunk) = stream.message().await? {
                size += chunk.text.len();
                kept.push_back(chunk.text);
                while size > MAX_LOG_TEXT {
                    size -= kept.pop_front().map_or(0, |text| text.len());
                }
            }
            Ok(kept.into_iter().collect::<String>())
        };
        let whole = async move {
            let outcome = tokio::time::timeout(timeout, read)
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "the log did not come whole in {}",
                        humantime::format_duration(timeout)
                    )))
                });
            outcome.map(tonic::Response::new)
        };
        self.answer("TailLog", whole).await
    }

    /// Where every call ends: the one place a call is timed, an answer recorded and a
    /// failure read. `method` is the RPC's name, as the metrics label it.
    async fn answer<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, AgentError> {
        let started = tokio::time::Instant::now();
        let answered = call.await;
        let took = started.elapsed();
        match answered {
            Ok(response) => {
                self.pool.calls.record(method, "ok", took);
                self.pool.answered(self.host_id);
                Ok(response.into_inner())
            }
            Err(status) => {
                let error = classify(status, &self.address);
                self.pool.calls.record(method, error.kind(), took);
                Err(error)
            }
        }
    }

    /// A request bounded by `timeout` on the wire and on this side (the agent enforces
    /// the one, `channel` the other), tagged with where it comes from and this
    /// controller's cluster.
    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request.extensions_mut().insert(channel::Deadline(timeout));
        let origin = &self.origin;
        let metadata = request.metadata_mut();
        metadata.insert(CLUSTER_METADATA, self.pool.cluster.metadata());
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
}

/// The most log text one read keeps from an agent. The agent sends at most 4 MiB of its
/// file, which is all kept unless invalid UTF-8, each byte replaced by a 3-byte U+FFFD,
/// makes it longer; then, or with an agent misbehaving, the newest 8 MiB are kept, in
/// whole messages. The cap is on the text: its JSON may be longer still (a control byte
/// becomes `\u0000`), which is bounded too, and fine.
pub const MAX_LOG_TEXT: usize = 8 << 20;

/// How long the agent itself may take, in the body of requests that wait on processes.
fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_or_a_late_answer_is_transient_and_an_answered_error_is_not() {
        let address = "http://127.0.0.2:9000";
        for status in [
            tonic::Status::unavailable("connection refused"),
            tonic::Status::deadline_exceeded("no answer in 3s"),
            tonic::Status::unknown("transport error"),
            tonic::Status::cancelled("dropped"),
        ] {
            let error = classify(status, address);
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(
                error.to_string(),
                format!(
                    "the agent at {address} cannot be reached: {}",
                    error.reason()
                )
            );
        }
        for code in [
            tonic::Code::NotFound,
            tonic::Code::FailedPrecondition,
            tonic::Code::Internal,
        ] {
            let error = classify(tonic::Status::new(code, "no such alias"), address);
            assert!(
                matches!(&error, AgentError::Refused { code: c, message } if *c == code && message == "no such alias"),
                "{error:?}"
            );
            assert_eq!(error.reason(), "no such alias");
        }
    }

    #[tokio::test]
    async fn a_tls_record_where_http2_was_expected_names_an_agent_that_speaks_tls() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        // What a TLS server sends a client that opened without TLS: a fatal alert.
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut preface = [0u8; 24];
            let _ = tcp.read_exact(&mut preface).await;
            let _ = tcp
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
                .await;
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
        let uri: http::Uri = address.parse().expect("uri");
        let mut grpc = AgentServiceClient::with_origin(AgentChannel::new(None), uri);
        let call = grpc.get_agent_info(GetAgentInfoRequest {});
        let status = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("an answer")
            .expect_err("no agent answered");
        let error = classify(status, &address);
        assert!(matches!(&error, AgentError::Untrusted { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert_eq!(
            error.reason(),
            "the agent at 127.0.0.1 speaks TLS; start the controller with --pki-dir"
        );
    }

    #[test]
    fn an_unreachable_agent_keeps_the_status_it_failed_with() {
        let error = classify(
            tonic::Status::unavailable("connection refused"),
            "http://127.0.0.2:9000",
        );
        let source = std::error::Error::source(&error).expect("a source");
        let status = source.downcast_ref::<tonic::Status>().expect("the status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
