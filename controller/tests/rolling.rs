//! Rolling batch operations against real agents: batches one after another, the failure
//! budget, the canary, pause and resume, the health gate, and a rolling task that
//! survives SIGKILL of its controller between two batches.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::binary::SpawnedController;
use common::fleet::*;
use proto::agent::v1::ProcessKind;
use proto::ocp::v1::{
    BatchRestartAgentsRequest, PauseTaskRequest, ResumeTaskRequest, RetryTaskRequest, Rollout,
    Subtask, Task,
};
use serde_json::{Value, json};

const PREPARE: &str = "Prepare restart OCP agent";
const FINISH: &str = "Finish OCP agent operation";
const WAIT_NODE: &str = "Wait node";

fn rollout(batch_size: &str, max_failed_hosts: i64) -> Rollout {
    Rollout {
        batch_size: batch_size.to_string(),
        max_failed_hosts,
        ..Rollout::default()
    }
}

async fn submit(controller: &TestController, hosts: &[i64], rollout: Rollout) -> Task {
    hosts_client(controller.grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.to_vec(),
            rollout: Some(rollout),
        })
        .await
        .expect("submit the rolling restart")
        .into_inner()
}

/// The subtasks of the host at `index` in hostIds.
fn of_host(task: &Task, index: i32) -> Vec<&Subtask> {
    task.subtasks
        .iter()
        .filter(|s| s.parallel_idx == index)
        .collect()
}

fn barriers(task: &Task) -> Vec<&Subtask> {
    task.subtasks
        .iter()
        .filter(|s| s.name == WAIT_NODE)
        .collect()
}

fn basic_pids(processes: &[proto::agent::v1::ProcessInfo]) -> HashMap<String, u32> {
    processes
        .iter()
        .filter(|p| p.kind() == ProcessKind::Basic)
        .map(|p| (p.alias.clone(), p.pid))
        .collect()
}

