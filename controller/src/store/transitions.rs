//! Every change of a task's or subtask's state after creation: the engine's progress and
//! the operator's retry, skip, rollback and cancel.
//!
//! Each method is one transaction that also records its events. Operator operations
//! lock the task's row first, so two racing requests cannot both succeed, then check
//! the state they find against [`rules`], the same rule that tells clients which
//! operations a task and its subtasks allow.

use sqlx::Row;

use super::events::{self, NewEvent};
use super::leases::{self, Claim, Fence};
use super::rules::{self, SubtaskOperation, TaskOperation, TaskState, Unfit};
use super::{LogEntry, Store, StoreError, Tx, get_word};
use crate::model::{Change, Millis, Operation, SubtaskStatus, TaskStatus};

/// Ids per `IN (...)` list: far below both dialects' parameter limits.
const IDS_PER_UPDATE: usize = 500;

/// `$first, $first+1, ...`, `n` of them.
fn params(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Subtask ids grouped by operation, in the order each operation first appears.
fn by_operation(items: impl Iterator<Item = (i64, Operation)>) -> Vec<(Operation, Vec<i64>)> {
    let mut groups: Vec<(Operation, Vec<i64>)> = Vec::new();
    for (id, operation) in items {
        match groups.iter_mut().find(|(op, _)| *op == operation) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((operation, vec![id])),
        }
    }
    groups
}

/// Why an operator's operation does not apply to the task as it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransitionRefused {
    #[error("task {task_id} is {status} (operation {operation}): {action} needs a {needed} task")]
    TaskState {
        task_id: i64,
        status: TaskStatus,
        operation: Operation,
        action: &'static str,
        needed: &'static str,
    },
    #[error(
        "subtask {subtask_id} of task {task_id} is {status} (operation {operation}): {action} needs a {needed} subtask"
    )]
    SubtaskState {
        task_id: i64,
        subtask_id: i64,
        status: SubtaskStatus,
        operation: Operation,
        action: &'static str,
        needed: &'static str,
    },
    #[error("task {0} does not exist")]
    NoTask(i64),
    #[error("task {task_id} has no subtask {subtask_id}")]
    NoSubtask { task_id: i64, subtask_id: i64 },
    #[error(
        "task {task_id} is not a rolling task: {action} applies to tasks created with a rollout"
    )]
    NotRolling { task_id: i64, action: &'static str },
    #[error("task {0} was created with prohibit_rollback: it cannot be rolled back")]
    RollbackProhibited(i64),
}

/// How one subtask's run ended, as the engine records it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: i64,
    pub status: SubtaskStatus,
    pub operation: Operation,
    /// Written to the subtask's log with the transition, e.g. why it failed.
    pub log: Option<String>,
}

async fn event(
    tx: &mut Tx<'_>,
    task_id: i64,
    change: Change,
    operation: Operation,
    at: Millis,
    message: &str,
) -> Result<(), StoreError> {
    events::insert(
        tx,
        task_id,
        at,
        NewEvent {
            change,
            operation,
            message,
        },
    )
    .await
}

