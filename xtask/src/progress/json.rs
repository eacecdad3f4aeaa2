//! A task's JSON as the REST gateway answers it, typed: the fields the progress
//! tables draw, each with its default when the gateway leaves it out.

use std::fmt;

use serde::Deserialize;

use crate::rest::millis_of;

/// A task: a rolling one has `rollout`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Task {
    pub(super) id: i64,
    pub(super) name: Option<String>,
    pub(super) status: Option<String>,
    pub(super) paused: bool,
    pub(super) rollout: Rollout,
    pub(super) subtasks: Vec<Subtask>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Rollout {
    pub(super) batch_size: Option<BatchSize>,
    pub(super) max_failed_hosts: u64,
    pub(super) pause_seconds: u64,
    pub(super) min_healthy_seconds: u64,
    pub(super) pause_after_first_batch: bool,
    pub(super) hosts_per_batch: u64,
}

impl Rollout {
    /// Hosts a batch, as the controller resolved `batchSize`.
    pub(super) fn per_batch(&self) -> usize {
        (self.hosts_per_batch as usize).max(1)
    }

    /// `maxFailedHosts`: the failed hosts the rollout goes on with.
    pub(super) fn budget(&self) -> usize {
        self.max_failed_hosts as usize
    }
}

/// `batchSize` as it was asked: a number of hosts or a percentage.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum BatchSize {
    Hosts(u64),
    Share(String),
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Hosts(n) => write!(f, "{n}"),
            BatchSize::Share(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Subtask {
    pub(super) id: i64,
    pub(super) name: Option<String>,
    pub(super) status: String,
    /// The host's index in the batch; -1 on barriers.
    pub(super) parallel_idx: Option<i64>,
    pub(super) start_time: Option<String>,
    pub(super) finish_time: Option<String>,
    pub(super) upstreams: Vec<i64>,
}

impl Subtask {
    /// The host whose chain it is in; none for a barrier.
    pub(super) fn index(&self) -> Option<usize> {
        self.parallel_idx.filter(|&i| i >= 0).map(|i| i as usize)
    }

    pub(super) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("?")
    }

    pub(super) fn is_wait(&self) -> bool {
        self.name.as_deref() == Some("Wait node")
    }

    pub(super) fn start(&self) -> Option<i64> {
        millis_of(self.start_time.as_deref()?)
    }

    pub(super) fn finish(&self) -> Option<i64> {
        millis_of(self.finish_time.as_deref()?)
    }

    /// Not yet let through: the batch after it has not started.
    pub(super) fn unpassed(&self) -> bool {
        matches!(self.status.as_str(), "PENDING" | "READY")
    }
}
