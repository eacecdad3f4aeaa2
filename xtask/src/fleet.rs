//! A controller and agents run as separate processes of the real binaries, exactly as
//! an operator would start them, each logging to a file under the fleet's directory,
//! in plaintext or with the fleet's own CA (mutual TLS), and the way in for clients;
//! further controllers may join the first one on a shared store.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::controller::{Launch, Launched, NotServing};

use crate::rest::{Rest, RestError};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{0} is already in use: is another demo or controller running? Stop it (Ctrl-C in its terminal) and try again"
    )]
    AddressInUse(SocketAddr),
    #[error("{name} did not start within {secs}s; its log, {log}, says:\n{tail}")]
    NotReady {
        name: String,
        secs: u64,
        log: String,
        tail: String,
    },
    #[error("{name} exited at start-up ({status}); its log, {log}, says:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Pki {
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "the controller listens but does not answer over {transport}: {source}; its log, {log}, says:\n{tail}"
    )]
    Unanswered {
        transport: &'static str,
        source: Box<RestError>,
        log: String,
        tail: String,
    },
    #[error(transparent)]
    Rest(#[from] Box<RestError>),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FleetError {
    let what = what.into();
    move |source| FleetError::Io { what, source }
}

/// Where everything of one fleet goes and which addresses it takes.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Data, configs and logs; created if missing.
    pub root: PathBuf,
    /// Where `ocp-controller`, `ocp-agent` and `ocp-demo-proc` are.
    pub bin_dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// One agent host per address.
    pub agent_ips: Vec<IpAddr>,
    /// The agent's port on every host; the demo processes take the next three.
    pub agent_port: u16,
    /// What every agent supervises.
    pub profile: AgentProfile,
    /// Extra flags of `ocp-controller`, e.g. heartbeat timings.
    pub controller_args: Vec<String>,
    pub transport: Transport,
}

/// How the fleet's processes talk, to each other and to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No TLS anywhere: allowed only because every agent listens on loopback.
    Plaintext,
    /// The fleet's own CA (`ocp-controller pki init`, one `pki issue` per agent): the
    /// controller dials every agent over mutual TLS, and serves REST as HTTPS and gRPC
    /// over TLS, as in production (docs/trust.md).
    MutualTls,
}

impl Transport {
    pub fn is_tls(self) -> bool {
        self == Transport::MutualTls
    }

    /// For messages and tables.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Plaintext => "plaintext",
            Transport::MutualTls => "mutual TLS",
        }
    }
}

/// The certificates of a TLS fleet, as `pki init` and `pki issue` wrote them; absolute
/// paths, so that printed commands work from any folder.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA's folder.
    pub dir: PathBuf,
    /// What every client verifies the controller and the agents against.
    pub ca: PathBuf,
    /// The controller's folder of the PKI: its `--pki-dir`.
    pub controller_dir: PathBuf,
    /// The controller's certificate: its faces serve it, and agents take every call
    /// from it.
    pub controller_cert: PathBuf,
    pub controller_key: PathBuf,
    /// An operator's certificate (`pki issue --role operator`): grpcurl calls an
    /// agent's read-only methods with it.
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
    /// How long the CA and every agent's certificate took to issue.
    pub issued_in: Duration,
}

impl Pki {
    /// Where `pki issue` put the certificate of the agent at `ip`.
    pub fn agent_dir(&self, ip: IpAddr) -> PathBuf {
        self.dir.join("agents").join(ip.to_string())
    }
}

/// The processes each agent of a fleet supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentProfile {
    /// Two basic processes (one the proxy) and a work process, each listening.
    Demo,
    /// The benchmark's host: a tiny listener and a sleeper, both basic, no proxy,
    /// `min_live = "0s"` so that a start is done as soon as the port listens.
    Bench,
}

/// The controller flags of the demo and the end-to-end test: heartbeats fast enough
/// that a stopped agent shows as OFFLINE within seconds.
pub fn demo_controller_args() -> Vec<String> {
    ["--heartbeat-interval", "2s", "--offline-grace", "6s"]
        .map(String::from)
        .to_vec()
}

