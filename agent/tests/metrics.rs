//! `--metrics-addr`: a real agent's `GET /metrics`, read over HTTP and parsed as
//! Prometheus reads it, moves with what happens to its processes.

mod common;

use std::net::SocketAddr;

use common::*;
use test_support::scrape::Scrape;
use tokio::time::{Instant, sleep};

/// Scrapes until `cond` holds; panics with the last value after [`WAIT`].
async fn wait_metric(
    addr: SocketAddr,
    what: &str,
    family: &str,
    labels: &[(&str, &str)],
    cond: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = Scrape::fetch(addr).await.value(family, labels);
        if cond(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: still {value}");
        sleep(std::time::Duration::from_millis(20)).await;
    }
}

const STATE: &str = "ocp_agent_process_state";
const RESTARTS: &str = "ocp_agent_restarts";
const EXITS: &str = "ocp_agent_unexpected_exits";
const STARTS: &str = "ocp_agent_start_latency_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_kills_and_starts_move_the_agents_metrics() {
    let port = free_port();
    let config = format!(
        "{}{}",
        demo_process(
            "web",
            &["--listen", &port.to_string()],
            &format!("ports = [{port}]\nmin_live = \"0s\"")
        ),
        demo_process("worker", &[], "min_live = \"0s\"")
    );
    let setup = Setup::new(&config);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut a = setup
        .start_with(|c| {
            c.args(["--metrics-addr", &metrics.to_string()]);
        })
        .await;
    wait_running(&mut a.client, "web").await;
    let worker = wait_running(&mut a.client, "worker").await.pid;

    let web = [("alias", "web")];
    let now = Scrape::fetch(metrics).await;
    assert_eq!(
        now.value(STATE, &[("alias", "web"), ("state", "RUNNING")]),
        1.0
    );
    assert_eq!(
        now.value(STATE, &[("alias", "web"), ("state", "STOPPED")]),
        0.0
    );
    assert_eq!(
        now.value(STATE, &[("alias", "web")]),
        1.0,
        "one state at a time"
    );
    assert_eq!(now.value(STARTS, &web), 1.0);
    assert_eq!(now.value(RESTARTS, &web), 0.0);
    assert_eq!(now.value(EXITS, &[("alias", "worker")]), 0.0);

    a.client
        .restart_process(request("web"))
        .await
        .expect("RestartProcess");
    let now = Scrape::fetch(metrics).await;
    assert_eq!(
        now.value(RESTARTS, &[("alias", "web"), ("cause", "asked")]),
        1.0
    );
    assert_eq!(now.value(STARTS, &web), 2.0, "the restart's start is timed");
    assert_eq!(now.value(EXITS, &web), 0.0, "an asked restart is no exit");

    // The pid is our agent's child.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the worker");
    let worker_exits = [("alias", "worker")];
    wait_metric(metrics, "the kill counted", EXITS, &worker_exits, |v| {
        v == 1.0
    })
    .await;
    let after_exit = [("alias", "worker"), ("cause", "exit")];
    wait_metric(metrics, "restarted by itself", RESTARTS, &after_exit, |v| {
        v == 1.0
    })
    .await;
    wait_running(&mut a.client, "worker").await;
    let now = Scrape::fetch(metrics).await;
    assert_eq!(now.value(STARTS, &worker_exits), 2.0);
    assert_eq!(
        now.value(STATE, &[("alias", "worker"), ("state", "RUNNING")]),
        1.0
    );

    a.client
        .stop_process(request("web"))
        .await
        .expect("StopProcess");
    let now = Scrape::fetch(metrics).await;
    assert_eq!(
        now.value(STATE, &[("alias", "web"), ("state", "STOPPED")]),
        1.0
    );
    assert_eq!(now.value(EXITS, &web), 0.0, "an asked stop is no exit");

    a.agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = a.agent.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{:?}", a.agent.stderr());
    assert!(
        std::net::TcpStream::connect(metrics).is_err(),
        "the metrics port closed with the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_metrics_is_served() {
    let setup = Setup::new(&demo_process("one", &[], "min_live = \"0s\""));
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _a = setup
        .start_with(|c| {
            c.env("OCP_AGENT_METRICS_ADDR", metrics.to_string());
        })
        .await;
    let client = reqwest::Client::new();
    for path in ["/", "/metrics/", "/api/v2/metrics", "/metricsx"] {
        let response = client
            .get(format!("http://{metrics}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = client
        .post(format!("http://{metrics}/metrics"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let response = client
        .head(format!("http://{metrics}/metrics"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    Scrape::fetch(metrics).await;
}
