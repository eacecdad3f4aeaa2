//! Requests a browser can be made to send for a signed-in operator, against the real
//! controller binary: a form or `text/plain` POST from a foreign page must not act.

mod common;

use common::binary::SpawnedController;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Answer {
    status: StatusCode,
    json: Value,
}

async fn send(
    c: &SpawnedController,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, c.url(path))
        .basic_auth("admin", Some(&c.password));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("the controller answers");
    let status = response.status();
    let text = response.text().await.expect("body");
    Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn message(a: &Answer) -> &str {
    a.json["error"]["message"].as_str().unwrap_or_default()
}

async fn host_count(c: &SpawnedController) -> i64 {
    let a = send(c, Method::GET, "/api/v2/compute/hosts", &[], None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    a.json["data"]["page"]["totalElements"]
        .as_i64()
        .expect("total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_page_cannot_change_state() {
    let c = SpawnedController::start(&[]).await;
    let own = format!("http://{}", c.http);
    let host = r#"{"innerIpAddress":"10.9.9.9","agentPort":62888}"#;

    // What a foreign page's <form enctype="text/plain"> can send: JSON in a text/plain body.
    let plain = send(
        &c,
        Method::POST,
        "/api/v2/compute/hosts",
        &[
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ],
        Some(host),
    )
    .await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN, "{}", plain.json);
    assert_eq!(plain.json["error"]["code"], 30014, "{}", plain.json);
    assert!(
        message(&plain).contains("http://evil.example") && message(&plain).contains(&own),
        "names the origin and the expected one: {}",
        message(&plain)
    );
    assert_eq!(host_count(&c).await, 0, "the host must not have been added");

    // A body-less operation from a foreign page, and from a sandboxed one (Origin: null).
    // An Origin is compared exactly: no browser adds a slash, capitals or the
    // scheme's default port.
    let near_misses = [
        format!("{own}/"),
        own.to_ascii_uppercase(),
        format!("{own}:80"),
    ];
    for origin in ["http://evil.example", "null", "https://127.0.0.1"]
        .into_iter()
        .chain(near_misses.iter().map(String::as_str))
    {
        let stop = send(
            &c,
            Method::POST,
            "/api/v2/compute/hosts/1/agent/stop",
            &[("origin", origin)],
            None,
        )
        .await;
        assert_eq!(
            stop.status,
            StatusCode::FORBIDDEN,
            "{origin}: {}",
            stop.json
        );
    }
    let fetched = send(
        &c,
        Method::DELETE,
        "/compute/hosts/1",
        &[("sec-fetch-site", "cross-site")],
        None,
    )
    .await;
    assert_eq!(fetched.status, StatusCode::FORBIDDEN, "{}", fetched.json);

    // Reading is not refused: a foreign page cannot read the answer anyway (no CORS).
    let read = send(
        &c,
        Method::GET,
        "/api/v2/compute/hosts",
        &[("origin", "http://evil.example")],
        None,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.json);

    // The controller's own pages, and clients that send no Origin, go on working.
    let console = send(
        &c,
        Method::POST,
        "/api/v2/compute/hosts",
        &[
            ("origin", own.as_str()),
            ("content-type", "application/json; charset=utf-8"),
        ],
        Some(host),
    )
    .await;
    assert_eq!(console.status, StatusCode::OK, "{}", console.json);
    let cli = send(
        &c,
        Method::DELETE,
        &format!("/compute/hosts/{}", console.json["data"]["id"]),
        &[],
        None,
    )
    .await;
    assert_eq!(cli.status, StatusCode::OK, "{}", cli.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_and_only_where_a_route_takes_one() {
    let c = SpawnedController::start(&[]).await;
    let batch = "/api/v2/compute/hosts/batchStopAgents";

    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "hostIds=1"),
        ("text/plain", r#"{"hostIds":[1]}"#),
        ("multipart/form-data; boundary=x", "--x--"),
        ("application/merge-patch+json", r#"{"hostIds":[1]}"#),
    ] {
        let a = send(
            &c,
            Method::POST,
            batch,
            &[("content-type", content_type)],
            Some(body),
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {}",
            a.json
        );
        assert_eq!(a.json["error"]["code"], 10001, "{}", a.json);
        assert!(
            message(&a).contains(content_type) && message(&a).contains("application/json"),
            "{}",
            message(&a)
        );
    }
    let untyped = send(&c, Method::POST, batch, &[], Some(r#"{"hostIds":[1]}"#)).await;
    assert_eq!(
        untyped.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        untyped.json
    );

    // JSON itself reaches the handler, which reports the missing host.
    let json_body = send(
        &c,
        Method::POST,
        batch,
        &[("content-type", "application/json")],
        Some(&json!({"hostIds": [1]}).to_string()),
    )
    .await;
    assert_eq!(
        json_body.status,
        StatusCode::NOT_FOUND,
        "{}",
        json_body.json
    );

    // A route that takes no body refuses one, whatever its type, and takes none gladly.
    let stop = "/compute/hosts/1/agent/stop";
    for content_type in ["text/plain", "application/json"] {
        let a = send(
            &c,
            Method::POST,
            stop,
            &[("content-type", content_type)],
            Some("{}"),
        )
        .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{content_type}: {}",
            a.json
        );
        assert_eq!(
            a.json["error"]["subErrors"][0]["field"], "body",
            "{}",
            a.json
        );
    }
    let empty = send(&c, Method::POST, stop, &[("content-length", "0")], None).await;
    assert_eq!(empty.status, StatusCode::NOT_FOUND, "{}", empty.json);
}

fn vm_rss_mb(pid: u32) -> u64 {
    test_support::procs::rss_kib(pid).expect("VmRSS") / 1024
}

/// The body of a route that takes none is refused after authentication, so it is read
/// before: 300 clients without credentials each holding 1 MiB (less a byte) of it in
/// flight must not make the controller hold a copy of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwanted_bodies_cost_no_memory_before_login() {
    use tokio::io::AsyncWriteExt;
    const CLIENTS: usize = 300;
    const MIB: usize = 1 << 20;
    let c = SpawnedController::start(&["--max-connections", "1000"]).await;
    let before = vm_rss_mb(c.pid());
    let chunk = vec![b'x'; MIB - 1];
    let mut held = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut socket = tokio::net::TcpStream::connect(c.http)
            .await
            .expect("connect");
        let head = format!(
            "GET /api/v2/compute/hosts HTTP/1.1\r\nhost: {}\r\ncontent-length: {MIB}\r\n\r\n",
            c.http
        );
        socket.write_all(head.as_bytes()).await.expect("head");
        socket.write_all(&chunk).await.expect("body");
        held.push(socket);
    }
    // The last client's bytes have been written to its socket; give the controller the
    // time to read them (by the clock, not by a guess at the machine's speed: the socket
    // buffers are far smaller than a MiB, so the write returning means most was read).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let during = vm_rss_mb(c.pid());
    drop(held);
    // hyper's own read buffer (up to ~400 KiB a connection while a body streams in)
    // remains; what must not is a copy of each body: that measured 557 MB here.
    assert!(
        during < before + 250,
        "{CLIENTS} unauthenticated 1 MiB bodies took the controller from {before} MB to {during} MB"
    );
    let after = send(&c, Method::GET, "/api/v2/compute/hosts", &[], None).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.json);
}