/// How many agents start at once: enough to overlap their start-up, few enough that a
/// thousand of them do not stampede two cores.
const START_BATCH: usize = 64;

/// One host's agent: where it listens and what it supervises.
#[derive(Debug, Clone)]
pub struct AgentHost {
    pub ip: IpAddr,
    pub addr: SocketAddr,
    /// The basic process listening on a port, the proxy, and the work process.
    pub listener_port: u16,
    pub proxy_port: u16,
    pub worker_port: u16,
}

pub struct Fleet {
    pub spec: FleetSpec,
    pub hosts: Vec<AgentHost>,
    pub admin_password: String,
    /// Set in TLS mode.
    pub pki: Option<Pki>,
    controller: Option<Launched>,
    /// Controllers started by `add_controller`.
    more_controllers: Vec<Launched>,
    agents: Vec<Child>,
}

impl FleetSpec {
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }
}

impl Fleet {
    /// Starts the agents, then the controller, and waits until every one serves.
    /// What was started is stopped again if a later one fails.
    pub fn start(spec: FleetSpec) -> Result<Fleet, FleetError> {
        let hosts: Vec<AgentHost> = spec
            .agent_ips
            .iter()
            .map(|&ip| AgentHost {
                ip,
                addr: SocketAddr::new(ip, spec.agent_port),
                listener_port: spec.agent_port + 1,
                proxy_port: spec.agent_port + 2,
                worker_port: spec.agent_port + 3,
            })
            .collect();
        let listening = match spec.profile {
            AgentProfile::Demo => 3,
            AgentProfile::Bench => 2,
        };
        for addr in [spec.grpc, spec.http]
            .into_iter()
            .chain(hosts.iter().flat_map(|h| {
                [
                    h.addr,
                    SocketAddr::new(h.ip, h.listener_port),
                    SocketAddr::new(h.ip, h.proxy_port),
                ]
                .into_iter()
                .take(listening)
            }))
        {
            if std::net::TcpListener::bind(addr).is_err() {
                return Err(FleetError::AddressInUse(addr));
            }
        }
        fs::create_dir_all(spec.root.join("logs"))
            .map_err(io(format!("creating {}", spec.root.display())))?;
        let pki = match spec.transport {
            Transport::Plaintext => None,
            Transport::MutualTls => Some(issue_certificates(&spec, &hosts)?),
        };
        let mut fleet = Fleet {
            spec,
            hosts,
            admin_password: String::new(),
            pki,
            controller: None,
            more_controllers: Vec::new(),
            agents: Vec::new(),
        };
        let hosts = fleet.hosts.clone();
        for batch in hosts.chunks(START_BATCH) {
            let first = fleet.agents.len();
            for host in batch {
                let child = fleet.spawn_agent(host)?;
                fleet.agents.push(child);
            }
            for (i, host) in batch.iter().enumerate() {
                let name = format!("agent-{}", host.ip);
                wait_ready(
                    &name,
                    &fleet.spec.log(&name),
                    &mut fleet.agents[first + i],
                    host.addr,
                )?;
            }
        }
        let (grpc, http) = (fleet.spec.grpc, fleet.spec.http);
        let launched = fleet.spawn_controller("controller", grpc, http)?;
        let controller = fleet.controller.insert(launched);
        controller_ready("controller", controller)?;
        // A controller given its own users file has no bootstrap admin: whoever wrote
        // the file knows the passwords and sets `admin_password`.
        if !fleet.spec.controller_args.iter().any(|a| a == "--users") {
            let password_file = fleet.password_file();
            fleet.admin_password = fs::read_to_string(&password_file)
                .map_err(io(format!("reading {}", password_file.display())))?
                .trim()
                .to_string();
        }
        fleet.probe("controller", http)?;
        Ok(fleet)
    }

