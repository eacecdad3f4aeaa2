//! The table a human reads at the end of a run: one section per scenario that ran,
//! what mutual TLS costs, the store's memory, then each goal with its verdict.

use std::fmt::Write as _;

use super::report::{Results, StoreFill, store_column};

/// The sections, in the order they are printed; each is left out when its scenario
/// did not run.
const SECTIONS: &[fn(&Results, &mut String)] = &[
    fleet,
    ansible,
    restart,
    load,
    tls_cost,
    rolling,
    agent_latency,
    upgrade,
    store,
    goals,
];

impl Results {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "machine: {}", self.machine);
        for section in SECTIONS {
            section(self, &mut t);
        }
        t
    }
}

/// 1. (and 6.): each batch restart of a whole fleet.
fn fleet(results: &Results, t: &mut String) {
    if results.fleet.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\n1. fleet batch restart (batchRestartAgents, POST to SUCCESSFUL; 6. on PostgreSQL)\n{:>6} {:<14} {:>5} {:>8} {:>9} {:>9} {:>11} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "hosts",
        "store",
        "tls",
        "subtasks",
        "wall_ms",
        "agents_ms",
        "overhead_ms",
        "ms/level",
        "ctl_cpu",
        "ctl_peak",
        "agent_mb",
        "start_s"
    );
    for f in &results.fleet {
        let _ = writeln!(
            t,
            "{:>6} {:<14} {:>5} {:>8} {:>9.0} {:>9.0} {:>11.0} {:>9.1} {:>7.2}s {:>7.1}MB {:>7.1}MB {:>9.1}",
            f.hosts,
            store_column(f.store, f.controllers),
            if f.tls { "mTLS" } else { "no" },
            f.subtasks,
            f.wall_ms,
            f.agents_ms,
            f.overhead_ms,
            f.overhead_per_level_ms,
            f.controller_cpu_s,
            f.controller_peak_rss_mb,
            f.agent_mean_rss_idle_mb,
            f.fleet_start_s
        );
    }
}

/// 2.: the same stop-then-start by ansible-playbook.
fn ansible(results: &Results, t: &mut String) {
    if results.ansible.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\n2. ansible-playbook, same stop-then-start\n{:>6} {:>6} {:>10} {:>12}",
        "hosts", "forks", "wall_ms", "ansible/ours"
    );
    for a in &results.ansible {
        let ratio = a.ratio.map_or("-".into(), |r| format!("{r:.1}x"));
        let _ = writeln!(
            t,
            "{:>6} {:>6} {:>10.0} {:>12}",
            a.hosts, a.forks, a.wall_ms, ratio
        );
    }
}

/// 3.: one process restart, ours and supervisord's.
fn restart(results: &Results, t: &mut String) {
    if results.restart.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\n3. one process restart, one controller on SQLite ([TLS]: HTTPS to the controller, mutual TLS to the agent)\n{:<40} {:>7} {:>10} {:>10} {:>10}",
        "how", "samples", "median_ms", "p99_ms", "max_ms"
    );
    for l in &results.restart {
        let _ = writeln!(
            t,
            "{:<40} {:>7} {:>10.2} {:>10.2} {:>10.2}",
            l.label(),
            l.samples,
            l.median_ms,
            l.p99_ms,
            l.max_ms
        );
    }
}

/// 4.: throughput.
fn load(results: &Results, t: &mut String) {
    if results.load.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\n4. throughput, one controller on SQLite\n{:<44} {:<16} {:>5} {:>9} {:>7} {:>10} {:>8} {:>8}",
        "target", "tool", "conns", "requests", "errors", "req/s", "p50_ms", "p99_ms"
    );
    for l in &results.load {
        let _ = writeln!(
            t,
            "{:<44} {:<16} {:>5} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2}",
            l.target, l.tool, l.connections, l.requests, l.errors, l.per_second, l.p50_ms, l.p99_ms
        );
    }
}

/// 5.: each figure measured in both transports, side by side.
fn tls_cost(results: &Results, t: &mut String) {
    if results.tls_cost.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\n5. what mutual TLS costs: the same measurement in both transports, on SQLite\n{:<52} {:>5} {:>10} {:>10} {:>10} {:>7}",
        "figure", "unit", "plaintext", "TLS", "extra", "ratio"
    );
    for c in &results.tls_cost {
        let _ = writeln!(
            t,
            "{:<52} {:>5} {:>10.2} {:>10.2} {:>+10.2} {:>6.2}x",
            c.what, c.unit, c.plaintext, c.tls, c.extra, c.ratio
        );
    }
}

