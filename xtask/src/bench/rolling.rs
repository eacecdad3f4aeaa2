//! Scenario 7: a rolling restart (batches of ten) against the stage-wise batch restart
//! of the same hosts, one after the other in one fleet, and what each Wait node between
//! two batches costs beyond its pause.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::BenchError;
use super::fleet_restart::timed_task;
use super::report::{RollingRun, StoreKind};
use crate::rest::{Rest, millis};

/// The hosts of the rolling restart, at most: ten batches of ten, a few seconds.
pub const HOSTS: usize = 100;
/// Below this, too few Wait nodes (one at 20 hosts) to say anything.
pub const MIN_HOSTS: usize = 20;
pub const BATCH_SIZE: usize = 10;

/// Which fleet size measures it and on how many of its hosts, from the bench's sizes
/// (`--hosts`): the first fleet of `HOSTS` hosts or more, on its first `HOSTS`; else the
/// largest one, whole, if it has `MIN_HOSTS`. Else why it is skipped.
pub fn plan(sizes: &[usize]) -> Result<(usize, usize), String> {
    if let Some(&n) = sizes.iter().filter(|&&n| n >= HOSTS).min() {
        return Ok((n, HOSTS));
    }
    match sizes.iter().max() {
        Some(&n) if n >= MIN_HOSTS => Ok((n, n)),
        largest => Err(format!(
            "rolling restart: needs a fleet of {MIN_HOSTS} hosts or more (--hosts); the largest has {}",
            largest.copied().unwrap_or(0)
        )),
    }
}

/// One batch restart of `host_ids`, rolling with `rollout`: from just before the POST
/// to the task's own finishTime, and the finished task.
fn restart(
    rest: &Rest,
    host_ids: &[i64],
    rollout: Option<Value>,
) -> Result<(f64, Value), BenchError> {
    let mut body = json!({ "hostIds": host_ids });
    let rolling = rollout.is_some();
    if let Some(rollout) = rollout {
        body["rollout"] = rollout;
    }
    let what = if rolling {
        "rolling restart"
    } else {
        "batch restart"
    };
    let (wall, task) = timed_task(rest, "/api/v2/compute/hosts/batchRestartAgents", body, what)?;
    if rolling && task["rollout"].is_null() {
        return Err(BenchError::Failed(format!(
            "the controller answered rolling task {} without `rollout`: it ran stage-wise",
            task["id"]
        )));
    }
    Ok((wall, task))
}

/// The stage-wise restart of `host_ids`, then the rolling one. The stage-wise one is
/// run again here rather than taken from the fleet's first restart, so that both find
/// the agents' connections open and the store in the same state.
pub fn measure(
    rest: &Rest,
    host_ids: &[i64],
    tls: bool,
    store: StoreKind,
) -> Result<RollingRun, BenchError> {
    let (stage_wise, _) = restart(rest, host_ids, None)?;
    let (rolling, task) = restart(rest, host_ids, Some(json!({ "batchSize": BATCH_SIZE })))?;
    let pause_ms = task["rollout"]["pauseSeconds"].as_f64().unwrap_or(0.0) * 1e3;
    let costs = wait_costs(&task, pause_ms)?;
    let (wait_node_median_ms, wait_node_max_ms) = median_max(&costs.node_ms);
    let (gap_median_ms, gap_max_ms) = median_max(&costs.gap_ms);
    Ok(RollingRun {
        hosts: host_ids.len(),
        store,
        tls,
        batch_size: BATCH_SIZE,
        batches: costs.node_ms.len() + 1,
        stage_wise_wall_ms: stage_wise,
        rolling_wall_ms: rolling,
        ratio: if stage_wise > 0.0 {
            rolling / stage_wise
        } else {
            0.0
        },
        pause_ms,
        wait_nodes: costs.node_ms.len(),
        wait_node_median_ms,
        wait_node_max_ms,
        gap_median_ms,
        gap_max_ms,
    })
}

/// What each Wait node of a rolling task cost beyond its pause, in its order.
#[derive(Debug, Default, PartialEq)]
pub struct WaitCosts {
    /// Its own finishTime - startTime.
    pub node_ms: Vec<f64>,
    /// From the last Finish of the batch before it ending to the first Prepare of the
    /// batch after it starting: the barrier as the hosts see it.
    pub gap_ms: Vec<f64>,
}

