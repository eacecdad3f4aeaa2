//! Heartbeats: a silent agent's host goes OFFLINE after the grace, steps aimed at it
//! fail at once, and one answer brings it back ONLINE.

mod common;

use std::time::Duration;

use common::fleet::*;
use controller::Controller;
use controller::heartbeat::HeartbeatOptions;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::ocp::v1::{
    GetHostAgentRequest, GetHostRequest, GetSubtaskLogRequest, RestartAgentRequest,
};

async fn wait_host_status(
    controller: std::net::SocketAddr,
    host_id: i64,
    status: &str,
) -> proto::ocp::v1::Host {
    let mut client = hosts_client(controller).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let host = client
            .get_host(GetHostRequest { host_id })
            .await
            .expect("get host")
            .into_inner();
        if host.status == status {
            return host;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "host never {status}: {host:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_goes_offline_fails_steps_at_once_and_comes_back() {
    let mut agent = start_agent(Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = controller_options(dir.path(), None);
    options.heartbeat = quick_heartbeats();
    let controller = Controller::start(options).await.expect("controller");
    let grpc = controller.grpc_addr();
    let host = register(grpc, &[&agent]).await[0];
    let online = wait_host_status(grpc, host, "ONLINE").await;

    let cut = tokio::time::Instant::now();
    agent.stop().await;
    wait_host_status(grpc, host, "OFFLINE").await;
    let took = cut.elapsed();
    // The grace counts from the last answer, which came at most one interval before the cut.
    assert!(
        took >= Duration::from_millis(800 - 200),
        "not before the grace: {took:?}"
    );
    let agent_view = hosts_client(grpc)
        .await
        .get_host_agent(GetHostAgentRequest { host_id: host })
        .await
        .expect("host agent")
        .into_inner();
    assert!(
        !agent_view.last_available_time.is_empty(),
        "lastAvailableTime is kept"
    );
    assert!(online.update_time <= agent_view.update_time);

    // A step aimed at the OFFLINE host fails at once, saying so, not after its 60 s.
    let submitted = tokio::time::Instant::now();
    let task = hosts_client(grpc)
        .await
        .restart_agent(RestartAgentRequest { host_id: host })
        .await
        .expect("submit")
        .into_inner();
    let done = wait_for_end(grpc, task.id).await;
    assert_eq!(done.status, "FAILED");
    assert!(
        submitted.elapsed() < Duration::from_secs(10),
        "{:?}",
        submitted.elapsed()
    );
    let log = tasks_client(grpc)
        .await
        .get_subtask_log(GetSubtaskLogRequest {
            task_id: task.id,
            subtask_id: done.subtasks[0].id,
        })
        .await
        .expect("log")
        .into_inner()
        .log;
    assert!(log.contains("is OFFLINE"), "{log}");

    agent.restart().await;
    wait_host_status(grpc, host, "ONLINE").await;
    controller.shutdown().await;
}

/// An agent starved of CPU answers late but answers. Behind a link that delivers its
/// every answer 1.5 s late (more than any short deadline would allow), its host becomes
/// and stays ONLINE, and lastAvailableTime moves on; once it is silent for longer than
/// the grace (frozen by SIGSTOP) the host goes OFFLINE all the same, and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_answers_late_stays_online() {
    let tag = common::proc_agent::unique_tag();
    let demo = workspace_bin("ocp-demo-proc");
    let config = format!(
        "[[process]]\nalias = \"monagent\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}-monagent\"]\nmin_live = \"0s\"\n"
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let agent = common::proc_agent::ProcAgent::start(addr, &[], tag, &config).await;
    let pid = libc::pid_t::try_from(agent.pid().expect("agent pid")).expect("pid");
    let link = common::slow_link::SlowLink::start(addr, Duration::from_millis(1500)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = controller_options(dir.path(), None);
    options.heartbeat = HeartbeatOptions {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
        offline_grace: Duration::from_secs(4),
        concurrency: 16,
    };
    let controller = Controller::start(options).await.expect("controller");
    let grpc = controller.grpc_addr();
    let host = hosts_client(grpc)
        .await
        .add_host(proto::ocp::v1::AddHostRequest {
            inner_ip_address: link.addr.ip().to_string(),
            agent_port: u32::from(link.addr.port()),
            name: String::new(),
        })
        .await
        .expect("add host")
        .into_inner()
        .id;
    wait_host_status(grpc, host, "ONLINE").await;
    let last_available = || async move {
        hosts_client(grpc)
            .await
            .get_host_agent(GetHostAgentRequest { host_id: host })
            .await
            .expect("host agent")
            .into_inner()
            .last_available_time
    };
    let before = last_available().await;
    let watched = tokio::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        let status = hosts_client(grpc)
            .await
            .get_host(GetHostRequest { host_id: host })
            .await
            .expect("get host")
            .into_inner()
            .status;
        assert_eq!(status, "ONLINE", "a slow agent's host");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(before, last_available().await, "late answers are recorded");

    let signal = |sig| kill(Pid::from_raw(pid), sig).expect("signal the agent");
    signal(Signal::SIGSTOP);
    let frozen = tokio::time::Instant::now();
    wait_host_status(grpc, host, "OFFLINE").await;
    signal(Signal::SIGCONT);
    assert!(
        frozen.elapsed() >= Duration::from_secs(2),
        "OFFLINE only after the grace: {:?}",
        frozen.elapsed()
    );
    wait_host_status(grpc, host, "ONLINE").await;
    drop(agent);
}
