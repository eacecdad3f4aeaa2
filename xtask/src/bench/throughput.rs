//! Scenario 4: requests per second and tail latency with 64 keep-alive connections,
//! from the project's own load tool (works everywhere, over HTTP or HTTPS), from wrk
//! when installed, and from tonic clients for the gRPC face (plaintext or TLS).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::ocp::v1::GetTaskRequest;
use proto::ocp::v1::task_service_client::TaskServiceClient;
use tonic::metadata::MetadataValue;

use super::BenchError;
use super::report::Load;
use crate::dial::Dialer;

pub const CONNECTIONS: usize = 64;

/// Each worker: its own connection, requests back to back until the deadline.
/// Returns every latency of a successful answer and the number of failures.
async fn drive<F, Fut>(seconds: f64, worker: F) -> (Vec<Duration>, u64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Vec<Duration>, u64)> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..CONNECTIONS).map(|_| tokio::spawn(worker())).collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok((latencies, failed)) = h.await {
            all.extend(latencies);
            errors += failed;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds.min(1e-3));
    (all, errors, elapsed)
}

fn figures(
    target: &str,
    tool: &str,
    tls: bool,
    mut all: Vec<Duration>,
    errors: u64,
    elapsed: f64,
) -> Load {
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len().saturating_sub(1)) as f64 * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Load {
        target: target.to_string(),
        tool: tool.to_string(),
        tls,
        connections: CONNECTIONS,
        seconds: elapsed,
        requests: all.len() as u64,
        errors,
        per_second: all.len() as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// `tls`: the HTTPS client configuration (`rest::https_config`) for an `https://` base.
pub fn http(
    rt: &tokio::runtime::Runtime,
    base: &str,
    path: &str,
    authorization: &str,
    seconds: f64,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Load, BenchError> {
    let url = format!("{base}{path}");
    let over_tls = tls.is_some();
    let (all, errors, elapsed) = rt.block_on(drive(seconds, || {
        let url = url.clone();
        let authorization = authorization.to_string();
        let tls = tls.clone();
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut builder = reqwest::Client::builder().pool_max_idle_per_host(1);
            if let Some(tls) = tls {
                builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
            }
            let Ok(client) = builder.build() else {
                return (latencies, 1);
            };
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = client
                    .get(&url)
                    .header("authorization", &authorization)
                    .send()
                    .await;
                let ok = match answer {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }
    }));
    if all.is_empty() {
        return Err(BenchError::Failed(format!(
            "GET {url}: no successful answer"
        )));
    }
    Ok(figures(
        &format!("GET {}", short(path)),
        if over_tls {
            "own (https)"
        } else {
            "own (http)"
        },
        over_tls,
        all,
        errors,
        elapsed,
    ))
}

/// The route with ids replaced by placeholders, for the table.
fn short(path: &str) -> String {
    path.trim_start_matches("/api/v2")
        .split('/')
        .map(|s| if s.parse::<i64>().is_ok() { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Over TLS when `dialer` is: each worker's channel makes its own handshake.
pub fn grpc_get_task(
    rt: &tokio::runtime::Runtime,
    grpc: SocketAddr,
    dialer: &Dialer,
    authorization: &str,
    task_id: i64,
    seconds: f64,
) -> Result<Load, BenchError> {
    let value: MetadataValue<_> = authorization
        .parse()
        .map_err(|_| BenchError::Failed("an unusable authorization header".into()))?;
    // One connection up front, so that a refused handshake is an error with its
    // reason rather than a run with no successful answer.
    rt.block_on(dialer.connect(grpc))?;
    let (all, errors, elapsed) = rt.block_on(drive(seconds, || {
        let value = value.clone();
        let dialer = dialer.clone();
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            // One channel per worker: 64 connections, as with HTTP.
            let mut client = match dialer.connect(grpc).await {
                Ok(channel) => TaskServiceClient::new(channel),
                Err(_) => return (latencies, 1),
            };
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(GetTaskRequest { id: task_id });
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
                let sent = Instant::now();
                match client.get_task(request).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }
    }));
    if all.is_empty() {
        return Err(BenchError::Failed(
            "TaskService.GetTask: no successful answer".into(),
        ));
    }
    Ok(figures(
        "gRPC TaskService.GetTask",
        if dialer.is_tls() {
            "own (tonic+tls)"
        } else {
            "own (tonic)"
        },
        dialer.is_tls(),
        all,
        errors,
        elapsed,
    ))
}

/// wrk's figures, when wrk is installed; None otherwise.
pub fn wrk(base: &str, path: &str, authorization: &str, seconds: f64) -> Option<Load> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{}s", seconds.ceil() as u64),
        ])
        .args([
            "--latency",
            "-H",
            &format!("Authorization: {authorization}"),
        ])
        .arg(format!("{base}{path}"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let ms = |v: &str| -> Option<f64> {
        let (number, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            _ => return None,
        })
    };
    let mut load = Load {
        target: format!("GET {}", short(path)),
        tool: "wrk".into(),
        tls: false,
        connections: CONNECTIONS,
        seconds,
        requests: 0,
        errors: 0,
        per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => load.p50_ms = ms(v)?,
            ["99%", v] => load.p99_ms = ms(v)?,
            ["Requests/sec:", v] => load.per_second = v.parse().ok()?,
            [n, "requests", "in", ..] => load.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", counts @ ..] => {
                load.errors += counts
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    Some(load)
}
