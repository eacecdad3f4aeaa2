//! `cargo xtask bench`: what the product exists for, measured on this machine against
//! what an operator would use instead (Ansible, supervisord), with one command, and
//! what mutual TLS costs: each of our figures is measured in plaintext and with TLS;
//! and what rolling a restart batch by batch costs against the stage-wise DAG.
//! One controller on SQLite throughout, then two on one PostgreSQL database; and how
//! promptly one agent answers while it starts 50 processes.
//!
//! Everything runs from release binaries: a debug xtask builds them, itself included,
//! and hands over to the release xtask so that the load tool is not the bottleneck.

mod agent_latency;
mod ansible;
mod chart;
mod console;
mod fleet_restart;
mod python;
pub mod report;
mod restart;
mod rolling;
mod supervisord;
mod sys;
mod throughput;
mod two_controllers;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::dial::{DialError, Dialer};
use crate::fleet::{AgentProfile, Fleet, FleetError, FleetSpec, Transport};
use crate::rest::{self, CaError, Rest, RestError};
use python::Python;
use report::{Results, StoreKind};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Fleet sizes of the batch restart and of the Ansible comparison, e.g. 10,100,1000.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Option<Vec<usize>>,
    /// Small fleets and short runs, as CI runs it: under 3 minutes once built.
    #[arg(long)]
    pub quick: bool,
    /// Single-process restarts per contender (default 200; quick 50).
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Seconds each throughput target is driven (default 10; quick 3).
    #[arg(long)]
    pub load_seconds: Option<f64>,
    /// Finished tasks to put in the store with the largest fleet of 1,000 hosts or
    /// more, before reading the controllers' memory, on SQLite and on PostgreSQL
    /// (default 10000; 0 skips).
    #[arg(long)]
    pub fill_tasks: Option<usize>,
    /// Skip Ansible above this many hosts (it needs about 1 s of CPU per host).
    #[arg(long)]
    pub ansible_max_hosts: Option<usize>,
    /// Skip the Ansible and supervisord comparisons (no Python needed).
    #[arg(long)]
    pub no_python: bool,
    /// The controller's --task-concurrency (default: the controller's own, 1024).
    #[arg(long)]
    pub task_concurrency: Option<usize>,
    /// Skip the two controllers sharing a PostgreSQL database (run at the largest
    /// fleet size); without a reachable server it is skipped anyway, with the reason,
    /// unless OCP_REQUIRE_POSTGRES=1.
    #[arg(long)]
    pub no_postgres: bool,
    /// The PostgreSQL server of that scenario; it creates a database ocp_bench_<random>
    /// there and drops it at the end.
    #[arg(
        long,
        env = "OCP_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Run only this scenario (and build only what it needs); writes results.json
    /// with its figures alone.
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// The ocp-agent binary of the agent-latency scenario (default: the one just
    /// built), e.g. one built from an earlier commit, to compare the two.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Run on the debug binaries (the ones `cargo test` has just built) from this debug
    /// xtask, without a release build: checks that the harness works, as CI does; the
    /// figures are not the product's.
    #[arg(long)]
    pub debug_binaries: bool,
}

/// A scenario that runs alone with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// GetAgentInfo latency while one agent starts 50 processes (scenario 8).
    AgentLatency,
    /// The console's first paint in Chromium, the store filled (scenario 9): 1,000
    /// hosts (or the largest of --hosts) and --fill-tasks finished tasks (10,000).
    Console,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {status}")]
    Grpc {
        what: String,
        status: Box<tonic::Status>,
    },
    #[error(transparent)]
    Browser(#[from] crate::browser::BrowserError),
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

const GRPC: &str = "127.0.0.1:47051";
const HTTP: &str = "127.0.0.1:47080";
const AGENT_PORT: u16 = 47100;
const HANDED_OVER: &str = "OCP_BENCH_RELEASE";

/// Host i of a fleet: 127.0.x.y with x from 1 and y in 2..=254, so that a thousand
/// agents each have an address of their own and the same ports.
fn host_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (i / 253) as u8,
        2 + (i % 253) as u8,
    ))
}

