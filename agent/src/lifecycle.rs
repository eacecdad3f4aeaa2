//! Serving the agent, and the order of its shutdown: stop taking calls first, then
//! stop every process (without recording that as the operator's wish, so the next
//! agent run starts them again), then release the data dir.
//!
//! Who may call it (docs/trust.md): over TLS, only a client holding the controller's
//! certificate; without TLS, only clients on this machine (a loopback address), unless
//! the operator insists with `--insecure-plaintext`.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use proto::agent::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tracing::{error, info, warn};
use trust::{ConnLimits, Incoming, ServerTls, ServerTlsFiles};

use crate::cgroup::Cgroups;
use crate::cluster::{self, ClusterError, ClusterPin};
use crate::config::{Config, ConfigError};
use crate::data_dir::{DataDir, DataDirError};
use crate::grpc::AgentServiceImpl;
use crate::handover::{self, ExecPlan, Inherited};
use crate::metrics::{self, MetricsBuilder};
use crate::operator_gate::OperatorGateLayer;
use crate::supervisor::{self, Adoptable, Lifetime};
use crate::upgrade::Upgrades;
use crate::versions::{self, Boot};

/// Where the agent listens and what it reads; see docs/agent.md#command-line.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Port 0 picks a free port; [`Agent::start`] returns the one it got.
    pub listen: SocketAddr,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// Serve over TLS, to the controller only; re-read on SIGHUP.
    pub tls: Option<ServerTlsFiles>,
    /// Serve plaintext on a non-loopback address all the same.
    pub insecure_plaintext: bool,
    /// How long a client may take, and how many may be connected at once.
    pub conns: ConnLimits,
    /// Where to serve `GET /metrics` over plain HTTP; `None` serves no metrics.
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "refusing to serve plaintext on {0}: anyone who reaches it could stop this host's processes; \
         give --tls-cert, --tls-key and --tls-client-ca (see `ocp-controller pki issue`), \
         listen on a loopback address, or pass --insecure-plaintext"
    )]
    PlaintextExposed(SocketAddr),
    #[error(transparent)]
    Tls(#[from] trust::TrustError),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Serve(tonic::transport::Error),
    #[error("cannot handle signals: {0}")]
    Signals(io::Error),
    #[error("agent task: {0}")]
    Task(tokio::task::JoinError),
    #[error("cannot become {binary}, nor this binary again: {error}")]
    Exec { binary: PathBuf, error: io::Error },
}

impl From<tonic_reflection::server::Error> for AgentError {
    fn from(error: tonic_reflection::server::Error) -> AgentError {
        AgentError::Reflection(error)
    }
}

impl From<tonic::transport::Error> for AgentError {
    fn from(error: tonic::transport::Error) -> AgentError {
        AgentError::Serve(error)
    }
}

impl From<tokio::task::JoinError> for AgentError {
    fn from(error: tokio::task::JoinError) -> AgentError {
        AgentError::Task(error)
    }
}

/// How long connected clients get to go away once shutdown began; in-flight calls
/// are answered UNAVAILABLE at once, so this only waits for idle connections.
const DRAIN: Duration = Duration::from_secs(2);

pub struct Agent;

impl Agent {
    /// Validates the config, locks the data dir, starts the supervisors and serves
    /// until `cancel`. The returned task ends once every process was stopped.
    pub async fn start(
        options: AgentOptions,
        cancel: CancellationToken,
    ) -> Result<(SocketAddr, JoinHandle<Result<(), AgentError>>), AgentError> {
        let serving = Agent::serve(options, cancel).await?;
        Ok((serving.addr, serving.served))
    }

    /// As `start`, keeping what SIGHUP reloads.
    pub async fn serve(
        options: AgentOptions,
        cancel: CancellationToken,
    ) -> Result<Serving, AgentError> {
        Agent::serve_with(options, Inherited::default(), false, cancel).await
    }

