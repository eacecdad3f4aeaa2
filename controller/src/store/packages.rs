//! Agent packages and their content: rows in `agent_packages`, bytes in
//! `agent_package_chunks`, one row per [`CHUNK_BYTES`] in order.
//!
//! An upload writes its chunks as they arrive, each in a short transaction of its own,
//! under a row that stays incomplete (and so unseen by every read here) until
//! [`Store::finish_package_upload`] makes it a package. One long transaction would be
//! simpler but would hold SQLite's only writer for as long as a slow client takes, and
//! on PostgreSQL would be ended by the idle-in-transaction limit between two chunks.

use bytes::Bytes;
use futures::Stream;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, get_word};
use crate::model::{AgentPackage, Arch, Millis, Page, PageRequest, now_millis};

/// How much of a package one chunk row holds (the last one holds the rest): large
/// enough that a 100 MB binary is a hundred rows, small enough that a reader or an
/// upload holds little of it at once.
pub const CHUNK_BYTES: usize = 1 << 20;

/// An incomplete upload that received nothing for this long was abandoned by a
/// controller that died: the REST and gRPC ports close a connection idle for 5 minutes
/// by default, which ends a live upload long before this.
const ABANDONED_AFTER: Millis = 30 * 60 * 1000;

const COLUMNS: &str = "id, version, arch, sha256, size, uploaded_by, upload_time";

/// How an upload ended once its content was all stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// It is a new package.
    Stored(AgentPackage),
    /// The same version for the same architecture with the same content was already
    /// there (uploaded again, or at the same moment through another controller): the
    /// upload was discarded and this is that package.
    Same(AgentPackage),
    /// The version already has another package for the architecture; the upload was
    /// discarded.
    Conflict(AgentPackage),
}

impl Store {
    /// Starts an upload of `version` for `arch`: an incomplete row that chunks are added
    /// to. Uploads abandoned by a controller that died are swept first.
    pub async fn begin_package_upload(
        &self,
        version: &str,
        arch: Arch,
        uploaded_by: &str,
    ) -> Result<i64, StoreError> {
        let stale: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM agent_packages WHERE complete = 0 AND upload_time < $1",
        )
        .bind(now_millis() - ABANDONED_AFTER)
        .fetch_all(&self.pool)
        .await?;
        for id in stale {
            tracing::info!(package_id = id, "sweeping an abandoned package upload");
            self.discard_package_upload(id).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO agent_packages (version, arch, sha256, size, uploaded_by, upload_time, complete) \
             VALUES ($1, $2, '', 0, $3, $4, 0) RETURNING id",
        )
        .bind(version)
        .bind(arch.as_str())
        .bind(uploaded_by)
        .bind(now_millis())
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    /// Adds chunk `seq` (from 0) of an upload begun with `begin_package_upload`.
    pub async fn add_package_chunk(
        &self,
        package_id: i64,
        seq: i64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO agent_package_chunks (package_id, seq, data) VALUES ($1, $2, $3)")
            .bind(package_id)
            .bind(seq)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE agent_packages SET upload_time = $1 WHERE id = $2 AND complete = 0")
            .bind(now_millis())
            .bind(package_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes a finished upload a package, unless its version already has one for the
    /// architecture: then the upload is discarded, and that one is returned as the same
    /// or as a conflict by its digest.
    pub async fn finish_package_upload(
        &self,
        package_id: i64,
        sha256: &str,
        size: i64,
    ) -> Result<Finished, StoreError> {
        // Two uploads of one version finishing at the same moment on two controllers
        // both find none; the unique index refuses the second, whose retry finds the first.
        for attempt in 0..2 {
            match self.try_finish(package_id, sha256, size).await {
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if attempt == 0 && e.is_unique_violation() => {}
                other => return other,
            }
        }
        Err(StoreError::Corrupt {
            table: "agent_packages",
            detail: format!("upload {package_id} collided twice with another of its version"),
        })
    }

    async fn try_finish(
        &self,
        package_id: i64,
        sha256: &str,
        size: i64,
    ) -> Result<Finished, StoreError> {
        let mut tx = self.begin_write().await?;
        let pending =
            sqlx::query("SELECT version, arch FROM agent_packages WHERE id = $1 AND complete = 0")
                .bind(package_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(pending) = pending else {
            return Err(StoreError::Corrupt {
                table: "agent_packages",
                detail: format!("upload {package_id} vanished before it finished"),
            });
        };
        let version: String = pending.try_get("version")?;
        let arch: String = pending.try_get("arch")?;
        let existing = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_packages WHERE version = $1 AND arch = $2 AND complete = 1"
        ))
        .bind(&version)
        .bind(&arch)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let existing = package_from_row(&row)?;
            delete_rows(&mut tx, package_id).await?;
            tx.commit().await?;
            return Ok(if existing.sha256 == sha256 {
                Finished::Same(existing)
            } else {
                Finished::Conflict(existing)
            });
        }
        let row = sqlx::query(&format!(
            "UPDATE agent_packages SET complete = 1, sha256 = $1, size = $2, upload_time = $3 \
             WHERE id = $4 RETURNING {COLUMNS}"
        ))
        .bind(sha256)
        .bind(size)
        .bind(now_millis())
        .bind(package_id)
        .fetch_one(&mut *tx)
        .await?;
        let package = package_from_row(&row)?;
        tx.commit().await?;
        Ok(Finished::Stored(package))
    }