/// A Wait node held by a pause (an operator's, or `pauseAfterFirstBatch`) starts when it
/// is resumed, so its gap holds the hold too: the bench's rollout holds nowhere.
pub fn wait_costs(task: &Value, pause_ms: f64) -> Result<WaitCosts, BenchError> {
    let empty = Vec::new();
    let subtasks = task["subtasks"].as_array().unwrap_or(&empty);
    let by_id: HashMap<i64, &Value> = subtasks
        .iter()
        .filter_map(|s| Some((s["id"].as_i64()?, s)))
        .collect();
    let linked = |wait: &Value, side: &str, time: &str| -> Vec<i64> {
        wait[side]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|id| by_id.get(&id.as_i64()?))
            .filter_map(|s| millis(&s[time]))
            .collect()
    };
    let mut waits: Vec<&Value> = subtasks
        .iter()
        .filter(|s| s["name"] == "Wait node")
        .collect();
    waits.sort_by_key(|s| s["id"].as_i64().unwrap_or(0));
    let mut costs = WaitCosts::default();
    for wait in waits {
        let id = &wait["id"];
        let missing = |what: &str| BenchError::Failed(format!("Wait node {id}: no {what}"));
        let start = millis(&wait["startTime"]).ok_or_else(|| missing("startTime"))?;
        let finish = millis(&wait["finishTime"]).ok_or_else(|| missing("finishTime"))?;
        let last_finish = linked(wait, "upstreams", "finishTime")
            .into_iter()
            .max()
            .ok_or_else(|| missing("finished upstream"))?;
        let first_start = linked(wait, "downstreams", "startTime")
            .into_iter()
            .min()
            .ok_or_else(|| missing("started downstream"))?;
        costs.node_ms.push((finish - start) as f64 - pause_ms);
        costs
            .gap_ms
            .push((first_start - last_finish) as f64 - pause_ms);
    }
    if costs.node_ms.is_empty() {
        return Err(BenchError::Failed(format!(
            "rolling task {}: no Wait node",
            task["id"]
        )));
    }
    Ok(costs)
}

/// The median (the mean of the middle two for an even count) and the largest.
pub fn median_max(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    (median, sorted.last().copied().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::time_at;

    #[test]
    fn the_plan_follows_the_fleet_sizes() {
        assert_eq!(plan(&[10, 100, 1000]), Ok((100, 100)));
        assert_eq!(plan(&[1000]), Ok((1000, 100)));
        assert_eq!(plan(&[10, 50]), Ok((50, 50)));
        assert_eq!(plan(&[20]), Ok((20, 20)));
        let why = plan(&[10]).expect_err("10 hosts are too few");
        assert!(
            why.contains("20 hosts or more") && why.ends_with("has 10"),
            "{why}"
        );
        assert!(plan(&[]).is_err());
    }

    #[test]
    fn a_wait_node_costs_its_own_time_and_the_gap_between_the_batches() {
        // Batches {1, 2} and {4, 5}; host 2 finishes last at 120 ms, host 5 starts
        // first at 127 ms; the Wait node ran from 121 to 125, with a 0 s pause.
        let s = |id: i64, name: &str, start: i64, finish: i64| {
            json!({"id": id, "name": name, "status": "SUCCESSFUL",
                "startTime": time_at(start), "finishTime": time_at(finish)})
        };
        let mut wait = s(3, "Wait node", 121, 125);
        wait["upstreams"] = json!([1, 2]);
        wait["downstreams"] = json!([4, 5]);
        let task = json!({"id": 8, "subtasks": [
            s(1, "Finish OCP agent operation", 100, 110),
            s(2, "Finish OCP agent operation", 100, 120),
            wait,
            s(4, "Prepare restart OCP agent", 129, 140),
            s(5, "Prepare restart OCP agent", 127, 140),
        ]});
        let costs = wait_costs(&task, 0.0).expect("complete timestamps");
        assert_eq!(
            costs,
            WaitCosts {
                node_ms: vec![4.0],
                gap_ms: vec![7.0]
            }
        );
        // A pause is not the Wait node's cost.
        let costs = wait_costs(&task, 2.0).expect("complete timestamps");
        assert_eq!((costs.node_ms[0], costs.gap_ms[0]), (2.0, 5.0));
    }

    #[test]
    fn a_task_without_wait_nodes_or_times_is_refused() {
        let none = json!({"id": 8, "subtasks": []});
        assert!(wait_costs(&none, 0.0).is_err());
        let unstarted = json!({"id": 8, "subtasks": [
            {"id": 3, "name": "Wait node", "status": "PENDING", "upstreams": [], "downstreams": []}
        ]});
        let err = wait_costs(&unstarted, 0.0).expect_err("no times");
        assert!(err.to_string().contains("no startTime"), "{err}");
    }

    #[test]
    fn median_and_max() {
        assert_eq!(median_max(&[3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(median_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 4.0));
        assert_eq!(median_max(&[]), (0.0, 0.0));
    }
}
