//! The library entry point, as the controller's tests will use it: an agent served
//! in-process on port 0, with reflection and health beside AgentService.

mod common;

use std::time::Duration;

use agent::{Agent, AgentOptions};
use common::*;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;

async fn in_process(
    config: &str,
) -> (
    Setup,
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), agent::AgentError>>,
) {
    let setup = Setup::new(config);
    let cancel = CancellationToken::new();
    let options = AgentOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        config_path: setup.config(),
        data_dir: setup.data_dir(),
        tls: None,
        insecure_plaintext: false,
        conns: Default::default(),
        metrics_addr: None,
    };
    let (addr, served) = Agent::start(options, cancel.clone())
        .await
        .expect("agent starts");
    (setup, addr, cancel, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_alias_and_non_operable_processes_are_refused() {
    let config = demo_process("locked", &[], "operable = false\nmin_live = \"0s\"");
    let (_setup, addr, cancel, served) = in_process(&config).await;
    let mut client = connect(addr).await;
    for call in 0..3 {
        let req = request("nobody");
        let err = match call {
            0 => client.start_process(req).await,
            1 => client.stop_process(req).await,
            _ => client.restart_process(req).await,
        }
        .expect_err("unknown alias");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");

        let req = request("locked");
        let err = match call {
            0 => client.start_process(req).await,
            1 => client.stop_process(req).await,
            _ => client.restart_process(req).await,
        }
        .expect_err("not operable");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    let pid = wait_running(&mut client, "locked").await.pid;
    assert!(alive(pid), "a refused call leaves the process alone");

    cancel.cancel();
    tokio::time::timeout(WAIT, served)
        .await
        .expect("shuts down in time")
        .expect("task joins")
        .expect("serves cleanly");
    assert!(!alive(pid), "shutdown stops the children");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_are_served() {
    let (_setup, addr, cancel, served) = in_process("").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let reply = replies.next().await.expect("a reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        ["grpc.health.v1.Health", "ocp.agent.v1.AgentService"],
        "exactly what the agent serves, not the controller's APIs"
    );

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut replies = AlphaClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let reply = replies.next().await.expect("a reply").expect("ok");
    let Some(AlphaResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "ocp.agent.v1.AgentService")
    );

    let mut health = HealthClient::new(channel);
    for service in ["", "ocp.agent.v1.AgentService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("shuts down in time")
        .expect("task joins")
        .expect("serves cleanly");
}
