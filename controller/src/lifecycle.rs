//! Assembles a running controller: store, engine, heartbeat, the gRPC server and the
//! REST gateway, and takes them down in order; holds the TLS that SIGHUP reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::ocp::v1::agent_package_service_server::AgentPackageServiceServer;
use proto::ocp::v1::host_agent_service_server::HostAgentServiceServer;
use proto::ocp::v1::profile_service_server::ProfileServiceServer;
use proto::ocp::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::layer::util::{Identity, Stack};
use trust::{ClientTls, ClientTlsFiles, ConnLimits, Incoming, ServerTls, ServerTlsFiles};

use crate::agent_client::{AgentPool, BadClusterId, ClusterId};
use crate::auth::{AuthLayer, Users};
use crate::engine::{self, Engine, EngineOptions};
use crate::gateway::{self, GatewayState};
use crate::grpc::{AgentPackageGrpc, HostAgentGrpc, ProfileGrpc, TaskGrpc};
use crate::heartbeat::{Heartbeat, HeartbeatOptions};
use crate::metrics::{GrpcRequests, Metrics};
use crate::service::{Core, CoreOptions};
use crate::store::{SoleController, SoleError, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub grpc_addr: SocketAddr,
    /// The REST gateway's address; `None` serves gRPC only.
    pub http_addr: Option<SocketAddr>,
    /// Who may call either face.
    pub users: Users,
    pub database_url: String,
    /// This controller's address as written in tasks (`executor`) and responses (`server`).
    pub advertise: String,
    pub task_concurrency: usize,
    pub max_subtask_timeout: Option<Duration>,
    pub heartbeat: HeartbeatOptions,
    /// Mutual TLS to every agent (`--pki-dir` or `--agent-ca/--agent-cert/--agent-key`);
    /// `None` dials agents in plaintext.
    pub agent_tls: Option<ClientTlsFiles>,
    /// HTTPS and gRPC over TLS on the controller's own ports (`--tls-cert/--tls-key`).
    pub tls: Option<ServerTlsFiles>,
    /// How long a client may take, and how many may be connected at once, per port.
    pub conns: ConnLimits,
    /// How long a silent controller keeps its tasks before another takes them over.
    pub lease_ttl: Duration,
    /// Watches of tasks (SSE and WatchTask) one user may hold open at once.
    pub max_watches_per_user: usize,
    /// The largest agent package an upload may bring (`--max-package-bytes`).
    pub max_package_bytes: u64,
}

