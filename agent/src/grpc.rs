//! `ocp.agent.v1.AgentService`: every call waits for its outcome, up to a deadline.
//!
//! Operability: OCP's `operable = false` means "the user may not operate this
//! process", so the per-process calls (Start/Stop/RestartProcess) refuse it with
//! FAILED_PRECONDITION, while the bulk calls (StartAll, StopAll, RestartProxy),
//! which are the agent's own lifecycle, still act on it.
//!
//! Errors: [`CallError`] is the one error of this module, mapped to a gRPC status
//! in exactly one place (its `From` impl). A single-process operation that did
//! not get there is ABORTED (with the reason) or DEADLINE_EXCEEDED; a bulk call is
//! OK and lists, in `failures`, the processes that did not get there and why.
//!
//! Every call first goes through the cluster check ([`crate::cluster`]): a call of
//! another controller cluster's is refused before it reads or changes anything, and
//! the first call that acts pins the agent to its caller's cluster.
//!
//! TailLog reads a log, which changes nothing: it serves any configured process,
//! operable or not; the file work is `log_tail`'s. At most [`MAX_TAILS`] calls run at
//! once, each holding its place until its stream ends: each may hold a few MiB, and a
//! blocking thread now and then.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{Stream, StreamExt};
use proto::agent::v1::agent_service_server::AgentService;
use proto::agent::v1::{
    AgentInfo, BulkRequest, BulkResponse, CommitVersionRequest, CommitVersionResponse,
    GetAgentInfoRequest, ListProcessesRequest, ListProcessesResponse, LogChunk, PackageChunk,
    ProcessFailure, ProcessRequest, ProcessResponse, ProcessStatus, ReceivePackageResponse,
    ReleaseClusterRequest, ReleaseClusterResponse, SwitchVersionRequest, SwitchVersionResponse,
    TailLogRequest,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response};
use tracing::Instrument;

use crate::cluster::{ClusterError, ClusterPin};
use crate::config::{AgentSection, Kind};
use crate::log_tail::{self, MAX_LINES, TailError};
use crate::process_info;
use crate::supervisor::{Command, Handle, SupervisorError};
use crate::upgrade::{UpgradeError, Upgrades};

