//! Several real `ocp-controller` processes on one fresh PostgreSQL database, each with
//! its own data dir and ports and one shared users file, plus what the tests of issue 13
//! read them with: REST, server-sent events, the database itself, and the logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::time::Instant;

use test_support::controller::{Launch, Launched};
use test_support::users::{self, User};

use super::fleet::{ADMIN_PASSWORD, free_port, workspace_bin};

/// The lease every controller here runs with: short, so a takeover is seconds away.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// The flags every controller of a cluster gets beyond its addresses, data dir, database
/// and users. One list, because the binary refuses a flag it does not know: a test that
/// fails at start on one of these names it here.
pub const CLUSTER_FLAGS: &[&str] = &["--lease-ttl", "1s"];

/// One test of this kind at a time: each runs several controllers and agents, and their
/// timings (takeover, heartbeat cadence, cancel latency) mean nothing on a machine that
/// the other tests of the file load as well.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A PostgreSQL database made for one test, dropped with it.
pub struct Database {
    pub url: String,
    pub pool: PgPool,
    base: String,
    name: String,
}

impl Database {
    /// A new, empty database on the server at `OCP_TEST_POSTGRES_URL` (default the local
    /// `test` database's server). `None`, said on stderr, when no server answers, unless
    /// `OCP_REQUIRE_POSTGRES=1`, which makes that a failure.
    pub async fn fresh(test: &str) -> Option<Database> {
        match Database::create().await {
            Ok(db) => Some(db),
            Err(e) if std::env::var("OCP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                panic!("PostgreSQL is required (OCP_REQUIRE_POSTGRES=1) but unusable: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: several controllers need PostgreSQL: {e}");
                None
            }
        }
    }

    async fn create() -> Result<Database, String> {
        use sqlx::Connection;
        let base = std::env::var("OCP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        let name = format!("ocp_cluster_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("creating {name}: {e}"))?;
        let url = match base.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{name}"),
            None => return Err(format!("cannot derive a database url from {base}")),
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Database {
            url,
            pool,
            base,
            name,
        })
    }

    /// The task's events as the store keeps them, in order: what every watcher must
    /// have been sent.
    pub async fn events(&self, task_id: i64) -> Vec<StoredEvent> {
        let rows: Vec<(i64, Option<i64>, String, String, i64, String)> = sqlx::query_as(
            "SELECT id, subtask_id, status, operation, at, message FROM task_events \
             WHERE task_id = $1 ORDER BY id",
        )
        .bind(task_id)
        .fetch_all(&self.pool)
        .await
        .expect("read task_events");
        rows.into_iter()
            .map(
                |(seq, subtask_id, status, operation, at, message)| StoredEvent {
                    seq,
                    subtask_id,
                    status,
                    operation,
                    at,
                    message,
                },
            )
            .collect()
    }

    /// The task's subtask log lines, in order.
    pub async fn log_lines(&self, task_id: i64) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT subtask_id, line FROM subtask_logs WHERE task_id = $1 ORDER BY id")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .expect("read subtask_logs")
    }

    /// Rows of host_locks: a finished task must have let its hosts go.
    pub async fn held_locks(&self) -> Vec<(i64, i64)> {
        sqlx::query_as("SELECT host_id, task_id FROM host_locks ORDER BY host_id")
            .fetch_all(&self.pool)
            .await
            .expect("read host_locks")
    }
}

impl Drop for Database {
    /// Leaves the server as the test found it, even after a failure.
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&base).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// One row of task_events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub subtask_id: Option<i64>,
    pub status: String,
    pub operation: String,
    /// Unix ms.
    pub at: i64,
    pub message: String,
}

/// A users file with the test admin: every controller of a cluster reads the same
/// one, so one password opens them all.
pub fn write_users_file(dir: &Path) -> PathBuf {
    users::write(
        dir,
        &[User {
            name: "admin",
            password: ADMIN_PASSWORD,
            permissions: users::ALL,
        }],
    )
}