/// Why the controller did not start, in one line: each message names its cause, which
/// is then no `source`, so that a chain printed whole names it once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store: {0}")]
    Store(StoreError),
    #[error("listening on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("building the reflection service: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error(transparent)]
    Tls(#[from] trust::TrustError),
    #[error(transparent)]
    Sole(#[from] SoleError),
    #[error(transparent)]
    Cluster(#[from] BadClusterId),
    #[error("taking the SQLite store: {0}")]
    Join(tokio::task::JoinError),
}

impl From<StoreError> for StartError {
    fn from(error: StoreError) -> StartError {
        StartError::Store(error)
    }
}

impl From<tonic_reflection::server::Error> for StartError {
    fn from(error: tonic_reflection::server::Error) -> StartError {
        StartError::Reflection(error)
    }
}

impl From<tokio::task::JoinError> for StartError {
    fn from(error: tokio::task::JoinError) -> StartError {
        StartError::Join(error)
    }
}

/// Re-reads the controller's certificates and keys.
#[derive(Clone)]
pub struct TlsReloader {
    agents: Arc<AgentPool>,
    faces: Option<ServerTls>,
}

impl TlsReloader {
    /// Re-reads every certificate and key: connections made from then on use them.
    /// Either half failing keeps what it had; the first error is returned after both
    /// were tried.
    pub async fn reload(&self) -> Result<Reloaded, trust::TrustError> {
        let agent_tls = self.agents.reload_tls().await;
        let faces_tls = match &self.faces {
            Some(tls) => tls.reload().await.map(|()| true),
            None => Ok(false),
        };
        Ok(Reloaded {
            agent_tls: agent_tls?,
            faces_tls: faces_tls?,
        })
    }
}

/// What a SIGHUP reloaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub agent_tls: bool,
    pub faces_tls: bool,
}

/// A running controller. Dropping it does not stop it: call `shutdown`.
pub struct Controller {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    core: Core,
    engine: Engine,
    store: Store,
    agents: Arc<AgentPool>,
    faces_tls: Option<ServerTls>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Held while this controller runs, on a SQLite store.
    _sole: Option<SoleController>,
}

impl Controller {
    pub async fn start(options: ControllerOptions) -> Result<Controller, StartError> {
        let agent_tls = match options.agent_tls.clone() {
            Some(files) => Some(ClientTls::controller(files).await?),
            None => None,
        };
        let faces_tls = match options.tls.clone() {
            Some(files) => Some(ServerTls::load(files, &[b"h2", b"http/1.1"]).await?),
            None => None,
        };
        let url = options.database_url.clone();
        let pid = std::process::id();
        let mut sole = tokio::task::spawn_blocking(move || {
            SoleController::acquire(&url, &format!("pid {pid}, starting"))
        })
        .await??;
        let store = Store::connect_with(&options.database_url, Some(options.lease_ttl)).await?;
        let metrics = Arc::new(Metrics::new(&crate::grpc::SERVICES));
        let cluster = ClusterId::parse(&store.cluster_id().await?)?;
        tracing::info!("this controller is of controller cluster {cluster}");
        let agents = Arc::new(AgentPool::new(agent_tls, cluster, metrics.agent_calls()));
        let cancel = CancellationToken::new();
        let engine = Engine::new(
            store.clone(),
            agents.clone(),
            EngineOptions {
                executor: options.advertise.clone(),
                task_concurrency: options.task_concurrency,
                max_subtask_timeout: options.max_subtask_timeout,
                owner: engine::new_owner(&options.advertise),
                lease_ttl: options.lease_ttl,
                sole: sole.is_some(),
            },
            cancel.clone(),
            metrics.engine(),
        );
        let core = Core::new(
            store.clone(),
            engine.clone(),
            agents.clone(),
            CoreOptions {
                max_watches_per_user: options.max_watches_per_user,
                max_package_bytes: options.max_package_bytes,
                ..CoreOptions::default()
            },
        );

        let listener = TcpListener::bind(options.grpc_addr)
            .await
            .map_err(|error| StartError::Bind {
                addr: options.grpc_addr,
                error,
            })?;
        let grpc_addr = listener.local_addr().map_err(|error| StartError::Bind {
            addr: options.grpc_addr,
            error,
        })?;

        let http = match options.http_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|error| StartError::Bind { addr, error })?;
                let local = listener
                    .local_addr()
                    .map_err(|error| StartError::Bind { addr, error })?;
                Some((listener, local))
            }
            None => None,
        };
        let http_addr = http.as_ref().map(|(_, addr)| *addr);
        if let Some(sole) = sole.as_mut() {
            let rest = http_addr.map_or("none".to_string(), |a| a.to_string());
            if let Err(e) = sole.describe(&format!("pid {pid}, gRPC {grpc_addr}, REST {rest}")) {
                tracing::warn!("could not record this controller in the store's lock file: {e}");
            }
        }

        // Recovery before serving: connections wait in the listeners' backlog meanwhile,
        // so no request sees, or changes, a task half resumed.
        let resumed = engine.resume().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished tasks");
        }
        engine.run_leases();

        let tracker = TaskTracker::new();
        let router = grpc_router(
            core.clone(),
            options.users.clone(),
            &options.conns,
            metrics.grpc(),
        )
        .await?;
        let shutdown = cancel.clone();
        let grpc_incoming =
            Incoming::new(listener, faces_tls.clone(), options.conns).map_err(|error| {
                StartError::Bind {
                    addr: grpc_addr,
                    error,
                }
            })?;
        tracker.spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(
                    grpc_incoming.into_stream(),
                    shutdown.cancelled_owned(),
                )
                .await;
            if let Err(e) = served {
                tracing::error!("gRPC server failed: {e}");
            }
        });

        if let Some((listener, addr)) = http {
            let router = gateway::router(GatewayState {
                core: core.clone(),
                users: options.users.clone(),
                server: options.advertise.as_str().into(),
                https: faces_tls.is_some(),
                metrics: metrics.clone(),
            });
            let shutdown = cancel.clone();
            let incoming = Incoming::new(listener, faces_tls.clone(), options.conns)
                .map_err(|error| StartError::Bind { addr, error })?;
            tracker.spawn(async move {
                if let Err(e) = gateway::serve(incoming, router, shutdown).await {
                    tracing::error!("REST gateway failed: {e}");
                }
            });
            if faces_tls.is_some() {
                tracing::info!(http_addr = %addr, "controller serving REST over HTTPS");
            } else {
                tracing::info!(http_addr = %addr, "controller serving REST");
            }
        }

        let heartbeat = Heartbeat {
            store: store.clone(),
            agents: agents.clone(),
            options: options.heartbeat,
            wake: core.host_added(),
            membership: engine.membership(),
            misses: metrics.heartbeat_misses(),
        };
        tracker.spawn(heartbeat.run(cancel.clone()));
        tracing::info!(%grpc_addr, "controller serving gRPC");
        Ok(Controller {
            grpc_addr,
            http_addr,
            core,
            engine,
            store,
            agents,
            faces_tls,
            cancel,
            tracker,
            _sole: sole,
        })
    }

    /// What SIGHUP reloads, as a handle that outlives a borrow of the controller, so
    /// that a reload can run apart from the loop that waits for signals.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader {
            agents: self.agents.clone(),
            faces: self.faces_tls.clone(),
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the REST gateway listens, when it was asked for.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The cluster this controller is of: every controller on its store is.
    pub fn cluster(&self) -> &ClusterId {
        self.agents.cluster()
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Stops serving, stops every task runner (their running steps stay RUNNING in the
    /// store, to be rerun by the next owner), gives up its leases so that another
    /// controller takes over at once, and waits for all of it to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.engine.drained().await;
        self.store.close().await;
    }
}

