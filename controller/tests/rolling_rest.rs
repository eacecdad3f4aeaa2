//! The REST face of rolling operations: bad rollouts are 400s naming every bad field,
//! a rolling task reads back its rollout, and pause or resume of a task that is not a
//! RUNNING rolling one is 20003.

mod gateway_support;

use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BATCH: &str = "/api/v2/compute/hosts/batchRestartAgents";

/// The field and rejected value of each subError, in order.
fn sub_errors(reply: &Reply) -> Vec<(String, Value)> {
    reply.json["error"]["subErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("no subErrors: {}", reply.text))
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap_or_default().to_string(),
                e["rejectedValue"].clone(),
            )
        })
        .collect()
}

async fn refused(h: &Harness, body: Value) -> Reply {
    let reply = h.post(BATCH, body.clone()).await;
    reply.assert_envelope();
    reply.expect(StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), 10001, "{body}: {}", reply.text);
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollouts_are_400_naming_every_bad_field_and_create_nothing() {
    let h = Harness::start(false).await;
    let host = h.add_host("127.0.0.9", 1).await;
    let hosts = json!([host]);

    let r = refused(
        &h,
        json!({"hostIds": hosts, "rollout": {"batchSize": 0, "maxFailedHosts": -1,
            "pauseSeconds": -5, "minHealthySeconds": 3601}}),
    )
    .await;
    assert_eq!(
        sub_errors(&r),
        vec![
            ("rollout.batchSize".to_string(), json!("0")),
            ("rollout.maxFailedHosts".to_string(), json!("-1")),
            ("rollout.pauseSeconds".to_string(), json!("-5")),
            ("rollout.minHealthySeconds".to_string(), json!("3601")),
        ]
    );
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rollout.pauseSeconds: must be 0 or more, got -5"),
        "{message}"
    );

    for (batch_size, why) in [
        (json!("0%"), "a percentage"),
        (json!("101%"), "more than every host"),
        (json!("x"), "a number of hosts"),
        (json!(-2), "a number of hosts"),
        // Not exactly a count or a percentage: a typo is refused, not read kindly.
        (json!("50 %"), "no spaces, signs or leading zeros"),
        (json!(" 3"), "no spaces, signs or leading zeros"),
        (json!("03"), "no spaces, signs or leading zeros"),
    ] {
        let r = refused(
            &h,
            json!({"hostIds": hosts, "rollout": {"batchSize": batch_size}}),
        )
        .await;
        assert_eq!(sub_errors(&r)[0].0, "rollout.batchSize");
        assert!(r.text.contains(why), "{batch_size}: {}", r.text);
    }
    // Wrong types are named with the wrong values, in one answer; unknown fields by
    // their path.
    let r = refused(
        &h,
        json!({"hostIds": hosts, "rollout": {"batchSize": 2.5, "pauseSeconds": "soon",
            "maxFailedHosts": -3, "pauseAfterFirstBatch": "yes"}}),
    )
    .await;
    let fields: Vec<String> = sub_errors(&r).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "rollout.batchSize",
            "rollout.maxFailedHosts",
            "rollout.pauseSeconds",
            "rollout.pauseAfterFirstBatch"
        ]
    );
    let r = refused(
        &h,
        json!({"hostIds": hosts, "rollout": {"maxFailedHost": 1}}),
    )
    .await;
    assert_eq!(sub_errors(&r)[0].0, "rollout.maxFailedHost");
    // A rollout is an object or null: an array of its fields is not one, nor is a
    // body that is an array.
    for rollout in [json!(3), json!([]), json!([2, 0]), json!("25%")] {
        let r = refused(&h, json!({"hostIds": hosts, "rollout": rollout})).await;
        assert_eq!(sub_errors(&r)[0].0, "rollout", "{rollout}: {}", r.text);
    }
    let r = refused(&h, json!([hosts, {"batchSize": 1}])).await;
    assert_eq!(sub_errors(&r)[0].0, "body", "{}", r.text);

    let tasks = h.get("/api/v2/tasks/instances").await;
    tasks.expect(StatusCode::OK);
    assert_eq!(
        tasks.json["data"]["page"]["totalElements"], 0,
        "{}",
        tasks.text
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_task_reads_back_its_rollout_and_pauses_only_while_running() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;

    // A stage-wise task: no rollout, no paused field, and no pause.
    let staged = h.post(BATCH, json!({"hostIds": [host]})).await;
    staged.expect(StatusCode::OK);
    assert!(
        staged.json["data"].get("rollout").is_none(),
        "{}",
        staged.text
    );
    assert!(
        staged.json["data"].get("paused").is_none(),
        "{}",
        staged.text
    );
    let staged_id = staged.json["data"]["id"].as_i64().expect("id");
    let r = h
        .send(
            Method::POST,
            &format!("/api/v2/tasks/instances/{staged_id}/pause"),
            Some(ADMIN),
            None,
        )
        .await;
    r.expect(StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), 20003);
    assert!(r.text.contains("not a rolling task"), "{}", r.text);
    h.wait_task(staged_id).await;

    let rolling = h
        .post(
            BATCH,
            json!({"hostIds": [host], "rollout": {"batchSize": "25%", "maxFailedHosts": 2,
                "minHealthySeconds": 1}}),
        )
        .await;
    rolling.expect(StatusCode::OK);
    let data = &rolling.json["data"];
    assert_eq!(
        data["rollout"],
        json!({"batchSize": "25%", "maxFailedHosts": 2, "pauseSeconds": 0,
            "minHealthySeconds": 1, "pauseAfterFirstBatch": false, "hostsPerBatch": 1}),
    );
    // Start all's timeout holds the health wait on top of its own 600 s.
    let start_all = data["subtasks"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["name"] == "Start all OCP agent processes")
        })
        .expect("start all");
    assert_eq!(start_all["timeout"], 601);
    assert_eq!(data["paused"], false);
    let id = data["id"].as_i64().expect("id");
    let done = h.wait_task(id).await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done}");
    assert_eq!(done["paused"], false);
    // Ended: neither pause nor resume applies any more.
    for action in ["pause", "resume"] {
        let r = h
            .send(
                Method::POST,
                &format!("/api/v2/tasks/instances/{id}/{action}"),
                Some(ADMIN),
                None,
            )
            .await;
        r.expect(StatusCode::BAD_REQUEST);
        assert_eq!(r.code(), 20003, "{action}: {}", r.text);
    }
    let r = h
        .send(
            Method::POST,
            "/api/v2/tasks/instances/999999/resume",
            Some(ADMIN),
            None,
        )
        .await;
    r.expect(StatusCode::NOT_FOUND);
    assert_eq!(r.code(), 20000);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_over_rest_holds_the_next_batch_and_a_resume_lets_it_go() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    // Nothing answers on this one: batch 2 never gets far, and need not.
    let unreachable = h.add_host("127.0.0.9", 1).await;
    // A task's rollout, sent back as it reads (hostsPerBatch included), is accepted.
    let task = h
        .post(
            BATCH,
            json!({"hostIds": [host, unreachable], "rollout": {"batchSize": 1,
                "maxFailedHosts": 0, "pauseSeconds": 0, "minHealthySeconds": 0,
                "pauseAfterFirstBatch": false, "hostsPerBatch": 1}}),
        )
        .await;
    task.expect(StatusCode::OK);
    let id = task.json["data"]["id"].as_i64().expect("id");
    let act = |action: &'static str| {
        let path = format!("/api/v2/tasks/instances/{id}/{action}");
        let h = &h;
        async move { h.send(Method::POST, &path, Some(ADMIN), None).await }
    };
    let paused = act("pause").await;
    paused.expect(StatusCode::OK);
    assert_eq!(paused.json["data"]["paused"], true, "{}", paused.text);
    // Pausing again is no error.
    act("pause").await.expect(StatusCode::OK);

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let held = loop {
        let t = h.get(&format!("/api/v2/tasks/instances/{id}")).await;
        let barrier = t.json["data"]["subtasks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "Wait node"))
            .cloned()
            .expect("a barrier");
        if barrier["status"] == "READY" {
            break t.json["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", t.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(held["status"], "RUNNING");
    let second: Vec<&Value> = held["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .filter(|s| s["parallelIdx"] == 1)
        .collect();
    assert!(second.iter().all(|s| s["status"] == "PENDING"), "{held}");

    let resumed = act("resume").await;
    resumed.expect(StatusCode::OK);
    assert_eq!(resumed.json["data"]["paused"], false);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = h.get(&format!("/api/v2/tasks/instances/{id}")).await;
        let started = t.json["data"]["subtasks"]
            .as_array()
            .expect("subtasks")
            .iter()
            .any(|s| s["parallelIdx"] == 1 && s["status"] != "PENDING");
        if started {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", t.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.stop().await;
}
