//! The controller's Prometheus metrics: its one registry, the handles the hot paths
//! record into, the store's counts read at scrape time, and the `GET /metrics` answer.
//!
//! Hot paths only touch atomics and short histogram locks, since the benchmarks time
//! restarts through them: a request looks its label set up under a shared read lock
//! (taken for writing once per new label set; a REST request's route label costs one
//! small string) and bumps an atomic counter. What the store knows (tasks, subtasks,
//! hosts) is read by the scrape, one GROUP BY query each, and kept for [`STORE_TTL`]
//! so that several Prometheus servers scraping one controller cost one read.

mod grpc;
mod http;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

pub use grpc::GrpcRequests;
#[cfg(test)]
pub use grpc::UNKNOWN_METHOD;
pub use http::{HttpRequests, count_http};

use crate::model::{HostStatus, Step, StoreCounts};

/// How long the store's counts are served before a scrape reads them again.
pub const STORE_TTL: Duration = Duration::from_secs(2);

/// What Prometheus is told the answer is: the OpenMetrics text the registry encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Agent calls take from a millisecond (a heartbeat) to minutes (StartAll of slow
/// processes).
const AGENT_CALL_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Steps run from milliseconds (a Wait node) to OCP's 600 s timeout.
const STEP_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentCallLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
    outcome: &'static str,
}

/// The latency of every call the controller makes to an agent, by RPC and outcome.
#[derive(Clone)]
pub struct AgentCalls(Histograms<AgentCallLabels>);

impl AgentCalls {
    /// `outcome` is `ok` or the kind of [`crate::agent_client::AgentError`].
    pub fn record(&self, method: &'static str, outcome: &'static str, took: Duration) {
        self.0
            .get_or_create(&AgentCallLabels { method, outcome })
            .observe(took.as_secs_f64());
    }
}

/// What the engine records: how long steps took, and how many tasks it drives.
#[derive(Clone)]
pub struct EngineMetrics {
    steps: Histograms<StepLabels>,
    leases_held: Gauge,
}

impl EngineMetrics {
    /// `outcome` says how the step ended: `succeeded`, `failed`, `timed_out`,
    /// `cancelled` or `stopped`.
    pub fn step_ended(&self, step: Step, outcome: &'static str, took: Duration) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.name(),
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    pub fn set_leases_held(&self, tasks: usize) {
        self.leases_held
            .set(i64::try_from(tasks).unwrap_or(i64::MAX));
    }
}

/// The controller's metrics, built once at start and shared by every part that
/// records into them and by the scrape.
pub struct Metrics {
    registry: Registry,
    agent_calls: AgentCalls,
    engine: EngineMetrics,
    heartbeat_misses: Counter,
    http: HttpRequests,
    grpc: GrpcRequests,
    store: Arc<StoreGauges>,
    /// When the store was last read; the lock also makes concurrent scrapes share one read.
    store_read: tokio::sync::Mutex<Option<Instant>>,
}

impl Metrics {
    /// `served`: the gRPC services (`package.Service`) the controller serves besides
    /// reflection; their methods are counted by name, any other path as unknown.
    pub fn new(served: &[&str]) -> Metrics {
        let mut registry = Registry::with_prefix("ocp_controller");
        let agent_calls: Histograms<AgentCallLabels> =
            Family::new_with_constructor(|| Histogram::new(AGENT_CALL_BUCKETS));
        registry.register_with_unit(
            "agent_call_duration",
            "Calls to agents, by gRPC method and outcome (ok, unreachable, untrusted, refused)",
            Unit::Seconds,
            agent_calls.clone(),
        );
        let steps: Histograms<StepLabels> =
            Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS));
        registry.register_with_unit(
            "step_duration",
            "Steps of tasks from start to end, by step name and outcome (succeeded, failed, \
             timed_out, cancelled, stopped)",
            Unit::Seconds,
            steps.clone(),
        );
        let leases_held = Gauge::default();
        registry.register(
            "leases_held",
            "Unfinished tasks this controller holds the lease of and drives",
            leases_held.clone(),
        );
        let heartbeat_misses = Counter::default();
        registry.register(
            "heartbeat_misses",
            "Heartbeat checks of an agent that got no answer within the check's deadline",
            heartbeat_misses.clone(),
        );
        let http = HttpRequests::default();
        registry.register(
            "http_requests",
            "REST requests answered, by method, matched route template and HTTP status",
            http.family(),
        );
        let grpc = GrpcRequests::new(served);
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by method (/package.Service/Method) and gRPC status code",
            grpc.family(),
        );
        let store = Arc::new(StoreGauges::default());
        registry.register_collector(Box::new(store.clone()));
        Metrics {
            registry,
            agent_calls: AgentCalls(agent_calls),
            engine: EngineMetrics { steps, leases_held },
            heartbeat_misses,
            http,
            grpc,
            store,
            store_read: tokio::sync::Mutex::new(None),
        }
    }

    pub fn agent_calls(&self) -> AgentCalls {
        self.agent_calls.clone()
    }

    pub fn engine(&self) -> EngineMetrics {
        self.engine.clone()
    }

    pub fn heartbeat_misses(&self) -> Counter {
        self.heartbeat_misses.clone()
    }

    pub fn http(&self) -> HttpRequests {
        self.http.clone()
    }

    /// The layer that counts the gRPC face's calls.
    pub fn grpc(&self) -> GrpcRequests {
        self.grpc.clone()
    }

    /// The exposition: the store's counts are read first, with `read`, unless they
    /// were within [`STORE_TTL`].
    pub async fn render<E>(
        &self,
        read: impl Future<Output = Result<StoreCounts, E>>,
    ) -> Result<String, E> {
        {
            let mut read_at = self.store_read.lock().await;
            if read_at.is_none_or(|at| at.elapsed() >= STORE_TTL) {
                self.store.replace(read.await?);
                *read_at = Some(Instant::now());
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail; an error would be the encoder's own bug.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("encoding the metrics: {e}");
        }
        Ok(text)
    }
}

/// The store's counts as of the last scrape that read them.
#[derive(Debug, Default)]
struct StoreGauges(Mutex<Arc<StoreCounts>>);

impl StoreGauges {
    fn replace(&self, counts: StoreCounts) {
        *self.0.lock() = Arc::new(counts);
    }
}

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.lock().clone();
        let by_name = [
            (
                "tasks",
                "Tasks in the store, by name and status",
                &counts.tasks,
            ),
            (
                "subtasks",
                "Subtasks of the open tasks (RUNNING, or FAILED until retried or rolled back), \
                 by name and status",
                &counts.subtasks,
            ),
        ];
        for (metric, help, rows) in by_name {
            // An empty family would say nothing; some parsers refuse one.
            if rows.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for (name, status, count) in rows.iter() {
                let labels = [("name", name.as_str()), ("status", status.as_str())];
                ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        // Every status, 0 included, so that a query for OFFLINE hosts finds a series.
        let mut family = encoder.encode_descriptor(
            "hosts",
            "Hosts in the inventory, by status (NEW until the first heartbeat)",
            None,
            MetricType::Gauge,
        )?;
        for status in HostStatus::ALL {
            let count = counts
                .hosts
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            let labels = [("status", status.as_str())];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        // Drift after an upgrade shows as more than one series.
        if !counts.agent_versions.is_empty() {
            let mut family = encoder.encode_descriptor(
                "hosts_by_agent_version",
                "Hosts by the agent version their last heartbeat reported (empty before the first)",
                None,
                MetricType::Gauge,
            )?;
            for (version, count) in &counts.agent_versions {
                let labels = [("version", version.as_str())];
                ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
