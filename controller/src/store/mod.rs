//! The controller's durable state: hosts, their processes, tasks, subtasks, logs and host locks.
//!
//! One interface over SQLite (the default, a file in `--data-dir`) and PostgreSQL (for
//! several controllers sharing one store), through sqlx's Any driver. Every query here is
//! written in the subset both dialects accept (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`), times are Unix milliseconds and flags 0/1, so the engine never knows
//! which database it talks to. Only the DDL differs, in `migrations/<dialect>`.

mod events;
mod hosts;
mod tasks;
mod transitions;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

pub use events::TaskEvent;
pub use tasks::{LockHolder, LogEntry, TaskOrigin};
pub use transitions::{Outcome, TransitionRefused};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes: on SQLite a single connection, on PostgreSQL the same pool as reads.
    writer: AnyPool,
    dialect: Dialect,
    /// Ids of tasks that just got new events, for watchers in this process.
    news: tokio::sync::broadcast::Sender<i64>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let options = || AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
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
                let pool = options().max_connections(16).connect(url).await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                (pool.clone(), pool)
            }
        };
        let (news, _) = tokio::sync::broadcast::channel(1024);
        Ok(Store {
            pool,
            writer,
            dialect,
            news,
        })
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

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
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
