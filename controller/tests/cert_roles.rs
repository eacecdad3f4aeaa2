//! Certificate roles and the PKI layout against the real binaries (docs/trust.md): a
//! controller certificate renewed with `pki issue --role controller` and loaded by
//! SIGHUP, served on the HTTPS face and trusted by every agent; an operator's
//! certificate that reads an agent and is refused everything else; and a controller run
//! as an unprivileged service user, given only its folder of the PKI, that serves and
//! cannot read the CA key.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::fleet::{WAIT, free_port};
use common::proc_agent::{AgentTls, ProcAgent, listener_process, unique_tag};
use nix::sys::signal::Signal;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use proto::agent::v1::{
    BulkRequest, GetAgentInfoRequest, ListProcessesRequest, ProcessRequest, ProcessStatus,
    TailLogRequest,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;
use tonic::transport::{Channel, Endpoint};
use trust::pki;
use trust::{ClientTls, ClientTlsFiles, Role};

/// `ocp-controller pki ARGS...`, run as the operator runs it.
fn pki_command(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocp-controller"))
        .arg("pki")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ocp-controller pki")
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A client of agents trusting `ca`, holding `identity` (a certificate and its key).
async fn agents_client(ca: &Path, identity: (PathBuf, PathBuf)) -> ClientTls {
    ClientTls::load(
        ClientTlsFiles {
            ca: ca.to_path_buf(),
            identity: Some(identity),
        },
        Role::Agent,
    )
    .await
    .expect("client TLS")
}

fn controller_identity(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join(pki::CONTROLLER_CERT),
        dir.join(pki::CONTROLLER_KEY),
    )
}

/// A real agent on `ip`, serving an agent certificate the CA in `pki_dir` issues for
/// it, supervising one listener that logs to a file; the test reaches it as `client`.
async fn agent_on(pki_dir: &Path, ip: &str, client: ClientTls) -> ProcAgent {
    let certs = pki_dir.join("agents").join(ip);
    let holder = pki::Holder::new(Role::Agent, vec![ip.to_string()], None).expect("holder");
    pki::issue(pki_dir, &holder, &certs, test_support::pki::month(), true).expect("issue");
    let listen: SocketAddr = format!("{ip}:{}", free_port()).parse().expect("addr");
    let tag = unique_tag();
    let config = listener_process(&tag, ip, "log_file = \"log/listener.log\"\n");
    let agent = ProcAgent::start_tls(
        listen,
        tag,
        &config,
        AgentTls::issued_in(&certs, Some(client)),
    )
    .await;
    agent.started_listener().await;
    agent
}

/// A new connection to `agent` as the holder of `tls`.
async fn channel_to(agent: &ProcAgent, tls: &ClientTls) -> Channel {
    let connector = tls
        .connector(&agent.addr.ip().to_string())
        .expect("connector");
    Endpoint::from_shared(format!("https://{}", agent.addr))
        .expect("uri")
        .timeout(Duration::from_secs(30))
        .connect_with_connector(connector)
        .await
        .expect("a TLS connection to the agent")
}

/// The leaf certificate in a PEM file.
fn leaf_of(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .expect("read certificate")
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// The certificate the TLS face at `addr` presents now, on a new connection, to a
/// client trusting `ca`.
async fn served_certificate(
    addr: SocketAddr,
    ca: &Path,
) -> Result<CertificateDer<'static>, String> {
    let tls = ClientTls::load(
        ClientTlsFiles {
            ca: ca.to_path_buf(),
            identity: None,
        },
        Role::Controller,
    )
    .await
    .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ClientTls::server_name(&addr.ip().to_string()).map_err(|e| e.to_string())?;
    let stream = tls.handshake(name, tcp).await.map_err(|e| e.to_string())?;
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(chain[0].clone().into_owned())
}

/// Waits until the controller's HTTPS face presents the certificate in `cert`.
async fn wait_served(controller: &Launched, ca: &Path, cert: &Path) {
    let wanted = leaf_of(cert);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let served = served_certificate(controller.http(), ca).await;
        if served.as_ref() == Ok(&wanted) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the HTTPS face never presented {} (last: {:?}):\n{}",
            cert.display(),
            served.map(|_| "another certificate"),
            controller.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The REST face over HTTPS as the bootstrap admin.
struct Rest {
    client: reqwest::Client,
    base: String,
    password: String,
}

impl Rest {
    fn new(controller: &Launched, ca: &Path) -> Rest {
        let pem = std::fs::read(ca).expect("read CA");
        Rest {
            client: reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"))
                .timeout(Duration::from_secs(30))
                .build()
                .expect("https client"),
            base: controller.base_url(),
            password: controller.admin_password().expect("admin password"),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth("admin", Some(&self.password));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let reply: Value = request
            .send()
            .await
            .expect("REST call")
            .json()
            .await
            .expect("JSON");
        assert_eq!(reply["successful"], json!(true), "{path}: {reply}");
        reply["data"].clone()
    }

    async fn add_host(&self, agent: &ProcAgent) -> i64 {
        let body = json!({
            "innerIpAddress": agent.addr.ip().to_string(),
            "agentPort": agent.addr.port(),
        });
        let host = self
            .send(reqwest::Method::POST, "/compute/hosts", Some(body))
            .await;
        host["id"].as_i64().expect("host id")
    }

    /// Restarts the host's processes through its agent; the finished task.
    async fn restart(&self, host: i64) -> Value {
        let path = format!("/compute/hosts/{host}/agent/restart");
        let task = self.send(reqwest::Method::POST, &path, None).await;
        let id = task["id"].as_i64().expect("task id");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let path = format!("/tasks/instances/{id}");
            let task = self.send(reqwest::Method::GET, &path, None).await;
            if task["status"] != json!("RUNNING") {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} still RUNNING: {task}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts the host's listener through its agent and checks it was.
    async fn restart_succeeds(&self, host: i64, agent: &ProcAgent) {
        let (before, _) = agent.listener().await;
        let task = self.restart(host).await;
        assert_eq!(
            task["status"],
            json!("SUCCESSFUL"),
            "on {}: {task}",
            agent.addr
        );
        let (after, status) = agent.listener().await;
        assert_eq!(status, ProcessStatus::Started);
        assert_ne!(
            after, before,
            "the listener on {} was not restarted",
            agent.addr
        );
    }
}

/// A controller started as the docs start it: `--pki-dir` its folder of the PKI, both
/// faces serving its certificate.
fn launch(dir: &Path, controller_dir: &Path, ca: &Path) -> Launch {
    let (cert, key) = controller_identity(controller_dir);
    Launch::new(
        env!("CARGO_BIN_EXE_ocp-controller"),
        &dir.join("data"),
        &dir.join("controller.log"),
    )
    .log_filter("info")
    .arg("--pki-dir")
    .arg(controller_dir)
    .tls(&cert, &key, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_controller_certificate_is_served_and_trusted_by_every_agent_after_sighup() {
    let pki = TestPki::new();
    let ca = pki.file(pki::CA_CERT);
    let folder = pki.controller_dir();
    let (cert, _) = controller_identity(&folder);
    let as_controller = agents_client(&ca, controller_identity(&folder)).await;
    let agents = [
        agent_on(pki.path(), "127.0.0.2", as_controller.clone()).await,
        agent_on(pki.path(), "127.0.0.3", as_controller).await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = launch(dir.path(), &folder, &ca).start().await;
    let rest = Rest::new(&controller, &ca);
    let mut hosts = Vec::new();
    for agent in &agents {
        let host = rest.add_host(agent).await;
        rest.restart_succeeds(host, agent).await;
        hosts.push(host);
    }
    let old = leaf_of(&cert);
    wait_served(&controller, &ca, &cert).await;

    let issued = pki_command(&[
        "issue".as_ref(),
        "--dir".as_ref(),
        pki.path().as_os_str(),
        "--role".as_ref(),
        "controller".as_ref(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
        "--host".as_ref(),
        "ctl.example".as_ref(),
        "--out".as_ref(),
        folder.as_os_str(),
        "--force".as_ref(),
    ]);
    let said = succeeded(&issued);
    assert!(
        said.contains("controller certificate") && said.contains("systemctl reload"),
        "{said}"
    );
    let renewed = leaf_of(&cert);
    assert_ne!(
        renewed, old,
        "pki issue --force left the certificate as it was"
    );
    assert_eq!(
        Role::of(&renewed),
        Some(Role::Controller),
        "the renewed certificate is not a controller's"
    );

    controller.signal(Signal::SIGHUP);
    wait_served(&controller, &ca, &cert).await;
    // The reload dropped every connection to the agents: each operation below dials its
    // agent again, presenting the renewed certificate.
    for (host, agent) in hosts.into_iter().zip(&agents) {
        rest.restart_succeeds(host, agent).await;
    }
    assert!(
        !controller.log().contains("reload failed"),
        "{}",
        controller.log_tail(40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_reads_an_agent_and_is_refused_the_rest() {
    let pki = TestPki::new();
    let ca = pki.file(pki::CA_CERT);
    let as_controller = agents_client(&ca, controller_identity(&pki.controller_dir())).await;
    let agent = agent_on(pki.path(), "127.0.0.1", as_controller.clone()).await;
    let (pid, status) = agent.listener().await;
    assert_eq!(status, ProcessStatus::Started, "{}", agent.log_tail());

    let out = pki.path().join("operators/alice");
    let said = succeeded(&pki_command(&[
        "issue".as_ref(),
        "--dir".as_ref(),
        pki.path().as_os_str(),
        "--role".as_ref(),
        "operator".as_ref(),
        "--name".as_ref(),
        "alice".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]));
    assert!(
        said.contains("grpcurl") && said.contains("GetAgentInfo, ListProcesses, TailLog"),
        "{said}"
    );
    let cert = out.join(pki::OPERATOR_CERT);
    assert_eq!(Role::of(&leaf_of(&cert)), Some(Role::Operator));
    let mode = std::fs::metadata(out.join(pki::OPERATOR_KEY))
        .expect("operator key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let as_operator =
        agents_client(&out.join(pki::CA_CERT), (cert, out.join(pki::OPERATOR_KEY))).await;

    let mut operator = AgentServiceClient::new(channel_to(&agent, &as_operator).await);
    let info = operator
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect("GetAgentInfo as an operator")
        .into_inner();
    assert_eq!(info.version, "4.2.1-test");
    let listed = operator
        .list_processes(ListProcessesRequest {})
        .await
        .expect("ListProcesses as an operator")
        .into_inner();
    let seen: Vec<(String, u32)> = listed
        .processes
        .iter()
        .map(|p| (p.alias.clone(), p.pid))
        .collect();
    assert_eq!(seen, [("listener".to_string(), pid)]);
    let deadline = tokio::time::Instant::now() + WAIT;
    let tail = loop {
        let request = TailLogRequest {
            alias: "listener".to_string(),
            lines: 10,
            follow: false,
        };
        let text = match operator.tail_log(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut text = String::new();
                while let Some(chunk) = stream.message().await.expect("log chunk") {
                    text.push_str(&chunk.text);
                }
                text
            }
            Err(status) if status.code() == tonic::Code::NotFound => String::new(),
            Err(status) => panic!("TailLog as an operator: {status:?}"),
        };
        if text.contains("ready pid=") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener's log never showed its ready line: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(tail.contains(&format!("ready pid={pid}")), "{tail}");

    // Everything else is the controller's: refused by name, and nothing changes.
    let refused = operator
        .stop_all(BulkRequest { timeout_ms: 5_000 })
        .await
        .expect_err("StopAll served to an operator");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("the operator role is read-only")
            && refused.message().contains("StopAll"),
        "{refused:?}"
    );
    let one = ProcessRequest {
        alias: "listener".to_string(),
        ..ProcessRequest::default()
    };
    let stop_one = operator
        .stop_process(one)
        .await
        .expect_err("StopProcess served to an operator");
    assert_eq!(stop_one.code(), tonic::Code::PermissionDenied);
    assert!(stop_one.message().contains("StopProcess"), "{stop_one:?}");
    assert_eq!(
        agent.listener().await,
        (pid, ProcessStatus::Started),
        "an operator's refused call touched the listener"
    );
    assert_eq!(agent.live_copies("listener"), [pid]);
    let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
    assert!(
        log.contains("refused: the operator role is read-only: StopAll"),
        "the agent did not log the refusal:\n{}",
        agent.log_tail()
    );

    // The same call on the controller's certificate is served.
    let stopped = AgentServiceClient::new(channel_to(&agent, &as_controller).await)
        .stop_all(BulkRequest { timeout_ms: 10_000 })
        .await
        .expect("StopAll as the controller")
        .into_inner();
    assert!(stopped.failures.is_empty(), "{stopped:?}");
    assert_eq!(
        agent.listener().await.1,
        ProcessStatus::Stopped,
        "{stopped:?}"
    );
}

/// `nobody`: a user with no files of its own, and no groups but its own.
const SERVICE_USER: u32 = 65534;

/// Runs `program args` as the service user.
fn as_service_user(program: &str, args: &[&Path]) -> Output {
    Command::new(program)
        .args(args)
        .uid(SERVICE_USER)
        .gid(SERVICE_USER)
        .stdin(Stdio::null())
        .output()
        .expect("run as the service user")
}

/// The real uid of a process.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace()
        .nth(1)
        .and_then(|uid| uid.parse().ok())
        .expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_run_as_its_service_user_serves_and_cannot_read_the_ca_key() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running the controller as another user needs root");
        return;
    }
    // The machine as the docs set it up: root runs `pki init`, then gives the service
    // user its folder of the PKI and the data dir, nothing else.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pki_dir = root.path().join("pki");
    let folder = pki_dir.join(pki::CONTROLLER_DIR);
    let ca = pki_dir.join(pki::CA_CERT);
    succeeded(&pki_command(&[
        "init".as_ref(),
        "--dir".as_ref(),
        pki_dir.as_os_str(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
    ]));
    let owner = format!("{SERVICE_USER}:{SERVICE_USER}");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // The test's own client of the agent reads the controller's files while they are
    // still root's: as root it believes no file another user owns.
    let as_controller = agents_client(&ca, controller_identity(&folder)).await;
    let agent = agent_on(&pki_dir, "127.0.0.1", as_controller).await;
    for path in [&folder, &data] {
        let chown = Command::new("chown")
            .args(["-R", &owner])
            .arg(path)
            .output()
            .expect("chown");
        assert!(chown.status.success(), "{chown:?}");
    }

    let denied = as_service_user("/bin/cat", &[&pki_dir.join(pki::CA_KEY)]);
    assert!(!denied.status.success(), "the service user read the CA key");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );
    let own_key = as_service_user("/bin/cat", &[&folder.join(pki::CONTROLLER_KEY)]);
    assert!(
        own_key.status.success(),
        "the service user cannot read its own key: {own_key:?}"
    );

    let mut controller = launch(root.path(), &folder, &ca)
        .run_as(SERVICE_USER, SERVICE_USER)
        .start()
        .await;
    assert_eq!(uid_of(controller.pid()), SERVICE_USER);
    let rest = Rest::new(&controller, &ca);
    let host = rest.add_host(&agent).await;
    rest.restart_succeeds(host, &agent).await;

    // Renewed by root in the service user's folder: the files stay the service user's,
    // so the reload can read the new key.
    let (cert, key) = controller_identity(&folder);
    let old = leaf_of(&cert);
    succeeded(&pki_command(&[
        "issue".as_ref(),
        "--dir".as_ref(),
        pki_dir.as_os_str(),
        "--role".as_ref(),
        "controller".as_ref(),
        "--host".as_ref(),
        "127.0.0.1".as_ref(),
        "--out".as_ref(),
        folder.as_os_str(),
        "--force".as_ref(),
    ]));
    assert_ne!(leaf_of(&cert), old);
    assert!(
        as_service_user("/bin/cat", &[&key]).status.success(),
        "the renewed key is not the service user's"
    );
    controller.signal(Signal::SIGHUP);
    wait_served(&controller, &ca, &cert).await;
    rest.restart_succeeds(host, &agent).await;
    assert!(
        controller.stop_within(Duration::from_secs(30)).is_some(),
        "the controller did not stop"
    );
}
