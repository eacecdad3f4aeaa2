//! The operator's task operations against real agents: retry after a fault is fixed,
//! cancel of a stuck step, rollback of a failed stop, refused transitions, and a watch
//! that resumes without loss.

mod common;

use std::time::Duration;

use common::fleet::*;
use futures::StreamExt;
use proto::agent::v1::ProcessKind;
use proto::ocp::v1::{
    BatchRestartAgentsRequest, BatchStopAgentsRequest, CancelSubtaskRequest, GetSubtaskLogRequest,
    RestartAgentRequest, RetryTaskRequest, RollbackTaskRequest, SkipSubtaskRequest,
    StartAgentRequest, Task, WatchTaskRequest,
};

fn subtask<'a>(task: &'a Task, name: &str, parallel_idx: i32) -> &'a proto::ocp::v1::Subtask {
    task.subtasks
        .iter()
        .find(|s| {
            s.name == name
                && (s.parallel_idx == parallel_idx || s.parallel_idx == -1 && parallel_idx == -1)
        })
        .unwrap_or_else(|| panic!("no {name} #{parallel_idx} in {task:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failed_by_a_down_agent_is_retried_after_the_agent_is_back() {
    let mut agent = start_agent(Duration::ZERO).await;
    let mut controller = start_controller(Some(Duration::from_secs(1))).await;
    let host = register(controller.grpc, &[&agent]).await[0];
    agent.stop().await;

    let task = hosts_client(controller.grpc)
        .await
        .restart_agent(RestartAgentRequest { host_id: host })
        .await
        .expect("submit")
        .into_inner();
    let failed = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(failed.status, "FAILED");
    let prepare = subtask(&failed, "Prepare restart OCP agent", -1);
    assert_eq!((prepare.status.as_str(), prepare.run_time), ("FAILED", 1));

    agent.restart().await;
    let mut tasks = tasks_client(controller.grpc).await;
    let retried = tasks
        .retry_task(RetryTaskRequest { id: task.id })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        (retried.status.as_str(), retried.operation.as_str()),
        ("RUNNING", "RETRY")
    );
    let again = subtask(&retried, "Prepare restart OCP agent", -1);
    assert_eq!((again.operation.as_str(), again.run_time), ("RETRY", 2));

    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    assert!(done.subtasks.iter().all(|s| s.status == "SUCCESSFUL"));
    for p in agent
        .processes()
        .await
        .iter()
        .filter(|p| p.kind() == ProcessKind::Basic)
    {
        assert!(p.pid != 0 && pid_alive(p.pid), "{p:?}");
    }
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_start_all_is_cancelled_within_a_second() {
    let demo = workspace_bin("ocp-demo-proc");
    let deaf_port = free_port();
    // Listed as listening on a port it never opens: its start never completes.
    let agent = start_agent_with(&format!(
        r#"[[process]]
alias = "deaf"
command = {demo:?}
ports = [{deaf_port}]
min_live = "0s"
start_timeout = "120s"
stop_timeout = "2s"
"#
    ))
    .await;
    let mut controller = start_controller(None).await;
    let host = register(controller.grpc, &[&agent]).await[0];
    let task = hosts_client(controller.grpc)
        .await
        .start_agent(StartAgentRequest { host_id: host })
        .await
        .expect("submit")
        .into_inner();
    let running = wait_for_task(controller.grpc, task.id, |t| {
        subtask(t, "Start all OCP agent processes", -1).status == "RUNNING"
    })
    .await;
    let start_all = subtask(&running, "Start all OCP agent processes", -1).id;

    let asked = tokio::time::Instant::now();
    let answered = tasks_client(controller.grpc)
        .await
        .cancel_subtask(CancelSubtaskRequest {
            task_id: task.id,
            subtask_id: start_all,
        })
        .await
        .expect("cancel")
        .into_inner();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "cancelled in {took:?}");
    let cancelled = subtask(&answered, "Start all OCP agent processes", -1);
    assert_eq!(
        (cancelled.status.as_str(), cancelled.operation.as_str()),
        ("FAILED", "CANCEL")
    );

    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(done.status, "FAILED");
    let log = tasks_client(controller.grpc)
        .await
        .get_subtask_log(GetSubtaskLogRequest {
            task_id: task.id,
            subtask_id: start_all,
        })
        .await
        .expect("log")
        .into_inner()
        .log;
    assert!(log.contains("CANCELLED by admin"), "{log}");

    // The agent stopped waiting: it answers at once, and the process never counted as started.
    let answered_in = tokio::time::Instant::now();
    let deaf = agent
        .processes()
        .await
        .into_iter()
        .find(|p| p.alias == "deaf")
        .expect("deaf");
    assert!(answered_in.elapsed() < Duration::from_secs(1));
    assert_ne!(
        deaf.state(),
        proto::agent::v1::ProcessState::Running,
        "{deaf:?}"
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_stop_is_rolled_back_and_the_processes_run_again() {
    let demo = workspace_bin("ocp-demo-proc");
    let quick = start_agent(Duration::ZERO).await;
    // Ignores SIGTERM: its stop takes the whole stop_timeout, long enough to cancel it.
    let slow = start_agent_with(&format!(
        r#"[[process]]
alias = "stubborn"
command = {demo:?}
args = ["--ignore-term"]
min_live = "0s"
stop_timeout = "3s"
"#
    ))
    .await;
    let mut controller = start_controller(None).await;
    let hosts = register(controller.grpc, &[&quick, &slow]).await;
    let mut client = hosts_client(controller.grpc).await;
    let task = client
        .batch_stop_agents(BatchStopAgentsRequest {
            host_ids: hosts.clone(),
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    let stopping = wait_for_task(controller.grpc, task.id, |t| {
        subtask(t, "Stop all OCP agent processes", 0).status == "SUCCESSFUL"
            && subtask(t, "Stop all OCP agent processes", 1).status == "RUNNING"
    })
    .await;
    let stuck = subtask(&stopping, "Stop all OCP agent processes", 1).id;
    let mut tasks = tasks_client(controller.grpc).await;
    tasks
        .cancel_subtask(CancelSubtaskRequest {
            task_id: task.id,
            subtask_id: stuck,
        })
        .await
        .expect("cancel");
    let failed = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(failed.status, "FAILED");
    assert!(
        quick
            .processes()
            .await
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
            .all(|p| p.pid == 0),
        "the quick host was stopped before the failure"
    );

    let rolling = tasks
        .rollback_task(RollbackTaskRequest { id: task.id })
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!(
        (rolling.status.as_str(), rolling.operation.as_str()),
        ("RUNNING", "ROLLBACK")
    );
    let done = wait_for_end(controller.grpc, task.id).await;
    assert_eq!(
        (done.status.as_str(), done.operation.as_str()),
        ("SUCCESSFUL", "ROLLBACK"),
        "{done:#?}"
    );
    assert_eq!(
        done.context.as_ref().expect("context").string_map["rolled_back"],
        "true"
    );
    // What ran (both Prepares, the barrier after them, both Stop alls) was undone;
    // what never ran has nothing to undo.
    assert!(
        done.subtasks.iter().all(|s| s.status == "PENDING"),
        "{done:#?}"
    );
    let undone: Vec<&str> = done
        .subtasks
        .iter()
        .filter(|s| s.operation == "ROLLBACK")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(undone.len(), 5, "{undone:?}");
    assert_eq!(
        undone
            .iter()
            .filter(|n| **n == "Stop all OCP agent processes")
            .count(),
        2
    );
    for agent in [&quick, &slow] {
        for p in agent
            .processes()
            .await
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
        {
            assert!(
                p.pid != 0 && pid_alive(p.pid),
                "{} runs again: {p:?}",
                p.alias
            );
        }
    }
    // The rollback let the hosts go.
    let next = client
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts,
            rollout: None,
        })
        .await
        .expect("hosts are free")
        .into_inner();
    assert_eq!(
        wait_for_end(controller.grpc, next.id).await.status,
        "SUCCESSFUL"
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_that_do_not_fit_the_state_are_refused_naming_it() {
    let agent = start_agent(Duration::from_millis(1500)).await;
    let mut controller = start_controller(None).await;
    let host = register(controller.grpc, &[&agent]).await[0];
    let task = hosts_client(controller.grpc)
        .await
        .restart_agent(RestartAgentRequest { host_id: host })
        .await
        .expect("submit")
        .into_inner();
    let mut tasks = tasks_client(controller.grpc).await;

    let e = tasks
        .retry_task(RetryTaskRequest { id: task.id })
        .await
        .expect_err("running");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("is RUNNING"), "{}", e.message());

    let pending = subtask(&task, "Finish OCP agent operation", -1).id;
    let e = tasks
        .skip_subtask(SkipSubtaskRequest {
            task_id: task.id,
            subtask_id: pending,
        })
        .await
        .expect_err("skip a pending subtask");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("PENDING"), "{}", e.message());

    let e = tasks
        .cancel_subtask(CancelSubtaskRequest {
            task_id: task.id,
            subtask_id: 987_654,
        })
        .await
        .expect_err("no such subtask");
    assert_eq!(e.code(), tonic::Code::NotFound);

    assert_eq!(
        wait_for_end(controller.grpc, task.id).await.status,
        "SUCCESSFUL"
    );
    let e = tasks
        .rollback_task(RollbackTaskRequest { id: task.id })
        .await
        .expect_err("successful");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("SUCCESSFUL"), "{}", e.message());
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reconnects_gets_every_transition_once_in_order() {
    let agent = start_agent(Duration::from_millis(300)).await;
    let mut controller = start_controller(None).await;
    let host = register(controller.grpc, &[&agent]).await[0];
    let task = hosts_client(controller.grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: vec![host],
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    let mut tasks = tasks_client(controller.grpc).await;

    // Read a few transitions live, hang up, and come back from the last seq seen.
    let mut seen = Vec::new();
    let mut first = tasks
        .watch_task(WatchTaskRequest {
            id: task.id,
            after_seq: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    while seen.len() < 5 {
        seen.push(first.next().await.expect("an event").expect("ok"));
    }
    drop(first);
    let resume = seen.last().expect("seen").seq;
    let mut second = tasks
        .watch_task(WatchTaskRequest {
            id: task.id,
            after_seq: resume,
        })
        .await
        .expect("watch again")
        .into_inner();
    while let Some(event) = second.next().await {
        seen.push(event.expect("ok"));
    }
    let last = seen.last().expect("events");
    assert_eq!(
        (last.subtask_id, last.status.as_str()),
        (0, "SUCCESSFUL"),
        "ends with the task's end"
    );

    // The whole history, read after the end, is exactly what the two watches saw.
    let mut all = Vec::new();
    let mut replay = tasks
        .watch_task(WatchTaskRequest {
            id: task.id,
            after_seq: 0,
        })
        .await
        .expect("replay")
        .into_inner();
    while let Some(event) = replay.next().await {
        all.push(event.expect("ok"));
    }
    assert_eq!(seen, all);
    assert!(
        seen.windows(2).all(|w| w[0].seq < w[1].seq),
        "in order, none twice"
    );
    // Created, then for each of the 9 subtasks RUNNING and SUCCESSFUL, and the 8 that
    // became READY on the way, then the end.
    assert_eq!(seen.len(), 1 + 9 * 2 + 8 + 1, "{seen:#?}");
    controller.shutdown().await;
}