/// Used when a request leaves `timeout_ms` at 0 and sends no shorter grpc-timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The most TailLog calls the agent serves at once; more are RESOURCE_EXHAUSTED.
pub const MAX_TAILS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no process with alias {0:?}")]
    NotFound(String),
    #[error("process {0:?} is not operable")]
    NotOperable(String),
    #[error("{command} {alias}: {reason}")]
    Failed {
        command: Command,
        alias: String,
        reason: String,
    },
    #[error("{command} {alias}: not done within {}; it is {state}", humantime::format_duration(*.waited))]
    Deadline {
        command: Command,
        alias: String,
        waited: Duration,
        state: String,
    },
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("lines must be from 1 to {MAX_LINES}, not {0}")]
    InvalidLines(u32),
    #[error("process {0:?} has no log file: its config sets no log_file")]
    NoLogFile(String),
    #[error("too many log tails at once ({MAX_TAILS}); try again later")]
    TooManyTails,
    #[error(transparent)]
    Log(#[from] TailError),
    #[error("reading the processes' state from the OS: {0}")]
    Unread(tokio::task::JoinError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

impl From<tokio::task::JoinError> for CallError {
    fn from(error: tokio::task::JoinError) -> CallError {
        CallError::Unread(error)
    }
}

impl From<CallError> for tonic::Status {
    fn from(e: CallError) -> tonic::Status {
        let message = e.to_string();
        match e {
            CallError::NotFound(_) => tonic::Status::not_found(message),
            CallError::NotOperable(_) => tonic::Status::failed_precondition(message),
            CallError::Failed { .. } => tonic::Status::aborted(message),
            CallError::Deadline { .. } => tonic::Status::deadline_exceeded(message),
            CallError::ShuttingDown | CallError::Log(TailError::ShuttingDown) => {
                tonic::Status::unavailable(message)
            }
            CallError::InvalidLines(_) => tonic::Status::invalid_argument(message),
            CallError::NoLogFile(_) | CallError::Log(TailError::NotYet(_)) => {
                tonic::Status::not_found(message)
            }
            CallError::Log(TailError::Unreadable { .. } | TailError::Refused { .. }) => {
                tonic::Status::failed_precondition(message)
            }
            CallError::TooManyTails => tonic::Status::resource_exhausted(message),
            CallError::Unread(_) | CallError::Cluster(ClusterError::File(_)) => {
                tonic::Status::internal(message)
            }
            CallError::Cluster(ClusterError::BadId(_) | ClusterError::NoCaller) => {
                tonic::Status::invalid_argument(message)
            }
            CallError::Cluster(ClusterError::OtherCluster { .. } | ClusterError::BadPin { .. }) => {
                tonic::Status::failed_precondition(message)
            }
            CallError::Upgrade(e) => e.into(),
        }
    }
}

impl CallError {
    /// The reason as a bulk response's failure lists it, without the alias.
    fn reason(&self) -> String {
        match self {
            CallError::Failed { reason, .. } => reason.clone(),
            CallError::Deadline { waited, state, .. } => format!(
                "not done within {}; it is {state}",
                humantime::format_duration(*waited)
            ),
            other => other.to_string(),
        }
    }
}

pub struct Agent {
    section: AgentSection,
    handles: Vec<Handle>,
    by_alias: HashMap<String, usize>,
    started: Instant,
    shutdown: CancellationToken,
    /// One permit per TailLog call under way.
    tails: Arc<Semaphore>,
    cluster: ClusterPin,
    upgrades: Arc<Upgrades>,
}

/// The gRPC face; cheap to clone.
#[derive(Clone)]
pub struct AgentServiceImpl(Arc<Agent>);

impl AgentServiceImpl {
    pub fn new(
        section: AgentSection,
        handles: Vec<Handle>,
        cluster: ClusterPin,
        upgrades: Arc<Upgrades>,
        shutdown: CancellationToken,
    ) -> AgentServiceImpl {
        let by_alias = handles
            .iter()
            .enumerate()
            .map(|(i, h)| (h.spec.alias.clone(), i))
            .collect();
        AgentServiceImpl(Arc::new(Agent {
            section,
            handles,
            by_alias,
            started: Instant::now(),
            shutdown,
            tails: Arc::new(Semaphore::new(MAX_TAILS)),
            cluster,
            upgrades,
        }))
    }
}

/// The messages of a TailLog call.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, tonic::Status>> + Send>>;

impl Agent {
    fn find(&self, alias: &str) -> Result<&Handle, CallError> {
        self.by_alias
            .get(alias)
            .and_then(|&i| self.handles.get(i))
            .ok_or_else(|| CallError::NotFound(alias.to_string()))
    }

    fn operable(&self, alias: &str) -> Result<&Handle, CallError> {
        let handle = self.find(alias)?;
        if !handle.spec.operable {
            return Err(CallError::NotOperable(alias.to_string()));
        }
        Ok(handle)
    }

    fn basic(&self) -> Vec<&Handle> {
        self.handles
            .iter()
            .filter(|h| h.spec.kind == Kind::Basic)
            .collect()
    }

    async fn act(
        &self,
        handle: &Handle,
        command: Command,
        limit: Duration,
    ) -> Result<(), CallError> {
        let alias = || handle.spec.alias.clone();
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(CallError::ShuttingDown),
            outcome = tokio::time::timeout(limit, handle.call(command)) => match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(SupervisorError::Failed(reason))) => {
                    Err(CallError::Failed { command, alias: alias(), reason })
                }
                Ok(Err(SupervisorError::Gone(_))) => Err(CallError::ShuttingDown),
                Err(_) => {
                    let status = handle.status();
                    let mut state = status.state.name().to_string();
                    if !status.last_error.is_empty() {
                        state = format!("{state}: {}", status.last_error);
                    }
                    Err(CallError::Deadline { command, alias: alias(), waited: limit, state })
                }
            },
        }
    }

    async fn one(
        &self,
        command: Command,
        req: ProcessRequest,
        meta: &MetadataMap,
    ) -> Result<ProcessResponse, CallError> {
        self.cluster.admit(meta, true).await?;
        let handle = self.operable(&req.alias)?;
        self.act(handle, command, deadline(req.timeout_ms, meta))
            .await?;
        Ok(ProcessResponse {
            process: process_info::snapshot_async(vec![handle.clone()])
                .await?
                .pop(),
        })
    }

    async fn bulk(
        &self,
        command: Command,
        handles: Vec<&Handle>,
        limit: Duration,
    ) -> Result<BulkResponse, CallError> {
        let outcomes = join_all(handles.iter().map(|h| self.act(h, command, limit))).await;
        let failures = handles
            .iter()
            .zip(outcomes)
            .filter_map(|(h, outcome)| {
                outcome.err().map(|e| ProcessFailure {
                    alias: h.spec.alias.clone(),
                    reason: e.reason(),
                })
            })
            .collect();
        let handles = handles.into_iter().cloned().collect();
        Ok(BulkResponse {
            processes: process_info::snapshot_async(handles).await?,
            failures,
        })
    }

    async fn tail(&self, req: TailLogRequest) -> Result<LogStream, CallError> {
        if req.lines == 0 || req.lines > MAX_LINES {
            return Err(CallError::InvalidLines(req.lines));
        }
        let handle = self.find(&req.alias)?;
        let path = handle
            .spec
            .log_file
            .clone()
            .ok_or_else(|| CallError::NoLogFile(req.alias.clone()))?;
        let permit = Arc::clone(&self.tails)
            .try_acquire_owned()
            .map_err(|_| CallError::TooManyTails)?;
        let user = handle.spec.user.clone();
        let chunks =
            log_tail::tail(path, user, req.lines, req.follow, self.shutdown.clone()).await?;
        Ok(Box::pin(chunks.map(move |chunk| {
            // Held as long as the stream: given back when it ends or the client goes.
            let _permit = &permit;
            chunk.map_err(|e| tonic::Status::from(CallError::from(e)))
        })))
    }

    /// Reads no file: see [`process_info::is_started`].
    fn info(&self) -> AgentInfo {
        let all_started = self.basic().into_iter().all(process_info::is_started);
        let versions = self.upgrades.report();
        AgentInfo {
            version: self.upgrades.running().to_string(),
            committed_version: versions.committed,
            trial_remaining_ms: versions.trial.map_or(0, |t| {
                u64::try_from(t.until_ms - crate::supervisor::unix_ms()).unwrap_or(0)
            }),
            last_upgrade_error: versions.last_error,
            held_versions: versions.held,
            arch: std::env::consts::ARCH.to_string(),
            install_home: self.section.install_home.clone(),
            log_home: self.section.log_home.clone(),
            hostname: hostname(),
            uptime_secs: self.started.elapsed().as_secs(),
            status: if all_started {
                ProcessStatus::Started
            } else {
                ProcessStatus::Stopped
            } as i32,
            pid: std::process::id(),
        }
    }
}