    /// Removes an upload that will not finish, with every chunk it wrote; a package
    /// already complete is left alone.
    pub async fn discard_package_upload(&self, package_id: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let pending: Option<i64> =
            sqlx::query_scalar("SELECT id FROM agent_packages WHERE id = $1 AND complete = 0")
                .bind(package_id)
                .fetch_optional(&mut *tx)
                .await?;
        if pending.is_some() {
            delete_rows(&mut tx, package_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Packages, newest upload first.
    pub async fn list_packages(&self, page: PageRequest) -> Result<Page<AgentPackage>, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM agent_packages WHERE complete = 1");
        let rows = sqlx::query(
            "SELECT id, version, arch, sha256, size, uploaded_by, upload_time FROM agent_packages \
             WHERE complete = 1 ORDER BY upload_time DESC, id DESC LIMIT $1 OFFSET $2",
        );
        self.fetch_page(count, rows, page, package_from_row).await
    }

    pub async fn get_package(&self, id: i64) -> Result<Option<AgentPackage>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_packages WHERE id = $1 AND complete = 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(package_from_row)
        .transpose()
    }

    /// The package of `version` for `arch`, for the upgrade of a host of that
    /// architecture; `None` when that version was not uploaded for it.
    pub async fn package_by_version(
        &self,
        version: &str,
        arch: Arch,
    ) -> Result<Option<AgentPackage>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM agent_packages WHERE version = $1 AND arch = $2 AND complete = 1"
        ))
        .bind(version)
        .bind(arch.as_str())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(package_from_row)
        .transpose()
    }

    /// The package's content, chunk by chunk in order, each read from the store only
    /// when the stream is polled for it: a reader that pushes it to an agent holds one
    /// chunk at a time. Ends with an error, not short, when a chunk is missing.
    pub fn package_content(
        &self,
        package: &AgentPackage,
    ) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let store = self.clone();
        let (id, size) = (package.id, package.size);
        futures::stream::try_unfold((0_i64, 0_i64), move |(seq, read)| {
            let store = store.clone();
            async move {
                if read >= size {
                    return Ok(None);
                }
                let data: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT data FROM agent_package_chunks WHERE package_id = $1 AND seq = $2",
                )
                .bind(id)
                .bind(seq)
                .fetch_optional(&store.pool)
                .await?;
                let data = data
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| StoreError::Corrupt {
                        table: "agent_package_chunks",
                        detail: format!(
                            "package {id} has no chunk {seq}, {read} of {size} bytes read"
                        ),
                    })?;
                let read = read + data.len() as i64;
                if read > size {
                    return Err(StoreError::Corrupt {
                        table: "agent_package_chunks",
                        detail: format!("package {id} holds more than its {size} bytes"),
                    });
                }
                Ok(Some((Bytes::from(data), (seq + 1, read))))
            }
        })
    }

    /// The unfinished task (RUNNING, or FAILED and so retryable) that upgrades agents to
    /// the package's version, if one does: the package may not go while it may be pushed.
    pub async fn package_in_use(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT t.id FROM tasks t JOIN agent_packages p ON p.version = t.agent_version \
             WHERE p.id = $1 AND t.status <> $2 ORDER BY t.id LIMIT 1",
        )
        .bind(id)
        .bind(crate::model::TaskStatus::Successful.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes a package and its content; false when there is none with this id.
    pub async fn delete_package(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM agent_packages WHERE id = $1 AND complete = 1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Ok(false);
        }
        delete_rows(&mut tx, id).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn delete_rows(tx: &mut super::Tx<'static>, package_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM agent_package_chunks WHERE package_id = $1")
        .bind(package_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM agent_packages WHERE id = $1")
        .bind(package_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn package_from_row(row: &AnyRow) -> Result<AgentPackage, StoreError> {
    Ok(AgentPackage {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        arch: get_word(row, "agent_packages", "arch")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        uploaded_by: row.try_get("uploaded_by")?,
        upload_time: row.try_get("upload_time")?,
    })
}
