//! The real `ocp-agent` binary as a child process of the test, for faults an agent
//! inside the test process cannot suffer: SIGKILL in the middle of a call, and running
//! in another network namespace (`ip netns exec`, given as a command prefix).

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{GetAgentInfoRequest, ListProcessesRequest, ProcessInfo, ProcessStatus};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::fleet::{WAIT, pid_alive, workspace_bin};

/// One `ocp-agent` process with its own config, data dir and log, all in a temp dir
/// that outlives restarts: a restarted agent finds what the killed one left.
pub struct ProcAgent {
    pub addr: SocketAddr,
    /// Unique to this agent: its processes carry `--tag <tag>-<alias>`, so a test can
    /// find every copy of them in `/proc`, including leftovers of a killed run.
    pub tag: String,
    prefix: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: Option<AgentTls>,
    /// Further environment of every run.
    env: Vec<(String, String)>,
    /// How many runs logged before the current one (every run appends to one log).
    spawned_before: usize,
}

/// What an agent serves TLS with, and how the test, as the controller, talks to it.
pub struct AgentTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// Holds the controller's certificate. `None` for an agent whose certificate the
    /// controller is meant to refuse: it counts as ready once it says it serves.
    pub client: Option<trust::ClientTls>,
}

impl AgentTls {
    /// Serving what `pki issue` wrote into `dir`: the agent's certificate, its key and
    /// the CA's certificate.
    pub fn issued_in(dir: &Path, client: Option<trust::ClientTls>) -> AgentTls {
        AgentTls {
            cert: dir.join(trust::pki::AGENT_CERT),
            key: dir.join(trust::pki::AGENT_KEY),
            client_ca: dir.join(trust::pki::CA_CERT),
            client,
        }
    }
}

/// A `[[process]]` "listener": the demo process listening on `ip` at a free port,
/// tagged `<tag>-listener`, started once the port listens; `extra` lines join its table.
pub fn listener_process(tag: &str, ip: &str, extra: &str) -> String {
    let demo = workspace_bin("ocp-demo-proc");
    let port = super::fleet::free_port();
    format!(
        r#"[[process]]
alias = "listener"
command = {demo:?}
args = ["--listen", "{ip}:{port}", "--tag", "{tag}-listener"]
ports = [{port}]
stop_timeout = "5s"
min_live = "0s"
{extra}"#
    )
}

/// A tag no other test or run shares.
pub fn unique_tag() -> String {
    format!("ft{}x{:08x}", std::process::id(), rand::random::<u32>())
}

impl ProcAgent {
    /// Writes the config (`[agent]` plus the `[[process]]` tables given, which should
    /// use `tag`), starts the agent on `listen` behind `prefix` (empty, or e.g.
    /// `ip netns exec NS`), and waits until it answers.
    pub async fn start(listen: SocketAddr, prefix: &[&str], tag: String, processes: &str) -> Self {
        Self::start_with(listen, prefix, tag, processes, None, &[]).await
    }

    /// As `start`, serving mutual TLS.
    pub async fn start_tls(
        listen: SocketAddr,
        tag: String,
        processes: &str,
        tls: AgentTls,
    ) -> Self {
        Self::start_with(listen, &[], tag, processes, Some(tls), &[]).await
    }

    /// As `start`, with further environment variables (`RUST_LOG`, the flags' `OCP_AGENT_*`).
    pub async fn start_with_env(
        listen: SocketAddr,
        tag: String,
        processes: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with(listen, &[], tag, processes, None, env).await
    }

    /// As `start_tls`, with further environment variables (the flags' `OCP_AGENT_*`).
    pub async fn start_tls_with_env(
        listen: SocketAddr,
        tag: String,
        processes: &str,
        tls: AgentTls,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with(listen, &[], tag, processes, Some(tls), env).await
    }

    async fn start_with(
        listen: SocketAddr,
        prefix: &[&str],
        tag: String,
        processes: &str,
        tls: Option<AgentTls>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!("[agent]\nversion = \"4.2.1-test\"\n\n{processes}");
        std::fs::write(dir.path().join("agent.toml"), config).expect("write agent config");
        let mut agent = ProcAgent {
            addr: listen,
            tag,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            tls,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            spawned_before: 0,
        };
        agent.spawn().await;
        agent
    }