/// How to start one controller.
pub struct NodeSpec<'a> {
    pub data_dir: &'a Path,
    /// None: SQLite in the data dir.
    pub database_url: Option<&'a str>,
    pub users: &'a Path,
    pub flags: &'a [String],
    /// `RUST_LOG` of the process.
    pub log_filter: &'a str,
    /// Where its stdout and stderr go.
    pub log: &'a Path,
}

/// One `ocp-controller` process of a test.
pub struct Node {
    launched: Launched,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// What it writes as a task's `executor`: its gRPC address unless the flags say
    /// otherwise, so that the controllers of one test tell apart.
    pub advertise: String,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// Spawns the binary on fresh ports; does not wait for it to serve.
    pub fn spawn(spec: &NodeSpec<'_>) -> Node {
        let mut launch = Launch::new(
            env!("CARGO_BIN_EXE_ocp-controller"),
            spec.data_dir,
            spec.log,
        )
        .users(spec.users)
        .log_filter(spec.log_filter);
        if let Some(url) = spec.database_url {
            launch = launch.args(["--database-url", url]);
        }
        let advertise = match spec.flags.iter().position(|f| f == "--advertise") {
            Some(i) => spec.flags.get(i + 1).cloned().unwrap_or_default(),
            None => {
                let own = launch.grpc.to_string();
                launch = launch.args(["--advertise", &own]);
                own
            }
        };
        let launched = launch
            .args(spec.flags)
            .spawn()
            .expect("spawn ocp-controller");
        Node {
            http: launched.http(),
            grpc: launched.grpc(),
            advertise,
            launched,
            _dir: None,
        }
    }

    /// Waits until both REST and gRPC answer; fails with the log if it exits first.
    pub async fn wait_serving(&mut self) {
        self.launched.wait_serving().await;
    }

    /// Its exit status, once it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.launched.try_exit()
    }

    pub fn pid(&self) -> u32 {
        self.launched.pid()
    }

    /// `path` under `/api/v2`, where every REST route (and the OpenAPI document) answers.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v2{path}", self.http)
    }

    /// Its log, ANSI colours removed.
    pub fn log(&self) -> String {
        self.launched.log()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.launched.log_tail(lines)
    }

    /// SIGKILL and reap, as a crash or the OOM killer would end it.
    pub fn kill(&mut self) {
        self.launched.kill();
    }

    /// SIGSTOP: the process is frozen, its sockets stay open, its timers stand still.
    pub fn freeze(&self) {
        self.launched.freeze();
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.launched.thaw();
    }

    pub fn is_running(&mut self) -> bool {
        self.launched.is_running()
    }
}

