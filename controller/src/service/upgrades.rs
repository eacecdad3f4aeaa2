//! Agent upgrade tasks as operators submit them: the version must have been uploaded,
//! and the task records the version each host's agent ran, which its rollback puts back.

use super::errors::Field;
use super::{ApiOperation, Caller, Core, CoreError};
use crate::model::package::check_version;
use crate::model::{AgentAction, Arch, Host, NewTask, Task, ocp};
use crate::plans;
use crate::rollout::RolloutInput;

impl Core {
    /// Upgrades one host's agent to `version`, in place.
    pub async fn upgrade_agent(
        &self,
        caller: &Caller,
        host_id: i64,
        version: &str,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::UpgradeAgent)?;
        self.uploaded(version).await?;
        let host = self.find_host(host_id).await?;
        let mut plan = plans::single_host(AgentAction::Upgrade, host_id);
        record_versions(&mut plan, version, std::slice::from_ref(&host));
        self.create_and_drive(plan, caller).await
    }

    /// Upgrades the agents of `host_ids` to `version` as one task: stage-wise, or in
    /// batches with a rollout, as every batch operation.
    pub async fn upgrade_agents(
        &self,
        caller: &Caller,
        host_ids: &[i64],
        version: &str,
        rollout: Option<&RolloutInput>,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::BatchUpgradeAgents)?;
        self.uploaded(version).await?;
        let mut plan = self
            .batch_plan(AgentAction::Upgrade, host_ids, rollout)
            .await?;
        let mut hosts = Vec::with_capacity(host_ids.len());
        for &id in host_ids {
            hosts.extend(self.store.get_host(id).await?);
        }
        record_versions(&mut plan, version, &hosts);
        self.create_and_drive(plan, caller).await
    }

    /// Refuses a version no package was uploaded as, for any machine: each host's
    /// Prepare step then checks there is one for its own.
    async fn uploaded(&self, version: &str) -> Result<(), CoreError> {
        check_version(version).map_err(|m| CoreError::invalid(Field::AgentVersion, version, m))?;
        for &arch in Arch::ALL {
            if self
                .store
                .package_by_version(version, arch)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(CoreError::invalid(
            Field::AgentVersion,
            version,
            format!(
                "no agent package of version {version} was uploaded: upload it first (POST /api/v2/agent/packages?version={version})"
            ),
        ))
    }
}

/// The task's version, and each host's before it, as the steps and the rollback read them.
fn record_versions(plan: &mut NewTask, version: &str, hosts: &[Host]) {
    let context = &mut plan.context.string_map;
    context.insert(ocp::AGENT_VERSION.to_string(), version.to_string());
    for host in hosts.iter().filter(|h| !h.agent.version.is_empty()) {
        context.insert(
            format!("{}{}", ocp::FROM_VERSION, host.id),
            host.agent.version.clone(),
        );
    }
}
