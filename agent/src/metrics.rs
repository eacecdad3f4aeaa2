//! The agent's Prometheus metrics, and the plain-HTTP listener of `--metrics-addr`
//! that serves them: `GET /metrics` and nothing else (404).
//!
//! Each process's counters and histogram are made once, when its supervisor starts,
//! so recording is an atomic add (a short lock for the histogram) with no lookup; the
//! processes' states are read from their supervisors at scrape time. Served with
//! hyper, which tonic already links, rather than a web framework: the agent's idle
//! RSS stays small.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming as Body;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trust::{ConnLimits, Incoming};

use crate::supervisor::{Handle, State};

/// What Prometheus is told the answer is: the OpenMetrics text the registry encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapers connected at once; Prometheus keeps one connection per server.
pub const MAX_CONNECTIONS: usize = 16;

/// From spawn to ready takes milliseconds for most processes, up to the
/// `start_timeout` for those whose ports come up late.
const START_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AliasLabels {
    alias: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    alias: String,
    cause: &'static str,
}

/// What one process's supervisor records into.
#[derive(Clone, Debug)]
pub struct ProcessMetrics {
    /// Restarts an operator asked for (RestartProcess, RestartProxy).
    pub restarts_asked: Counter,
    /// Starts the supervisor made by itself after the process exited (autorestart).
    pub restarts_after_exit: Counter,
    pub unexpected_exits: Counter,
    /// From spawn to ready, for every start that got there.
    pub start_latency: Histogram,
}

/// The registry while the supervisors are being started.
pub struct MetricsBuilder {
    registry: Registry,
    restarts: Family<RestartLabels, Counter>,
    exits: Family<AliasLabels, Counter>,
    starts: Family<AliasLabels, Histogram, fn() -> Histogram>,
}

impl MetricsBuilder {
    pub fn new() -> MetricsBuilder {
        let mut registry = Registry::with_prefix("ocp_agent");
        let restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "restarts",
            "Processes started again: asked (RestartProcess, RestartProxy) or after an exit \
             (autorestart)",
            restarts.clone(),
        );
        let exits = Family::<AliasLabels, Counter>::default();
        registry.register(
            "unexpected_exits",
            "Running processes that exited without being asked to (crash, kill, OOM)",
            exits.clone(),
        );
        let starts: Family<AliasLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(START_BUCKETS));
        registry.register_with_unit(
            "start_latency",
            "From spawn to started (lived min_live, every configured port listening)",
            Unit::Seconds,
            starts.clone(),
        );
        MetricsBuilder {
            registry,
            restarts,
            exits,
            starts,
        }
    }

    /// The handles of one process, all made now so that each series shows from the
    /// start (a rate needs its zero).
    pub fn process(&self, alias: &str) -> ProcessMetrics {
        let labels = AliasLabels {
            alias: alias.to_string(),
        };
        let restart = |cause| {
            self.restarts.get_or_create_owned(&RestartLabels {
                alias: alias.to_string(),
                cause,
            })
        };
        ProcessMetrics {
            restarts_asked: restart("asked"),
            restarts_after_exit: restart("exit"),
            unexpected_exits: self.exits.get_or_create_owned(&labels),
            start_latency: self.starts.get_or_create_owned(&labels),
        }
    }

    /// The finished registry, reading the processes' states from `handles`.
    pub fn finish(mut self, handles: Vec<Handle>) -> Arc<Registry> {
        self.registry
            .register_collector(Box::new(ProcessStates(handles)));
        Arc::new(self.registry)
    }
}

/// Every process's state, as a gauge per state that is 1 for the one it is in.
struct ProcessStates(Vec<Handle>);

impl std::fmt::Debug for ProcessStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|h| &h.spec.alias))
            .finish()
    }
}

impl Collector for ProcessStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "process_state",
            "1 for the state each process is in (STARTING, RUNNING, BACKOFF, STOPPING, \
             STOPPED, FATAL), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for handle in &self.0 {
            let now = handle.status().state;
            for state in State::ALL {
                let labels = [
                    ("alias", handle.spec.alias.as_str()),
                    ("state", state.name()),
                ];
                let value = i64::from(now == state);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The limits of the metrics listener: the agent's timeouts, fewer connections.
pub fn limits(agent: ConnLimits) -> ConnLimits {
    ConnLimits {
        max_connections: MAX_CONNECTIONS,
        ..agent
    }
}

/// Serves `registry` on `listener` until `cancel`; returns once every connection is
/// closed. Plain HTTP/1.1, held to `limits` as the gRPC port is.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    limits: ConnLimits,
    cancel: CancellationToken,
) {
    let mut incoming = match Incoming::new(listener, None, limits) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::warn!("metrics listener: {e}; not serving metrics");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => break,
            // Reaps the finished ones, so the set holds only open connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = incoming.accept() => match accepted {
                Some((conn, _)) => conn,
                None => break,
            },
        };
        let registry = registry.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&request, &registry);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
    drop(incoming);
    // A scrape is read-only and repeated at the next interval: no need to let one end.
    connections.shutdown().await;
}

/// `GET /metrics` (and HEAD) answers the exposition; every other path is 404 and
/// another method on `/metrics` 405.
fn answer(request: &Request<Body>, registry: &Registry) -> Response<String> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this port serves GET /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = String::new();
    // Writing to a String cannot fail; an error would be the encoder's own bug.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!("encoding the metrics: {e}");
    }
    let mut response = Response::new(text);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<String> {
    let mut response = Response::new(text.to_string());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_has_its_series_from_the_start() {
        let builder = MetricsBuilder::new();
        let worker = builder.process("worker");
        worker.unexpected_exits.inc();
        worker.restarts_asked.inc();
        worker.start_latency.observe(0.2);
        builder.process("idle");
        let registry = builder.finish(Vec::new());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"ocp_agent_unexpected_exits_total{alias="worker"} 1"#,
            r#"ocp_agent_unexpected_exits_total{alias="idle"} 0"#,
            r#"ocp_agent_restarts_total{alias="worker",cause="asked"} 1"#,
            r#"ocp_agent_restarts_total{alias="idle",cause="exit"} 0"#,
            r#"ocp_agent_start_latency_seconds_count{alias="worker"} 1"#,
            r#"ocp_agent_start_latency_seconds_count{alias="idle"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
