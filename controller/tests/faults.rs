//! Faults in the middle of a batch task, against real `ocp-agent` binaries:
//!
//! - the agent is SIGKILLed and started again while "Start all" or "Stop all" runs on
//!   its host;
//! - a host is cut off the network (a network namespace whose link goes dark) while
//!   its "Start all" runs, then healed.
//!
//! Each checks that the step ends within its timeout with a reason, that a retry
//! finishes the task, and that every process then runs exactly once, as the pid the
//! agent reports.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fleet::*;
use common::netns::Netns;
use common::proc_agent::{ProcAgent, unique_tag};
use controller::Controller;
use proto::agent::v1::ProcessStatus;
use proto::ocp::v1::{
    AddHostRequest, BatchRestartAgentsRequest, GetHostAgentRequest, GetHostRequest,
    RetryTaskRequest, Task,
};
use tokio::time::Instant;

const START_ALL: &str = "Start all OCP agent processes";
const STOP_ALL: &str = "Stop all OCP agent processes";

/// The cap on every step: short, so a step that hangs fails these tests in seconds.
const STEP_CAP: Duration = Duration::from_secs(6);

/// The cap in the partition test: long enough that only the host going OFFLINE can
/// end its step early.
const PARTITION_STEP_CAP: Duration = Duration::from_secs(15);

/// How long after its host goes OFFLINE a step waiting on the host's agent ends:
/// the engine looks once a second.
const OFFLINE_NOTICED: Duration = Duration::from_secs(1);

/// What the engine may take beyond a step's timeout to notice and record its end,
/// on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// The basic processes of every agent here: a listener slow to start (a window for
/// the fault while Start all runs), a proxy, and one that ignores SIGTERM and so is
/// slow to stop (a window while Stop all runs).
fn processes(tag: &str, listen: &str, startup_delay_ms: u64) -> String {
    let demo = workspace_bin("ocp-demo-proc");
    let port = listen.rsplit(':').next().expect("a port");
    format!(
        r#"[[process]]
alias = "listener"
command = {demo:?}
args = ["--listen", "{listen}", "--startup-delay", "{startup_delay_ms}", "--tag", "{tag}-listener"]
ports = [{port}]
log_file = "log/listener.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "proxy"
command = {demo:?}
args = ["--tag", "{tag}-proxy"]
proxy = true
log_file = "log/proxy.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "stubborn"
command = {demo:?}
args = ["--ignore-term", "--tag", "{tag}-stubborn"]
log_file = "log/stubborn.log"
stop_timeout = "2s"
min_live = "0s"
"#
    )
}

const ALIASES: [&str; 3] = ["listener", "proxy", "stubborn"];

fn subtask<'a>(task: &'a Task, name: &str, parallel_idx: i32) -> &'a proto::ocp::v1::Subtask {
    task.subtasks
        .iter()
        .find(|s| s.name == name && s.parallel_idx == parallel_idx)
        .unwrap_or_else(|| panic!("no {name} #{parallel_idx} in {task:#?}"))
}

async fn add_host(controller: SocketAddr, agent: SocketAddr) -> i64 {
    hosts_client(controller)
        .await
        .add_host(AddHostRequest {
            inner_ip_address: agent.ip().to_string(),
            agent_port: u32::from(agent.port()),
            name: String::new(),
        })
        .await
        .expect("add host")
        .into_inner()
        .id
}

async fn host_status(controller: SocketAddr, host_id: i64) -> String {
    hosts_client(controller)
        .await
        .get_host(GetHostRequest { host_id })
        .await
        .expect("get host")
        .into_inner()
        .status
}

/// Every failed subtask with its log, for assertions and for the test's output.
async fn failures(controller: SocketAddr, task: &Task) -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    for s in task.subtasks.iter().filter(|s| s.status == "FAILED") {
        let log = subtask_log(controller, task.id, s.id).await;
        out.push((s.parallel_idx, s.name.clone(), log));
    }
    out
}