    /// As `serve`, taking over what an earlier image of this process handed over;
    /// `replaceable` lets SwitchVersion `exec` another binary in this process, which
    /// only the `ocp-agent` binary allows, never a program that embeds the agent.
    async fn serve_with(
        options: AgentOptions,
        inherited: Inherited,
        replaceable: bool,
        cancel: CancellationToken,
    ) -> Result<Serving, AgentError> {
        if options.tls.is_none()
            && !options.insecure_plaintext
            && !options.listen.ip().is_loopback()
        {
            return Err(AgentError::PlaintextExposed(options.listen));
        }
        let config_path = options.config_path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&config_path)).await??;
        let tls = match options.tls.clone() {
            Some(files) => Some(ServerTls::load(files, &[b"h2"]).await?),
            None => None,
        };
        let data_dir = options.data_dir.clone();
        // As a refusal names it: the operator pastes it on the host, from any folder.
        let shown_dir = std::path::absolute(&data_dir).unwrap_or_else(|_| data_dir.clone());
        let aliases: Vec<String> = config.processes.iter().map(|p| p.alias.clone()).collect();
        // Stops the gRPC server: at shutdown, or for a switch to another version.
        let serving = cancel.child_token();
        let running = inherited
            .version
            .clone()
            .unwrap_or_else(|| config.agent.version.clone());
        // A handover: the processes the previous image left are taken over before
        // anything is served, so that no call sees them as anything but running.
        let adopt = inherited.listener.is_some();
        let (data, pinned, upgrades, mut adoptable) = tokio::task::spawn_blocking({
            let shown_dir = shown_dir.clone();
            let (config_path, serving) = (options.config_path.clone(), serving.clone());
            move || {
                let data = DataDir::open(&data_dir)?;
                data.check_pid_files(aliases.iter().map(String::as_str))?;
                let adoptable: HashMap<String, Adoptable> = aliases
                    .iter()
                    .filter(|_| adopt)
                    .filter_map(|a| Some((a.clone(), supervisor::adoptable(&data.process(a))?)))
                    .collect();
                let pinned = cluster::read_pin(&data.cluster(), &shown_dir)?;
                let upgrades =
                    Upgrades::load(data.versions()?, running, config_path, replaceable, serving)?;
                Ok::<_, AgentError>((data, pinned, Arc::new(upgrades), adoptable))
            }
        })
        .await??;
        match &pinned {
            Some(id) => info!("this agent belongs to controller cluster {id}"),
            None => info!("this agent belongs to no controller cluster yet"),
        }
        let cluster = ClusterPin::new(data.cluster(), shown_dir, pinned);
        let listen_err = |error| AgentError::Listen {
            addr: options.listen,
            error,
        };
        // A handed-over socket kept listening through the exec: nothing was refused.
        let listener = match inherited.listener {
            Some(listener) => listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
                .map_err(listen_err)?,
            None => TcpListener::bind(options.listen)
                .await
                .map_err(listen_err)?,
        };
        let addr = listener.local_addr().map_err(listen_err)?;
        // The server closes its listener when it stops; this copy outlives it, for
        // the next image.
        let handed = listener.as_fd().try_clone_to_owned().map_err(listen_err)?;
        let metrics_listener = match options.metrics_addr {
            Some(metrics_addr) => {
                let metrics_err = |error| AgentError::Listen {
                    addr: metrics_addr,
                    error,
                };
                let listener = TcpListener::bind(metrics_addr).await.map_err(metrics_err)?;
                let bound = listener.local_addr().map_err(metrics_err)?;
                Some((listener, bound))
            }
            None => None,
        };

        let cgroups = cgroups_for(&config, options.data_dir.clone()).await;
        let tracker = TaskTracker::new();
        let supervisors = CancellationToken::new();
        let detach = CancellationToken::new();
        let lifetime = Lifetime {
            cancel: supervisors.clone(),
            detach: detach.clone(),
        };
        let metrics = MetricsBuilder::new();
        let handles: Vec<_> = config
            .processes
            .into_iter()
            .map(|spec| {
                let files = data.process(&spec.alias);
                let cgroup = cgroups
                    .as_ref()
                    .filter(|_| !spec.limits.is_empty())
                    .map(|c| c.process(&spec.alias, spec.limits));
                let recorded = metrics.process(&spec.alias);
                let adopted = adoptable.remove(&spec.alias);
                supervisor::launch(
                    spec,
                    files,
                    cgroup,
                    recorded,
                    lifetime.clone(),
                    adopted,
                    &tracker,
                )
            })
            .collect();
        let registry = metrics.finish(handles.clone());
        // Its own token, so that it also stops when the gRPC server ends by itself.
        let metrics_stop = cancel.child_token();
        let metrics_served = metrics_listener.map(|(listener, bound)| {
            info!(metrics = %bound, "ocp-agent serving GET /metrics over plain HTTP");
            tokio::spawn(metrics::serve(
                listener,
                registry,
                metrics::limits(options.conns),
                metrics_stop.clone(),
            ))
        });
        let service = AgentServiceImpl::new(
            config.agent,
            handles,
            cluster,
            upgrades.clone(),
            serving.clone(),
        );
        let trial = tokio::spawn(upgrades.clone().watch_trial(serving.clone()));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AgentServiceServer<AgentServiceImpl>>()
            .await;
        // The descriptor set also holds the controller's APIs: advertise only ours.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("ocp.agent.v1.AgentService")
                .with_service_name("grpc.health.v1.Health")
        };
        let router = Server::builder()
            .max_concurrent_streams(Some(ConnLimits::MAX_STREAMS))
            .http2_keepalive_interval(Some(options.conns.keepalive_interval()))
            .http2_keepalive_timeout(Some(options.conns.keepalive_interval()))
            .layer(OperatorGateLayer)
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(AgentServiceServer::new(service));
        let shutdown = serving.clone().cancelled_owned();
        let incoming = Incoming::new(listener, tls.clone(), options.conns).map_err(listen_err)?;
        let config = options.config_path.display();
        if tls.is_some() {
            info!(%addr, %config, "ocp-agent serving over TLS to the controller, and read-only to operators");
        } else if addr.ip().is_loopback() {
            info!(%addr, %config, "ocp-agent serving plaintext on loopback");
        } else {
            warn!(%addr, "ocp-agent serving PLAINTEXT to anyone who reaches it (--insecure-plaintext)");
        }
        let server: BoxFuture<'static, Result<(), tonic::transport::Error>> =
            Box::pin(router.serve_with_incoming_shutdown(incoming.into_stream(), shutdown));

        let join = tokio::spawn(async move {
            tokio::pin!(server);
            let drained = async {
                serving.cancelled().await;
                tokio::time::sleep(DRAIN).await;
            };
            let served = tokio::select! {
                served = &mut server => served,
                _ = drained => {
                    warn!("clients still connected {DRAIN:?} after shutdown began; closing them");
                    Ok(())
                }
            };
            metrics_stop.cancel();
            if let Some(metrics) = metrics_served
                && let Err(e) = metrics.await
            {
                warn!("the metrics listener failed: {e}");
            }
            if let Err(e) = trial.await {
                warn!("the trial's watch failed: {e}");
            }
            if let Some(plan) = upgrades.take_plan().filter(|_| !cancel.is_cancelled()) {
                info!(version = %plan.version, "stopped serving; handing the processes over");
                detach.cancel();
                tracker.close();
                tracker.wait().await;
                drop(data);
                return Err(become_next(&plan, upgrades.running(), &handed));
            }
            info!("stopped serving; stopping processes");
            supervisors.cancel();
            tracker.close();
            tracker.wait().await;
            drop(data);
            info!("all processes stopped");
            served.map_err(AgentError::from)
        });
        Ok(Serving {
            addr,
            served: join,
            tls,
        })
    }

    /// Runs the agent as the binary does: until SIGTERM or SIGINT, then a graceful
    /// shutdown. SIGHUP re-reads the TLS files; it never ends the agent, TLS or not.
    pub async fn run_until_signal(
        options: AgentOptions,
        inherited: Inherited,
    ) -> Result<(), AgentError> {
        // Every handler first: a signal that arrives during start-up is not lethal.
        let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
        let cancel = CancellationToken::new();
        let mut serving = Agent::serve_with(options, inherited, true, cancel.clone()).await?;
        loop {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
                _ = hup.recv() => {
                    serving.reload_tls();
                    continue;
                }
                outcome = &mut serving.served => return outcome?,
            }
            break;
        }
        cancel.cancel();
        serving.served.await?
    }
}

