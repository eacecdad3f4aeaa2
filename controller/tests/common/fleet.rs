//! A real controller and real agents for the controller's integration tests: agents run
//! in this process through the agent library, each supervising real `ocp-demo-proc`
//! children on free ports, and the controller is reached over gRPC like any client.

use std::net::SocketAddr;
use std::time::Duration;

use controller::auth::{BasicAuth, Users};
use controller::heartbeat::HeartbeatOptions;
use controller::store::Store;
use controller::{Controller, ControllerOptions};
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{ListProcessesRequest, ProcessInfo};
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use proto::ocp::v1::{AddHostRequest, GetTaskRequest, Task};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use test_support::bins::workspace_bin;
pub use test_support::{WAIT, free_port};

/// One host's agent, serving until dropped or stopped.
pub struct TestAgent {
    pub addr: SocketAddr,
    pub ports: Vec<u16>,
    cancel: CancellationToken,
    handle: Option<JoinHandle<Result<(), agent::AgentError>>>,
    dir: tempfile::TempDir,
}

/// The demo processes: a basic listener, a basic proxy, and a work process.
/// `start_delay` slows the listener's start-up, to widen a test's window.
pub async fn start_agent(start_delay: Duration) -> TestAgent {
    let demo = workspace_bin("ocp-demo-proc");
    let port = free_port();
    let delay = start_delay.as_millis().to_string();
    let processes = format!(
        r#"[[process]]
alias = "listener"
command = {demo:?}
args = ["--listen", "{port}", "--startup-delay", "{delay}"]
ports = [{port}]
log_file = "log/listener.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "proxy"
command = {demo:?}
proxy = true
log_file = "log/proxy.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "worker"
command = {demo:?}
kind = "work"
autostart = false
log_file = "log/worker.log"
min_live = "0s"
"#
    );
    let mut agent = start_agent_with(&processes).await;
    agent.ports = vec![port];
    agent
}

/// An agent supervising the `[[process]]` tables given.
pub async fn start_agent_with(processes: &str) -> TestAgent {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("[agent]\nversion = \"4.2.1-test\"\n\n{processes}");
    std::fs::write(dir.path().join("agent.toml"), config).expect("write agent config");
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (addr, cancel, handle) = serve_agent(&dir, listen).await;
    TestAgent {
        addr,
        ports: Vec::new(),
        cancel,
        handle: Some(handle),
        dir,
    }
}

async fn serve_agent(
    dir: &tempfile::TempDir,
    listen: SocketAddr,
) -> (
    SocketAddr,
    CancellationToken,
    JoinHandle<Result<(), agent::AgentError>>,
) {
    let cancel = CancellationToken::new();
    let (addr, handle) = agent::Agent::start(
        agent::AgentOptions {
            listen,
            config_path: dir.path().join("agent.toml"),
            data_dir: dir.path().join("data"),
            tls: None,
            insecure_plaintext: false,
            conns: Default::default(),
            metrics_addr: None,
        },
        cancel.clone(),
    )
    .await
    .expect("agent starts");
    (addr, cancel, handle)
}

impl TestAgent {
    pub async fn client(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to agent")
    }

    pub async fn processes(&self) -> Vec<ProcessInfo> {
        self.client()
            .await
            .list_processes(ListProcessesRequest {})
            .await
            .expect("list processes")
            .into_inner()
            .processes
    }

    /// Stops serving and stops its children, as SIGTERM to the agent would.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Starts it again on the same address and data dir, after `stop`.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (addr, cancel, handle) = serve_agent(&self.dir, self.addr).await;
        assert_eq!(addr, self.addr);
        self.cancel = cancel;
        self.handle = Some(handle);
    }
}

