//! The controller's durable state: hosts, their processes, tasks, subtasks, logs, host
//! locks, the cluster's id and agent packages.
//!
//! One interface over SQLite (the default, a file in `--data-dir`) and PostgreSQL (for
//! several controllers sharing one store), through sqlx's Any driver. Every query here is
//! written in the subset both dialects accept (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`), times are Unix milliseconds and flags 0/1, so the engine never knows
//! which database it talks to. Only the DDL differs, in `migrations/<dialect>`, and the
//! one query that takes a list of ids as a single parameter (`existing_host_ids`).

mod cluster;
mod counts;
mod events;
mod hosts;
mod leases;
mod packages;
mod rollouts;
pub mod rules;
mod sqlite_lock;
mod tasks;
mod transitions;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

pub use leases::{Claim, ControllerRow, Fence};
pub use packages::{CHUNK_BYTES, Finished};
pub use sqlite_lock::{SoleController, SoleError};
pub use tasks::{LockHolder, LogEntry, TaskOrigin};
pub use transitions::{Outcome, TransitionRefused};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Each message names its cause itself, and none is a `source`: a chain printed whole
/// would name it again (sqlx's errors print their own source too).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("{}", database_words(.0))]
    Database(sqlx::Error),
    #[error("{}: {error}", path.display())]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("migrating the database failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("host {inner_ip_address}:{agent_port} already exists with id {existing_id}")]
    HostExists {
        inner_ip_address: String,
        agent_port: u16,
        existing_id: i64,
    },
    #[error("host {host_id} is held by task {task_id}")]
    HostBusy { host_id: i64, task_id: i64 },
    #[error(transparent)]
    Refused(#[from] transitions::TransitionRefused),
    #[error("{0} took too long")]
    Timeout(&'static str),
    #[error(
        "task {task_id} was taken over: its lease is held by {holder} (generation {generation})"
    )]
    Fenced {
        task_id: i64,
        generation: i64,
        holder: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        StoreError::Database(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migrate(error)
    }
}

/// What the database said, in its own words (`database "ocp" does not exist`), without
/// sqlx's preamble; sqlx's words for what never reached it (a refused connection).
fn database_words(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// The PostgreSQL channel that tells every controller which task has new events.
const NEWS_CHANNEL: &str = "ocp_task_news";
/// The PostgreSQL channel that carries cancels, pauses and resumes to the controller
/// driving the task.
const CANCEL_CHANNEL: &str = "ocp_cancel";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database a url names; `None` for one the store does not open.
    pub fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }
}

#[derive(Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes: on SQLite a single connection, on PostgreSQL the same pool as reads.
    writer: AnyPool,
    dialect: Dialect,
    /// Ids of tasks that just got new events, for watchers in this process, from this
    /// process's writes and, on PostgreSQL, from every controller's.
    news: tokio::sync::broadcast::Sender<i64>,
    /// Cancels asked of any controller: (task, subtask, by whom).
    cancels: tokio::sync::broadcast::Sender<CancelRequest>,
    /// Rolling tasks paused or resumed by any controller's request.
    pauses: tokio::sync::broadcast::Sender<i64>,
    /// Stops the PostgreSQL listener.
    closing: tokio_util::sync::CancellationToken,
}

