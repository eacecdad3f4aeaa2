//! End to end, as a user would: the real `ocp-controller` and three real `ocp-agent`
//! processes with mutual TLS between them (the fleet's own CA, made by `ocp-controller
//! pki`), driven over HTTPS with Basic auth and discovered over gRPC reflection over TLS
//! the way grpcurl does, with every claim checked against the OS.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use xtask::dial::Dialer;
use xtask::fleet::{AgentProfile, Fleet, Transport, demo_controller_args};
use xtask::rest::Rest;

/// A fleet on 127.0.0.12-14, away from the demo's addresses.
fn start_fleet(root: PathBuf) -> Fleet {
    let ips: Vec<IpAddr> = (12..=14)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    support::start_fleet(
        root,
        ips,
        AgentProfile::Demo,
        Transport::MutualTls,
        demo_controller_args(),
    )
}

fn pid_alive(pid: i64) -> bool {
    u32::try_from(pid).is_ok_and(test_support::procs::alive)
}

/// alias -> (id, pid, status) of a host's processes, from the REST list.
fn processes(rest: &Rest, host: i64) -> HashMap<String, (i64, i64, String)> {
    let page = rest
        .get(&format!(
            "/api/v2/compute/hosts/{host}/agent/processes?size=100"
        ))
        .expect("process list");
    page["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|p| {
            (
                p["alias"].as_str().unwrap_or_default().to_string(),
                (
                    p["id"].as_i64().unwrap_or(0),
                    p["pid"].as_i64().unwrap_or(0),
                    p["status"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn wait_task(rest: &Rest, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let task = rest.get(&format!("/tasks/instances/{id}")).expect("task");
        if task["status"] != "RUNNING" {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} still running: {task:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const BASIC: [&str; 2] = ["ocp_monagent", "pos_proxy"];

#[test]
fn the_real_binaries_restart_stop_and_restart_one_process_as_a_user_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = start_fleet(dir.path().join("fleet"));
    assert!(fleet.rest_base().starts_with("https://"));
    let rest = fleet
        .rest()
        .expect("an HTTPS client trusting the fleet's CA");

    let hosts = fleet.register_hosts(&rest).expect("add the hosts");
    let before: Vec<_> = hosts.iter().map(|&h| processes(&rest, h)).collect();
    for ps in &before {
        for alias in BASIC {
            assert!(pid_alive(ps[alias].1), "{alias} runs at start: {ps:?}");
        }
    }

    // Batch restart, with the documented lower-case body.
    let task = rest
        .post(
            "/compute/hosts/batchRestartAgents",
            json!({"hostids": hosts}),
        )
        .expect("batch restart");
    assert_eq!(task["subtasks"].as_array().map(Vec::len), Some(5 * 3 + 4));
    let done = wait_task(&rest, task["id"].as_i64().expect("task id"));
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
    for (host, old) in hosts.iter().zip(&before) {
        let new = processes(&rest, *host);
        for alias in BASIC {
            let (old_pid, new_pid) = (old[alias].1, new[alias].1);
            assert_ne!(old_pid, new_pid, "{alias} got a new pid");
            assert!(!pid_alive(old_pid), "{alias}: old pid {old_pid} is gone");
            assert!(pid_alive(new_pid), "{alias}: new pid {new_pid} runs");
        }
    }

    // One process: the work process started with its agent (autostart), as the seed
    // shows it; stop it, start it, then restart it.
    let (worker, autostarted_pid, status) = processes(&rest, hosts[0])["ob_cleaner"].clone();
    assert_eq!(status, "STARTED", "a work process starts with its agent");
    let stopped = rest
        .post_empty(&format!(
            "/compute/hosts/{}/agent/processes/{worker}/stop",
            hosts[0]
        ))
        .expect("stop one process");
    assert_eq!(stopped["status"], "STOPPED");
    assert!(!pid_alive(autostarted_pid));
    let started = rest
        .post_empty(&format!(
            "/api/v2/compute/hosts/{}/agent/processes/{worker}/start",
            hosts[0]
        ))
        .expect("start one process");
    let first_pid = started["pid"].as_i64().expect("pid");
    assert!(pid_alive(first_pid));
    let restarted = rest
        .post_empty(&format!(
            "/compute/hosts/{}/agent/processes/{worker}/restart",
            hosts[0]
        ))
        .expect("restart one process");
    assert_eq!(restarted["status"], "STARTED");
    assert_eq!(
        restarted["id"].as_i64(),
        Some(worker),
        "the process keeps its id"
    );
    let second_pid = restarted["pid"].as_i64().expect("pid");
    assert!(second_pid != first_pid && pid_alive(second_pid) && !pid_alive(first_pid));
    assert_eq!(
        restarted.as_object().map(|o| o.len()),
        Some(14),
        "{restarted:#}"
    );

    // Batch stop: the basic processes are really gone.
    let stop = rest
        .post(
            "/api/v2/compute/hosts/batchStopAgents",
            json!({"hostIds": hosts}),
        )
        .expect("batch stop");
    let done = wait_task(&rest, stop["id"].as_i64().expect("task id"));
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
    let mut stopped_pids = Vec::new();
    for &host in &hosts {
        let ps = processes(&rest, host);
        for alias in BASIC {
            assert_eq!(
                (ps[alias].1, ps[alias].2.as_str()),
                (0, "STOPPED"),
                "{alias}"
            );
        }
        stopped_pids.extend(BASIC.iter().map(|a| ps[*a].1));
    }

    let grpc = fleet.spec.grpc;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let controller = Dialer::controller(fleet.pki.as_ref())
            .await
            .expect("TLS files");
        discover_like_grpcurl(controller.connect(grpc).await.expect("connect")).await;
        only_the_controller_reaches_an_agent(&fleet).await;
    });

    fleet.stop();
    assert!(
        !pid_alive(second_pid),
        "stopping the fleet stops the work process too"
    );
}

/// What the demo's agent grpcurl command does, with the controller's certificate, and
/// the same call without it or with an agent's own certificate, which must fail.
async fn only_the_controller_reaches_an_agent(fleet: &Fleet) {
    use proto::agent::v1::ListProcessesRequest;
    use proto::agent::v1::agent_service_client::AgentServiceClient;

    let pki = fleet.pki.as_ref().expect("a TLS fleet");
    let agent = fleet.hosts[0].addr;
    let as_controller = Dialer::agents(Some(pki)).await.expect("TLS files");
    let listed = AgentServiceClient::new(as_controller.connect(agent).await.expect("connect"))
        .list_processes(ListProcessesRequest::default())
        .await
        .expect("the controller's certificate is served")
        .into_inner();
    assert!(!listed.processes.is_empty(), "{listed:?}");

    let anonymous = Dialer::agents_anonymously(Some(pki))
        .await
        .expect("TLS files");
    let refused = match anonymous.connect(agent).await {
        Err(e) => e.to_string(),
        Ok(channel) => AgentServiceClient::new(channel)
            .list_processes(ListProcessesRequest::default())
            .await
            .expect_err("an agent serves no client without the controller's certificate")
            .to_string(),
    };
    assert!(!refused.is_empty());

    // Another agent's certificate (valid, same CA) is no way in either.
    let other = pki.agent_dir(fleet.hosts[1].ip);
    let as_agent = trust::ClientTls::load(
        trust::ClientTlsFiles {
            ca: pki.ca.clone(),
            identity: Some((other.join("agent.pem"), other.join("agent-key.pem"))),
        },
        trust::Role::Agent,
    )
    .await
    .expect("TLS files");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{agent}"))
        .expect("uri")
        .connect_with_connector_lazy(as_agent.connector(&agent.ip().to_string()).expect("a name"));
    AgentServiceClient::new(channel)
        .list_processes(ListProcessesRequest::default())
        .await
        .expect_err("an agent's certificate is not the controller's");
}

/// `grpcurl list`, `grpcurl describe` and a health check, over reflection v1 and v1alpha.
async fn discover_like_grpcurl(channel: tonic::transport::Channel) {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ask = |message_request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message_request),
    };
    let mut client = ServerReflectionClient::new(channel.clone());
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([ask(MessageRequest::ListServices(
            String::new(),
        ))]))
        .await
        .expect("reflection v1")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = replies
        .next()
        .await
        .expect("reply")
        .expect("ok")
        .message_response
    else {
        panic!("not a service list");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "ocp.v1.HostAgentService",
        "ocp.v1.TaskService",
        "ocp.v1.ProfileService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} in {services:?}"
        );
    }

    // describe: every method of both services resolves, with its input and output types.
    for (service, methods) in [("ocp.v1.HostAgentService", 15), ("ocp.v1.TaskService", 2)] {
        let mut replies = client
            .server_reflection_info(tokio_stream::iter([ask(
                MessageRequest::FileContainingSymbol(service.to_string()),
            )]))
            .await
            .expect("file containing symbol")
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) = replies
            .next()
            .await
            .expect("reply")
            .expect("ok")
            .message_response
        else {
            panic!("no descriptor for {service}");
        };
        let short = service.rsplit('.').next().expect("name");
        let described = files
            .file_descriptor_proto
            .iter()
            .filter_map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok())
            .flat_map(|f| f.service)
            .find(|s| s.name() == short)
            .unwrap_or_else(|| panic!("{service} described"));
        assert!(
            described.method.len() >= methods,
            "{service}: {:?}",
            described.method
        );
        assert!(
            described
                .method
                .iter()
                .all(|m| m.input_type().starts_with(".ocp.v1."))
        );
    }

    // v1alpha, which older grpcurl builds use.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = replies
            .next()
            .await
            .expect("reply")
            .expect("ok")
            .message_response
        else {
            panic!("not a service list");
        };
        assert!(list.service.iter().any(|s| s.name == "ocp.v1.TaskService"));
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
