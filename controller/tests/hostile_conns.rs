//! Clients that connect and then stall, against the real binaries: half-sent request
//! heads and silent sockets are closed within the header timeout on the REST port, the
//! controller's gRPC port and an agent's TLS port; at the connection cap, with a low
//! descriptor limit, a real client is still answered while the flood is open; an idle
//! keep-alive client is closed after the idle timeout, and a gRPC call that outlasts
//! it is not.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::fleet::{WAIT, free_port, workspace_bin};
use common::proc_agent::{AgentTls, ProcAgent, live_with_arg, unique_tag};
use proto::agent::v1::ProcessRequest;
use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use trust::pki;
use trust::{ClientTls, ClientTlsFiles, Role};

/// Far more than any machine needs to notice a deadline; before the limits, such
/// sockets stayed open 75 s and more.
const MARGIN: Duration = Duration::from_secs(9);

/// `ocp-controller` with plaintext REST and gRPC and the environment given. The limits
/// go by environment, which a build without them ignores: this file then measures
/// what the limits changed.
struct Controller {
    launched: Launched,
    http: SocketAddr,
    grpc: SocketAddr,
    _dir: tempfile::TempDir,
    /// The CA of the certificate both faces serve, when they serve TLS.
    ca: Option<PathBuf>,
}

impl Controller {
    /// Starts it, with at most `nofile` descriptors when given, and waits until both
    /// ports answer.
    async fn start(env: &[(&str, &str)], nofile: Option<u64>) -> Controller {
        Controller::start_with(env, nofile, None).await
    }

    /// Both faces over TLS with the PKI's controller certificate.
    async fn start_tls(env: &[(&str, &str)], pki: &Pki) -> Controller {
        Controller::start_with(env, None, Some(pki)).await
    }

    async fn start_with(
        env: &[(&str, &str)],
        nofile: Option<u64>,
        pki: Option<&Pki>,
    ) -> Controller {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut launch = Launch::new(
            env!("CARGO_BIN_EXE_ocp-controller"),
            &dir.path().join("data"),
            &dir.path().join("controller.log"),
        )
        .log_filter("info");
        for (key, value) in env {
            launch = launch.env(key, value);
        }
        if let Some(pki) = pki {
            launch = launch.tls(
                &pki.pki.controller_file(pki::CONTROLLER_CERT),
                &pki.pki.controller_file(pki::CONTROLLER_KEY),
                &pki.file(pki::CA_CERT),
            );
        }
        if let Some(limit) = nofile {
            launch = launch.max_open_files(limit);
        }
        let launched = launch.spawn().expect("spawn ocp-controller");
        let mut controller = Controller {
            http: launched.http(),
            grpc: launched.grpc(),
            _dir: dir,
            ca: pki.map(|p| p.file(pki::CA_CERT)),
            launched,
        };
        let deadline = Instant::now() + WAIT;
        while !(controller.rest_answers().await && controller.grpc_answers().await) {
            if let Some(status) = controller.launched.try_exit() {
                panic!("ocp-controller exited with {status}:\n{}", controller.log());
            }
            assert!(
                Instant::now() < deadline,
                "controller never served:\n{}",
                controller.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        controller
    }

    fn log(&self) -> String {
        self.launched.log()
    }

    /// A real REST client on a new connection, answered within 10 s.
    async fn rest_answers(&self) -> bool {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let mut scheme = "http";
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("read CA");
            client = client
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"));
            scheme = "https";
        }
        let client = client.build().expect("client");
        let url = format!("{scheme}://{}/api/v2/openapi.json", self.http);
        matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
    }

    /// A real gRPC client on a new connection, answered within 10 s.
    async fn grpc_answers(&self) -> bool {
        let call = async {
            let channel = match &self.ca {
                None => tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
                    .ok()?
                    .connect()
                    .await
                    .ok()?,
                Some(ca) => {
                    let files = ClientTlsFiles {
                        ca: ca.clone(),
                        identity: None,
                    };
                    let tls = ClientTls::load(files, Role::Controller).await.ok()?;
                    tonic::transport::Endpoint::from_shared(format!("https://{}", self.grpc))
                        .ok()?
                        .connect_with_connector(tls.connector("127.0.0.1").ok()?)
                        .await
                        .ok()?
                }
            };
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), call).await,
            Ok(Some(_))
        )
    }
}

