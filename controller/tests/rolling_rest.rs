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
    ] {
        let r = refused(
            &h,
            json!({"hostIds": hosts, "rollout": {"batchSize": batch_size}}),
        )
        .await;
        assert_eq!(sub_errors(&r)[0].0, "rollout.batchSize");
        assert!(r.text.contains(why), "{batch_size}: {}", r.text);
    }
    // Wrong types and unknown fields are named by their path too.
    let r = refused(
        &h,
        json!({"hostIds": hosts, "rollout": {"pauseSeconds": "soon"}}),
    )
    .await;
    assert_eq!(sub_errors(&r)[0].0, "rollout.pauseSeconds");
    let r = refused(&h, json!({"hostIds": hosts, "rollout": {"batchSize": 2.5}})).await;
    assert_eq!(sub_errors(&r)[0].0, "rollout.batchSize");
    let r = refused(
        &h,
        json!({"hostIds": hosts, "rollout": {"maxFailedHost": 1}}),
    )
    .await;
    assert_eq!(sub_errors(&r)[0].0, "rollout.maxFailedHost");
    let r = refused(&h, json!({"hostIds": hosts, "rollout": 3})).await;
    assert_eq!(sub_errors(&r)[0].0, "rollout");

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
            json!({"hostIds": [host], "rollout": {"batchSize": "25%", "maxFailedHosts": 2}}),
        )
        .await;
    rolling.expect(StatusCode::OK);
    let data = &rolling.json["data"];
    assert_eq!(
        data["rollout"],
        json!({"batchSize": "25%", "maxFailedHosts": 2, "pauseSeconds": 0,
            "minHealthySeconds": 0, "pauseAfterFirstBatch": false, "hostsPerBatch": 1}),
    );
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
