//! The `ocp-controller` binary: its flags and subcommands (serve, hash a password, issue
//! certificates), read into a `ControllerOptions`; the controller itself is the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use controller::auth::{self, Users};
use controller::heartbeat::HeartbeatOptions;
use controller::lifecycle::Reloaded;
use controller::store::{Dialect, Store};
use controller::{Controller, ControllerOptions};
use trust::{ClientTlsFiles, ServerTlsFiles, pki};

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
    /// gRPC address (HostAgentService, TaskService, ProfileService, reflection, health).
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
    /// The controller's folder of the PKI (`pki init`'s <dir>/controller): dial every
    /// agent over mutual TLS with its ca.pem, controller.pem and controller-key.pem.
    /// Re-read on SIGHUP.
    #[arg(long, env = "OCP_PKI_DIR", conflicts_with_all = ["agent_ca", "agent_cert", "agent_key"])]
    pki_dir: Option<PathBuf>,
    /// The CA agents' certificates must chain to (instead of --pki-dir).
    #[arg(long, env = "OCP_AGENT_CA", requires_all = ["agent_cert", "agent_key"])]
    agent_ca: Option<PathBuf>,
    /// The certificate the controller presents to agents (issued for the controller).
    #[arg(long, env = "OCP_AGENT_CERT", requires_all = ["agent_ca", "agent_key"])]
    agent_cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, env = "OCP_AGENT_KEY", requires_all = ["agent_ca", "agent_cert"])]
    agent_key: Option<PathBuf>,
    /// Serve the REST gateway over HTTPS and gRPC over TLS with this certificate
    /// (e.g. the PKI's controller.pem). Re-read on SIGHUP.
    #[arg(long, env = "OCP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, env = "OCP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Failed logins of one user name from one client address in a row before that name
    /// is refused there (429); the address may make ten times as many for all names.
    #[arg(long, env = "OCP_LOGIN_FAILURE_BURST", default_value_t = auth::LoginLimits::DEFAULT_BURST,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    login_failure_burst: u32,
    /// Then one more failed login per this interval; "0s" turns the throttle off.
    #[arg(long, env = "OCP_LOGIN_FAILURE_INTERVAL", default_value = "3s", value_parser = humantime::parse_duration)]
    login_failure_interval: Duration,
    /// A client that has not sent a complete request head within this long of
    /// connecting is closed, on both ports, e.g. "10s".
    #[arg(long, env = "OCP_HEADER_TIMEOUT", default_value = "10s", value_parser = trust::parse_timeout)]
    header_timeout: Duration,
    /// A connection that moved no byte for this long is closed; gRPC pings every third
    /// of it, so only a dead or stalled gRPC peer goes. Above 120 s, the longest REST request.
    #[arg(long, env = "OCP_IDLE_TIMEOUT", default_value = "5m", value_parser = trust::parse_timeout)]
    idle_timeout: Duration,
    /// Connections open at once on each port; at the cap a new one closes the oldest
    /// that has not sent a request yet.
    #[arg(long, env = "OCP_MAX_CONNECTIONS", default_value_t = 4096,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_connections: usize,
    /// Watches of tasks (server-sent events and WatchTask) one user may hold open at
    /// once, across both ports and every connection; the next is refused (429,
    /// RESOURCE_EXHAUSTED) until one closes.
    #[arg(long, env = "OCP_MAX_WATCHES_PER_USER", default_value_t = controller::service::DEFAULT_MAX_WATCHES_PER_USER,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_watches_per_user: usize,
    /// How long a controller that went silent (dead, paused, cut off) keeps its tasks
    /// before another one on the same PostgreSQL database takes them over; leases are
    /// renewed every third of it. Shorter: faster takeover; longer: fewer takeovers
    /// of a controller that was only slow.
    #[arg(long, env = "OCP_LEASE_TTL", default_value = "10s", value_parser = parse_lease_ttl)]
    lease_ttl: Duration,
    /// The largest agent package an upload may bring, in bytes; a larger one is refused
    /// (413) as soon as it passes this, without reading the rest.
    #[arg(long, env = "OCP_MAX_PACKAGE_BYTES", default_value_t = controller::service::DEFAULT_MAX_PACKAGE_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=(16_u64 << 30)))]
    max_package_bytes: u64,
}

fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl < Duration::from_millis(300) || ttl > Duration::from_secs(3600) {
        return Err(format!(
            "{text} is out of range: a lease lasts from 300ms to 1h (default 10s)"
        ));
    }
    Ok(ttl)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads a password on stdin and prints its argon2id PHC string for the users file.
    HashPassword,
    /// The fleet's certificates: a CA, the controller's, one per agent, operators'.
    #[command(subcommand)]
    Pki(PkiCommand),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Writes a new CA (ca.pem, ca-key.pem) into --dir, and the controller's certificate
    /// (controller.pem, controller-key.pem, with a copy of ca.pem) into --dir/controller,
    /// the folder the controller's service user is given.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A name or IP address the controller is reached at; repeat for several.
        /// Default: this machine's hostname and 127.0.0.1.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the controller's certificate stays valid.
        #[arg(long, default_value_t = 825, value_parser = days())]
        days: i64,
        /// Days the CA stays valid.
        #[arg(long, default_value_t = 3650, value_parser = days())]
        ca_days: i64,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Writes a certificate signed by the CA in --dir into --out, with ca.pem beside it:
    /// agent.pem and agent-key.pem for an agent (the default), controller.pem and
    /// controller-key.pem for a controller, operator.pem and operator-key.pem for an
    /// operator.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// Whom the certificate is for: an agent; a controller (a renewal, or another
        /// controller); an operator calling agents' read-only methods with grpcurl.
        #[arg(long, value_enum, default_value_t = RoleArg::Agent)]
        role: RoleArg,
        /// An agent's: the host's address as registered (innerIpAddress), and any other
        /// name or address it is reached at. A controller's: every name and address
        /// clients reach it at. Repeat for several; not for an operator.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// An operator's: who holds it, the certificate's common name [default: operator].
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = 825, value_parser = days())]
        days: i64,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
}

/// `pki issue --role`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Agent,
    Controller,
    Operator,
}

impl From<RoleArg> for trust::Role {
    fn from(role: RoleArg) -> trust::Role {
        match role {
            RoleArg::Agent => trust::Role::Agent,
            RoleArg::Controller => trust::Role::Controller,
            RoleArg::Operator => trust::Role::Operator,
        }
    }
}

fn days() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(1..=pki::MAX_DAYS)
}

/// jemalloc hands freed memory back to the system, where glibc's arenas kept it: with
/// 1,000 hosts and 10,000 finished tasks (`cargo xtask bench --hosts 1000`) the
/// controller peaked at 124 MB RSS instead of 133 MB, and served 40% more process
/// reads a second. SQLite's C code still allocates from glibc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    // A reload still reading a file on a hung mount must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// glibc, which serves SQLite's C code (and everything without jemalloc), gives each
/// thread that allocates its own arena, up to eight per core, and keeps what each one
/// freed. With the runtime's workers, the blocking pool and one thread per SQLite
/// connection, two arenas took a 1,000-host batch restart from 188 MB RSS to 138 MB.
///
/// Without jemalloc, a fixed mmap threshold also turns off glibc's sliding one, which
/// after the first argon2 verification freed its 19 MiB served every later one from the
/// arenas and kept what they freed: a disconnect flood of wrong passwords left ~200 MB
/// behind with two verifications at a time. Must run before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        #[cfg(not(feature = "jemalloc"))]
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

async fn async_main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // stderr, so that stdout holds only what a command prints (a hash, a PKI's
        // files); colours only for a person at a terminal, never into journald or a file.
        .with_writer(std::io::stderr)
        .with_ansi(colours())
        .init();
    let args = Args::parse();
    let result = match args.command {
        Some(Command::HashPassword) => hash_password(),
        // Key generation and file writes: off the runtime's threads.
        Some(Command::Pki(command)) => tokio::task::spawn_blocking(move || pki(command))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("pki: {e}"))),
        None => run(args).await,
    };
    if let Err(e) = result {
        // The context and every cause under it, each named once.
        eprintln!("ocp-controller: {}", trust::causes(e.as_ref()));
        std::process::exit(1);
    }
}

