//! The console as the controller serves it: its page and every module it loads, with
//! the headers that keep them safe and fresh, unknown paths (and paths out of its
//! folder) answered 404 in OCP's envelope, and the
//! `X-Task-Event-Seq` a task read carries so that the console's watch replays nothing.

mod gateway_support;

use futures::StreamExt;
use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The quoted names after `marker` in `text`, e.g. the `./x.js` of `from "./x.js"`.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(at, _)| text[at + marker.len()..].split('"').next())
        .collect()
}

/// The type a console file must be served as, by its name.
fn expected_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("html") => "text/html",
        _ => panic!("the console loads {name}, which it has no type for"),
    }
}

/// Fetches `path` and checks the headers every console file has; returns its text.
async fn served(h: &Harness, path: &str, kind: &str) -> String {
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
    assert!(
        header("content-type").starts_with(kind),
        "{path}: {}",
        header("content-type")
    );
    assert!(header("content-type").contains("charset=utf-8"), "{path}");
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
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
    reply.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_its_headers_and_unknown_paths_keep_the_envelope() {
    let h = Harness::start(false).await;
    let page = served(&h, "/console/", "text/html").await;
    assert_eq!(page, served(&h, "/console/index.html", "text/html").await);
    assert!(
        page.contains("<script type=\"module\" src=\"app.js\">"),
        "{page}"
    );
    // Every file the page loads, then every module those import, transitively.
    let mut pending: Vec<String> = quoted_after(&page, "src=\"")
        .into_iter()
        .chain(quoted_after(&page, "href=\""))
        .filter(|name| !name.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let text = served(&h, &format!("/console/{name}"), expected_type(&name)).await;
        if name.ends_with(".js") {
            for import in quoted_after(&text, "from \"") {
                let imported = import.strip_prefix("./").expect("a relative import");
                pending.push(imported.to_string());
            }
        }
    }
    for name in [
        "app.js",
        "app.css",
        "api.js",
        "dom.js",
        "state.js",
        "hosts.js",
        "packages.js",
        "tasks.js",
        "dag.js",
    ] {
        assert!(seen.contains(name), "{name} is loaded: {seen:?}");
    }
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

    // Nothing else, however the path is spelled: no file outside the folder, and none of
    // the folder's that the console does not load as what it is.
    for path in [
        "/console/nope",
        "/console/nope.js",
        "/console/app.js/",
        "/console/..%2fCargo.toml",
        "/console/%2e%2e%2fsrc%2fconsole.rs",
        "/console/..%5cCargo.toml",
        "/console//app.js",
        "/api/v2/nope",
        "/compute/nothing/here",
    ] {
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