/// A cancel an operator asked for: (task, subtask, by whom).
pub type CancelRequest = (i64, i64, String);

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, None).await
    }

    /// `connect`, for a controller that shares a PostgreSQL database: a transaction of
    /// its left idle for `idle_limit` (the lease TTL) is ended by the server. A
    /// controller frozen in the middle of one would otherwise keep the task's row
    /// locked for as long as it stays frozen, and no other controller could take the
    /// task over, however long ago its lease ran out.
    pub async fn connect_with(
        url: &str,
        idle_limit: Option<Duration>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let Some(dialect) = Dialect::of_url(url) else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let options = || AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if dialect == Dialect::Sqlite {
            restrict_sqlite_files(url).await?;
        }
        let (pool, writer) = match dialect {
            Dialect::Sqlite => {
                // SQLite has one writer at a time. Writers sharing the read pool would
                // fight over its lock in the busy handler's sleeps; one dedicated writer
                // connection queues them in order instead, while WAL lets reads go on.
                let sqlite = |max| {
                    options()
                        .max_connections(max)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                                )
                                .await?;
                                Ok(())
                            })
                        })
                        .connect(url)
                };
                let writer = sqlite(1).await?;
                SQLITE_MIGRATIONS.run(&writer).await?;
                (sqlite(8).await?, writer)
            }
            Dialect::Postgres => {
                let limit = idle_limit.map(|d| d.max(Duration::from_secs(1)).as_millis());
                let pool = options()
                    .max_connections(16)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            if let Some(ms) = limit {
                                conn.execute(
                                    format!("SET idle_in_transaction_session_timeout = {ms}")
                                        .as_str(),
                                )
                                .await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                (pool.clone(), pool)
            }
        };
        let (news, _) = tokio::sync::broadcast::channel(1024);
        let (cancels, _) = tokio::sync::broadcast::channel(256);
        let (pauses, _) = tokio::sync::broadcast::channel(256);
        let store = Store {
            pool,
            writer,
            dialect,
            news,
            cancels,
            pauses,
            closing: tokio_util::sync::CancellationToken::new(),
        };
        if dialect == Dialect::Postgres {
            events::listen(&store, url).await?;
        }
        Ok(store)
    }

    /// The SQLite url of the default store under `data_dir`.
    pub fn sqlite_url(data_dir: &std::path::Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("controller.db").display()
        )
    }

    /// A transaction that writes. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that reads first and writes later could otherwise be
    /// refused outright when another writer got in between, instead of waiting its turn.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.writer.begin().await,
        }
    }

    /// Commits a write of the task and wakes its watchers: in this process through the
    /// broadcast, in other controllers through a NOTIFY that PostgreSQL delivers only
    /// if the transaction commits.
    async fn commit(&self, tx: Tx<'static>, task_id: i64) -> Result<(), StoreError> {
        self.commit_tasks(tx, &[task_id]).await
    }

    /// [`Store::commit`] of a write to several tasks: each one's watchers are woken.
    async fn commit_tasks(&self, mut tx: Tx<'static>, task_ids: &[i64]) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            // One statement for them all: a takeover scan commits up to a thousand tasks.
            let ids = serde_json::Value::from(task_ids.to_vec()).to_string();
            sqlx::query(
                "SELECT pg_notify($1, t.id) FROM jsonb_array_elements_text($2::jsonb) AS t(id)",
            )
            .bind(NEWS_CHANNEL)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for &task_id in task_ids {
            self.announce(task_id);
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.closing.cancel();
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// The database holds every host and task, so only the controller's user may read it,
/// whatever the umask. SQLite gives the `-wal` and `-shm` files the mode of the
/// database file, so creating that one 0600 before SQLite opens it covers all three;
/// files an older version left readable by others are narrowed.
async fn restrict_sqlite_files(url: &str) -> Result<(), StoreError> {
    let Some(db) = sqlite_file(url) else {
        return Ok(());
    };
    let create = url_params(url).any(|p| p == "mode=rwc");
    tokio::task::spawn_blocking(move || restrict_files(&db, create))
        .await
        .map_err(|e| StoreError::File {
            path: PathBuf::from(url),
            error: std::io::Error::other(e),
        })?
}

fn url_params(url: &str) -> impl Iterator<Item = &str> {
    url.split_once('?')
        .map_or("", |(_, query)| query)
        .split('&')
}

/// The file a SQLite url names, as sqlx reads it; `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if url_params(url).any(|p| p == "mode=memory") {
        return None;
    }
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().ok()?;
    let file = options.get_filename();
    let name = file.to_string_lossy();
    (!name.is_empty() && !name.starts_with("file:")).then(|| file.to_path_buf())
}

fn restrict_files(db: &Path, create: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if create {
        // `create_new`: opening and closing a database SQLite already has open would
        // drop its POSIX locks.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(StoreError::File {
                    path: db.to_path_buf(),
                    error,
                });
            }
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|error| StoreError::File { path, error })?;
        }
    }
    Ok(())
}

/// `($1, ..., $columns), (...)`: the VALUES of a multi-row INSERT of `rows` rows.
fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// The rows of a JSON array bound as `param`, as a FROM item `r` with the columns
    /// `value` (one element) and `key` (its place in the array, for ORDER BY).
    fn json_rows(&self, param: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("json_each({param}) AS r"),
            Dialect::Postgres => {
                format!("jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS r(value, key)")
            }
        }
    }
}

impl Store {
    /// One page of a list: `count` and `rows` carry the same filter with its values
    /// bound, and the page's LIMIT and OFFSET are bound to `rows` here, last.
    async fn fetch_page<'q, T>(
        &self,
        count: sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments<'q>>,
        rows: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        page: crate::model::PageRequest,
        read: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<crate::model::Page<T>, StoreError> {
        let total = count.fetch_one(&self.pool).await?;
        let contents = rows
            .bind(i64::from(page.size))
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(read)
            .collect::<Result<_, _>>()?;
        Ok(crate::model::Page {
            contents,
            total_elements: total,
            number: page.number,
            size: page.size,
        })
    }
}

/// A statement whose text grows with the rows or ids it carries. It is prepared for the
/// one call and not kept in the connection's statement cache, where every size would be
/// a statement of its own, up to the cache's hundred per connection, each held in memory.
fn sized(sql: &str) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(sql).persistent(false)
}

fn flag(v: bool) -> i64 {
    i64::from(v)
}

fn get_word<T: std::str::FromStr<Err = crate::model::UnknownWord>>(
    row: &AnyRow,
    table: &'static str,
    column: &str,
) -> Result<T, StoreError> {
    let word: String = row.try_get(column)?;
    word.parse()
        .map_err(|e: crate::model::UnknownWord| StoreError::Corrupt {
            table,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_every_parameter_once() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
    }

    #[test]
    fn the_file_of_a_sqlite_url_is_the_one_sqlx_opens() {
        let file = |url| sqlite_file(url).map(|p| p.display().to_string());
        assert_eq!(
            file("sqlite://./ocp-data/controller.db?mode=rwc").as_deref(),
            Some("./ocp-data/controller.db")
        );
        assert_eq!(
            file("sqlite:///var/lib/ocp/a%3Fb.db").as_deref(),
            Some("/var/lib/ocp/a?b.db")
        );
        assert_eq!(file("sqlite:rel.db").as_deref(), Some("rel.db"));
        assert_eq!(file("sqlite::memory:"), None);
        assert_eq!(file("sqlite://:memory:"), None);
        assert_eq!(file("sqlite://?mode=memory"), None);
        assert_eq!(file("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(
            Store::sqlite_url(Path::new("/d")),
            "sqlite:///d/controller.db?mode=rwc"
        );
    }
}
