//! docs/install.md as a new operator follows it, on one machine: its shell steps run as
//! written (paths moved under a temp root, 10.0.0.x moved to 127.0.0.x, the `ocp` user
//! played by `nobody`), the controller started with its unit's ExecStart as that user,
//! three agents with theirs, then the hosts registered and a batch restart, over mutual
//! TLS and HTTPS. A step the docs give that no longer works fails here.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use test_support::bins::{bin_dir, workspace_bin};
use test_support::controller::Launch;
use test_support::{WAIT, port_free_on};

/// The docs' unprivileged service user, played by `nobody`: present on every machine.
const SERVICE_ID: u32 = 65534;
const PASSWORD: &str = "a strong password";
const HOSTS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

fn install_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/install.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of `doc` in `lang`, in order.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut found = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("an unclosed code block");
        found.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    found
}

/// The one shell block of the docs that holds `marker`.
fn step(doc: &str, marker: &str) -> String {
    let mut matching = blocks(doc, "sh").into_iter().filter(|b| b.contains(marker));
    let block = matching
        .next()
        .unwrap_or_else(|| panic!("no shell block of install.md runs {marker:?}"));
    assert!(matching.next().is_none(), "several blocks run {marker:?}");
    block
}

/// The unit written to `/etc/systemd/system/<name>`, as `key -> values`.
fn unit(doc: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let first = format!("# /etc/systemd/system/{name}\n");
    let text = blocks(doc, "ini")
        .into_iter()
        .find(|b| b.starts_with(&first))
        .unwrap_or_else(|| panic!("install.md gives no {name}"));
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.replace("\\\n", " ").lines() {
        if let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            keys.entry(key.trim().to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    keys
}

/// The unit's ExecStart as flag -> value, after its binary.
fn exec_start(unit: &BTreeMap<String, Vec<String>>, binary: &str) -> Vec<(String, String)> {
    let line = &unit["ExecStart"][0];
    let mut words = line.split_whitespace();
    assert_eq!(
        words.next(),
        Some(format!("/usr/local/bin/{binary}").as_str())
    );
    let words: Vec<&str> = words.collect();
    words
        .chunks(2)
        .map(|pair| match pair {
            [flag, value] if flag.starts_with("--") => (flag.to_string(), value.to_string()),
            other => panic!("{binary}'s ExecStart: expected --flag value, got {other:?}"),
        })
        .collect()
}

/// What the docs say of a machine, said of this one: its folders under `root`, the
/// service user `nobody`, the 10.0.0.x addresses on loopback.
fn here(text: &str, root: &Path) -> String {
    let root = root.display();
    text.replace("/etc/", &format!("{root}/etc/"))
        .replace("/var/lib/", &format!("{root}/var/lib/"))
        .replace("ocp:ocp", &format!("{SERVICE_ID}:{SERVICE_ID}"))
        .replace("-g ocp ", &format!("-g {SERVICE_ID} "))
        .replace("10.0.0.1", "127.0.0.1")
}

/// Runs a step's shell commands as the docs give them, with the built binaries first
/// on PATH; lines that make system users are left to the test (it uses `nobody`).
fn run_step(block: &str, root: &Path, cwd: &Path) {
    let script: Vec<&str> = block
        .lines()
        .filter(|line| !line.starts_with("useradd "))
        .collect();
    let script = here(&script.join("\n"), root);
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .current_dir(cwd)
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "the step\n{script}\nfailed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What systemd does for `StateDirectory=` or `ConfigurationDirectory=`; the folders
/// above it are made as a machine has them, 0755 and root's.
fn make_dir(path: &Path, mode: u32, owner: u32) {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .expect("mkdir");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown");
}

/// An agent started by its unit's ExecStart; SIGKILLed with its processes when dropped.
struct Agent {
    child: Child,
    listen: String,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(doc: &str, ip: &str, root: &Path) -> Agent {
    let unit = unit(doc, "ocp-agent.service");
    assert_eq!(unit["StateDirectory"], ["ocp-agent"]);
    make_dir(&root.join("var/lib/ocp-agent"), 0o700, 0);
    let listen = format!("{ip}:{}", port_free_on(ip.parse().expect("ip")));
    let mut command = Command::new(workspace_bin("ocp-agent"));
    for (flag, value) in exec_start(&unit, "ocp-agent") {
        let value = match flag.as_str() {
            "--listen" => listen.clone(),
            "--metrics-addr" => format!("{ip}:{}", port_free_on(ip.parse().expect("ip"))),
            _ => here(&value, root),
        };
        command.arg(flag).arg(value);
    }
    let log = root.join("agent.log");
    let out = std::fs::File::create(&log).expect("agent log");
    let child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn ocp-agent");
    Agent { child, listen, log }
}

async fn wait_listening(agent: &mut Agent) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(&agent.listen).await.is_err() {
        let exited = agent.child.try_wait().expect("poll agent");
        assert!(
            exited.is_none() && tokio::time::Instant::now() < deadline,
            "the agent on {} never listened ({exited:?}):\n{}",
            agent.listen,
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller's REST gateway over HTTPS, trusting the fleet's CA, as the admin.
struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v2{path}", self.base))
            .basic_auth("admin", Some(PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("REST call");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body["data"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Host id -> the pid of its `worker`.
    async fn worker_pid(&self, host: i64) -> i64 {
        let page = self
            .get(&format!("/compute/hosts/{host}/agent/processes"))
            .await;
        page["contents"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["alias"] == "worker"))
            .and_then(|p| p["pid"].as_i64())
            .unwrap_or_else(|| panic!("host {host} shows no worker: {page}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_walkthrough_gives_a_running_three_host_fleet() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: following install.md needs root (service users, chown)");
        return;
    }
    let doc = install_md();
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    // The machine's / is traversable by the service user; the temp dir standing in for
    // it must be too.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ctl = root.join("ctl");
    let work = root.join("work");
    make_dir(&ctl, 0o755, 0);
    make_dir(&work, 0o700, 0);

    // Steps 2 to 4, as written.
    run_step(&step(&doc, "useradd "), &ctl, &work);
    run_step(&step(&doc, "pki init"), &ctl, &work);
    run_step(&step(&doc, "hash-password"), &ctl, &work);
    let ca = ctl.join("etc/ocp/pki/ca.pem");

    // Step 5: the controller's unit, as `nobody`.
    let unit = unit(&doc, "ocp-controller.service");
    assert_eq!(unit["User"], ["ocp"]);
    assert_eq!(unit["StateDirectory"], ["ocp-controller"]);
    assert_eq!(unit["Wants"], unit["After"]);
    let data_dir = ctl.join("var/lib/ocp-controller");
    make_dir(&data_dir, 0o700, SERVICE_ID);
    let log = root.join("controller.log");
    let mut launch = Launch::new(workspace_bin("ocp-controller"), &data_dir, &log)
        .run_as(SERVICE_ID, SERVICE_ID)
        .log_filter("info");
    let (mut cert, mut key) = (None, None);
    for (flag, value) in exec_start(&unit, "ocp-controller") {
        match flag.as_str() {
            // On free loopback ports instead of 0.0.0.0:8080 and :50051.
            "--http-addr" | "--grpc-addr" => {}
            "--data-dir" => assert_eq!(here(&value, &ctl), data_dir.display().to_string()),
            "--tls-cert" => cert = Some(PathBuf::from(here(&value, &ctl))),
            "--tls-key" => key = Some(PathBuf::from(here(&value, &ctl))),
            "--advertise" => launch = launch.arg(flag).arg("127.0.0.1"),
            _ => launch = launch.arg(flag).arg(here(&value, &ctl)),
        }
    }
    let launch = launch.tls(&cert.expect("--tls-cert"), &key.expect("--tls-key"), &ca);
    let controller = launch.start().await;

    // Step 6, each host under a root of its own: its folder of certificates copied over,
    // the config and the unit as written.
    let mut agents = Vec::new();
    for ip in HOSTS {
        let host = root.join(ip);
        make_dir(&host.join("etc/ocp-agent/tls"), 0o700, 0);
        std::fs::set_permissions(
            host.join("etc/ocp-agent"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        for entry in std::fs::read_dir(ctl.join("etc/ocp/pki/agents").join(ip)).expect("agents") {
            let entry = entry.expect("entry");
            std::fs::copy(
                entry.path(),
                host.join("etc/ocp-agent/tls").join(entry.file_name()),
            )
            .expect("copy a certificate");
        }
        run_step(&step(&doc, "cat > /etc/ocp-agent/agent.toml"), &host, &work);
        agents.push(start_agent(&doc, ip, &host));
    }
    for agent in &mut agents {
        wait_listening(agent).await;
    }

    // Step 7: register the hosts, and each comes ONLINE.
    let pem = std::fs::read(&ca).expect("ca.pem");
    let rest = Rest {
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: controller.base_url(),
    };
    let mut ids = Vec::new();
    for agent in &agents {
        let (ip, port) = agent.listen.split_once(':').expect("ip:port");
        let host = rest
            .post(
                "/compute/hosts",
                json!({"innerIpAddress": ip, "agentPort": port.parse::<u16>().expect("port")}),
            )
            .await;
        ids.push(host["id"].as_i64().expect("host id"));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = rest.get("/compute/hosts").await;
        let hosts = page["contents"].as_array().cloned().unwrap_or_default();
        if hosts.len() == 3 && hosts.iter().all(|h| h["status"] == "ONLINE") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hosts not ONLINE: {page:#}\n{}",
            controller.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Step 8: the first operation restarts every host's worker.
    let mut before = Vec::new();
    for id in &ids {
        before.push(rest.worker_pid(*id).await);
    }
    let task = rest
        .post("/compute/hosts/batchRestartAgents", json!({"hostIds": ids}))
        .await;
    let task_id = task["id"].as_i64().expect("task id");
    let deadline = tokio::time::Instant::now() + WAIT;
    let task = loop {
        let task = rest.get(&format!("/tasks/instances/{task_id}")).await;
        if task["status"] != "RUNNING" {
            break task;
        }
        assert!(tokio::time::Instant::now() < deadline, "{task:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(task["status"], "SUCCESSFUL", "{task:#}");
    for (id, old) in ids.iter().zip(before) {
        assert_ne!(
            rest.worker_pid(*id).await,
            old,
            "host {id}'s worker kept its pid"
        );
    }
}
