//! Scenario 8: does a busy agent still answer? GetAgentInfo is called in a tight loop
//! on one connection while StartAll starts 50 processes on another, each of which
//! binds its readiness port only after a short start-up delay, so that the agent
//! polls ports for all 50 at once. The agent runs one runtime thread: whatever
//! blocks it (a /proc walk, a netlink dump, an fsync) shows up here as latency.
//!
//! The agent binary can be any build (`--agent-bin`), so that the same measurement
//! compares an agent before and after a change.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{BulkRequest, GetAgentInfoRequest};
use serde::Serialize;
use tonic::transport::Channel;

use super::report::Latency;
use super::{BenchError, io, sys};
use crate::dial::Dialer;
use crate::fleet::spawn_logged;

pub const PROCESSES: usize = 50;
/// Each process binds its port this long after it was spawned.
const STARTUP_DELAY_MS: u64 = 100;
const ROUNDS: usize = 3;
/// GetAgentInfo calls on an agent with nothing to do, for comparison.
const IDLE_CALLS: usize = 2000;
/// The goal: a GetAgentInfo is never held up by more than a few milliseconds of work.
pub const GOAL_P99_MS: f64 = 5.0;

#[derive(Debug, Clone, Serialize)]
pub struct AgentLatencyRun {
    pub agent_bin: String,
    pub processes: usize,
    pub rounds: usize,
    /// GetAgentInfo while StartAll ran, over every round.
    pub during_start: Latency,
    /// GetAgentInfo with every process running and nothing asked of the agent.
    pub idle: Latency,
    /// Each round's StartAll, from the call to its answer.
    pub start_all_ms: Vec<f64>,
    /// The agent's RSS with its processes running, before the rounds.
    pub agent_rss_mb: f64,
}

/// Kills the agent on every way out, so that its port and its processes' are free for
/// the next run; a SIGTERM first, so that it stops its processes.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // Our own child, not yet reaped.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn measure(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    agent_bin: &Path,
    demo: &Path,
) -> Result<AgentLatencyRun, BenchError> {
    // Fixed ports would sit in the ephemeral range, where any client connection of an
    // earlier scenario may hold one (CI once found 47612 taken).
    let mut ports: Vec<u16> = (0..=PROCESSES).map(|_| test_support::free_port()).collect();
    let agent_port = ports.pop().unwrap_or_default();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let config = dir.join("agent.toml");
    fs::write(&config, config_text(dir, demo, &ports))
        .map_err(io(format!("writing {}", config.display())))?;
    let log = dir.join("agent.log");
    let addr = SocketAddr::from(([127, 0, 0, 1], agent_port));
    let child = spawn_logged(
        Command::new(agent_bin)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data")),
        &log,
    )?;
    let mut agent = AgentProcess(child);
    wait_serving(&mut agent.0, addr, &log)?;
    let pid = agent.0.id();

    rt.block_on(async {
        let dialer = Dialer::agents(None).await?;
        // Two connections: the calls measured must not queue behind StartAll's stream.
        let mut control = AgentServiceClient::new(dialer.connect(addr).await?);
        let info = AgentServiceClient::new(dialer.connect(addr).await?);
        // The processes start with the agent; StartAll answers once they all run.
        start_all(&mut control).await?;
        let agent_rss_mb = sys::memory(pid).rss_mb;
        let mut idle = Vec::with_capacity(IDLE_CALLS);
        let mut client = info.clone();
        for _ in 0..IDLE_CALLS {
            idle.push(agent_info(&mut client).await?);
        }
        let mut during = Vec::new();
        let mut start_all_ms = Vec::new();
        for _ in 0..ROUNDS {
            control
                .stop_all(BulkRequest { timeout_ms: 60_000 })
                .await
                .map_err(grpc("StopAll"))?;
            let done = Arc::new(AtomicBool::new(false));
            let sampler = tokio::spawn(sample_until(info.clone(), done.clone()));
            let started = Instant::now();
            let outcome = start_all(&mut control).await;
            start_all_ms.push(started.elapsed().as_secs_f64() * 1e3);
            done.store(true, Ordering::Relaxed);
            let samples = sampler
                .await
                .map_err(|e| BenchError::Failed(format!("the GetAgentInfo loop: {e}")))??;
            outcome?;
            during.extend(samples);
        }
        Ok(AgentLatencyRun {
            agent_bin: agent_bin.display().to_string(),
            processes: PROCESSES,
            rounds: ROUNDS,
            during_start: Latency::of(
                &format!("GetAgentInfo while {PROCESSES} processes start"),
                during,
            ),
            idle: Latency::of("GetAgentInfo, agent idle", idle),
            start_all_ms,
            agent_rss_mb,
        })
    })
}

fn config_text(dir: &Path, demo: &Path, ports: &[u16]) -> String {
    let mut text = format!(
        "# {PROCESSES} basic processes, each ready once its port listens, {STARTUP_DELAY_MS} ms after its start.\n[agent]\nversion = \"bench\"\ninstall_home = {home:?}\nlog_home = {home:?}\n",
        home = dir.display().to_string()
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "\n[[process]]\nalias = \"p{i:02}\"\ncommand = {demo:?}\nargs = [\"--listen\", \"127.0.0.1:{port}\", \"--startup-delay\", \"{STARTUP_DELAY_MS}\"]\nports = [{port}]\nmin_live = \"0s\"\nstop_timeout = \"5s\"\n",
            demo = demo.display().to_string(),
        ));
    }
    text
}

fn wait_serving(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::Failed(format!(
                "the agent exited ({status}); its log: {}\n{}",
                log.display(),
                crate::fleet::tail(log)
            )));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "the agent does not serve on {addr} after 30 s; its log: {}",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn grpc(what: &'static str) -> impl FnOnce(tonic::Status) -> BenchError {
    move |status| BenchError::Grpc {
        what: what.to_string(),
        status: Box::new(status),
    }
}

async fn start_all(client: &mut AgentServiceClient<Channel>) -> Result<(), BenchError> {
    let response = client
        .start_all(BulkRequest { timeout_ms: 60_000 })
        .await
        .map_err(grpc("StartAll"))?
        .into_inner();
    match response.failures.first() {
        None => Ok(()),
        Some(f) => Err(BenchError::Failed(format!(
            "StartAll: {} of {PROCESSES} did not start, e.g. {}: {}",
            response.failures.len(),
            f.alias,
            f.reason
        ))),
    }
}

async fn agent_info(client: &mut AgentServiceClient<Channel>) -> Result<Duration, BenchError> {
    let sent = Instant::now();
    client
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .map_err(grpc("GetAgentInfo"))?;
    Ok(sent.elapsed())
}

async fn sample_until(
    mut client: AgentServiceClient<Channel>,
    done: Arc<AtomicBool>,
) -> Result<Vec<Duration>, BenchError> {
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        samples.push(agent_info(&mut client).await?);
    }
    Ok(samples)
}

/// The agent binary: `--agent-bin`, else the one just built.
pub fn agent_bin(given: Option<&PathBuf>, bin_dir: &Path) -> PathBuf {
    given.cloned().unwrap_or_else(|| bin_dir.join("ocp-agent"))
}
