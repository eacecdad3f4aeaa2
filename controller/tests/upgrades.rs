//! Agent upgrades in place, driven by the real controller binary against real agent
//! binaries: every agent and every supervised process keeps its pid, the agents answer
//! throughout, a bad package changes nothing, a rolled-back upgrade restores the
//! versions, and SIGKILL of the controller mid-upgrade restarts nothing.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::binary::SpawnedController;
use common::fleet::free_port;
use common::proc_agent::{ProcAgent, listener_process, unique_tag};
use proto::agent::v1::{AgentInfo, GetAgentInfoRequest};
use serde_json::{Value, json};
use test_support::agent_calls::{Pestered, pester};
use test_support::bins::workspace_bin;

/// What `ProcAgent` configures its agents as.
const OLD: &str = "4.2.1-test";
const NEW: &str = "9.9.9-up";

async fn fleet(n: usize) -> Vec<ProcAgent> {
    let mut agents = Vec::new();
    for _ in 0..n {
        let tag = unique_tag();
        let addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = listener_process(&tag, "127.0.0.1", "");
        agents.push(ProcAgent::start(addr, &[], tag, &config).await);
    }
    for agent in &agents {
        agent.started_listener().await;
    }
    agents
}

/// Uploads `binary` as `version`; the package's id.
async fn upload(controller: &SpawnedController, version: &str, binary: &std::path::Path) -> i64 {
    let body = std::fs::read(binary).expect("read the binary");
    let reply: Value = reqwest::Client::new()
        .post(controller.url(&format!("/api/v2/agent/packages?version={version}")))
        .basic_auth("admin", Some(&controller.password))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    assert_eq!(reply["data"]["version"], version, "{reply}");
    reply["data"]["id"].as_i64().expect("package id")
}

async fn register(controller: &SpawnedController, agents: &[ProcAgent]) -> Vec<i64> {
    let mut ids = Vec::new();
    for agent in agents {
        let host = controller
            .rest(
                "POST",
                "/api/v2/compute/hosts",
                json!({"innerIpAddress": agent.addr.ip().to_string(), "agentPort": agent.addr.port()}),
            )
            .await;
        ids.push(host["id"].as_i64().expect("host id"));
    }
    ids
}

async fn info(agent: &ProcAgent) -> AgentInfo {
    agent
        .client()
        .await
        .expect("connect")
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect("GetAgentInfo")
        .into_inner()
}

/// Each agent's pid and its processes' pids.
async fn pids(agents: &[ProcAgent]) -> Vec<(u32, HashMap<String, u32>)> {
    let mut all = Vec::new();
    for agent in agents {
        let processes = agent
            .processes()
            .await
            .into_iter()
            .map(|p| (p.alias, p.pid))
            .collect();
        all.push((info(agent).await.pid, processes));
    }
    all
}

async fn submit(controller: &SpawnedController, path: &str, body: Value) -> i64 {
    let task = controller.rest("POST", path, body).await;
    task["id"].as_i64().expect("task id")
}

async fn ended(controller: &SpawnedController, id: i64) -> Value {
    controller.wait_task(id, |t| t["status"] != "RUNNING").await
}

/// The log of the first subtask named `name` (of the host at `index`, when given).
async fn log_of(controller: &SpawnedController, task: &Value, name: &str) -> String {
    let subtask = task["subtasks"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["name"] == name && s["status"] == "FAILED")
        })
        .or_else(|| {
            task["subtasks"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name))
        })
        .unwrap_or_else(|| panic!("no subtask {name}: {task}"));
    let path = format!(
        "/api/v2/tasks/instances/{}/subtasks/{}/log",
        task["id"], subtask["id"]
    );
    controller.rest("GET", &path, Value::Null).await.to_string()
}

