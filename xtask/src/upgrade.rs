//! Upgrading a fleet's agents in place through its controller, as the demo and the
//! bench both do it: the ocp-agent binary uploaded as a package under a fresh version,
//! the batch upgrade task, and what each host runs before and after (the agent's
//! version, its processes' pids), compared.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::rest::{Rest, RestError};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unexpected(String),
}

/// A version no agent of any earlier run holds: an agent that holds a version already
/// answers "already at version" at once, and agents keep versions in their data folder.
pub fn fresh_version(prefix: &str, unix_ms: u128) -> String {
    format!("{prefix}-{unix_ms}")
}

/// `fresh_version` at this instant.
pub fn fresh_version_now(prefix: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    fresh_version(prefix, now)
}

/// Uploads `binary` as the package of `version`; the package record, and its size in
/// bytes.
pub fn upload(rest: &Rest, binary: &Path, version: &str) -> Result<(Value, u64), UpgradeError> {
    let bytes = std::fs::read(binary).map_err(|source| UpgradeError::Read {
        path: binary.display().to_string(),
        source,
    })?;
    let size = bytes.len() as u64;
    let package = rest.post_bytes(&format!("/api/v2/agent/packages?version={version}"), bytes)?;
    if package["version"] != version {
        return Err(UpgradeError::Unexpected(format!(
            "the upload of {version} answered {package}"
        )));
    }
    Ok((package, size))
}

/// The body of `batchUpgradeAgents`: every host at once, or rolled out.
pub fn batch_body(host_ids: &[i64], version: &str, rollout: Option<Value>) -> Value {
    let mut body = json!({ "hostIds": host_ids, "version": version });
    if let Some(rollout) = rollout {
        body["rollout"] = rollout;
    }
    body
}

/// Submits the batch upgrade; the task's id.
pub fn submit(rest: &Rest, body: Value) -> Result<i64, UpgradeError> {
    let task = rest.post("/api/v2/compute/hosts/batchUpgradeAgents", body)?;
    task["id"]
        .as_i64()
        .ok_or_else(|| UpgradeError::Unexpected(format!("no task id in {task}")))
}

/// One host's agent as the controller reports it, asked afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub version: String,
    /// alias -> pid of each supervised process.
    pub pids: BTreeMap<String, i64>,
}

impl HostState {
    /// From `GET /compute/hosts/{id}/agent`.
    pub fn of(agent: &Value) -> HostState {
        let pids = agent["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["alias"].as_str().unwrap_or_default().to_string(),
                            p["pid"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        HostState {
            version: agent["version"].as_str().unwrap_or_default().to_string(),
            pids,
        }
    }
}

/// Every host's state, in the order of `host_ids`.
pub fn states(rest: &Rest, host_ids: &[i64]) -> Result<Vec<HostState>, UpgradeError> {
    host_ids
        .iter()
        .map(|id| {
            let agent = rest.get(&format!("/api/v2/compute/hosts/{id}/agent"))?;
            Ok(HostState::of(&agent))
        })
        .collect()
}

/// Supervised processes whose pid is not the one they had before (gone ones included):
/// what an upgrade in place must leave at zero.
pub fn pids_changed(before: &[HostState], after: &[HostState]) -> usize {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            b.pids
                .iter()
                .filter(|(alias, pid)| a.pids.get(*alias) != Some(pid))
                .count()
        })
        .sum()
}

/// Hosts whose agent does not report `version`.
pub fn not_at(after: &[HostState], version: &str) -> usize {
    after.iter().filter(|h| h.version != version).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(version: &str, pids: &[(&str, i64)]) -> HostState {
        HostState {
            version: version.to_string(),
            pids: pids.iter().map(|(a, p)| (a.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn a_version_label_is_new_each_run() {
        assert_eq!(fresh_version("bench-next", 1700), "bench-next-1700");
        assert_ne!(fresh_version("x", 1), fresh_version("x", 2));
    }

    #[test]
    fn the_state_is_read_from_the_agent_route() {
        let agent = json!({"version": "4.2.1", "processes": [
            {"alias": "listener", "pid": 10}, {"alias": "sleeper", "pid": 11}]});
        assert_eq!(
            HostState::of(&agent),
            host("4.2.1", &[("listener", 10), ("sleeper", 11)])
        );
    }

    #[test]
    fn a_new_or_lost_pid_counts_as_changed() {
        let before = vec![host("a", &[("l", 10), ("s", 11)]), host("a", &[("l", 20)])];
        assert_eq!(pids_changed(&before, &before), 0);
        let after = vec![host("b", &[("l", 10), ("s", 12)]), host("b", &[])];
        assert_eq!(pids_changed(&before, &after), 2);
        assert_eq!(not_at(&after, "b"), 0);
        assert_eq!(not_at(&before, "b"), 2);
    }

    #[test]
    fn a_rollout_goes_in_the_body_only_when_given() {
        assert_eq!(
            batch_body(&[1, 2], "v", None),
            json!({"hostIds": [1, 2], "version": "v"})
        );
        assert_eq!(
            batch_body(&[1], "v", Some(json!({"batchSize": "25%"})))["rollout"]["batchSize"],
            "25%"
        );
    }
}
