//! The real `ocp-controller` binary, started as an operator would (a data dir, REST and
//! gRPC on free ports, the admin password it writes on first start), for tests that
//! must see what a client over the wire sees, down to its CPU time.

use std::net::SocketAddr;
use std::time::Duration;

use controller::auth::BasicAuth;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use test_support::controller::{Launch, Launched};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct SpawnedController {
    launched: Launched,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: tempfile::TempDir,
    pub password: String,
}

impl SpawnedController {
    /// Starts the binary with `extra` arguments and waits until REST answers.
    pub async fn start(extra: &[&str]) -> SpawnedController {
        SpawnedController::start_logging(extra, "warn").await
    }

    /// Likewise, logging what `filter` (a `RUST_LOG` value) lets through.
    pub async fn start_logging(extra: &[&str], filter: &str) -> SpawnedController {
        let dir = tempfile::tempdir().expect("tempdir");
        let launched = Launch::new(
            env!("CARGO_BIN_EXE_ocp-controller"),
            &dir.path().join("data"),
            &dir.path().join("controller.log"),
        )
        .args(extra)
        .log_filter(filter)
        .start()
        .await;
        SpawnedController {
            http: launched.http(),
            grpc: launched.grpc(),
            password: launched.admin_password().unwrap_or_default(),
            launched,
            dir,
        }
    }

    /// SIGKILL, as a crash would, then the binary again on the same data and addresses.
    pub async fn crash_and_restart(&mut self) {
        self.launched.crash_and_restart().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.launched.pid()
    }

    pub fn log(&self) -> String {
        self.launched.log()
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
        self.launched.cpu_time()
    }

    /// A REST call as the admin, as an operator would make it; the envelope's `data`,
    /// once it says the call succeeded.
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let http = reqwest::Client::new();
        let request = match (method, body.is_null()) {
            ("GET", _) => http.get(self.url(path)),
            (_, true) => http.post(self.url(path)),
            (_, false) => http.post(self.url(path)).json(&body),
        };
        let reply: serde_json::Value = request
            .basic_auth("admin", Some(&self.password))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(reply["successful"], true, "{method} {path}: {reply}");
        reply["data"].clone()
    }

    /// Polls the task over REST until `done` holds for it.
    pub async fn wait_task(
        &self,
        id: i64,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + test_support::WAIT;
        loop {
            let path = format!("/api/v2/tasks/instances/{id}");
            let task = self.rest("GET", &path, serde_json::Value::Null).await;
            if done(&task) {
                return task;
            }
            assert!(tokio::time::Instant::now() < deadline, "{task}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and waits for the controller to finish shutting down; its log.
    pub fn stop(mut self) -> String {
        self.launched.stop();
        self.launched.log()
    }
}
