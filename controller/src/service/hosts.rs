//! The host inventory as operators change and search it, and the whole-agent tasks
//! submitted on hosts: a batch is checked whole before anything is created.

use std::collections::HashSet;
use std::net::IpAddr;

use super::errors::{Field, MAX_BATCH_HOSTS, check_id, first_few, name_hosts, thousands};
use super::{ApiOperation, Caller, Core, CoreError};
use crate::model::{
    AgentAction, AgentProcess, Host, HostFilter, HostSort, HostStatus, NewHost, NewTask, Page,
    PageRequest, Task, TaskStatus, now_millis,
};
use crate::plans;
use crate::rollout::RolloutInput;
use crate::store::{StoreError, TaskOrigin};

impl Core {
    pub async fn add_host(
        &self,
        caller: &Caller,
        inner_ip_address: &str,
        agent_port: u32,
        name: Option<&str>,
    ) -> Result<Host, CoreError> {
        caller.admitted(ApiOperation::AddHost)?;
        let address = inner_ip_address.trim();
        if address.parse::<IpAddr>().is_err() {
            return Err(CoreError::invalid(
                Field::HostAddress,
                inner_ip_address,
                "must be an IPv4 or IPv6 address",
            ));
        }
        let port = u16::try_from(agent_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                CoreError::invalid(Field::AgentPort, agent_port, "must be between 1 and 65535")
            })?;
        let name = match name.map(str::trim) {
            Some(n) if n.len() > 128 => {
                return Err(CoreError::invalid(
                    Field::HostName,
                    n,
                    "must be at most 128 characters",
                ));
            }
            Some(n) if !n.is_empty() => n.to_string(),
            _ => address.to_string(),
        };
        let new = NewHost {
            name,
            inner_ip_address: address.to_string(),
            agent_port: port,
        };
        match self.store.insert_host(&new).await {
            Ok(host) => {
                self.host_added.notify_one();
                Ok(host)
            }
            Err(StoreError::HostExists {
                inner_ip_address,
                agent_port,
                existing_id,
            }) => Err(CoreError::HostExists {
                address: format!("{inner_ip_address}:{agent_port}"),
                existing_id,
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_hosts(
        &self,
        caller: &Caller,
        filter: &HostFilter,
        page: PageRequest,
    ) -> Result<Page<Host>, CoreError> {
        caller.admitted(ApiOperation::ListHosts)?;
        let mut page = self.store.list_hosts(filter, page).await?;
        for host in &mut page.contents {
            self.heard(host);
        }
        Ok(page)
    }

    /// The freshest answer of the host's agent this controller has seen: the heartbeat
    /// writes a steady host's answers to the store only now and then, and keeps them
    /// in memory in between.
    fn heard(&self, host: &mut Host) {
        host.last_available_time = host
            .last_available_time
            .max(self.agents.last_answer(host.id));
    }

    pub async fn get_host(&self, caller: &Caller, id: i64) -> Result<Host, CoreError> {
        caller.admitted(ApiOperation::GetHost)?;
        self.find_host(id).await
    }

    pub(super) async fn find_host(&self, id: i64) -> Result<Host, CoreError> {
        check_id(Field::HostId, id)?;
        let mut host = self
            .store
            .get_host(id)
            .await?
            .ok_or(CoreError::HostNotFound(id))?;
        self.heard(&mut host);
        Ok(host)
    }

    /// A host and one of its processes, or which of them is not there.
    pub(super) async fn find_process(
        &self,
        host_id: i64,
        process_id: i64,
    ) -> Result<(Host, AgentProcess), CoreError> {
        check_id(Field::ProcessId, process_id)?;
        let host = self.find_host(host_id).await?;
        let process = self.store.get_process(host_id, process_id).await?.ok_or(
            CoreError::ProcessNotFound {
                host_id,
                process_id,
            },
        )?;
        Ok((host, process))
    }

    pub async fn delete_host(&self, caller: &Caller, id: i64) -> Result<Host, CoreError> {
        caller.admitted(ApiOperation::DeleteHost)?;
        check_id(Field::HostId, id)?;
        match self.store.delete_host(id).await {
            Ok(Some(host)) => {
                self.forget_inventory(id);
                self.release_agent(&host, caller).await;
                Ok(host)
            }
            Ok(None) => Err(CoreError::HostNotFound(id)),
            Err(StoreError::HostBusy { host_id, .. }) => Err(self.busy(host_id).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Tells a deleted host's agent to forget this controller's cluster, so that another
    /// cluster may manage it. Best effort, within `release_timeout`: the host is deleted
    /// whether the agent answers or not, and the log says when it was not told.
    async fn release_agent(&self, host: &Host, caller: &Caller) {
        let cluster = self.agents.cluster();
        let address = self.agents.uri(host);
        let released = match self.client(host, caller) {
            Ok(client) => client
                .release_cluster(self.options.release_timeout)
                .await
                .map_err(|e| e.reason()),
            Err(e) => Err(e.to_string()),
        };
        match released {
            Ok(true) => tracing::info!(
                host_id = host.id,
                "the agent at {address} no longer belongs to controller cluster {cluster}"
            ),
            Ok(false) => tracing::info!(
                host_id = host.id,
                "the agent at {address} did not belong to controller cluster {cluster}: nothing to release"
            ),
            Err(reason) => tracing::warn!(
                host_id = host.id,
                "host deleted, but its agent at {address} was not told to forget controller cluster \
                 {cluster} ({reason}); until it is, it refuses other clusters: run \
                 `ocp-agent forget-cluster` on the host"
            ),
        }
    }

    /// Restarts, stops or starts one host's agent: creates the DAG task and starts it.
    pub async fn operate_agent(
        &self,
        caller: &Caller,
        action: AgentAction,
        host_id: i64,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::single(action))?;
        self.find_host(host_id).await?;
        self.create_and_drive(plans::single_host(action, host_id), caller)
            .await
    }

    /// Restarts, stops or starts the agents of `host_ids` as one batch task: stage-wise
    /// as OCP's, or rolling when a rollout is given. The whole batch is validated first:
    /// nothing is created unless every host can be taken.
    pub async fn operate_agents(
        &self,
        caller: &Caller,
        action: AgentAction,
        host_ids: &[i64],
        rollout: Option<&RolloutInput>,
    ) -> Result<Task, CoreError> {
        caller.admitted(ApiOperation::batch(action))?;
        let plan = self.batch_plan(action, host_ids, rollout).await?;
        self.create_and_drive(plan, caller).await
    }

    /// The batch task of `action` over `host_ids`, once the whole batch checks out:
    /// its rollout, its ids, and that every host exists.
    pub(super) async fn batch_plan(
        &self,
        action: AgentAction,
        host_ids: &[i64],
        rollout: Option<&RolloutInput>,
    ) -> Result<NewTask, CoreError> {
        let rollout = rollout
            .map(RolloutInput::validate)
            .transpose()
            .map_err(CoreError::InvalidRollout)?;
        check_batch(host_ids)?;
        let existing = self.store.existing_host_ids(host_ids).await?;
        let missing: Vec<i64> = host_ids
            .iter()
            .copied()
            .filter(|id| !existing.contains(id))
            .collect();
        if !missing.is_empty() {
            let (named, more) = first_few(&missing);
            return Err(CoreError::HostsNotFound {
                named: named.to_vec(),
                more,
            });
        }
        Ok(match rollout {
            Some(rollout) => plans::rolling(action, host_ids, &rollout),
            None => plans::batch(action, host_ids),
        })
    }

    pub(super) async fn create_and_drive(
        &self,
        plan: NewTask,
        caller: &Caller,
    ) -> Result<Task, CoreError> {
        let claim = self.engine.claim();
        let origin = TaskOrigin {
            creator: caller.name(),
            trace_id: caller.trace_id(),
            at: now_millis(),
            claim: &claim,
        };
        let fence = match self.store.create_task(&plan, &origin).await {
            Ok(fence) => fence,
            Err(StoreError::HostBusy { host_id, .. }) => return Err(self.busy(host_id).await),
            Err(e) => return Err(e.into()),
        };
        // Read back before the engine moves it on, so the caller sees the task as submitted.
        let id = fence.task_id;
        let task = self
            .store
            .get_task(id)
            .await?
            .ok_or(CoreError::TaskNotFound(id))?;
        self.engine.drive_created(fence, task.clone());
        Ok(task)
    }

    /// The refusal for a host some task holds, naming the task and what to do.
    pub(super) async fn busy(&self, host_id: i64) -> CoreError {
        match self.store.lock_holder(host_id).await {
            Ok(Some(holder)) => CoreError::HostBusy {
                host_id,
                task_id: holder.task_id,
                task_name: holder.name,
                task_status: holder.status,
                advice: if holder.status == TaskStatus::Failed {
                    "retry or roll back that task first"
                } else {
                    "wait for that task to finish"
                },
            },
            // Released in between: tell the caller the truth, that a retry will do.
            Ok(None) => CoreError::HostJustReleased(host_id),
            Err(e) => e.into(),
        }
    }
}

/// The longest keyword a host list is searched for: longer than any name (128) or
/// address, so a longer one could only be a mistake or an attack on the store.
pub const MAX_KEYWORD_CHARS: usize = 256;

/// A host list's filter as either face receives it: strings, unchecked. Each of
/// `statuses` may itself list several, separated by commas.
#[derive(Debug, Clone, Default)]
pub struct HostQuery<'a> {
    pub statuses: Vec<&'a str>,
    pub keyword: Option<&'a str>,
    pub agent_version: Option<&'a str>,
    pub sort: Option<&'a str>,
}

/// Checks a host list's filter once for both faces, naming the field that is wrong.
pub fn host_filter(q: &HostQuery<'_>) -> Result<HostFilter, CoreError> {
    let mut statuses = Vec::new();
    for given in &q.statuses {
        for word in given.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let status = word.parse::<HostStatus>().map_err(|_| {
                CoreError::invalid(
                    Field::HostStatus,
                    *given,
                    format!("{word:?} is not a host status: use NEW, ONLINE or OFFLINE, several separated by commas"),
                )
            })?;
            if !statuses.contains(&status) {
                statuses.push(status);
            }
        }
    }
    let keyword = match q.keyword.filter(|k| !k.is_empty()) {
        None => None,
        Some(k) if k.chars().count() > MAX_KEYWORD_CHARS => {
            return Err(CoreError::invalid(
                Field::Keyword,
                format!("{} characters", thousands(k.chars().count())),
                format!("must be at most {MAX_KEYWORD_CHARS} characters"),
            ));
        }
        // PostgreSQL stores no NUL in text, and no name or address holds a control character.
        Some(k) if k.chars().any(char::is_control) => {
            return Err(CoreError::invalid(
                Field::Keyword,
                k.escape_default().to_string(),
                "must not contain control characters",
            ));
        }
        Some(k) => Some(k.to_string()),
    };
    let agent_version = match q.agent_version.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            crate::model::package::check_version(v)
                .map_err(|m| CoreError::invalid(Field::HostAgentVersion, v, m))?;
            Some(v.to_string())
        }
    };
    let sort = match q.sort.filter(|s| !s.is_empty()) {
        None => HostSort::default(),
        Some(s) => s.parse().map_err(|e| {
            CoreError::invalid(
                Field::Sort,
                s,
                format!("{e}: use id, name, innerIpAddress, status, createTime or updateTime, optionally with ,asc or ,desc"),
            )
        })?,
    };
    Ok(HostFilter {
        statuses,
        keyword,
        agent_version,
        sort,
    })
}

/// What a batch's ids alone decide, before the store is asked which hosts exist: some,
/// not too many, each a positive id and named once.
fn check_batch(host_ids: &[i64]) -> Result<(), CoreError> {
    if host_ids.is_empty() {
        return Err(CoreError::invalid(
            Field::HostIds,
            "[]",
            "must name at least one host",
        ));
    }
    if host_ids.len() > MAX_BATCH_HOSTS {
        return Err(CoreError::invalid(
            Field::HostIds,
            format!("{} ids", thousands(host_ids.len())),
            format!(
                "names {} hosts; a batch may name at most {}",
                thousands(host_ids.len()),
                thousands(MAX_BATCH_HOSTS)
            ),
        ));
    }
    for &id in host_ids {
        check_id(Field::HostIds, id)?;
    }
    let mut seen = HashSet::new();
    let mut repeated = HashSet::new();
    let duplicates: Vec<i64> = host_ids
        .iter()
        .copied()
        .filter(|id| !seen.insert(*id) && repeated.insert(*id))
        .collect();
    if !duplicates.is_empty() {
        let (named, more) = first_few(&duplicates);
        return Err(CoreError::invalid(
            Field::HostIds,
            format!("{} ids", thousands(host_ids.len())),
            name_hosts(
                named,
                more,
                "is listed more than once",
                "are listed more than once",
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostSortKey;

    #[test]
    fn a_host_filter_takes_a_well_formed_agent_version() {
        let filter = |version: &str| {
            host_filter(&HostQuery {
                statuses: Vec::new(),
                keyword: None,
                agent_version: Some(version),
                sort: None,
            })
        };
        assert_eq!(
            filter("4.2.1+b7").expect("valid").agent_version.as_deref(),
            Some("4.2.1+b7")
        );
        assert_eq!(filter("").expect("no filter").agent_version, None);
        let refused = filter("../x").expect_err("refused").to_string();
        assert!(refused.starts_with("agent version: "), "{refused}");
    }

    #[test]
    fn a_host_filter_reads_statuses_both_ways_and_names_what_is_wrong() {
        let filter = |statuses: &[&str], keyword: Option<&str>, sort: Option<&str>| {
            host_filter(&HostQuery {
                statuses: statuses.to_vec(),
                keyword,
                agent_version: None,
                sort,
            })
        };
        assert_eq!(
            filter(&[], Some(""), Some("")).ok(),
            Some(HostFilter::default())
        );
        let both = filter(
            &["ONLINE, NEW", "OFFLINE", "NEW", ""],
            Some("Web_"),
            Some("name"),
        )
        .expect("valid");
        assert_eq!(
            both,
            HostFilter {
                statuses: vec![HostStatus::Online, HostStatus::New, HostStatus::Offline],
                keyword: Some("Web_".to_string()),
                agent_version: None,
                sort: HostSort {
                    key: HostSortKey::Name,
                    ascending: true,
                },
            }
        );
        let refused = |statuses: &[&str], keyword: Option<&str>, sort: Option<&str>| match filter(
            statuses, keyword, sort,
        ) {
            Err(CoreError::InvalidArgument {
                field, rejected, ..
            }) => (field, rejected),
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(
            refused(&["NEW", "ONLINE,online"], None, None),
            (Field::HostStatus, "ONLINE,online".to_string())
        );
        assert_eq!(
            refused(&[], None, Some("foo,asc")),
            (Field::Sort, "foo,asc".to_string())
        );
        assert_eq!(
            refused(&[], None, Some("name,sideways")),
            (Field::Sort, "name,sideways".to_string())
        );
        let long = "k".repeat(MAX_KEYWORD_CHARS + 1);
        assert_eq!(
            refused(&[], Some(&long), None),
            (Field::Keyword, "257 characters".to_string())
        );
        assert!(filter(&[], Some(&"é".repeat(MAX_KEYWORD_CHARS)), None).is_ok());
        assert_eq!(
            refused(&[], Some("a\0b"), None),
            (Field::Keyword, "a\\u{0}b".to_string())
        );
        let message = filter(&[], None, Some("name,sideways"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "sort: unknown sort direction \"sideways\": use id, name, innerIpAddress, status, \
             createTime or updateTime, optionally with ,asc or ,desc"
        );
    }

    #[test]
    fn a_batch_is_refused_for_its_ids_alone_before_the_store_is_asked() {
        let refusal = |ids: &[i64]| check_batch(ids).map_err(|e| e.to_string());
        assert_eq!(refusal(&[3, 1, 2]), Ok(()));
        assert_eq!(
            refusal(&[]),
            Err("host ids: must name at least one host".to_string())
        );
        assert_eq!(
            refusal(&[1, -3]),
            Err("host ids: must be a positive id".to_string())
        );
        assert_eq!(
            refusal(&[1, 2, 1, 3, 2, 2]),
            Err("host ids: hosts 1, 2 are listed more than once".to_string())
        );
        let too_many: Vec<i64> = (1..=MAX_BATCH_HOSTS as i64 + 1).collect();
        assert_eq!(
            refusal(&too_many),
            Err("host ids: names 10,001 hosts; a batch may name at most 10,000".to_string())
        );
    }
}
