//! The task routes over HTTP: lists filtered and sorted as OCP's BasicTaskInstance,
//! subtask logs, the server-sent event stream resumed with Last-Event-ID, and the
//! operations a task and its subtasks allow.

mod gateway_support;

use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The `seq`s of an SSE body, in order.
fn event_ids(body: &str) -> Vec<i64> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lists_filter_sort_and_leave_subtasks_out() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let mut ids = Vec::new();
    for path in [
        "/compute/hosts/batchStopAgents",
        "/compute/hosts/batchStartAgents",
    ] {
        let id = h.post(path, json!({"hostIds": [host]})).await.json["data"]["id"]
            .as_i64()
            .expect("task id");
        h.wait_task(id).await;
        ids.push(id);
    }

    let list = h.get("/api/v2/tasks/instances?sort=id,asc").await;
    list.expect(StatusCode::OK);
    let contents = list.json["data"]["contents"].as_array().expect("contents");
    let got: Vec<i64> = contents.iter().filter_map(|t| t["id"].as_i64()).collect();
    assert_eq!(got, ids);
    assert!(
        contents.iter().all(|t| t.get("subtasks").is_none()),
        "{}",
        list.text
    );
    assert_eq!(contents[0]["name"], "Batch stop OCP agent");

    let named = h
        .get("/tasks/instances?name=Batch%20start%20OCP%20agent&status=SUCCESSFUL")
        .await;
    assert_eq!(
        named.json["data"]["page"]["totalElements"], 1,
        "{}",
        named.text
    );
    let future = h
        .get("/tasks/instances?createdAfter=2999-01-01T00:00:00.000%2B08:00")
        .await;
    assert_eq!(
        future.json["data"]["page"]["totalElements"], 0,
        "{}",
        future.text
    );

    for (query, field) in [
        ("sort=color,asc", "sort"),
        ("sort=id,sideways", "sort"),
        ("createdAfter=yesterday", "createdAfter"),
        ("status=DONE", "status"),
    ] {
        let r = h.get(&format!("/api/v2/tasks/instances?{query}")).await;
        r.expect(StatusCode::BAD_REQUEST).assert_envelope();
        assert_eq!(
            r.json["error"]["subErrors"][0]["field"], field,
            "{}",
            r.text
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_the_last_event_id_and_logs_tell_what_ran() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let task = h
        .post(
            "/compute/hosts/batchRestartAgents",
            json!({"hostIds": [host]}),
        )
        .await
        .json["data"]
        .clone();
    let id = task["id"].as_i64().expect("task id");
    let done = h.wait_task(id).await;
    assert_eq!(done["status"], "SUCCESSFUL");

    let all = h.get(&format!("/api/v2/tasks/instances/{id}/events")).await;
    all.expect(StatusCode::OK);
    let seqs = event_ids(&all.text);
    assert!(seqs.len() > 10, "{}", all.text);
    assert!(all.text.contains("event: transition"));

    let cut = seqs[seqs.len() / 2];
    let resumed = h
        .http
        .request(
            Method::GET,
            h.url(&format!("/api/v2/tasks/instances/{id}/events")),
        )
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .header("last-event-id", cut.to_string())
        .send()
        .await
        .expect("answer");
    let resumed = Reply::read(resumed).await;
    let expected: Vec<i64> = seqs.iter().copied().filter(|s| *s > cut).collect();
    assert_eq!(event_ids(&resumed.text), expected);

    // A reconnecting client's header does not hide a malformed `after`.
    let bad_after = h
        .http
        .request(
            Method::GET,
            h.url(&format!(
                "/api/v2/tasks/instances/{id}/events?after=-5.2e-164"
            )),
        )
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .header("last-event-id", cut.to_string())
        .send()
        .await
        .expect("answer");
    let bad_after = Reply::read(bad_after).await;
    bad_after.expect(StatusCode::BAD_REQUEST).assert_envelope();
    assert_eq!(
        bad_after.json["error"]["subErrors"][0]["field"], "after",
        "{}",
        bad_after.text
    );

    let stop_all = done["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .find(|s| s["name"] == "Stop all OCP agent processes")
        .expect("stop all");
    let log = h
        .get(&format!(
            "/tasks/instances/{id}/subtasks/{}/log",
            stop_all["id"]
        ))
        .await;
    log.expect(StatusCode::OK);
    let text = log.json["data"]["log"].as_str().expect("log text");
    assert!(
        text.contains("StopAll: "),
        "what the agent answered: {text}"
    );
    for line in text.lines() {
        // "<RFC 3339 time> [<trace id>] <what happened>"
        let (time, rest) = line.split_at(29);
        assert!(
            time.ends_with(":00") || time.contains('+') || time.contains('-'),
            "{line}"
        );
        let trace = rest
            .trim_start()
            .strip_prefix('[')
            .and_then(|r| r.split(']').next());
        assert!(trace.is_some_and(controller::trace::is_valid), "{line}");
    }

    let missing = h
        .send(
            Method::GET,
            &format!("/tasks/instances/{id}/subtasks/987654/log"),
            Some(ADMIN),
            None,
        )
        .await;
    missing.expect(StatusCode::NOT_FOUND).assert_envelope();
    h.stop().await;
}

/// The operations of a task and of each subtask, by name, from a read over REST.
fn allowed(task: &serde_json::Value) -> (serde_json::Value, Vec<(String, serde_json::Value)>) {
    let subtasks = task["subtasks"]
        .as_array()
        .map(|subs| {
            subs.iter()
                .map(|s| {
                    (
                        s["status"].as_str().unwrap_or_default().to_string(),
                        s["allowedOperations"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (task["allowedOperations"].clone(), subtasks)
}

/// A task's JSON and its subtasks' say which operations their state admits, by the rule
/// the controller checks when one is asked for: a FAILED task offers retry and rollback
/// and its FAILED step retry and skip; a SUCCESSFUL task, rolled back or not, offers
/// nothing, and what it does not offer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_subtasks_name_the_operations_they_allow() {
    let h = Harness::start(true).await;
    // A host whose address answers gRPC but is no agent (the controller's own): its
    // first step fails at once, and not transiently.
    let impostor = h.add_host("127.0.0.1", h.grpc_addr().port()).await;
    let harness = &h;
    let post =
        |path: String| async move { harness.send(Method::POST, &path, Some(ADMIN), None).await };
    let started = post(format!("/api/v2/compute/hosts/{impostor}/agent/restart")).await;
    started.expect(StatusCode::OK);
    let id = started.json["data"]["id"].as_i64().expect("task id");
    let failed = h.wait_task(id).await;
    assert_eq!(failed["status"], "FAILED", "{failed:#}");
    let (task_ops, subtask_ops) = allowed(&failed);
    assert_eq!(task_ops, json!(["RETRY", "ROLLBACK"]), "{failed:#}");
    assert!(subtask_ops.iter().any(|(status, _)| status == "FAILED"));
    for (status, ops) in &subtask_ops {
        let expected = if status == "FAILED" {
            json!(["RETRY", "SKIP"])
        } else {
            json!([])
        };
        assert_eq!(ops, &expected, "a {status} subtask: {failed:#}");
    }
    // Task lists carry the task's own.
    let listed = h.get("/api/v2/tasks/instances?status=FAILED").await;
    assert_eq!(
        listed.json["data"]["contents"][0]["allowedOperations"],
        json!(["RETRY", "ROLLBACK"]),
        "{}",
        listed.text
    );

    // What is offered is accepted: the rollback runs, and a running task offers nothing.
    let rolling_back = post(format!("/api/v2/tasks/instances/{id}/rollback")).await;
    rolling_back.expect(StatusCode::OK);
    if rolling_back.json["data"]["status"] == "RUNNING" {
        assert_eq!(rolling_back.json["data"]["allowedOperations"], json!([]));
    }
    let rolled_back = h.wait_task(id).await;
    assert_eq!(
        (&rolled_back["status"], &rolled_back["operation"]),
        (&json!("SUCCESSFUL"), &json!("ROLLBACK")),
        "{rolled_back:#}"
    );
    let (task_ops, subtask_ops) = allowed(&rolled_back);
    assert_eq!(task_ops, json!([]));
    assert!(subtask_ops.iter().all(|(_, ops)| ops == &json!([])));
    let refused = post(format!("/api/v2/tasks/instances/{id}/retry")).await;
    refused.expect(StatusCode::BAD_REQUEST).assert_envelope();
    assert_eq!(refused.code(), 20003, "{}", refused.text);

    // A task that did its work offers nothing either.
    let host = h.add_agent_host().await;
    let done = h
        .post(
            "/api/v2/compute/hosts/batchRestartAgents",
            json!({"hostIds": [host]}),
        )
        .await;
    done.expect(StatusCode::OK);
    let done = h
        .wait_task(done.json["data"]["id"].as_i64().expect("task id"))
        .await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
    let (task_ops, subtask_ops) = allowed(&done);
    assert_eq!(task_ops, json!([]));
    assert_eq!(subtask_ops.len(), 9);
    assert!(
        subtask_ops
            .iter()
            .all(|(status, ops)| status == "SUCCESSFUL" && ops == &json!([])),
        "{done:#}"
    );
    let refused = post(format!("/api/v2/tasks/instances/{}/rollback", done["id"])).await;
    refused.expect(StatusCode::BAD_REQUEST).assert_envelope();
    assert_eq!(refused.code(), 20003, "{}", refused.text);
    h.stop().await;
}

/// The keys of `object` that the OpenAPI document's schema `name` does not list, and
/// those it requires that `object` lacks.
fn off_schema(doc: &serde_json::Value, name: &str, object: &serde_json::Value) -> Vec<String> {
    let schema = &doc["components"]["schemas"][name];
    let listed = schema["properties"].as_object().expect("properties");
    let keys = object.as_object().expect("an object");
    let mut off: Vec<String> = keys
        .keys()
        .filter(|k| !listed.contains_key(*k))
        .map(|k| format!("{name}: {k} is not documented"))
        .collect();
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().expect("a key");
        if !keys.contains_key(required) {
            off.push(format!("{name}: {required} is missing"));
        }
    }
    off
}

/// A batch restart over one host: every per-host subtask a read shows carries the host,
/// the barriers none; every subtask event names its subtask's name and host beside its
/// status, the task's own events none of them; and the OpenAPI document lists every key
/// of both, so the schema the API is checked against is the one served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtasks_and_their_events_carry_their_host_as_documented() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let created = h
        .post(
            "/compute/hosts/batchRestartAgents",
            json!({"hostIds": [host]}),
        )
        .await;
    created.expect(StatusCode::OK);
    let id = created.json["data"]["id"].as_i64().expect("task id");
    let done = h.wait_task(id).await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
    let doc = h.get("/api/v2/openapi.json").await.json;

    let subtasks = done["subtasks"].as_array().expect("subtasks");
    for s in subtasks {
        let expected = (s["name"] != "Wait node").then_some(host);
        assert_eq!(s.get("hostId").and_then(|v| v.as_i64()), expected, "{s:#}");
        assert_eq!(off_schema(&doc, "SubtaskJson", s), Vec::<String>::new());
    }

    let stream = h.get(&format!("/api/v2/tasks/instances/{id}/events")).await;
    stream.expect(StatusCode::OK);
    let events: Vec<serde_json::Value> = stream
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("an event's JSON"))
        .collect();
    assert!(events.len() > 10, "{}", stream.text);
    for e in &events {
        assert_eq!(off_schema(&doc, "TaskEventJson", e), Vec::<String>::new());
        assert!(
            e.get("takenOverBy").is_none(),
            "nothing was taken over: {e:#}"
        );
        match e["subtaskId"].as_i64() {
            Some(sid) => {
                let s = subtasks
                    .iter()
                    .find(|s| s["id"].as_i64() == Some(sid))
                    .expect("the event's subtask");
                assert_eq!(e["name"], s["name"], "{e:#}");
                assert_eq!(e.get("hostId"), s.get("hostId"), "{e:#}");
            }
            None => assert!(
                e.get("name").is_none() && e.get("hostId").is_none(),
                "{e:#}"
            ),
        }
    }
    let stop_all: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "Stop all OCP agent processes")
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(stop_all, ["READY", "RUNNING", "SUCCESSFUL"], "{events:#?}");
    h.stop().await;
}
