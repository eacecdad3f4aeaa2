//! The real `ocp-controller` binary, started as an operator would (a data dir, REST and
//! gRPC on free ports, the admin password it writes on first start), for tests that
//! must see what a client over the wire sees, down to its CPU time.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use controller::auth::BasicAuth;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::fleet::{WAIT, free_port};

pub struct SpawnedController {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: tempfile::TempDir,
    pub password: String,
    extra: Vec<String>,
    filter: String,
}

impl SpawnedController {
    /// Starts the binary with `extra` arguments and waits until REST answers.
    pub async fn start(extra: &[&str]) -> SpawnedController {
        SpawnedController::start_logging(extra, "warn").await
    }

    /// Likewise, logging what `filter` (a `RUST_LOG` value) lets through.
    pub async fn start_logging(extra: &[&str], filter: &str) -> SpawnedController {
        let dir = tempfile::tempdir().expect("tempdir");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = spawn(&dir, http, grpc, &extra, filter);
        let mut controller = SpawnedController {
            child,
            http,
            grpc,
            dir,
            password: String::new(),
            extra,
            filter: filter.to_string(),
        };
        controller.wait_serving().await;
        controller
    }

    /// SIGKILL, as a crash would, then the binary again on the same data and addresses.
    pub async fn crash_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL the controller");
        self.child.wait().expect("reap it");
        self.child = spawn(&self.dir, self.http, self.grpc, &self.extra, &self.filter);
        self.wait_serving().await;
    }

    async fn wait_serving(&mut self) {
        let controller = self;
        let password_file = controller.dir.path().join("data/admin-password");
        // With a users file there is no bootstrap admin, nor its password to wait for.
        let users_file = controller.extra.iter().any(|a| a == "--users");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let password = std::fs::read_to_string(&password_file);
            if users_file || password.is_ok() {
                controller.password = password.unwrap_or_default().trim().to_string();
                let answered = client
                    .get(controller.url("/api/v2/openapi.json"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    return;
                }
            }
            if let Ok(Some(status)) = controller.child.try_wait() {
                panic!("controller exited with {status}:\n{}", controller.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller never served REST:\n{}",
                controller.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub fn auth(&self) -> BasicAuth {
        BasicAuth::new("admin", &self.password).expect("credentials")
    }

    pub async fn hosts_client(
        &self,
    ) -> HostAgentServiceClient<InterceptedService<Channel, BasicAuth>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the controller's gRPC");
        HostAgentServiceClient::with_interceptor(channel, self.auth())
    }

    /// CPU time the controller has used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        let per_second = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(1)
            .max(1) as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// SIGTERM, and waits for the controller to finish shutting down.
    pub fn stop(mut self) -> String {
        // A pid this test spawned and has not reaped.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + WAIT;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "controller did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

fn spawn(
    dir: &tempfile::TempDir,
    http: SocketAddr,
    grpc: SocketAddr,
    extra: &[String],
    filter: &str,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("controller.log"))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .args(["--http-addr", &http.to_string()])
        .args(["--grpc-addr", &grpc.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(extra)
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn ocp-controller")
}

impl Drop for SpawnedController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
