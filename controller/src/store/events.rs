//! The transitions log that watchers read, and the in-process wake-up that tells them
//! to read again.
//!
//! Events are written in the same transaction as the transition they describe, so a
//! watcher that resumes after event N from the store misses nothing and sees nothing
//! twice. The broadcast only says "task T has news"; the store is the source.

use sqlx::Row;

use super::{Store, StoreError, get_word};
use crate::model::{Millis, Operation};

/// One transition of a task (`subtask_id` None) or of one of its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// Increasing: resume a watch after the last one seen.
    pub seq: i64,
    pub task_id: i64,
    pub subtask_id: Option<i64>,
    pub status: String,
    pub operation: Operation,
    pub at: Millis,
    pub message: String,
}

/// A transition about to be recorded.
#[derive(Debug, Clone)]
pub(super) struct NewEvent<'a> {
    pub subtask_id: Option<i64>,
    pub status: &'a str,
    pub operation: Operation,
    pub message: &'a str,
}

pub(super) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task_id: i64,
    at: Millis,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO task_events (task_id, subtask_id, status, operation, at, message) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(task_id)
    .bind(event.subtask_id)
    .bind(event.status)
    .bind(event.operation.as_str())
    .bind(at)
    .bind(event.message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Events of the task after `after` (0 for all), oldest first.
    pub async fn events_after(
        &self,
        task_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        sqlx::query(
            "SELECT id, task_id, subtask_id, status, operation, at, message FROM task_events \
             WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(task_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(TaskEvent {
                seq: row.try_get("id")?,
                task_id: row.try_get("task_id")?,
                subtask_id: row.try_get("subtask_id")?,
                status: row.try_get("status")?,
                operation: get_word(row, "task_events", "operation")?,
                at: row.try_get("at")?,
                message: row.try_get("message")?,
            })
        })
        .collect()
    }

    /// Task ids with new events, as this process writes them. Other controllers'
    /// writes do not arrive here: watchers poll the store as well.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.news.subscribe()
    }

    pub(super) fn announce(&self, task_id: i64) {
        // Nobody listening is fine.
        let _ = self.news.send(task_id);
    }
}