/// The gRPC face: every call counted (outermost, so that each is counted with the
/// code its client gets), then its credentials taken.
type GrpcLayers = Stack<AuthLayer, Stack<GrpcRequests, Identity>>;

async fn grpc_router(
    core: Core,
    users: Users,
    conns: &ConnLimits,
    requests: GrpcRequests,
) -> Result<tonic::transport::server::Router<GrpcLayers>, StartError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<HostAgentServiceServer<HostAgentGrpc>>()
        .await;
    health_reporter
        .set_serving::<TaskServiceServer<TaskGrpc>>()
        .await;
    health_reporter
        .set_serving::<ProfileServiceServer<ProfileGrpc>>()
        .await;
    health_reporter
        .set_serving::<AgentPackageServiceServer<AgentPackageGrpc>>()
        .await;
    // Advertise only what this server serves: the descriptor set also holds the agent's API.
    let reflection = || {
        crate::grpc::SERVICES.into_iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(service),
        )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(Some(ConnLimits::MAX_STREAMS))
        .http2_keepalive_interval(Some(conns.keepalive_interval()))
        .http2_keepalive_timeout(Some(conns.keepalive_interval()))
        .layer(requests)
        .layer(AuthLayer::new(users))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(HostAgentServiceServer::new(HostAgentGrpc::new(
            core.clone(),
        )))
        .add_service(ProfileServiceServer::new(ProfileGrpc::new(core.clone())))
        .add_service(AgentPackageServiceServer::new(AgentPackageGrpc::new(
            core.clone(),
        )))
        .add_service(TaskServiceServer::new(TaskGrpc::new(core))))
}
