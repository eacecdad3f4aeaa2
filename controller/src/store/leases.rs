//! Task leases and the controllers that hold them: who drives each unfinished task, and
//! the fencing check every engine write makes.
//!
//! A controller claims a task when it creates, retries, skips or rolls it back, and takes
//! over one whose lease expired. Each claim bumps the task's generation. Every write the
//! engine makes starts with [`fence`] in the same transaction: an update of the task's own
//! row that matches only the owner and generation the writer holds. It fails for a
//! controller that was paused past its lease and woke up after a takeover. It also takes
//! the row's lock, so the writes for one task, and the events they insert, commit in the
//! order they were made (see [`super::events`]).
//!
//! Times are the controllers' clocks. A skewed clock can only make a takeover come early
//! or late; the generation check keeps two controllers from both driving a task.

use std::sync::Arc;

use sqlx::Row;

use super::events::{self, NewEvent};
use super::{Store, StoreError, Tx, get_word};
use crate::model::{Change, Millis, TaskStatus};

/// Task ids per renewal statement, far below both dialects' parameter limits.
const RENEW_CHUNK: usize = 500;

/// What a controller holds while it drives a task: every engine write carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub task_id: i64,
    pub owner: Arc<str>,
    pub generation: i64,
}

/// Who claims a task, and until when, for the operations that hand it to a controller.
#[derive(Debug, Clone)]
pub struct Claim {
    pub owner: Arc<str>,
    pub expires: Millis,
    /// The claiming controller's advertised address: the task's `executor` from then on.
    pub executor: Arc<str>,
}

/// A live controller, as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerRow {
    pub id: String,
    pub address: String,
    pub pid: i64,
}

/// Fails with [`StoreError::Fenced`] unless `fence` still holds the task's lease, and
/// locks the task's row for the rest of the transaction.
pub(super) async fn fence(tx: &mut Tx<'_>, fence: &Fence) -> Result<(), StoreError> {
    let held = sqlx::query(
        "UPDATE tasks SET lease_generation = lease_generation \
         WHERE id = $1 AND lease_owner = $2 AND lease_generation = $3",
    )
    .bind(fence.task_id)
    .bind(&*fence.owner)
    .bind(fence.generation)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if held == 1 {
        return Ok(());
    }
    let row = sqlx::query("SELECT lease_owner, lease_generation FROM tasks WHERE id = $1")
        .bind(fence.task_id)
        .fetch_optional(&mut **tx)
        .await?;
    let (holder, generation) = match row {
        Some(row) => (
            row.try_get::<Option<String>, _>("lease_owner")?,
            row.try_get("lease_generation")?,
        ),
        None => (None, fence.generation),
    };
    Err(StoreError::Fenced {
        task_id: fence.task_id,
        generation,
        holder: holder.unwrap_or_else(|| "nobody".to_string()),
    })
}

/// Locks the task's row, for an operator's write that inserts events without changing
/// the row itself.
pub(super) async fn lock_task(tx: &mut Tx<'_>, task_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE tasks SET lease_generation = lease_generation WHERE id = $1")
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Hands the task to `claim.owner` with a new generation: whoever drove it before is
/// fenced from now on, and the task names its new executor.
pub(super) async fn claim(
    tx: &mut Tx<'_>,
    task_id: i64,
    claim: &Claim,
) -> Result<Fence, StoreError> {
    let generation: i64 = sqlx::query_scalar(
        "UPDATE tasks SET lease_owner = $1, lease_expires = $2, executor = $3, \
         lease_generation = lease_generation + 1 WHERE id = $4 RETURNING lease_generation",
    )
    .bind(&*claim.owner)
    .bind(claim.expires)
    .bind(&*claim.executor)
    .bind(task_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Fence {
        task_id,
        owner: claim.owner.clone(),
        generation,
    })
}

fn fences(owner: &Arc<str>, rows: &[sqlx::any::AnyRow]) -> Result<Vec<Fence>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Fence {
                task_id: row.try_get("id")?,
                owner: owner.clone(),
                generation: row.try_get("lease_generation")?,
            })
        })
        .collect()
}