impl Store {
    pub async fn running_task_ids(&self) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM tasks WHERE status = $1 ORDER BY id")
                .bind(TaskStatus::Running.as_str())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// After a crash: a subtask that was running runs again, as a new attempt; one that
    /// was being cancelled counts as cancelled, since its agent call is gone anyway.
    pub async fn requeue_interrupted(&self, fence: &Fence, at: Millis) -> Result<u64, StoreError> {
        let task_id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        let rows = sqlx::query(
            "SELECT id, status, operation FROM subtasks WHERE task_id = $1 AND status IN ($2, $3)",
        )
        .bind(task_id)
        .bind(SubtaskStatus::Running.as_str())
        .bind(SubtaskStatus::Canceling.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let status: SubtaskStatus = get_word(row, "subtasks", "status")?;
            let operation: Operation = get_word(row, "subtasks", "operation")?;
            if status == SubtaskStatus::Canceling {
                sqlx::query("UPDATE subtasks SET status = $1, operation = $2, finish_time = $3 WHERE id = $4")
                    .bind(SubtaskStatus::Failed.as_str())
                    .bind(Operation::Cancel.as_str())
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let message = "cancelled: the controller stopped while cancelling";
                event(
                    &mut tx,
                    task_id,
                    Change::Subtask(id, SubtaskStatus::Failed),
                    Operation::Cancel,
                    at,
                    message,
                )
                .await?;
            } else {
                sqlx::query(
                    "UPDATE subtasks SET status = $1, run_time = run_time + 1, start_time = NULL WHERE id = $2",
                )
                .bind(SubtaskStatus::Ready.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let message = "queued again: the controller stopped while it ran";
                event(
                    &mut tx,
                    task_id,
                    Change::Subtask(id, SubtaskStatus::Ready),
                    operation,
                    at,
                    message,
                )
                .await?;
            }
        }
        if rows.is_empty() {
            tx.commit().await?;
        } else {
            self.commit(tx, task_id).await?;
        }
        Ok(rows.len() as u64)
    }

    /// Marks subtasks RUNNING under `operation` (EXECUTE, RETRY or ROLLBACK), in one
    /// transaction: a stage of many hosts starts with one commit, not one per host.
    pub async fn start_subtasks(
        &self,
        fence: &Fence,
        starts: &[(i64, Operation)],
        executor: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let task_id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        for (operation, ids) in by_operation(starts.iter().copied()) {
            for chunk in ids.chunks(IDS_PER_UPDATE) {
                let sql = format!(
                    "UPDATE subtasks SET status = $1, operation = $2, executor = $3, \
                     start_time = $4, finish_time = NULL WHERE id IN ({})",
                    params(5, chunk.len())
                );
                let mut update = super::sized(&sql)
                    .bind(SubtaskStatus::Running.as_str())
                    .bind(operation.as_str())
                    .bind(executor)
                    .bind(at);
                for &id in chunk {
                    update = update.bind(id);
                }
                update.execute(&mut *tx).await?;
            }
        }
        let started: Vec<NewEvent> = starts
            .iter()
            .map(|&(id, operation)| NewEvent {
                change: Change::Subtask(id, SubtaskStatus::Running),
                operation,
                message: "",
            })
            .collect();
        events::insert_many(&mut tx, task_id, at, &started).await?;
        self.commit(tx, task_id).await
    }

    /// Records finished subtasks, and the downstreams they made READY, in one
    /// transaction, so the store never shows a success without its consequences.
    /// Statements are grouped (one update per status and operation, one insert per
    /// 200 rows), so a stage of 1,000 hosts costs a few round trips.
    pub async fn record_outcomes(
        &self,
        fence: &Fence,
        trace_id: &str,
        at: Millis,
        outcomes: &[Outcome],
        ready: &[(i64, Operation)],
    ) -> Result<(), StoreError> {
        let task_id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        let mut groups: Vec<((SubtaskStatus, Operation), Vec<i64>)> = Vec::new();
        for o in outcomes {
            match groups
                .iter_mut()
                .find(|(key, _)| *key == (o.status, o.operation))
            {
                Some((_, ids)) => ids.push(o.id),
                None => groups.push(((o.status, o.operation), vec![o.id])),
            }
        }
        for ((status, operation), ids) in &groups {
            for chunk in ids.chunks(IDS_PER_UPDATE) {
                let sql = format!(
                    "UPDATE subtasks SET status = $1, operation = $2, finish_time = $3 \
                     WHERE id IN ({})",
                    params(4, chunk.len())
                );
                let mut update = super::sized(&sql)
                    .bind(status.as_str())
                    .bind(operation.as_str())
                    .bind(at);
                for &id in chunk {
                    update = update.bind(id);
                }
                update.execute(&mut *tx).await?;
            }
        }
        let logged: Vec<LogEntry> = outcomes
            .iter()
            .filter_map(|o| {
                Some(LogEntry {
                    fence: fence.clone(),
                    subtask_id: o.id,
                    trace_id: trace_id.to_string(),
                    at,
                    line: o.log.clone()?,
                })
            })
            .collect();
        super::tasks::insert_logs(&mut tx, &logged).await?;
        for (_, ids) in by_operation(ready.iter().copied()) {
            for chunk in ids.chunks(IDS_PER_UPDATE) {
                let sql = format!(
                    "UPDATE subtasks SET status = $1 WHERE status = $2 AND id IN ({})",
                    params(3, chunk.len())
                );
                let mut update = super::sized(&sql)
                    .bind(SubtaskStatus::Ready.as_str())
                    .bind(SubtaskStatus::Pending.as_str());
                for &id in chunk {
                    update = update.bind(id);
                }
                update.execute(&mut *tx).await?;
            }
        }
        let happened: Vec<NewEvent> = outcomes
            .iter()
            .map(|o| NewEvent {
                change: Change::Subtask(o.id, o.status),
                operation: o.operation,
                message: o.log.as_deref().unwrap_or_default(),
            })
            .chain(ready.iter().map(|&(id, operation)| NewEvent {
                change: Change::Subtask(id, SubtaskStatus::Ready),
                operation,
                message: "",
            }))
            .collect();
        events::insert_many(&mut tx, task_id, at, &happened).await?;
        self.commit(tx, task_id).await
    }

    /// Ends the task; a successful one lets go of every host it still holds, a failed
    /// one keeps them so that nothing else interleaves with its half-done work.
    pub async fn finish_task(
        &self,
        fence: &Fence,
        status: TaskStatus,
        operation: Operation,
        at: Millis,
    ) -> Result<(), StoreError> {
        let id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        // An ended task holds nothing any more: it no longer reads as paused.
        sqlx::query(
            "UPDATE tasks SET status = $1, operation = $2, finish_time = $3, paused = 0 \
             WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(operation.as_str())
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if status == TaskStatus::Successful {
            sqlx::query("DELETE FROM host_locks WHERE task_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let rolled_back = status == TaskStatus::Successful && operation == Operation::Rollback;
        let message = if rolled_back { "rolled back" } else { "" };
        event(&mut tx, id, Change::Task(status), operation, at, message).await?;
        self.commit(tx, id).await
    }

    pub async fn release_host_lock(&self, fence: &Fence, host_id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        sqlx::query("DELETE FROM host_locks WHERE task_id = $1 AND host_id = $2")
            .bind(fence.task_id)
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the host back for a rollback if nobody took it meanwhile; returns the
    /// other task that holds it otherwise.
    pub async fn reacquire_host_lock(
        &self,
        fence: &Fence,
        host_id: i64,
    ) -> Result<Option<i64>, StoreError> {
        let task_id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        sqlx::query("INSERT INTO host_locks (host_id, task_id) VALUES ($1, $2) ON CONFLICT (host_id) DO NOTHING")
            .bind(host_id)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        let holder: i64 = sqlx::query_scalar("SELECT task_id FROM host_locks WHERE host_id = $1")
            .bind(host_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((holder != task_id).then_some(holder))
    }

    /// Runs every FAILED subtask again as a new attempt, and the task with them.
    pub async fn retry_task(
        &self,
        task_id: i64,
        by: &str,
        at: Millis,
        claim: &Claim,
    ) -> Result<(Vec<i64>, Fence), StoreError> {
        let mut tx = self.begin_write().await?;
        self.check_task_op(&mut tx, task_id, TaskOperation::Retry)
            .await?;
        reopen(
            &mut tx,
            task_id,
            Operation::Retry,
            at,
            &format!("retried by {by}"),
        )
        .await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM subtasks WHERE task_id = $1 AND status = $2 ORDER BY id",
        )
        .bind(task_id)
        .bind(SubtaskStatus::Failed.as_str())
        .fetch_all(&mut *tx)
        .await?;
        for &id in &ids {
            retry_one(&mut tx, task_id, id, at).await?;
        }
        let fence = leases::claim(&mut tx, task_id, claim).await?;
        self.commit(tx, task_id).await?;
        Ok((ids, fence))
    }

    /// Runs one FAILED subtask again; the task runs again with it.
    pub async fn retry_subtask(
        &self,
        task_id: i64,
        subtask_id: i64,
        by: &str,
        at: Millis,
        claim: &Claim,
    ) -> Result<Fence, StoreError> {
        let mut tx = self.begin_write().await?;
        self.check_subtask_op(&mut tx, task_id, subtask_id, SubtaskOperation::Retry)
            .await?;
        reopen(
            &mut tx,
            task_id,
            Operation::Retry,
            at,
            &format!("subtask {subtask_id} retried by {by}"),
        )
        .await?;
        retry_one(&mut tx, task_id, subtask_id, at).await?;
        let fence = leases::claim(&mut tx, task_id, claim).await?;
        self.commit(tx, task_id).await?;
        Ok(fence)
    }

    /// Counts a FAILED subtask as done (SUCCESSFUL, operation SKIP) so the DAG goes on.
    pub async fn skip_subtask(
        &self,
        task_id: i64,
        subtask_id: i64,
        by: &str,
        at: Millis,
        claim: &Claim,
    ) -> Result<Fence, StoreError> {
        let mut tx = self.begin_write().await?;
        let message = format!("subtask {subtask_id} skipped by {by}");
        let task = self
            .check_subtask_op(&mut tx, task_id, subtask_id, SubtaskOperation::Skip)
            .await?;
        reopen(&mut tx, task_id, task.operation, at, &message).await?;
        sqlx::query(
            "UPDATE subtasks SET status = $1, operation = $2, finish_time = $3 WHERE id = $4",
        )
        .bind(SubtaskStatus::Successful.as_str())
        .bind(Operation::Skip.as_str())
        .bind(at)
        .bind(subtask_id)
        .execute(&mut *tx)
        .await?;
        event(
            &mut tx,
            task_id,
            Change::Subtask(subtask_id, SubtaskStatus::Successful),
            Operation::Skip,
            at,
            &message,
        )
        .await?;
        let fence = leases::claim(&mut tx, task_id, claim).await?;
        self.commit(tx, task_id).await?;
        Ok(fence)
    }

    /// Turns a FAILED task around: it runs again, backwards, as a rollback. Subtasks
    /// that were READY but never ran go back to PENDING: they have nothing to undo.
    pub async fn begin_rollback(
        &self,
        task_id: i64,
        by: &str,
        at: Millis,
        claim: &Claim,
    ) -> Result<Fence, StoreError> {
        let mut tx = self.begin_write().await?;
        self.check_task_op(&mut tx, task_id, TaskOperation::Rollback)
            .await?;
        sqlx::query(
            "UPDATE tasks SET status = $1, operation = $2, finish_time = NULL WHERE id = $3",
        )
        .bind(TaskStatus::Running.as_str())
        .bind(Operation::Rollback.as_str())
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE subtasks SET status = $1 WHERE task_id = $2 AND status = $3")
            .bind(SubtaskStatus::Pending.as_str())
            .bind(task_id)
            .bind(SubtaskStatus::Ready.as_str())
            .execute(&mut *tx)
            .await?;
        let message = format!("rollback requested by {by}");
        event(
            &mut tx,
            task_id,
            Change::Task(TaskStatus::Running),
            Operation::Rollback,
            at,
            &message,
        )
        .await?;
        let fence = leases::claim(&mut tx, task_id, claim).await?;
        self.commit(tx, task_id).await?;
        Ok(fence)
    }

    /// The first half of a cancel: the subtask is CANCELING while its step is stopped, and
    /// the controller driving the task, whichever it is, is told to stop the step.
    pub async fn mark_canceling(
        &self,
        task_id: i64,
        subtask_id: i64,
        by: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        self.check_subtask_op(&mut tx, task_id, subtask_id, SubtaskOperation::Cancel)
            .await?;
        sqlx::query("UPDATE subtasks SET status = $1 WHERE id = $2")
            .bind(SubtaskStatus::Canceling.as_str())
            .bind(subtask_id)
            .execute(&mut *tx)
            .await?;
        let message = format!("cancel requested by {by}");
        event(
            &mut tx,
            task_id,
            Change::Subtask(subtask_id, SubtaskStatus::Canceling),
            Operation::Cancel,
            at,
            &message,
        )
        .await?;
        let request = (task_id, subtask_id, by.to_string());
        if self.dialect == super::Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::CANCEL_CHANNEL)
                .bind(events::cancel_payload(&request))
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx, task_id).await?;
        self.announce_cancel(request);
        Ok(())
    }

    /// The task's state, its row locked until the transaction ends, once `op` was found
    /// to apply to it; the refusal that names the state otherwise.
    pub(super) async fn check_task_op(
        &self,
        tx: &mut Tx<'_>,
        task_id: i64,
        op: TaskOperation,
    ) -> Result<TaskState, StoreError> {
        leases::lock_task(tx, task_id).await?;
        let task = task_state(tx, task_id).await?;
        rules::check_task(op, &task)
            .map_err(|unfit| refusal(task_id, &task, None, op.action(), unfit))?;
        Ok(task)
    }

    /// Like [`Store::check_task_op`], for an operation on one of the task's subtasks.
    async fn check_subtask_op(
        &self,
        tx: &mut Tx<'_>,
        task_id: i64,
        subtask_id: i64,
        op: SubtaskOperation,
    ) -> Result<TaskState, StoreError> {
        leases::lock_task(tx, task_id).await?;
        let row =
            sqlx::query("SELECT status, operation FROM subtasks WHERE id = $1 AND task_id = $2")
                .bind(subtask_id)
                .bind(task_id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(TransitionRefused::NoSubtask {
                    task_id,
                    subtask_id,
                })?;
        let status: SubtaskStatus = get_word(&row, "subtasks", "status")?;
        let operation: Operation = get_word(&row, "subtasks", "operation")?;
        let task = task_state(tx, task_id).await?;
        rules::check_subtask(op, &task, status).map_err(|unfit| {
            let subtask = Some((subtask_id, status, operation));
            refusal(task_id, &task, subtask, op.action(), unfit)
        })?;
        Ok(task)
    }
}

/// What the rule reads of the task's row.
async fn task_state(tx: &mut Tx<'_>, task_id: i64) -> Result<TaskState, StoreError> {
    let row = sqlx::query(
        "SELECT status, operation, prohibit_rollback, rollout, paused FROM tasks WHERE id = $1",
    )
    .bind(task_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(TransitionRefused::NoTask(task_id))?;
    Ok(TaskState {
        status: get_word(&row, "tasks", "status")?,
        operation: get_word(&row, "tasks", "operation")?,
        prohibit_rollback: row.try_get::<i64, _>("prohibit_rollback")? != 0,
        rolling: row.try_get::<Option<String>, _>("rollout")?.is_some(),
        paused: row.try_get::<i64, _>("paused")? != 0,
    })
}

/// The refusal of an operation the rule found unfit for the task, or for its subtask
/// (id, status, operation) when the operation was on one.
fn refusal(
    task_id: i64,
    task: &TaskState,
    subtask: Option<(i64, SubtaskStatus, Operation)>,
    action: &'static str,
    unfit: Unfit,
) -> TransitionRefused {
    match (unfit, subtask) {
        (Unfit::Subtask { needed }, Some((subtask_id, status, operation))) => {
            TransitionRefused::SubtaskState {
                task_id,
                subtask_id,
                status,
                operation,
                action,
                needed: needed.as_str(),
            }
        }
        (Unfit::Task { needed }, _) => TransitionRefused::TaskState {
            task_id,
            status: task.status,
            operation: task.operation,
            action,
            needed,
        },
        // Only a subtask's check finds a subtask unfit.
        (Unfit::Subtask { needed }, None) => TransitionRefused::TaskState {
            task_id,
            status: task.status,
            operation: task.operation,
            action,
            needed: needed.as_str(),
        },
        (Unfit::NotRolling, _) => TransitionRefused::NotRolling { task_id, action },
        (Unfit::RollbackProhibited, _) => TransitionRefused::RollbackProhibited(task_id),
    }
}

/// The task, checked already, becomes RUNNING again under `operation`.
async fn reopen(
    tx: &mut Tx<'_>,
    task_id: i64,
    operation: Operation,
    at: Millis,
    message: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tasks SET status = $1, operation = $2, finish_time = NULL WHERE id = $3")
        .bind(TaskStatus::Running.as_str())
        .bind(operation.as_str())
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    event(
        tx,
        task_id,
        Change::Task(TaskStatus::Running),
        operation,
        at,
        message,
    )
    .await
}

async fn retry_one(
    tx: &mut Tx<'_>,
    task_id: i64,
    subtask_id: i64,
    at: Millis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE subtasks SET status = $1, operation = $2, run_time = run_time + 1, finish_time = NULL WHERE id = $3",
    )
    .bind(SubtaskStatus::Ready.as_str())
    .bind(Operation::Retry.as_str())
    .bind(subtask_id)
    .execute(&mut **tx)
    .await?;
    event(
        tx,
        task_id,
        Change::Subtask(subtask_id, SubtaskStatus::Ready),
        Operation::Retry,
        at,
        "",
    )
    .await
}
