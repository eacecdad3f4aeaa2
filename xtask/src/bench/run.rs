//! One bench run from start to end: the settings every scenario shares, which
//! scenarios run and in what order, and the end of the run (the table, results.json,
//! the chart).

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::python::Python;
use super::release::{build_or_hand_over, target_dir, workspace_root};
use super::report::{Results, StoreKind};
use super::scenarios::{
    agent_latency, console_paint, fill_store, fleet, single_host, upgrade_in_place,
};
use super::{
    BenchArgs, BenchError, Only, chart, console, fleet_restart, io, rolling, sys, two_controllers,
};
use crate::fleet::{AgentProfile, Fleet, FleetSpec, Transport};
use crate::rest::Rest;

pub(super) const GRPC: &str = "127.0.0.1:47051";
const HTTP: &str = "127.0.0.1:47080";
const AGENT_PORT: u16 = 47100;

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

/// What every scenario of a run shares.
pub(super) struct Bench {
    /// target/bench: results, the venv (kept between runs) and run/ (redone each run).
    pub(super) out: PathBuf,
    pub(super) bin_dir: PathBuf,
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) quick: bool,
    pub(super) restarts: usize,
    pub(super) load_seconds: f64,
    pub(super) controller_args: Vec<String>,
}

impl Bench {
    pub(super) fn spec(&self, name: &str, hosts: usize, transport: Transport) -> FleetSpec {
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
    pub(super) fn start(
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
        let ids = fleet.register_hosts(&rest)?;
        Ok((fleet, rest, ids, took))
    }

    pub(super) fn demo_proc(&self) -> PathBuf {
        self.bin_dir.join("ocp-demo-proc")
    }
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

/// Builds the binaries (or hands over to the release xtask), then runs every scenario,
/// or the one of `--only`.
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
    if args.only == Some(Only::Upgrade) {
        results
            .skipped
            .push("every other scenario: --only upgrade".into());
        let n = sizes
            .last()
            .copied()
            .filter(|_| args.hosts.is_some())
            .unwrap_or(rolling::HOSTS);
        let (fleet, rest, ids, took) = bench.start("upgrade", n, Transport::Plaintext)?;
        println!(
            "\n== {n} hosts: started in {:.1} s; batch restart...",
            took.as_secs_f64()
        );
        let run = fleet_restart::measure(&fleet, &rest, StoreKind::Sqlite, &ids, took)?;
        println!("  batch restart of {n} hosts: {:.0} ms", run.wall_ms);
        let restarted = run.wall_ms;
        results.fleet.push(run);
        upgrade_in_place(&bench, &fleet, &rest, &ids, restarted, &mut results);
        drop(fleet);
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