/// The logs of the task's failed subtasks, for an assertion's message.
async fn failures(controller: &SpawnedController, task: &Value) -> String {
    let mut said = String::new();
    for subtask in task["subtasks"].as_array().into_iter().flatten() {
        if subtask["status"] == "FAILED" {
            let path = format!(
                "/api/v2/tasks/instances/{}/subtasks/{}/log",
                task["id"], subtask["id"]
            );
            let log = controller.rest("GET", &path, Value::Null).await;
            said.push_str(&format!(
                "{} (host {}): {log}\n",
                subtask["name"], subtask["hostId"]
            ));
        }
    }
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_task_upgrades_three_agents_under_their_running_processes() {
    let agents = fleet(3).await;
    let controller = SpawnedController::start(&["--heartbeat-interval", "1s"]).await;
    upload(&controller, NEW, &workspace_bin("ocp-agent")).await;
    let hosts = register(&controller, &agents).await;
    let before = pids(&agents).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut probes = Vec::new();
    for agent in &agents {
        probes.push(pester(agent.client().await.expect("connect"), stop.clone()));
    }
    let id = submit(
        &controller,
        "/api/v2/compute/hosts/batchUpgradeAgents",
        json!({"hostIds": hosts, "version": NEW}),
    )
    .await;
    let done = ended(&controller, id).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        done["status"],
        "SUCCESSFUL",
        "{}",
        failures(&controller, &done).await
    );
    assert_eq!(done["name"], "Batch upgrade OCP agent");
    for probe in probes {
        let Pestered {
            errors,
            slowest,
            calls,
        } = probe.await.expect("probe");
        assert!(
            errors.is_empty(),
            "{} of {calls} calls failed: {errors:?}",
            errors.len()
        );
        eprintln!("an agent answered {calls} calls during the upgrade, the slowest in {slowest:?}");
    }

    assert_eq!(
        pids(&agents).await,
        before,
        "no agent and no process changed pid"
    );
    for (agent, host) in agents.iter().zip(&hosts) {
        let now = info(agent).await;
        assert_eq!(
            (now.version.as_str(), now.committed_version.as_str()),
            (NEW, NEW)
        );
        let reported = controller
            .rest(
                "GET",
                &format!("/api/v2/compute/hosts/{host}/agent"),
                Value::Null,
            )
            .await;
        assert_eq!(reported["version"], NEW, "{reported}");
        assert_eq!(agent.live_copies("listener").len(), 1);
    }

    for (version, hosts) in [(NEW, 3), (OLD, 0)] {
        let path = format!("/api/v2/compute/hosts?agentVersion={version}");
        let page = controller.rest("GET", &path, Value::Null).await;
        assert_eq!(page["page"]["totalElements"], hosts, "{version}: {page}");
    }

    let scraped = test_support::scrape::Scrape::fetch(controller.http).await;
    let by_version = "ocp_controller_hosts_by_agent_version";
    assert_eq!(scraped.value(by_version, &[("version", NEW)]), 3.0);
    assert_eq!(
        scraped.label_values(by_version, "version"),
        vec![NEW.to_string()]
    );

    // Again: every host is at the version, and every step says so.
    let again = submit(
        &controller,
        &format!("/api/v2/compute/hosts/{}/agent/upgrade", hosts[0]),
        json!({"version": NEW}),
    )
    .await;
    let again = ended(&controller, again).await;
    assert_eq!(again["status"], "SUCCESSFUL", "{again}");
    assert!(
        log_of(&controller, &again, "Switch OCP agent")
            .await
            .contains("already runs agent version")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_failing_its_self_check_leaves_the_host_as_it_was() {
    let agents = fleet(1).await;
    let controller = SpawnedController::start(&["--heartbeat-interval", "1s"]).await;
    let package = upload(&controller, "exits-1", std::path::Path::new("/bin/false")).await;
    let hosts = register(&controller, &agents).await;
    let before = pids(&agents).await;
    let id = submit(
        &controller,
        &format!("/api/v2/compute/hosts/{}/agent/upgrade", hosts[0]),
        json!({"version": "exits-1"}),
    )
    .await;
    let done = ended(&controller, id).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let log = log_of(&controller, &done, "Switch OCP agent").await;
    assert!(log.contains("the new agent exited with status 1"), "{log}");
    assert_eq!(pids(&agents).await, before);
    assert_eq!(info(&agents[0]).await.version, OLD);

    // The failed task may be retried: its package stays until it ends.
    let in_use = reqwest::Client::new()
        .delete(controller.url(&format!("/api/v2/agent/packages/{package}")))
        .basic_auth("admin", Some(&controller.password))
        .send()
        .await
        .expect("request");
    assert_eq!(in_use.status(), reqwest::StatusCode::CONFLICT);
    let in_use: Value = in_use.json().await.expect("json");
    assert!(
        in_use["error"]["message"]
            .to_string()
            .contains(&format!("unfinished task {id}")),
        "{in_use}"
    );

    // An unknown version is refused before any task is made.
    let refused: Value = reqwest::Client::new()
        .post(controller.url(&format!("/api/v2/compute/hosts/{}/agent/upgrade", hosts[0])))
        .basic_auth("admin", Some(&controller.password))
        .json(&json!({"version": "never-uploaded"}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(refused["status"], 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .to_string()
            .contains("upload it first"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rolling_upgrade_rolled_back_restores_every_version() {
    let agents = fleet(2).await;
    let controller = SpawnedController::start(&["--heartbeat-interval", "1s"]).await;
    upload(&controller, NEW, &workspace_bin("ocp-agent")).await;
    let hosts = register(&controller, &agents).await;
    let before = pids(&agents).await;
    // A config the new version cannot read: its self-check fails on the second host.
    std::fs::write(
        agents[1].data_dir().join("../agent.toml"),
        "[[process]]\nalias = 7\n",
    )
    .expect("spoil the second agent's config");
    let id = submit(
        &controller,
        "/api/v2/compute/hosts/batchUpgradeAgents",
        json!({"hostIds": hosts, "version": NEW, "rollout": {"batchSize": 1}}),
    )
    .await;
    let failed = ended(&controller, id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let log = log_of(&controller, &failed, "Switch OCP agent").await;
    assert!(log.contains("the new agent exited with status 1"), "{log}");
    assert_eq!(
        info(&agents[0]).await.committed_version,
        NEW,
        "the first batch went through"
    );

    controller
        .rest(
            "POST",
            &format!("/api/v2/tasks/instances/{id}/rollback"),
            Value::Null,
        )
        .await;
    let rolled = ended(&controller, id).await;
    assert_eq!(rolled["status"], "SUCCESSFUL", "{rolled}");
    for agent in &agents {
        let now = info(agent).await;
        assert_eq!(
            (now.version.as_str(), now.committed_version.as_str()),
            (OLD, OLD)
        );
    }
    assert_eq!(
        pids(&agents).await,
        before,
        "no agent and no process changed pid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_controller_mid_upgrade_restarts_no_process() {
    let agents = fleet(10).await;
    let mut controller = SpawnedController::start(&["--heartbeat-interval", "1s"]).await;
    upload(&controller, NEW, &workspace_bin("ocp-agent")).await;
    let hosts = register(&controller, &agents).await;
    let before = pids(&agents).await;
    let id = submit(
        &controller,
        "/api/v2/compute/hosts/batchUpgradeAgents",
        json!({"hostIds": hosts, "version": NEW}),
    )
    .await;
    controller
        .wait_task(id, |t| {
            t["subtasks"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == "Switch OCP agent" && s["status"] != "PENDING")
            })
        })
        .await;
    controller.crash_and_restart().await;
    let done = ended(&controller, id).await;
    assert_eq!(
        done["status"],
        "SUCCESSFUL",
        "{}",
        failures(&controller, &done).await
    );
    assert_eq!(
        pids(&agents).await,
        before,
        "no agent and no process changed pid"
    );
    for agent in &agents {
        assert_eq!(info(agent).await.committed_version, NEW);
        assert_eq!(agent.live_copies("listener").len(), 1);
    }
}
