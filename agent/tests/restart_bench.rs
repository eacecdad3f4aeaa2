//! Not a timed test: a measurement to rerun by hand, against a release build:
//!
//! `cargo test -p agent --release --test restart_bench -- --ignored --nocapture`
//!
//! It restarts one process (exits promptly on SIGTERM, listens on one port,
//! `min_live = 0s`) 50 times over gRPC and prints the median and p99 of the call,
//! next to the child's own start-up (spawn until its port accepts) measured alone.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ROUNDS: usize = 50;

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.2} ms, p99 {:.2} ms, min {:.2} ms, max {:.2} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(0.0).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}

/// Spawn until the port accepts a connection, polled every 100 µs.
fn child_startup() -> Duration {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(DEMO)
        .args(["--listen", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn demo");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand with --release"]
async fn restart_latency() {
    let port = free_port();
    let setup = Setup::new(&demo_process(
        "bench",
        &["--listen", &port.to_string()],
        &format!("ports = [{port}]\nmin_live = \"0s\""),
    ));
    let mut a = setup.start().await;
    wait_running(&mut a.client, "bench").await;

    let mut restarts = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        a.client
            .restart_process(request("bench"))
            .await
            .expect("RestartProcess");
        restarts.push(started.elapsed());
    }
    let startups: Vec<Duration> = (0..ROUNDS).map(|_| child_startup()).collect();
    println!(
        "RestartProcess over gRPC ({ROUNDS} rounds): {}",
        summary(restarts)
    );
    for line in a.agent.stderr().iter().rev().take(12).rev() {
        println!("{line}");
    }
    println!(
        "child start-up alone ({ROUNDS} rounds): {}",
        summary(startups)
    );
}
