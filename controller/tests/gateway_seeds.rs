//! The seeds' own example requests, sent to a live controller driving a live agent;
//! the answers must have the seeds' example responses' shape, key for key and type
//! for type, all the way down.

mod gateway_support;

use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn seed_request(name: &str, host_id: i64) -> String {
    // The seeds address host 2; ours has the id the store gave it.
    let mut request = fixture(name);
    for ids in request.as_object_mut().expect("object").values_mut() {
        *ids = Value::from(vec![host_id]);
    }
    request.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_get_seed_shaped_answers() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;

    // batch-restart-agents, with the documented lower-case `hostids`, on both prefixes.
    for (prefix, request, response) in [
        (
            "",
            "batch-restart-agents.request.json",
            "batch-restart-agents.response.json",
        ),
        (
            "/api/v2",
            "batch-restart-agents.zh.request.json",
            "batch-restart-agents.zh.response.json",
        ),
    ] {
        let reply = h
            .send(
                Method::POST,
                &format!("{prefix}/compute/hosts/batchRestartAgents"),
                Some(ADMIN),
                Some(&seed_request(request, host)),
            )
            .await;
        reply.expect(StatusCode::OK).assert_envelope();
        assert_same_shape(&fixture(response), &reply.json);
        let data = &reply.json["data"];
        assert_eq!(data["name"], "Batch restart OCP agent");
        assert_eq!(data["status"], "RUNNING");
        assert_eq!(data["creator"], ADMIN);
        assert_eq!(data["subtasks"].as_array().map(Vec::len), Some(9));
        for s in data["subtasks"].as_array().into_iter().flatten() {
            // An addition of this controller's: the host of each per-host step.
            let barrier = s["name"] == "Wait node";
            assert_eq!(
                s.get("hostId").and_then(Value::as_i64),
                (!barrier).then_some(host),
                "{s:#}"
            );
        }
        assert_eq!(data["context"]["listMap"]["host_ids"][0], host.to_string());
        assert!(data.get("hostId").is_none(), "batch tasks have no hostId");
        let done = h.wait_task(data["id"].as_i64().expect("id")).await;
        assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
        assert!(done["finishTime"].is_string(), "{done:#}");
    }

    // batch-stop-agents with `hostIds`.
    let reply = h
        .send(
            Method::POST,
            "/compute/hosts/batchStopAgents",
            Some(ADMIN),
            Some(&seed_request("batch-stop-agents.request.json", host)),
        )
        .await;
    reply.expect(StatusCode::OK).assert_envelope();
    assert_same_shape(&fixture("batch-stop-agents.response.json"), &reply.json);
    assert_eq!(reply.json["data"]["name"], "Batch stop OCP agent");
    h.wait_task(reply.json["data"]["id"].as_i64().expect("id"))
        .await;

    // restart-agent: a single-host task carries hostId and stringMap.host_id.
    let reply = h
        .send(
            Method::POST,
            &format!("/compute/hosts/{host}/agent/restart"),
            Some(ADMIN),
            None,
        )
        .await;
    reply.expect(StatusCode::OK).assert_envelope();
    assert_same_shape(&fixture("restart-agent.response.json"), &reply.json);
    assert_eq!(reply.json["data"]["hostId"], host);
    assert_eq!(
        reply.json["data"]["context"]["stringMap"]["host_id"],
        host.to_string()
    );
    let done = h
        .wait_task(reply.json["data"]["id"].as_i64().expect("id"))
        .await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");

    // restart-agent-process: answers after the agent restarted it, with all 14 fields.
    let process = h.process_id(host, "ob_cleaner").await;
    let before = h
        .get(&format!("/compute/hosts/{host}/agent/processes?size=100"))
        .await;
    let listed = before.json["data"]["contents"]
        .as_array()
        .and_then(|c| c.iter().find(|p| p["id"] == process))
        .expect("ob_cleaner listed");
    // A work process starts with its agent (autostart), as the seed shows it STARTED.
    assert_eq!(listed["status"], "STARTED", "{listed}");
    let old_pid = listed["pid"].clone();
    let reply = h
        .send(
            Method::POST,
            &format!("/compute/hosts/{host}/agent/processes/{process}/restart"),
            Some(ADMIN),
            None,
        )
        .await;
    reply.expect(StatusCode::OK).assert_envelope();
    assert_same_shape(&fixture("restart-agent-process.response.json"), &reply.json);
    let data = &reply.json["data"];
    assert_eq!(data.as_object().map(|o| o.len()), Some(14));
    assert_eq!(data["status"], "STARTED");
    assert_eq!(data["id"], process);
    assert_ne!(data["pid"], old_pid, "a restart gives a new pid");
    assert_eq!(
        data["logFilePattern"]
            .as_str()
            .map(|p| p.ends_with("ob_cleaner.log*")),
        Some(true)
    );

    // stop and start of one process answer with the process as it is then.
    let stopped = h
        .send(
            Method::POST,
            &format!("/compute/hosts/{host}/agent/processes/{process}/stop"),
            Some(ADMIN),
            None,
        )
        .await;
    stopped.expect(StatusCode::OK);
    assert_eq!(
        stopped.json["data"]["status"], "STOPPED",
        "{}",
        stopped.text
    );
    let started = h
        .send(
            Method::POST,
            &format!("/compute/hosts/{host}/agent/processes/{process}/start"),
            Some(ADMIN),
            None,
        )
        .await;
    started.expect(StatusCode::OK);
    assert_eq!(
        started.json["data"]["status"], "STARTED",
        "{}",
        started.text
    );

    // HostAgent and Host documents.
    let agent = h.get(&format!("/compute/hosts/{host}/agent")).await;
    agent.expect(StatusCode::OK).assert_envelope();
    let data = &agent.json["data"];
    for key in [
        "id",
        "hostId",
        "hostInnerIpAddress",
        "version",
        "installHome",
        "logHome",
        "status",
        "lastAvailableTime",
        "processes",
        "createTime",
        "updateTime",
    ] {
        assert!(data.get(key).is_some(), "HostAgent lacks {key}: {data:#}");
    }
    assert_eq!(data["version"], "4.2.1");
    assert_eq!(data["processes"].as_array().map(Vec::len), Some(3));
    for p in data["processes"].as_array().into_iter().flatten() {
        let mut seed = fixture("restart-agent-process.response.json")["data"].clone();
        if p.get("lastActiveTime").is_none() {
            seed.as_object_mut().map(|o| o.remove("lastActiveTime"));
        }
        assert_same_shape(&seed, p);
    }

    let hosts = h.get("/compute/hosts").await;
    hosts.expect(StatusCode::OK).assert_envelope();
    let page = &hosts.json["data"]["page"];
    assert_eq!(page["totalElements"], 1);
    assert_eq!(page["totalPages"], 1);
    assert_eq!(page["number"], 1);
    assert_eq!(page["size"], 10);
    let host_json = &hosts.json["data"]["contents"][0];
    let mut keys: Vec<_> = host_json
        .as_object()
        .expect("host")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "agentPort",
            // Not in OCP's Host: the version its agent runs.
            "agentVersion",
            "createTime",
            "id",
            "innerIpAddress",
            "name",
            "status",
            // Not in OCP's Host: why the agent could not be reached (issue 11).
            "statusReason",
            "updateTime"
        ]
    );

    let tasks = h.get("/tasks/instances?size=2&page=2").await;
    tasks.expect(StatusCode::OK).assert_envelope();
    assert_eq!(tasks.json["data"]["page"]["totalElements"], 4);
    assert_eq!(tasks.json["data"]["page"]["totalPages"], 2);
    assert_eq!(
        tasks.json["data"]["contents"].as_array().map(Vec::len),
        Some(2)
    );

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_reaches_the_task_and_comes_back() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let trace = "0123456789abcdef";
    let response = h
        .http
        .post(h.url(&format!("/compute/hosts/{host}/agent/restart")))
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .header("x-trace-id", trace)
        .send()
        .await
        .expect("answer");
    let reply = Reply::read(response).await;
    reply.expect(StatusCode::OK).assert_envelope();
    assert_eq!(reply.json["traceId"], trace);
    let id = reply.json["data"]["id"].as_i64().expect("id");
    h.wait_task(id).await;
    let task = h
        .store()
        .await
        .get_task(id)
        .await
        .expect("store")
        .expect("task");
    assert_eq!(task.trace_id, trace);
    let logs = h
        .store()
        .await
        .subtask_log(task.subtasks[0].id)
        .await
        .expect("log");
    assert!(!logs.is_empty(), "the first subtask logged nothing");
    assert!(logs.iter().all(|l| l.trace_id == trace), "{logs:?}");

    // An id not of OCP's form is replaced by a fresh one.
    let response = h
        .http
        .get(h.url("/compute/hosts"))
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .header("x-trace-id", "not-a-trace-id")
        .send()
        .await
        .expect("answer");
    let reply = Reply::read(response).await;
    reply.expect(StatusCode::OK).assert_envelope();
    assert_ne!(reply.json["traceId"], "not-a-trace-id");
    h.stop().await;
}
