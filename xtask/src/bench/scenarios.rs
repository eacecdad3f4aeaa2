//! The scenarios as the run calls them: each starts what it needs, measures, prints
//! its figures as they come and files them in the results.

use std::net::SocketAddr;

use base64::Engine as _;

use super::python::Python;
use super::report::{self, Results, StoreKind};
use super::run::{Bench, GRPC};
use super::{
    BenchArgs, BenchError, agent_latency, ansible, console, fleet_restart, restart, rolling,
    supervisord, throughput, upgrade,
};
use crate::dial::Dialer;
use crate::fleet::{Fleet, Transport};
use crate::rest::{self, Rest};

/// Scenario 9: the console in Chromium over the fleet's store as it is; skipped with
/// the reason where no Chromium is installed.
pub(super) fn console_paint(
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
pub(super) fn agent_latency(
    bench: &Bench,
    args: &BenchArgs,
    results: &mut Results,
) -> Result<(), BenchError> {
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
pub(super) fn single_host(
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

/// Scenario 10, on the first hosts of a fleet, whose batch restart took
/// `batch_restart_ms`. A failure is reported as skipped, with its reason, as the
/// rolling restart's is.
pub(super) fn upgrade_in_place(
    bench: &Bench,
    fleet: &Fleet,
    rest: &Rest,
    ids: &[i64],
    batch_restart_ms: f64,
    results: &mut Results,
) {
    println!(
        "  upgrade in place: {} agents under GetAgentInfo loops, then a rolling upgrade of {} hosts (batchSize {})...",
        ids.len().min(upgrade::SWITCH_HOSTS),
        ids.len(),
        upgrade::BATCH_SIZE
    );
    match upgrade::measure(&bench.rt, fleet, rest, ids, batch_restart_ms) {
        Ok(u) => {
            let s = &u.switch;
            println!(
                "  switch gap: slowest answer per agent median {:.1} ms, max {:.1} ms; {} of {} calls failed; pids changed: {} processes, {} agents",
                s.slowest_median_ms,
                s.slowest_max_ms,
                s.failed_calls,
                s.calls,
                s.process_pids_changed,
                s.agent_pids_changed
            );
            if let Some(e) = &s.first_error {
                println!("  first failed call: {e}");
            }
            println!(
                "  rolling upgrade of {} hosts: {} (batch restart {:.0} ms); {} of {} processes restarted",
                u.hosts,
                u.rolling_upgrade_wall_ms.map_or_else(
                    || format!("failed: {}", u.rolling_error.as_deref().unwrap_or("?")),
                    |ms| format!("{ms:.0} ms")
                ),
                u.batch_restart_wall_ms,
                u.processes_restarted,
                u.processes
            );
            results.upgrade = Some(u);
        }
        Err(e) => {
            println!("  upgrade in place: {e}");
            results.skipped.push(format!("upgrade in place: {e}"));
        }
    }
}

/// Puts `tasks` finished tasks in the one SQLite controller's store; its memory then.
pub(super) fn fill_store(
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

/// N hosts: the batch restart (and, with 1,000 or more, the store filled with finished
/// tasks; with `rolling`, a rolling restart of that many of the hosts beside a
/// stage-wise one, then their upgrade in place, in plaintext), then Ansible doing the same on the same addresses
/// once the agents are gone.
pub(super) fn fleet(
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
        let run_wall = run.wall_ms;
        if !tls {
            ours = run.wall_ms;
        }
        results.fleet.push(run);
        let fill = args.fill_tasks();
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
            let restarted = match &results.rolling {
                Some(r) => r.stage_wise_wall_ms,
                None => run_wall,
            };
            upgrade_in_place(bench, &fleet, &rest, &ids[..m], restarted, results);
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
