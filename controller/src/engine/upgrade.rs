//! The steps of an agent upgrade (docs/tasks.md#agent-upgrades): Prepare checks there
//! is a package for the host, Push streams it to the agent, Switch has the agent become
//! it under its processes, Verify checks the new version answers with every process
//! it found still running, and Finish commits it.
//!
//! Each step first asks the agent what it runs, and does nothing when its work is done
//! already: a host already on the version passes every step at once, and a step run
//! again (after a controller's crash, or a retry) picks up where the agent is.

use std::str::FromStr;
use std::time::Duration;

use futures::{Stream, StreamExt};
use proto::agent::v1::package_chunk::Part;
use proto::agent::v1::{AgentInfo, PackageChunk, PackageHeader, ProcessInfo};
use tokio::time::Instant;

use super::health;
use super::steps::{StepError, StepRun};
use crate::agent_client::AgentClient;
use crate::model::{AgentPackage, Arch, Host, ocp};

/// How long a version switched to waits for its commit on top of the health watch:
/// Verify and Finish come within seconds, unless the controller dies in between and
/// another takes the task over.
const TRIAL: Duration = Duration::from_secs(60);
/// How often Switch asks whether the agent is back on the new version.
const POLL: Duration = Duration::from_millis(100);
/// Each of those asks; an agent mid-switch answers within milliseconds or queues it.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent runs `version` and starts it after a crash: nothing is left to do. An
/// agent too old to say what it committed runs what it would start.
fn settled_on(info: &AgentInfo, version: &str) -> bool {
    info.version == version
        && (info.committed_version.is_empty() || info.committed_version == version)
}

/// The processes running now, by alias and pid.
fn running(processes: &[ProcessInfo]) -> Vec<(String, u32)> {
    processes
        .iter()
        .filter(|p| p.pid > 0)
        .map(|p| (p.alias.clone(), p.pid))
        .collect()
}