    /// Starts one more controller with the first one's flags (its store included, e.g.
    /// `--database-url`) on other addresses, and waits until it serves. It gets the
    /// first one's admin password, as controllers behind one load balancer share users.
    pub fn add_controller(&mut self, grpc: SocketAddr, http: SocketAddr) -> Result<(), FleetError> {
        for addr in [grpc, http] {
            if std::net::TcpListener::bind(addr).is_err() {
                return Err(FleetError::AddressInUse(addr));
            }
        }
        let name = format!("controller-{}", self.more_controllers.len() + 2);
        let dir = self.spec.root.join(&name);
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let password_file = dir.join("admin-password");
        fs::write(&password_file, &self.admin_password)
            .map_err(io(format!("writing {}", password_file.display())))?;
        let mut launched = self.spawn_controller(&name, grpc, http)?;
        controller_ready(&name, &mut launched)?;
        self.more_controllers.push(launched);
        self.probe(&name, http)
    }

    /// A listening port is not yet a served face: one real request, over TLS in TLS
    /// mode, so that a certificate problem shows here with the controller's log.
    fn probe(&self, name: &str, http: SocketAddr) -> Result<(), FleetError> {
        let probe = self.rest_at(http).map_err(Box::new)?;
        if let Err(e) = probe.call("GET", "/api/v2/openapi.json", None) {
            let log = self.spec.log(name);
            return Err(FleetError::Unanswered {
                transport: if self.spec.transport.is_tls() {
                    "HTTPS"
                } else {
                    "HTTP"
                },
                source: Box::new(e),
                tail: tail(&log),
                log: log.display().to_string(),
            });
        }
        Ok(())
    }

    /// `https://...` in TLS mode, `http://...` otherwise.
    pub fn rest_base(&self) -> String {
        self.base_at(self.spec.http)
    }

    fn base_at(&self, http: SocketAddr) -> String {
        let scheme = if self.spec.transport.is_tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{http}")
    }

    /// Registers every host with the controller; their ids, in host order.
    pub fn register_hosts(&self, rest: &Rest) -> Result<Vec<i64>, RestError> {
        const PATH: &str = "/api/v2/compute/hosts";
        self.hosts
            .iter()
            .map(|h| {
                let host = rest.post(
                    PATH,
                    serde_json::json!({"innerIpAddress": h.ip.to_string(), "agentPort": h.addr.port()}),
                )?;
                host["id"].as_i64().ok_or_else(|| RestError::Unreadable {
                    method: "POST",
                    path: PATH.to_string(),
                    reason: format!("no host id in {host}"),
                })
            })
            .collect()
    }

    /// The REST gateway as user admin, trusting the fleet's CA in TLS mode.
    pub fn rest(&self) -> Result<Rest, RestError> {
        self.rest_at(self.spec.http)
    }

    /// The REST gateway of any of the fleet's controllers, by its address.
    pub fn rest_at(&self, http: SocketAddr) -> Result<Rest, RestError> {
        Rest::with_ca(
            &self.base_at(http),
            "admin",
            &self.admin_password,
            self.pki.as_ref().map(|p| p.ca.as_path()),
        )
    }

