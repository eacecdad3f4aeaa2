//! Hostile logins against the real `ocp-controller` binary, with users hashed with the
//! production argon2 parameters (19 MiB per verification, which is the point): clients
//! that send a wrong password and hang up, a steady flood of wrong passwords from one
//! address while a valid user logs in from another, and what the flooding address is
//! told on both faces.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fleet::WAIT;
use controller::auth::{BasicAuth, basic_header};
use proto::ocp::v1::ListHostsRequest;
use proto::ocp::v1::host_agent_service_client::HostAgentServiceClient;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::controller::{Launch, Launched};
use test_support::pki::TestPki;
use test_support::users::{self, Cost, User};
use tokio::io::AsyncWriteExt;
use trust::pki;
use trust::{ClientTls, ClientTlsFiles, Role};

const PASSWORD: &str = "a valid password";
/// Users who log in once each, so that every measured login pays for argon2.
const USERS: [&str; 4] = ["admin", "first", "second", "third"];
/// The bound the issue sets on the controller's memory through a disconnect flood.
const RSS_LIMIT_MB: u64 = 300;
/// Past this the controller is killed, so that a regression cannot take the machine.
const RSS_SAFETY_MB: u64 = 2048;
/// The bound the issue sets on a valid login during a flood.
const LOGIN_LIMIT: Duration = Duration::from_secs(1);

/// The tests measure time and memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct TestController {
    launched: Launched,
    http: SocketAddr,
    grpc: SocketAddr,
    _dir: tempfile::TempDir,
    /// The CA of its certificate, when it serves TLS.
    ca: Option<PathBuf>,
    _pki: Option<TestPki>,
}

impl TestController {
    async fn start() -> TestController {
        TestController::start_with(false).await
    }

    /// With `tls`, both faces serve TLS with a certificate from `pki init`.
    async fn start_with(tls: bool) -> TestController {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_path_buf();
        let users = tokio::task::spawn_blocking(move || {
            let users: Vec<User> = USERS
                .iter()
                .map(|name| User {
                    name,
                    password: PASSWORD,
                    permissions: users::ALL,
                })
                .collect();
            users::write_with(&home, &users, Cost::Production)
        })
        .await
        .expect("hashing");
        let mut launch = Launch::new(
            env!("CARGO_BIN_EXE_ocp-controller"),
            &dir.path().join("data"),
            &dir.path().join("controller.log"),
        )
        .users(&users);
        let pki = tls.then(TestPki::new);
        if let Some(pki) = &pki {
            launch = launch.args(pki.controller_flags());
        }
        let launched = launch.spawn().expect("spawn ocp-controller");
        let controller = TestController {
            http: launched.http(),
            grpc: launched.grpc(),
            launched,
            _dir: dir,
            ca: pki.as_ref().map(|p| p.file(pki::CA_CERT)),
            _pki: pki,
        };
        let deadline = Instant::now() + WAIT;
        let url = format!("{}/api/v2/openapi.json", controller.base());
        let client = controller.client(Ipv4Addr::LOCALHOST);
        while client.get(&url).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the controller never served:\n{}",
                controller.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        controller
    }

    fn log(&self) -> String {
        self.launched.log()
    }

    fn base(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }

    fn url(&self) -> String {
        format!("{}/api/v2/compute/hosts", self.base())
    }

    /// A client whose connections leave from `from`.
    fn client(&self, from: Ipv4Addr) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .local_address(IpAddr::V4(from))
            .timeout(WAIT);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("read CA");
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"));
        }
        builder.build().expect("client")
    }

    /// A gRPC channel from `from`, over TLS when the controller serves it.
    async fn channel(&self, from: Ipv4Addr) -> tonic::transport::Channel {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", self.grpc))
            .expect("uri")
            .local_address(Some(IpAddr::V4(from)));
        match &self.ca {
            Some(ca) => {
                let files = ClientTlsFiles {
                    ca: ca.clone(),
                    identity: None,
                };
                let tls = ClientTls::load(files, Role::Controller)
                    .await
                    .expect("client TLS");
                endpoint
                    .connect_with_connector(tls.connector("127.0.0.1").expect("connector"))
                    .await
            }
            None => endpoint.connect().await,
        }
        .expect("gRPC connects")
    }

    /// How long `user` waits for a listing from `from`.
    async fn timed_login(&self, user: &str, from: Ipv4Addr) -> Duration {
        let started = Instant::now();
        let response = self
            .client(from)
            .get(self.url())
            .header("authorization", basic_header(user, PASSWORD))
            .send()
            .await
            .expect("the controller answers");
        let took = started.elapsed();
        assert_eq!(response.status(), StatusCode::OK, "{user} logs in");
        took
    }
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    test_support::procs::rss_kib(pid)
}

