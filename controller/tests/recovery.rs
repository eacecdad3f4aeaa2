//! A controller killed with SIGKILL in the middle of a task, and started again on the
//! same data, finishes the task: the step that was running runs again.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::fleet::*;
use proto::agent::v1::ProcessKind;
use proto::ocp::v1::BatchRestartAgentsRequest;
use test_support::controller::Launch;
use test_support::users::{self, User};

/// A users file with the test admin, as an operator would write one.
fn users_file(data_dir: &Path) -> std::path::PathBuf {
    let path = data_dir.join("users.toml");
    if path.exists() {
        return path;
    }
    users::write(
        data_dir,
        &[User {
            name: "admin",
            password: ADMIN_PASSWORD,
            permissions: users::ALL,
        }],
    )
}

/// The controller on `data_dir`, its gRPC face on `grpc` (which the agents' tasks are
/// followed on across restarts).
fn launch(data_dir: &Path, grpc: SocketAddr) -> Launch {
    let log = data_dir.join("controller.log");
    let launch = Launch::new(env!("CARGO_BIN_EXE_ocp-controller"), data_dir, &log)
        .users(&users_file(data_dir))
        .args(["--heartbeat-interval", "1s"]);
    let http = launch.http;
    launch.at(http, grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_finishes_the_task_after_a_restart() {
    // Slow starts keep "Start all" running long enough to kill the controller inside it.
    let agents = [
        start_agent(Duration::from_millis(1500)).await,
        start_agent(Duration::from_millis(1500)).await,
    ];
    let data = tempfile::tempdir().expect("tempdir");
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut first = launch(data.path(), grpc).start().await;
    let hosts = register(grpc, &agents.iter().collect::<Vec<_>>()).await;
    let task = hosts_client(grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts,
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    let running = wait_for_task(grpc, task.id, |t| {
        t.subtasks
            .iter()
            .any(|s| s.name == "Start all OCP agent processes" && s.status == "RUNNING")
    })
    .await;
    first.kill();
    let interrupted: Vec<i64> = running
        .subtasks
        .iter()
        .filter(|s| s.status == "RUNNING")
        .map(|s| s.id)
        .collect();

    let mut second = launch(data.path(), grpc).start().await;
    let done = wait_for_end(grpc, task.id).await;
    second.kill();

    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    for s in done.subtasks.iter().filter(|s| interrupted.contains(&s.id)) {
        assert_eq!(s.run_time, 2, "{} ran again after the restart", s.name);
    }
    for agent in &agents {
        for p in agent
            .processes()
            .await
            .iter()
            .filter(|p| p.kind() == ProcessKind::Basic)
        {
            assert!(
                p.pid != 0 && pid_alive(p.pid),
                "{} runs after the task: {p:?}",
                p.alias
            );
        }
    }
}

/// Twenty times: SIGKILL the controller at a random moment of a batch restart over three
/// hosts, start it again on the same data, and check the task ends SUCCESSFUL, every basic
/// process runs, and the store is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_random_kills_during_batch_restarts_lose_nothing() {
    const TRIALS: usize = 20;
    // A slow start keeps each task running for at least half a second.
    let agents = [
        start_agent(Duration::from_millis(500)).await,
        start_agent(Duration::from_millis(500)).await,
        start_agent(Duration::from_millis(500)).await,
    ];
    let data = tempfile::tempdir().expect("tempdir");
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut controller = launch(data.path(), grpc).start().await;
    let hosts = register(grpc, &agents.iter().collect::<Vec<_>>()).await;
    let store =
        controller::store::Store::connect(&controller::store::Store::sqlite_url(data.path()))
            .await
            .expect("read the controller's store");

    let (mut survived, mut interrupted) = (0, 0);
    for trial in 0..TRIALS {
        let task = hosts_client(grpc)
            .await
            .batch_restart_agents(BatchRestartAgentsRequest {
                host_ids: hosts.clone(),
                rollout: None,
            })
            .await
            .unwrap_or_else(|e| panic!("trial {trial}: submit: {e}"))
            .into_inner();
        // Anywhere from right after the submission to the end of the task.
        let delay = Duration::from_millis(rand::random::<u64>() % 550);
        tokio::time::sleep(delay).await;
        controller.kill();
        let at_kill = store.get_task(task.id).await.unwrap().expect("task");
        if at_kill.status == controller::model::TaskStatus::Running {
            interrupted += 1;
        }
        controller = launch(data.path(), grpc).start().await;
        let done = wait_for_end(grpc, task.id).await;
        assert_eq!(
            done.status, "SUCCESSFUL",
            "trial {trial} (killed after {delay:?}): {done:#?}"
        );

        let stored = store.get_task(task.id).await.unwrap().expect("task");
        assert!(
            stored
                .subtasks
                .iter()
                .all(|s| s.status == controller::model::SubtaskStatus::Successful),
            "trial {trial}: {stored:#?}"
        );
        for &host in &hosts {
            assert_eq!(
                store.lock_holder(host).await.unwrap(),
                None,
                "trial {trial}: no lock outlives its task"
            );
        }
        for agent in &agents {
            for p in agent
                .processes()
                .await
                .iter()
                .filter(|p| p.kind() == ProcessKind::Basic)
            {
                assert!(
                    p.pid != 0 && pid_alive(p.pid),
                    "trial {trial}: {} left stopped: {p:?}",
                    p.alias
                );
            }
        }
        survived += 1;
    }
    controller.kill();
    eprintln!(
        "controller crash trials survived: {survived}/{TRIALS} ({interrupted} killed mid-task)"
    );
    assert!(
        interrupted >= TRIALS / 2,
        "most kills must land inside a task: {interrupted}"
    );
}

/// A rollback is durable too: killed while it undoes a Stop all, the controller finishes
/// the rollback after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_finishes_a_rollback_after_a_restart() {
    use proto::ocp::v1::{CancelSubtaskRequest, RollbackTaskRequest};
    let agent = start_agent(Duration::from_millis(1500)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut controller = launch(data.path(), grpc).start().await;
    let hosts = register(grpc, &[&agent]).await;
    let task = hosts_client(grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts,
            rollout: None,
        })
        .await
        .expect("submit")
        .into_inner();
    let starting = wait_for_task(grpc, task.id, |t| {
        t.subtasks
            .iter()
            .any(|s| s.name == "Start all OCP agent processes" && s.status == "RUNNING")
    })
    .await;
    let start_all = starting
        .subtasks
        .iter()
        .find(|s| s.name == "Start all OCP agent processes")
        .expect("start all")
        .id;
    let mut tasks = tasks_client(grpc).await;
    tasks
        .cancel_subtask(CancelSubtaskRequest {
            task_id: task.id,
            subtask_id: start_all,
        })
        .await
        .expect("cancel");
    assert_eq!(wait_for_end(grpc, task.id).await.status, "FAILED");

    tasks
        .rollback_task(RollbackTaskRequest { id: task.id })
        .await
        .expect("rollback");
    // Undoing Stop all means starting again, which the slow listener makes take a while.
    wait_for_task(grpc, task.id, |t| {
        t.subtasks.iter().any(|s| {
            s.name == "Stop all OCP agent processes"
                && s.status == "RUNNING"
                && s.operation == "ROLLBACK"
        })
    })
    .await;
    controller.kill();

    let mut again = launch(data.path(), grpc).start().await;
    let done = wait_for_end(grpc, task.id).await;
    again.kill();
    assert_eq!(
        (done.status.as_str(), done.operation.as_str()),
        ("SUCCESSFUL", "ROLLBACK"),
        "{done:#?}"
    );
    let undone = done
        .subtasks
        .iter()
        .find(|s| s.name == "Stop all OCP agent processes")
        .expect("stop all");
    assert_eq!(
        (undone.status.as_str(), undone.operation.as_str()),
        ("PENDING", "ROLLBACK")
    );
    for p in agent
        .processes()
        .await
        .iter()
        .filter(|p| p.kind() == ProcessKind::Basic)
    {
        assert!(
            p.pid != 0 && pid_alive(p.pid),
            "{} runs after the rollback: {p:?}",
            p.alias
        );
    }
}
