//! One side speaking TLS and the other not, said in plain words against the real
//! binaries: a controller without --pki-dir names the agent that speaks TLS in the
//! host's reason and the step's log, and one with it the agent that does not; a plain
//! `http://` request to the HTTPS port gets a 400 saying so, and an HTTP/2 client
//! without TLS a GOAWAY saying so; a plaintext client that stalls there is still closed
//! within the header timeout.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::fleet::{WAIT, free_port, workspace_bin};
use common::proc_agent::{AgentTls, ProcAgent, unique_tag};
use serde_json::{Value, json};
use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trust::pki;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_ocp-controller");

/// A real agent on 127.0.0.1 serving mutual TLS with a certificate of `pki`.
async fn tls_agent(pki: &TestPki) -> ProcAgent {
    let certs = pki.issue("127.0.0.1");
    let controller = pki.controller_client().await;
    let tag = unique_tag();
    let demo = workspace_bin("ocp-demo-proc");
    let sleeper = format!(
        "[[process]]\nalias = \"sleeper\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}\"]\n"
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    ProcAgent::start_tls(
        listen,
        tag,
        &sleeper,
        AgentTls::issued_in(&certs, Some(controller)),
    )
    .await
}

/// The controller's REST face as the bootstrap admin, over plain HTTP.
struct Rest<'a> {
    controller: &'a Launched,
    password: String,
    client: reqwest::Client,
}