/// The controller's peak VmRSS, sampled every 20 ms on a thread of its own.
struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak_kb, stop) = (peak_kb.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(kb) = vm_rss_kb(pid) else { return };
                    peak_kb.fetch_max(kb, Ordering::Relaxed);
                    if kb > RSS_SAFETY_MB * 1024 {
                        // The controller this test started and still owns.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        RssWatch {
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_mb(&self) -> u64 {
        self.peak_kb.load(Ordering::Relaxed) / 1024
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `clients` connections, each from its own loopback address, send a wrong password
/// and hang up at once. Separate addresses, as from many machines: the per-address
/// throttle does not apply, so what bounds the controller is the gate alone.
async fn hang_up_flood(http: SocketAddr, clients: u8) {
    let request = Arc::new(format!(
        "GET /api/v2/compute/hosts HTTP/1.1\r\nhost: {http}\r\nauthorization: {}\r\n\r\n",
        basic_header("admin", "not the password")
    ));
    let sent = (1..=clients).map(|i| {
        let request = request.clone();
        tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(Ipv4Addr::new(127, 0, 1, i).into(), 0))?;
            let mut stream = socket.connect(http).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.shutdown().await
        })
    });
    for result in futures::future::join_all(sent).await {
        result.expect("client task").expect("client sends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_flood_keeps_the_controller_under_300_mb() {
    let _serial = SERIAL.lock().await;
    let controller = TestController::start().await;
    let pid = controller.launched.pid();
    let idle_mb = vm_rss_kb(pid).expect("VmRSS") / 1024;
    let watch = RssWatch::start(pid);
    for _ in 0..3 {
        hang_up_flood(controller.http, 200).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What the flood started runs on after its clients are gone: a valid login is
    // answered once it has a turn, and a while later the controller should be idle.
    let login = controller
        .timed_login("admin", Ipv4Addr::new(127, 0, 0, 3))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_mb = vm_rss_kb(pid).map_or(0, |kb| kb / 1024);
    let peak_mb = watch.peak_mb();
    eprintln!(
        "disconnect flood: VmRSS idle {idle_mb} MB, peak {peak_mb} MB, {after_mb} MB 3 s after; \
         a login after it took {} ms",
        login.as_millis()
    );
    assert!(
        peak_mb < RSS_LIMIT_MB && after_mb < RSS_LIMIT_MB,
        "VmRSS peaked at {peak_mb} MB (idle {idle_mb} MB), {after_mb} MB 3 s after the flood"
    );
}

/// What one flooding connection saw.
#[derive(Default)]
struct FloodSeen {
    sent: u64,
    throttled: Option<(Option<String>, Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_does_not_delay_a_valid_login() {
    let _serial = SERIAL.lock().await;
    let controller = TestController::start().await;
    let flooder = Ipv4Addr::LOCALHOST;
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (url, stop) = (controller.url(), stop.clone());
            let client = controller.client(flooder);
            tokio::spawn(async move {
                let wrong = basic_header("admin", "not the password");
                let mut seen = FloodSeen::default();
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .get(&url)
                        .header("authorization", &wrong)
                        .send()
                        .await
                        .expect("the controller answers");
                    seen.sent += 1;
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body: Value = response.json().await.expect("an envelope");
                    match status {
                        StatusCode::UNAUTHORIZED => {}
                        StatusCode::TOO_MANY_REQUESTS => {
                            seen.throttled.get_or_insert((retry_after, body));
                        }
                        other => panic!("the flood got {other}: {body}"),
                    }
                }
                seen
            })
        })
        .collect();
    let valid = Ipv4Addr::new(127, 0, 0, 2);
    // At once, with the flood's first logins queued, and again once it is in full swing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = controller.timed_login("first", valid).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = controller.timed_login("second", valid).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut throttled = None;
    for seen in futures::future::join_all(flood).await {
        let seen = seen.expect("flood task");
        sent += seen.sent;
        throttled = throttled.or(seen.throttled);
    }
    eprintln!(
        "wrong-password flood over 40 connections ({sent} requests): a valid login took {} ms \
         at once and {} ms later",
        early.as_millis(),
        later.as_millis()
    );
    assert!(
        early < LOGIN_LIMIT && later < LOGIN_LIMIT,
        "valid logins took {early:?} and {later:?} during the flood"
    );

    let (retry_after, body) = throttled.expect("the flooding address was throttled");
    let retry_after: u64 = retry_after
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_envelope(&body, "admin", retry_after);
}

/// The 429's envelope: the error says who is refused and for how long.
fn assert_envelope(body: &Value, user: &str, retry_after: u64) {
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["successful"], false, "{body}");
    assert!(body["traceId"].is_string(), "{body}");
    assert_eq!(body["error"]["code"], 30002, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!("too many failed logins as {user:?} from 127.0.0.1; retry after {retry_after} s"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_one_name_does_not_lock_out_the_others_at_the_same_address() {
    let _serial = SERIAL.lock().await;
    let controller = TestController::start().await;
    // Behind one NAT: everybody is 127.0.0.1. Ten wrong passwords a second for admin.
    let nat = Ipv4Addr::LOCALHOST;
    let client = controller.client(nat);
    let wrong = basic_header("admin", "not the password");
    let mut throttled_at = None;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    for attempt in 1..=30 {
        ticks.tick().await;
        let status = client
            .get(controller.url())
            .header("authorization", &wrong)
            .send()
            .await
            .expect("the controller answers")
            .status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            throttled_at = Some(attempt);
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    eprintln!("wrong passwords for admin, 10 a second: throttled at attempt {throttled_at:?}");
    assert_eq!(throttled_at, Some(11), "the flooded name is throttled");
    // The other users at that address: a right password is verified (timed_login
    // asserts 200), and so is a wrong one, which is told it is wrong, not throttled.
    controller.timed_login("first", nat).await;
    let other = client
        .get(controller.url())
        .header("authorization", basic_header("second", "mistyped"))
        .send()
        .await
        .expect("the controller answers");
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let still = client
        .get(controller.url())
        .header("authorization", &wrong)
        .send()
        .await
        .expect("the controller answers");
    assert_eq!(still.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_address_is_told_when_to_retry_on_both_faces() {
    let _serial = SERIAL.lock().await;
    told_when_to_retry(&TestController::start().await).await;
}

/// The peer's address is known behind TLS too, on both faces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_address_is_told_when_to_retry_over_tls() {
    let _serial = SERIAL.lock().await;
    told_when_to_retry(&TestController::start_with(true).await).await;
}

async fn told_when_to_retry(controller: &TestController) {
    let from = Ipv4Addr::LOCALHOST;
    // Verified before the flood: never throttled afterwards, from the same address.
    controller.timed_login("admin", from).await;
    let client = controller.client(from);
    let wrong = basic_header("third", "not the password");
    let mut refused = None;
    let flood = std::time::Instant::now();
    for attempt in 1..=30 {
        let response = client
            .get(controller.url())
            .header("authorization", &wrong)
            .send()
            .await
            .expect("the controller answers");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in seconds");
            refused = Some((
                attempt,
                retry_after,
                response.json::<Value>().await.expect("json"),
            ));
            break;
        }
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let (attempt, retry_after, body) = refused.expect("30 wrong passwords in a row are throttled");
    // Ten failures, then one more per 3 s: the wait told is 3 s less the time the flood
    // took, rounded up, and a flood slower than 3 s has earned a failure more per 3 s.
    // On a quiet machine that is the 11th attempt, told to wait 3 s.
    let took = flood.elapsed().as_secs_f64();
    let earned = (took / 3.0).floor() as usize;
    assert!(
        (11..=11 + earned).contains(&attempt),
        "attempt {attempt} was the first refused, after {took:.2} s"
    );
    let shortest = ((3.0 - took).ceil() as u64).max(1);
    assert!(
        (shortest..=3).contains(&retry_after),
        "retry after {retry_after} s, after a flood of {took:.2} s"
    );
    assert_envelope(&body, "third", retry_after);

    // gRPC shares the count.
    let channel = controller.channel(from).await;
    let mut wrong_grpc = HostAgentServiceClient::with_interceptor(
        channel.clone(),
        BasicAuth::new("third", "not the password").expect("credentials"),
    );
    let status = wrong_grpc
        .list_hosts(ListHostsRequest::default())
        .await
        .expect_err("throttled");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let grpc_retry: u64 = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after metadata in seconds");
    assert!((1..=3).contains(&grpc_retry), "retry-after: {grpc_retry}");
    assert!(
        status
            .message()
            .starts_with("too many failed logins as \"third\" from 127.0.0.1; retry after"),
        "{status:?}"
    );

    // The user who logged in before, and a user logging in from elsewhere, go on.
    let mut admin = HostAgentServiceClient::with_interceptor(
        channel,
        BasicAuth::new("admin", PASSWORD).expect("credentials"),
    );
    admin
        .list_hosts(ListHostsRequest::default())
        .await
        .expect("a verified user is not throttled");
    controller.timed_login("admin", from).await;
    controller
        .timed_login("third", Ipv4Addr::new(127, 0, 0, 2))
        .await;
}
