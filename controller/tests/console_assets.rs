//! The console as the controller serves it: its files with the headers that keep them
//! safe and fresh, unknown paths still answered in OCP's envelope beside it, and the
//! `X-Task-Event-Seq` a task read carries so that the console's watch replays nothing.

mod gateway_support;

use futures::StreamExt;
use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_its_headers_and_unknown_paths_keep_the_envelope() {
    let h = Harness::start(false).await;
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let reply = h.send(Method::GET, path, None, None).await;
        reply.expect(StatusCode::OK);
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
        assert!(header("content-security-policy").contains("script-src 'self'"));
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("cache-control"), "no-cache");
        let etag = header("etag");
        assert!(etag.len() > 2, "{path}: {etag}");
        let again = h
            .http
            .get(h.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("answer");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let page = h.send(Method::GET, "/console/", None, None).await;
    assert!(
        page.text.contains("<script src=\"app.js\""),
        "{}",
        page.text
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(h.url("/console"))
        .send()
        .await
        .expect("answer");
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/console/");

    for path in ["/console/nope", "/api/v2/nope", "/compute/nothing/here"] {
        let reply = h.send(Method::GET, path, Some(ADMIN), None).await;
        reply.expect(StatusCode::NOT_FOUND).assert_envelope();
        assert_eq!(reply.code(), 10002, "{path}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_read_says_which_event_it_shows_last() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let reply = h
        .post(
            "/api/v2/compute/hosts/batchRestartAgents",
            json!({"hostIds": [host]}),
        )
        .await;
    reply.expect(StatusCode::OK);
    let task = reply.json["data"]["id"].as_i64().expect("task id");
    h.wait_task(task).await;

    let read = h.get(&format!("/api/v2/tasks/instances/{task}")).await;
    read.expect(StatusCode::OK).assert_envelope();
    let seq: i64 = read.headers["x-task-event-seq"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    // The whole stream of the finished task: its last event is the one the read named.
    let response = h
        .http
        .get(h.url(&format!("/api/v2/tasks/instances/{task}/events")))
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .send()
        .await
        .expect("stream");
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    let last = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().parse::<i64>().expect("seq"))
        .max()
        .expect("events");
    assert!(seq > 0);
    assert_eq!(seq, last, "{body}");
    // Watching from there replays nothing.
    let after = h
        .get(&format!(
            "/api/v2/tasks/instances/{task}/events?after={seq}"
        ))
        .await;
    assert!(!after.text.contains("id:"), "{}", after.text);
    h.stop().await;
}
