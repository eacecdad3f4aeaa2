use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use controller::auth::{self, Users};
use controller::heartbeat::HeartbeatOptions;
use controller::store::Store;
use controller::{Controller, ControllerOptions};

/// ocp-controller: keeps the host inventory and DAG tasks, and drives the agents.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// REST gateway address (OCP's documented paths, also under /api/v2).
    #[arg(long, env = "OCP_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Users file (TOML, [[users]] name, password_hash, permissions). Without it, user
    /// `admin` gets every permission and a random password kept in <data-dir>/admin-password.
    #[arg(long, env = "OCP_USERS")]
    users: Option<PathBuf>,
    /// gRPC address (HostAgentService, TaskService, reflection, health).
    #[arg(long, env = "OCP_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Where the default SQLite store lives.
    #[arg(long, env = "OCP_DATA_DIR", default_value = "./ocp-data")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://...; defaults to SQLite in --data-dir.
    #[arg(long, env = "OCP_DATABASE_URL")]
    database_url: Option<String>,
    /// This controller's address as tasks and responses show it; defaults to the gRPC address's IP.
    #[arg(long, env = "OCP_ADVERTISE")]
    advertise: Option<String>,
    /// How many subtasks of one task run at once: enough for every host of a
    /// 1,000-host batch to run its stage together.
    #[arg(long, env = "OCP_TASK_CONCURRENCY", default_value_t = 1024,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    task_concurrency: usize,
    /// Caps every subtask's timeout, e.g. "30s".
    #[arg(long, env = "OCP_MAX_SUBTASK_TIMEOUT", value_parser = humantime::parse_duration)]
    max_subtask_timeout: Option<Duration>,
    /// How often every agent is checked.
    #[arg(long, env = "OCP_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// How long an agent may stay silent before its host is OFFLINE.
    #[arg(long, env = "OCP_OFFLINE_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    offline_grace: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads a password on stdin and prints its argon2id PHC string for the users file.
    HashPassword,
}

fn main() {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ocp-controller: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async_main());
}

/// glibc gives each thread that allocates its own arena, up to eight per core, and
/// keeps what each one freed. With the runtime's workers, the blocking pool and one
/// thread per SQLite connection, a 1,000-host batch restart left the controller at
/// 188 MB RSS for 108 MB of peak heap (heaptrack); two arenas brought it to 138 MB.
/// Must run before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn async_main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let result = match args.command {
        Some(Command::HashPassword) => hash_password(),
        None => run(args).await,
    };
    if let Err(e) = result {
        eprintln!("ocp-controller: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let database_url = args
        .database_url
        .unwrap_or_else(|| Store::sqlite_url(&args.data_dir));
    let users = match &args.users {
        Some(path) => Users::load(path)?,
        None => {
            let (users, path) = Users::bootstrap(&args.data_dir)?;
            tracing::warn!(
                "no --users file: user admin has every permission; its password is in {}",
                path.display()
            );
            users
        }
    };
    let options = ControllerOptions {
        grpc_addr: args.grpc_addr,
        http_addr: Some(args.http_addr),
        users,
        database_url,
        advertise: args
            .advertise
            .unwrap_or_else(|| args.grpc_addr.ip().to_string()),
        task_concurrency: args.task_concurrency,
        max_subtask_timeout: args.max_subtask_timeout,
        heartbeat: HeartbeatOptions {
            interval: args.heartbeat_interval,
            offline_grace: args.offline_grace,
            ..HeartbeatOptions::default()
        },
    };
    let controller = Controller::start(options).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down");
    controller.shutdown().await;
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!(
            "no password on stdin: pipe one in, e.g. `echo -n secret | ocp-controller hash-password`"
        );
    }
    println!("{}", auth::hash_password(password)?);
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
