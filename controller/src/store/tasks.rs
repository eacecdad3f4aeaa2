//! Tasks, their subtasks and edges, subtask logs, and the host locks tasks hold.
//!
//! The engine calls one method per transition and waits for it before acting, so the
//! store always holds at least as much progress as the agents have seen.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::events::{self, NewEvent};
use super::leases::{self, Claim, Fence};
use super::{Store, StoreError, get_word};
use crate::model::{
    Change, Millis, NewTask, Operation, Page, PageRequest, Step, Subtask, SubtaskLogLine,
    SubtaskStatus, Task, TaskFilter, TaskStatus,
};

const TASK_COLUMNS: &str = "id, name, creator, executor, host_id, operation, status, \
     prohibit_rollback, context, trace_id, start_time, finish_time, rollout, paused, canary_held";

const SUBTASK_COLUMNS: &str = "id, task_id, series_id, name, description, class_name, step, \
     host_id, operation, status, parallel_idx, timeout_secs, run_time, executor, start_time, \
     finish_time, prohibit_rollback";

/// Rows per multi-row INSERT: ten parameters a row stays far below both dialects' limits.
const ROWS_PER_INSERT: usize = 200;

/// One line of a subtask's log, on its way to the store; written only while `fence`
/// still holds the task.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub fence: Fence,
    pub subtask_id: i64,
    pub trace_id: String,
    pub at: Millis,
    pub line: String,
}

/// Who holds a host, for refusals that name the holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub task_id: i64,
    pub name: String,
    pub status: TaskStatus,
}

/// Who is creating a task, and under which request.
#[derive(Debug, Clone)]
pub struct TaskOrigin<'a> {
    pub creator: &'a str,
    pub trace_id: &'a str,
    pub at: Millis,
    /// The controller that will drive the task, and so its executor.
    pub claim: &'a Claim,
}

