//! The transitions log that watchers read, and the wake-up that tells them to read again.
//!
//! Events are written in the same transaction as the transition they describe, so a
//! watcher that resumes after event N from the store misses nothing and sees nothing
//! twice. That needs the events of one task to commit in the order of their ids: every
//! transaction that writes events first locks the task's row (see [`super::leases`]), so
//! no event can commit behind a later one that a watcher already read.
//!
//! The broadcast only says "task T has news"; the store is the source. On PostgreSQL a
//! NOTIFY sent with each commit carries the news to every controller, so a watch on one
//! streams what another one drives; a notification lost while the listener reconnects
//! costs only latency, since watchers also read the store on a timer.

use sqlx::Row;

use super::{CANCEL_CHANNEL, CancelRequest, NEWS_CHANNEL, Store, StoreError, get_word};
use crate::model::{
    Change, EventSubtask, Millis, Operation, SubtaskStatus, TaskEvent, TaskStatus, UnknownWord,
};

/// A stored event's change, from its row: a takeover is told by the controller it
/// names, a subtask's transition by its subtask.
fn read_change(
    subtask_id: Option<i64>,
    word: &str,
    taken_over_by: Option<String>,
) -> Result<Change, UnknownWord> {
    Ok(match (taken_over_by, subtask_id) {
        (Some(by), _) => Change::TakenOver { by },
        (None, None) => Change::Task(word.parse()?),
        (None, Some(id)) => Change::Subtask(id, word.parse()?),
    })
}

/// A transition about to be recorded.
#[derive(Debug, Clone)]
pub(super) struct NewEvent<'a> {
    pub change: Change,
    pub operation: Operation,
    pub message: &'a str,
}

pub(super) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task_id: i64,
    at: Millis,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    insert_many(tx, task_id, at, &[event]).await
}

/// Rows per multi-row INSERT: seven parameters a row stays far below both dialects' limits.
const EVENTS_PER_INSERT: usize = 200;

