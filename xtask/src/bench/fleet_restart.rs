//! Scenario 1 (and 6, on PostgreSQL): a batch restart of a whole fleet of real agents,
//! timed from the POST to SUCCESSFUL, split into what the agents spent and what the
//! engine added; and the store filled with finished tasks.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::BenchError;
use super::report::{FleetRun, StoreFill, StoreKind};
use super::sys;
use crate::fleet::Fleet;
use crate::rest::{Rest, millis};

/// Polls a task until it ends. Large tasks are big JSON documents, so they are polled
/// less often: the wall time comes from the task's own finishTime, not from the poll.
pub fn wait_task(rest: &Rest, id: i64, every: Duration) -> Result<Value, BenchError> {
    loop {
        let task = rest.get(&format!("/api/v2/tasks/instances/{id}"))?;
        if task["status"] != "RUNNING" {
            return Ok(task);
        }
        thread::sleep(every);
    }
}

/// Submits a task at `path` and waits for it to succeed: from just before the POST to
/// the task's own finishTime, and the finished task. `what` names it in errors.
pub fn timed_task(
    rest: &Rest,
    path: &str,
    body: Value,
    what: &str,
) -> Result<(f64, Value), BenchError> {
    let hosts = body["hostIds"].as_array().map_or(0, Vec::len);
    let posted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let task = rest.post(path, body)?;
    let id = task["id"]
        .as_i64()
        .ok_or_else(|| BenchError::Failed(format!("no task id in {task}")))?;
    let every = Duration::from_millis(if hosts > 50 { 500 } else { 20 });
    let task = wait_task(rest, id, every)?;
    if task["status"] != "SUCCESSFUL" {
        return Err(BenchError::Failed(format!(
            "{what} task {id} ended {}{}",
            task["status"],
            failed_step(rest, &task)
        )));
    }
    let finished = millis(&task["finishTime"])
        .ok_or_else(|| BenchError::Failed(format!("task {id} has no finishTime")))?;
    Ok(((finished - posted) as f64, task))
}

/// The first failed step of a task and the end of its log: the run's folder, the
/// controller's log with it, is gone once the bench ends.
fn failed_step(rest: &Rest, task: &Value) -> String {
    let failed = task["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["status"] == "FAILED"));
    let Some(step) = failed else {
        return "; see the controller's log".into();
    };
    let path = format!(
        "/api/v2/tasks/instances/{}/subtasks/{}/log",
        task["id"], step["id"]
    );
    let log = rest
        .get(&path)
        .map_or_else(|e| e.to_string(), |l| l.to_string());
    let tail: String = log
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(": step {} {} failed: {tail}", step["name"], step["id"])
}

fn mean_rss(pids: &[u32]) -> f64 {
    let sum: f64 = pids.iter().map(|&p| sys::memory(p).rss_mb).sum();
    sum / pids.len().max(1) as f64
}

fn controllers(fleet: &Fleet) -> Result<Vec<u32>, BenchError> {
    let pids = fleet.controller_pids();
    if pids.is_empty() {
        return Err(BenchError::Failed("the controller is not running".into()));
    }
    Ok(pids)
}

fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| sys::cpu_seconds(p)).sum()
}

