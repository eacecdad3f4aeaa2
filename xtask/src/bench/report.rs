//! The figures of one bench run as `results.json` holds them, so that runs can be
//! compared by a script: each scenario's figures, the store they were measured on, and
//! what mutual TLS costs (each figure in both transports). The goals are judged in
//! `goals`, the table a human reads is drawn in `table`.

use std::time::Duration;

use serde::Serialize;

pub use super::agent_latency::AgentLatencyRun;
pub use super::console::ConsoleRun;
pub use super::upgrade::UpgradeRun;

/// Which store the controllers of a figure ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The default: one controller, its SQLite file in its data folder.
    Sqlite,
    /// A fresh database shared by every controller of the scenario.
    Postgres,
}

impl StoreKind {
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "PostgreSQL",
        }
    }
}

/// One batch restart of a whole fleet (scenario 1; scenario 6 on PostgreSQL).
#[derive(Debug, Clone, Serialize)]
pub struct FleetRun {
    pub hosts: usize,
    pub store: StoreKind,
    /// Controllers sharing the store; the task is submitted to the first one.
    pub controllers: usize,
    /// Mutual TLS between the controller and the agents, HTTPS to the controller.
    pub tls: bool,
    pub subtasks: usize,
    pub levels: usize,
    /// From just before the POST to the task's own finishTime.
    pub wall_ms: f64,
    /// Per stage, the slowest host's step, summed: what the agents themselves spent.
    pub agents_ms: f64,
    pub overhead_ms: f64,
    pub overhead_per_level_ms: f64,
    /// Controller CPU (user + system) from the POST to the end of the task, summed
    /// over the controllers.
    pub controller_cpu_s: f64,
    /// The largest of `controllers_peak_rss_mb`.
    pub controller_peak_rss_mb: f64,
    /// Each controller's peak RSS, the one the task was submitted to first.
    pub controllers_peak_rss_mb: Vec<f64>,
    pub agent_mean_rss_idle_mb: f64,
    pub agent_mean_rss_after_mb: f64,
    /// How long starting the agents (in batches, until each serves) took.
    pub fleet_start_s: f64,
}

/// A rolling restart against the stage-wise batch restart of the same hosts, one after
/// the other in one fleet (scenario 7), and what its Wait nodes cost.
#[derive(Debug, Clone, Serialize)]
pub struct RollingRun {
    pub hosts: usize,
    pub store: StoreKind,
    pub tls: bool,
    /// `rollout.batchSize`; the Wait nodes are `batches - 1`.
    pub batch_size: usize,
    pub batches: usize,
    /// Each from just before the POST to the task's own finishTime.
    pub stage_wise_wall_ms: f64,
    pub rolling_wall_ms: f64,
    /// `rolling_wall_ms / stage_wise_wall_ms`.
    pub ratio: f64,
    /// `rollout.pauseSeconds` in ms, taken off both Wait node figures (0 here).
    pub pause_ms: f64,
    pub wait_nodes: usize,
    /// A Wait node's own finishTime - startTime, beyond the pause.
    pub wait_node_median_ms: f64,
    pub wait_node_max_ms: f64,
    /// From the last Finish of a batch ending to the first Prepare of the next batch
    /// starting, beyond the pause: the barrier as the hosts see it.
    pub gap_median_ms: f64,
    pub gap_max_ms: f64,
}

/// The same stop-then-start by ansible-playbook (scenario 2).
#[derive(Debug, Clone, Serialize)]
pub struct AnsibleRun {
    pub hosts: usize,
    pub forks: usize,
    pub wall_ms: f64,
    /// Ansible's wall time over ours for the same hosts: how many times faster we are.
    pub ratio: Option<f64>,
}