impl Store {
    /// Creates the task and takes every host's lock in one transaction: either all of it
    /// exists afterwards, or nothing does and the first busy host is named.
    pub async fn create_task(
        &self,
        plan: &NewTask,
        origin: &TaskOrigin<'_>,
    ) -> Result<Fence, StoreError> {
        let context = serde_json::to_string(&plan.context).map_err(|e| StoreError::Corrupt {
            table: "tasks",
            detail: e.to_string(),
        })?;
        let rollout = plan
            .rollout
            .map(|r| serde_json::to_string(&r))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                table: "tasks",
                detail: e.to_string(),
            })?;
        let mut tx = self.begin_write().await?;
        let task_id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (name, creator, executor, host_id, operation, status, \
             prohibit_rollback, context, trace_id, start_time, rollout, agent_version) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(&plan.name)
        .bind(origin.creator)
        .bind(&*origin.claim.executor)
        .bind(plan.host_id)
        .bind(Operation::Execute.as_str())
        .bind(TaskStatus::Running.as_str())
        .bind(&context)
        .bind(origin.trace_id)
        .bind(origin.at)
        .bind(rollout)
        .bind(
            plan.context
                .string_map
                .get(crate::model::ocp::AGENT_VERSION),
        )
        .fetch_one(&mut *tx)
        .await?;
        // Many rows per statement, in id order: two submissions racing for overlapping
        // hosts on PostgreSQL then wait on each other instead of deadlocking.
        let mut hosts = plan.host_ids.clone();
        hosts.sort_unstable();
        hosts.dedup();
        let mut taken = 0;
        for chunk in hosts.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO host_locks (host_id, task_id) VALUES {} \
                 ON CONFLICT (host_id) DO NOTHING",
                super::value_rows(chunk.len(), 2)
            );
            let mut insert = super::sized(&sql);
            for &host_id in chunk {
                insert = insert.bind(host_id).bind(task_id);
            }
            taken += insert.execute(&mut *tx).await?.rows_affected();
        }
        if taken != hosts.len() as u64 {
            let locks: HashMap<i64, i64> =
                sqlx::query_as("SELECT host_id, task_id FROM host_locks")
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
            tx.rollback().await?;
            // The first host, as the request named them, that this task could not lock:
            // held by another task, or (on PostgreSQL) released by it just now, which
            // the caller tells apart by asking again.
            let busy = plan
                .host_ids
                .iter()
                .map(|h| (*h, locks.get(h).copied()))
                .find(|(_, holder)| *holder != Some(task_id));
            let (host_id, holder) = busy.unwrap_or((plan.host_ids[0], None));
            return Err(StoreError::HostBusy {
                host_id,
                task_id: holder.unwrap_or_default(),
            });
        }
        // The rows go in as one JSON array the database unpacks itself: a 1,000-host
        // batch is 5,004 subtasks and 8,000 edges, which took 350 ms as bound
        // parameters of multi-row VALUES and take a few here.
        let nodes: Vec<serde_json::Value> = plan
            .nodes
            .iter()
            .map(|node| {
                serde_json::json!([
                    node.series_id,
                    node.step.name(),
                    node.step.class_name(),
                    node.step.as_str(),
                    node.host_id,
                    Operation::Execute.as_str(),
                    node.status.as_str(),
                    node.parallel_idx,
                    node.timeout_secs
                ])
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO subtasks (task_id, series_id, name, description, class_name, step, \
             host_id, operation, status, parallel_idx, timeout_secs, run_time, prohibit_rollback) \
             SELECT $1, CAST(r.value ->> 0 AS BIGINT), r.value ->> 1, r.value ->> 1, \
             r.value ->> 2, r.value ->> 3, CAST(r.value ->> 4 AS BIGINT), r.value ->> 5, \
             r.value ->> 6, CAST(r.value ->> 7 AS BIGINT), CAST(r.value ->> 8 AS BIGINT), 1, 0 \
             FROM {} ORDER BY r.key",
            self.json_rows("$2")
        ))
        .bind(task_id)
        .bind(serde_json::Value::Array(nodes).to_string())
        .execute(&mut *tx)
        .await?;
        // Ids grow in insertion order within the task, on both dialects.
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM subtasks WHERE task_id = $1 ORDER BY id")
                .bind(task_id)
                .fetch_all(&mut *tx)
                .await?;
        if ids.len() != plan.nodes.len() {
            return Err(StoreError::Corrupt {
                table: "subtasks",
                detail: format!(
                    "task {task_id}: {} subtasks written, {} read back",
                    plan.nodes.len(),
                    ids.len()
                ),
            });
        }
        events::insert(
            &mut tx,
            task_id,
            origin.at,
            NewEvent {
                change: Change::Task(TaskStatus::Running),
                operation: Operation::Execute,
                message: &format!("created by {}", origin.creator),
            },
        )
        .await?;
        let edges: Vec<[i64; 2]> = plan
            .edges
            .iter()
            .map(|&(up, down)| [ids[up], ids[down]])
            .collect();
        sqlx::query(&format!(
            "INSERT INTO subtask_edges (task_id, upstream_id, downstream_id) \
             SELECT $1, CAST(r.value ->> 0 AS BIGINT), CAST(r.value ->> 1 AS BIGINT) FROM {}",
            self.json_rows("$2")
        ))
        .bind(task_id)
        .bind(
            serde_json::to_string(&edges).map_err(|e| StoreError::Corrupt {
                table: "subtask_edges",
                detail: e.to_string(),
            })?,
        )
        .execute(&mut *tx)
        .await?;
        let fence = leases::claim(&mut tx, task_id, origin.claim).await?;
        self.commit(tx, task_id).await?;
        Ok(fence)
    }

    /// The task with its subtasks (in id order) and their edges.
    pub async fn get_task(&self, id: i64) -> Result<Option<Task>, StoreError> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS}, (SELECT MAX(e.id) FROM task_events e WHERE e.task_id = tasks.id) \
             AS last_event_seq FROM tasks WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut task = task_from_row(&row)?;
        task.last_event_seq = row
            .try_get::<Option<i64>, _>("last_event_seq")?
            .unwrap_or(0);
        let mut subtasks: Vec<Subtask> = sqlx::query(&format!(
            "SELECT {SUBTASK_COLUMNS} FROM subtasks WHERE task_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(subtask_from_row)
        .collect::<Result<_, _>>()?;
        let index: HashMap<i64, usize> = subtasks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let edges = sqlx::query(
            "SELECT upstream_id, downstream_id FROM subtask_edges WHERE task_id = $1 \
             ORDER BY upstream_id, downstream_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        for edge in &edges {
            let up: i64 = edge.try_get("upstream_id")?;
            let down: i64 = edge.try_get("downstream_id")?;
            match (index.get(&up), index.get(&down)) {
                (Some(&u), Some(&d)) => {
                    subtasks[u].downstreams.push(down);
                    subtasks[d].upstreams.push(up);
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        table: "subtask_edges",
                        detail: format!("edge {up}->{down} of task {id} names a missing subtask"),
                    });
                }
            }
        }
        task.subtasks = subtasks;
        Ok(Some(task))
    }

    /// A task's status alone, for watchers deciding whether more can come.
    pub async fn task_status(&self, id: i64) -> Result<Option<TaskStatus>, StoreError> {
        sqlx::query("SELECT status FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| get_word(&row, "tasks", "status"))
            .transpose()
    }

    /// Tasks without their subtasks, in the filter's order (newest first by default).
    pub async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        let mut clauses = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.status.is_some() {
            clauses.push(format!("status = {}", next()));
        }
        if filter.name.is_some() {
            clauses.push(format!("name = {}", next()));
        }
        if filter.host_id.is_some() {
            clauses.push(format!(
                "EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = tasks.id AND s.host_id = {})",
                next()
            ));
        }
        if filter.created_from.is_some() {
            clauses.push(format!("start_time >= {}", next()));
        }
        if filter.created_to.is_some() {
            clauses.push(format!("start_time <= {}", next()));
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let (limit, offset) = (next(), next());
        let count_sql = format!("SELECT COUNT(*) FROM tasks {filter_sql}");
        let direction = if filter.sort.ascending { "ASC" } else { "DESC" };
        let page_sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks {filter_sql} ORDER BY {} {direction}, id {direction} \
             LIMIT {limit} OFFSET {offset}",
            filter.sort.key.column()
        );
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        let mut rows = sqlx::query(&page_sql);
        if let Some(status) = filter.status {
            count = count.bind(status.as_str());
            rows = rows.bind(status.as_str());
        }
        if let Some(name) = &filter.name {
            count = count.bind(name.clone());
            rows = rows.bind(name.clone());
        }
        for value in [filter.host_id, filter.created_from, filter.created_to]
            .into_iter()
            .flatten()
        {
            count = count.bind(value);
            rows = rows.bind(value);
        }
        self.fetch_page(count, rows, page, task_from_row).await
    }

    pub async fn lock_holder(&self, host_id: i64) -> Result<Option<LockHolder>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT t.id, t.name, t.status FROM host_locks l JOIN tasks t ON t.id = l.task_id \
             WHERE l.host_id = $1",
        )
        .bind(host_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(LockHolder {
            task_id: row.try_get("id")?,
            name: row.try_get("name")?,
            status: get_word(&row, "tasks", "status")?,
        }))
    }

    /// A subtask's status alone, for a cancel that waits for the step to stop.
    pub async fn subtask_status(
        &self,
        subtask_id: i64,
    ) -> Result<Option<SubtaskStatus>, StoreError> {
        let row = sqlx::query("SELECT status FROM subtasks WHERE id = $1")
            .bind(subtask_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| get_word(&row, "subtasks", "status"))
            .transpose()
    }

    /// Appends log lines of any subtasks, many rows per statement, in one transaction.
    /// Lines of a task whose lease was lost meanwhile are dropped: a controller that
    /// was paused and woke up after a takeover adds nothing to the logs either.
    pub async fn append_logs(&self, lines: &[LogEntry]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut fences: Vec<&Fence> = lines.iter().map(|l| &l.fence).collect();
        fences.sort_by_key(|f| (f.task_id, f.generation));
        fences.dedup();
        let mut fenced = Vec::new();
        for fence in fences {
            match leases::fence(&mut tx, fence).await {
                Ok(()) => {}
                Err(StoreError::Fenced { .. }) => fenced.push(fence.clone()),
                Err(e) => return Err(e),
            }
        }
        let kept: Vec<LogEntry> = lines
            .iter()
            .filter(|l| !fenced.contains(&l.fence))
            .cloned()
            .collect();
        insert_logs(&mut tx, &kept).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn subtask_log(&self, subtask_id: i64) -> Result<Vec<SubtaskLogLine>, StoreError> {
        sqlx::query("SELECT at, trace_id, line FROM subtask_logs WHERE subtask_id = $1 ORDER BY id")
            .bind(subtask_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(SubtaskLogLine {
                    at: row.try_get("at")?,
                    trace_id: row.try_get("trace_id")?,
                    line: row.try_get("line")?,
                })
            })
            .collect()
    }
}

