//! Every operation of the core's table, on both faces, against every test user: without
//! credentials or with a wrong password a call is refused (401 / UNAUTHENTICATED), a
//! user the table does not admit is refused (403, code 30014 / PERMISSION_DENIED), and
//! every user it admits gets past admission. What each user may do comes from
//! `ApiOperation::access`; the REST route of each operation from the OpenAPI document
//! the controller serves, the gRPC call from a match that must name every operation.

mod gateway_support;

use std::collections::HashMap;

use controller::auth::{Permission, Permissions, Principal};
use controller::service::{Access, ApiOperation};
use gateway_support::*;
use proto::ocp::v1 as pb;
use proto::ocp::v1::agent_package_service_client::AgentPackageServiceClient;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use proto::ocp::v1::profile_service_client::ProfileServiceClient;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::transport::Channel;

/// The test users and the permissions `gateway_support::users_file` gives them.
const USERS: [(&str, &[Permission]); 6] = [
    (ADMIN, &[Permission::HostManager, Permission::TaskManager]),
    (HOST_VIEWER, &[Permission::HostViewer]),
    (HOST_MANAGER, &[Permission::HostManager]),
    (TASK_VIEWER, &[Permission::TaskViewer]),
    (TASK_MANAGER, &[Permission::TaskManager]),
    (NOBODY, &[]),
];

/// The task the reads are about is created by this user, who holds no TASK_VIEWER:
/// it reads its own task, and the table's task-reader rule is seen from both sides.
const CREATOR: &str = HOST_MANAGER;

/// Whether the table admits `user` to `op` on the fixture task.
fn admitted(op: ApiOperation, user: &str, permissions: &[Permission]) -> bool {
    let principal = Principal {
        name: user.to_string(),
        permissions: permissions.iter().copied().collect::<Permissions>(),
    };
    match op.access() {
        Access::Holds(permission) => principal.has(permission),
        Access::TaskReader => principal.has(Permission::TaskViewer) || user == CREATOR,
        Access::SignedIn => true,
    }
}

/// The ids the calls name.
struct Ids {
    host: i64,
    /// A host no task holds, for the deletes.
    spare: i64,
    process: i64,
    task: i64,
    subtask: i64,
}

/// Each operation's REST route as docs/api.md gives it, written here apart from the
/// code, so that a handler documented as another operation cannot go unseen.
fn spec_route(op: ApiOperation) -> (Method, &'static str) {
    use ApiOperation as Op;
    let (method, path) = match op {
        Op::BatchRestartAgents => ("POST", "/compute/hosts/batchRestartAgents"),
        Op::BatchStopAgents => ("POST", "/compute/hosts/batchStopAgents"),
        Op::BatchStartAgents => ("POST", "/compute/hosts/batchStartAgents"),
        Op::RestartAgent => ("POST", "/compute/hosts/{hostId}/agent/restart"),
        Op::StopAgent => ("POST", "/compute/hosts/{hostId}/agent/stop"),
        Op::StartAgent => ("POST", "/compute/hosts/{hostId}/agent/start"),
        Op::BatchUpgradeAgents => ("POST", "/compute/hosts/batchUpgradeAgents"),
        Op::UpgradeAgent => ("POST", "/compute/hosts/{hostId}/agent/upgrade"),
        Op::RestartAgentProcess => (
            "POST",
            "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/restart",
        ),
        Op::StopAgentProcess => (
            "POST",
            "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/stop",
        ),
        Op::StartAgentProcess => (
            "POST",
            "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/start",
        ),
        Op::GetHostAgent => ("GET", "/compute/hosts/{hostId}/agent"),
        Op::ListHostAgentProcesses => ("GET", "/compute/hosts/{hostId}/agent/processes"),
        Op::TailProcessLog => (
            "GET",
            "/compute/hosts/{hostId}/agent/processes/{agentProcessId}/log",
        ),
        Op::AddHost => ("POST", "/compute/hosts"),
        Op::ListHosts => ("GET", "/compute/hosts"),
        Op::GetHost => ("GET", "/compute/hosts/{hostId}"),
        Op::DeleteHost => ("DELETE", "/compute/hosts/{hostId}"),
        Op::ListTasks => ("GET", "/tasks/instances"),
        Op::GetTask => ("GET", "/tasks/instances/{id}"),
        Op::RetryTask => ("POST", "/tasks/instances/{id}/retry"),
        Op::RollbackTask => ("POST", "/tasks/instances/{id}/rollback"),
        Op::PauseTask => ("POST", "/tasks/instances/{id}/pause"),
        Op::ResumeTask => ("POST", "/tasks/instances/{id}/resume"),
        Op::RetrySubtask => ("POST", "/tasks/instances/{id}/subtasks/{subtaskId}/retry"),
        Op::SkipSubtask => ("POST", "/tasks/instances/{id}/subtasks/{subtaskId}/skip"),
        Op::CancelSubtask => ("POST", "/tasks/instances/{id}/subtasks/{subtaskId}/cancel"),
        Op::GetSubtaskLog => ("GET", "/tasks/instances/{id}/subtasks/{subtaskId}/log"),
        Op::WatchTask => ("GET", "/tasks/instances/{id}/events"),
        Op::GetCurrentUser => ("GET", "/profiles/me"),
        Op::UploadPackage => ("POST", "/agent/packages"),
        Op::ListPackages => ("GET", "/agent/packages"),
        Op::DeletePackage => ("DELETE", "/agent/packages/{id}"),
    };
    (Method::from_bytes(method.as_bytes()).expect("method"), path)
}