impl Drop for TestAgent {
    /// Cancelling starts the agent's own graceful stop, but the test's runtime may end
    /// before it is done (a process that ignores SIGTERM takes its whole stop_timeout),
    /// which would leave processes behind on the machine: every group the agent's pid
    /// files still name is killed as well.
    fn drop(&mut self) {
        self.cancel.cancel();
        let Ok(files) = std::fs::read_dir(self.dir.path().join("data").join("processes")) else {
            return;
        };
        for file in files.flatten() {
            if file.path().extension().is_none_or(|e| e != "pid") {
                continue;
            }
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            let mut words = text.split_whitespace();
            let (Some(Ok(pid)), Some(Ok(ticks))) = (
                words.next().map(str::parse::<u32>),
                words.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            test_support::procs::kill_group_of(pid, ticks);
        }
    }
}

pub struct TestController {
    pub controller: Option<Controller>,
    pub grpc: SocketAddr,
    pub data_dir: tempfile::TempDir,
}

/// The test controllers' only user, with every permission.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A channel to the controller that presents the admin's credentials.
pub type Authed = InterceptedService<Channel, BasicAuth>;

pub fn admin_auth() -> BasicAuth {
    BasicAuth::new("admin", ADMIN_PASSWORD).expect("credentials")
}

/// Heartbeats quick enough for a test: a silent agent is OFFLINE within a second.
pub fn quick_heartbeats() -> HeartbeatOptions {
    HeartbeatOptions {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        offline_grace: Duration::from_millis(800),
        concurrency: 16,
    }
}

pub fn controller_options(
    data_dir: &std::path::Path,
    max_subtask_timeout: Option<Duration>,
) -> ControllerOptions {
    ControllerOptions {
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: None,
        users: Users::single_admin(ADMIN_PASSWORD).expect("users"),
        database_url: Store::sqlite_url(data_dir),
        advertise: "127.0.0.1".to_string(),
        task_concurrency: 256,
        max_subtask_timeout,
        heartbeat: HeartbeatOptions {
            interval: Duration::from_secs(1),
            ..HeartbeatOptions::default()
        },
        agent_tls: None,
        tls: None,
        conns: Default::default(),
        lease_ttl: Duration::from_secs(10),
        max_watches_per_user: controller::service::DEFAULT_MAX_WATCHES_PER_USER,
        max_package_bytes: controller::service::DEFAULT_MAX_PACKAGE_BYTES,
    }
}

pub async fn start_controller(max_subtask_timeout: Option<Duration>) -> TestController {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let controller = Controller::start(controller_options(data_dir.path(), max_subtask_timeout))
        .await
        .expect("controller starts");
    TestController {
        grpc: controller.grpc_addr(),
        controller: Some(controller),
        data_dir,
    }
}

impl TestController {
    /// The controller's store, read beside it as an operator's SQL client would.
    pub async fn store(&self) -> Store {
        Store::connect(&Store::sqlite_url(self.data_dir.path()))
            .await
            .expect("read the controller's store")
    }

    pub async fn shutdown(&mut self) {
        if let Some(c) = self.controller.take() {
            c.shutdown().await;
        }
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to controller")
}

pub async fn hosts_client(addr: SocketAddr) -> HostAgentServiceClient<Authed> {
    HostAgentServiceClient::with_interceptor(channel(addr).await, admin_auth())
}

pub async fn tasks_client(addr: SocketAddr) -> TaskServiceClient<Authed> {
    TaskServiceClient::with_interceptor(channel(addr).await, admin_auth())
}

/// Registers each agent as a host and returns the host ids, in order.
pub async fn register(controller: SocketAddr, agents: &[&TestAgent]) -> Vec<i64> {
    let mut client = hosts_client(controller).await;
    let mut ids = Vec::new();
    for agent in agents {
        let host = client
            .add_host(AddHostRequest {
                inner_ip_address: agent.addr.ip().to_string(),
                agent_port: u32::from(agent.addr.port()),
                name: String::new(),
            })
            .await
            .expect("add host")
            .into_inner();
        ids.push(host.id);
    }
    ids
}

/// Polls the task until it is no longer RUNNING.
pub async fn wait_for_end(controller: SocketAddr, task_id: i64) -> Task {
    wait_for_task(controller, task_id, |t| t.status != "RUNNING").await
}

pub async fn wait_for_task(
    controller: SocketAddr,
    task_id: i64,
    done: impl Fn(&Task) -> bool,
) -> Task {
    let mut client = tasks_client(controller).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let task = client
            .get_task(GetTaskRequest { id: task_id })
            .await
            .expect("get task")
            .into_inner();
        if done(&task) {
            return task;
        }
        if tokio::time::Instant::now() >= deadline {
            // What a failed step said is what tells a flaky run from a broken one.
            let mut logs = String::new();
            for failed in task.subtasks.iter().filter(|s| s.status == "FAILED") {
                let log = subtask_log(controller, task_id, failed.id).await;
                logs += &format!("\n--- {} ({}):\n{log}", failed.name, failed.id);
            }
            panic!("task {task_id} did not reach the condition in {WAIT:?}: {task:#?}{logs}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn subtask_log(controller: SocketAddr, task_id: i64, subtask_id: i64) -> String {
    tasks_client(controller)
        .await
        .get_subtask_log(proto::ocp::v1::GetSubtaskLogRequest {
            task_id,
            subtask_id,
        })
        .await
        .expect("subtask log")
        .into_inner()
        .log
}

/// The task and the logs of its failed subtasks, for an assertion's message: a task that
/// ended otherwise than expected says why.
pub async fn explain(controller: SocketAddr, task: &Task) -> String {
    let mut out = format!("{task:#?}");
    for subtask in task.subtasks.iter().filter(|s| s.status == "FAILED") {
        let log = subtask_log(controller, task.id, subtask.id).await;
        out.push_str(&format!(
            "\n--- subtask {} ({}) log:\n{log}",
            subtask.id, subtask.name
        ));
    }
    out
}

pub use test_support::procs::alive as pid_alive;
