//! A real controller (SQLite in a temp dir, gRPC and REST on port 0) and, when a test
//! needs one, a real in-process agent supervising `sleep` processes, spoken to over
//! HTTP like any OCP client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use controller::auth::basic_header;
use controller::heartbeat::HeartbeatOptions;
use controller::store::Store;
use controller::{Controller, ControllerOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::users::{self, User};
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery staple";

/// Users of the tests, by what they may do.
pub const ADMIN: &str = "admin";
pub const HOST_VIEWER: &str = "host_viewer";
pub const HOST_MANAGER: &str = "host_manager";
pub const TASK_VIEWER: &str = "task_viewer";
pub const TASK_MANAGER: &str = "task_manager";
pub const NOBODY: &str = "nobody";

pub fn users_file() -> String {
    let user = |name, permissions| User {
        name,
        password: PASSWORD,
        permissions,
    };
    users::text(&[
        user(ADMIN, users::ALL),
        user(HOST_VIEWER, &["HOST_VIEWER"]),
        user(HOST_MANAGER, &["HOST_MANAGER"]),
        user(TASK_VIEWER, &["TASK_VIEWER"]),
        user(TASK_MANAGER, &["TASK_MANAGER"]),
        user(NOBODY, &[]),
    ])
}

/// A gRPC request as `user` with `password` (None: without credentials).
pub fn grpc_request<T>(message: T, user: Option<&str>, password: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(user) = user {
        let header = basic_header(user, password);
        request
            .metadata_mut()
            .insert("authorization", header.parse().expect("ascii"));
    }
    request
}

pub struct Harness {
    pub controller: Option<Controller>,
    pub base: String,
    pub http: reqwest::Client,
    pub agent: Option<TestAgent>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// The controller's store, read beside it as an operator's SQL client would.
    pub async fn store(&self) -> Store {
        Store::connect(&Store::sqlite_url(self.dir.path()))
            .await
            .expect("read the controller's store")
    }
}

pub struct TestAgent {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

fn sleep_binary() -> &'static str {
    ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a sleep binary")
}

/// An agent with two basic processes (one of them the proxy) and one work process.
pub async fn start_agent(dir: &std::path::Path) -> TestAgent {
    let sleep = sleep_binary();
    let config = format!(
        r#"[agent]
version = "4.2.1"
install_home = "{home}"
log_home = "{home}/log"

[[process]]
alias = "mgr_agent"
command = "{sleep}"
args = ["300"]
min_live = "50ms"
stop_timeout = "2s"

[[process]]
alias = "pos_proxy"
command = "{sleep}"
args = ["300"]
proxy = true
min_live = "50ms"
stop_timeout = "2s"

[[process]]
alias = "ob_cleaner"
command = "{sleep}"
args = ["300"]
kind = "work"
log_file = "log/ob_cleaner.log"
min_live = "50ms"
stop_timeout = "2s"
"#,
        home = dir.display()
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let cancel = CancellationToken::new();
    let (addr, served) = agent::Agent::start(
        agent::AgentOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            config_path,
            data_dir: dir.join("agent-data"),
            tls: None,
            insecure_plaintext: false,
            conns: Default::default(),
            metrics_addr: None,
        },
        cancel.clone(),
    )
    .await
    .expect("agent starts");
    TestAgent {
        addr,
        cancel,
        served,
    }
}

impl Harness {
    /// A controller, and an agent registered as a host when `with_agent`.
    pub async fn start(with_agent: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        // These tests send wrong credentials from 127.0.0.1 on purpose (gateway_auth some
        // ninety in a row); the throttle that would refuse them is hostile_logins.rs's.
        let users = controller::auth::Users::parse(&users_file(), "test users")
            .expect("users file")
            .with_login_limits(controller::auth::LoginLimits {
                burst: 100_000,
                ..Default::default()
            });
        let controller = Controller::start(ControllerOptions {
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: Some("127.0.0.1:0".parse().expect("addr")),
            users,
            database_url: Store::sqlite_url(dir.path()),
            advertise: "127.0.0.1".to_string(),
            task_concurrency: 64,
            max_subtask_timeout: Some(Duration::from_secs(30)),
            heartbeat: HeartbeatOptions {
                interval: Duration::from_secs(1),
                ..HeartbeatOptions::default()
            },
            agent_tls: None,
            tls: None,
            conns: Default::default(),
            lease_ttl: Duration::from_secs(10),
            max_watches_per_user: controller::service::DEFAULT_MAX_WATCHES_PER_USER,
            max_package_bytes: controller::service::DEFAULT_MAX_PACKAGE_BYTES,
        })
        .await
        .expect("controller starts");
        let base = format!("http://{}", controller.http_addr().expect("http addr"));
        let agent = if with_agent {
            let agent_dir = dir.path().join("agent");
            std::fs::create_dir_all(&agent_dir).expect("agent dir");
            Some(start_agent(&agent_dir).await)
        } else {
            None
        };
        Harness {
            controller: Some(controller),
            base,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(128)
                .build()
                .expect("client"),
            agent,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.controller.as_ref().expect("running").grpc_addr()
    }

    /// Sends a request as `user` (None: without credentials); the body is sent as given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(user) = user {
            request = request.header("authorization", basic_header(user, PASSWORD));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the server answers");
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(ADMIN), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(ADMIN), Some(&body.to_string()))
            .await
    }

    /// Registers a host and returns its id.
    pub async fn add_host(&self, address: &str, port: u16) -> i64 {
        let reply = self
            .post(
                "/api/v2/compute/hosts",
                json!({"innerIpAddress": address, "agentPort": port}),
            )
            .await;
        reply.expect(StatusCode::OK);
        reply.json["data"]["id"].as_i64().expect("host id")
    }

    /// Registers the test agent's host.
    pub async fn add_agent_host(&self) -> i64 {
        let port = self.agent.as_ref().expect("an agent").addr.port();
        self.add_host("127.0.0.1", port).await
    }

    /// Polls a task until it is no longer RUNNING, and returns it.
    pub async fn wait_task(&self, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self.get(&format!("/api/v2/tasks/instances/{id}")).await;
            reply.expect(StatusCode::OK);
            if reply.json["data"]["status"] != "RUNNING" {
                return reply.json["data"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} still running: {}",
                reply.json
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The id of the process with `alias` on `host_id`.
    pub async fn process_id(&self, host_id: i64, alias: &str) -> i64 {
        let reply = self
            .get(&format!(
                "/compute/hosts/{host_id}/agent/processes?size=100"
            ))
            .await;
        reply.expect(StatusCode::OK);
        reply.json["data"]["contents"]
            .as_array()
            .expect("contents")
            .iter()
            .find(|p| p["alias"] == alias)
            .and_then(|p| p["id"].as_i64())
            .unwrap_or_else(|| panic!("no process {alias}: {}", reply.json))
    }

    /// Stops the test agent, leaving its host registered: the controller finds nobody
    /// at its address from then on.
    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), agent.served).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(controller) = self.controller.take() {
            controller.shutdown().await;
        }
        if let Some(agent) = self.agent.take() {
            agent.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), agent.served).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            agent.cancel.cancel();
        }
    }
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a whole body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Reply {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }

    /// The error envelope's OCP code.
    pub fn code(&self) -> i64 {
        self.json["error"]["code"].as_i64().unwrap_or(-1)
    }

    /// Checks the envelope every answer must have, and returns `data` or `error`.
    #[track_caller]
    pub fn assert_envelope(&self) {
        let j = &self.json;
        assert!(j.is_object(), "not JSON: {:?}", self.text);
        assert_eq!(j["status"], self.status.as_u16(), "{}", self.text);
        assert_eq!(j["successful"], self.status.is_success(), "{}", self.text);
        let trace = j["traceId"].as_str().expect("traceId");
        assert!(controller::trace::is_valid(trace), "{trace}");
        assert_eq!(
            self.headers.get("x-trace-id").and_then(|v| v.to_str().ok()),
            Some(trace)
        );
        assert!(
            j["timestamp"].as_str().is_some_and(|t| t.len() == 29),
            "{}",
            self.text
        );
        assert!(j["duration"].is_u64(), "{}", self.text);
        assert!(j["server"].is_string(), "{}", self.text);
        if self.status.is_success() {
            assert!(j.get("error").is_none(), "{}", self.text);
        } else {
            assert!(j.get("data").is_none(), "{}", self.text);
            assert!(j["error"]["code"].is_i64(), "{}", self.text);
            assert!(j["error"]["message"].is_string(), "{}", self.text);
            assert!(j["error"]["subErrors"].is_array(), "{}", self.text);
        }
    }
}

pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `value` is what this controller adds to OCP's shapes under `key`: a task's
/// and a subtask's `allowedOperations`, an array of strings, and a subtask's `hostId`,
/// a number. (A task's own `hostId` is OCP's, and the seeds show it where it belongs.)
fn is_addition(key: &str, value: &Value) -> bool {
    match (key, value) {
        ("allowedOperations", Value::Array(words)) => words.iter().all(Value::is_string),
        ("hostId", v) => kind(v) == "integer",
        _ => false,
    }
}

/// Compares the shapes of two JSON documents recursively: the same keys in every
/// object (besides [`is_addition`]s), the same JSON type in every value; each element of
/// an array is compared with the expected array's first element.
pub fn shape_mismatches(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing"));
            }
            for (k, v) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                if !is_addition(k, v) {
                    out.push(format!("{path}.{k}: not in the seed"));
                }
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    shape_mismatches(ev, av, &format!("{path}.{k}"), out);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, av) in a.iter().enumerate() {
                    shape_mismatches(first, av, &format!("{path}[{i}]"), out);
                }
            }
        }
        (e, a) if kind(e) != kind(a) => {
            out.push(format!(
                "{path}: {} in the seed, {} here ({a})",
                kind(e),
                kind(a)
            ));
        }
        _ => {}
    }
}

#[track_caller]
pub fn assert_same_shape(seed: &Value, actual: &Value) {
    let mut out = Vec::new();
    shape_mismatches(seed, actual, "$", &mut out);
    assert!(
        out.is_empty(),
        "shape differs from the seed:\n{}\n{actual:#}",
        out.join("\n")
    );
}