/// Whether log lines are coloured: on a terminal, unless `NO_COLOR` says otherwise.
fn colours() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let database_url = args
        .database_url
        .unwrap_or_else(|| Store::sqlite_url(&args.data_dir));
    let (users_file, data_dir) = (args.users.clone(), args.data_dir.clone());
    let uses_dir = uses_data_dir(&database_url, users_file.is_some());
    // File reads and a password hash: off the runtime's threads.
    let users = tokio::task::spawn_blocking(move || -> anyhow::Result<Users> {
        if uses_dir {
            make_data_dir(&data_dir)?;
        }
        Ok(match &users_file {
            Some(path) => Users::load(path)?,
            None => {
                let (users, path) = Users::bootstrap(&data_dir)?;
                tracing::warn!(
                    "no --users file: user admin has every permission; its password is in {}",
                    path.display()
                );
                users
            }
        })
    })
    .await??
    .with_login_limits(auth::LoginLimits {
        burst: args.login_failure_burst,
        interval: args.login_failure_interval,
    });
    let agent_tls = match (args.pki_dir, args.agent_ca, args.agent_cert, args.agent_key) {
        (Some(dir), ..) => Some(ClientTlsFiles {
            ca: dir.join(pki::CA_CERT),
            identity: Some((
                dir.join(pki::CONTROLLER_CERT),
                dir.join(pki::CONTROLLER_KEY),
            )),
        }),
        (None, Some(ca), Some(cert), Some(key)) => Some(ClientTlsFiles {
            ca,
            identity: Some((cert, key)),
        }),
        _ => {
            tracing::warn!(
                "no --pki-dir: agents are dialled in plaintext, so each must listen on loopback \
                 or run with --insecure-plaintext; see `ocp-controller pki init`"
            );
            None
        }
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTlsFiles {
            cert,
            key,
            client_ca: None,
        }),
        _ => None,
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
        agent_tls,
        tls,
        conns: trust::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        },
        lease_ttl: args.lease_ttl,
        max_watches_per_user: args.max_watches_per_user,
        max_package_bytes: args.max_package_bytes,
    };
    let controller = Controller::start(options).await?;
    until_shutdown(&controller).await?;
    tracing::info!("shutting down");
    controller.shutdown().await;
    Ok(())
}

/// Whether the data dir holds anything: a SQLite store (the default one, or one an
/// operator put there), or the bootstrap admin's password when there is no users file.
/// A controller on PostgreSQL with a users file keeps nothing on disk, and makes no
/// folder a read-only or shared host would have to allow.
fn uses_data_dir(database_url: &str, users_file: bool) -> bool {
    !users_file || Dialect::of_url(database_url) != Some(Dialect::Postgres)
}

/// 0700 whatever the umask: it holds the database and the admin password.
fn make_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    match made {
        Ok(()) => Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => anyhow::bail!(
            "data dir {} is not a folder: give --data-dir a folder, or a path where one may be made",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("creating data dir {}", dir.display())),
    }
}

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            mut hosts,
            days,
            ca_days,
            force,
        } => {
            if hosts.is_empty() {
                hosts = default_controller_hosts();
            }
            let written = pki::init(
                &dir,
                &hosts,
                pki::Validity::days(ca_days)?,
                pki::Validity::days(days)?,
                force,
            )?;
            report(&written);
            let d = dir.display();
            let c = dir.join(pki::CONTROLLER_DIR);
            let c = c.display();
            println!("\nThe controller's certificate names: {}", hosts.join(", "));
            println!(
                "Next, give the controller's service user its folder, and nothing else of {d}:"
            );
            println!("  chown -R ocp:ocp {c}");
            println!("issue a certificate for each agent host, named by its innerIpAddress:");
            println!(
                "  ocp-controller pki issue --dir {d} --host 10.0.0.5 --out {d}/agents/10.0.0.5"
            );
            println!("then start the controller with its folder:");
            println!(
                "  ocp-controller --pki-dir {c} --tls-cert {c}/{} --tls-key {c}/{} ...",
                pki::CONTROLLER_CERT,
                pki::CONTROLLER_KEY
            );
        }
        PkiCommand::Issue {
            dir,
            role,
            hosts,
            name,
            out,
            days,
            force,
        } => {
            let holder = pki::Holder::new(role.into(), hosts, name)?;
            let written = pki::issue(&dir, &holder, &out, pki::Validity::days(days)?, force)?;
            report(&written);
            next_after_issue(&holder, &out);
        }
    }
    Ok(())
}

