//! Serving the agent, and the order of its shutdown: stop taking calls first, then
//! stop every process (without recording that as the operator's wish, so the next
//! agent run starts them again), then release the data dir.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use proto::agent::v1::agent_service_server::AgentServiceServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::service::AgentServiceImpl;
use crate::state::{DataDir, StateError};
use crate::supervisor;

/// Where the agent listens and what it reads; see SPEC section 4.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Port 0 picks a free port; [`Agent::start`] returns the one it got.
    pub listen: SocketAddr,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] StateError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot handle signals: {0}")]
    Signals(io::Error),
    #[error("agent task: {0}")]
    Task(#[from] tokio::task::JoinError),
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
        let config = Config::load(&options.config_path)?;
        let data = DataDir::open(&options.data_dir)?;
        let listen_err = |source| AgentError::Listen {
            addr: options.listen,
            source,
        };
        let incoming = TcpIncoming::bind(options.listen)
            .map_err(listen_err)?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().map_err(listen_err)?;

        let tracker = TaskTracker::new();
        let supervisors = CancellationToken::new();
        let handles = config
            .processes
            .into_iter()
            .map(|spec| {
                let files = data.process(&spec.alias);
                supervisor::launch(spec, files, supervisors.clone(), &tracker)
            })
            .collect();
        let service = AgentServiceImpl::new(config.agent, handles, cancel.clone());

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
        let server = Server::builder()
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(AgentServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
        info!(%addr, config = %options.config_path.display(), "ocp-agent serving");

        let join = tokio::spawn(async move {
            tokio::pin!(server);
            let drained = async {
                cancel.cancelled().await;
                tokio::time::sleep(DRAIN).await;
            };
            let served = tokio::select! {
                served = &mut server => served,
                _ = drained => {
                    warn!("clients still connected {DRAIN:?} after shutdown began; closing them");
                    Ok(())
                }
            };
            info!("stopped serving; stopping processes");
            supervisors.cancel();
            tracker.close();
            tracker.wait().await;
            drop(data);
            info!("all processes stopped");
            served.map_err(AgentError::from)
        });
        Ok((addr, join))
    }

    /// Runs the agent as the binary does: until SIGTERM or SIGINT, then a graceful
    /// shutdown.
    pub async fn run_until_signal(options: AgentOptions) -> Result<(), AgentError> {
        let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        let cancel = CancellationToken::new();
        let (_, mut served) = Agent::start(options, cancel.clone()).await?;
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
            outcome = &mut served => return outcome?,
        }
        cancel.cancel();
        served.await?
    }
}