struct Bench {
    /// target/bench: results, the venv (kept between runs) and run/ (redone each run).
    out: PathBuf,
    bin_dir: PathBuf,
    rt: tokio::runtime::Runtime,
    quick: bool,
    restarts: usize,
    load_seconds: f64,
    controller_args: Vec<String>,
}

impl Bench {
    fn spec(&self, name: &str, hosts: usize, transport: Transport) -> FleetSpec {
        FleetSpec {
            root: self.out.join("run").join(name),
            bin_dir: self.bin_dir.clone(),
            grpc: GRPC.parse().expect("a valid address"),
            http: HTTP.parse().expect("a valid address"),
            agent_ips: (0..hosts).map(host_ip).collect(),
            agent_port: AGENT_PORT,
            profile: AgentProfile::Bench,
            controller_args: self.controller_args.clone(),
            transport,
        }
    }

    /// The fleet's start-up time leaves out issuing its certificates (printed apart).
    fn start(
        &self,
        name: &str,
        hosts: usize,
        transport: Transport,
    ) -> Result<(Fleet, Rest, Vec<i64>, Duration), BenchError> {
        let started = Instant::now();
        let fleet = Fleet::start(self.spec(name, hosts, transport))?;
        let issuing = fleet.pki.as_ref().map_or(Duration::ZERO, |p| p.issued_in);
        let took = started.elapsed().saturating_sub(issuing);
        if let Some(pki) = &fleet.pki {
            println!(
                "  certificates for the controller and {hosts} agents issued in {:.1} s",
                pki.issued_in.as_secs_f64()
            );
        }
        let rest = fleet.rest()?;
        let ids = fleet_restart::register(&fleet, &rest)?;
        Ok((fleet, rest, ids, took))
    }