/// What to do with what `pki issue` wrote.
fn next_after_issue(holder: &pki::Holder, out: &std::path::Path) {
    let o = out.display();
    let (cert, key) = holder.files();
    let names = holder.names().join(", ");
    match holder {
        pki::Holder::Agent { .. } => {
            println!("\nThe agent's certificate names: {names}");
            println!("Next, copy {o} to that host (keep {key} 0600) and start its agent with:");
            println!(
                "  ocp-agent --listen 0.0.0.0:62888 --tls-cert {o}/{cert} --tls-key {o}/{key} --tls-client-ca {o}/{} ...",
                pki::CA_CERT
            );
        }
        pki::Holder::Controller { .. } => {
            println!("\nThe controller's certificate names: {names}");
            println!(
                "If {o} is a running controller's --pki-dir, `systemctl reload ocp-controller` \
                 (SIGHUP) loads it. A new controller starts with:"
            );
            println!(
                "  ocp-controller --pki-dir {o} --tls-cert {o}/{cert} --tls-key {o}/{key} ..."
            );
            println!("its service user owning that folder: chown -R ocp:ocp {o}");
        }
        pki::Holder::Operator { .. } => {
            println!("\nThe operator's certificate names: {names}");
            println!(
                "Agents serve it their read-only methods ({}), e.g.:",
                trust::OPERATOR_METHODS.join(", ")
            );
            println!(
                "  grpcurl -cacert {o}/{} -cert {o}/{cert} -key {o}/{key} 10.0.0.5:62888 \
                 ocp.agent.v1.AgentService/ListProcesses",
                pki::CA_CERT
            );
        }
    }
}

fn report(written: &[pki::Written]) {
    for file in written {
        println!("wrote {}  ({})", file.path.display(), file.what);
    }
}

/// This machine's hostname and 127.0.0.1: enough for a controller and a client on
/// the same machine, and for a first try.
fn default_controller_hosts() -> Vec<String> {
    let mut hosts = Vec::new();
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() && name != "localhost" {
            hosts.push(name.to_string());
        }
    }
    hosts.push("127.0.0.1".to_string());
    hosts
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

/// Until SIGINT or SIGTERM; SIGHUP meanwhile re-reads certificates and keys.
async fn until_shutdown(controller: &Controller) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("waiting for SIGINT"),
            _ = term.recv() => return Ok(()),
            // Apart from this loop: a file on a hung mount must not hold up a shutdown.
            _ = hup.recv() => {
                let reloader = controller.tls_reloader();
                tokio::spawn(async move {
                    match reloader.reload().await {
                        Ok(reloaded) if reloaded == Reloaded::default() => {
                            tracing::info!("SIGHUP: no TLS configured, nothing to reload");
                        }
                        Ok(reloaded) => tracing::info!(
                            agents = reloaded.agent_tls,
                            faces = reloaded.faces_tls,
                            "SIGHUP: certificates and keys reloaded; new connections use them"
                        ),
                        Err(e) => tracing::warn!("SIGHUP: {e}; the certificates in use stay"),
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_or_the_bootstrap_admin_needs_a_data_dir() {
        let pg = "postgres://postgres@127.0.0.1:5432/ocp";
        assert!(!uses_data_dir(pg, true));
        assert!(!uses_data_dir("postgresql://db/ocp", true));
        assert!(uses_data_dir(pg, false), "the admin's password lives there");
        assert!(uses_data_dir("sqlite:///var/lib/ocp/controller.db", true));
        assert!(uses_data_dir(&Store::sqlite_url(Path::new("d")), true));
    }
}