/// What the first admitted call of `op` answers: a task operation on the finished
/// fixture task is refused for its state (400, code 20003), and an upgrade to a
/// version never uploaded for its argument (400, 10001), which still proves the
/// permission passed; everything else succeeds.
fn first_answer(op: ApiOperation) -> StatusCode {
    use ApiOperation as Op;
    match op {
        Op::RetryTask
        | Op::RollbackTask
        | Op::PauseTask
        | Op::ResumeTask
        | Op::RetrySubtask
        | Op::SkipSubtask
        | Op::CancelSubtask
        | Op::BatchUpgradeAgents
        | Op::UpgradeAgent => StatusCode::BAD_REQUEST,
        // The binary is no JSON body, and this loop sends JSON: refused for its type,
        // which is checked after admission. agent_packages.rs uploads for real.
        Op::UploadPackage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        // No package has the id (see `rest_path`); agent_packages.rs deletes for real.
        Op::DeletePackage => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Each operation's REST method and path, from the served OpenAPI document.
async fn documented_routes(h: &Harness) -> HashMap<ApiOperation, (Method, String)> {
    let doc = h
        .send(Method::GET, "/api/v2/openapi.json", None, None)
        .await;
    doc.expect(StatusCode::OK);
    let mut routes = HashMap::new();
    for (path, item) in doc.json["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let id = operation["operationId"].as_str().unwrap_or_default();
            let Some(op) = ApiOperation::from_name(id) else {
                // Outside the table is only what anyone may read: the document itself.
                assert_eq!(method, "get", "{path}: operationId {id:?} is no operation");
                let public = h.send(Method::GET, path, None, None).await;
                public.expect(StatusCode::OK);
                continue;
            };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let previous = routes.insert(op, (method, path.clone()));
            assert!(previous.is_none(), "{op:?} is served by two routes");
        }
    }
    for op in ApiOperation::ALL {
        let (method, path) = spec_route(*op);
        assert_eq!(
            routes.get(op),
            Some(&(method, path.to_string())),
            "{op:?}: the route is not the documented one"
        );
    }
    routes
}

/// The id the package deletes name: none has it, whatever the uploads before made.
const NO_PACKAGE: i64 = i64::MAX;

fn rest_path(template: &str, op: ApiOperation, ids: &Ids) -> String {
    let host = if op == ApiOperation::DeleteHost {
        ids.spare
    } else {
        ids.host
    };
    if op == ApiOperation::DeletePackage {
        return template.replace("{id}", &NO_PACKAGE.to_string());
    }
    template
        .replace("{hostId}", &host.to_string())
        .replace("{agentProcessId}", &ids.process.to_string())
        .replace("{subtaskId}", &ids.subtask.to_string())
        .replace("{id}", &ids.task.to_string())
}

fn rest_body(op: ApiOperation, ids: &Ids) -> Option<String> {
    use ApiOperation as Op;
    match op {
        Op::BatchRestartAgents | Op::BatchStopAgents | Op::BatchStartAgents => {
            Some(json!({ "hostIds": [ids.host] }).to_string())
        }
        Op::AddHost => Some(json!({"innerIpAddress": "127.0.0.10", "agentPort": 2}).to_string()),
        Op::BatchUpgradeAgents => {
            Some(json!({ "hostIds": [ids.host], "version": "never-uploaded" }).to_string())
        }
        Op::UpgradeAgent => Some(json!({ "version": "never-uploaded" }).to_string()),
        _ => None,
    }
}

/// Calls `op` on the gRPC face; the id of the task it created, if it created one.
async fn call_grpc(
    op: ApiOperation,
    channel: &Channel,
    ids: &Ids,
    user: Option<&str>,
    password: &str,
) -> Result<Option<i64>, tonic::Status> {
    use ApiOperation as Op;
    let mut hosts = HostAgentServiceClient::new(channel.clone());
    let mut tasks = TaskServiceClient::new(channel.clone());
    let mut profiles = ProfileServiceClient::new(channel.clone());
    let mut packages = AgentPackageServiceClient::new(channel.clone());
    macro_rules! r {
        ($message:expr) => {
            grpc_request($message, user, password)
        };
    }
    let (host_id, host_ids) = (ids.host, vec![ids.host]);
    let process = (ids.host, ids.process);
    let (task_id, subtask_id) = (ids.task, ids.subtask);
    let created = |t: tonic::Response<pb::Task>| Some(t.into_inner().id);
    let none = |_| None;
    match op {
        Op::BatchRestartAgents => hosts
            .batch_restart_agents(r!(pb::BatchRestartAgentsRequest {
                host_ids,
                rollout: None
            }))
            .await
            .map(created),
        Op::BatchStopAgents => hosts
            .batch_stop_agents(r!(pb::BatchStopAgentsRequest {
                host_ids,
                rollout: None
            }))
            .await
            .map(created),
        Op::BatchStartAgents => hosts
            .batch_start_agents(r!(pb::BatchStartAgentsRequest {
                host_ids,
                rollout: None
            }))
            .await
            .map(created),
        Op::RestartAgent => hosts
            .restart_agent(r!(pb::RestartAgentRequest { host_id }))
            .await
            .map(created),
        Op::StopAgent => hosts
            .stop_agent(r!(pb::StopAgentRequest { host_id }))
            .await
            .map(created),
        Op::StartAgent => hosts
            .start_agent(r!(pb::StartAgentRequest { host_id }))
            .await
            .map(created),
        Op::BatchUpgradeAgents => hosts
            .batch_upgrade_agents(r!(pb::BatchUpgradeAgentsRequest {
                host_ids,
                rollout: None,
                version: "never-uploaded".into(),
            }))
            .await
            .map(created),
        Op::UpgradeAgent => hosts
            .upgrade_agent(r!(pb::UpgradeAgentRequest {
                host_id,
                version: "never-uploaded".into(),
            }))
            .await
            .map(created),
        Op::RestartAgentProcess => hosts
            .restart_agent_process(r!(pb::RestartAgentProcessRequest {
                host_id: process.0,
                agent_process_id: process.1,
            }))
            .await
            .map(|_| None),
        Op::StopAgentProcess => hosts
            .stop_agent_process(r!(pb::StopAgentProcessRequest {
                host_id: process.0,
                agent_process_id: process.1,
            }))
            .await
            .map(|_| None),
        Op::StartAgentProcess => hosts
            .start_agent_process(r!(pb::StartAgentProcessRequest {
                host_id: process.0,
                agent_process_id: process.1,
            }))
            .await
            .map(|_| None),
        Op::GetHostAgent => hosts
            .get_host_agent(r!(pb::GetHostAgentRequest { host_id }))
            .await
            .map(|_| None),
        Op::ListHostAgentProcesses => hosts
            .list_host_agent_processes(r!(pb::ListHostAgentProcessesRequest {
                host_id,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Op::TailProcessLog => hosts
            .tail_process_log(r!(pb::TailProcessLogRequest {
                host_id: process.0,
                agent_process_id: process.1,
                lines: None,
            }))
            .await
            .map(|_| None),
        Op::AddHost => hosts
            .add_host(r!(pb::AddHostRequest {
                inner_ip_address: "127.0.0.11".to_string(),
                agent_port: 2,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Op::ListHosts => hosts
            .list_hosts(r!(pb::ListHostsRequest::default()))
            .await
            .map(|_| None),
        Op::GetHost => hosts
            .get_host(r!(pb::GetHostRequest { host_id }))
            .await
            .map(|_| None),
        Op::DeleteHost => hosts
            .delete_host(r!(pb::DeleteHostRequest { host_id: ids.spare }))
            .await
            .map(|_| None),
        Op::ListTasks => tasks
            .list_tasks(r!(pb::ListTasksRequest::default()))
            .await
            .map(|_| None),
        Op::GetTask => tasks
            .get_task(r!(pb::GetTaskRequest { id: task_id }))
            .await
            .map(|_| None),
        Op::RetryTask => tasks
            .retry_task(r!(pb::RetryTaskRequest { id: task_id }))
            .await
            .map(none),
        Op::RollbackTask => tasks
            .rollback_task(r!(pb::RollbackTaskRequest { id: task_id }))
            .await
            .map(none),
        Op::PauseTask => tasks
            .pause_task(r!(pb::PauseTaskRequest { id: task_id }))
            .await
            .map(none),
        Op::ResumeTask => tasks
            .resume_task(r!(pb::ResumeTaskRequest { id: task_id }))
            .await
            .map(none),
        Op::RetrySubtask => tasks
            .retry_subtask(r!(pb::RetrySubtaskRequest {
                task_id,
                subtask_id,
            }))
            .await
            .map(none),
        Op::SkipSubtask => tasks
            .skip_subtask(r!(pb::SkipSubtaskRequest {
                task_id,
                subtask_id,
            }))
            .await
            .map(none),
        Op::CancelSubtask => tasks
            .cancel_subtask(r!(pb::CancelSubtaskRequest {
                task_id,
                subtask_id,
            }))
            .await
            .map(none),
        Op::GetSubtaskLog => tasks
            .get_subtask_log(r!(pb::GetSubtaskLogRequest {
                task_id,
                subtask_id,
            }))
            .await
            .map(|_| None),
        Op::WatchTask => tasks
            .watch_task(r!(pb::WatchTaskRequest {
                id: task_id,
                after_seq: 0,
            }))
            .await
            .map(|_| None),
        Op::GetCurrentUser => profiles
            .get_current_user(r!(pb::GetCurrentUserRequest {}))
            .await
            .map(|_| None),
        Op::UploadPackage => {
            use pb::upload_package_request::Part;
            let mut binary = vec![0u8; 64];
            binary[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
            binary[16] = 2;
            binary[18] = 62;
            let messages = [
                Part::Header(pb::UploadPackageHeader {
                    version: "permissions".into(),
                    sha256: String::new(),
                }),
                Part::Chunk(binary),
            ]
            .map(|part| pb::UploadPackageRequest { part: Some(part) });
            packages
                .upload_package(r!(futures::stream::iter(messages)))
                .await
                .map(|_| None)
        }
        Op::ListPackages => packages
            .list_packages(r!(pb::ListPackagesRequest::default()))
            .await
            .map(|_| None),
        Op::DeletePackage => packages
            .delete_package(r!(pb::DeletePackageRequest { id: NO_PACKAGE }))
            .await
            .map(|_| None),
    }
}

/// The ids of every method the controller's two services declare, from the descriptor
/// set it serves by reflection.
fn declared_methods() -> Vec<String> {
    use prost::Message as _;
    let set =
        prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    set.file
        .iter()
        .filter(|f| f.package() == "ocp.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect()
}

#[test]
fn every_grpc_method_is_an_operation_of_the_table() {
    let methods = declared_methods();
    for method in &methods {
        assert!(
            ApiOperation::from_name(method).is_some(),
            "gRPC method {method} is not in the operation table"
        );
    }
    for op in ApiOperation::ALL {
        assert!(
            methods.iter().any(|m| m == op.name()),
            "{op:?} has no gRPC method"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_admits_exactly_whom_the_table_says_on_both_faces() {
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let spare = h.add_host("127.0.0.9", 1).await;
    let process = h.process_id(host, "ob_cleaner").await;
    let created = h
        .send(
            Method::POST,
            "/compute/hosts/batchStartAgents",
            Some(CREATOR),
            Some(&json!({"hostIds": [host]}).to_string()),
        )
        .await;
    created.expect(StatusCode::OK);
    let task = created.json["data"]["id"].as_i64().expect("task id");
    let subtask = h.wait_task(task).await["subtasks"][0]["id"]
        .as_i64()
        .expect("subtask id");
    let ids = Ids {
        host,
        spare,
        process,
        task,
        subtask,
    };
    let routes = documented_routes(&h).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.grpc_addr()))
        .expect("url")
        .connect()
        .await
        .expect("connect");

    for op in ApiOperation::ALL.iter().copied() {
        let (method, template) = &routes[&op];
        let body = rest_body(op, &ids);
        let body = body.as_deref();
        let paths = [
            rest_path(template, op, &ids),
            format!("/api/v2{}", rest_path(template, op, &ids)),
        ];
        for (round, path) in paths.into_iter().enumerate() {
            let what = format!("{op:?}: {method} {path}");
            let anonymous = h.send(method.clone(), &path, None, body).await;
            anonymous.expect(StatusCode::UNAUTHORIZED).assert_envelope();
            let mut wrong = h.http.request(method.clone(), h.url(&path)).header(
                "authorization",
                controller::auth::basic_header(ADMIN, "not the password"),
            );
            if let Some(b) = body {
                wrong = wrong
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            let wrong = Reply::read(wrong.send().await.expect("answer")).await;
            wrong.expect(StatusCode::UNAUTHORIZED);
            assert_eq!(wrong.json["error"], anonymous.json["error"], "{what}");
            let unknown = h
                .send(method.clone(), &path, Some("no_such_user"), body)
                .await;
            unknown.expect(StatusCode::UNAUTHORIZED);
            assert_eq!(unknown.json["error"], anonymous.json["error"], "{what}");
            if *method == Method::GET {
                // HEAD is the GET route's operation, admitted alike.
                let head = h.send(Method::HEAD, &path, None, None).await;
                assert_eq!(head.status, StatusCode::UNAUTHORIZED, "HEAD {what}");
                let head = h.send(Method::HEAD, &path, Some(ADMIN), None).await;
                assert_eq!(head.status, StatusCode::OK, "HEAD {what}");
            }

            // The second round finds the spare host deleted and the new one added.
            let mut first = round == 0;
            for (user, permissions) in USERS {
                let reply = h.send(method.clone(), &path, Some(user), body).await;
                if admitted(op, user, permissions) && std::mem::take(&mut first) {
                    assert_eq!(
                        reply.status,
                        first_answer(op),
                        "{what} as {user}: {}",
                        reply.text
                    );
                    if reply.status == StatusCode::BAD_REQUEST {
                        let code = match op {
                            ApiOperation::BatchUpgradeAgents | ApiOperation::UpgradeAgent => 10001,
                            _ => 20003,
                        };
                        assert_eq!(reply.code(), code, "{what} as {user}: {}", reply.text);
                    }
                }
                if admitted(op, user, permissions) {
                    assert!(
                        ![
                            StatusCode::UNAUTHORIZED,
                            StatusCode::FORBIDDEN,
                            StatusCode::INTERNAL_SERVER_ERROR
                        ]
                        .contains(&reply.status),
                        "{what} as {user}: {} {}",
                        reply.status,
                        reply.text
                    );
                    let streamed = reply
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if !streamed {
                        reply.assert_envelope();
                    }
                    // A task holds its host until it ends: let it end before the next call.
                    if reply.status == StatusCode::OK
                        && reply.json["data"]["subtasks"].is_array()
                        && *method == Method::POST
                    {
                        let id = reply.json["data"]["id"].as_i64().expect("task id");
                        h.wait_task(id).await;
                    }
                } else {
                    reply.expect(StatusCode::FORBIDDEN).assert_envelope();
                    assert_eq!(reply.code(), 30014, "{what} as {user}: {}", reply.text);
                }
            }
        }

        let what = format!("{op:?} over gRPC");
        for (user, password) in [(None, PASSWORD), (Some(ADMIN), "not the password")] {
            let refused = call_grpc(op, &channel, &ids, user, password)
                .await
                .expect_err(&what);
            assert_eq!(
                refused.code(),
                tonic::Code::Unauthenticated,
                "{what}: {refused:?}"
            );
        }
        for (user, permissions) in USERS {
            let outcome = call_grpc(op, &channel, &ids, Some(user), PASSWORD).await;
            if admitted(op, user, permissions) {
                match outcome {
                    Ok(Some(task)) => {
                        h.wait_task(task).await;
                    }
                    Ok(None) => {}
                    Err(e) => assert!(
                        ![
                            tonic::Code::Unauthenticated,
                            tonic::Code::PermissionDenied,
                            tonic::Code::Internal,
                            tonic::Code::Unimplemented
                        ]
                        .contains(&e.code()),
                        "{what} as {user}: {e:?}"
                    ),
                }
            } else {
                let e = outcome.expect_err(&format!("{what} as {user}"));
                assert_eq!(
                    e.code(),
                    tonic::Code::PermissionDenied,
                    "{what} as {user}: {e:?}"
                );
            }
        }
    }
    h.stop().await;
}
