//! `GET /metrics` on the controller: a real controller driving real agents, its
//! exposition read over HTTP and parsed as Prometheus would, and its values moving
//! with the work done.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fleet::*;
use common::metrics::{Scrape, wait_metric};
use controller::Controller;
use serde_json::{Value, json};

const TASKS: &str = "ocp_controller_tasks";
const SUBTASKS: &str = "ocp_controller_subtasks";
const HOSTS: &str = "ocp_controller_hosts";
const STEPS: &str = "ocp_controller_step_duration_seconds";
const AGENT_CALLS: &str = "ocp_controller_agent_call_duration_seconds";
const HTTP: &str = "ocp_controller_http_requests";
const GRPC: &str = "ocp_controller_grpc_requests";
const LEASES: &str = "ocp_controller_leases_held";
const MISSES: &str = "ocp_controller_heartbeat_misses";

/// A controller serving REST too, with heartbeats quick enough for a test.
async fn start(dir: &std::path::Path) -> (Controller, SocketAddr) {
    let mut options = controller_options(dir, None);
    options.http_addr = Some("127.0.0.1:0".parse().expect("addr"));
    options.heartbeat = quick_heartbeats();
    let controller = Controller::start(options).await.expect("controller");
    let http = controller.http_addr().expect("http addr");
    (controller, http)
}

