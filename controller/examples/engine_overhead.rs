//! Measures what the engine itself adds to a batch restart: the task's wall time minus
//! the critical path the agents spent (per stage, the slowest host's step).
//!
//! `cargo build --release -p agent --bins && cargo run --release -p controller --example engine_overhead -- 1 50`

#[path = "../tests/common/fleet.rs"]
#[allow(dead_code, unused_imports)]
mod fleet;

use std::collections::BTreeMap;
use std::time::Duration;

use controller::model::Step;
use proto::ocp::v1::BatchRestartAgentsRequest;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1, 50] } else { sizes };
    println!("hosts  subtasks  levels  wall_ms  agents_ms  overhead_ms  per_level_ms");
    for n in sizes {
        let mut agents = Vec::new();
        for _ in 0..n {
            agents.push(fleet::start_agent(Duration::ZERO).await);
        }
        let mut controller = fleet::start_controller(None).await;
        let hosts = fleet::register(controller.grpc, &agents.iter().collect::<Vec<_>>()).await;
        let submitted = fleet::hosts_client(controller.grpc)
            .await
            .batch_restart_agents(BatchRestartAgentsRequest {
                host_ids: hosts,
                rollout: None,
            })
            .await
            .expect("submit")
            .into_inner();
        fleet::wait_for_end(controller.grpc, submitted.id).await;
        let task = controller
            .store()
            .await
            .get_task(submitted.id)
            .await
            .expect("store")
            .expect("task");
        assert_eq!(task.status.as_str(), "SUCCESSFUL");
        let wall = task.finish_time.unwrap_or(task.start_time) - task.start_time;
        // Per stage (same step, per-host), the slowest host is what the agents cost.
        let mut stages: BTreeMap<(i32, &str), i64> = BTreeMap::new();
        for s in task.subtasks.iter().filter(|s| s.step != Step::Wait) {
            let spent = s.finish_time.unwrap_or(0) - s.start_time.unwrap_or(0);
            let slowest = stages
                .entry((s.series_id - s.parallel_idx, s.step.as_str()))
                .or_default();
            *slowest = (*slowest).max(spent);
        }
        let agents_ms: i64 = stages.values().sum();
        let levels = 9;
        let overhead = wall - agents_ms;
        println!(
            "{n:>5}  {:>8}  {levels:>6}  {wall:>7}  {agents_ms:>9}  {overhead:>11}  {:>12.1}",
            task.subtasks.len(),
            overhead as f64 / f64::from(levels)
        );
        controller.shutdown().await;
        for mut a in agents {
            a.stop().await;
        }
    }
}
