//! How many tasks, subtasks and hosts the store holds in each state, for the metrics
//! scrape: one GROUP BY per table, whatever the number of rows' worth of history.

use sqlx::Row;

use super::{Store, StoreError};

/// Rows counted by their words, as stored: (name, status, count) and (status, count).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreCounts {
    pub tasks: Vec<(String, String, i64)>,
    pub subtasks: Vec<(String, String, i64)>,
    pub hosts: Vec<(String, i64)>,
}

impl Store {
    pub async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let by_name = |table: &str| {
            format!(
                "SELECT name, status, COUNT(*) AS n FROM {table} GROUP BY name, status \
                 ORDER BY name, status"
            )
        };
        let mut counts = StoreCounts::default();
        for (sql, into) in [
            (by_name("tasks"), &mut counts.tasks),
            (by_name("subtasks"), &mut counts.subtasks),
        ] {
            for row in sqlx::query(&sql).fetch_all(&self.pool).await? {
                into.push((
                    row.try_get("name")?,
                    row.try_get("status")?,
                    row.try_get("n")?,
                ));
            }
        }
        let hosts = "SELECT status, COUNT(*) AS n FROM hosts GROUP BY status ORDER BY status";
        for row in sqlx::query(hosts).fetch_all(&self.pool).await? {
            counts
                .hosts
                .push((row.try_get("status")?, row.try_get("n")?));
        }
        Ok(counts)
    }
}