/// uname(2): a system call that reads no file.
fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The request's own timeout, or the default, unless the gRPC deadline is shorter.
fn deadline(timeout_ms: u64, meta: &MetadataMap) -> Duration {
    let asked = match timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    grpc_timeout(meta).map_or(asked, |t| t.min(asked))
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(meta: &MetadataMap) -> Option<Duration> {
    let value = meta.get("grpc-timeout")?.to_str().ok()?;
    let unit = value.chars().last()?;
    let amount: u64 = value.get(..value.len() - unit.len_utf8())?.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount.saturating_mul(3600)),
        'M' => Duration::from_secs(amount.saturating_mul(60)),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Runs one call in a span carrying the controller's trace, task and subtask ids,
/// so the agent's log lines can be matched to the request that caused them.
async fn traced<T, F>(
    method: &'static str,
    meta: &MetadataMap,
    call: F,
) -> Result<Response<T>, tonic::Status>
where
    F: Future<Output = Result<T, CallError>>,
{
    let get = |key: &str| {
        meta.get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let span = tracing::info_span!(
        "rpc",
        method,
        trace_id = %get("x-trace-id"),
        task_id = %get("x-task-id"),
        subtask_id = %get("x-subtask-id"),
    );
    async move {
        let started = Instant::now();
        let outcome = call.await;
        let ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(_) if reads_only(method) => tracing::debug!(ms, "ok"),
            Ok(_) => tracing::info!(ms, "ok"),
            Err(e) => tracing::warn!(ms, error = %e, "failed"),
        }
        outcome.map(Response::new).map_err(tonic::Status::from)
    }
    .instrument(span)
    .await
}

/// Whether `method` only reads. The controller's heartbeat calls GetAgentInfo every
/// few seconds and each page that shows a host lists its processes: at INFO, their
/// successes would bury the lines that say something changed.
fn reads_only(method: &str) -> bool {
    matches!(method, "GetAgentInfo" | "ListProcesses" | "TailLog")
}

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    async fn receive_package(
        &self,
        request: Request<tonic::Streaming<PackageChunk>>,
    ) -> Result<Response<ReceivePackageResponse>, tonic::Status> {
        let (meta, _, stream) = request.into_parts();
        traced("ReceivePackage", &meta, async {
            self.0.cluster.admit(&meta, true).await?;
            let received = self.0.upgrades.receive(stream).await?;
            Ok(ReceivePackageResponse {
                version: received.version,
                sha256: received.sha256,
                already_held: received.already_held,
            })
        })
        .await
    }

    async fn switch_version(
        &self,
        request: Request<SwitchVersionRequest>,
    ) -> Result<Response<SwitchVersionResponse>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced("SwitchVersion", &meta, async {
            self.0.cluster.admit(&meta, true).await?;
            let upgrades = self.0.upgrades.clone();
            // A caller that goes away (a controller killed mid-call) must not cut a
            // switch short halfway: it runs to its end on its own task.
            let switched =
                tokio::spawn(async move { upgrades.switch(req.version, req.trial_seconds).await });
            Ok(switched.await.map_err(UpgradeError::from)??)
        })
        .await
    }

    async fn commit_version(
        &self,
        request: Request<CommitVersionRequest>,
    ) -> Result<Response<CommitVersionResponse>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced("CommitVersion", &meta, async {
            self.0.cluster.admit(&meta, true).await?;
            let (upgrades, version) = (self.0.upgrades.clone(), req.version.clone());
            let committed = tokio::spawn(async move { upgrades.commit(version).await });
            committed.await.map_err(UpgradeError::from)??;
            Ok(CommitVersionResponse {
                version: req.version,
            })
        })
        .await
    }

    type TailLogStream = LogStream;

    async fn get_agent_info(
        &self,
        request: Request<GetAgentInfoRequest>,
    ) -> Result<Response<AgentInfo>, tonic::Status> {
        let agent = self.0.clone();
        let meta = request.metadata();
        traced("GetAgentInfo", meta, async {
            agent.cluster.admit(meta, false).await?;
            Ok(agent.info())
        })
        .await
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, tonic::Status> {
        let meta = request.metadata();
        traced("ListProcesses", meta, async {
            self.0.cluster.admit(meta, false).await?;
            Ok(ListProcessesResponse {
                processes: process_info::snapshot_async(self.0.handles.clone()).await?,
            })
        })
        .await
    }

    async fn start_process(
        &self,
        request: Request<ProcessRequest>,
    ) -> Result<Response<ProcessResponse>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced(
            "StartProcess",
            &meta,
            self.0.one(Command::Start, req, &meta),
        )
        .await
    }

    async fn stop_process(
        &self,
        request: Request<ProcessRequest>,
    ) -> Result<Response<ProcessResponse>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced("StopProcess", &meta, self.0.one(Command::Stop, req, &meta)).await
    }

    async fn restart_process(
        &self,
        request: Request<ProcessRequest>,
    ) -> Result<Response<ProcessResponse>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced(
            "RestartProcess",
            &meta,
            self.0.one(Command::Restart, req, &meta),
        )
        .await
    }

    async fn start_all(
        &self,
        request: Request<BulkRequest>,
    ) -> Result<Response<BulkResponse>, tonic::Status> {
        let meta = request.metadata();
        let limit = deadline(request.get_ref().timeout_ms, meta);
        traced("StartAll", meta, async {
            self.0.cluster.admit(meta, true).await?;
            self.0.bulk(Command::Start, self.0.basic(), limit).await
        })
        .await
    }

    async fn stop_all(
        &self,
        request: Request<BulkRequest>,
    ) -> Result<Response<BulkResponse>, tonic::Status> {
        let meta = request.metadata();
        let limit = deadline(request.get_ref().timeout_ms, meta);
        traced("StopAll", meta, async {
            self.0.cluster.admit(meta, true).await?;
            self.0.bulk(Command::Stop, self.0.basic(), limit).await
        })
        .await
    }

    async fn restart_proxy(
        &self,
        request: Request<BulkRequest>,
    ) -> Result<Response<BulkResponse>, tonic::Status> {
        let meta = request.metadata();
        let limit = deadline(request.get_ref().timeout_ms, meta);
        traced("RestartProxy", meta, async {
            self.0.cluster.admit(meta, true).await?;
            let proxy = self
                .0
                .basic()
                .into_iter()
                .filter(|h| h.spec.proxy)
                .collect();
            self.0.bulk(Command::Restart, proxy, limit).await
        })
        .await
    }

    async fn tail_log(
        &self,
        request: Request<TailLogRequest>,
    ) -> Result<Response<LogStream>, tonic::Status> {
        let (meta, _, req) = request.into_parts();
        traced("TailLog", &meta, async {
            self.0.cluster.admit(&meta, false).await?;
            self.0.tail(req).await
        })
        .await
    }

    async fn release_cluster(
        &self,
        request: Request<ReleaseClusterRequest>,
    ) -> Result<Response<ReleaseClusterResponse>, tonic::Status> {
        let meta = request.metadata();
        traced("ReleaseCluster", meta, async {
            let released = self.0.cluster.release(meta).await?;
            Ok(ReleaseClusterResponse { released })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_wins_when_shorter() {
        let mut meta = MetadataMap::new();
        assert_eq!(deadline(0, &meta), DEFAULT_TIMEOUT);
        assert_eq!(deadline(500, &meta), Duration::from_millis(500));
        meta.insert("grpc-timeout", "200m".parse().expect("ascii"));
        assert_eq!(deadline(500, &meta), Duration::from_millis(200));
        assert_eq!(deadline(100, &meta), Duration::from_millis(100));
        meta.insert("grpc-timeout", "2S".parse().expect("ascii"));
        assert_eq!(deadline(0, &meta), Duration::from_secs(2));
        meta.insert("grpc-timeout", "x".parse().expect("ascii"));
        assert_eq!(deadline(0, &meta), DEFAULT_TIMEOUT);
    }
}
