//! The state only rolling tasks have: paused or not, whether the canary's pause
//! happened, and the barrier a pause holds.
//!
//! The flag is the truth and the engine's copy follows it: a pause or resume is written
//! first, then passed to the controller driving the task (in process, or by NOTIFY on
//! PostgreSQL), and every lease round reads the flags again, so a lost notification
//! costs a few seconds, never a task stuck paused or running on.

use super::events::{self, NewEvent};
use super::leases::{self, Fence};
use super::rules::TaskOperation;
use super::{Store, StoreError};
use crate::model::{Change, Millis, Operation, SubtaskStatus, TaskStatus};

impl Store {
    /// Pauses or resumes a RUNNING rolling task, with an event saying who did it.
    /// Idempotent: pausing a paused task succeeds and changes nothing.
    pub async fn set_paused(
        &self,
        task_id: i64,
        paused: bool,
        by: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        let op = if paused {
            TaskOperation::Pause
        } else {
            TaskOperation::Resume
        };
        let mut tx = self.begin_write().await?;
        let operation = self.check_task_op(&mut tx, task_id, op).await?.operation;
        let changed = sqlx::query("UPDATE tasks SET paused = $1 WHERE id = $2 AND paused <> $1")
            .bind(i64::from(paused))
            .bind(task_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        let message = format!("{} by {by}", if paused { "paused" } else { "resumed" });
        events::insert(
            &mut tx,
            task_id,
            at,
            NewEvent {
                change: Change::Task(TaskStatus::Running),
                operation,
                message: &message,
            },
        )
        .await?;
        if self.dialect == super::Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::CANCEL_CHANNEL)
                .bind(events::pause_payload(task_id))
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx, task_id).await?;
        let _ = self.pauses.send(task_id);
        Ok(())
    }

    /// The engine holds a barrier before the next batch: the barrier is READY (its
    /// upstreams are done) but does not start. For the canary the task is paused in
    /// the same write, and remembered as held once, so that neither a restart nor a
    /// retry of the first barrier pauses it again.
    pub async fn hold_barrier(
        &self,
        fence: &Fence,
        barrier_id: i64,
        canary: bool,
        at: Millis,
        message: &str,
    ) -> Result<(), StoreError> {
        let task_id = fence.task_id;
        let mut tx = self.begin_write().await?;
        leases::fence(&mut tx, fence).await?;
        if canary {
            sqlx::query("UPDATE tasks SET paused = 1, canary_held = 1 WHERE id = $1")
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
        }
        // PENDING when its batch just settled, RUNNING when a pause came during its wait.
        let readied = sqlx::query(
            "UPDATE subtasks SET status = $1, start_time = NULL WHERE id = $2 \
             AND status IN ($3, $4)",
        )
        .bind(SubtaskStatus::Ready.as_str())
        .bind(barrier_id)
        .bind(SubtaskStatus::Pending.as_str())
        .bind(SubtaskStatus::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Held again after a restart: the log says so, the event stream has it already.
        if readied == 0 && !canary {
            tx.commit().await?;
            return Ok(());
        }
        let row = sqlx::query("SELECT operation FROM subtasks WHERE id = $1")
            .bind(barrier_id)
            .fetch_one(&mut *tx)
            .await?;
        let operation: Operation = super::get_word(&row, "subtasks", "operation")?;
        events::insert(
            &mut tx,
            task_id,
            at,
            NewEvent {
                change: Change::Subtask(barrier_id, SubtaskStatus::Ready),
                operation,
                message,
            },
        )
        .await?;
        self.commit(tx, task_id).await
    }

    /// Whether the task is paused; None when it does not exist.
    pub async fn task_paused(&self, task_id: i64) -> Result<Option<bool>, StoreError> {
        let paused: Option<i64> = sqlx::query_scalar("SELECT paused FROM tasks WHERE id = $1")
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(paused.map(|p| p != 0))
    }

    /// The RUNNING rolling tasks `owner` drives, whose pause flag the lease round
    /// passes on again.
    pub async fn rolling_tasks(&self, owner: &str) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM tasks WHERE lease_owner = $1 AND status = $2 \
             AND rollout IS NOT NULL ORDER BY id",
        )
        .bind(owner)
        .bind(TaskStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await?)
    }
}