type Stalled = Box<dyn AsyncRead + Unpin + Send>;

/// `n` connections to `addr`: every other one sends `partial`, the rest nothing. Stops
/// early when the listener's queue is full (a connect unanswered for 10 s).
async fn flood(addr: SocketAddr, n: usize, partial: &'static [u8]) -> Vec<Stalled> {
    let mut sockets: Vec<Stalled> = Vec::with_capacity(n);
    for i in 0..n {
        let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr));
        let Ok(connected) = connect.await else {
            eprintln!("{addr}: connection {i} of the flood not accepted in 10 s");
            break;
        };
        let mut tcp = connected.expect("connect");
        if i % 2 == 0 {
            tcp.write_all(partial).await.expect("send half a head");
        }
        sockets.push(Box::new(tcp));
    }
    sockets
}

/// How long after `since` each socket was closed by the server; `None` when it was
/// still open at `since + limit`.
async fn closed_within(
    sockets: Vec<Stalled>,
    since: Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let waits = sockets.into_iter().map(|mut socket| async move {
        let mut buf = [0u8; 1024];
        let closed = async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout_at(since + limit, closed)
            .await
            .ok()
            .map(|()| since.elapsed())
    });
    futures::future::join_all(waits).await
}

/// The slowest close, or how many were still open.
fn slowest(closed: &[Option<Duration>]) -> Result<Duration, usize> {
    let open = closed.iter().filter(|c| c.is_none()).count();
    if open > 0 {
        return Err(open);
    }
    Ok(closed.iter().flatten().max().copied().unwrap_or_default())
}

/// A CA, the controller's certificate and one agent's, as `pki` writes them.
struct Pki {
    pki: TestPki,
    agent: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let pki = TestPki::new();
        let agent = pki.issue("127.0.0.1");
        Pki { pki, agent }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.pki.file(name)
    }

    fn agent_file(&self, name: &str) -> PathBuf {
        self.agent.join(name)
    }

    async fn controller(&self) -> ClientTls {
        ClientTls::load(
            ClientTlsFiles {
                ca: self.file(pki::CA_CERT),
                identity: Some((
                    self.pki.controller_file(pki::CONTROLLER_CERT),
                    self.pki.controller_file(pki::CONTROLLER_KEY),
                )),
            },
            Role::Agent,
        )
        .await
        .expect("client TLS")
    }

    /// A real agent serving TLS on loopback with `env`, supervising `processes`.
    async fn agent(&self, processes: &str, env: &[(&str, &str)]) -> ProcAgent {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        ProcAgent::start_tls_with_env(
            listen,
            unique_tag(),
            processes,
            AgentTls {
                cert: self.agent_file(pki::AGENT_CERT),
                key: self.agent_file(pki::AGENT_KEY),
                client_ca: self.agent_file(pki::CA_CERT),
                client: Some(self.controller().await),
            },
            env,
        )
        .await
    }
}

fn sleeper(tag: &str, extra: &str) -> String {
    let demo = workspace_bin("ocp-demo-proc");
    format!(
        "[[process]]\nalias = \"sleeper\"\ncommand = {demo:?}\nargs = [\"--ignore-term\", \"--tag\", \"{tag}\"]\nmin_live = \"0s\"\n{extra}\n"
    )
}