/// Controllers on one fresh PostgreSQL database. Fields drop in order: the controllers
/// go before their database.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub db: Database,
    pub users: PathBuf,
    flags: Vec<String>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` controllers, started one after the other, each serving before the next
    /// starts, with `CLUSTER_FLAGS` and `extra`. `None` when PostgreSQL is not there
    /// (see `Database::fresh`).
    pub async fn start(test: &str, n: usize, extra: &[&str]) -> Option<Cluster> {
        let db = Database::fresh(test).await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let users = write_users_file(dir.path());
        let flags = CLUSTER_FLAGS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            db,
            users,
            flags,
            dir,
        };
        for _ in 0..n {
            let node = cluster.spawn_node().await;
            cluster.nodes.push(node);
        }
        Some(cluster)
    }

    /// A new controller of the cluster with its own data dir, serving.
    pub async fn spawn_node(&self) -> Node {
        let dir = tempfile::tempdir_in(self.dir.path()).expect("tempdir");
        let log = dir.path().join("controller.log");
        let mut node = Node::spawn(&NodeSpec {
            data_dir: &dir.path().join("data"),
            database_url: Some(&self.db.url),
            users: &self.users,
            flags: &self.flags,
            log_filter: "info",
            log: &log,
        });
        node._dir = Some(dir);
        node.wait_serving().await;
        node
    }

    /// Replaces node `i` (killed, or to be killed) with a new controller.
    pub async fn replace(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i] = self.spawn_node().await;
    }

    /// Every live controller's last log lines, for failure messages.
    pub fn logs(&mut self, lines: usize) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let state = if node.is_running() { "live" } else { "gone" };
            out.push_str(&format!(
                "--- controller {i} (pid {}, {state}) ---\n{}\n",
                node.pid(),
                node.log_tail(lines)
            ));
        }
        out
    }
}

pub use test_support::controller::strip_ansi;

/// The REST gateway as an OCP client calls it, with the admin's credentials.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    auth: String,
}

impl Default for Rest {
    fn default() -> Self {
        Rest::new()
    }
}

impl Rest {
    pub fn new() -> Rest {
        Rest {
            http: reqwest::Client::new(),
            auth: controller::auth::basic_header("admin", ADMIN_PASSWORD),
        }
    }

    /// Sends the request and returns the status with the body as JSON (Null if none).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), url)
            .header("authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, json)
    }

    pub async fn get(&self, url: &str) -> (StatusCode, Value) {
        self.call(Method::GET, url, None).await
    }

    pub async fn post(&self, url: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, url, Some(body)).await
    }

    /// A task as REST shows it (`data` of the envelope), asserting it was found.
    pub async fn task(&self, node: &Node, id: i64) -> Value {
        let (status, body) = self.get(&node.url(&format!("/tasks/instances/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "GET task {id}: {body}");
        body["data"].clone()
    }

    /// Reads the task on `node` until `done` holds, failing after `limit`.
    pub async fn wait_task(
        &self,
        node: &Node,
        id: i64,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let task = self.task(node, id).await;
            if done(&task) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} did not reach the condition in {limit:?}: {task:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every event of the task's SSE stream from the start, each with when it arrived,
    /// until the server ends the stream (the task is no longer RUNNING).
    pub async fn watch_sse(&self, url: &str) -> Vec<(Value, SystemTime)> {
        let response = self
            .http
            .get(url)
            .header("authorization", &self.auth)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        let mut stream = response.bytes_stream();
        let mut pending = String::new();
        let mut data = String::new();
        let mut events = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("SSE chunk");
            let arrived = SystemTime::now();
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line = pending[..end].trim_end_matches('\r').to_string();
                pending.drain(..=end);
                if line.is_empty() {
                    if !data.is_empty() {
                        let event = serde_json::from_str(&data)
                            .unwrap_or_else(|e| panic!("SSE data {data:?}: {e}"));
                        events.push((event, arrived));
                        data.clear();
                    }
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                } else if line.starts_with("event:") {
                    assert_eq!(line, "event: transition", "only transitions are sent");
                }
            }
        }
        events
    }
}

/// Unix ms of a wall-clock instant.
pub fn unix_ms(t: SystemTime) -> i64 {
    i64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("ms")
}

/// Unix ms of an RFC 3339 time as the API writes it.
pub fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("time {text:?}: {e}"))
        .timestamp_millis()
}

/// The basic processes of every agent here, tagged so that every copy of them can be
/// found in /proc: a listener that takes `startup_delay_ms` to come up (a window while
/// Start all runs), the proxy, and one that ignores SIGTERM and so takes its
/// `stubborn_stop` (e.g. "1s") to stop (a window while Stop all runs).
pub fn basic_processes(tag: &str, startup_delay_ms: u64, stubborn_stop: &str) -> String {
    let demo = workspace_bin("ocp-demo-proc");
    let port = free_port();
    format!(
        r#"[[process]]
alias = "listener"
command = {demo:?}
args = ["--listen", "127.0.0.1:{port}", "--startup-delay", "{startup_delay_ms}", "--tag", "{tag}-listener"]
ports = [{port}]
log_file = "log/listener.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "proxy"
command = {demo:?}
args = ["--tag", "{tag}-proxy"]
proxy = true
log_file = "log/proxy.log"
stop_timeout = "5s"
min_live = "0s"

[[process]]
alias = "stubborn"
command = {demo:?}
args = ["--ignore-term", "--tag", "{tag}-stubborn"]
log_file = "log/stubborn.log"
stop_timeout = "{stubborn_stop}"
min_live = "0s"
"#
    )
}

/// The aliases `basic_processes` configures.
pub const ALIASES: [&str; 3] = ["listener", "proxy", "stubborn"];
