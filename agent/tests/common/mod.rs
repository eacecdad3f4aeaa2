//! Helpers for the agent's integration tests: a real `ocp-agent` binary with real
//! `ocp-demo-proc` children, checked over gRPC and against `/proc`.

#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{ListProcessesRequest, ProcessInfo, ProcessRequest};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

pub const AGENT: &str = env!("CARGO_BIN_EXE_ocp-agent");
pub const DEMO: &str = env!("CARGO_BIN_EXE_ocp-demo-proc");

/// Generous, so a slow machine does not fail a test; conditions are polled, so a
/// fast one does not wait for it.
pub const WAIT: Duration = Duration::from_secs(20);

pub type Client = AgentServiceClient<Channel>;

/// A `[[process]]` running ocp-demo-proc with `args`, plus extra TOML lines.
pub fn demo_process(alias: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[process]]\nalias = {alias:?}\ncommand = {DEMO:?}\nargs = [{}]\nlog_file = \"log/{alias}.log\"\n{extra}\n",
        args.join(", ")
    )
}

/// A temp dir holding `agent.toml` and the data dir.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(config: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agent.toml"), config).expect("write config");
        Setup { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Makes the `log/` folder [`demo_process`] logs to `user`'s, and lets it pass
    /// through the temp dir (root's, 0700) to reach it: a process opens its log with
    /// its own user's rights.
    pub fn give_log_folder(&self, user: &nix::unistd::User) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod the temp dir");
        let logs = self.dir.path().join("log");
        std::fs::create_dir_all(&logs).expect("log folder");
        std::os::unix::fs::chown(&logs, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .expect("chown the log folder");
        logs
    }

    /// Starts the binary and waits until it serves.
    pub async fn start(&self) -> RunningAgent {
        self.start_with(|_| {}).await
    }

    /// As `start`, with `adjust` applied to the command first.
    pub async fn start_with(&self, adjust: impl FnOnce(&mut Command)) -> RunningAgent {
        let mut agent = self.spawn_with(adjust);
        let addr = agent.wait_addr().await;
        let client = connect(addr).await;
        RunningAgent {
            agent,
            client,
            addr,
        }
    }

    /// Runs the agent on what this setup holds, which it must refuse at start; its one
    /// line of stderr.
    pub async fn refusal(&self) -> String {
        let mut agent = self.spawn();
        let status = agent.wait_exit().await;
        assert!(!status.success(), "{status}");
        let lines = agent.stderr();
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        lines[0].clone()
    }

    pub fn spawn(&self) -> AgentProcess {
        self.spawn_with(|_| {})
    }

    /// As `spawn`, with `adjust` applied to the command first.
    pub fn spawn_with(&self, adjust: impl FnOnce(&mut Command)) -> AgentProcess {
        let mut command = Command::new(AGENT);
        command
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(self.config())
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("spawn ocp-agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            })
        });
        AgentProcess {
            child,
            lines,
            reader,
        }
    }
}

pub struct AgentProcess {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AgentProcess {
    pub fn stderr(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    async fn wait_addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.stderr().iter().find_map(|l| {
                let rest = l.split("addr=").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ocp-agent exited with {status}: {:?}", self.stderr());
            }
            assert!(Instant::now() < deadline, "ocp-agent did not start serving");
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the exit and for everything the agent wrote to stderr.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                while self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
                    assert!(Instant::now() < deadline, "stderr never closed");
                    sleep(Duration::from_millis(5)).await;
                }
                return status;
            }
            assert!(Instant::now() < deadline, "ocp-agent did not exit");
            sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        test_support::procs::signal(self.child.id(), signal);
    }
}

impl Drop for AgentProcess {
    /// A failing test still stops its agent and, through it, its children.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + WAIT;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
    }
}

pub struct RunningAgent {
    pub agent: AgentProcess,
    pub client: Client,
    pub addr: SocketAddr,
}

pub async fn connect(addr: SocketAddr) -> Client {
    AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to ocp-agent")
}

pub fn request(alias: &str) -> ProcessRequest {
    ProcessRequest {
        alias: alias.to_string(),
        timeout_ms: 0,
    }
}

pub async fn list(client: &mut Client) -> Vec<ProcessInfo> {
    client
        .list_processes(ListProcessesRequest {})
        .await
        .expect("ListProcesses")
        .into_inner()
        .processes
}

pub async fn get(client: &mut Client, alias: &str) -> ProcessInfo {
    list(client)
        .await
        .into_iter()
        .find(|p| p.alias == alias)
        .expect("alias listed")
}

/// Polls ListProcesses until `cond` holds for `alias`; panics after [`WAIT`].
pub async fn wait_for(
    client: &mut Client,
    alias: &str,
    what: &str,
    cond: impl Fn(&ProcessInfo) -> bool,
) -> ProcessInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = get(client, alias).await;
        if cond(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{alias} never got {what}: {info:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_running(client: &mut Client, alias: &str) -> ProcessInfo {
    use proto::agent::v1::ProcessState;
    wait_for(client, alias, "RUNNING", |p| {
        p.state == ProcessState::Running as i32 && p.pid > 0
    })
    .await
}

/// Polls a condition on the OS until it holds; false after [`WAIT`].
pub async fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        sleep(Duration::from_millis(10)).await;
    }
    cond()
}

pub use test_support::free_port;
pub use test_support::procs::{alive, group_members, tagged, unique_tag};
