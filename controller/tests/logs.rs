//! What the controller writes where nobody watches on a terminal (journald, a file): no
//! colour codes, and no line per heartbeat, from it or from its agent; an error that
//! stops it names its cause once. And on PostgreSQL with a users file it keeps nothing
//! on disk, so it makes no data dir.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::controllers::{Database, write_users_file};
use common::fleet::{ADMIN_PASSWORD, WAIT, free_port, workspace_bin};
use common::proc_agent::{ProcAgent, unique_tag};
use serde_json::{Value, json};
use test_support::controller::{Launch, Launched};
use test_support::scrape::Scrape;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_ocp-controller");

/// Everything the controller wrote, as it wrote it (`Launched::log` strips colours).
fn raw_log(controller: &Launched) -> String {
    std::fs::read_to_string(&controller.launch().log).expect("the controller's log")
}

/// Heartbeats the controller's agent answered, by its own metrics.
async fn heartbeats(http: SocketAddr) -> f64 {
    Scrape::fetch(http).await.value(
        "ocp_controller_agent_call_duration_seconds",
        &[("method", "GetAgentInfo"), ("outcome", "ok")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_run_writes_no_colour_codes_and_no_line_per_heartbeat() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tag = unique_tag();
    let demo = workspace_bin("ocp-demo-proc");
    let sleeper = format!(
        "[[process]]\nalias = \"sleeper\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}\"]\n"
    );
    let agent = ProcAgent::start(listen, &[], tag, &sleeper).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = Launch::new(
        CONTROLLER,
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .default_logging()
    .args(["--heartbeat-interval", "100ms"])
    .start()
    .await;
    let password = controller.admin_password().expect("the admin's password");
    let rest = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", controller.base_url());

    let added: Value = rest
        .post(url("/compute/hosts"))
        .basic_auth("admin", Some(&password))
        .json(&json!({"innerIpAddress": "127.0.0.1", "agentPort": listen.port()}))
        .send()
        .await
        .expect("POST /compute/hosts")
        .json()
        .await
        .expect("JSON");
    assert_eq!(added["successful"], json!(true), "{added}");
    let refused = rest
        .get(url("/compute/hosts"))
        .basic_auth("admin", Some("not the password"))
        .send()
        .await
        .expect("GET with a wrong password");
    assert_eq!(refused.status(), 401);
    let deadline = tokio::time::Instant::now() + WAIT;
    while heartbeats(controller.http()).await < 20.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "twenty heartbeats never answered:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(controller.stop().success());

    let log = raw_log(&controller);
    assert!(!log.contains('\x1b'), "colour codes in the log:\n{log:?}");
    for words in [" WARN ", " INFO ", "shutting down"] {
        assert!(log.contains(words), "the log lacks {words:?}:\n{log}");
    }
    let lines = log.lines().count();
    assert!(lines < 20, "{lines} lines for twenty heartbeats:\n{log}");

    let agent_log = std::fs::read_to_string(agent.log_path()).expect("the agent's log");
    assert!(
        !agent_log.contains('\x1b'),
        "colour codes in the agent's log:\n{agent_log:?}"
    );
    let per_heartbeat: Vec<&str> = agent_log
        .lines()
        .filter(|l| l.contains("GetAgentInfo"))
        .collect();
    assert!(
        per_heartbeat.is_empty(),
        "the agent logs each heartbeat at INFO: {per_heartbeat:#?}"
    );
}

/// Polls until the controller exits; its status and every line it wrote.
async fn exit_of(mut controller: Launched) -> (std::process::ExitStatus, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = controller.try_exit() {
            return (status, raw_log(&controller));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller did not exit:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_named_once_in_one_line() {
    let Some(db) = Database::fresh("a_missing_postgres_database_is_named_once_in_one_line").await
    else {
        return;
    };
    let missing = format!("ocp_missing_{:08x}", rand::random::<u32>());
    let (server, _) = db.url.rsplit_once('/').expect("a database url");
    let dir = tempfile::tempdir().expect("tempdir");
    let users = write_users_file(dir.path());
    let controller = Launch::new(
        CONTROLLER,
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .default_logging()
    .users(&users)
    .arg("--database-url")
    .arg(format!("{server}/{missing}"))
    .spawn()
    .expect("spawn ocp-controller");
    let (status, log) = exit_of(controller).await;

    assert!(!status.success(), "{status}:\n{log}");
    let named: Vec<&str> = log.lines().filter(|l| l.contains(&missing)).collect();
    assert_eq!(named.len(), 1, "one line names the database:\n{log}");
    let line = named[0];
    assert!(line.starts_with("ocp-controller: "), "{line}");
    assert_eq!(line.matches(&missing).count(), 1, "named once: {line}");
    assert!(line.contains("does not exist"), "{line}");
    assert!(!log.contains('\x1b'), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_that_cannot_be_read_is_named_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users.toml");
    std::fs::create_dir(&users).expect("a folder where the file should be");
    let controller = Launch::new(
        CONTROLLER,
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .default_logging()
    .users(&users)
    .spawn()
    .expect("spawn ocp-controller");
    let (status, log) = exit_of(controller).await;

    assert!(!status.success(), "{status}:\n{log}");
    let line = log.lines().last().unwrap_or_default();
    assert!(line.starts_with("ocp-controller: "), "{log}");
    assert!(line.contains(&users.display().to_string()), "{line}");
    let cause = "Is a directory (os error 21)";
    assert_eq!(line.matches(cause).count(), 1, "the cause once: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_with_a_users_file_no_data_dir_is_made() {
    let Some(db) = Database::fresh("on_postgres_with_a_users_file_no_data_dir_is_made").await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let users = write_users_file(dir.path());
    let data_dir = dir.path().join("never-made");
    let mut controller = Launch::new(CONTROLLER, &data_dir, &dir.path().join("controller.log"))
        .users(&users)
        .arg("--database-url")
        .arg(&db.url)
        .start()
        .await;
    let hosts = reqwest::Client::new()
        .get(format!("{}/compute/hosts", controller.base_url()))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("GET /compute/hosts");
    assert_eq!(hosts.status(), 200);
    assert!(!exists(&data_dir), "{} was made", data_dir.display());
    assert!(controller.stop().success(), "{}", controller.log());
    assert!(!exists(&data_dir), "{} was made", data_dir.display());
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