    /// Its `--data-dir`, the same across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The agent's own log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the binary on the same address and data dir, and waits until it answers.
    /// Every run appends to the same log.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.spawned_before = std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches("serving over TLS")
            .count();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open agent log");
        let bin = workspace_bin("ocp-agent");
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            // The agent's default; a test may ask for more in its environment.
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if self.tls.is_none() && !self.addr.ip().is_loopback() {
            // An address of the test's own network namespace, reached by nobody else.
            command.arg("--insecure-plaintext");
        }
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--tls-client-ca")
                .arg(&tls.client_ca);
        }
        self.child = Some(command.spawn().expect("spawn ocp-agent"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll agent"))
            {
                panic!(
                    "ocp-agent on {} exited with {status}:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            if self.info_within(Duration::from_secs(1)).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ocp-agent on {} did not answer in {WAIT:?}:\n{}",
                self.addr,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn info_within(&self, limit: Duration) -> bool {
        if matches!(&self.tls, Some(AgentTls { client: None, .. })) {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            return log.matches("serving over TLS").count() > self.spawned_before;
        }
        let call = async {
            let mut client = self.client().await.ok()?;
            client.get_agent_info(GetAgentInfoRequest {}).await.ok()
        };
        matches!(tokio::time::timeout(limit, call).await, Ok(Some(_)))
    }

    /// A client on a new connection: plaintext, or TLS as the controller.
    pub async fn client(&self) -> Result<AgentServiceClient<Channel>, tonic::transport::Error> {
        let channel = match &self.tls {
            None => {
                Endpoint::from_shared(format!("http://{}", self.addr))?
                    .connect()
                    .await?
            }
            Some(tls) => {
                let connector = tls
                    .client
                    .as_ref()
                    .expect("this agent's certificate cannot be verified")
                    .connector(&self.addr.ip().to_string())
                    .expect("agent address as a TLS name");
                Endpoint::from_shared(format!("https://{}", self.addr))?
                    .connect_with_connector(connector)
                    .await?
            }
        };
        Ok(AgentServiceClient::new(channel))
    }

    /// SIGKILL, as a crash or the OOM killer would: no shutdown of its processes, no
    /// chance to tidy its data dir.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL ocp-agent");
            child.wait().expect("reap ocp-agent");
        }
    }

    /// The pid and status of the process `listener_process` configures.
    pub async fn listener(&self) -> (u32, ProcessStatus) {
        let processes = self.processes().await;
        let listener = processes
            .iter()
            .find(|p| p.alias == "listener")
            .expect("a listener process");
        (listener.pid, listener.status())
    }

    /// The listener's pid once it runs: an agent answers before its processes are up.
    pub async fn started_listener(&self) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            let (pid, status) = self.listener().await;
            if pid != 0 && status == ProcessStatus::Started {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "the listener never ran ({status:?}):\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn processes(&self) -> Vec<ProcessInfo> {
        self.client()
            .await
            .expect("connect to agent")
            .list_processes(ListProcessesRequest {})
            .await
            .expect("list processes")
            .into_inner()
            .processes
    }

    /// Live processes (zombies excluded) whose command line holds `<tag>-<alias>`.
    pub fn live_copies(&self, alias: &str) -> Vec<u32> {
        live_with_arg(&format!("{}-{alias}", self.tag))
    }

    /// SIGTERM and a bounded wait (the agent stops its processes on SIGTERM), then
    /// SIGKILL; then SIGKILL to anything with its tag still alive, so that a failed
    /// test leaves nothing running.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // A child this value owns and has not reaped.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in live_with_arg(&self.tag) {
            if let Ok(pid) = i32::try_from(pid) {
                // A pid whose command line carries this agent's tag.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for ProcAgent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Pids of live processes with an argument containing `needle`.
pub fn live_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| cmdline_has(&Path::new("/proc").join(pid.to_string()), needle))
        .filter(|&pid| pid_alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

fn cmdline_has(proc_dir: &Path, needle: &str) -> bool {
    std::fs::read(proc_dir.join("cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .any(|arg| String::from_utf8_lossy(arg).contains(needle))
        })
        .unwrap_or(false)
}
