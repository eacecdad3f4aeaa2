//! ocp-agent: parses the command line, sets up logging and runs the library until
//! SIGTERM or SIGINT; or runs one of its subcommands.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent::{Agent, AgentOptions};
use clap::Parser;

/// The per-host process supervisor of OCP, served over gRPC.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Address to serve gRPC on.
    #[arg(long, env = "OCP_AGENT_LISTEN", default_value = "127.0.0.1:62888")]
    listen: SocketAddr,
    /// The TOML config naming the processes to supervise.
    #[arg(long, env = "OCP_AGENT_CONFIG", default_value = "agent.toml")]
    config: PathBuf,
    /// Where desired state, pid files and the lock live.
    #[arg(long, env = "OCP_AGENT_DATA_DIR", default_value = "./ocp-agent-data")]
    data_dir: PathBuf,
    /// This agent's certificate (PEM), from `ocp-controller pki issue`; re-read on SIGHUP.
    #[arg(long, env = "OCP_AGENT_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "OCP_AGENT_TLS_KEY", requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// The fleet's CA (PEM): only clients holding a controller certificate it issued are
    /// served, and operator certificates, read-only.
    #[arg(long, env = "OCP_AGENT_TLS_CLIENT_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address: anyone who reaches the port can stop
    /// this host's processes.
    /// (`OCP_AGENT_INSECURE_PLAINTEXT=true`; only when no TLS flag is given.)
    #[arg(long, env = "OCP_AGENT_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// A client that has not sent a complete request within this long of connecting is
    /// closed, e.g. "10s".
    #[arg(long, env = "OCP_AGENT_HEADER_TIMEOUT", default_value = "10s", value_parser = trust::parse_timeout)]
    header_timeout: Duration,
    /// A connection that moved no byte for this long is closed; gRPC pings every third
    /// of it, so only a dead or stalled peer goes.
    #[arg(long, env = "OCP_AGENT_IDLE_TIMEOUT", default_value = "5m", value_parser = trust::parse_timeout)]
    idle_timeout: Duration,
    /// Connections open at once: the controller needs a few, the rest are operators.
    #[arg(long, env = "OCP_AGENT_MAX_CONNECTIONS", default_value_t = 256,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_connections: usize,
    /// Serve Prometheus metrics at `GET /metrics` on this address, over plain HTTP;
    /// off unless given.
    #[arg(long, env = "OCP_AGENT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Forget the controller cluster this agent belongs to.
    ///
    /// For when that cluster is gone: a controller of another cluster may then manage
    /// the agent. Works beside a running agent.
    ForgetCluster {
        /// The data dir the agent runs with.
        #[arg(long, env = "OCP_AGENT_DATA_DIR", default_value = "./ocp-agent-data")]
        data_dir: PathBuf,
    },
    /// Read the config and print this binary's version, then exit: what an agent runs
    /// on a new version before it switches to it.
    SelfCheck {
        /// The TOML config the agent runs with.
        #[arg(long, env = "OCP_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
}

/// Threads of the blocking pool, where `/proc` reads, fsyncs and spawns run off the
/// runtime thread. Fifty processes starting at once would otherwise grow a thread
/// each, with its stack and malloc arena, for work a host's few cores cannot run all
/// at once anyway; eight leave room for the rest when a slow fsync or a hung `/proc`
/// file holds one.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    // SAFETY: the process has one thread so far.
    let mut inherited = unsafe { agent::handover::Inherited::take_from_env() };
    let cli = Cli::parse();
    match &cli.command {
        Some(Subcommand::ForgetCluster { data_dir }) => return forget_cluster(data_dir),
        Some(Subcommand::SelfCheck { config }) => return self_check(config),
        None => {}
    }
    init_logging();
    if inherited.listener.is_none() {
        inherited.version = agent::cold_start(&cli.config, &cli.data_dir, inherited.version);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async_main(cli, inherited));
    // A reload still reading a file on a hung mount must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn forget_cluster(data_dir: &std::path::Path) -> ExitCode {
    match agent::forget_cluster(data_dir) {
        Ok(Some(id)) => {
            println!(
                "forgot controller cluster {id}: the next controller that acts on this agent owns it"
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("this agent belongs to no controller cluster: nothing to forget");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn self_check(config: &std::path::Path) -> ExitCode {
    match agent::Config::load(config) {
        Ok(_) => {
            println!(
                "{}{}",
                agent::handover::SELF_CHECK_BANNER,
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only for a person at a terminal, never into journald or a file.
        .with_writer(std::io::stderr)
        .with_ansi(colours())
        .init();
}

async fn async_main(cli: Cli, inherited: agent::handover::Inherited) -> ExitCode {
    match run(cli, inherited).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the library's errors already name their causes.
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether log lines are coloured: on a terminal, unless `NO_COLOR` says otherwise.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn run(cli: Cli, inherited: agent::handover::Inherited) -> anyhow::Result<()> {
    // Not a clap conflict: with the environment variable set to false it would refuse
    // the TLS flags all the same.
    if cli.insecure_plaintext && cli.tls_cert.is_some() {
        anyhow::bail!(
            "--insecure-plaintext and --tls-cert both given: serve TLS or plaintext, not both"
        );
    }
    let options = AgentOptions {
        listen: cli.listen,
        config_path: cli.config,
        data_dir: cli.data_dir,
        tls: match (cli.tls_cert, cli.tls_key, cli.tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(agent::ServerTlsFiles {
                cert,
                key,
                client_ca: Some(client_ca),
            }),
            _ => None,
        },
        insecure_plaintext: cli.insecure_plaintext,
        conns: agent::ConnLimits {
            header_timeout: cli.header_timeout,
            idle_timeout: cli.idle_timeout,
            max_connections: cli.max_connections,
        },
        metrics_addr: cli.metrics_addr,
    };
    Agent::run_until_signal(options, inherited).await?;
    Ok(())
}