/// Runs `plan`; when that exec fails, runs this binary again as `running`, which
/// takes the processes back. Returns only when neither exec could be made.
fn become_next(plan: &ExecPlan, running: &str, handed: &std::os::fd::OwnedFd) -> AgentError {
    let error = handover::exec(plan, Some(handed));
    error!(binary = %plan.binary.display(), "cannot run the new version: {error}; running this one again");
    let again = ExecPlan {
        binary: match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                return AgentError::Exec {
                    binary: plan.binary.clone(),
                    error: e,
                };
            }
        },
        version: running.to_string(),
    };
    AgentError::Exec {
        binary: plan.binary.clone(),
        error: handover::exec(&again, Some(handed)),
    }
}

/// What a cold start (a boot, a crash, a service restart; not a switch) runs: a
/// trial that was under way ended with the crash and is recorded as failed, and the
/// committed version's binary replaces this one when it is another. Answers the
/// version this binary runs as, when it stays. Blocking: call it before the runtime.
///
/// Nothing here refuses to start: a config or data dir that cannot be read is
/// left for the start itself to report.
pub fn cold_start(config_path: &Path, data_dir: &Path, running: Option<String>) -> Option<String> {
    let configured = Config::load(config_path).ok()?.agent.version;
    let data = DataDir::open(data_dir).ok()?;
    let versions = data.versions().ok()?;
    if let Ok(Some(trial)) = versions.trial() {
        let why = format!(
            "version {} stopped before it was committed; version {} started again",
            trial.version, trial.committed
        );
        warn!("{why}");
        if let Err(e) = versions
            .set_last_error(&why)
            .and_then(|()| versions.end_trial())
        {
            warn!("cannot record the end of the trial: {e}");
        }
    }
    let committed = versions.committed().ok().flatten();
    let held = committed
        .as_deref()
        .is_some_and(|c| versions.binary(c).is_file());
    match versions::boot(running.as_deref(), &configured, committed.as_deref(), held) {
        Boot::Run { version } => Some(version),
        Boot::Exec { version } => {
            let plan = ExecPlan {
                binary: versions.binary(&version),
                version,
            };
            info!(version = %plan.version, "starting the committed agent version");
            drop(data);
            let error = handover::exec(&plan, None);
            error!(binary = %plan.binary.display(), "cannot run the committed version: {error}; running the installed one");
            Some(configured)
        }
    }
}