/// Waits until every basic process of the agent is STARTED.
async fn wait_all_started(agent: &ProcAgent) {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = agent.processes().await;
        if list.len() == ALIASES.len()
            && list
                .iter()
                .all(|p| p.status() == ProcessStatus::Started && p.pid != 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all started in {WAIT:?}: {list:#?}\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each process runs exactly once, and it is the one the agent reports and the
/// controller shows for the host.
async fn assert_each_runs_once(agent: &ProcAgent, controller: SocketAddr, host_id: i64) {
    let list = agent.processes().await;
    let shown = hosts_client(controller)
        .await
        .get_host_agent(GetHostAgentRequest { host_id })
        .await
        .expect("get host agent")
        .into_inner();
    assert_eq!(shown.status, "STARTED", "{shown:#?}");
    for alias in ALIASES {
        let reported = list
            .iter()
            .find(|p| p.alias == alias)
            .unwrap_or_else(|| panic!("{alias} not reported: {list:#?}"));
        assert_eq!(
            reported.status(),
            ProcessStatus::Started,
            "{alias}: {reported:?}"
        );
        assert_eq!(
            agent.live_copies(alias),
            vec![reported.pid],
            "{alias} should run once, as pid {}; agent log:\n{}",
            reported.pid,
            agent.log_tail()
        );
        let pid = shown
            .processes
            .iter()
            .find(|p| p.alias == alias)
            .map(|p| p.pid);
        assert_eq!(
            pid,
            i32::try_from(reported.pid).ok(),
            "controller's view: {shown:#?}"
        );
    }
}

/// Retries a FAILED task and waits for it to end; a SUCCESSFUL one is returned as is.
async fn retry_if_failed(controller: SocketAddr, task: Task) -> Task {
    if task.status != "FAILED" {
        return task;
    }
    tasks_client(controller)
        .await
        .retry_task(RetryTaskRequest { id: task.id })
        .await
        .expect("retry")
        .into_inner();
    wait_for_end(controller, task.id).await
}

/// When the killed agent is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Back {
    /// At once: the step's own retries of transient errors may still reach it.
    AtOnce,
    /// Only once the step failed: the task itself has to be retried.
    AfterTheStepFailed,
}

/// SIGKILLs the agent while `step` runs on its host, starts it again on the same
/// address and data dir (`back` says when), and checks the task's end and the
/// processes afterwards.
async fn agent_killed_during(step: &str, back: Back) {
    let tag = unique_tag();
    let listen = format!("127.0.0.1:{}", free_port());
    let agent_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = processes(&tag, &listen, 2000);
    let mut agent = ProcAgent::start(agent_addr, &[], tag, &config).await;
    wait_all_started(&agent).await;
    let mut controller = start_controller(Some(STEP_CAP)).await;
    let host = add_host(controller.grpc, agent.addr).await;

    let task = hosts_client(controller.grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: vec![host],
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    wait_for_task(controller.grpc, task.id, |t| {
        subtask(t, step, 0).status == "RUNNING"
    })
    .await;
    let running_at = Instant::now();
    // Wait until the agent is in the middle of the call: Start all has spawned the
    // listener, which is still in its start-up delay; Stop all has stopped the
    // listener and the proxy, and the stubborn process still ignores its SIGTERM.
    let midway = |agent: &ProcAgent| {
        let live = |alias| !agent.live_copies(alias).is_empty();
        if step == START_ALL {
            live("listener")
        } else {
            !live("listener") && !live("proxy") && live("stubborn")
        }
    };
    let deadline = Instant::now() + WAIT;
    while !midway(&agent) {
        assert!(Instant::now() < deadline, "{step} never got under way");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<u32> = ALIASES
        .iter()
        .flat_map(|alias| agent.live_copies(alias))
        .collect();
    agent.kill();
    let killed_at = Instant::now();
    eprintln!(
        "{step} ({back:?}): agent killed {:?} into the step (live processes of its run: \
         {before:?})",
        killed_at - running_at
    );
    if back == Back::AtOnce {
        agent.spawn().await;
        eprintln!(
            "agent answering again {:?} after the kill",
            killed_at.elapsed()
        );
    }

    let after_step = wait_for_task(controller.grpc, task.id, |t| {
        subtask(t, step, 0).status != "RUNNING"
    })
    .await;
    let step_took = running_at.elapsed();
    let stepped = subtask(&after_step, step, 0);
    let log = subtask_log(controller.grpc, task.id, stepped.id).await;
    eprintln!("{step}: {} after {step_took:?}:\n{log}", stepped.status);
    assert!(
        log.contains("attempt 1 failed"),
        "the kill should have cut the step's call short: {log}"
    );
    assert!(
        step_took <= STEP_CAP + SLACK,
        "{step} ran {step_took:?}, past its {STEP_CAP:?} timeout"
    );
    if back == Back::AfterTheStepFailed {
        assert_eq!(stepped.status, "FAILED", "{log}");
        agent.spawn().await;
    }

    let ended = wait_for_end(controller.grpc, task.id).await;
    if back == Back::AfterTheStepFailed {
        assert_eq!(ended.status, "FAILED");
    }
    let done = retry_if_failed(controller.grpc, ended).await;
    assert_eq!(
        done.status,
        "SUCCESSFUL",
        "{done:#?}\n{:?}\nagent log:\n{}",
        failures(controller.grpc, &done).await,
        agent.log_tail()
    );

    assert_each_runs_once(&agent, controller.grpc, host).await;
    let now: Vec<u32> = ALIASES
        .iter()
        .flat_map(|alias| agent.live_copies(alias))
        .collect();
    assert!(
        before.iter().all(|pid| !now.contains(pid)),
        "processes of the killed run live on: before {before:?}, now {now:?}"
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_and_restarted_during_start_all() {
    agent_killed_during(START_ALL, Back::AtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_start_all_and_restarted_after_it_failed() {
    agent_killed_during(START_ALL, Back::AfterTheStepFailed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_and_restarted_during_stop_all() {
    agent_killed_during(STOP_ALL, Back::AtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_stop_all_and_restarted_after_it_failed() {
    agent_killed_during(STOP_ALL, Back::AfterTheStepFailed).await;
}

/// A fresh connection to the cut-off host has to time out rather than be refused or
/// found unreachable at once: only then is the cut a partition as the controller
/// meets it in the field.
async fn assert_blackholed(addr: SocketAddr) {
    let limit = Duration::from_millis(1500);
    let started = Instant::now();
    if let Ok(outcome) = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        panic!(
            "a connect to cut-off {addr} should hang, got {outcome:?} after {:?}",
            started.elapsed()
        );
    }
}

/// Host 0 of two goes dark while its Start all runs: the host goes OFFLINE, the step
/// waiting on it fails soon after, naming OFFLINE, rather than at its timeout; healed,
/// the host is ONLINE again; the other host is not disturbed; a retry finishes the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_during_start_all_goes_offline_and_a_retry_finishes() {
    let net = match Netns::create(2) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("SKIPPED a_host_cut_off_during_start_all: no network namespaces here: {e}");
            return;
        }
    };
    let mut agents = Vec::new();
    for host in &net.hosts {
        let tag = unique_tag();
        // The namespace's own loopback: the port cannot clash with anything outside.
        let config = processes(&tag, "127.0.0.1:7001", 2000);
        let addr = SocketAddr::new(host.ip().into(), 62888);
        agents.push(ProcAgent::start(addr, &host.exec_prefix(), tag, &config).await);
    }
    for agent in &agents {
        wait_all_started(agent).await;
    }

    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut options = controller_options(data_dir.path(), Some(PARTITION_STEP_CAP));
    options.heartbeat = controller::heartbeat::HeartbeatOptions {
        interval: Duration::from_millis(300),
        timeout: Duration::from_secs(1),
        offline_grace: Duration::from_millis(1500),
        ..Default::default()
    };
    let started = Controller::start(options).await.expect("controller starts");
    let mut controller = TestController {
        grpc: started.grpc_addr(),
        controller: Some(started),
        data_dir,
    };
    let grpc = controller.grpc;
    let mut hosts = Vec::new();
    for agent in &agents {
        hosts.push(add_host(grpc, agent.addr).await);
    }
    for &host in &hosts {
        wait_host_status(grpc, host, "ONLINE", &[]).await;
    }

    let task = hosts_client(grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    wait_for_task(grpc, task.id, |t| {
        subtask(t, START_ALL, 0).status == "RUNNING"
    })
    .await;
    let running_at = Instant::now();
    net.hosts[0].cut();
    let cut_at = Instant::now();
    let blackholed = tokio::spawn(assert_blackholed(agents[0].addr));

    let offline_after = wait_host_status(grpc, hosts[0], "OFFLINE", &[hosts[1]]).await - cut_at;
    let after_step = wait_for_task(grpc, task.id, |t| {
        subtask(t, START_ALL, 0).status != "RUNNING"
    })
    .await;
    let step_took = running_at.elapsed();
    let step_failed_after = cut_at.elapsed();
    blackholed.await.expect("the cut is a partition");
    eprintln!(
        "partition: host OFFLINE {offline_after:?} after the cut; Start all {} {step_failed_after:?} \
         after the cut ({step_took:?} after it began)",
        subtask(&after_step, START_ALL, 0).status
    );
    assert!(
        step_failed_after <= offline_after + OFFLINE_NOTICED + SLACK,
        "Start all ran on {:?} after its host went OFFLINE",
        step_failed_after.saturating_sub(offline_after)
    );

    let failed = wait_for_end(grpc, task.id).await;
    assert_eq!(failed.status, "FAILED", "{failed:#?}");
    assert_eq!(subtask(&failed, START_ALL, 1).status, "SUCCESSFUL");
    let reasons = failures(grpc, &failed).await;
    for (idx, name, log) in &reasons {
        eprintln!("FAILED {name} #{idx}:\n{log}");
    }
    assert!(
        reasons.iter().all(|(idx, _, _)| *idx == 0),
        "only the cut-off host's steps may fail: {reasons:#?}"
    );
    let start_all = subtask(&failed, START_ALL, 0);
    assert_eq!(start_all.status, "FAILED");
    let log = subtask_log(grpc, task.id, start_all.id).await;
    assert!(
        log.contains("is OFFLINE: its agent does not answer heartbeats"),
        "Start all's failure should name OFFLINE: {log}"
    );

    net.hosts[0].heal();
    let healed_at = Instant::now();
    let online_after = wait_host_status(grpc, hosts[0], "ONLINE", &[]).await - healed_at;
    eprintln!("partition: host ONLINE {online_after:?} after healing");

    let done = retry_if_failed(grpc, failed).await;
    assert_eq!(
        done.status,
        "SUCCESSFUL",
        "{done:#?}\n{:#?}",
        failures(grpc, &done).await
    );
    for (agent, &host) in agents.iter().zip(&hosts) {
        assert_each_runs_once(agent, grpc, host).await;
    }
    controller.shutdown().await;
    // The agents leave their namespaces before the namespaces go.
    drop(agents);
    drop(net);
}

/// Polls until the host has `status`, asserting meanwhile that none of `steady` goes
/// OFFLINE; returns when it was seen.
async fn wait_host_status(
    controller: SocketAddr,
    host_id: i64,
    status: &str,
    steady: &[i64],
) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        if host_status(controller, host_id).await == status {
            return Instant::now();
        }
        for &other in steady {
            assert_ne!(
                host_status(controller, other).await,
                "OFFLINE",
                "host {other} went OFFLINE with host {host_id}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "host {host_id} not {status} in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
