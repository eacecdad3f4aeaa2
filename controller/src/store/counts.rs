//! How many tasks, subtasks and hosts the store holds in each state, and hosts by
//! agent version, for the metrics scrape: one GROUP BY each.
//!
//! Subtasks are counted for open tasks only (RUNNING, or FAILED and so holding their
//! hosts until a retry or a rollback): a batch over a thousand hosts leaves 5,004 rows
//! behind, so counting the whole history would make every scrape dearer, for numbers
//! that the tasks' own counts already tell.

use sqlx::Row;

use super::{Store, StoreError};
use crate::model::{StoreCounts, TaskStatus};

impl Store {
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut counts = StoreCounts::default();
        let tasks = "SELECT name, status, COUNT(*) AS n FROM tasks GROUP BY name, status \
                     ORDER BY name, status";
        for row in sqlx::query(tasks).fetch_all(&self.pool).await? {
            let count = (
                row.try_get("name")?,
                row.try_get("status")?,
                row.try_get("n")?,
            );
            counts.tasks.push(count);
        }
        let subtasks = "SELECT s.name AS name, s.status AS status, COUNT(*) AS n \
                        FROM subtasks s JOIN tasks t ON t.id = s.task_id \
                        WHERE t.status IN ($1, $2) \
                        GROUP BY s.name, s.status ORDER BY s.name, s.status";
        let open = sqlx::query(subtasks)
            .bind(TaskStatus::Running.as_str())
            .bind(TaskStatus::Failed.as_str())
            .fetch_all(&self.pool)
            .await?;
        for row in open {
            let count = (
                row.try_get("name")?,
                row.try_get("status")?,
                row.try_get("n")?,
            );
            counts.subtasks.push(count);
        }
        let hosts = "SELECT status, COUNT(*) AS n FROM hosts GROUP BY status ORDER BY status";
        for row in sqlx::query(hosts).fetch_all(&self.pool).await? {
            counts
                .hosts
                .push((row.try_get("status")?, row.try_get("n")?));
        }
        let versions = "SELECT COALESCE(agent_version, '') AS version, COUNT(*) AS n FROM hosts \
                        GROUP BY COALESCE(agent_version, '') ORDER BY version";
        for row in sqlx::query(versions).fetch_all(&self.pool).await? {
            counts
                .agent_versions
                .push((row.try_get("version")?, row.try_get("n")?));
        }
        Ok(counts)
    }
}
