//! What `cargo xtask demo --upgrade` does, on a demo fleet of the real binaries with
//! mutual TLS: the agent binary uploaded as a fresh version, every agent upgraded in
//! one batch task, every agent and supervised process keeping its pid.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xtask::demo_upgrade::{report, upgrade_fleet};
use xtask::fleet::{AgentProfile, Transport, demo_controller_args};
use xtask::rest::Rest;
use xtask::upgrade::{self, HostState};

/// Until every host reports each of its three processes with a pid.
fn running(rest: &Rest, ids: &[i64]) -> Vec<HostState> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = upgrade::states(rest, ids).expect("host states");
        if states
            .iter()
            .all(|s| s.pids.len() == 3 && s.pids.values().all(|&p| p > 0))
        {
            return states;
        }
        assert!(
            Instant::now() < deadline,
            "processes not running: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_demo_upgrade_moves_every_agent_to_a_new_version_under_its_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips: Vec<IpAddr> = (32..=33)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let fleet = support::start_fleet(
        dir.path().join("fleet"),
        ips,
        AgentProfile::Demo,
        Transport::MutualTls,
        demo_controller_args(),
    );
    let rest = fleet.rest().expect("REST client");
    let ids = fleet.register_hosts(&rest).expect("register the hosts");
    let before = running(&rest, &ids);

    let version = upgrade::fresh_version_now("test-next");
    let (task, changes) = upgrade_fleet(&fleet, &rest, &ids, &version, None).expect("the upgrade");
    assert_eq!(task["status"], "SUCCESSFUL", "{task}");
    assert_eq!(task["name"], "Batch upgrade OCP agent");
    assert_eq!(changes.len(), 2);
    for (change, was) in changes.iter().zip(&before) {
        assert_eq!(&change.before, was);
        assert_eq!(change.before.version, "4.2.1-demo");
        assert_eq!(change.after.version, version);
        assert!(change.agent_pid.0 > 0, "{change:?}");
        assert!(change.pids_kept(), "{change:?}");
    }
    let lines = report(&changes);
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with("nothing was restarted")),
        "{lines:?}"
    );

    // A second upgrade needs a version of its own; the package list has both.
    let again = format!("{version}-again");
    let (task, changes) = upgrade_fleet(&fleet, &rest, &ids, &again, None).expect("again");
    assert_eq!(task["status"], "SUCCESSFUL", "{task}");
    assert!(
        changes
            .iter()
            .all(|c| c.after.version == again && c.pids_kept())
    );
    let packages = rest.get("/api/v2/agent/packages").expect("packages");
    assert_eq!(packages["page"]["totalElements"], 2, "{packages}");
}
