//! The DAG engine against real agents: whole-agent operations end to end.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fleet::*;
use proto::agent::v1::{ProcessKind, ProcessStatus};
use proto::ocp::v1::{
    BatchRestartAgentsRequest, BatchStartAgentsRequest, BatchStopAgentsRequest,
    GetHostAgentRequest, ListHostAgentProcessesRequest, RestartAgentRequest,
    StartAgentProcessRequest, StopAgentRequest, Subtask,
};

fn pids(processes: &[proto::agent::v1::ProcessInfo], kind: ProcessKind) -> HashMap<String, u32> {
    processes
        .iter()
        .filter(|p| p.kind() == kind)
        .map(|p| (p.alias.clone(), p.pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_restart_over_three_hosts_gives_every_basic_process_a_new_pid() {
    let agents = [
        start_agent(Duration::ZERO).await,
        start_agent(Duration::ZERO).await,
        start_agent(Duration::ZERO).await,
    ];
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let mut client = hosts_client(controller.grpc).await;
    // A work process with autostart = false runs only when asked to; the batch restart
    // must leave it alone.
    for &host_id in &hosts {
        let page = client
            .list_host_agent_processes(ListHostAgentProcessesRequest {
                host_id,
                page: 1,
                size: 10,
            })
            .await
            .expect("list processes")
            .into_inner();
        let worker = page
            .contents
            .iter()
            .find(|p| p.alias == "worker")
            .expect("worker listed");
        assert_eq!(worker.status, "STOPPED");
        let started = client
            .start_agent_process(StartAgentProcessRequest {
                host_id,
                agent_process_id: worker.id,
            })
            .await
            .expect("start the worker")
            .into_inner();
        assert_eq!(
            (started.id, started.status.as_str()),
            (worker.id, "STARTED")
        );
        assert!(
            started.pid > 0 && pid_alive(started.pid as u32),
            "{started:?}"
        );
    }
    let mut before = Vec::new();
    for a in &agents {
        let ps = a.processes().await;
        assert!(
            ps.iter().all(|p| p.pid != 0),
            "every process runs before: {ps:?}"
        );
        before.push((pids(&ps, ProcessKind::Basic), pids(&ps, ProcessKind::Work)));
    }

    let task = client
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(task.status, "RUNNING");
    assert_eq!(task.subtasks.len(), 5 * 3 + 4);
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    assert!(
        done.subtasks
            .iter()
            .all(|s| s.status == "SUCCESSFUL" && s.run_time == 1)
    );

    for (agent, (basic, work)) in agents.iter().zip(before) {
        let ps = agent.processes().await;
        let after = pids(&ps, ProcessKind::Basic);
        for (alias, old) in &basic {
            let new = after[alias];
            assert!(new != 0 && new != *old, "{alias}: pid {old} -> {new}");
            assert!(!pid_alive(*old), "{alias}: old pid {old} is gone");
            assert!(pid_alive(new), "{alias}: new pid {new} runs");
        }
        assert_eq!(
            pids(&ps, ProcessKind::Work),
            work,
            "work processes are not touched"
        );
    }
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_stop_really_stops_and_batch_start_brings_them_back() {
    let agents = [
        start_agent(Duration::ZERO).await,
        start_agent(Duration::ZERO).await,
    ];
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
    let old: Vec<u32> = {
        let mut v = Vec::new();
        for a in &agents {
            v.extend(pids(&a.processes().await, ProcessKind::Basic).into_values());
        }
        v
    };
    let mut client = hosts_client(controller.grpc).await;
    let stop = client
        .batch_stop_agents(BatchStopAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .expect("submit stop")
        .into_inner();
    assert_eq!(stop.name, "Batch stop OCP agent");
    assert_eq!(stop.subtasks.len(), 3 * 2 + 2);
    assert_eq!(
        wait_for_end(controller.grpc, stop.id).await.status,
        "SUCCESSFUL"
    );
    for pid in &old {
        assert!(!pid_alive(*pid), "pid {pid} was stopped");
    }
    for a in &agents {
        for p in a
            .processes()
            .await
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
        {
            assert_eq!((p.status(), p.pid), (ProcessStatus::Stopped, 0), "{p:?}");
        }
    }
    let agent = client
        .get_host_agent(GetHostAgentRequest { host_id: hosts[0] })
        .await
        .expect("host agent")
        .into_inner();
    assert_eq!(
        agent.status, "STOPPED",
        "the inventory shows the stop: {agent:#?}"
    );

    let start = client
        .batch_start_agents(BatchStartAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .expect("submit start")
        .into_inner();
    assert_eq!(
        wait_for_end(controller.grpc, start.id).await.status,
        "SUCCESSFUL"
    );
    for a in &agents {
        for p in a
            .processes()
            .await
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
        {
            assert!(p.pid != 0 && pid_alive(p.pid), "{p:?}");
        }
    }
    controller.shutdown().await;
}

/// One node of a DAG, by what a client sees: ids differ between runs, seriesIds do not.
fn shape(subtasks: &[Subtask]) -> Vec<(String, i32, i32, i64, String, Vec<i32>)> {
    let series: HashMap<i64, i32> = subtasks.iter().map(|s| (s.id, s.series_id)).collect();
    let mut nodes: Vec<_> = subtasks
        .iter()
        .map(|s| {
            let mut ups: Vec<i32> = s.upstreams.iter().map(|u| series[u]).collect();
            ups.sort();
            (
                s.name.clone(),
                s.series_id,
                s.parallel_idx,
                s.timeout,
                s.status.clone(),
                ups,
            )
        })
        .collect();
    nodes.sort_by_key(|n| n.1);
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_host_batch_restart_has_the_seeds_dag() {
    // A host that never answers keeps the task at its first step, as submitted.
    let mut controller = start_controller(Some(Duration::from_millis(300))).await;
    let mut client = hosts_client(controller.grpc).await;
    let host = client
        .add_host(proto::ocp::v1::AddHostRequest {
            inner_ip_address: "127.0.0.1".to_string(),
            agent_port: u32::from(free_port()),
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let task = client
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: vec![host.id],
            rollout: None,
        })
        .await
        .unwrap()
        .into_inner();
    let node = |name: &str, series: i32, idx: i32, timeout: i64, status: &str, ups: &[i32]| {
        (
            name.to_string(),
            series,
            idx,
            timeout,
            status.to_string(),
            ups.to_vec(),
        )
    };
    // batch-restart-agents.zh.md, node by node, in seriesId order.
    let seed = vec![
        node("Wait node", 0, -1, 30, "PENDING", &[2]),
        node("Stop all OCP agent processes", 1, 0, 600, "PENDING", &[4]),
        node("Prepare restart OCP agent", 2, 0, 60, "READY", &[]),
        node("Wait node", 3, -1, 30, "PENDING", &[5]),
        node("Wait node", 4, -1, 30, "PENDING", &[8]),
        node("Start all OCP agent processes", 5, 0, 600, "PENDING", &[7]),
        node("Finish OCP agent operation", 6, 0, 60, "PENDING", &[3]),
        node("Wait node", 7, -1, 30, "PENDING", &[1]),
        node("Restart pos proxy", 8, 0, 60, "PENDING", &[0]),
    ];
    assert_eq!(shape(&task.subtasks), seed);
    assert_eq!(task.name, "Batch restart OCP agent");
    assert_eq!(
        (task.r#type.as_str(), task.task_definition_id, task.host_id),
        ("MANUAL", -1, None)
    );
    let context = task.context.expect("context");
    assert_eq!(
        context.list_map["host_ids"].values,
        vec![host.id.to_string()]
    );
    assert_eq!(context.string_map["prohibit_rollback"], "false");
    assert!(
        task.subtasks
            .iter()
            .all(|s| s.node_type == "JAVA_TASK" && s.operation == "EXECUTE")
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_fails_its_step_at_the_timeout_and_keeps_the_host() {
    let mut controller = start_controller(Some(Duration::from_secs(1))).await;
    let mut client = hosts_client(controller.grpc).await;
    let host = client
        .add_host(proto::ocp::v1::AddHostRequest {
            inner_ip_address: "127.0.0.1".to_string(),
            agent_port: u32::from(free_port()),
            name: "down".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let submitted = tokio::time::Instant::now();
    let task = client
        .restart_agent(RestartAgentRequest { host_id: host.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.host_id, Some(host.id));
    let done = wait_for_end(controller.grpc, task.id).await;
    let waited = submitted.elapsed();
    assert_eq!(done.status, "FAILED");
    assert!(
        waited >= Duration::from_secs(1),
        "failed only at the timeout: {waited:?}"
    );
    let prepare = &done.subtasks[0];
    assert_eq!(
        (prepare.name.as_str(), prepare.status.as_str()),
        ("Prepare restart OCP agent", "FAILED")
    );
    assert!(
        done.subtasks[1..].iter().all(|s| s.status == "PENDING"),
        "nothing after it started"
    );

    let log = controller
        .store()
        .await
        .subtask_log(prepare.id)
        .await
        .unwrap();
    let text: Vec<_> = log.iter().map(|l| l.line.as_str()).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("GetAgentInfo") && l.contains("attempt 1 failed")),
        "{text:#?}"
    );
    assert!(
        text.last().is_some_and(|l| l.starts_with("FAILED: ")),
        "{text:#?}"
    );

    let refused = client
        .batch_stop_agents(BatchStopAgentsRequest {
            host_ids: vec![host.id],
            rollout: None,
        })
        .await
        .expect_err("a failed task keeps its host");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert!(
        refused.message().contains(&format!("task {}", task.id))
            && refused.message().contains("roll back"),
        "{}",
        refused.message()
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_whole() {
    // A slow-starting listener keeps the first task busy while the second one is tried.
    let agent = start_agent(Duration::from_millis(1500)).await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &[&agent]).await;
    let mut client = hosts_client(controller.grpc).await;
    let cases = [
        (vec![], tonic::Code::InvalidArgument),
        (vec![hosts[0], hosts[0]], tonic::Code::InvalidArgument),
        (vec![hosts[0], 999], tonic::Code::NotFound),
        (vec![-1], tonic::Code::InvalidArgument),
    ];
    for (ids, code) in cases {
        let e = client
            .batch_restart_agents(BatchRestartAgentsRequest {
                host_ids: ids.clone(),
                rollout: None,
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), code, "{ids:?}: {}", e.message());
    }
    let tasks = tasks_client(controller.grpc)
        .await
        .list_tasks(proto::ocp::v1::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tasks.page.unwrap().total_elements, 0, "nothing was created");

    let first = client
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .unwrap()
        .into_inner();
    let e = client
        .stop_agent(StopAgentRequest { host_id: hosts[0] })
        .await
        .expect_err("the host is inside a running task");
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(
        e.message().contains(&format!("task {}", first.id)) && e.message().contains("wait"),
        "{}",
        e.message()
    );
    assert_eq!(
        wait_for_end(controller.grpc, first.id).await.status,
        "SUCCESSFUL"
    );
    let again = client
        .stop_agent(StopAgentRequest { host_id: hosts[0] })
        .await
        .expect("the host is free once the task succeeded")
        .into_inner();
    assert_eq!(
        wait_for_end(controller.grpc, again.id).await.status,
        "SUCCESSFUL"
    );
    controller.shutdown().await;
}