/// A serving agent.
pub struct Serving {
    pub addr: SocketAddr,
    /// Ends once every process was stopped after cancellation.
    pub served: JoinHandle<Result<(), AgentError>>,
    tls: Option<ServerTls>,
}

impl Serving {
    /// Re-reads the certificate, key and client CA in the background (a file on a hung
    /// mount must not hold up a shutdown); connections made from then on use them, and
    /// open ones whose client the new CA refuses are closed. A failed reload keeps the
    /// files in use.
    pub fn reload_tls(&self) {
        let Some(tls) = self.tls.clone() else {
            info!("SIGHUP: serving plaintext, no TLS files to reload");
            return;
        };
        tokio::spawn(async move {
            match tls.reload().await {
                Ok(()) => {
                    info!(cert = %tls.files().cert.display(), "SIGHUP: TLS certificate, key and client CA reloaded")
                }
                Err(e) => {
                    warn!("SIGHUP: TLS files not reloaded, the previous ones stay in use: {e}")
                }
            }
        });
    }
}

/// The agent's cgroups, looked for only when some process has limits; where they
/// cannot be written the agent says so once and runs its processes unlimited.
async fn cgroups_for(config: &Config, data_dir: PathBuf) -> Option<Cgroups> {
    let limited: Vec<&str> = config
        .processes
        .iter()
        .filter(|p| !p.limits.is_empty())
        .map(|p| p.alias.as_str())
        .collect();
    if limited.is_empty() {
        return None;
    }
    match tokio::task::spawn_blocking(move || Cgroups::discover(&data_dir)).await {
        Ok(Ok(cgroups)) => {
            info!(
                cgroup = cgroups.version(),
                "resource limits enforced through cgroups"
            );
            Some(cgroups)
        }
        Ok(Err(why)) => {
            warn!(processes = %limited.join(", "), "cgroups cannot be written ({why}): running without cpu_quota and memory_limit");
            None
        }
        Err(e) => {
            warn!(error = %e, "cannot look for cgroups: running without limits");
            None
        }
    }
}
