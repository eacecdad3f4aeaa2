//! The gateway's throughput and tail latency on its two hottest reads, with 64
//! concurrent keep-alive connections: a task by id, and a host's process list (which
//! asks the live agent every time). Ignored by default; run it in release mode:
//!
//! `cargo test --release -p controller --test gateway_load -- --ignored --nocapture`
//!
//! `OCP_LOAD_SECONDS` sets how long each route is driven (default 10). With
//! `OCP_LOAD_HOLD=1` the controller stays up after the run, printing ready-to-paste
//! `wrk` commands, until the process is interrupted.

mod gateway_support;

use std::time::{Duration, Instant};

use gateway_support::*;
use reqwest::StatusCode;
use serde_json::json;

const CONNECTIONS: usize = 64;

struct Figures {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn drive(h: &Harness, path: &str, run_for: Duration) -> Figures {
    let url = h.url(path);
    let auth = controller::auth::basic_header(ADMIN, PASSWORD);
    // Warm the connections and the credentials cache.
    let response = h
        .http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    let deadline = started + run_for;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let url = url.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let response = client
                        .get(&url)
                        .header("authorization", &auth)
                        .send()
                        .await
                        .expect("answer");
                    assert_eq!(response.status(), StatusCode::OK);
                    response.bytes().await.expect("body");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: all[all.len() - 1],
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check: run it on purpose, in release mode"]
async fn requests_per_second_and_p99() {
    let seconds = std::env::var("OCP_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let h = Harness::start(true).await;
    let host = h.add_agent_host().await;
    let task = h
        .post(
            "/compute/hosts/batchRestartAgents",
            json!({"hostIds": [host]}),
        )
        .await
        .json["data"]["id"]
        .as_i64()
        .expect("task id");
    h.wait_task(task).await;

    for path in [
        format!("/api/v2/tasks/instances/{task}"),
        format!("/api/v2/compute/hosts/{host}/agent/processes"),
    ] {
        let f = drive(&h, &path, Duration::from_secs(seconds)).await;
        println!(
            "GET {path}: {CONNECTIONS} connections, {seconds} s: {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            f.requests,
            f.per_second,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
        );
    }

    if std::env::var("OCP_LOAD_HOLD").is_ok_and(|v| v == "1") {
        let auth = controller::auth::basic_header(ADMIN, PASSWORD);
        for path in [
            format!("/api/v2/tasks/instances/{task}"),
            format!("/api/v2/compute/hosts/{host}/agent/processes"),
        ] {
            println!(
                "wrk -t2 -c{CONNECTIONS} -d10s --latency -H 'Authorization: {auth}' {}",
                h.url(&path)
            );
        }
        tokio::signal::ctrl_c().await.expect("waiting for Ctrl-C");
    }
    h.stop().await;
}