pub(super) fn task_from_row(row: &AnyRow) -> Result<Task, StoreError> {
    let context: String = row.try_get("context")?;
    let rollout: Option<String> = row.try_get("rollout")?;
    let rollout = rollout
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            table: "tasks",
            detail: format!("rollout: {e}"),
        })?;
    Ok(Task {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        creator: row.try_get("creator")?,
        executor: row.try_get("executor")?,
        host_id: row.try_get("host_id")?,
        operation: get_word(row, "tasks", "operation")?,
        status: get_word(row, "tasks", "status")?,
        prohibit_rollback: row.try_get::<i64, _>("prohibit_rollback")? != 0,
        context: serde_json::from_str(&context).map_err(|e| StoreError::Corrupt {
            table: "tasks",
            detail: format!("context: {e}"),
        })?,
        trace_id: row.try_get("trace_id")?,
        start_time: row.try_get("start_time")?,
        finish_time: row.try_get("finish_time")?,
        rollout,
        paused: row.try_get::<i64, _>("paused")? != 0,
        canary_held: row.try_get::<i64, _>("canary_held")? != 0,
        last_event_seq: 0,
        subtasks: Vec::new(),
    })
}

fn subtask_from_row(row: &AnyRow) -> Result<Subtask, StoreError> {
    let narrow = |column: &str| -> Result<i32, StoreError> {
        let v: i64 = row.try_get(column)?;
        i32::try_from(v).map_err(|_| StoreError::Corrupt {
            table: "subtasks",
            detail: format!("{column} {v}"),
        })
    };
    let step: Step = get_word(row, "subtasks", "step")?;
    Ok(Subtask {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        series_id: narrow("series_id")?,
        step,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        class_name: row.try_get("class_name")?,
        host_id: row.try_get("host_id")?,
        operation: get_word(row, "subtasks", "operation")?,
        status: get_word(row, "subtasks", "status")?,
        parallel_idx: narrow("parallel_idx")?,
        timeout_secs: row.try_get("timeout_secs")?,
        run_time: narrow("run_time")?,
        executor: row.try_get("executor")?,
        start_time: row.try_get("start_time")?,
        finish_time: row.try_get("finish_time")?,
        prohibit_rollback: row.try_get::<i64, _>("prohibit_rollback")? != 0,
        upstreams: Vec::new(),
        downstreams: Vec::new(),
    })
}

/// One statement per 200 lines.
pub(super) async fn insert_logs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    lines: &[LogEntry],
) -> Result<(), StoreError> {
    for chunk in lines.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO subtask_logs (task_id, subtask_id, at, trace_id, line) VALUES {}",
            super::value_rows(chunk.len(), 5)
        );
        let mut insert = super::sized(&sql);
        for l in chunk {
            insert = insert
                .bind(l.fence.task_id)
                .bind(l.subtask_id)
                .bind(l.at)
                .bind(l.trace_id.as_str())
                .bind(l.line.as_str());
        }
        insert.execute(&mut **tx).await?;
    }
    Ok(())
}
