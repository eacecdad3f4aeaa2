//! Operations racing for hosts: one wins, the others are told who holds the host, and
//! a thousand concurrent submissions over fifty hosts all end cleanly.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::fleet::*;
use controller::Controller;
use futures::StreamExt;
use proto::ocp::v1::{
    BatchStopAgentsRequest, ListHostAgentProcessesRequest, RestartAgentProcessRequest,
    RestartAgentRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_operations_on_one_host_admit_exactly_one() {
    // Slow starts keep the winner running while the others are refused.
    let busy = start_agent(Duration::from_millis(1500)).await;
    let other = start_agent(Duration::from_millis(1500)).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &[&busy, &other]).await;

    let attempts = futures::future::join_all((0..10).map(|i| {
        let grpc = controller.grpc;
        let host = hosts[0];
        async move {
            let mut client = hosts_client(grpc).await;
            if i % 2 == 0 {
                client
                    .restart_agent(RestartAgentRequest { host_id: host })
                    .await
            } else {
                client
                    .batch_stop_agents(BatchStopAgentsRequest {
                        host_ids: vec![host],
                        rollout: None,
                    })
                    .await
            }
        }
    }))
    .await;
    let accepted: Vec<_> = attempts.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 1, "{attempts:#?}");
    let winner = accepted[0].get_ref().id;
    for refused in attempts.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), tonic::Code::AlreadyExists);
        assert!(
            refused.message().contains(&format!("task {winner}")),
            "{}",
            refused.message()
        );
    }

    // Another host is not held up by it, and a per-process operation on the busy host is
    // refused the same way.
    let mut client = hosts_client(controller.grpc).await;
    let parallel = client
        .restart_agent(RestartAgentRequest { host_id: hosts[1] })
        .await
        .expect("a different host proceeds")
        .into_inner();
    let processes = client
        .list_host_agent_processes(ListHostAgentProcessesRequest {
            host_id: hosts[0],
            page: 1,
            size: 10,
        })
        .await
        .expect("list")
        .into_inner();
    let e = client
        .restart_agent_process(RestartAgentProcessRequest {
            host_id: hosts[0],
            agent_process_id: processes.contents[0].id,
        })
        .await
        .expect_err("the host is inside a task");
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(
        e.message().contains(&format!("task {winner}")),
        "{}",
        e.message()
    );

    for id in [winner, parallel.id] {
        let done = wait_for_end(controller.grpc, id).await;
        let why = explain(controller.grpc, &done).await;
        assert_eq!(done.status, "SUCCESSFUL", "{why}");
    }
    controller.shutdown().await;
}

/// A thousand batch submissions over fifty hosts at once, through the REST gateway: most
/// are refused as conflicts, the rest run; no 5xx, no dropped connection, and every
/// accepted task ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_submissions_over_fifty_hosts_all_end_cleanly() {
    const HOSTS: usize = 50;
    const SUBMISSIONS: usize = 1000;
    let mut agents = Vec::new();
    for _ in 0..HOSTS {
        agents.push(start_agent(Duration::ZERO).await);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = controller_options(dir.path(), Some(Duration::from_secs(30)));
    options.http_addr = Some("127.0.0.1:0".parse().expect("addr"));
    let controller = Controller::start(options).await.expect("controller");
    let grpc = controller.grpc_addr();
    let base = format!("http://{}", controller.http_addr().expect("http"));
    let hosts = register(grpc, &agents.iter().collect::<Vec<_>>()).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let auth = controller::auth::basic_header("admin", ADMIN_PASSWORD);
    let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..SUBMISSIONS)
        .map(|i| {
            let (http, auth, base) = (http.clone(), auth.clone(), base.clone());
            // One to three hosts each, overlapping on purpose.
            let ids: Vec<i64> = (0..1 + i % 3)
                .map(|k| hosts[(i * 7 + k * 13) % HOSTS])
                .collect();
            let route = ["batchRestartAgents", "batchStopAgents", "batchStartAgents"][i % 3];
            async move {
                let response = http
                    .post(format!("{base}/api/v2/compute/hosts/{route}"))
                    .header("authorization", auth)
                    .json(&serde_json::json!({ "hostIds": ids }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("submission {i} lost its connection: {e}"));
                let status = response.status().as_u16();
                (status, response.json().await.expect("an envelope"))
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;

    let mut accepted = HashSet::new();
    for (status, body) in &answers {
        match status {
            200 => {
                accepted.insert(body["data"]["id"].as_i64().expect("task id"));
            }
            409 => assert_eq!(body["error"]["code"], 40000, "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        !accepted.is_empty() && accepted.len() < SUBMISSIONS,
        "{}",
        accepted.len()
    );
    for &id in &accepted {
        let end = wait_for_end(grpc, id).await;
        assert!(
            end.status == "SUCCESSFUL" || end.status == "FAILED",
            "{end:#?}"
        );
    }
    eprintln!(
        "{SUBMISSIONS} submissions over {HOSTS} hosts: {} accepted, {} refused as conflicts",
        accepted.len(),
        SUBMISSIONS - accepted.len()
    );
    controller.shutdown().await;
}