/// The batch restart is submitted through `rest`, i.e. to the controller it talks to;
/// the CPU and memory are every controller's of the fleet.
pub fn measure(
    fleet: &Fleet,
    rest: &Rest,
    store: StoreKind,
    host_ids: &[i64],
    fleet_start: Duration,
) -> Result<FleetRun, BenchError> {
    let controllers = controllers(fleet)?;
    let agents = fleet.agent_pids();
    let agent_idle = mean_rss(&agents);
    let cpu_before = cpu_seconds(&controllers);
    let posted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let task = rest.post(
        "/api/v2/compute/hosts/batchRestartAgents",
        json!({ "hostIds": host_ids }),
    )?;
    let id = task["id"]
        .as_i64()
        .ok_or_else(|| BenchError::Failed(format!("no task id in {task}")))?;
    let every = Duration::from_millis(if host_ids.len() > 50 { 500 } else { 20 });
    let task = wait_task(rest, id, every)?;
    let cpu = cpu_seconds(&controllers) - cpu_before;
    if task["status"] != "SUCCESSFUL" {
        return Err(BenchError::Failed(format!(
            "batch restart task {id} ended {}; see the controller's log",
            task["status"]
        )));
    }
    let finished = millis(&task["finishTime"])
        .ok_or_else(|| BenchError::Failed(format!("task {id} has no finishTime")))?;
    let wall = (finished - posted) as f64;
    let subtasks = task["subtasks"].as_array().cloned().unwrap_or_default();
    // Per stage (a step name; the Wait nodes are the engine's own), the slowest host.
    let mut stages: BTreeMap<String, i64> = BTreeMap::new();
    for s in &subtasks {
        let name = s["name"].as_str().unwrap_or_default();
        if name.contains("Wait") {
            continue;
        }
        let spent = millis(&s["finishTime"]).unwrap_or(0) - millis(&s["startTime"]).unwrap_or(0);
        let slowest = stages.entry(name.to_string()).or_default();
        *slowest = (*slowest).max(spent);
    }
    let agents_ms = stages.values().sum::<i64>() as f64;
    let levels = (2 * stages.len()).saturating_sub(1).max(1);
    let overhead = wall - agents_ms;
    let peaks: Vec<f64> = controllers
        .iter()
        .map(|&p| sys::memory(p).peak_mb)
        .collect();
    Ok(FleetRun {
        hosts: host_ids.len(),
        store,
        controllers: controllers.len(),
        tls: fleet.spec.transport.is_tls(),
        subtasks: subtasks.len(),
        levels,
        wall_ms: wall,
        agents_ms,
        overhead_ms: overhead,
        overhead_per_level_ms: overhead / levels as f64,
        controller_cpu_s: cpu,
        controller_peak_rss_mb: peaks.iter().copied().fold(0.0, f64::max),
        controllers_peak_rss_mb: peaks,
        agent_mean_rss_idle_mb: agent_idle,
        agent_mean_rss_after_mb: mean_rss(&agents),
        fleet_start_s: fleet_start.as_secs_f64(),
    })
}

/// Fills the store with finished tasks the way an operator would over weeks: single
/// host restarts, one per host at a time (a host belongs to one operation at once),
/// sent to the controllers of `rests` in turn as a load balancer would. Then reads
/// each controller's memory, in the order of the fleet's controllers.
pub fn fill_store(
    fleet: &Fleet,
    rests: &[Rest],
    store: StoreKind,
    host_ids: &[i64],
    tasks: usize,
) -> Result<Vec<StoreFill>, BenchError> {
    let started = Instant::now();
    let mut done = 0;
    while done < tasks {
        let round = host_ids.len().min(tasks - done);
        let mut ids = Vec::with_capacity(round);
        for (host, rest) in host_ids[..round].iter().zip(rests.iter().cycle()) {
            let task = rest.post_empty(&format!("/api/v2/compute/hosts/{host}/agent/restart"))?;
            ids.extend(task["id"].as_i64());
        }
        // Every task of the round is done once none is RUNNING (in the store they share).
        loop {
            let page = rests[0].get("/api/v2/tasks/instances?status=RUNNING&size=1")?;
            if page["page"]["totalElements"].as_i64() == Some(0) {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        done += ids.len();
        println!(
            "  store: {done}/{tasks} finished tasks ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let controllers = controllers(fleet)?;
    let fill_s = started.elapsed().as_secs_f64();
    Ok(controllers
        .iter()
        .enumerate()
        .map(|(i, &pid)| {
            let memory = sys::memory(pid);
            StoreFill {
                store,
                controller: i + 1,
                controllers: controllers.len(),
                hosts: host_ids.len(),
                finished_tasks: done,
                fill_s,
                controller_rss_mb: memory.rss_mb,
                controller_peak_rss_mb: memory.peak_mb,
            }
        })
        .collect())
}
