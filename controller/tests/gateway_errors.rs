//! Every way a request can be wrong gets a 4xx in the error envelope, with a message
//! and subErrors that say what to fix; and the OpenAPI document lists what is served.

mod gateway_support;

use std::collections::BTreeSet;

use gateway_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn refused(h: &Harness, method: Method, path: &str, body: Option<&str>) -> Reply {
    let reply = h.send(method.clone(), path, Some(ADMIN), body).await;
    reply.assert_envelope();
    assert!(
        reply.status.is_client_error(),
        "{method} {path} {body:?}: {}",
        reply.text
    );
    reply
}

#[track_caller]
fn sub_error(reply: &Reply) -> (&str, &Value, &str) {
    let e = &reply.json["error"]["subErrors"][0];
    (
        e["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no subError: {}", reply.text)),
        &e["rejectedValue"],
        e["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_name_the_field_and_the_value() {
    let h = Harness::start(false).await;
    let host = h.add_host("127.0.0.9", 1).await;
    let batch = "/api/v2/compute/hosts/batchRestartAgents";
    let post = Method::POST;

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": [1,"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), 10001);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON")),
        "{}",
        r.text
    );

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": "2"}"#)).await;
    assert_eq!(sub_error(&r).0, "hostIds");
    assert_eq!(sub_error(&r).1, "2");

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": [1, "x"]}"#)).await;
    assert_eq!(sub_error(&r).0, "hostIds[1]");
    assert_eq!(sub_error(&r).1, "x");

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": [1.5]}"#)).await;
    assert_eq!(sub_error(&r).0, "hostIds[0]");

    let r = refused(&h, post.clone(), batch, Some("{}")).await;
    assert_eq!(sub_error(&r).0, "hostIds");
    assert!(sub_error(&r).2.contains("missing field"), "{}", r.text);

    let r = refused(
        &h,
        post.clone(),
        batch,
        Some(r#"{"hostIds": [1], "hostID": 2}"#),
    )
    .await;
    assert_eq!(sub_error(&r).0, "hostID");
    assert_eq!(sub_error(&r).1, 2);

    let r = refused(&h, post.clone(), batch, Some("[1, 2]")).await;
    assert_eq!(r.code(), 10001);

    let r = refused(&h, post.clone(), batch, None).await;
    assert_eq!(sub_error(&r).0, "body");
    assert!(sub_error(&r).2.contains("missing"), "{}", r.text);

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": []}"#)).await;
    assert_eq!(sub_error(&r).0, "hostIds");

    let r = refused(
        &h,
        post.clone(),
        batch,
        Some(&json!({"hostIds": [host, host, host]}).to_string()),
    )
    .await;
    assert_eq!(sub_error(&r).0, "hostIds");
    assert_eq!(
        sub_error(&r).2,
        format!("host {host} is listed more than once"),
        "names each repeated host once: {}",
        r.text
    );

    let r = refused(&h, post.clone(), batch, Some(r#"{"hostIds": [-3]}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = refused(
        &h,
        post.clone(),
        batch,
        Some(&json!({"hostIds": [host, 4242]}).to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), 10002);
    assert_eq!(sub_error(&r).1, 4242);

    let hosts = "/compute/hosts";
    let r = refused(
        &h,
        post.clone(),
        hosts,
        Some(r#"{"innerIpAddress": "nope", "agentPort": 1}"#),
    )
    .await;
    assert_eq!(sub_error(&r).0, "innerIpAddress");
    assert_eq!(sub_error(&r).1, "nope");
    let r = refused(
        &h,
        post.clone(),
        hosts,
        Some(r#"{"innerIpAddress": "10.0.0.1", "agentPort": 70000}"#),
    )
    .await;
    assert_eq!(sub_error(&r).0, "agentPort");
    let r = refused(
        &h,
        post.clone(),
        hosts,
        Some(r#"{"innerIpAddress": "10.0.0.1", "agentPort": -1}"#),
    )
    .await;
    assert_eq!(sub_error(&r).0, "agentPort");
    assert_eq!(sub_error(&r).1, -1);
    let r = refused(
        &h,
        post.clone(),
        hosts,
        Some(r#"{"innerIpAddress": "10.0.0.1", "agentPort": "80"}"#),
    )
    .await;
    assert_eq!(sub_error(&r).0, "agentPort");
    let r = refused(
        &h,
        post.clone(),
        hosts,
        Some(r#"{"innerIpAddress": "127.0.0.9", "agentPort": 1}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("id {host}"))),
        "{}",
        r.text
    );

    // Too large, declared or not.
    let big = format!(r#"{{"hostIds": [{}1]}}"#, "1,".repeat(600_000));
    let r = refused(&h, post.clone(), batch, Some(&big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = refused(
        &h,
        post.clone(),
        &format!("/compute/hosts/{host}/agent/stop"),
        Some(&big),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..40).map(|_| Ok("1,".repeat(20_000))).collect();
    let streamed = h
        .http
        .post(h.url(batch))
        .header(
            "authorization",
            controller::auth::basic_header(ADMIN, PASSWORD),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("answer");
    let r = Reply::read(streamed).await;
    r.assert_envelope();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_ids_and_queries() {
    let h = Harness::start(false).await;
    let host = h.add_host("127.0.0.9", 1).await;

    for (path, field, value) in [
        ("/compute/hosts/abc".to_string(), "hostId", "abc"),
        (
            "/api/v2/compute/hosts/99999999999999999999".to_string(),
            "hostId",
            "99999999999999999999",
        ),
        ("/compute/hosts/1.5/agent".to_string(), "hostId", "1.5"),
        (
            format!("/compute/hosts/{host}/agent/processes/x/restart"),
            "agentProcessId",
            "x",
        ),
        ("/tasks/instances/%20".to_string(), "id", " "),
    ] {
        let method = if path.ends_with("restart") {
            Method::POST
        } else {
            Method::GET
        };
        let r = refused(&h, method, &path, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(sub_error(&r).0, field, "{path}");
        assert_eq!(sub_error(&r).1, value, "{path}");
    }
    for path in [
        "/compute/hosts/-1",
        "/compute/hosts/0",
        "/tasks/instances/-7",
    ] {
        let r = refused(&h, Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
    }
    let r = refused(&h, Method::GET, "/compute/hosts/4242", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), 10002);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4242"))
    );
    let r = refused(&h, Method::GET, "/compute/hosts/4242/agent/processes", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = refused(
        &h,
        Method::POST,
        &format!("/compute/hosts/{host}/agent/processes/777/stop"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("777"))
    );
    let r = refused(&h, Method::GET, "/tasks/instances/31337", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), 20000);

    for (query, field) in [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("size=2001", "size"),
        ("size=0", "size"),
        ("size=ten", "size"),
    ] {
        let r = refused(&h, Method::GET, &format!("/compute/hosts?{query}"), None).await;
        assert_eq!(sub_error(&r).0, field, "{query}");
    }
    let r = refused(&h, Method::GET, "/tasks/instances?status=DONE", None).await;
    assert_eq!(sub_error(&r).0, "status");
    let r = refused(&h, Method::GET, "/tasks/instances?hostId=x", None).await;
    assert_eq!(sub_error(&r).0, "hostId");
    h.get("/compute/hosts?size=2000&page=3")
        .await
        .expect(StatusCode::OK);
    // A misspelt filter is refused, not ignored: ignoring it would list every task.
    let r = refused(&h, Method::GET, "/tasks/instances?hostid=3", None).await;
    let (field, value, message) = sub_error(&r);
    assert_eq!((field, value.as_str()), ("hostid", Some("3")));
    assert!(message.contains("hostId"), "{message}");
    let r = refused(&h, Method::GET, "/compute/hosts?size=5&unknown=1", None).await;
    assert_eq!(sub_error(&r).0, "unknown");

    // Unknown routes and methods, with and without credentials.
    for user in [Some(ADMIN), None] {
        let r = h
            .send(Method::GET, "/compute/nothing/here", user, None)
            .await;
        r.expect(StatusCode::NOT_FOUND).assert_envelope();
        assert_eq!(r.code(), 10002);
        let r = h
            .send(Method::PUT, "/api/v2/compute/hosts", user, Some("{}"))
            .await;
        r.expect(StatusCode::METHOD_NOT_ALLOWED).assert_envelope();
        let r = h
            .send(Method::GET, "/compute/hosts/batchRestartAgents", user, None)
            .await;
        assert!(r.status.is_client_error(), "{}", r.text);
        r.assert_envelope();
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_host_is_refused_naming_the_task() {
    let h = Harness::start(false).await;
    // Nobody listens there: the task fails and keeps holding the host.
    let host = h.add_host("127.0.0.9", 1).await;
    let first = h
        .post("/compute/hosts/batchStopAgents", json!({"hostIds": [host]}))
        .await;
    first.expect(StatusCode::OK);
    let task = first.json["data"]["id"].as_i64().expect("id");
    for (method, path, body) in [
        (
            Method::POST,
            "/compute/hosts/batchRestartAgents".to_string(),
            Some(json!({"hostIds": [host]}).to_string()),
        ),
        (
            Method::POST,
            format!("/compute/hosts/{host}/agent/start"),
            None,
        ),
        (Method::DELETE, format!("/compute/hosts/{host}"), None),
    ] {
        let r = refused(&h, method, &path, body.as_deref()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert_eq!(r.code(), 40000);
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("task {task}")), "{message}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_served_route() {
    let h = Harness::start(false).await;
    let r = h
        .send(Method::GET, "/api/v2/openapi.json", None, None)
        .await;
    r.expect(StatusCode::OK);
    let doc = &r.json;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        r.text
    );
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if ["get", "post", "delete", "put"].contains(&method.as_str()) {
                served.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "POST /compute/hosts/batchRestartAgents",
        "POST /compute/hosts/batchStopAgents",
        "POST /compute/hosts/batchStartAgents",
        "POST /compute/hosts/{hostId}/agent/restart",
        "POST /compute/hosts/{hostId}/agent/stop",
        "POST /compute/hosts/{hostId}/agent/start",
        "POST /compute/hosts/batchUpgradeAgents",
        "POST /compute/hosts/{hostId}/agent/upgrade",
        "POST /agent/packages",
        "GET /agent/packages",
        "DELETE /agent/packages/{id}",
        "POST /compute/hosts/{hostId}/agent/processes/{agentProcessId}/restart",
        "POST /compute/hosts/{hostId}/agent/processes/{agentProcessId}/stop",
        "POST /compute/hosts/{hostId}/agent/processes/{agentProcessId}/start",
        "GET /compute/hosts/{hostId}/agent",
        "GET /compute/hosts/{hostId}/agent/processes",
        "GET /compute/hosts/{hostId}/agent/processes/{agentProcessId}/log",
        "POST /compute/hosts",
        "GET /compute/hosts",
        "GET /compute/hosts/{hostId}",
        "DELETE /compute/hosts/{hostId}",
        "GET /tasks/instances",
        "GET /tasks/instances/{id}",
        "POST /tasks/instances/{id}/retry",
        "POST /tasks/instances/{id}/rollback",
        "POST /tasks/instances/{id}/pause",
        "POST /tasks/instances/{id}/resume",
        "POST /tasks/instances/{id}/subtasks/{subtaskId}/retry",
        "POST /tasks/instances/{id}/subtasks/{subtaskId}/skip",
        "POST /tasks/instances/{id}/subtasks/{subtaskId}/cancel",
        "GET /tasks/instances/{id}/subtasks/{subtaskId}/log",
        "GET /tasks/instances/{id}/events",
        "GET /profiles/me",
        "GET /api/v2/openapi.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(served, expected);
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "TaskJson",
        "SubtaskJson",
        "HostAgentProcessJson",
        "HostAgentJson",
        "HostJson",
        "BatchHostsRequest",
        "RolloutRequest",
        "RolloutJson",
        "AddHostRequest",
        "ProcessLogJson",
        "CurrentUserJson",
        "ErrorEnvelope",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // The host list's filters, as a client generated from the document sends them.
    let params = &doc["paths"]["/compute/hosts"]["get"]["parameters"];
    let param = |name: &str| {
        params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("GET /compute/hosts documents no {name}: {params}"))
    };
    for name in ["page", "size", "status", "keyword", "sort"] {
        assert_eq!(param(name)["in"], "query", "{name}");
    }
    assert_eq!(param("status")["explode"], true);
    assert!(
        param("status")["schema"]["type"]
            .to_string()
            .contains("array"),
        "{}",
        param("status")
    );
    assert_eq!(
        param("keyword")["schema"]["maxLength"],
        controller::service::MAX_KEYWORD_CHARS,
        "the document's bound is the core's"
    );
    let process = &schemas["HostAgentProcessJson"]["properties"];
    assert_eq!(process.as_object().map(|p| p.len()), Some(14));
    assert!(doc["components"]["securitySchemes"]["basic"].is_object());
    // Every documented route is really served (an unauthenticated call is a 401, not a 404).
    for route in &expected {
        let (method, path) = route.split_once(' ').expect("method and path");
        if path.ends_with("openapi.json") {
            continue;
        }
        let path = path
            .replace("{hostId}", "1")
            .replace("{agentProcessId}", "1")
            .replace("{id}", "1");
        for prefix in ["", "/api/v2"] {
            let r = h
                .send(
                    method.parse().expect("method"),
                    &format!("{prefix}{path}"),
                    None,
                    Some("{}"),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {prefix}{path}: {}",
                r.text
            );
        }
    }
    h.stop().await;
}