impl Store {
    /// Extends the leases `claim.owner` holds on `task_ids`, the tasks it drives; returns
    /// those still held, so that the caller can drop the tasks it drives but no longer
    /// holds. A lease on a task it does not drive (claimed by a request that never got
    /// to start it) is left to run out, for a takeover to start it.
    pub async fn renew_leases(
        &self,
        claim: &Claim,
        task_ids: &[i64],
    ) -> Result<Vec<Fence>, StoreError> {
        let mut held = Vec::new();
        for chunk in task_ids.chunks(RENEW_CHUNK) {
            let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 4)).collect();
            let sql = format!(
                "UPDATE tasks SET lease_expires = $1 WHERE lease_owner = $2 AND status = $3 \
                 AND id IN ({}) RETURNING id, lease_generation",
                ids.join(", ")
            );
            let mut query = super::sized(&sql)
                .bind(claim.expires)
                .bind(&*claim.owner)
                .bind(TaskStatus::Running.as_str());
            for &id in chunk {
                query = query.bind(id);
            }
            held.extend(fences(&claim.owner, &query.fetch_all(&self.writer).await?)?);
        }
        Ok(held)
    }

    /// Takes over RUNNING tasks whose lease ran out at `now` (all of them with
    /// `everything`, for the one controller of a SQLite store), oldest first, at most
    /// `limit`. Two controllers racing for a task cannot both get it: the update
    /// re-checks the expiry under the row's lock. A task whose row another transaction
    /// holds is left to a later scan.
    ///
    /// Each task taken names `claim.executor` as its executor and gets an event saying
    /// who took it over, in the same transaction, so that no reader sees one without
    /// the other and its watchers, on every controller, learn it in order.
    pub async fn take_over_leases(
        &self,
        claim: &Claim,
        now: Millis,
        everything: bool,
        limit: i64,
    ) -> Result<Vec<Fence>, StoreError> {
        let expired_before = if everything { Millis::MAX } else { now };
        // A row locked by another transaction is passed by, not waited on: that
        // transaction may belong to a controller frozen in the middle of it, and this
        // scan runs in the round that renews this controller's own leases. SQLite has
        // one writer and no row locks.
        let skip_locked = match self.dialect {
            super::Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            super::Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE tasks SET lease_owner = $1, lease_expires = $2, executor = $3, \
             lease_generation = lease_generation + 1 \
             WHERE id IN (SELECT id FROM tasks WHERE status = $4 AND lease_expires < $5 \
                          ORDER BY id LIMIT $6 {skip_locked}) \
               AND status = $4 AND lease_expires < $5 \
             RETURNING id, lease_generation, operation"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(&*claim.owner)
            .bind(claim.expires)
            .bind(&*claim.executor)
            .bind(TaskStatus::Running.as_str())
            .bind(expired_before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut taken = fences(&claim.owner, &rows)?;
        let message = format!("taken over by {}", claim.executor);
        let mut events = Vec::with_capacity(rows.len());
        for (fence, row) in taken.iter().zip(&rows) {
            let event = NewEvent {
                change: Change::TakenOver {
                    by: claim.executor.to_string(),
                },
                // The task goes on with what it was doing: an execution, a retry, a rollback.
                operation: get_word(row, "tasks", "operation")?,
                message: &message,
            };
            events.push((fence.task_id, event));
        }
        events.sort_by_key(|(task_id, _)| *task_id);
        let ordered: Vec<(i64, &NewEvent<'_>)> = events.iter().map(|(id, e)| (*id, e)).collect();
        events::insert_rows(&mut tx, now, &ordered).await?;
        let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
        self.commit_tasks(tx, &ids).await?;
        taken.sort_by_key(|f| f.task_id);
        Ok(taken)
    }

    /// Gives up every lease of `owner` at once, for a controller that stops cleanly:
    /// the others take its tasks over at their next scan instead of after the TTL.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("UPDATE tasks SET lease_expires = 0 WHERE lease_owner = $1")
                .bind(owner)
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }

    /// Says this controller is alive, and returns every controller seen since
    /// `alive_since`, this one included, ordered by id.
    pub async fn controller_seen(
        &self,
        me: &ControllerRow,
        started_at: Millis,
        now: Millis,
        alive_since: Millis,
    ) -> Result<Vec<ControllerRow>, StoreError> {
        sqlx::query(
            "INSERT INTO controllers (id, address, pid, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET seen_at = $5",
        )
        .bind(&me.id)
        .bind(&me.address)
        .bind(me.pid)
        .bind(started_at)
        .bind(now)
        .execute(&self.writer)
        .await?;
        // Rows of controllers long gone would otherwise pile up, one per start.
        sqlx::query("DELETE FROM controllers WHERE seen_at < $1")
            .bind(alive_since - 3_600_000)
            .execute(&self.writer)
            .await?;
        sqlx::query(
            "SELECT id, address, pid FROM controllers WHERE seen_at >= $1 OR id = $2 ORDER BY id",
        )
        .bind(alive_since)
        .bind(&me.id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(ControllerRow {
                id: row.try_get("id")?,
                address: row.try_get("address")?,
                pid: row.try_get("pid")?,
            })
        })
        .collect()
    }

    /// A controller that stops cleanly leaves the others its hosts at once.
    pub async fn controller_gone(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM controllers WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Subtasks an operator asked to cancel, of tasks `owner` holds: how a cancel sent to
    /// another controller reaches the one running the step when a notification was lost.
    pub async fn cancel_requests(&self, owner: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        sqlx::query(
            "SELECT s.task_id, s.id FROM subtasks s JOIN tasks t ON t.id = s.task_id \
             WHERE t.lease_owner = $1 AND t.status = $2 AND s.status = $3 ORDER BY s.id",
        )
        .bind(owner)
        .bind(TaskStatus::Running.as_str())
        .bind(crate::model::SubtaskStatus::Canceling.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("task_id")?, row.try_get("id")?)))
        .collect()
    }
}