/// An OCP request as an operator's client sends it: Basic auth, JSON in and out.
async fn rest(http: SocketAddr, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let request = reqwest::Client::new()
        .request(method, format!("http://{http}{path}"))
        .basic_auth("admin", Some(ADMIN_PASSWORD));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request
        .send()
        .await
        .expect("REST request")
        .json()
        .await
        .expect("JSON envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_tasks_steps_agent_calls_requests_and_leases() {
    let agents = [
        start_agent(Duration::ZERO).await,
        start_agent(Duration::ZERO).await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let (controller, http) = start(dir.path()).await;
    let grpc = controller.grpc_addr();
    let hosts = register(grpc, &[&agents[0], &agents[1]]).await;
    wait_metric(http, HOSTS, &[("status", "ONLINE")], |n| n == 2.0).await;

    let before = Scrape::fetch(http).await;
    assert_eq!(before.value(TASKS, &[]), 0.0);
    assert_eq!(before.value(LEASES, &[]), 0.0);
    assert_eq!(before.value(HOSTS, &[("status", "OFFLINE")]), 0.0);
    assert_eq!(before.value(STEPS, &[]), 0.0);
    let add_host = [
        ("method", "/ocp.v1.HostAgentService/AddHost"),
        ("code", "OK"),
    ];
    assert_eq!(before.value(GRPC, &add_host), 2.0);
    let heartbeats = before.value(
        AGENT_CALLS,
        &[("method", "GetAgentInfo"), ("outcome", "ok")],
    );
    assert!(
        heartbeats >= 2.0,
        "heartbeats are agent calls: {heartbeats}"
    );

    // A canary holds the task, RUNNING, after its first host: its lease is held.
    let submitted = rest(
        http,
        reqwest::Method::POST,
        "/compute/hosts/batchRestartAgents",
        Some(json!({
            "hostIds": hosts,
            "rollout": {"batchSize": 1, "pauseAfterFirstBatch": true},
        })),
    )
    .await;
    let task_id = submitted["data"]["id"].as_i64().expect("task id");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let path = format!("/tasks/instances/{task_id}");
        let task = rest(http, reqwest::Method::GET, &path, None).await;
        if task["data"]["paused"] == json!(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {task}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = wait_metric(
        http,
        STEPS,
        &[
            ("step", "Finish OCP agent operation"),
            ("outcome", "succeeded"),
        ],
        |n| n == 1.0,
    )
    .await;
    assert_eq!(held.value(LEASES, &[]), 1.0);
    // A step's duration is recorded as it ends, its status written just after, and the
    // store's counts may be a read old: wait for the write, which the hold keeps.
    let finish = |status| [("name", "Finish OCP agent operation"), ("status", status)];
    let running = wait_metric(http, SUBTASKS, &finish("SUCCESSFUL"), |n| n == 1.0).await;
    assert_eq!(
        running.value(
            TASKS,
            &[("name", "Batch restart OCP agent"), ("status", "RUNNING")]
        ),
        1.0
    );
    assert_eq!(
        running.value(SUBTASKS, &finish("PENDING")),
        1.0,
        "the second host's chain waits"
    );

    rest(
        http,
        reqwest::Method::POST,
        &format!("/tasks/instances/{task_id}/resume"),
        None,
    )
    .await;
    let task = wait_for_end(grpc, task_id).await;
    assert_eq!(task.status, "SUCCESSFUL", "{}", explain(grpc, &task).await);

    // The runner lets go of the lease a moment after it wrote the end.
    wait_metric(http, LEASES, &[], |n| n == 0.0).await;
    let after = wait_metric(http, TASKS, &[("status", "SUCCESSFUL")], |n| n == 1.0).await;
    assert_eq!(after.value(TASKS, &[("status", "RUNNING")]), 0.0);
    assert_eq!(
        after.value(SUBTASKS, &[]),
        0.0,
        "a finished task's subtasks are history"
    );
    for step in [
        "Prepare restart OCP agent",
        "Restart pos proxy",
        "Stop all OCP agent processes",
        "Start all OCP agent processes",
        "Finish OCP agent operation",
    ] {
        let labels = [("step", step), ("outcome", "succeeded")];
        assert_eq!(after.value(STEPS, &labels), 2.0, "{step}: one per host");
    }
    assert_eq!(after.value(STEPS, &[("outcome", "failed")]), 0.0);
    for method in ["RestartProxy", "StopAll", "StartAll"] {
        let labels = [("method", method), ("outcome", "ok")];
        assert_eq!(after.value(AGENT_CALLS, &labels), 2.0, "{method}");
    }
    let batch = [
        ("method", "POST"),
        ("route", "/compute/hosts/batchRestartAgents"),
        ("status", "200"),
    ];
    assert_eq!(after.value(HTTP, &batch), 1.0);
    let resume = [
        ("method", "POST"),
        ("route", "/tasks/instances/{id}/resume"),
        ("status", "200"),
    ];
    assert_eq!(after.value(HTTP, &resume), 1.0);
    let get_task = [("method", "/ocp.v1.TaskService/GetTask"), ("code", "OK")];
    assert!(after.value(GRPC, &get_task) >= 1.0);
    assert!(after.value(HTTP, &[("route", "/metrics")]) >= 1.0);

    // Paths count under their template, never as themselves; unknown ones share one.
    for path in [
        "/compute/hosts/4242",
        "/compute/hosts/4343",
        "/api/v2/compute/hosts/4444",
        "/no/such/route/4545",
        "/no/such/route/4646",
    ] {
        rest(http, reqwest::Method::GET, path, None).await;
    }
    let mut client = tasks_client(grpc).await;
    let unknown_task = client
        .get_task(proto::ocp::v1::GetTaskRequest { id: 987_654 })
        .await
        .expect_err("no such task");
    assert_eq!(unknown_task.code(), tonic::Code::NotFound);
    let scraped = Scrape::fetch(http).await;
    let host = [
        ("method", "GET"),
        ("route", "/compute/hosts/{hostId}"),
        ("status", "404"),
    ];
    assert_eq!(scraped.value(HTTP, &host), 2.0);
    let prefixed = [
        ("route", "/api/v2/compute/hosts/{hostId}"),
        ("status", "404"),
    ];
    assert_eq!(scraped.value(HTTP, &prefixed), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(scraped.value(HTTP, &unmatched), 2.0);
    let routes = scraped.label_values(HTTP, "route");
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("4242") && !r.contains("4545")),
        "{routes:?}"
    );
    let not_found = [
        ("method", "/ocp.v1.TaskService/GetTask"),
        ("code", "NOT_FOUND"),
    ];
    assert_eq!(scraped.value(GRPC, &not_found), 1.0);

    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_moves_heartbeat_misses_and_hosts_by_status() {
    let mut agent = start_agent(Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (controller, http) = start(dir.path()).await;
    let scrape = Scrape::fetch(http).await;
    assert_eq!(scrape.value(HOSTS, &[]), 0.0, "no host yet");
    assert_eq!(scrape.value(MISSES, &[]), 0.0);
    register(controller.grpc_addr(), &[&agent]).await;
    wait_metric(http, HOSTS, &[("status", "ONLINE")], |n| n == 1.0).await;

    agent.stop().await;
    let offline = wait_metric(http, HOSTS, &[("status", "OFFLINE")], |n| n == 1.0).await;
    assert_eq!(offline.value(HOSTS, &[("status", "ONLINE")]), 0.0);
    assert_eq!(offline.value(HOSTS, &[("status", "NEW")]), 0.0);
    let missed = offline.value(MISSES, &[]);
    assert!(missed >= 1.0, "heartbeats missed: {missed}");
    let refused = offline.value(
        AGENT_CALLS,
        &[("method", "GetAgentInfo"), ("outcome", "unreachable")],
    );
    assert!(refused >= 1.0, "failed checks are timed too: {refused}");

    agent.restart().await;
    wait_metric(http, HOSTS, &[("status", "ONLINE")], |n| n == 1.0).await;
    controller.shutdown().await;
}