/// A latency distribution of one kind of call.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub name: String,
    /// Measured over TLS; the name is the same in both transports, so that the two
    /// figures pair up.
    pub tls: bool,
    pub samples: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(name: &str, mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            samples
                .get(((samples.len().saturating_sub(1)) as f64 * q).round() as usize)
                .copied()
                .map_or(0.0, ms)
        };
        Latency {
            name: name.to_string(),
            tls: false,
            samples: samples.len(),
            median_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    pub fn over_tls(mut self, tls: bool) -> Latency {
        self.tls = tls;
        self
    }

    pub(super) fn label(&self) -> String {
        if self.tls {
            format!("{} [TLS]", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Requests per second and tail latency of one route under load (scenario 4).
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub target: String,
    pub tool: String,
    /// HTTPS, or gRPC over TLS.
    pub tls: bool,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One controller's memory with the largest fleet and many finished tasks in its store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFill {
    pub store: StoreKind,
    /// Which of the controllers sharing the store (from 1), and how many there were:
    /// the tasks were submitted to them in turn.
    pub controller: usize,
    pub controllers: usize,
    pub hosts: usize,
    pub finished_tasks: usize,
    pub fill_s: f64,
    pub controller_rss_mb: f64,
    pub controller_peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub figure: String,
    /// None when the run did not measure it (e.g. a quick run).
    pub met: Option<bool>,
}

/// One figure measured in plaintext and with mutual TLS: what TLS costs.
#[derive(Debug, Clone, Serialize)]
pub struct TlsCost {
    pub what: String,
    /// "ms", "s" (CPU) or "req/s".
    pub unit: &'static str,
    pub plaintext: f64,
    pub tls: f64,
    /// `tls - plaintext`, in `unit`.
    pub extra: f64,
    /// `tls / plaintext`.
    pub ratio: f64,
}

impl TlsCost {
    fn of(what: String, unit: &'static str, plaintext: f64, tls: f64) -> TlsCost {
        TlsCost {
            what,
            unit,
            plaintext,
            tls,
            extra: tls - plaintext,
            ratio: if plaintext > 0.0 {
                tls / plaintext
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub quick: bool,
    pub machine: String,
    pub fleet: Vec<FleetRun>,
    pub ansible: Vec<AnsibleRun>,
    pub restart: Vec<Latency>,
    pub load: Vec<Load>,
    /// The SQLite controller's memory with the store filled.
    pub store: Option<StoreFill>,
    /// Each PostgreSQL controller's memory with the shared store filled.
    pub postgres_store: Vec<StoreFill>,
    /// The rolling restart beside the stage-wise one (scenario 7), when a fleet had
    /// 20 hosts or more.
    pub rolling: Option<RollingRun>,
    /// GetAgentInfo while one agent starts 50 processes (scenario 8).
    pub agent_latency: Option<AgentLatencyRun>,
    /// The console in Chromium with the store as the largest fleet left it (scenario 9).
    pub console: Option<ConsoleRun>,
    /// Agents upgraded in place: the switch gap, and a rolling upgrade beside a batch
    /// restart (scenario 10).
    pub upgrade: Option<UpgradeRun>,
    /// Each figure measured in both transports, side by side.
    pub tls_cost: Vec<TlsCost>,
    pub goals: Vec<Goal>,
    /// Scenarios that did not run, and why.
    pub skipped: Vec<String>,
}

impl Results {
    /// The plaintext figure: the goals were set before TLS, and TLS has its own section.
    pub(super) fn restart(&self, prefix: &str) -> Option<&Latency> {
        self.restart
            .iter()
            .find(|l| !l.tls && l.name.starts_with(prefix))
    }

    /// The single controller on SQLite, in plaintext: what the goals of issue 8 were
    /// set against.
    pub(super) fn plaintext_fleet(&self) -> impl Iterator<Item = &FleetRun> {
        self.fleet
            .iter()
            .filter(|f| !f.tls && f.store == StoreKind::Sqlite)
    }

    pub(super) fn postgres_fleet(&self) -> impl Iterator<Item = &FleetRun> {
        self.fleet.iter().filter(|f| f.store == StoreKind::Postgres)
    }

    /// Pairs every figure measured in both transports.
    pub(super) fn tls_costs(&self) -> Vec<TlsCost> {
        let mut costs = Vec::new();
        for plain in self.restart.iter().filter(|l| !l.tls) {
            if let Some(tls) = self.restart.iter().find(|l| l.tls && l.name == plain.name) {
                costs.push(TlsCost::of(
                    format!("{}, median", plain.name),
                    "ms",
                    plain.median_ms,
                    tls.median_ms,
                ));
            }
        }
        for plain in self.plaintext_fleet() {
            if let Some(tls) = self
                .fleet
                .iter()
                .find(|f| f.tls && f.hosts == plain.hosts && f.store == plain.store)
            {
                costs.push(TlsCost::of(
                    format!("batch restart, {} hosts, wall", plain.hosts),
                    "ms",
                    plain.wall_ms,
                    tls.wall_ms,
                ));
                costs.push(TlsCost::of(
                    format!("batch restart, {} hosts, controller CPU", plain.hosts),
                    "s",
                    plain.controller_cpu_s,
                    tls.controller_cpu_s,
                ));
            }
        }
        for plain in self.load.iter().filter(|l| !l.tls) {
            let family = |tool: &str| tool.split_whitespace().next().unwrap_or("").to_string();
            if let Some(tls) = self.load.iter().find(|l| {
                l.tls && l.target == plain.target && family(&l.tool) == family(&plain.tool)
            }) {
                costs.push(TlsCost::of(
                    format!("{} ({})", plain.target, family(&plain.tool)),
                    "req/s",
                    plain.per_second,
                    tls.per_second,
                ));
            }
        }
        costs
    }
}

/// "SQLite", or "PostgreSQL x2" for two controllers sharing it.
pub(super) fn store_column(store: StoreKind, controllers: usize) -> String {
    if controllers > 1 {
        format!("{} x{controllers}", store.label())
    } else {
        store.label().to_string()
    }
}
