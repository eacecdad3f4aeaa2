//! Mutual TLS against the real binaries (docs/trust.md): who an agent refuses, and that
//! its processes are untouched; a batch restart driven over mutual TLS; an agent with
//! another host's or an expired certificate, named in the step log and the host's
//! reason; rotation by SIGHUP on both binaries; the guard against plaintext on a public
//! address; and the `pki` commands as an operator runs them.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fleet::{WAIT, free_port, workspace_bin};
use common::proc_agent::{AgentTls, ProcAgent, listener_process, unique_tag};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::agent::v1::{BulkRequest, GetAgentInfoRequest, ProcessStatus};
use serde_json::{Value, json};
use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;
use trust::pki::{self, Validity};
use trust::{ClientTls, ClientTlsFiles, Role};

/// A CA and the controller's certificate, as `pki init` writes them.
struct Pki(TestPki);

impl Pki {
    fn new() -> Pki {
        Pki(TestPki::new())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.file(name)
    }

    /// An agent's certificate for `host`, in its own folder.
    fn issue(&self, host: &str, validity: Validity) -> PathBuf {
        self.0.issue_for(host, validity)
    }

    /// A client of agents holding `identity` (a certificate and key), trusting this CA.
    async fn client(&self, identity: Option<(PathBuf, PathBuf)>) -> ClientTls {
        ClientTls::load(
            ClientTlsFiles {
                ca: self.file(pki::CA_CERT),
                identity,
            },
            Role::Agent,
        )
        .await
        .expect("client TLS")
    }

    /// The controller's folder, its `--pki-dir`.
    fn controller_dir(&self) -> PathBuf {
        self.0.controller_dir()
    }

    fn controller_identity(&self) -> Option<(PathBuf, PathBuf)> {
        Some((
            self.0.controller_file(pki::CONTROLLER_CERT),
            self.0.controller_file(pki::CONTROLLER_KEY),
        ))
    }
}

use test_support::pki::month;

/// A real agent on `ip` serving the certificate in `certs` (an `issue` folder).
async fn tls_agent(pki: &Pki, ip: &str, certs: &Path) -> ProcAgent {
    agent_serving(ip, certs, Some(pki.0.controller_client().await)).await
}