/// 7.: the rolling restart beside the stage-wise one.
fn rolling(results: &Results, t: &mut String) {
    let Some(r) = &results.rolling else {
        return;
    };
    let _ = writeln!(
        t,
        "\n7. rolling restart (batchSize {}) against the stage-wise batch restart of the same hosts, one after the other in one fleet, on {}{}; Wait node figures beyond the pause\n{:>6} {:>7} {:>12} {:>10} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8}",
        r.batch_size,
        r.store.label(),
        if r.tls { ", mutual TLS" } else { "" },
        "hosts",
        "batches",
        "stagewise_ms",
        "rolling_ms",
        "ratio",
        "waits",
        "node_med",
        "node_max",
        "gap_med",
        "gap_max"
    );
    let _ = writeln!(
        t,
        "{:>6} {:>7} {:>12.0} {:>10.0} {:>6.2}x {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        r.hosts,
        r.batches,
        r.stage_wise_wall_ms,
        r.rolling_wall_ms,
        r.ratio,
        r.wait_nodes,
        r.wait_node_median_ms,
        r.wait_node_max_ms,
        r.gap_median_ms,
        r.gap_max_ms
    );
}

/// 8.: one agent answering while it starts its processes.
fn agent_latency(results: &Results, t: &mut String) {
    let Some(a) = &results.agent_latency else {
        return;
    };
    let _ = writeln!(
        t,
        "\n8. one agent answering while StartAll starts {} processes ({} rounds; StartAll {} ms; agent RSS {:.1} MB)\n{:<44} {:>7} {:>10} {:>10} {:>10}",
        a.processes,
        a.rounds,
        a.start_all_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        a.agent_rss_mb,
        "call",
        "samples",
        "median_ms",
        "p99_ms",
        "max_ms"
    );
    for l in [&a.during_start, &a.idle] {
        let _ = writeln!(
            t,
            "{:<44} {:>7} {:>10.2} {:>10.2} {:>10.2}",
            l.name, l.samples, l.median_ms, l.p99_ms, l.max_ms
        );
    }
}

/// 10.: agents upgraded in place.
fn upgrade(results: &Results, t: &mut String) {
    let Some(u) = &results.upgrade else {
        return;
    };
    let s = &u.switch;
    let _ = writeln!(
        t,
        "\n10. agent upgrade in place ({:.1} MB package, {}{})\nswitch gap: one batch upgrade of {} agents, each under a GetAgentInfo loop\n{:>6} {:>7} {:>7} {:>12} {:>12} {:>9} {:>10} {:>10}",
        u.package_mb,
        u.store.label(),
        if u.tls { ", mutual TLS" } else { "" },
        s.hosts,
        "agents",
        "calls",
        "failed",
        "slowest_med",
        "slowest_max",
        "wall_ms",
        "agent_pids",
        "proc_pids"
    );
    let _ = writeln!(
        t,
        "{:>6} {:>7} {:>7} {:>10.1}ms {:>10.1}ms {:>9.0} {:>10} {:>10}",
        s.hosts,
        s.calls,
        s.failed_calls,
        s.slowest_median_ms,
        s.slowest_max_ms,
        s.wall_ms,
        s.agent_pids_changed,
        s.process_pids_changed
    );
    let _ = writeln!(
        t,
        "{:>6} {:>16} {:>18} {:>10} {:>9} {:>9}",
        "hosts", "batch_restart_ms", "rolling_upgrade_ms", "batchSize", "processes", "restarted"
    );
    let _ = writeln!(
        t,
        "{:>6} {:>16.0} {:>18} {:>10} {:>9} {:>9}",
        u.hosts,
        u.batch_restart_wall_ms,
        u.rolling_upgrade_wall_ms
            .map_or("failed".into(), |ms| format!("{ms:.0}")),
        u.batch_size,
        u.processes,
        u.processes_restarted
    );
    if let Some(e) = &u.rolling_error {
        let _ = writeln!(t, "rolling upgrade: {e}");
    }
}

/// Each controller's memory with the store filled.
fn store(results: &Results, t: &mut String) {
    let filled: Vec<&StoreFill> = results
        .store
        .iter()
        .chain(&results.postgres_store)
        .collect();
    if !filled.is_empty() {
        let _ = writeln!(t);
    }
    for s in filled {
        let _ = writeln!(
            t,
            "controller {} of {} on {} with {} hosts and {} finished tasks (filled in {:.0} s): RSS {:.1} MB, peak {:.1} MB",
            s.controller,
            s.controllers,
            s.store.label(),
            s.hosts,
            s.finished_tasks,
            s.fill_s,
            s.controller_rss_mb,
            s.controller_peak_rss_mb
        );
    }
}

/// Each goal with its verdict, then what did not run.
fn goals(results: &Results, t: &mut String) {
    let _ = writeln!(t, "\ngoals");
    let width = results
        .goals
        .iter()
        .map(|g| g.goal.len())
        .max()
        .unwrap_or(0);
    for g in &results.goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        let _ = writeln!(t, "  [{verdict:^6}] {:<width$} {}", g.goal, g.figure);
    }
    for s in &results.skipped {
        let _ = writeln!(t, "  skipped: {s}");
    }
}
