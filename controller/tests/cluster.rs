//! An agent belongs to one controller cluster (docs/agent.md), against the real
//! binaries over mutual TLS with one CA: the first cluster that acts on an agent owns
//! it, across agent restarts; another cluster's controller is refused, naming both ids,
//! in its step logs and its host's reason, and changes nothing on the host; deleting the
//! host from the first cluster, or `ocp-agent forget-cluster` on the host, lets the
//! other in; every controller of one PostgreSQL database is one cluster.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::controllers::{Database, Node, NodeSpec, Rest, write_users_file};
use common::fleet::{WAIT, free_port, workspace_bin};
use common::proc_agent::{AgentTls, ProcAgent, listener_process, unique_tag};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::pki::TestPki;

/// An agent on `ip` with one listener process, serving TLS with a certificate of `pki`.
async fn agent(pki: &TestPki, ip: &str) -> ProcAgent {
    let tag = unique_tag();
    let config = listener_process(&tag, ip, "");
    let tls = AgentTls::issued_in(&pki.issue(ip), Some(pki.controller_client().await));
    let listen: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    ProcAgent::start_tls(listen, tag, &config, tls).await
}

/// The cluster id the agent's data dir records, if any.
fn pinned(agent: &ProcAgent) -> Option<String> {
    std::fs::read_to_string(agent.data_dir().join("cluster"))
        .ok()
        .map(|text| text.trim().to_string())
}

/// One `ocp-controller` with its own data dir, driving agents over mutual TLS.
struct Controller {
    node: Node,
    rest: Rest,
    _dir: tempfile::TempDir,
}

impl Controller {
    /// Spawned, not yet serving: two may start at once.
    fn spawn(pki: &TestPki, database_url: Option<&str>) -> Controller {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = write_users_file(dir.path());
        let controller_dir = pki.controller_dir();
        let flags: Vec<String> = [
            "--pki-dir",
            controller_dir.to_str().expect("utf-8 path"),
            "--heartbeat-interval",
            "300ms",
            "--offline-grace",
            "2s",
        ]
        .map(String::from)
        .to_vec();
        let node = Node::spawn(&NodeSpec {
            data_dir: &dir.path().join("data"),
            database_url,
            users: &users,
            flags: &flags,
            log_filter: "info",
            log: &dir.path().join("controller.log"),
        });
        Controller {
            node,
            rest: Rest::new(),
            _dir: dir,
        }
    }

    async fn start(pki: &TestPki) -> Controller {
        let mut controller = Controller::spawn(pki, None);
        controller.node.wait_serving().await;
        controller
    }

    /// The id its start-up line names.
    fn cluster(&self) -> String {
        let log = self.node.log();
        let said = "this controller is of controller cluster ";
        let line = log.lines().find_map(|line| line.split_once(said));
        let id = line.map(|(_, id)| id.trim().to_string());
        id.unwrap_or_else(|| panic!("no line says the cluster:\n{log}"))
    }

    async fn add_host(&self, agent: &ProcAgent) -> i64 {
        let body = json!({
            "innerIpAddress": agent.addr.ip().to_string(),
            "agentPort": agent.addr.port(),
        });
        let (status, reply) = self.rest.post(&self.node.url("/compute/hosts"), body).await;
        assert_eq!(status, StatusCode::OK, "add host: {reply}");
        reply["data"]["id"].as_i64().expect("host id")
    }

    async fn delete_host(&self, host: i64) {
        let url = self.node.url(&format!("/compute/hosts/{host}"));
        let (status, reply) = self.rest.call(Method::DELETE, &url, None).await;
        assert_eq!(status, StatusCode::OK, "delete host {host}: {reply}");
    }

    async fn host(&self, host: i64) -> Value {
        let url = self.node.url(&format!("/compute/hosts/{host}"));
        let (status, reply) = self.rest.get(&url).await;
        assert_eq!(status, StatusCode::OK, "get host {host}: {reply}");
        reply["data"].clone()
    }

    /// Restarts the host's agent as a task and waits for its end.
    async fn restart(&self, host: i64) -> Value {
        self.run(&format!("/compute/hosts/{host}/agent/restart"))
            .await
    }

