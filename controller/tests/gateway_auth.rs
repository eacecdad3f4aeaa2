//! A task's creator reads it without TASK_VIEWER, and no one else learns whether it
//! exists; the gRPC face takes the same credentials, also from the client interceptor.
//! Every operation against every user, on both faces, is `permissions.rs`.

mod gateway_support;

use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::json;

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
    // Someone else without TASK_VIEWER may not, and cannot tell missing from hidden;
    // nor learns more from a bad resume point of the task's events.
    h.send(Method::GET, &path, Some(HOST_VIEWER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    let events = format!("{path}/events?after=x");
    h.send(Method::GET, &events, Some(HOST_VIEWER), None)
        .await
        .expect(StatusCode::FORBIDDEN);
    h.send(Method::GET, &events, Some(HOST_MANAGER), None)
        .await
        .expect(StatusCode::BAD_REQUEST);
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
    gateway_support::grpc_request(message, user, PASSWORD)
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
                rollout: None,
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
                rollout: None,
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