async fn agents(n: usize) -> Vec<TestAgent> {
    let mut agents = Vec::new();
    for _ in 0..n {
        agents.push(start_agent(Duration::ZERO).await);
    }
    agents
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_two_starts_only_after_every_finish_of_batch_one() {
    let agents = agents(4).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let task = submit(&controller, &hosts, rollout("2", 0)).await;
    assert_eq!(task.status, "RUNNING");
    let r = task
        .rollout
        .as_ref()
        .expect("a rolling task says its rollout");
    assert_eq!((r.batch_size.as_str(), r.hosts_per_batch), ("2", 2));
    // 4 chains of 5 steps and one barrier.
    assert_eq!(task.subtasks.len(), 21);

    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    let last_finish_of_batch_one = (0..2)
        .flat_map(|i| of_host(&done, i))
        .filter(|s| s.name == FINISH)
        .map(|s| millis(&s.finish_time))
        .max()
        .expect("finishes");
    let first_prepare_of_batch_two = (2..4)
        .flat_map(|i| of_host(&done, i))
        .filter(|s| s.name == PREPARE)
        .map(|s| millis(&s.start_time))
        .min()
        .expect("prepares");
    assert!(
        first_prepare_of_batch_two >= last_finish_of_batch_one,
        "batch 2 started at {first_prepare_of_batch_two}, before batch 1 finished at \
         {last_finish_of_batch_one}"
    );
    let barrier = barriers(&done)[0];
    assert!(millis(&barrier.start_time) >= last_finish_of_batch_one);
    let log = subtask_log(controller.grpc, done.id, barrier.id).await;
    assert!(log.contains("batch 1 of 2 settled (2 host(s))"), "{log}");
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_past_budget_0_leaves_batch_two_untouched_and_a_retry_finishes() {
    let mut agents = agents(4).await;
    // A dead agent's Prepare fails at its step's deadline: keep that short.
    let mut controller = start_controller(Some(Duration::from_secs(3))).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    agents[0].stop().await;
    let before = [
        basic_pids(&agents[2].processes().await),
        basic_pids(&agents[3].processes().await),
    ];
    let task = submit(&controller, &hosts, rollout("2", 0)).await;
    let failed = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(failed.status, "FAILED", "{failed:#?}");
    // The other host of batch 1 went through its whole chain.
    assert!(of_host(&failed, 1).iter().all(|s| s.status == "SUCCESSFUL"));
    for index in [2, 3] {
        assert!(
            of_host(&failed, index)
                .iter()
                .all(|s| s.status == "PENDING"),
            "host {index} of batch 2 was touched: {failed:#?}"
        );
    }
    assert_eq!(basic_pids(&agents[2].processes().await), before[0]);
    assert_eq!(basic_pids(&agents[3].processes().await), before[1]);
    // The barrier did not run; its log says why.
    let barrier = barriers(&failed)[0];
    assert_eq!(barrier.status, "PENDING");
    let log = subtask_log(controller.grpc, failed.id, barrier.id).await;
    assert!(
        log.contains(&format!(
            "stopped: 1 host(s) failed (host {}), more than maxFailedHosts 0",
            hosts[0]
        )),
        "{log}"
    );

    // The agent comes back: a retry carries on from there and restarts batch 2.
    agents[0].restart().await;
    tasks_client(controller.grpc)
        .await
        .retry_task(RetryTaskRequest { id: task.id })
        .await
        .expect("retry");
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    for (agent, old) in agents[2..].iter().zip(&before) {
        let now = basic_pids(&agent.processes().await);
        for (alias, pid) in old {
            assert_ne!(now[alias], *pid, "{alias} was not restarted by the retry");
        }
    }
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_1_goes_on_past_one_failure_and_still_ends_failed() {
    let mut agents = agents(3).await;
    let mut controller = start_controller(Some(Duration::from_secs(3))).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    agents[0].stop().await;
    let task = submit(&controller, &hosts, rollout("1", 1)).await;
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "FAILED", "{done:#?}");
    assert!(of_host(&done, 0).iter().any(|s| s.status == "FAILED"));
    for index in [1, 2] {
        assert!(
            of_host(&done, index)
                .iter()
                .all(|s| s.status == "SUCCESSFUL"),
            "host {index}: {done:#?}"
        );
    }
    assert!(barriers(&done).iter().all(|b| b.status == "SUCCESSFUL"));
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waits_running_until_resumed() {
    let agents = agents(3).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let canary = Rollout {
        pause_after_first_batch: true,
        ..rollout("1", 0)
    };
    let task = submit(&controller, &hosts, canary).await;
    let held = wait_for_task(controller.grpc, task.id, |t| {
        t.paused && barriers(t)[0].status == "READY"
    })
    .await;
    assert_eq!(held.status, "RUNNING");
    assert!(of_host(&held, 0).iter().all(|s| s.status == "SUCCESSFUL"));
    assert!(of_host(&held, 1).iter().all(|s| s.status == "PENDING"));
    let log = subtask_log(controller.grpc, task.id, barriers(&held)[0].id).await;
    assert!(
        log.contains("paused after batch 1 of 3 (pauseAfterFirstBatch)"),
        "{log}"
    );

    let resumed = tasks_client(controller.grpc)
        .await
        .resume_task(ResumeTaskRequest { id: task.id })
        .await
        .expect("resume")
        .into_inner();
    assert!(!resumed.paused);
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    // The canary pauses once: the second barrier did not hold.
    assert!(barriers(&done).iter().all(|b| b.status == "SUCCESSFUL"));
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_during_batch_one_holds_batch_two() {
    // A slow start keeps batch 1 running while the pause comes.
    let agents = [
        start_agent(Duration::from_millis(1500)).await,
        start_agent(Duration::ZERO).await,
    ];
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let task = submit(&controller, &hosts, rollout("1", 0)).await;
    let mut tasks = tasks_client(controller.grpc).await;
    let paused = tasks
        .pause_task(PauseTaskRequest { id: task.id })
        .await
        .expect("pause")
        .into_inner();
    assert!(paused.paused);
    assert!(of_host(&paused, 0).iter().any(|s| s.status != "SUCCESSFUL"));
    let held = wait_for_task(controller.grpc, task.id, |t| {
        barriers(t)[0].status == "READY" && of_host(t, 0).iter().all(|s| s.status == "SUCCESSFUL")
    })
    .await;
    assert_eq!(held.status, "RUNNING");
    assert!(of_host(&held, 1).iter().all(|s| s.status == "PENDING"));
    let log = subtask_log(controller.grpc, task.id, barriers(&held)[0].id).await;
    assert!(
        log.contains("paused: batch 2 of 2 starts when the task is resumed"),
        "{log}"
    );

    tasks
        .resume_task(ResumeTaskRequest { id: task.id })
        .await
        .expect("resume");
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_names_every_bad_rollout_field_and_an_empty_batch_size_is_one_host() {
    let agents = agents(2).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let refused = hosts_client(controller.grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.clone(),
            rollout: Some(Rollout {
                batch_size: "0%".to_string(),
                pause_seconds: -1,
                min_healthy_seconds: 7200,
                ..Rollout::default()
            }),
        })
        .await
        .expect_err("a bad rollout is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    for field in [
        "rollout.batch_size",
        "rollout.pause_seconds",
        "rollout.min_healthy_seconds",
    ] {
        assert!(refused.message().contains(field), "{}", refused.message());
    }
    let task = submit(&controller, &hosts, Rollout::default()).await;
    assert_eq!(task.rollout.as_ref().expect("rollout").hosts_per_batch, 1);
    assert_eq!(barriers(&task).len(), 1);
    wait_for_end(controller.grpc, task.id).await;
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_dies_within_min_healthy_seconds_fails_its_host() {
    let demo = workspace_bin("ocp-demo-proc");
    let flaky = start_agent_with(&format!(
        r#"[[process]]
alias = "flaky"
command = {demo:?}
args = ["--exit-after", "500", "--exit-code", "3"]
min_live = "0s"
stop_timeout = "5s"
"#
    ))
    .await;
    let healthy = start_agent(Duration::ZERO).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &[&flaky, &healthy]).await;
    let watched = Rollout {
        min_healthy_seconds: 2,
        ..rollout("2", 0)
    };
    let task = submit(&controller, &hosts, watched).await;
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "FAILED", "{done:#?}");
    let start_all = of_host(&done, 0)
        .into_iter()
        .find(|s| s.name == "Start all OCP agent processes")
        .expect("start all");
    assert_eq!(start_all.status, "FAILED");
    let log = subtask_log(controller.grpc, done.id, start_all.id).await;
    assert!(
        log.contains("unhealthy within minHealthySeconds 2") && log.contains("flaky (pid"),
        "{log}"
    );
    assert!(of_host(&done, 1).iter().all(|s| s.status == "SUCCESSFUL"));
    controller.shutdown().await;
}

fn json_barrier(task: &Value) -> &Value {
    task["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == WAIT_NODE))
        .expect("a barrier")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_canary_survives_sigkill_of_its_controller_between_batches() {
    let agents = agents(2).await;
    let mut controller = SpawnedController::start(&["--heartbeat-interval", "1s"]).await;
    let mut hosts = Vec::new();
    for agent in &agents {
        let host = controller.rest("POST",
                "/api/v2/compute/hosts",
                json!({"innerIpAddress": agent.addr.ip().to_string(), "agentPort": agent.addr.port()}),
            )
            .await;
        hosts.push(host["id"].as_i64().expect("host id"));
    }
    let task = controller.rest("POST",
            "/api/v2/compute/hosts/batchRestartAgents",
            json!({"hostIds": hosts, "rollout": {"batchSize": "50%", "pauseAfterFirstBatch": true}}),
        )
        .await;
    assert_eq!(task["rollout"]["batchSize"], "50%");
    assert_eq!(task["rollout"]["hostsPerBatch"], 1);
    assert_eq!(task["paused"], false);
    let id = task["id"].as_i64().expect("task id");
    controller
        .wait_task(id, |t| {
            t["paused"] == true && json_barrier(t)["status"] == "READY"
        })
        .await;
    let second_host = basic_pids(&agents[1].processes().await);

    controller.crash_and_restart().await;
    // The new run has taken the task up once its barrier says again that it holds.
    let barrier_log = format!(
        "/api/v2/tasks/instances/{id}/subtasks/{}/log",
        json_barrier(&task)["id"]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = controller.rest("GET", &barrier_log, Value::Null).await;
        let holds = log["log"]
            .as_str()
            .unwrap_or_default()
            .matches("paused")
            .count();
        if holds >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = controller
        .rest("GET", &format!("/api/v2/tasks/instances/{id}"), Value::Null)
        .await;
    assert_eq!(after["status"], "RUNNING", "{after}");
    assert_eq!(after["paused"], true, "{after}");
    assert_eq!(json_barrier(&after)["status"], "READY", "{after}");
    assert!(
        after["subtasks"]
            .as_array()
            .expect("subtasks")
            .iter()
            .filter(|s| s["parallelIdx"] == 1)
            .all(|s| s["status"] == "PENDING"),
        "{after}"
    );
    assert_eq!(basic_pids(&agents[1].processes().await), second_host);

    let resumed = controller
        .rest(
            "POST",
            &format!("/api/v2/tasks/instances/{id}/resume"),
            Value::Null,
        )
        .await;
    assert_eq!(resumed["paused"], false);
    let done = controller.wait_task(id, |t| t["status"] != "RUNNING").await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done}");
    let now = basic_pids(&agents[1].processes().await);
    for (alias, pid) in &second_host {
        assert_ne!(now[alias], *pid, "{alias} of batch 2 was not restarted");
    }
}