    fn demo_proc(&self) -> PathBuf {
        self.bin_dir.join("ocp-demo-proc")
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` when set, as cargo itself reads it.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn cargo_build(root: &Path, packages: &[&str], release: bool) -> Result<(), BenchError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build.current_dir(root).args(["build", "--bins"]);
    if release {
        build.arg("--release");
    }
    for p in packages {
        build.args(["-p", p]);
    }
    let status = build.status().map_err(io("running cargo build"))?;
    if !status.success() {
        return Err(BenchError::Failed(format!("cargo build failed ({status})")));
    }
    Ok(())
}

/// Builds the release binaries; from a debug xtask, also the release xtask, which then
/// runs the bench. Returns the exit code when it handed over. With `--debug-binaries`
/// it builds (usually: finds built) the debug binaries and runs here.
fn build_or_hand_over(root: &Path, args: &BenchArgs) -> Result<Option<i32>, BenchError> {
    if std::env::var_os(HANDED_OVER).is_some() {
        return Ok(None);
    }
    let packages: &[&str] = match args.only {
        Some(Only::AgentLatency) => &["agent"],
        Some(Only::Console) | None => &["agent", "controller"],
    };
    if args.debug_binaries {
        cargo_build(root, packages, false)?;
        return Ok(None);
    }
    println!("Building the release binaries (the first time takes a few minutes)...");
    if !cfg!(debug_assertions) {
        cargo_build(root, packages, true)?;
        return Ok(None);
    }
    cargo_build(root, &[packages, &["xtask"]].concat(), true)?;
    let status = Command::new(target_dir(root).join("release").join("xtask"))
        .args(std::env::args_os().skip(1))
        .env(HANDED_OVER, "1")
        .status()
        .map_err(io("running the release xtask"))?;
    Ok(Some(status.code().unwrap_or(130)))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, {mem_gb:.1} GB RAM, Linux {}", kernel.trim())
}

pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let root = workspace_root();
    if let Some(code) = build_or_hand_over(&root, &args)? {
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    sys::install_interrupt_cleanup();
    let files = sys::raise_open_files();
    let quick = args.quick;
    let mut sizes =
        args.hosts
            .clone()
            .unwrap_or(if quick { vec![10] } else { vec![10, 100, 1000] });
    sizes.sort_unstable();
    sizes.dedup();
    sizes.retain(|&n| n > 0);
    if let Some(&n) = sizes.iter().find(|&&n| n > 253 * 254) {
        return Err(BenchError::Failed(format!(
            "{n} hosts: at most {} addresses",
            253 * 254
        )));
    }
    let profile = if args.debug_binaries {
        "debug"
    } else {
        "release"
    };
    let out = target_dir(&root).join("bench");
    let _ = fs::remove_dir_all(out.join("run"));
    fs::create_dir_all(out.join("run")).map_err(io(format!("creating {}", out.display())))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a tokio runtime"))?;
    let mut controller_args: Vec<String> = Vec::new();
    if let Some(c) = args.task_concurrency {
        controller_args.extend(["--task-concurrency".to_string(), c.to_string()]);
    }
    let bench = Bench {
        out: out.clone(),
        bin_dir: target_dir(&root).join(profile),
        rt,
        quick,
        restarts: args.restarts.unwrap_or(if quick { 50 } else { 200 }),
        load_seconds: args.load_seconds.unwrap_or(if quick { 3.0 } else { 10.0 }),
        controller_args,
    };
    if args.debug_binaries {
        println!(
            "Debug binaries (--debug-binaries): the harness is checked, the figures are not the product's."
        );
    }
    let mut results = Results {
        quick,
        machine: format!("{}, open files {files}, {profile} binaries", machine()),
        ..Results::default()
    };
    if args.only == Some(Only::Console) {
        results
            .skipped
            .push("every other scenario: --only console".into());
        let n = sizes
            .last()
            .copied()
            .filter(|_| args.hosts.is_some())
            .unwrap_or(1000);
        let (fleet, rest, ids, took) = bench.start("console", n, Transport::Plaintext)?;
        println!("\n== {n} hosts: started in {:.1} s", took.as_secs_f64());
        let fill = args.fill_tasks.unwrap_or(console::GOAL_TASKS);
        if fill > 0 {
            fill_store(&fleet, &rest, &ids, fill)?;
        }
        console_paint(&bench, &fleet, &rest, &mut results)?;
        drop(fleet);
        return finish(&out, results, true);
    }
    if args.only == Some(Only::AgentLatency) {
        results
            .skipped
            .push("every other scenario: --only agent-latency".into());
        agent_latency(&bench, &args, &mut results)?;
        return finish(&out, results, true);
    }
    let python = if args.no_python {
        results
            .skipped
            .push("Ansible and supervisord: --no-python".into());
        None
    } else {
        match Python::ensure(&out) {
            Ok(p) => Some(p),
            Err(why) => {
                let line = format!("Ansible and supervisord: could not install them ({why})");
                println!("skipping {line}");
                results.skipped.push(line);
                None
            }
        }
    };
    let rolling_at = match rolling::plan(&sizes) {
        Ok(at) => Some(at),
        Err(why) => {
            println!("skipping {why}");
            results.skipped.push(why);
            None
        }
    };
    let started = Instant::now();
    single_host(&bench, python.as_ref(), &mut results)?;
    agent_latency(&bench, &args, &mut results)?;
    let largest = sizes.last().copied();
    for &n in &sizes {
        let rolling = rolling_at.and_then(|(size, hosts)| (size == n).then_some(hosts));
        let console = largest == Some(n);
        fleet(
            &bench,
            &args,
            python.as_ref(),
            n,
            rolling,
            console,
            &mut results,
        )?;
    }
    if let Some(&n) = sizes.last() {
        two_controllers::run(&bench, &args, n, &mut results)?;
    }
    finish(&out, results, false)?;
    println!("({:.0} s of measuring)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Judges, prints the table and writes results.json (and, for a whole run, the chart).
/// A run of one scenario lists only the goals it measured.
fn finish(out: &Path, mut results: Results, partial: bool) -> Result<(), BenchError> {
    results.judge();
    if partial {
        results.goals.retain(|g| g.met.is_some());
    }
    println!("\n{}", results.table());
    let json = out.join("results.json");
    let text =
        serde_json::to_string_pretty(&results).map_err(|e| BenchError::Failed(e.to_string()))?;
    fs::write(&json, text).map_err(io(format!("writing {}", json.display())))?;
    if partial {
        println!("Wrote {}.", json.display());
    } else {
        let svg = out.join("chart.svg");
        chart::draw(&results, &svg)?;
        println!("Wrote {} and {}.", json.display(), svg.display());
    }
    let _ = fs::remove_dir_all(out.join("run"));
    Ok(())
}

/// Scenario 9: the console in Chromium over the fleet's store as it is; skipped with
/// the reason where no Chromium is installed.
fn console_paint(
    bench: &Bench,
    fleet: &Fleet,
    rest: &Rest,
    results: &mut Results,
) -> Result<(), BenchError> {
    if let Err(e) = crate::browser::available() {
        println!("  skipping the console's first paint: {e}");
        results.skipped.push(format!("console first paint: {e}"));
        return Ok(());
    }
    let hosts = rest.get("/api/v2/compute/hosts?size=1")?["page"]["totalElements"]
        .as_u64()
        .unwrap_or(0) as usize;
    let tasks = rest.get("/api/v2/tasks/instances?size=1")?["page"]["totalElements"]
        .as_u64()
        .unwrap_or(0) as usize;
    println!("  the console in Chromium: {hosts} hosts, {tasks} tasks in the store...");
    let dir = bench.out.join("run").join("console");
    let run = console::measure(
        &bench.rt,
        &dir,
        &fleet.rest_base(),
        ("admin", &fleet.admin_password),
        hosts,
        tasks,
    )?;
    for l in [&run.first_paint, &run.hosts_shown, &run.tasks_shown] {
        println!(
            "  {}: median {:.0} ms, max {:.0} ms ({} loads)",
            l.name, l.median_ms, l.max_ms, l.samples
        );
    }
    results.console = Some(run);
    Ok(())
}

/// Scenario 8: one agent, 50 processes started at once, GetAgentInfo meanwhile.
fn agent_latency(bench: &Bench, args: &BenchArgs, results: &mut Results) -> Result<(), BenchError> {
    let agent = agent_latency::agent_bin(args.agent_bin.as_ref(), &bench.bin_dir);
    println!(
        "\n== one agent ({}): GetAgentInfo while StartAll starts {} processes",
        agent.display(),
        agent_latency::PROCESSES
    );
    let dir = bench.out.join("run").join("agent-latency");
    let run = agent_latency::measure(&bench.rt, &dir, &agent, &bench.demo_proc())?;
    for l in [&run.during_start, &run.idle] {
        println!(
            "  {}: median {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
            l.name, l.median_ms, l.p99_ms, l.max_ms, l.samples
        );
    }
    let starts: Vec<String> = run
        .start_all_ms
        .iter()
        .map(|ms| format!("{ms:.0}"))
        .collect();
    println!(
        "  StartAll took {} ms; agent RSS {:.1} MB with its processes running",
        starts.join(", "),
        run.agent_rss_mb
    );
    results.agent_latency = Some(run);
    Ok(())
}

/// One host: the 1-host DAG overhead, one process restart our two ways and
/// supervisord's two ways, and the throughput of the gateway and of gRPC; ours in
/// plaintext, then all over again with mutual TLS.
fn single_host(
    bench: &Bench,
    python: Option<&Python>,
    results: &mut Results,
) -> Result<(), BenchError> {
    for transport in [Transport::Plaintext, Transport::MutualTls] {
        one_host(bench, transport, results)?;
    }
    if let Some(python) = python {
        // supervisord sometimes waits stopwaitsecs (5 s) on a stop that follows a start
        // closely (the SIGTERM lands before the child's exec), so a quick run does fewer.
        let rounds = if bench.quick { 10 } else { bench.restarts };
        let dir = bench.out.join("run").join("supervisord");
        match supervisord::measure(python, &dir, &bench.demo_proc(), rounds, rounds) {
            Ok(latencies) => {
                for l in latencies {
                    println!("  {}: median {:.2} ms", l.name, l.median_ms);
                    results.restart.push(l);
                }
            }
            Err(e) => results.skipped.push(format!("supervisord: {e}")),
        }
    }
    Ok(())
}

fn one_host(bench: &Bench, transport: Transport, results: &mut Results) -> Result<(), BenchError> {
    let tls = transport.is_tls();
    println!(
        "\n== one host, {}: batch restart, process restarts, throughput",
        transport.label()
    );
    let name = if tls { "single-tls" } else { "single" };
    let (fleet, rest, ids, took) = bench.start(name, 1, transport)?;
    let run = fleet_restart::measure(&fleet, &rest, StoreKind::Sqlite, &ids, took)?;
    println!(
        "  batch restart of 1 host: {:.0} ms, overhead {:.1} ms per level",
        run.wall_ms, run.overhead_per_level_ms
    );
    results.fleet.push(run);
    let tasks = rest.get("/api/v2/tasks/instances?size=1")?;
    let task_id = tasks["contents"][0]["id"]
        .as_i64()
        .ok_or_else(|| BenchError::Failed(format!("no task in {tasks}")))?;

    let agent = fleet.hosts[0].addr;
    let grpc = restart::agent_grpc(
        &bench.rt,
        agent,
        fleet.pki.as_ref(),
        "listener",
        bench.restarts,
    )?;
    println!("  {}: median {:.2} ms", grpc.name, grpc.median_ms);
    results.restart.push(grpc);
    let via_rest = restart::controller_rest(&rest, tls, ids[0], "listener", bench.restarts)?;
    println!("  {}: median {:.2} ms", via_rest.name, via_rest.median_ms);
    results.restart.push(via_rest);

    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", fleet.admin_password))
    );
    let base = fleet.rest_base();
    let https = match &fleet.pki {
        Some(pki) => Some(rest::https_config(&pki.ca)?),
        None => None,
    };
    let seconds = bench.load_seconds;
    for path in [
        format!("/api/v2/tasks/instances/{task_id}"),
        format!("/api/v2/compute/hosts/{}/agent/processes", ids[0]),
    ] {
        let load = throughput::http(
            &bench.rt,
            &base,
            &path,
            &authorization,
            seconds,
            https.clone(),
        )?;
        println!(
            "  {} ({}): {:.0} req/s, p99 {:.2} ms",
            load.target, load.tool, load.per_second, load.p99_ms
        );
        results.load.push(load);
        if tls {
            // wrk's figure is the gateway's; once, in plaintext, is enough.
            continue;
        }
        match throughput::wrk(&base, &path, &authorization, seconds) {
            Some(load) => {
                println!(
                    "  {} (wrk): {:.0} req/s, p99 {:.2} ms",
                    load.target, load.per_second, load.p99_ms
                );
                results.load.push(load);
            }
            None if !results.skipped.iter().any(|s| s.starts_with("wrk")) => results
                .skipped
                .push("wrk: not installed (apt-get install wrk); the own load tool ran".into()),
            None => {}
        }
    }
    let grpc_addr: SocketAddr = GRPC.parse().expect("a valid address");
    let dialer = bench.rt.block_on(Dialer::controller(fleet.pki.as_ref()))?;
    let load = throughput::grpc_get_task(
        &bench.rt,
        grpc_addr,
        &dialer,
        &authorization,
        task_id,
        seconds,
    )?;
    println!(
        "  {} ({}): {:.0} req/s, p99 {:.2} ms",
        load.target, load.tool, load.per_second, load.p99_ms
    );
    results.load.push(load);
    drop(fleet);
    Ok(())
}

/// Scenario 7, on the first hosts of a fleet. A failure is reported as skipped, with
/// its reason, so that the figures measured before it are still written.
fn rolling_restart(rest: &Rest, ids: &[i64], results: &mut Results) {
    println!(
        "  rolling restart of {} hosts in batches of {}, beside a stage-wise one of the same hosts...",
        ids.len(),
        rolling::BATCH_SIZE
    );
    match rolling::measure(rest, ids, false, StoreKind::Sqlite) {
        Ok(r) => {
            println!(
                "  stage-wise {:.0} ms, rolling {:.0} ms ({:.1}x); per Wait node {:.0} ms median, {:.0} ms max; last Finish to next Prepare {:.0} ms median, {:.0} ms max",
                r.stage_wise_wall_ms,
                r.rolling_wall_ms,
                r.ratio,
                r.wait_node_median_ms,
                r.wait_node_max_ms,
                r.gap_median_ms,
                r.gap_max_ms
            );
            results.rolling = Some(r);
        }
        Err(e) => {
            println!("  rolling restart: {e}");
            results.skipped.push(format!("rolling restart: {e}"));
        }
    }
}

/// Puts `tasks` finished tasks in the one SQLite controller's store; its memory then.
fn fill_store(
    fleet: &Fleet,
    rest: &Rest,
    ids: &[i64],
    tasks: usize,
) -> Result<Option<report::StoreFill>, BenchError> {
    println!("  filling the store with {tasks} finished tasks...");
    let filled = fleet_restart::fill_store(
        fleet,
        std::slice::from_ref(rest),
        StoreKind::Sqlite,
        ids,
        tasks,
    )?;
    Ok(filled.into_iter().next())
}

/// Finished tasks to fill the store with at 1,000 hosts or more.
fn fill_tasks(args: &BenchArgs) -> usize {
    args.fill_tasks
        .unwrap_or(if args.quick { 0 } else { 10_000 })
}

/// N hosts: the batch restart (and, with 1,000 or more, the store filled with finished
/// tasks; with `rolling`, a rolling restart of that many of the hosts beside a
/// stage-wise one, in plaintext), then Ansible doing the same on the same addresses
/// once the agents are gone.
fn fleet(
    bench: &Bench,
    args: &BenchArgs,
    python: Option<&Python>,
    n: usize,
    rolling: Option<usize>,
    console: bool,
    results: &mut Results,
) -> Result<(), BenchError> {
    let mut ours = 0.0;
    let mut hosts = Vec::new();
    for transport in [Transport::Plaintext, Transport::MutualTls] {
        let tls = transport.is_tls();
        println!(
            "\n== {n} hosts, {}: starting {n} agents and a controller",
            transport.label()
        );
        let name = format!("fleet-{n}{}", if tls { "-tls" } else { "" });
        let (fleet, rest, ids, took) = bench.start(&name, n, transport)?;
        println!("  started in {:.1} s; batch restart...", took.as_secs_f64());
        let run = fleet_restart::measure(&fleet, &rest, StoreKind::Sqlite, &ids, took)?;
        println!(
            "  batch restart of {n} hosts: {:.0} ms (agents {:.0} ms, overhead {:.0} ms)",
            run.wall_ms, run.agents_ms, run.overhead_ms
        );
        if !tls {
            ours = run.wall_ms;
        }
        results.fleet.push(run);
        let fill = fill_tasks(args);
        // The store's figure is the plaintext fleet's, as when its goal was set.
        if n >= 1000 && fill > 0 && !tls {
            results.store = fill_store(&fleet, &rest, &ids, fill)?;
        }
        if console && !tls {
            console_paint(bench, &fleet, &rest, results)?;
        }
        // After the store is filled: a rolling task that failed keeps its hosts.
        if let Some(m) = rolling.filter(|_| !tls) {
            rolling_restart(&rest, &ids[..m], results);
        }
        hosts = fleet.hosts.clone();
        drop(fleet);
    }
    let Some(python) = python else { return Ok(()) };
    if args.ansible_max_hosts.is_some_and(|max| n > max) {
        results
            .skipped
            .push(format!("Ansible at {n} hosts: above --ansible-max-hosts"));
        return Ok(());
    }
    println!("  ansible-playbook over {n} hosts...");
    let dir = bench.out.join("run").join(format!("ansible-{n}"));
    match ansible::measure(python, &dir, &bench.demo_proc(), &hosts) {
        Ok(mut a) => {
            a.ratio = Some(a.wall_ms / ours);
            println!(
                "  ansible: {:.0} ms, {:.1}x ours",
                a.wall_ms,
                a.ratio.unwrap_or(0.0)
            );
            results.ansible.push(a);
        }
        Err(e) => results.skipped.push(format!("Ansible at {n} hosts: {e}")),
    }
    Ok(())
}