/// One statement per 200 events: a stage of 1,000 hosts is a handful of round trips to
/// PostgreSQL, not thousands.
pub(super) async fn insert_many(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    task_id: i64,
    at: Millis,
    events: &[NewEvent<'_>],
) -> Result<(), StoreError> {
    let rows: Vec<(i64, &NewEvent<'_>)> = events.iter().map(|e| (task_id, e)).collect();
    insert_rows(tx, at, &rows).await
}

/// Events of any tasks, (task id, event), in the order given.
pub(super) async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    at: Millis,
    rows: &[(i64, &NewEvent<'_>)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(EVENTS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO task_events \
             (task_id, subtask_id, status, operation, at, message, taken_over_by) VALUES {}",
            super::value_rows(chunk.len(), 7)
        );
        let mut insert = super::sized(&sql);
        for (task_id, event) in chunk {
            insert = insert
                .bind(*task_id)
                .bind(event.change.subtask_id())
                .bind(event.change.status())
                .bind(event.operation.as_str())
                .bind(at)
                .bind(event.message)
                .bind(event.change.taken_over_by());
        }
        insert.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Events of the task after `after` (0 for all), oldest first, each subtask's with
    /// its name and host.
    pub async fn events_after(
        &self,
        task_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        sqlx::query(
            "SELECT e.id, e.task_id, e.subtask_id, e.status, e.operation, e.at, e.message, \
             e.taken_over_by, s.name AS subtask_name, s.host_id AS subtask_host_id \
             FROM task_events e LEFT JOIN subtasks s ON s.id = e.subtask_id \
             WHERE e.task_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3",
        )
        .bind(task_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    /// The seq of the task's latest event; 0 when it has none.
    pub async fn last_event_seq(&self, task_id: i64) -> Result<i64, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MAX(id) FROM task_events WHERE task_id = $1")
                .bind(task_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Whether a subtask failed after the task's last RUNNING event (its creation, or a
    /// retry, skip or rollback that reopened it): what a resumed runner needs to know to
    /// tell a task that had failed from one reopened around an older failure. A takeover
    /// is a RUNNING event that reopens nothing, so it does not count. A pause or resume
    /// is a RUNNING event as well; it happens only to rolling tasks, whose runner judges
    /// failures at its barriers and does not ask this.
    pub async fn failed_since_reopen(&self, task_id: i64) -> Result<bool, StoreError> {
        let failed: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM task_events WHERE task_id = $1 AND subtask_id IS NOT NULL \
             AND status = $2 AND id > COALESCE((SELECT MAX(id) FROM task_events \
             WHERE task_id = $1 AND subtask_id IS NULL AND status = $3 \
             AND taken_over_by IS NULL), 0) LIMIT 1",
        )
        .bind(task_id)
        .bind(SubtaskStatus::Failed.as_str())
        .bind(TaskStatus::Running.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(failed.is_some())
    }

    /// Task ids with new events: this process's writes, and on PostgreSQL every
    /// controller's.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.news.subscribe()
    }

    /// Pauses and resumes asked of any controller (on SQLite, of this one).
    pub fn subscribe_pauses(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.pauses.subscribe()
    }

    /// Cancels asked of any controller (on SQLite, of this one).
    pub fn subscribe_cancels(&self) -> tokio::sync::broadcast::Receiver<CancelRequest> {
        self.cancels.subscribe()
    }

    pub(super) fn announce_cancel(&self, request: CancelRequest) {
        let _ = self.cancels.send(request);
    }

    pub(super) fn announce(&self, task_id: i64) {
        // Nobody listening is fine.
        let _ = self.news.send(task_id);
    }
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<TaskEvent, StoreError> {
    let word: String = row.try_get("status")?;
    let change = read_change(
        row.try_get("subtask_id")?,
        &word,
        row.try_get("taken_over_by")?,
    )
    .map_err(|e| StoreError::Corrupt {
        table: "task_events",
        detail: e.to_string(),
    })?;
    let subtask = match row.try_get::<Option<String>, _>("subtask_name")? {
        Some(name) => Some(EventSubtask {
            name,
            host_id: row.try_get("subtask_host_id")?,
        }),
        None => None,
    };
    Ok(TaskEvent {
        seq: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        change,
        operation: get_word(row, "task_events", "operation")?,
        at: row.try_get("at")?,
        message: row.try_get("message")?,
        subtask,
    })
}

/// Listens to the other controllers' news and cancels until the store is closed.
pub(super) async fn listen(store: &Store, url: &str) -> Result<(), StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen_all([NEWS_CHANNEL, CANCEL_CHANNEL]).await?;
    let news = store.news.clone();
    let cancels = store.cancels.clone();
    let pauses = store.pauses.clone();
    let closing = store.closing.clone();
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                _ = closing.cancelled() => return,
                received = listener.recv() => received,
            };
            match received {
                Ok(n) if n.channel() == NEWS_CHANNEL => {
                    if let Ok(task_id) = n.payload().parse() {
                        let _ = news.send(task_id);
                    }
                }
                Ok(n) => {
                    if let Some(request) = parse_pause(n.payload()) {
                        let _ = pauses.send(request);
                    } else if let Some(request) = parse_cancel(n.payload()) {
                        let _ = cancels.send(request);
                    }
                }
                Err(e) => {
                    // recv reconnects on its next call; this only paces the attempts.
                    tracing::warn!("listening for other controllers' news: {e}");
                    tokio::select! {
                        _ = closing.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
    Ok(())
}

/// `task:subtask:by`, by whom last since a user name may hold a colon.
pub(super) fn cancel_payload(request: &CancelRequest) -> String {
    format!("{}:{}:{}", request.0, request.1, request.2)
}

/// `pause:task`: a rolling task paused or resumed; its runner reads which.
pub(super) fn pause_payload(task_id: i64) -> String {
    format!("pause:{task_id}")
}

fn parse_pause(payload: &str) -> Option<i64> {
    payload.strip_prefix("pause:")?.parse().ok()
}

fn parse_cancel(payload: &str) -> Option<CancelRequest> {
    let mut parts = payload.splitn(3, ':');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_travels_with_who_asked_for_it() {
        let request = (7, 42, "ops:night".to_string());
        assert_eq!(parse_cancel(&cancel_payload(&request)), Some(request));
        assert_eq!(parse_cancel("7:x:a"), None);
        assert_eq!(parse_cancel("7"), None);
    }

    #[test]
    fn a_stored_event_reads_back_as_the_change_it_recorded() {
        let changes = [
            Change::Task(TaskStatus::Failed),
            Change::Subtask(7, SubtaskStatus::Canceling),
            Change::TakenOver {
                by: "10.0.0.2".to_string(),
            },
        ];
        for change in changes {
            let by = change.taken_over_by().map(str::to_string);
            let read = read_change(change.subtask_id(), change.status(), by).unwrap();
            assert_eq!(read, change);
        }
        assert!(
            read_change(None, "PENDING", None).is_err(),
            "not a task status"
        );
    }

    #[test]
    fn a_pause_is_not_taken_for_a_cancel() {
        assert_eq!(parse_pause(&pause_payload(7)), Some(7));
        assert_eq!(parse_cancel(&pause_payload(7)), None);
        assert_eq!(parse_pause("7:42:ops"), None);
    }
}