    /// Retries a failed task and waits for its end.
    async fn retry(&self, task: &Value) -> Value {
        self.run(&format!("/tasks/instances/{}/retry", task["id"]))
            .await
    }

    /// POSTs to a route that answers with a task, and waits for the task's end.
    async fn run(&self, path: &str) -> Value {
        let url = self.node.url(path);
        let (status, reply) = self.rest.call(Method::POST, &url, None).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {reply}");
        let id = reply["data"]["id"].as_i64().expect("task id");
        self.rest
            .wait_task(&self.node, id, WAIT, |t| t["status"] != json!("RUNNING"))
            .await
    }

    /// The logs of the task's FAILED subtasks, joined.
    async fn failure_logs(&self, task: &Value) -> String {
        let mut logs = String::new();
        for subtask in task["subtasks"].as_array().expect("subtasks") {
            if subtask["status"] == json!("FAILED") {
                let path = format!(
                    "/tasks/instances/{}/subtasks/{}/log",
                    task["id"], subtask["id"]
                );
                let (_, log) = self.rest.get(&self.node.url(&path)).await;
                logs.push_str(log["data"]["log"].as_str().unwrap_or_default());
            }
        }
        logs
    }

    /// Waits until the host's reason holds `words`; the host then.
    async fn wait_reason(&self, host: i64, words: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.host(host).await;
            if now["statusReason"]
                .as_str()
                .unwrap_or_default()
                .contains(words)
            {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host's reason never said {words:?}: {now}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until heartbeats find the host ONLINE, without a reason.
    async fn wait_online(&self, host: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.host(host).await;
            if now["status"] == json!("ONLINE") && now["statusReason"].is_null() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host never came ONLINE: {now}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until its log holds `words`.
    async fn wait_log(&self, words: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.node.log().contains(words) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the controller never logged {words:?}:\n{}",
                self.node.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn forget_cluster(data_dir: &Path) -> std::process::Output {
    Command::new(workspace_bin("ocp-agent"))
        .arg("forget-cluster")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-agent forget-cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_serves_the_first_cluster_until_it_lets_the_agent_go() {
    let pki = TestPki::new();
    let mut agent = agent(&pki, "127.0.0.1").await;
    let a = Controller::start(&pki).await;
    let b = Controller::start(&pki).await;
    let (id_a, id_b) = (a.cluster(), b.cluster());
    assert_ne!(id_a, id_b, "two SQLite stores are two clusters");

    // A acts first: the agent is A's, on disk.
    let host_a = a.add_host(&agent).await;
    let task = a.restart(host_a).await;
    assert_eq!(task["status"], json!("SUCCESSFUL"), "{task}");
    assert_eq!(pinned(&agent).as_deref(), Some(id_a.as_str()));

    // After a restart of the agent (SIGKILL: nothing tidied), it still is.
    agent.kill();
    agent.spawn().await;
    let pid = agent.started_listener().await;

    // B is refused, in its step log and its host's reason, and changes nothing.
    let refusal = format!(
        "this agent belongs to controller cluster {id_a}; this controller is of cluster {id_b}; \
         delete the host from cluster {id_a}, or run `ocp-agent forget-cluster --data-dir {}` on the host",
        agent.data_dir().display()
    );
    let host_b = b.add_host(&agent).await;
    let refused = b.restart(host_b).await;
    assert_eq!(refused["status"], json!("FAILED"), "{refused}");
    let logs = b.failure_logs(&refused).await;
    assert!(
        logs.contains(&refusal),
        "B's step log lacks {refusal:?}:\n{logs}"
    );
    let host = b.wait_reason(host_b, &refusal).await;
    assert_ne!(host["status"], json!("ONLINE"), "{host}");
    assert_eq!(
        agent.started_listener().await,
        pid,
        "B restarted the listener"
    );
    assert_eq!(pinned(&agent).as_deref(), Some(id_a.as_str()));

    // A deletes the host and tells the agent: B's next operation goes through.
    a.delete_host(host_a).await;
    a.wait_log(&format!("no longer belongs to controller cluster {id_a}"))
        .await;
    assert_eq!(pinned(&agent), None);
    b.wait_online(host_b).await;
    let task = b.retry(&refused).await;
    assert_eq!(
        task["status"],
        json!("SUCCESSFUL"),
        "{}",
        b.failure_logs(&task).await
    );
    assert_ne!(
        agent.started_listener().await,
        pid,
        "B's restart did not happen"
    );
    assert_eq!(pinned(&agent).as_deref(), Some(id_b.as_str()));

    // B's cluster is gone for good: on the host, the operator frees the running agent,
    // and A takes it back.
    drop(b);
    let forgot = forget_cluster(&agent.data_dir());
    assert!(forgot.status.success(), "{forgot:?}");
    let said = String::from_utf8_lossy(&forgot.stdout);
    assert!(
        said.contains(&format!("forgot controller cluster {id_b}")),
        "{said}"
    );
    let host_a = a.add_host(&agent).await;
    let task = a.restart(host_a).await;
    assert_eq!(
        task["status"],
        json!("SUCCESSFUL"),
        "{}",
        a.failure_logs(&task).await
    );
    assert_eq!(pinned(&agent).as_deref(), Some(id_a.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_agent_does_not_answer_is_deleted_all_the_same() {
    let pki = TestPki::new();
    let a = Controller::start(&pki).await;
    // Accepts connections and never says a word: a hung agent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let body = json!({"innerIpAddress": "127.0.0.1", "agentPort": addr.port()});
    let (status, reply) = a.rest.post(&a.node.url("/compute/hosts"), body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let host = reply["data"]["id"].as_i64().expect("host id");

    let started = tokio::time::Instant::now();
    a.delete_host(host).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the delete took {took:?}");
    a.wait_log("was not told to forget controller cluster")
        .await;
    let (status, _) = a
        .rest
        .get(&a.node.url(&format!("/compute/hosts/{host}")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_of_one_postgresql_database_are_one_cluster() {
    let Some(db) =
        Database::fresh("the_controllers_of_one_postgresql_database_are_one_cluster").await
    else {
        return;
    };
    let pki = TestPki::new();
    let agent = agent(&pki, "127.0.0.1").await;
    // Both start at once: both offer an id, one wins.
    let mut first = Controller::spawn(&pki, Some(&db.url));
    let mut second = Controller::spawn(&pki, Some(&db.url));
    first.node.wait_serving().await;
    second.node.wait_serving().await;
    let cluster = first.cluster();
    assert_eq!(second.cluster(), cluster);

    let host = first.add_host(&agent).await;
    for controller in [&first, &second] {
        let before = agent.started_listener().await;
        let task = controller.restart(host).await;
        assert_eq!(
            task["status"],
            json!("SUCCESSFUL"),
            "{}",
            controller.failure_logs(&task).await
        );
        assert_ne!(agent.started_listener().await, before);
        assert_eq!(pinned(&agent).as_deref(), Some(cluster.as_str()));
    }
}

#[test]
fn forget_cluster_says_what_it_did_and_refuses_a_missing_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let nothing = forget_cluster(&data);
    assert!(nothing.status.success(), "{nothing:?}");
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("nothing to forget"));

    std::fs::write(data.join("cluster"), "some-cluster\n").expect("pin");
    let forgot = forget_cluster(&data);
    assert!(forgot.status.success(), "{forgot:?}");
    assert!(
        String::from_utf8_lossy(&forgot.stdout).contains("forgot controller cluster some-cluster")
    );
    assert!(!data.join("cluster").exists());

    let missing: PathBuf = dir.path().join("typo");
    let refused = forget_cluster(&missing);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("typo") && stderr.contains("No such file or directory"),
        "{stderr}"
    );
    assert!(!missing.exists(), "forget-cluster created the data dir");

    // The agent's serving flags do not go with the subcommand.
    let mixed = Command::new(workspace_bin("ocp-agent"))
        .args(["--listen", "127.0.0.1:1", "forget-cluster"])
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-agent");
    assert!(!mixed.status.success(), "{mixed:?}");
}
