//! Scenario 10: agents upgraded in place under their processes. The switch gap: a
//! client calls GetAgentInfo in a loop on each of a few agents while one batch upgrade
//! replaces them all, and the slowest answer each client saw is the gap that agent
//! left. Then a rolling upgrade of the whole fleet beside a batch restart of the same
//! hosts: both wall times, and the supervised processes the upgrade restarted (none).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use proto::agent::v1::GetAgentInfoRequest;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use serde::Serialize;
use serde_json::json;
use test_support::agent_calls::{Pestered, pester};
use tonic::transport::Channel;

use super::BenchError;
use super::fleet_restart::timed_task;
use super::report::StoreKind;
use super::rolling::median_max;
use crate::dial::Dialer;
use crate::fleet::Fleet;
use crate::rest::Rest;
use crate::upgrade::{self, UpgradeError};

/// The agents pestered through the switch: enough for a median and a max, few enough
/// that their clients do not load the two cores the agents switch on.
pub const SWITCH_HOSTS: usize = 10;
/// The rollout of the fleet's upgrade.
pub const BATCH_SIZE: &str = "25%";
const LABEL: &str = "bench-next";

impl From<UpgradeError> for BenchError {
    fn from(e: UpgradeError) -> BenchError {
        BenchError::Failed(e.to_string())
    }
}

/// The agents of one batch upgrade, each under a GetAgentInfo loop.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchGap {
    pub hosts: usize,
    /// GetAgentInfo calls answered or failed, over every agent.
    pub calls: u64,
    /// Goal: 0.
    pub failed_calls: usize,
    pub first_error: Option<String>,
    /// Per agent, the slowest answer its client saw; their median and max.
    pub slowest_median_ms: f64,
    pub slowest_max_ms: f64,
    /// The batch upgrade, from just before the POST to the task's finishTime.
    pub wall_ms: f64,
    /// Agents whose pid (GetAgentInfo's) changed: the agent replaces itself in place.
    pub agent_pids_changed: usize,
    /// Goal: 0.
    pub process_pids_changed: usize,
}

/// Scenario 10's figures.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeRun {
    pub hosts: usize,
    pub store: StoreKind,
    pub tls: bool,
    pub package_mb: f64,
    pub switch: SwitchGap,
    /// The batch restart of the same hosts (stage-wise), for scale.
    pub batch_restart_wall_ms: f64,
    pub batch_size: String,
    /// None when the rolling upgrade failed: `rolling_error` says why, and the switch
    /// gap measured before it is kept.
    pub rolling_upgrade_wall_ms: Option<f64>,
    pub rolling_error: Option<String>,
    /// Supervised processes over the hosts, and how many of them the rolling upgrade
    /// restarted (goal: 0).
    pub processes: usize,
    pub processes_restarted: usize,
    /// Hosts not at the new version afterwards (goal: 0).
    pub hosts_not_upgraded: usize,
}

/// The switch gap on the first `SWITCH_HOSTS` of `host_ids`, then the rolling upgrade
/// of all of them. `host_ids` are the first hosts of `fleet`, in its order; their
/// batch restart took `batch_restart_wall_ms`. Every upgrade takes a version of its
/// own, so that no agent finds it already held.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    fleet: &Fleet,
    rest: &Rest,
    host_ids: &[i64],
    batch_restart_wall_ms: f64,
) -> Result<UpgradeRun, BenchError> {
    let binary = fleet.spec.binary("ocp-agent");
    let switch_version = upgrade::fresh_version_now(LABEL);
    let (_, size) = upgrade::upload(rest, &binary, &switch_version)?;
    let n = host_ids.len().min(SWITCH_HOSTS);
    let switch = switch_gap(rt, fleet, rest, &host_ids[..n], &switch_version)?;

    let version = format!("{}-rolling", upgrade::fresh_version_now(LABEL));
    upgrade::upload(rest, &binary, &version)?;
    let before = upgrade::states(rest, host_ids)?;
    let body = upgrade::batch_body(host_ids, &version, Some(json!({ "batchSize": BATCH_SIZE })));
    let rolled = timed_task(
        rest,
        "/api/v2/compute/hosts/batchUpgradeAgents",
        body,
        "rolling upgrade",
    )
    .and_then(|(ms, task)| match task["rollout"].is_null() {
        true => Err(BenchError::Failed(format!(
            "the controller answered rolling upgrade {} without `rollout`",
            task["id"]
        ))),
        false => Ok(ms),
    });
    let after = upgrade::states(rest, host_ids)?;
    Ok(UpgradeRun {
        hosts: host_ids.len(),
        store: StoreKind::Sqlite,
        tls: fleet.spec.transport.is_tls(),
        package_mb: size as f64 / 1024.0 / 1024.0,
        switch,
        batch_restart_wall_ms,
        batch_size: BATCH_SIZE.to_string(),
        rolling_upgrade_wall_ms: rolled.as_ref().ok().copied(),
        rolling_error: rolled.err().map(|e| e.to_string()),
        processes: before.iter().map(|h| h.pids.len()).sum(),
        processes_restarted: upgrade::pids_changed(&before, &after),
        hosts_not_upgraded: upgrade::not_at(&after, &version),
    })
}

