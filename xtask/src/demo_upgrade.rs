//! `cargo xtask demo --upgrade`: the demo fleet's agents upgraded in place, shown host
//! by host as before and after (the agent's version and pid, each supervised
//! process's pid), and the curl commands that do the same by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::fleet::Fleet;
use crate::progress::{Screen, render};
use crate::rest::Rest;
use crate::upgrade::{self, HostState};

/// One host before and after the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    pub label: String,
    pub agent_pid: (u32, u32),
    pub before: HostState,
    pub after: HostState,
}

impl HostChange {
    /// Whether the agent and every process kept its pid.
    pub fn pids_kept(&self) -> bool {
        self.agent_pid.0 == self.agent_pid.1 && self.before.pids == self.after.pids
    }
}

/// Uploads the fleet's own ocp-agent binary as `version`, upgrades every host in one
/// batch task while drawing its DAG, and reads each host before and after. The agent's
/// pid is the one the fleet started: were the agent a new process, that one would be
/// gone, so it is read alive or as 0.
pub fn upgrade_fleet(
    fleet: &Fleet,
    rest: &Rest,
    host_ids: &[i64],
    version: &str,
    screen: Option<&mut Screen>,
) -> anyhow::Result<(Value, Vec<HostChange>)> {
    let binary = fleet.spec.binary("ocp-agent");
    upgrade::upload(rest, &binary, version)
        .with_context(|| format!("uploading {} as {version}", binary.display()))?;
    let agent_pids = || -> Vec<u32> {
        fleet
            .agent_pids()
            .into_iter()
            .map(|p| if test_support::procs::alive(p) { p } else { 0 })
            .collect()
    };
    let before = upgrade::states(rest, host_ids)?;
    let pids_before = agent_pids();
    let task_id = upgrade::submit(rest, upgrade::batch_body(host_ids, version, None))?;
    let labels: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();
    let mut screen = screen;
    let task = loop {
        let task = rest.get(&format!("/api/v2/tasks/instances/{task_id}"))?;
        if let Some(screen) = screen.as_deref_mut() {
            screen.show(render(&task, &labels));
        }
        if task["status"] != "RUNNING" {
            break task;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if task["status"] != "SUCCESSFUL" {
        bail!(
            "upgrade task {task_id} ended {}; the controller's log is in {}",
            task["status"],
            fleet.spec.root.join("logs").display()
        );
    }
    let after = upgrade::states(rest, host_ids)?;
    let pids_after = agent_pids();
    let changes = labels
        .into_iter()
        .zip(before)
        .zip(after)
        .zip(pids_before.into_iter().zip(pids_after))
        .map(|(((label, before), after), agent_pid)| HostChange {
            label,
            agent_pid,
            before,
            after,
        })
        .collect();
    Ok((task, changes))
}

/// The before/after lines of each host.
pub fn report(changes: &[HostChange]) -> Vec<String> {
    let mut lines = Vec::new();
    for c in changes {
        lines.push(format!(
            "  {}: agent {} -> {}, pid {} -> {}",
            c.label, c.before.version, c.after.version, c.agent_pid.0, c.agent_pid.1
        ));
        let aliases: BTreeMap<&String, ()> = c
            .before
            .pids
            .keys()
            .chain(c.after.pids.keys())
            .map(|a| (a, ()))
            .collect();
        for alias in aliases.keys() {
            let pid = |s: &HostState| s.pids.get(*alias).map_or("-".into(), i64::to_string);
            lines.push(format!(
                "      {alias}: pid {} -> {}",
                pid(&c.before),
                pid(&c.after)
            ));
        }
    }
    let kept = changes.iter().filter(|c| c.pids_kept()).count();
    lines.push(format!(
        "  {kept} of {} hosts kept every pid: agent and processes{}",
        changes.len(),
        if kept == changes.len() {
            ", nothing was restarted"
        } else {
            ""
        }
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: &str, pids: &[(&str, i64)]) -> HostState {
        HostState {
            version: version.into(),
            pids: pids.iter().map(|(a, p)| (a.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn the_report_shows_every_pid_before_and_after() {
        let kept = HostChange {
            label: "127.0.0.2".into(),
            agent_pid: (7, 7),
            before: state("4.2.1-demo", &[("a", 10)]),
            after: state("demo-next-1", &[("a", 10)]),
        };
        let lines = report(std::slice::from_ref(&kept));
        assert_eq!(
            lines,
            [
                "  127.0.0.2: agent 4.2.1-demo -> demo-next-1, pid 7 -> 7",
                "      a: pid 10 -> 10",
                "  1 of 1 hosts kept every pid: agent and processes, nothing was restarted",
            ]
        );
        let restarted = HostChange {
            after: state("demo-next-1", &[("a", 11)]),
            ..kept.clone()
        };
        assert!(!restarted.pids_kept());
        let lines = report(&[kept, restarted]);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("  1 of 2 hosts kept every pid: agent and processes")
        );
    }
}
