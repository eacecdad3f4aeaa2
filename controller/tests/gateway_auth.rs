//! Every route, table-driven: no credentials is 401, a user without the route's
//! permission is 403 (30014), the user with exactly that permission succeeds. And the
//! same credentials and permissions on the controller's gRPC face.

mod gateway_support;

use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Holds the permission.
    allowed: &'static str,
    /// Lacks it.
    denied: &'static str,
    /// What the allowed user gets: task operations on a finished task are refused
    /// for its state (400, code 20003), which still proves the permission passed.
    ok: StatusCode,
}

fn route(
    method: Method,
    path: String,
    body: Option<Value>,
    allowed: &'static str,
    denied: &'static str,
) -> Route {
    Route {
        method,
        path,
        body,
        allowed,
        denied,
        ok: StatusCode::OK,
    }
}

/// A task operation that the finished task's state refuses once permission passed.
fn refused_for_state(method: Method, path: String) -> Route {
    Route {
        ok: StatusCode::BAD_REQUEST,
        ..route(method, path, None, TASK_MANAGER, TASK_VIEWER)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_credentials_and_permission() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let spare = h.add_host("127.0.0.9", 1).await;
    let process = h.process_id(host, "ob_cleaner").await;
    let task = h
        .post(
            "/compute/hosts/batchStartAgents",
            json!({"hostIds": [host]}),
        )
        .await
        .json["data"]["id"]
        .as_i64()
        .expect("task id");
    let subtask = h.wait_task(task).await["subtasks"][0]["id"]
        .as_i64()
        .expect("subtask id");

    use Method as M;
    let batch = json!({ "hostIds": [host] });
    let new_host = json!({"innerIpAddress": "127.0.0.10", "agentPort": 2});
    let mut routes = vec![
        route(
            M::POST,
            "/compute/hosts/batchRestartAgents".into(),
            Some(batch.clone()),
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            "/compute/hosts/batchStopAgents".into(),
            Some(batch.clone()),
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            "/compute/hosts/batchStartAgents".into(),
            Some(batch.clone()),
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/restart"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/stop"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/start"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/processes/{process}/restart"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/processes/{process}/stop"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::POST,
            format!("/compute/hosts/{host}/agent/processes/{process}/start"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::GET,
            format!("/compute/hosts/{host}/agent"),
            None,
            HOST_VIEWER,
            TASK_VIEWER,
        ),
        route(
            M::GET,
            format!("/compute/hosts/{host}/agent/processes"),
            None,
            HOST_VIEWER,
            TASK_VIEWER,
        ),
        route(
            M::POST,
            "/compute/hosts".into(),
            Some(new_host),
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::GET,
            "/compute/hosts".into(),
            None,
            HOST_VIEWER,
            TASK_VIEWER,
        ),
        route(
            M::GET,
            format!("/compute/hosts/{host}"),
            None,
            HOST_VIEWER,
            TASK_VIEWER,
        ),
        route(
            M::DELETE,
            format!("/compute/hosts/{spare}"),
            None,
            HOST_MANAGER,
            HOST_VIEWER,
        ),
        route(
            M::GET,
            "/tasks/instances".into(),
            None,
            TASK_VIEWER,
            HOST_VIEWER,
        ),
        route(
            M::GET,
            format!("/tasks/instances/{task}"),
            None,
            TASK_VIEWER,
            HOST_MANAGER,
        ),
        refused_for_state(M::POST, format!("/tasks/instances/{task}/retry")),
        refused_for_state(M::POST, format!("/tasks/instances/{task}/rollback")),
        refused_for_state(
            M::POST,
            format!("/tasks/instances/{task}/subtasks/{subtask}/retry"),
        ),
        refused_for_state(
            M::POST,
            format!("/tasks/instances/{task}/subtasks/{subtask}/skip"),
        ),
        refused_for_state(
            M::POST,
            format!("/tasks/instances/{task}/subtasks/{subtask}/cancel"),
        ),
        route(
            M::GET,
            format!("/tasks/instances/{task}/subtasks/{subtask}/log"),
            None,
            TASK_VIEWER,
            HOST_MANAGER,
        ),
        route(
            M::GET,
            format!("/tasks/instances/{task}/events"),
            None,
            TASK_VIEWER,
            HOST_MANAGER,
        ),
    ];
    // Both prefixes, for every route.
    let prefixed: Vec<Route> = routes
        .iter()
        .map(|r| Route {
            method: r.method.clone(),
            path: format!("/api/v2{}", r.path),
            body: r.body.clone(),
            allowed: r.allowed,
            denied: r.denied,
            ok: r.ok,
        })
        .collect();
    let unprefixed_len = routes.len();
    routes.extend(prefixed);

    for (i, r) in routes.iter().enumerate() {
        let body = r.body.as_ref().map(Value::to_string);
        let body = body.as_deref();

        let anonymous = h.send(r.method.clone(), &r.path, None, body).await;
        anonymous.expect(StatusCode::UNAUTHORIZED).assert_envelope();
        assert_eq!(
            anonymous
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.starts_with("Basic realm=\"ocp\"")),
            Some(true),
            "{} {}",
            r.method,
            r.path
        );

        // A wrong password and an unknown user get the very same answer.
        let mut wrong = h.http.request(r.method.clone(), h.url(&r.path)).header(
            "authorization",
            controller::auth::basic_header(ADMIN, "not the password"),
        );
        if let Some(b) = body {
            wrong = wrong.body(b.to_string());
        }
        let wrong = Reply::read(wrong.send().await.expect("answer")).await;
        let unknown = h
            .send(r.method.clone(), &r.path, Some("no_such_user"), body)
            .await;
        wrong.expect(StatusCode::UNAUTHORIZED);
        unknown.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.json["error"], unknown.json["error"]);

        let denied = h
            .send(r.method.clone(), &r.path, Some(r.denied), body)
            .await;
        denied.expect(StatusCode::FORBIDDEN).assert_envelope();
        assert_eq!(denied.code(), 30014, "{}", denied.text);
        let nobody = h.send(r.method.clone(), &r.path, Some(NOBODY), body).await;
        nobody.expect(StatusCode::FORBIDDEN);

        // The second time round the spare host is gone and the new host exists.
        let allowed = h
            .send(r.method.clone(), &r.path, Some(r.allowed), body)
            .await;
        let streamed = allowed
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if streamed {
            assert!(
                allowed.text.contains("event: transition"),
                "{}",
                allowed.text
            );
        } else {
            allowed.assert_envelope();
        }
        let second_round = i >= unprefixed_len;
        if second_round && r.method == M::DELETE {
            assert_eq!(allowed.status, StatusCode::NOT_FOUND, "{}", allowed.text);
        } else if second_round && r.path.ends_with("/compute/hosts") && r.method == M::POST {
            assert_eq!(allowed.status, StatusCode::CONFLICT, "{}", allowed.text);
        } else {
            allowed.expect(r.ok);
            if r.ok == StatusCode::BAD_REQUEST {
                assert_eq!(allowed.code(), 20003, "{}", allowed.text);
            }
        }
        // Tasks hold their host until they end: let each one finish before the next route.
        if allowed.json["data"]["subtasks"].is_array() && r.method == M::POST {
            let id = allowed.json["data"]["id"].as_i64().expect("task id");
            let done = h.wait_task(id).await;
            assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_of_a_task_may_read_it() {
    let h = Harness::start(false).await;
    let host = h.add_host("127.0.0.9", 1).await;
    let created = h
        .send(
            Method::POST,
            "/compute/hosts/batchStopAgents",
            Some(HOST_MANAGER),
            Some(&json!({"hostIds": [host]}).to_string()),
        )
        .await;
    created.expect(StatusCode::OK);
    assert_eq!(created.json["data"]["creator"], HOST_MANAGER);
    let id = created.json["data"]["id"].as_i64().expect("id");
    let path = format!("/tasks/instances/{id}");
    h.send(Method::GET, &path, Some(HOST_MANAGER), None)
        .await
        .expect(StatusCode::OK);
    // Someone else without TASK_VIEWER may not, and cannot tell missing from hidden.
    h.send(Method::GET, &path, Some(HOST_VIEWER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    h.send(
        Method::GET,
        "/tasks/instances/987654",
        Some(HOST_VIEWER),
        None,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let missing = h
        .send(
            Method::GET,
            "/tasks/instances/987654",
            Some(TASK_VIEWER),
            None,
        )
        .await;
    missing.expect(StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), 20000);
    // Listing is TASK_VIEWER's.
    h.send(Method::GET, "/tasks/instances", Some(HOST_MANAGER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    h.stop().await;
}

fn with_auth<T>(message: T, user: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(user) = user {
        let header = controller::auth::basic_header(user, PASSWORD);
        request
            .metadata_mut()
            .insert("authorization", header.parse().expect("ascii"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_the_same_credentials_and_permissions() {
    let h = Harness::start(false).await;
    let host = h.add_host("127.0.0.9", 1).await;
    let url = format!("http://{}", h.grpc_addr());
    let mut hosts = HostAgentServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let mut tasks = TaskServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut intercepted = HostAgentServiceClient::with_interceptor(
        channel,
        controller::auth::BasicAuth::new(HOST_VIEWER, PASSWORD).expect("header"),
    );
    intercepted
        .get_host(pb::GetHostRequest { host_id: host })
        .await
        .expect("the interceptor authenticates every call");
    let get = |user| with_auth(pb::GetHostRequest { host_id: host }, user);

    let e = hosts.get_host(get(None)).await.expect_err("anonymous");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let mut bad = tonic::Request::new(pb::GetHostRequest { host_id: host });
    bad.metadata_mut().insert(
        "authorization",
        controller::auth::basic_header(ADMIN, "wrong")
            .parse()
            .expect("ascii"),
    );
    let e = hosts.get_host(bad).await.expect_err("wrong password");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = hosts
        .get_host(get(Some(TASK_VIEWER)))
        .await
        .expect_err("no HOST_VIEWER");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    hosts
        .get_host(get(Some(HOST_VIEWER)))
        .await
        .expect("HOST_VIEWER reads");
    hosts
        .get_host(get(Some(HOST_MANAGER)))
        .await
        .expect("manager implies viewer");

    let e = hosts
        .delete_host(with_auth(
            pb::DeleteHostRequest { host_id: host },
            Some(HOST_VIEWER),
        ))
        .await
        .expect_err("viewer cannot delete");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = hosts
        .batch_stop_agents(with_auth(
            pb::BatchStopAgentsRequest {
                host_ids: vec![host],
            },
            Some(TASK_VIEWER),
        ))
        .await
        .expect_err("no HOST_MANAGER");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let task = hosts
        .batch_stop_agents(with_auth(
            pb::BatchStopAgentsRequest {
                host_ids: vec![host],
            },
            Some(HOST_MANAGER),
        ))
        .await
        .expect("HOST_MANAGER submits")
        .into_inner();
    assert_eq!(task.creator, HOST_MANAGER);

    let e = tasks
        .list_tasks(with_auth(
            pb::ListTasksRequest::default(),
            Some(HOST_VIEWER),
        ))
        .await
        .expect_err("no TASK_VIEWER");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    tasks
        .list_tasks(with_auth(
            pb::ListTasksRequest::default(),
            Some(TASK_VIEWER),
        ))
        .await
        .expect("TASK_VIEWER lists");
    tasks
        .get_task(with_auth(
            pb::GetTaskRequest { id: task.id },
            Some(HOST_MANAGER),
        ))
        .await
        .expect("the creator reads its task");
    let e = tasks
        .get_task(with_auth(
            pb::GetTaskRequest { id: task.id },
            Some(HOST_VIEWER),
        ))
        .await
        .expect_err("not the creator, no TASK_VIEWER");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    h.stop().await;
}