impl Rest<'_> {
    fn new(controller: &Launched) -> Rest<'_> {
        Rest {
            password: controller.admin_password().expect("the admin's password"),
            controller,
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.controller.base_url());
        let mut request = self
            .client
            .request(method, url)
            .basic_auth("admin", Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .expect("a REST call")
            .json()
            .await
            .expect("JSON");
        assert_eq!(reply["successful"], json!(true), "{path}: {reply}");
        reply["data"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_controller_names_the_agent_that_speaks_tls() {
    let pki = TestPki::new();
    let agent = tls_agent(&pki).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Launch::new(
        CONTROLLER,
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .log_filter("info")
    .args(["--heartbeat-interval", "200ms"])
    .start()
    .await;
    let rest = Rest::new(&controller);
    let words = "the agent at 127.0.0.1 speaks TLS; start the controller with --pki-dir";

    let host = rest
        .send(
            reqwest::Method::POST,
            "/compute/hosts",
            Some(json!({"innerIpAddress": "127.0.0.1", "agentPort": agent.addr.port()})),
        )
        .await;
    let host = host["id"].as_i64().expect("host id");
    let task = rest
        .send(
            reqwest::Method::POST,
            &format!("/compute/hosts/{host}/agent/restart"),
            None,
        )
        .await;
    let id = task["id"].as_i64().expect("task id");
    let deadline = tokio::time::Instant::now() + WAIT;
    let task = loop {
        let task = rest.get(&format!("/tasks/instances/{id}")).await;
        if task["status"] != json!("RUNNING") {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(task["status"], json!("FAILED"), "{task}");
    let mut logs = String::new();
    for subtask in task["subtasks"].as_array().expect("subtasks") {
        if subtask["status"] == json!("FAILED") {
            let path = format!("/tasks/instances/{id}/subtasks/{}/log", subtask["id"]);
            logs.push_str(rest.get(&path).await["log"].as_str().unwrap_or_default());
        }
    }
    assert!(
        logs.contains(words),
        "the step's log lacks {words:?}:\n{logs}"
    );
    assert!(!logs.contains("h2 protocol error"), "{logs}");

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let host = rest.get(&format!("/compute/hosts/{host}")).await;
        let reason = host["statusReason"].as_str().unwrap_or_default();
        if reason == words {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the host's reason never named TLS: {host}\n{}",
            controller.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_controller_names_the_agent_that_does_not_speak_tls() {
    let pki = TestPki::new();
    let tag = unique_tag();
    let demo = workspace_bin("ocp-demo-proc");
    let sleeper = format!(
        "[[process]]\nalias = \"sleeper\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}\"]\n"
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let agent = ProcAgent::start(listen, &[], tag, &sleeper).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = Launch::new(
        CONTROLLER,
        &dir.path().join("data"),
        &dir.path().join("controller.log"),
    )
    .arg("--pki-dir")
    .arg(pki.controller_dir())
    .args(["--heartbeat-interval", "200ms"])
    .start()
    .await;
    let rest = Rest::new(&controller);

    let host = rest
        .send(
            reqwest::Method::POST,
            "/compute/hosts",
            Some(json!({"innerIpAddress": "127.0.0.1", "agentPort": agent.addr.port()})),
        )
        .await;
    let host = host["id"].as_i64().expect("host id");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let host = rest.get(&format!("/compute/hosts/{host}")).await;
        let reason = host["statusReason"].as_str().unwrap_or_default();
        if reason.starts_with("the agent at 127.0.0.1 does not speak TLS: start it with --tls-cert")
            && reason.contains("or the controller without --pki-dir")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the host's reason never said the agent has no TLS: {host}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller serving both faces over TLS with `pki`'s certificate.
async fn tls_controller(pki: &TestPki, dir: &Path) -> Launched {
    Launch::new(CONTROLLER, &dir.join("data"), &dir.join("controller.log"))
        .tls(
            &pki.controller_file(pki::CONTROLLER_CERT),
            &pki.controller_file(pki::CONTROLLER_KEY),
            &pki.file(pki::CA_CERT),
        )
        .env("OCP_HEADER_TIMEOUT", "1s")
        .start()
        .await
}

/// Everything the server sends on `tcp` until it closes, within [`WAIT`].
async fn until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read the answer");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_https_port_is_told_to_use_https() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = tls_controller(&pki, dir.path()).await;
    let plain = format!("http://{}/compute/hosts", controller.http());

    // As curl sends it.
    let refused = reqwest::get(&plain).await.expect("an HTTP answer");
    assert_eq!(refused.status(), 400);
    let body = refused.text().await.expect("body");
    assert!(
        body.contains("HTTPS") && body.contains("https://"),
        "{body}"
    );

    // Answered once, then closed.
    let mut tcp = TcpStream::connect(controller.http())
        .await
        .expect("connect");
    tcp.write_all(b"GET /compute/hosts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send a request");
    let answer = String::from_utf8(until_closed(&mut tcp).await).expect("text");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");

    // HTTPS on the same port is served as before.
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.file(pki::CA_CERT)).expect("CA"))
                .expect("CA pem"),
        )
        .build()
        .expect("HTTPS client");
    let served = https
        .get(format!("https://{}/api/v2/openapi.json", controller.http()))
        .send()
        .await
        .expect("GET over HTTPS");
    assert_eq!(served.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_without_tls_gets_a_goaway_saying_the_port_speaks_tls() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = tls_controller(&pki, dir.path()).await;

    let tcp = TcpStream::connect(controller.grpc())
        .await
        .expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 preface");
    let driven = tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/ocp.v1.HostAgentService/ListHosts",
        controller.grpc()
    ))
    .header("content-type", "application/grpc")
    .body(())
    .expect("request");
    let refused = async {
        let (response, _) = client.send_request(request, true)?;
        response.await
    };
    let error = tokio::time::timeout(WAIT, refused)
        .await
        .expect("an answer")
        .expect_err("refused");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::INADEQUATE_SECURITY),
        "{error}"
    );
    assert!(error.is_go_away() && error.is_remote(), "{error:?}");
    assert!(error.to_string().contains("HTTPS"), "{error}");
    driven.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_stalling_on_the_https_port_is_closed_unanswered() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = tls_controller(&pki, dir.path()).await;

    let since = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(controller.http())
        .await
        .expect("connect");
    tcp.write_all(b"GET /compute/hosts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send half a head");
    let answer = until_closed(&mut tcp).await;
    // The header timeout is 1 s; far more than any machine needs to notice it.
    let took = since.elapsed();
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    assert!(
        answer.is_empty(),
        "a half-sent head is not answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
}