/// `n` connections to a TLS agent: every other one finishes its handshake as the
/// controller and sends half the HTTP/2 preface, the rest send nothing at all.
async fn tls_flood(addr: SocketAddr, tls: &ClientTls, n: usize) -> Vec<Stalled> {
    let connector = tokio_rustls::TlsConnector::from(tls.config());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1".to_string()).expect("name");
    let mut sockets: Vec<Stalled> = Vec::with_capacity(n);
    for i in 0..n {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            let mut stream = connector
                .connect(name.clone(), tcp)
                .await
                .expect("handshake as the controller");
            stream
                .write_all(b"PRI * HTTP/2.0\r\n")
                .await
                .expect("send half the preface");
            stream.flush().await.expect("flush");
            sockets.push(Box::new(stream));
        } else {
            sockets.push(Box::new(tcp));
        }
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_within_the_header_timeout_on_every_listener() {
    let header = Duration::from_secs(1);
    let controller = Controller::start(&[("OCP_HEADER_TIMEOUT", "1s")], None).await;
    let pki = Pki::new();
    let agent = pki
        .agent(
            &sleeper(&unique_tag(), ""),
            &[("OCP_AGENT_HEADER_TIMEOUT", "1s")],
        )
        .await;
    let tls = pki.controller().await;

    let since = Instant::now();
    let rest = flood(
        controller.http,
        200,
        b"GET /api/v2/openapi.json HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    let grpc = flood(controller.grpc, 200, b"PRI * HTTP/2.0\r\n").await;
    let agent_tls = tls_flood(agent.addr, &tls, 200).await;
    let opened = since.elapsed();
    let limit = opened + header + MARGIN;
    let (rest, grpc, agent_tls) = tokio::join!(
        closed_within(rest, since, limit),
        closed_within(grpc, since, limit),
        closed_within(agent_tls, since, limit),
    );
    let mut still_open = Vec::new();
    for (listener, closed) in [
        ("REST", &rest),
        ("controller gRPC", &grpc),
        ("agent gRPC over TLS", &agent_tls),
    ] {
        let slowest = slowest(closed);
        eprintln!(
            "{listener}: 200 stalled sockets opened in {opened:?}; slowest closed after {slowest:?}"
        );
        if let Err(open) = slowest {
            still_open.push(format!("{listener}: {open} of 200"));
        }
    }
    assert!(
        still_open.is_empty(),
        "stalled sockets still open {limit:?} after the first connected: {still_open:?}"
    );
    assert!(controller.rest_answers().await && controller.grpc_answers().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_real_client_is_answered_while_the_flood_is_open() {
    // 400 stalled sockets against 200 descriptors: before the cap, "accept error: Too
    // many open files" and real clients timed out behind them. The header timeout is
    // long, so that nothing but the cap closes the flood in this test's time.
    let controller = Controller::start(
        &[
            ("OCP_HEADER_TIMEOUT", "120s"),
            ("OCP_MAX_CONNECTIONS", "50"),
        ],
        Some(200),
    )
    .await;
    let rest = flood(controller.http, 200, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let grpc = flood(controller.grpc, 200, b"PRI * HTTP/2.0\r\n").await;

    let started = Instant::now();
    let rest_answered = controller.rest_answers().await;
    let grpc_answered = controller.grpc_answers().await;
    let took = started.elapsed();
    eprintln!("REST answered: {rest_answered}, gRPC answered: {grpc_answered}, in {took:?}");
    assert!(
        rest_answered && grpc_answered,
        "a real client behind 200 stalled sockets per port was not answered:\n{}",
        controller.log()
    );
    let open = |closed: Vec<Option<Duration>>| closed.iter().filter(|c| c.is_none()).count();
    let now = Instant::now();
    let (rest, grpc) = tokio::join!(
        closed_within(rest, now, Duration::from_millis(500)),
        closed_within(grpc, now, Duration::from_millis(500)),
    );
    let (rest_open, grpc_open) = (open(rest), open(grpc));
    eprintln!("stalled sockets still open: REST {rest_open}, gRPC {grpc_open}");
    assert!(
        rest_open >= 40 && grpc_open >= 40,
        "the flood was closed before the clients were answered (REST {rest_open}, gRPC {grpc_open} open)"
    );
    let log = controller.log();
    let cap_lines = log.matches("connections open (--max-connections)").count();
    assert_eq!(
        cap_lines, 2,
        "one line per port at the cap, not one per connection:\n{log}"
    );
}

/// Sends one request on `tcp` and reads its whole answer (a `Content-Length` body).
async fn one_request(tcp: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            break (end + 4, length);
        }
    };
    while seen.len() < head_end + length {
        let n = tcp.read(&mut buf).await.expect("read body");
        assert!(n > 0, "closed mid-body");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_client_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(2);
    let controller = Controller::start(&[("OCP_IDLE_TIMEOUT", "2s")], None).await;
    let mut tcp = TcpStream::connect(controller.http).await.expect("connect");
    one_request(&mut tcp, "/api/v2/openapi.json").await;
    one_request(&mut tcp, "/api/v2/openapi.json").await;
    let since = Instant::now();
    let closed = closed_within(vec![Box::new(tcp)], since, idle + MARGIN).await;
    eprintln!("idle keep-alive connection closed after {:?}", closed[0]);
    let after = closed[0].expect("the idle connection is still open");
    assert!(
        after >= idle - Duration::from_millis(100),
        "closed after {after:?}, before the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_longer_than_the_idle_timeout_is_not_cut() {
    let pki = Pki::new();
    let tag = unique_tag();
    // SIGTERM ignored: the stop waits out stop_timeout, then kills.
    let agent = pki
        .agent(
            &sleeper(&tag, "stop_timeout = \"4s\""),
            &[
                ("OCP_AGENT_IDLE_TIMEOUT", "1s"),
                ("OCP_AGENT_HEADER_TIMEOUT", "1s"),
            ],
        )
        .await;
    let mut client = agent.client().await.expect("connect as the controller");
    let deadline = Instant::now() + WAIT;
    while live_with_arg(&tag).is_empty() {
        assert!(Instant::now() < deadline, "{}", agent.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let stopped = client
        .stop_process(ProcessRequest {
            alias: "sleeper".to_string(),
            timeout_ms: 30_000,
        })
        .await;
    let took = started.elapsed();
    eprintln!("StopProcess of a process ignoring SIGTERM took {took:?}: {stopped:?}");
    assert!(stopped.is_ok(), "{stopped:?}\n{}", agent.log_tail());
    assert!(
        took >= Duration::from_secs(3),
        "the call ({took:?}) did not outlast the 1 s idle timeout, so proves nothing"
    );
}

#[test]
fn bad_limits_are_refused_with_one_line() {
    for (binary, flag, value, said) in [
        (
            env!("CARGO_BIN_EXE_ocp-controller").into(),
            "--header-timeout",
            "0s",
            "must be longer than zero",
        ),
        (
            env!("CARGO_BIN_EXE_ocp-controller").into(),
            "--idle-timeout",
            "soon",
            "soon",
        ),
        (workspace_bin("ocp-agent"), "--max-connections", "0", "0"),
        (
            workspace_bin("ocp-agent"),
            "--idle-timeout",
            "0ms",
            "must be longer than zero",
        ),
    ] {
        let out = Command::new(&binary)
            .args([flag, value])
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(
            first.contains(flag) && first.contains(said),
            "{flag} {value}: {stderr}"
        );
    }
}

/// `n` clients that connect to `addr` and never say a word, so their TLS handshakes
/// never finish; each comes back a second after the server closed it, as the probe's
/// did. `connects` counts their connections. They stop once `stop` is set.
fn hold_stalled(
    addr: SocketAddr,
    n: usize,
    connects: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (connects, stop) = (connects.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut tcp) = TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 64];
                    loop {
                        let read =
                            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf));
                        match read.await {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ if stop.load(Ordering::Relaxed) => break,
                            _ => {}
                        }
                    }
                    drop(tcp);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect()
}

/// How many of `tries` new connections, one every 250 ms (so that they span the
/// stalled clients' timeouts and returns), got an answer.
async fn answered<F, Fut>(tries: usize, mut ask: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut answered = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..tries {
        pace.tick().await;
        if ask().await {
            answered += 1;
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_cannot_keep_real_clients_out_of_any_port() {
    const STALLED: usize = 300;
    const CLIENTS: usize = 20;
    let pki = Pki::new();
    let controller = Controller::start_tls(&[], &pki).await;
    let agent = pki.agent(&sleeper(&unique_tag(), ""), &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ports = [
        ("REST (HTTPS)", controller.http),
        ("controller gRPC (TLS)", controller.grpc),
        ("agent gRPC (TLS)", agent.addr),
    ];
    let mut holders = Vec::new();
    let mut connects = Vec::new();
    for (_, addr) in ports {
        let count = Arc::new(AtomicUsize::new(0));
        holders.extend(hold_stalled(addr, STALLED, count.clone(), stop.clone()));
        connects.push(count);
    }
    let started = Instant::now();
    let deadline = started + WAIT;
    // Every one connected once; more than the handshake slots, so some already made
    // room for others (and come back).
    while connects.iter().any(|c| c.load(Ordering::Relaxed) < STALLED) {
        assert!(
            Instant::now() < deadline,
            "the stalled clients never all connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (rest, grpc, agent_calls) = tokio::join!(
        answered(CLIENTS, || controller.rest_answers()),
        answered(CLIENTS, || controller.grpc_answers()),
        answered(CLIENTS, || async {
            let call = async {
                let mut client = agent.client().await.ok()?;
                client
                    .list_processes(proto::agent::v1::ListProcessesRequest {})
                    .await
                    .ok()
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(10), call).await,
                Ok(Some(_))
            )
        }),
    );
    let held_for = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    futures::future::join_all(holders).await;
    eprintln!(
        "with {STALLED} stalled handshakes held on each port for {held_for:?}: real clients \
         answered REST {rest}/{CLIENTS}, controller gRPC {grpc}/{CLIENTS}, agent {agent_calls}/{CLIENTS}"
    );
    assert_eq!(
        (rest, grpc, agent_calls),
        (CLIENTS, CLIENTS, CLIENTS),
        "real clients kept out by stalled handshakes:\n{}",
        controller.log()
    );

    // The refusals were logged, a line a second at most per kind and listener.
    let log = controller.log();
    let evictions = log
        .lines()
        .filter(|l| l.contains("closed the oldest unfinished one"))
        .count();
    let handshake_lines = log.lines().filter(|l| l.contains("TLS handshake")).count();
    let seconds = held_for.as_secs() as usize + 2;
    eprintln!(
        "controller log: {evictions} eviction lines, {handshake_lines} other handshake lines"
    );
    assert!(evictions >= 2, "the evictions were logged:\n{log}");
    assert!(
        evictions <= 2 * seconds && handshake_lines <= 2 * 2 * seconds,
        "more than a line a second per kind and listener in {held_for:?}: {evictions} \
         eviction lines, {handshake_lines} others"
    );
}

/// The concurrent streams the HTTP/2 server at `addr` lets one connection open, as its
/// SETTINGS say (read once it answered a first request).
async fn advertised_streams(addr: SocketAddr) -> usize {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::pin!(conn);
    let request = http::Request::builder()
        .uri(format!("http://{addr}/api/v2/openapi.json"))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    tokio::select! {
        answered = response => { answered.expect("an answer"); }
        ended = &mut conn => panic!("the connection ended first: {ended:?}"),
    }
    conn.max_concurrent_send_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ports_advertise_at_most_200_streams_a_connection() {
    let controller = Controller::start(&[], None).await;
    let rest = advertised_streams(controller.http).await;
    let grpc = advertised_streams(controller.grpc).await;
    eprintln!("SETTINGS_MAX_CONCURRENT_STREAMS: REST {rest}, gRPC {grpc}");
    assert_eq!((rest, grpc), (200, 200));
}