/// A real agent on `ip` serving `certs`, which the controller is meant to refuse.
async fn refused_agent(ip: &str, certs: &Path) -> ProcAgent {
    let agent = agent_serving(ip, certs, None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while agent.live_copies("listener").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent
}

async fn agent_serving(ip: &str, certs: &Path, client: Option<ClientTls>) -> ProcAgent {
    let listen: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    let tag = unique_tag();
    let config = listener_process(&tag, ip, "");
    ProcAgent::start_tls(listen, tag, &config, AgentTls::issued_in(certs, client)).await
}

/// Asks the agent to stop every process through `client`, on a new connection.
async fn stop_all_through(agent: &ProcAgent, client: Option<ClientTls>) -> Result<(), String> {
    let endpoint = match &client {
        Some(_) => format!("https://{}", agent.addr),
        None => format!("http://{}", agent.addr),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let channel = match client {
        Some(tls) => {
            let connector = tls
                .connector(&agent.addr.ip().to_string())
                .expect("connector");
            endpoint.connect_with_connector(connector).await
        }
        None => endpoint.connect().await,
    }
    .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = proto::agent::v1::agent_service_client::AgentServiceClient::new(channel);
    client
        .stop_all(BulkRequest { timeout_ms: 5_000 })
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_serves_the_controller_and_refuses_everyone_else() {
    let pki = Pki::new();
    let certs = pki.issue("127.0.0.1", month());
    let agent = tls_agent(&pki, "127.0.0.1", &certs).await;
    let (pid, status) = agent.listener().await;
    assert_eq!(status, ProcessStatus::Started);

    let stranger = Pki::new();
    let other_agent = pki.issue("127.0.0.9", month());
    let refused = [
        ("a plaintext client", None),
        (
            "a TLS client without a certificate",
            Some(pki.client(None).await),
        ),
        (
            "a client whose certificate another CA issued for a controller",
            Some(pki.client(stranger.controller_identity()).await),
        ),
        (
            "a client holding another agent's certificate",
            Some(
                pki.client(Some((
                    other_agent.join(pki::AGENT_CERT),
                    other_agent.join(pki::AGENT_KEY),
                )))
                .await,
            ),
        ),
    ];
    for (who, client) in refused {
        let outcome = stop_all_through(&agent, client).await;
        assert!(outcome.is_err(), "{who} was served: StopAll succeeded");
        let (now, status) = agent.listener().await;
        assert_eq!(
            (now, status),
            (pid, ProcessStatus::Started),
            "after {who} ({outcome:?}) the agent's process changed"
        );
    }
    // Each refusal is the handshake's (none got as far as a call), and is logged.
    let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
    for words in [
        "the client presented no certificate",
        "the client's certificate was not issued by the CA this side trusts",
        "the client's certificate is not for client use",
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains("TLS handshake refused") && line.contains(words)),
            "the agent's log does not show the refusal {words:?}:\n{log}"
        );
    }
    assert!(
        !log.contains("method=\"StopAll\""),
        "a refused client reached StopAll:\n{log}"
    );

    // The controller's certificate is served: the same call from it does stop.
    stop_all_through(&agent, Some(pki.client(pki.controller_identity()).await))
        .await
        .expect("the controller is served");
    assert_eq!(agent.listener().await.1, ProcessStatus::Stopped);
}

/// `ocp-controller` as an operator starts it with a PKI: mutual TLS to the agents and
/// HTTPS on its REST port, over which the test drives it.
struct TlsController {
    launched: Launched,
    http: SocketAddr,
    grpc: SocketAddr,
    _dir: tempfile::TempDir,
    password: String,
}

impl TlsController {
    async fn start(pki_dir: &Path) -> TlsController {
        let dir = tempfile::tempdir().expect("tempdir");
        let launched = Launch::new(
            env!("CARGO_BIN_EXE_ocp-controller"),
            &dir.path().join("data"),
            &dir.path().join("controller.log"),
        )
        .log_filter("info")
        .arg("--pki-dir")
        .arg(pki_dir)
        .arg("--tls-cert")
        .arg(pki_dir.join(pki::CONTROLLER_CERT))
        .arg("--tls-key")
        .arg(pki_dir.join(pki::CONTROLLER_KEY))
        .args(["--heartbeat-interval", "1s"])
        .spawn()
        .expect("spawn ocp-controller");
        let mut controller = TlsController {
            http: launched.http(),
            grpc: launched.grpc(),
            launched,
            _dir: dir,
            password: String::new(),
        };
        let password_file = controller.launched.launch().data_dir.join("admin-password");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(password) = std::fs::read_to_string(&password_file) {
                controller.password = password.trim().to_string();
                let ca = pki_dir.join(pki::CA_CERT);
                if controller.get(&ca, "/compute/hosts").await.is_ok() {
                    return controller;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller never served HTTPS:\n{}",
                controller.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        self.launched.log()
    }

    /// A new HTTPS client trusting only `ca`: a new connection, with the certificate the
    /// controller serves now.
    fn https(ca: &Path) -> reqwest::Client {
        let pem = std::fs::read(ca).expect("read CA");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("https client")
    }

    async fn send(
        &self,
        ca: &Path,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Result<Value> {
        let url = format!("https://{}{path}", self.http);
        let request = Self::https(ca).request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request
            .basic_auth("admin", Some(&self.password))
            .send()
            .await?
            .json()
            .await
    }

    async fn get(&self, ca: &Path, path: &str) -> reqwest::Result<Value> {
        self.send(ca, reqwest::Method::GET, path, None).await
    }

    /// POSTs `body`, or no body at all for the routes that take none.
    async fn post(&self, ca: &Path, path: &str, body: Option<Value>) -> Value {
        let reply = self
            .send(ca, reqwest::Method::POST, path, body)
            .await
            .expect("POST");
        assert_eq!(reply["successful"], json!(true), "POST {path}: {reply}");
        reply["data"].clone()
    }

    /// Submits a task and waits for its end.
    async fn run_task(&self, ca: &Path, path: &str, body: Option<Value>) -> Value {
        let task = self.post(ca, path, body).await;
        self.wait_task(ca, task["id"].as_i64().expect("task id"))
            .await
    }

    async fn add_host(&self, ca: &Path, agent: &ProcAgent) -> i64 {
        let host = self
            .post(
                ca,
                "/compute/hosts",
                Some(json!({"innerIpAddress": agent.addr.ip().to_string(), "agentPort": agent.addr.port()})),
            )
            .await;
        host["id"].as_i64().expect("host id")
    }

    async fn wait_task(&self, ca: &Path, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let task = self
                .get(ca, &format!("/tasks/instances/{id}"))
                .await
                .expect("GET task");
            if task["data"]["status"] != json!("RUNNING") {
                return task["data"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} still RUNNING: {task}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The logs of the task's FAILED subtasks, joined.
    async fn failure_logs(&self, ca: &Path, task: &Value) -> String {
        let mut logs = String::new();
        for subtask in task["subtasks"].as_array().expect("subtasks") {
            if subtask["status"] == json!("FAILED") {
                let path = format!(
                    "/tasks/instances/{}/subtasks/{}/log",
                    task["id"], subtask["id"]
                );
                let log = self.get(ca, &path).await.expect("GET log");
                logs.push_str(log["data"]["log"].as_str().unwrap_or_default());
            }
        }
        logs
    }

    fn signal(&self, signal: Signal) {
        self.launched.signal(signal);
    }
}

impl Drop for TlsController {
    fn drop(&mut self) {
        self.launched.stop_within(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_drives_agents_over_mutual_tls_and_names_a_wrong_certificate() {
    let pki = Pki::new();
    let ca = pki.file(pki::CA_CERT);
    let good = [
        tls_agent(&pki, "127.0.0.2", &pki.issue("127.0.0.2", month())).await,
        tls_agent(&pki, "127.0.0.3", &pki.issue("127.0.0.3", month())).await,
    ];
    // An agent on 127.0.0.4 that serves 127.0.0.2's certificate, and one whose
    // certificate expired yesterday.
    let imposter = refused_agent("127.0.0.4", &pki.path().join("agents/127.0.0.2")).await;
    let now = time::OffsetDateTime::now_utc();
    let yesterday = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let expired = refused_agent("127.0.0.5", &pki.issue("127.0.0.5", yesterday)).await;

    let controller = TlsController::start(&pki.controller_dir()).await;
    let before: Vec<u32> = futures::future::join_all(good.iter().map(ProcAgent::listener))
        .await
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    let mut ids = Vec::new();
    for agent in &good {
        ids.push(controller.add_host(&ca, agent).await);
    }
    let task = controller
        .run_task(
            &ca,
            "/compute/hosts/batchRestartAgents",
            Some(json!({"hostIds": ids})),
        )
        .await;
    assert_eq!(
        task["status"],
        json!("SUCCESSFUL"),
        "batch restart over mutual TLS: {}",
        controller.failure_logs(&ca, &task).await
    );
    for (agent, before) in good.iter().zip(before) {
        let (after, status) = agent.listener().await;
        assert_eq!(status, ProcessStatus::Started);
        assert_ne!(
            after, before,
            "the listener on {} was not restarted",
            agent.addr
        );
    }

    for (agent, words) in [
        (
            &imposter,
            "the agent at 127.0.0.4 presented a certificate for 127.0.0.2".to_string(),
        ),
        (
            &expired,
            "the agent at 127.0.0.5 presented a certificate that expired at".to_string(),
        ),
    ] {
        let pids = agent.live_copies("listener");
        let host = controller.add_host(&ca, agent).await;
        let task = controller
            .run_task(&ca, &format!("/compute/hosts/{host}/agent/restart"), None)
            .await;
        assert_eq!(task["status"], json!("FAILED"));
        let logs = controller.failure_logs(&ca, &task).await;
        assert!(logs.contains(&words), "step log lacks {words:?}:\n{logs}");
        assert_eq!(
            agent.live_copies("listener"),
            pids,
            "{} was touched",
            agent.addr
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let host = controller
                .get(&ca, &format!("/compute/hosts/{host}"))
                .await
                .expect("GET host");
            let reason = host["data"]["statusReason"].as_str().unwrap_or_default();
            if reason.contains(&words) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the host's reason never named the certificate: {host}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The gRPC face serves TLS on its port too, with the same reasons.
    let tls = ClientTls::load(
        ClientTlsFiles {
            ca: ca.clone(),
            identity: None,
        },
        Role::Controller,
    )
    .await
    .expect("client TLS");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", controller.grpc))
        .expect("uri")
        .connect_with_connector(tls.connector("127.0.0.1").expect("connector"))
        .await
        .expect("gRPC over TLS");
    let auth = controller::auth::BasicAuth::new("admin", &controller.password).expect("auth");
    let hosts =
        proto::ocp::v1::host_agent_service_client::HostAgentServiceClient::with_interceptor(
            channel, auth,
        )
        .list_hosts(proto::ocp::v1::ListHostsRequest::default())
        .await
        .expect("ListHosts over TLS")
        .into_inner();
    let reasons: Vec<&str> = hosts
        .contents
        .iter()
        .map(|h| h.status_reason.as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("presented a certificate for 127.0.0.2")),
        "{reasons:?}"
    );
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", controller.grpc))
        .expect("uri")
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let refused =
            proto::ocp::v1::host_agent_service_client::HostAgentServiceClient::new(channel)
                .list_hosts(proto::ocp::v1::ListHostsRequest::default())
                .await;
        assert!(
            refused.is_err(),
            "plaintext gRPC was served on the TLS port"
        );
    }

    // The metrics are served over HTTPS on the REST port, to a scraper without
    // credentials; the calls the agents' certificates made fail count as untrusted.
    let metrics = TlsController::https(&ca)
        .get(format!("https://{}/metrics", controller.http))
        .send()
        .await
        .expect("GET /metrics over HTTPS");
    let scrape = common::metrics::Scrape::answer(metrics).await;
    let tasks = "ocp_controller_tasks";
    assert_eq!(scrape.value(tasks, &[("status", "SUCCESSFUL")]), 1.0);
    assert_eq!(scrape.value(tasks, &[("status", "FAILED")]), 2.0);
    let untrusted = scrape.value(
        "ocp_controller_agent_call_duration_seconds",
        &[("outcome", "untrusted")],
    );
    assert!(
        untrusted >= 2.0,
        "calls refused for a certificate: {untrusted}"
    );
}

fn copy_into(from: &Path, files: &[(&str, &str)], to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for (source, target) in files {
        std::fs::copy(from.join(source), to.join(target)).expect("copy certificate file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_certificates_on_both_binaries_without_a_restart() {
    // The files both binaries read, first from CA "old", then overwritten by CA "new".
    let old = Pki::new();
    let new = Pki::new();
    let live = tempfile::tempdir().expect("tempdir");
    let controller_dir = live.path().join("controller");
    let agent_dir = live.path().join("agent");
    let controller_files = [
        (pki::CA_CERT, pki::CA_CERT),
        (pki::CONTROLLER_CERT, pki::CONTROLLER_CERT),
        (pki::CONTROLLER_KEY, pki::CONTROLLER_KEY),
    ];
    let agent_files = [
        (pki::AGENT_CERT, pki::AGENT_CERT),
        (pki::AGENT_KEY, pki::AGENT_KEY),
        (pki::CA_CERT, pki::CA_CERT),
    ];
    copy_into(&old.controller_dir(), &controller_files, &controller_dir);
    copy_into(&old.issue("127.0.0.6", month()), &agent_files, &agent_dir);
    let new_agent_certs = new.issue("127.0.0.6", month());

    let agent = tls_agent(&old, "127.0.0.6", &agent_dir).await;
    let controller = TlsController::start(&controller_dir).await;
    let (old_ca, new_ca) = (old.file(pki::CA_CERT), new.file(pki::CA_CERT));
    let host = controller.add_host(&old_ca, &agent).await;
    let restart = |ca: PathBuf| {
        let controller = &controller;
        async move {
            controller
                .run_task(&ca, &format!("/compute/hosts/{host}/agent/restart"), None)
                .await
        }
    };
    // The controller now holds an open connection to the agent.
    assert_eq!(restart(old_ca.clone()).await["status"], json!("SUCCESSFUL"));

    // The agent rotates first, to the new CA: it serves holders of the new controller
    // certificate only, and closes the open connection of the old one (revocation).
    copy_into(&new_agent_certs, &agent_files, &agent_dir);
    let pid = i32::try_from(agent.pid().expect("agent pid")).expect("pid");
    // The agent child the test started and has not reaped.
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP the agent");
    let as_new = new.client(new.controller_identity()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while info_through(&agent, &as_new).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never served the new certificate:\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let as_old = old.client(old.controller_identity()).await;
    assert!(
        info_through(&agent, &as_old).await.is_err(),
        "the agent still serves a controller of the old CA"
    );
    let failed = restart(old_ca.clone()).await;
    assert_eq!(
        failed["status"],
        json!("FAILED"),
        "the old controller certificate still commands the agent over its open connection"
    );
    let logs = controller.failure_logs(&old_ca, &failed).await;
    assert!(
        logs.contains(
            "the agent at 127.0.0.6 presented a certificate not issued by this controller's CA"
        ),
        "{logs}"
    );
    assert!(
        agent
            .log_tail()
            .contains("closing a connection the reloaded trust refuses"),
        "{}",
        agent.log_tail()
    );

    // Then the controller: its HTTPS face presents the new certificate, and the failed
    // task's retry reaches the agent with the new controller certificate.
    copy_into(&new.controller_dir(), &controller_files, &controller_dir);
    controller.signal(Signal::SIGHUP);
    let deadline = tokio::time::Instant::now() + WAIT;
    while controller.get(&new_ca, "/compute/hosts").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller's HTTPS face never presented the new certificate:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        controller.get(&old_ca, "/compute/hosts").await.is_err(),
        "a client trusting only the old CA still reached the controller"
    );
    let retried = controller
        .run_task(
            &new_ca,
            &format!("/tasks/instances/{}/retry", failed["id"]),
            None,
        )
        .await;
    assert_eq!(
        retried["status"],
        json!("SUCCESSFUL"),
        "{}",
        controller.failure_logs(&new_ca, &retried).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_never_ends_a_plaintext_agent() {
    let tag = unique_tag();
    let config = listener_process(&tag, "127.0.0.1", "");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let agent = ProcAgent::start(listen, &[], tag, &config).await;
    let pid = i32::try_from(agent.pid().expect("agent pid")).expect("pid");
    // The agent child the test started and has not reaped.
    kill(Pid::from_raw(pid), Signal::SIGHUP).expect("SIGHUP the agent");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.log_tail().contains("no TLS files to reload") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.listener().await.1, ProcessStatus::Started);
}

async fn info_through(agent: &ProcAgent, tls: &ClientTls) -> Result<(), String> {
    let connector = tls
        .connector(&agent.addr.ip().to_string())
        .expect("connector");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", agent.addr))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))?;
    proto::agent::v1::agent_service_client::AgentServiceClient::new(channel)
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

#[test]
fn a_plaintext_agent_on_a_public_address_exits_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent.toml"), "[agent]\n").expect("config");
    let run = |extra: &[&str]| {
        Command::new(workspace_bin("ocp-agent"))
            .args(["--listen", &format!("0.0.0.0:{}", free_port())])
            .arg("--config")
            .arg(dir.path().join("agent.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .expect("run ocp-agent")
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains("refusing to serve plaintext on 0.0.0.0") && stderr.contains("--tls-cert"),
        "{stderr}"
    );

    // Half the TLS flags is a usage error, not a silent fallback to plaintext.
    let half = run(&["--tls-cert", "agent.pem"]);
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-key"));
}

fn pki_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .arg("pki")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-controller pki")
}

#[test]
fn pki_commands_write_private_keys_0600_and_never_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    let pki_arg = pki_dir.to_str().expect("utf-8 path");
    let agents = dir.path().join("agents/10.0.0.5");
    let agents_arg = agents.to_str().expect("utf-8 path");

    let issue = [
        "issue", "--dir", pki_arg, "--host", "10.0.0.5", "--out", agents_arg,
    ];
    let before_init = pki_command(&issue);
    assert!(!before_init.status.success());
    assert!(String::from_utf8_lossy(&before_init.stderr).contains("pki init"));

    // Under a umask that would keep the CA certificate from everyone else.
    let init = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 077 && exec "$0" pki init --dir "$1" --host 127.0.0.1"#)
        .arg(env!("CARGO_BIN_EXE_ocp-controller"))
        .arg(pki_arg)
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-controller pki init");
    assert!(init.status.success(), "{init:?}");
    let said = String::from_utf8_lossy(&init.stdout);
    let controller_dir = pki_dir.join(pki::CONTROLLER_DIR);
    assert!(
        said.contains("ca-key.pem")
            && said.contains("ocp-controller pki issue")
            && said.contains(&format!("chown -R ocp:ocp {}", controller_dir.display()))
            && said.contains(&format!("--pki-dir {}", controller_dir.display())),
        "{said}"
    );
    // The CA at the top, root's key 0600; the controller's files in a folder of their
    // own, which is all its service user is given; the top traversable to reach it.
    for (path, mode) in [
        (pki_dir.clone(), 0o755),
        (pki_dir.join(pki::CA_CERT), 0o644),
        (pki_dir.join(pki::CA_KEY), 0o600),
        (controller_dir.clone(), 0o700),
        (controller_dir.join(pki::CONTROLLER_CERT), 0o644),
        (controller_dir.join(pki::CONTROLLER_KEY), 0o600),
        (controller_dir.join(pki::CA_CERT), 0o644),
    ] {
        let meta = std::fs::metadata(&path).expect("written");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "{}",
            path.display()
        );
    }
    assert_eq!(
        std::fs::read(controller_dir.join(pki::CA_CERT)).expect("copy"),
        std::fs::read(pki_dir.join(pki::CA_CERT)).expect("CA"),
    );
    assert!(!controller_dir.join(pki::CA_KEY).exists());

    let ca = std::fs::read(pki_dir.join(pki::CA_KEY)).expect("CA key");
    let again = pki_command(&["init", "--dir", pki_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(pki_dir.join(pki::CA_KEY)).expect("CA key"),
        ca
    );

    let issued = pki_command(&issue);
    assert!(issued.status.success(), "{issued:?}");
    assert!(String::from_utf8_lossy(&issued.stdout).contains("--tls-client-ca"));
    let key_mode = std::fs::metadata(agents.join(pki::AGENT_KEY))
        .expect("agent key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let cert = std::fs::read(agents.join(pki::AGENT_CERT)).expect("agent cert");
    assert!(
        !pki_command(&issue).status.success(),
        "overwrote without --force"
    );
    assert_eq!(
        std::fs::read(agents.join(pki::AGENT_CERT)).expect("cert"),
        cert
    );
    let mut forced = issue.to_vec();
    forced.push("--force");
    assert!(pki_command(&forced).status.success());
    assert_ne!(
        std::fs::read(agents.join(pki::AGENT_CERT)).expect("cert"),
        cert
    );

    let bad = pki_command(&[
        "issue",
        "--dir",
        pki_arg,
        "--host",
        "not a host",
        "--out",
        agents_arg,
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a host"));

    // Flags that make no sense for the role are refused, saying why, writing nothing.
    let out = dir.path().join("nonsense");
    let out_arg = out.to_str().expect("utf-8 path");
    for (args, words) in [
        (
            vec!["--role", "agent"],
            "a certificate for an agent (--role agent) needs at least one --host",
        ),
        (
            vec!["--host", "10.0.0.5", "--name", "alice"],
            "--name is for --role operator",
        ),
        (
            vec!["--role", "controller"],
            "(--role controller) needs at least one --host",
        ),
        (
            vec!["--role", "operator", "--host", "10.0.0.5"],
            "--role operator takes no --host",
        ),
        (
            vec!["--role", "operator", "--name", ""],
            "--name \"\" must be",
        ),
        (
            vec!["--role", "auditor"],
            "invalid value 'auditor' for '--role",
        ),
    ] {
        let mut command = vec!["issue", "--dir", pki_arg, "--out", out_arg];
        command.extend(&args);
        let refused = pki_command(&command);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