impl StepRun<'_> {
    /// The version the task upgrades to.
    fn target(&self) -> Result<&str, StepError> {
        self.context
            .string_map
            .get(ocp::AGENT_VERSION)
            .map(String::as_str)
            .ok_or_else(|| StepError("the task names no agent version to upgrade to".into()))
    }

    fn settled(&self, host: &Host, info: &AgentInfo, version: &str) -> bool {
        let settled = settled_on(info, version);
        if settled {
            self.log(&format!(
                "host {} already runs agent version {version}: nothing to do",
                host.id
            ));
        }
        settled
    }

    /// The stored package for the agent's machine.
    async fn package_for(&self, host: &Host, info: &AgentInfo) -> Result<AgentPackage, StepError> {
        let version = self.target()?;
        let arch = Arch::from_str(&info.arch).map_err(|_| {
            StepError(format!(
                "the agent on host {} does not say which machine it runs on (arch {:?}): it is older than in-place upgrades; upgrade it by hand once",
                host.id, info.arch
            ))
        })?;
        self.shared
            .store
            .package_by_version(version, arch)
            .await?
            .ok_or_else(|| {
                StepError(format!(
                    "no agent package of version {version} for {arch}: upload one (POST /api/v2/agent/packages?version={version})"
                ))
            })
    }

    pub(super) async fn prepare_upgrade(&self) -> Result<(), StepError> {
        let (host, _, info) = self.reach_agent().await?;
        let version = self.target()?;
        if self.settled(&host, &info, version) {
            return Ok(());
        }
        let package = self.package_for(&host, &info).await?;
        self.log(&format!(
            "host {} ({}:{}) is online: agent {} on {}; package {} for {} ({} bytes, sha256 {}) will replace it",
            host.id,
            host.inner_ip_address,
            host.agent_port,
            info.version,
            info.hostname,
            package.version,
            package.arch,
            package.size,
            package.sha256
        ));
        Ok(())
    }

    pub(super) async fn push_package(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let version = self.target()?;
        if self.settled(&host, &info, version) {
            return Ok(());
        }
        if info.held_versions.iter().any(|v| v == version) {
            self.log(&format!(
                "host {}: the agent holds version {version} already",
                host.id
            ));
            return Ok(());
        }
        let package = self.package_for(&host, &info).await?;
        let started = Instant::now();
        let received = self
            .call_with_retries("ReceivePackage", &host, |timeout| {
                client.receive_package(self.package_chunks(&package), timeout)
            })
            .await?;
        self.log(&format!(
            "host {}: pushed {} bytes in {:.1}s; the agent checked sha256 {} and keeps version {}",
            host.id,
            package.size,
            started.elapsed().as_secs_f64(),
            received.sha256,
            received.version
        ));
        Ok(())
    }

    /// The package as ReceivePackage takes it, read from the store a chunk at a time.
    /// A chunk the store cannot give ends the stream short, which the agent refuses
    /// as truncated; the cause is in the controller's log.
    fn package_chunks(
        &self,
        package: &AgentPackage,
    ) -> impl Stream<Item = PackageChunk> + Send + 'static {
        let header = PackageChunk {
            part: Some(Part::Header(PackageHeader {
                version: package.version.clone(),
                sha256: package.sha256.clone(),
                size: u64::try_from(package.size).unwrap_or(0),
            })),
        };
        let id = package.id;
        let data = self
            .shared
            .store
            .package_content(package)
            .scan((), move |(), chunk| {
                futures::future::ready(match chunk {
                    Ok(bytes) => Some(PackageChunk {
                        part: Some(Part::Data(bytes.to_vec())),
                    }),
                    Err(e) => {
                        tracing::warn!(
                            package_id = id,
                            "cannot read the package from the store: {e}"
                        );
                        None
                    }
                })
            });
        futures::stream::once(async move { header }).chain(data)
    }

    pub(super) async fn switch_agent(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let version = self.target()?;
        if self.settled(&host, &info, version) {
            return Ok(());
        }
        if info.version == version {
            self.log(&format!(
                "host {}: the agent runs version {version} already, on trial",
                host.id
            ));
            return Ok(());
        }
        let before = self
            .call_with_retries("ListProcesses", &host, |timeout| client.processes(timeout))
            .await?;
        let watched = running(&before);
        let health = self.rollout.map_or(0, |r| r.min_healthy_seconds);
        let trial = TRIAL + Duration::from_secs(u64::from(health));
        let switched = self
            .call_with_retries("SwitchVersion", &host, |timeout| {
                client.switch_version(version, trial, timeout)
            })
            .await;
        match switched {
            Ok(answer) => self.log(&format!(
                "host {}: the new agent passed its self-check ({}); switching from version {}, pid {}",
                host.id, answer.self_check, answer.from_version, info.pid
            )),
            // A lost answer may hide a switch that was made.
            Err(e) => {
                self.log(&format!("host {}: {e}; looking whether it switched", host.id));
                let now = self.info_now(&client).await;
                if now.is_none_or(|now| now.version != version) {
                    return Err(e);
                }
            }
        }
        let now = self
            .on_version_as_before(&host, &client, version, &watched)
            .await?;
        let same = if now.pid == info.pid {
            "the same pid"
        } else {
            "ANOTHER pid"
        };
        self.log(&format!(
            "host {}: agent version {version} answers, pid {} ({same}), on trial for {}s; {} process(es) kept their pids",
            host.id,
            now.pid,
            trial.as_secs(),
            watched.len()
        ));
        Ok(())
    }

    /// Waits for the agent on `version`, then checks that every process of `watched`
    /// (alias, pid) still runs with its pid.
    async fn on_version_as_before(
        &self,
        host: &Host,
        client: &AgentClient<'_>,
        version: &str,
        watched: &[(String, u32)],
    ) -> Result<AgentInfo, StepError> {
        let now = self.until_version(host, client, version).await?;
        let after = self
            .call_with_retries("ListProcesses", host, |timeout| client.processes(timeout))
            .await?;
        let lost = health::unhealthy(watched, &after);
        if !lost.is_empty() {
            return Err(StepError(format!(
                "host {} runs agent version {version}, but not every process kept running: {}",
                host.id,
                lost.join("; ")
            )));
        }
        Ok(now)
    }

    async fn info_now(&self, client: &AgentClient<'_>) -> Option<AgentInfo> {
        client.agent_info(POLL_TIMEOUT).await.ok()
    }

    /// Waits until the agent answers as `version`; fails as soon as it says it left
    /// that version (a failed self-check, a trial that ran out).
    async fn until_version(
        &self,
        host: &Host,
        client: &AgentClient<'_>,
        version: &str,
    ) -> Result<AgentInfo, StepError> {
        loop {
            if let Some(info) = self.info_now(client).await {
                if info.version == version {
                    return Ok(info);
                }
                if !info.last_upgrade_error.is_empty() {
                    return Err(StepError(format!(
                        "host {}: the agent runs version {}, not {version}: {}",
                        host.id, info.version, info.last_upgrade_error
                    )));
                }
            }
            if Instant::now() + POLL >= self.deadline {
                return Err(StepError(format!(
                    "host {}: the agent did not come back on version {version} before the step's deadline",
                    host.id
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(super) async fn verify_agent(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let version = self.target()?;
        if self.settled(&host, &info, version) {
            return Ok(());
        }
        if info.version != version {
            return Err(StepError(format!(
                "host {}: the agent runs version {}, not {version}: {}",
                host.id,
                info.version,
                if info.last_upgrade_error.is_empty() {
                    "it was not switched"
                } else {
                    &info.last_upgrade_error
                }
            )));
        }
        let before = self
            .call_with_retries("ListProcesses", &host, |timeout| client.processes(timeout))
            .await?;
        let watched = running(&before);
        let seconds = self.rollout.map_or(0, |r| r.min_healthy_seconds);
        if seconds > 0 {
            self.log(&format!(
                "watching the agent and {} process(es) for {seconds}s (minHealthySeconds)",
                watched.len()
            ));
            tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
        }
        let now = self
            .on_version_as_before(&host, &client, version, &watched)
            .await?;
        self.log(&format!(
            "host {}: agent version {version} answers (pid {}), {} process(es) running as before",
            host.id,
            now.pid,
            watched.len()
        ));
        Ok(())
    }

    /// "Finish OCP agent operation" of an upgrade: the commit, then the inventory.
    pub(super) async fn commit_agent(&self) -> Result<(), StepError> {
        let (host, client, info) = self.reach_agent().await?;
        let version = self.target()?;
        if info.version != version {
            return Err(StepError(format!(
                "host {}: the agent runs version {}, not {version}, and cannot commit it: {}",
                host.id, info.version, info.last_upgrade_error
            )));
        }
        if !settled_on(&info, version) {
            self.call_with_retries("CommitVersion", &host, |timeout| {
                client.commit_version(version, timeout)
            })
            .await?;
            self.log(&format!(
                "host {}: agent version {version} committed: it is what starts after a crash or a reboot",
                host.id
            ));
        }
        self.finish().await
    }

    /// A rollback of an upgrade's Switch or Finish: the host goes back on the version
    /// its agent ran when the task was made, committed.
    pub(super) async fn undo_upgrade(&self) -> Result<(), StepError> {
        if !self.hold_host().await? {
            return Ok(());
        }
        let (host, client, info) = self.reach_agent().await?;
        let key = format!("{}{}", ocp::FROM_VERSION, host.id);
        let Some(from) = self.context.string_map.get(&key).cloned() else {
            self.log(&format!(
                "rollback: no version was recorded for host {} when the task was made; left on {}",
                host.id, info.version
            ));
            return Ok(());
        };
        if settled_on(&info, &from) {
            self.log(&format!(
                "rollback: host {} runs version {from} already",
                host.id
            ));
            return Ok(());
        }
        if info.version != from {
            if !info.held_versions.contains(&from) {
                return Err(StepError(format!(
                    "rollback: host {}'s agent no longer holds version {from}; upload it and upgrade to it",
                    host.id
                )));
            }
            // A version on trial refuses another switch until it is settled.
            if info.trial_remaining_ms > 0 {
                self.call_with_retries("CommitVersion", &host, |timeout| {
                    client.commit_version(&info.version, timeout)
                })
                .await?;
            }
            self.call_with_retries("SwitchVersion", &host, |timeout| {
                client.switch_version(&from, TRIAL, timeout)
            })
            .await?;
            self.until_version(&host, &client, &from).await?;
        }
        self.call_with_retries("CommitVersion", &host, |timeout| {
            client.commit_version(&from, timeout)
        })
        .await?;
        self.log(&format!(
            "rollback: host {} back on agent version {from}, committed",
            host.id
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, committed: &str) -> AgentInfo {
        AgentInfo {
            version: version.into(),
            committed_version: committed.into(),
            ..AgentInfo::default()
        }
    }

    #[test]
    fn a_host_is_settled_only_when_it_runs_and_committed_the_version() {
        assert!(settled_on(&info("5.0", "5.0"), "5.0"));
        assert!(!settled_on(&info("5.0", "4.2"), "5.0"), "on trial");
        assert!(!settled_on(&info("4.2", "4.2"), "5.0"));
        assert!(
            settled_on(&info("5.0", ""), "5.0"),
            "an agent that predates commits"
        );
    }
}