    /// The controller's pid, for reading its CPU time and memory from /proc.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Launched::pid)
    }

    /// Every controller's pid, the first one first.
    pub fn controller_pids(&self) -> Vec<u32> {
        self.controller
            .iter()
            .map(Launched::pid)
            .chain(self.more_controllers.iter().map(Launched::pid))
            .collect()
    }

    /// The agents' pids, in host order.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().map(Child::id).collect()
    }

    pub fn password_file(&self) -> PathBuf {
        self.spec.root.join("controller").join("admin-password")
    }

    fn spawn_agent(&self, host: &AgentHost) -> Result<Child, FleetError> {
        let name = format!("agent-{}", host.ip);
        let dir = self.spec.root.join(&name);
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let config = match self.spec.profile {
            AgentProfile::Demo => self.demo_config(host, &dir),
            AgentProfile::Bench => self.bench_config(host, &dir),
        };
        let config_path = dir.join("agent.toml");
        fs::write(&config_path, config)
            .map_err(io(format!("writing {}", config_path.display())))?;
        let mut command = Command::new(self.spec.binary("ocp-agent"));
        command
            .arg("--listen")
            .arg(host.addr.to_string())
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"));
        if let Some(pki) = &self.pki {
            let certs = pki.agent_dir(host.ip);
            command
                .arg("--tls-cert")
                .arg(certs.join("agent.pem"))
                .arg("--tls-key")
                .arg(certs.join("agent-key.pem"))
                .arg("--tls-client-ca")
                .arg(certs.join("ca.pem"));
        }
        spawn_logged(&mut command, &self.spec.log(&name))
    }

    fn bench_config(&self, host: &AgentHost, dir: &Path) -> String {
        let demo = self.spec.binary("ocp-demo-proc");
        format!(
            r#"# A benchmark host: a tiny listener and a sleeper, both basic.
[agent]
version = "bench"
install_home = "{home}"
log_home = "{home}"

[[process]]
alias = "listener"
command = {demo:?}
args = ["--listen", "{ip}:{port}"]
ports = [{port}]
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "sleeper"
command = {demo:?}
args = ["--sleep"]
stop_timeout = "5s"
min_live = "0s"
"#,
            home = dir.display(),
            ip = host.ip,
            port = host.listener_port,
        )
    }

    fn demo_config(&self, host: &AgentHost, dir: &Path) -> String {
        let demo = self.spec.binary("ocp-demo-proc");
        let ip = host.ip;
        format!(
            r#"# A demo host: two basic processes (one of them the proxy) and a work process.
[agent]
version = "4.2.1-demo"
install_home = "{home}"
log_home = "{home}/log"

[[process]]
alias = "ocp_monagent"
command = {demo:?}
args = ["--listen", "{ip}:{listener}"]
ports = [{listener}]
log_file = "log/ocp_monagent.log"
stop_timeout = "5s"
min_live = "200ms"

[[process]]
alias = "pos_proxy"
command = {demo:?}
args = ["--listen", "{ip}:{proxy}"]
ports = [{proxy}]
proxy = true
log_file = "log/pos_proxy.log"
stop_timeout = "5s"
min_live = "200ms"

[[process]]
alias = "ob_cleaner"
command = {demo:?}
args = ["--listen", "{ip}:{worker}"]
ports = [{worker}]
kind = "work"
log_file = "log/ob_cleaner.log"
min_live = "200ms"
"#,
            home = dir.display(),
            listener = host.listener_port,
            proxy = host.proxy_port,
            worker = host.worker_port,
        )
    }

    /// `OCP_CONTROLLER_WRAPPER` runs the controller under a profiler, e.g. `env
    /// LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT=F`.
    /// The wrapper must exec the controller (as `env` does): `stop` signals the pid it
    /// started, and the `heaptrack` script would neither pass SIGTERM on nor be the
    /// process whose memory is measured.
    fn spawn_controller(
        &self,
        name: &str,
        grpc: SocketAddr,
        http: SocketAddr,
    ) -> Result<Launched, FleetError> {
        let log = self.spec.log(name);
        fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let wrapper = std::env::var("OCP_CONTROLLER_WRAPPER").unwrap_or_default();
        let mut launch = Launch::new(
            self.spec.binary("ocp-controller"),
            &self.spec.root.join(name),
            &log,
        )
        .at(http, grpc)
        .wrapped(&wrapper)
        .args(&self.spec.controller_args)
        .log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()));
        if let Some(pki) = &self.pki {
            launch = launch
                .arg("--pki-dir")
                .arg(&pki.controller_dir)
                .arg("--tls-cert")
                .arg(&pki.controller_cert)
                .arg("--tls-key")
                .arg(&pki.controller_key);
        }
        launch.spawn().map_err(io(format!(
            "starting {}",
            self.spec.binary("ocp-controller").display()
        )))
    }

    /// SIGTERM to every process, the controllers first, then a bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
        let mut controllers: Vec<Launched> = self.controller.take().into_iter().collect();
        controllers.append(&mut self.more_controllers);
        let agents = std::mem::take(&mut self.agents);
        for controller in &controllers {
            controller.terminate();
        }
        for child in &agents {
            terminate(child);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for mut controller in controllers {
            controller.stop_within(deadline.saturating_duration_since(Instant::now()));
        }
        for mut child in agents {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many `pki issue` run at once: each is mostly process start-up and fsync.
const ISSUE_BATCH: usize = 16;

/// `ocp-controller pki init` for the controller (127.0.0.1, where every client reaches
/// it), one `pki issue` per agent, named by its address as the controller will
/// register it, and one for an operator: the commands an operator runs, so the fleet
/// also tests them.
fn issue_certificates(spec: &FleetSpec, hosts: &[AgentHost]) -> Result<Pki, FleetError> {
    let started = Instant::now();
    let root = if spec.root.is_absolute() {
        spec.root.clone()
    } else {
        std::env::current_dir()
            .map_err(io("reading the current folder"))?
            .join(&spec.root)
    };
    let dir = root.join("pki");
    let controller = spec.binary("ocp-controller");
    let pki_command = |args: &[&std::ffi::OsStr]| {
        let mut command = Command::new(&controller);
        command.arg("pki").args(args).arg("--force");
        command
    };
    run_pki(pki_command(&[
        "init".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
    ]))?;
    for batch in hosts.chunks(ISSUE_BATCH) {
        let running = batch
            .iter()
            .map(|host| {
                let ip = host.ip.to_string();
                let out = dir.join("agents").join(&ip);
                let mut command = pki_command(&[
                    "issue".as_ref(),
                    "--dir".as_ref(),
                    dir.as_os_str(),
                    "--host".as_ref(),
                    ip.as_ref(),
                    "--out".as_ref(),
                    out.as_os_str(),
                ]);
                let shown = show(&command);
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map(|child| (shown, child))
                    .map_err(io(format!("starting {}", controller.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (shown, child) in running {
            let output = child
                .wait_with_output()
                .map_err(io(format!("waiting for `{shown}`")))?;
            check_pki(shown, output)?;
        }
    }
    let operator = dir.join("operator");
    run_pki(pki_command(&[
        "issue".as_ref(),
        "--role".as_ref(),
        "operator".as_ref(),
        "--name".as_ref(),
        "demo".as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
        "--out".as_ref(),
        operator.as_os_str(),
    ]))?;
    let controller_dir = dir.join("controller");
    Ok(Pki {
        ca: dir.join("ca.pem"),
        controller_cert: controller_dir.join("controller.pem"),
        controller_key: controller_dir.join("controller-key.pem"),
        controller_dir,
        operator_cert: operator.join("operator.pem"),
        operator_key: operator.join("operator-key.pem"),
        dir,
        issued_in: started.elapsed(),
    })
}

fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_pki(mut command: Command) -> Result<(), FleetError> {
    let shown = show(&command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running `{shown}`")))?;
    check_pki(shown, output)
}

fn check_pki(command: String, output: std::process::Output) -> Result<(), FleetError> {
    if output.status.success() {
        return Ok(());
    }
    Err(FleetError::Pki {
        command,
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // A child we spawned and have not reaped.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Starts `command` with stdout and stderr in `log`, at RUST_LOG's level (info unless
/// set): what a process said before it failed to come up is there to read.
pub(crate) fn spawn_logged(command: &mut Command, log: &Path) -> Result<Child, FleetError> {
    let file = fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(io(format!("opening {}", log.display())))?;
    command
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(io(format!("starting {:?}", command.get_program())))
}

fn wait_ready(
    name: &str,
    log: &Path,
    child: &mut Child,
    addr: SocketAddr,
) -> Result<(), FleetError> {
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(FleetError::Exited {
                name: name.to_string(),
                status: status.to_string(),
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(FleetError::NotReady {
                name: name.to_string(),
                secs: limit.as_secs(),
                log: log.display().to_string(),
                tail: tail(log),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a controller listens on both faces; what its log says if it does not.
fn controller_ready(name: &str, controller: &mut Launched) -> Result<(), FleetError> {
    let limit = Duration::from_secs(30);
    let log = controller.launch().log.clone();
    match controller.wait_listening(limit) {
        Ok(()) => Ok(()),
        Err(NotServing::Exited(status)) => Err(FleetError::Exited {
            name: name.to_string(),
            status: status.to_string(),
            log: log.display().to_string(),
            tail: tail(&log),
        }),
        Err(NotServing::TimedOut(limit)) => {
            controller.kill();
            Err(FleetError::NotReady {
                name: name.to_string(),
                secs: limit.as_secs(),
                log: log.display().to_string(),
                tail: tail(&log),
            })
        }
    }
}

/// The last lines of a log, for an error message.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
