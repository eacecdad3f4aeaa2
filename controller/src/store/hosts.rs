//! Hosts, what their agents said about themselves, and their processes' stable ids.

use std::collections::HashSet;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::leases::{self, Fence};
use super::{Dialect, Store, StoreError, flag, get_word};
use crate::model::{
    AgentProcess, AgentSummary, Host, HostFilter, HostStatus, Millis, NewHost, Page, PageRequest,
    ProcessSnapshot, now_millis,
};

const HOST_COLUMNS: &str = "id, name, inner_ip_address, agent_port, status, last_available_time, \
     agent_version, install_home, log_home, agent_status, create_time, update_time, status_reason";

const PROCESS_COLUMNS: &str = "id, host_id, alias, pid, user_name, start_command, ports, \
     elapsed_time, last_active_time, status, operable, log_file_pattern, create_time, update_time";

impl Store {
    pub async fn insert_host(&self, new: &NewHost) -> Result<Host, StoreError> {
        let now = now_millis();
        let inserted = sqlx::query(&format!(
            "INSERT INTO hosts (name, inner_ip_address, agent_port, status, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (inner_ip_address, agent_port) DO NOTHING RETURNING {HOST_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.inner_ip_address)
        .bind(i64::from(new.agent_port))
        .bind(HostStatus::New.as_str())
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        match inserted {
            Some(row) => host_from_row(&row),
            None => {
                let existing: i64 = sqlx::query_scalar(
                    "SELECT id FROM hosts WHERE inner_ip_address = $1 AND agent_port = $2",
                )
                .bind(&new.inner_ip_address)
                .bind(i64::from(new.agent_port))
                .fetch_one(&self.pool)
                .await?;
                Err(StoreError::HostExists {
                    inner_ip_address: new.inner_ip_address.clone(),
                    agent_port: new.agent_port,
                    existing_id: existing,
                })
            }
        }
    }

    pub async fn get_host(&self, id: i64) -> Result<Option<Host>, StoreError> {
        sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(host_from_row)
            .transpose()
    }

    /// Which of `ids` name a host, in one query however many there are: a batch is
    /// checked at the cost of one statement, not one per id. The ids travel as one
    /// text parameter (a PostgreSQL array literal, a JSON array for SQLite), so no
    /// limit on bound variables applies.
    pub async fn existing_host_ids(&self, ids: &[i64]) -> Result<HashSet<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let (sql, list) = match self.dialect {
            Dialect::Postgres => (
                "SELECT id FROM hosts WHERE id = ANY($1::bigint[])",
                format!("{{{list}}}"),
            ),
            Dialect::Sqlite => (
                "SELECT id FROM hosts WHERE id IN (SELECT value FROM json_each($1))",
                format!("[{list}]"),
            ),
        };
        Ok(sqlx::query_scalar::<_, i64>(sql)
            .bind(list)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect())
    }

    pub async fn all_hosts(&self) -> Result<Vec<Host>, StoreError> {
        sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(host_from_row)
            .collect()
    }

    /// The hosts `filter` lets through, in its order. The keyword is matched literally
    /// (`%`, `_` and `\` are escaped) and ASCII letters in either case, with text
    /// compared by its bytes, so that SQLite and PostgreSQL answer alike whatever the
    /// latter's locale.
    pub async fn list_hosts(
        &self,
        filter: &HostFilter,
        page: PageRequest,
    ) -> Result<Page<Host>, StoreError> {
        let bytewise = |column: &str| match self.dialect {
            Dialect::Postgres => format!("{column} COLLATE \"C\""),
            Dialect::Sqlite => column.to_string(),
        };
        let mut clauses = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if !filter.statuses.is_empty() {
            let params: Vec<String> = filter.statuses.iter().map(|_| next()).collect();
            clauses.push(format!("status IN ({})", params.join(", ")));
        }
        let pattern = filter.keyword.as_deref().map(like_pattern);
        if pattern.is_some() {
            let p = next();
            clauses.push(format!(
                "(lower({}) LIKE {p} ESCAPE '\\' OR lower({}) LIKE {p} ESCAPE '\\')",
                bytewise("name"),
                bytewise("inner_ip_address")
            ));
        }
        if filter.agent_version.is_some() {
            clauses.push(format!("agent_version = {}", next()));
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let (limit, offset) = (next(), next());
        let direction = if filter.sort.ascending { "ASC" } else { "DESC" };
        let key = filter.sort.key;
        let order = if key.is_text() {
            bytewise(key.column())
        } else {
            key.column().to_string()
        };
        let count_sql = format!("SELECT COUNT(*) FROM hosts {filter_sql}");
        let page_sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts {filter_sql} ORDER BY {order} {direction}, id {direction} \
             LIMIT {limit} OFFSET {offset}"
        );
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        let mut rows = sqlx::query(&page_sql);
        for status in &filter.statuses {
            count = count.bind(status.as_str());
            rows = rows.bind(status.as_str());
        }
        if let Some(pattern) = pattern {
            count = count.bind(pattern.clone());
            rows = rows.bind(pattern);
        }
        if let Some(version) = &filter.agent_version {
            count = count.bind(version.clone());
            rows = rows.bind(version.clone());
        }
        self.fetch_page(count, rows, page, host_from_row).await
    }

    /// Deletes a host that no unfinished task holds; its processes go with it.
    pub async fn delete_host(&self, id: i64) -> Result<Option<Host>, StoreError> {
        let mut tx = self.begin_write().await?;
        let holder: Option<i64> =
            sqlx::query_scalar("SELECT task_id FROM host_locks WHERE host_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(task_id) = holder {
            return Err(StoreError::HostBusy {
                host_id: id,
                task_id,
            });
        }
        let host = sqlx::query(&format!(
            "DELETE FROM hosts WHERE id = $1 RETURNING {HOST_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(host_from_row)
        .transpose()?;
        sqlx::query("DELETE FROM agent_processes WHERE host_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(host)
    }

    /// Records a heartbeat's outcome. `available` is the moment the agent last answered.
    pub async fn set_host_status(
        &self,
        id: i64,
        status: HostStatus,
        available: Option<Millis>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET status = $1, \
             last_available_time = COALESCE($2, last_available_time), update_time = $3 \
             WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(available)
        .bind(now_millis())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Why the last check of the host's agent failed; written only when it changed, so
    /// a host that stays unreachable costs no write per round.
    pub async fn set_host_reason(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE hosts SET status_reason = $1 \
             WHERE id = $2 AND (status_reason IS NULL OR status_reason <> $1)",
        )
        .bind(reason)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// A heartbeat's answer: the host is ONLINE as of `at`, with what its agent says of itself.
    pub async fn record_heartbeat(
        &self,
        id: i64,
        agent: &AgentSummary,
        at: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        record_online(&mut tx, id, agent, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A full report of the host's agent, recorded in one transaction: the host ONLINE,
    /// its agent's summary, and its process inventory replaced (each alias keeps its id).
    /// `release_for` also lets go of the host for that task, as a Finish step does, and
    /// only while its lease holds.
    /// Returns the inventory in alias order.
    pub async fn record_inventory(
        &self,
        host_id: i64,
        agent: &AgentSummary,
        snapshots: &[ProcessSnapshot],
        release_for: Option<&Fence>,
    ) -> Result<Vec<AgentProcess>, StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        // A task's Finish step: only while the task is still this controller's, so a
        // controller woken after a takeover neither frees the host nor rewrites pids.
        if let Some(fence) = release_for {
            leases::fence(&mut tx, fence).await?;
        }
        record_online(&mut tx, host_id, agent, now).await?;
        for s in snapshots {
            upsert_process(&mut tx, host_id, s, now).await?;
        }
        let rows = sqlx::query(&format!(
            "SELECT {PROCESS_COLUMNS} FROM agent_processes WHERE host_id = $1 ORDER BY alias"
        ))
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut kept = Vec::new();
        for row in &rows {
            let process = process_from_row(row)?;
            if snapshots.iter().any(|s| s.alias == process.snapshot.alias) {
                kept.push(process);
            } else {
                // The agent's config no longer names it.
                sqlx::query("DELETE FROM agent_processes WHERE id = $1")
                    .bind(process.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(fence) = release_for {
            sqlx::query("DELETE FROM host_locks WHERE task_id = $1 AND host_id = $2")
                .bind(fence.task_id)
                .bind(host_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(kept)
    }

    /// Records one process the agent just acted on and returns it with its stable id.
    pub async fn record_process(
        &self,
        host_id: i64,
        snapshot: &ProcessSnapshot,
    ) -> Result<AgentProcess, StoreError> {
        let mut tx = self.begin_write().await?;
        upsert_process(&mut tx, host_id, snapshot, now_millis()).await?;
        let row = sqlx::query(&format!(
            "SELECT {PROCESS_COLUMNS} FROM agent_processes WHERE host_id = $1 AND alias = $2"
        ))
        .bind(host_id)
        .bind(&snapshot.alias)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        process_from_row(&row)
    }

    pub async fn list_processes(&self, host_id: i64) -> Result<Vec<AgentProcess>, StoreError> {
        sqlx::query(&format!(
            "SELECT {PROCESS_COLUMNS} FROM agent_processes WHERE host_id = $1 ORDER BY alias"
        ))
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(process_from_row)
        .collect()
    }

    pub async fn get_process(
        &self,
        host_id: i64,
        id: i64,
    ) -> Result<Option<AgentProcess>, StoreError> {
        sqlx::query(&format!(
            "SELECT {PROCESS_COLUMNS} FROM agent_processes WHERE host_id = $1 AND id = $2"
        ))
        .bind(host_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(process_from_row)
        .transpose()
    }
}

async fn record_online(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    agent: &AgentSummary,
    at: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE hosts SET status = $1, last_available_time = $2, agent_version = $3, \
         install_home = $4, log_home = $5, agent_status = $6, update_time = $2, \
         status_reason = NULL WHERE id = $7",
    )
    .bind(HostStatus::Online.as_str())
    .bind(at)
    .bind(&agent.version)
    .bind(&agent.install_home)
    .bind(&agent.log_home)
    .bind(&agent.status)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts or refreshes one process, keeping the id its (host, alias) already has.
async fn upsert_process(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    host_id: i64,
    s: &ProcessSnapshot,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_processes (host_id, alias, pid, user_name, start_command, ports, \
         elapsed_time, last_active_time, status, operable, log_file_pattern, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
         ON CONFLICT (host_id, alias) DO UPDATE SET pid = excluded.pid, \
         user_name = excluded.user_name, start_command = excluded.start_command, \
         ports = excluded.ports, elapsed_time = excluded.elapsed_time, \
         last_active_time = COALESCE(excluded.last_active_time, agent_processes.last_active_time), \
         status = excluded.status, operable = excluded.operable, \
         log_file_pattern = excluded.log_file_pattern, update_time = excluded.update_time",
    )
    .bind(host_id)
    .bind(&s.alias)
    .bind(s.pid)
    .bind(&s.user)
    .bind(&s.start_command)
    .bind(&s.ports)
    .bind(s.elapsed_time)
    .bind(s.last_active_time)
    .bind(&s.status)
    .bind(flag(s.operable))
    .bind(&s.log_file_pattern)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn host_from_row(row: &AnyRow) -> Result<Host, StoreError> {
    let port: i64 = row.try_get("agent_port")?;
    Ok(Host {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        inner_ip_address: row.try_get("inner_ip_address")?,
        agent_port: u16::try_from(port).map_err(|_| StoreError::Corrupt {
            table: "hosts",
            detail: format!("agent_port {port}"),
        })?,
        status: get_word(row, "hosts", "status")?,
        last_available_time: row.try_get("last_available_time")?,
        agent: AgentSummary {
            version: row.try_get("agent_version")?,
            install_home: row.try_get("install_home")?,
            log_home: row.try_get("log_home")?,
            status: row.try_get("agent_status")?,
        },
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        status_reason: row.try_get("status_reason")?,
    })
}

fn process_from_row(row: &AnyRow) -> Result<AgentProcess, StoreError> {
    Ok(AgentProcess {
        id: row.try_get("id")?,
        host_id: row.try_get("host_id")?,
        snapshot: ProcessSnapshot {
            alias: row.try_get("alias")?,
            pid: row.try_get("pid")?,
            user: row.try_get("user_name")?,
            start_command: row.try_get("start_command")?,
            ports: row.try_get("ports")?,
            elapsed_time: row.try_get("elapsed_time")?,
            last_active_time: row.try_get("last_active_time")?,
            status: row.try_get("status")?,
            operable: row.try_get::<i64, _>("operable")? != 0,
            log_file_pattern: row.try_get("log_file_pattern")?,
        },
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

/// A LIKE pattern that finds `keyword` anywhere, its wildcards and escape character taken
/// literally, its ASCII letters lowered as the column is.
fn like_pattern(keyword: &str) -> String {
    let mut pattern = String::with_capacity(keyword.len() + 2);
    pattern.push('%');
    for c in keyword.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    pattern
}