/// One stage-wise batch upgrade of `host_ids` to `version`, each agent under its own
/// GetAgentInfo loop on a connection of its own, opened before the upgrade.
fn switch_gap(
    rt: &tokio::runtime::Runtime,
    fleet: &Fleet,
    rest: &Rest,
    host_ids: &[i64],
    version: &str,
) -> Result<SwitchGap, BenchError> {
    let hosts = &fleet.hosts[..host_ids.len()];
    let clients: Vec<AgentServiceClient<Channel>> = rt.block_on(async {
        let dialer = Dialer::agents(fleet.pki.as_ref()).await?;
        let mut clients = Vec::new();
        for host in hosts {
            clients.push(AgentServiceClient::new(dialer.connect(host.addr).await?));
        }
        Ok::<_, BenchError>(clients)
    })?;
    let pids_before = rt.block_on(agent_pids(&clients))?;
    let before = upgrade::states(rest, host_ids)?;
    let stop = Arc::new(AtomicBool::new(false));
    let probes: Vec<_> = {
        let _inside = rt.enter();
        clients
            .iter()
            .map(|c| pester(c.clone(), stop.clone()))
            .collect()
    };
    let started = Instant::now();
    let upgraded = timed_task(
        rest,
        "/api/v2/compute/hosts/batchUpgradeAgents",
        upgrade::batch_body(host_ids, version, None),
        "batch upgrade",
    );
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Pestered> = rt.block_on(async {
        let mut seen = Vec::new();
        for probe in probes {
            seen.push(probe.await.unwrap_or_default());
        }
        seen
    });
    let (wall_ms, _) = upgraded?;
    let after = upgrade::states(rest, host_ids)?;
    let pids_after = rt.block_on(agent_pids(&clients))?;
    let not_upgraded = upgrade::not_at(&after, version);
    if not_upgraded > 0 {
        return Err(BenchError::Failed(format!(
            "{not_upgraded} agents do not report {version} after the upgrade ({:.1} s)",
            started.elapsed().as_secs_f64()
        )));
    }
    Ok(gap_of(
        &seen,
        wall_ms,
        pids_changed(&pids_before, &pids_after),
        upgrade::pids_changed(&before, &after),
    ))
}

/// The figures of the GetAgentInfo loops, one per agent.
fn gap_of(
    seen: &[Pestered],
    wall_ms: f64,
    agent_pids_changed: usize,
    process_pids_changed: usize,
) -> SwitchGap {
    let slowest: Vec<f64> = seen.iter().map(|s| s.slowest.as_secs_f64() * 1e3).collect();
    let (slowest_median_ms, slowest_max_ms) = median_max(&slowest);
    SwitchGap {
        hosts: seen.len(),
        calls: seen.iter().map(|s| u64::from(s.calls)).sum(),
        failed_calls: seen.iter().map(|s| s.errors.len()).sum(),
        first_error: seen.iter().find_map(|s| s.errors.first().cloned()),
        slowest_median_ms,
        slowest_max_ms,
        wall_ms,
        agent_pids_changed,
        process_pids_changed,
    }
}

fn pids_changed(before: &[u32], after: &[u32]) -> usize {
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

async fn agent_pids(clients: &[AgentServiceClient<Channel>]) -> Result<Vec<u32>, BenchError> {
    let mut pids = Vec::new();
    for client in clients {
        let info = client
            .clone()
            .get_agent_info(GetAgentInfoRequest {})
            .await
            .map_err(|status| BenchError::Grpc {
                what: "GetAgentInfo".into(),
                status: Box::new(status),
            })?;
        pids.push(info.into_inner().pid);
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_gap_is_each_agents_slowest_answer_and_failures_are_counted() {
        let seen = |ms: u64, errors: &[&str]| Pestered {
            errors: errors.iter().map(|e| e.to_string()).collect(),
            slowest: Duration::from_millis(ms),
            calls: 100,
        };
        let gap = gap_of(
            &[seen(3, &[]), seen(40, &["unavailable"]), seen(5, &[])],
            900.0,
            0,
            0,
        );
        assert_eq!((gap.slowest_median_ms, gap.slowest_max_ms), (5.0, 40.0));
        assert_eq!((gap.calls, gap.failed_calls), (300, 1));
        assert_eq!(gap.first_error.as_deref(), Some("unavailable"));
        assert_eq!(pids_changed(&[1, 2, 3], &[1, 5, 3]), 1);
    }
}
