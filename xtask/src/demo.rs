//! `cargo xtask demo`: the whole product on one machine, for a newcomer's first look,
//! with mutual TLS as in production, and the commands to try it by hand.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::fleet::{AgentProfile, Fleet, FleetSpec, Transport, demo_controller_args};
use crate::progress::{Screen, render};
use crate::rest::Rest;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Build and run the release binaries instead of the debug ones.
    #[arg(long)]
    pub release: bool,
    /// Stop after printing the commands instead of running until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
    /// No TLS: plaintext REST and gRPC, which agents allow only on loopback. By
    /// default the demo makes its own CA and runs with mutual TLS, as production does.
    #[arg(long)]
    pub plaintext: bool,
}

const GRPC: &str = "127.0.0.1:50051";
const HTTP: &str = "127.0.0.1:8080";
const AGENT_PORT: u16 = 62888;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let demo_dir = root.join("target").join("demo");
    let _lock = DemoLock::take(&demo_dir)?;

    let profile = if args.release { "release" } else { "debug" };
    println!("Building the binaries ({profile})...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "-p", "agent", "-p", "controller", "--bins"]);
    if args.release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let data = demo_dir.join("fleet");
    let _ = std::fs::remove_dir_all(&data);
    let spec = FleetSpec {
        root: data.clone(),
        bin_dir: root.join("target").join(profile),
        grpc: GRPC.parse()?,
        http: HTTP.parse()?,
        agent_ips: (2..=4)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect(),
        agent_port: AGENT_PORT,
        profile: AgentProfile::Demo,
        controller_args: demo_controller_args(),
        transport: if args.plaintext {
            Transport::Plaintext
        } else {
            Transport::MutualTls
        },
    };
    println!(
        "Starting a controller on {GRPC} (gRPC) and {HTTP} (REST), and agents on 127.0.0.2-4:{AGENT_PORT}, with {}...",
        spec.transport.label()
    );
    let started = Instant::now();
    let mut fleet = Fleet::start(spec).context("starting the demo fleet")?;
    if let Some(pki) = &fleet.pki {
        println!(
            "Certificates (ocp-controller pki init, and pki issue for each agent): {}",
            pki.dir.display()
        );
    }
    let rest = fleet.rest()?;

    let mut host_ids = Vec::new();
    for host in &fleet.hosts {
        let created = rest.post(
            "/api/v2/compute/hosts",
            json!({"innerIpAddress": host.ip.to_string(), "agentPort": host.addr.port(), "name": format!("demo-{}", host.ip)}),
        )?;
        host_ids.push(created["id"].as_i64().context("host id in the answer")?);
    }
    let before = basic_pids(&rest, &host_ids)?;

    let task = rest.post(
        "/api/v2/compute/hosts/batchRestartAgents",
        json!({ "hostIds": host_ids }),
    )?;
    let task_id = task["id"].as_i64().context("task id in the answer")?;
    println!("\nBatch restart submitted as task {task_id}:\n");
    let labels: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();
    let mut screen = Screen::default();
    let task = loop {
        let task = rest.get(&format!("/api/v2/tasks/instances/{task_id}"))?;
        screen.show(render(&task, &labels));
        if task["status"] != "RUNNING" {
            break task;
        }
        if stop_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            println!("\nInterrupted; stopping the demo.");
            fleet.stop();
            return Ok(());
        }
    };
    println!(
        "\nTask {task_id} ended {} in {:.1}s after the fleet started.",
        task["status"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    let after = basic_pids(&rest, &host_ids)?;
    for ((host, old), new) in fleet.hosts.iter().zip(&before).zip(&after) {
        println!("  {}: basic process pids {old:?} -> {new:?}", host.ip);
    }

    print_guide(&fleet, &rest, host_ids[0])?;
    if args.no_wait {
        fleet.stop();
        return Ok(());
    }
    println!("\nEverything keeps running until Ctrl-C.");
    let _ = stop_rx.recv();
    println!("Stopping the controller and the agents...");
    fleet.stop();
    let _ = std::fs::remove_dir_all(&data);
    println!("Stopped; nothing is left running.");
    Ok(())
}

/// Pids of each host's basic processes (alias order), as the controller reports them.
fn basic_pids(rest: &Rest, host_ids: &[i64]) -> anyhow::Result<Vec<Vec<i64>>> {
    host_ids
        .iter()
        .map(|id| {
            let page = rest.get(&format!("/api/v2/compute/hosts/{id}/agent/processes"))?;
            Ok(page["contents"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["alias"] != "ob_cleaner")
                        .filter_map(|p| p["pid"].as_i64())
                        .collect()
                })
                .unwrap_or_default())
        })
        .collect()
}

fn print_guide(fleet: &Fleet, rest: &Rest, host_id: i64) -> anyhow::Result<()> {
    let processes = rest.get(&format!("/api/v2/compute/hosts/{host_id}/agent/processes"))?;
    let process_id = |alias: &str| -> i64 {
        processes["contents"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["alias"] == alias))
            .and_then(|p| p["id"].as_i64())
            .unwrap_or(1)
    };
    let worker = process_id("ob_cleaner");
    let tasks = rest.get("/api/v2/tasks/instances?page=1&size=1")?;
    let task_id = tasks["contents"][0]["id"].as_i64().unwrap_or(1);
    let password = &fleet.admin_password;
    println!(
        "\nCredentials: admin / {password}   (also in {})",
        fleet.password_file().display()
    );
    println!("\nREST (every route also answers without the /api/v2 prefix):");
    // In TLS mode curl trusts the demo's CA, and gRPC calls name the CA (and, to an
    // agent, the controller's certificate: the only client an agent serves).
    let (c, open, base, g_tls, agent_tls) = match &fleet.pki {
        Some(pki) => {
            let ca = shell_path(&pki.ca);
            (
                format!("curl -s --cacert {ca} -u admin:{password}"),
                format!("curl -s --cacert {ca}"),
                format!("https://{HTTP}/api/v2"),
                format!("-cacert {ca}"),
                format!(
                    "-cacert {ca} -cert {} -key {}",
                    shell_path(&pki.controller_cert),
                    shell_path(&pki.controller_key)
                ),
            )
        }
        None => (
            format!("curl -s -u admin:{password}"),
            "curl -s".to_string(),
            format!("http://{HTTP}/api/v2"),
            "-plaintext".to_string(),
            "-plaintext".to_string(),
        ),
    };
    let json_post = |path: &str, body: &str| {
        format!("{c} -H 'Content-Type: application/json' -X POST {base}{path} -d '{body}'")
    };
    let lines = [
        format!("{c} {base}/compute/hosts"),
        format!("{c} {base}/compute/hosts/{host_id}"),
        json_post(
            "/compute/hosts",
            r#"{"innerIpAddress":"127.0.0.5","agentPort":62888}"#,
        ),
        format!("{c} -X DELETE {base}/compute/hosts/<id>"),
        format!("{c} {base}/compute/hosts/{host_id}/agent"),
        format!("{c} {base}/compute/hosts/{host_id}/agent/processes"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/processes/{worker}/start"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/processes/{worker}/restart"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/processes/{worker}/stop"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/restart"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/stop"),
        format!("{c} -X POST {base}/compute/hosts/{host_id}/agent/start"),
        json_post(
            "/compute/hosts/batchRestartAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        json_post(
            "/compute/hosts/batchStopAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        json_post(
            "/compute/hosts/batchStartAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        format!("{c} '{base}/tasks/instances?page=1&size=10'"),
        format!("{c} {base}/tasks/instances/{task_id}"),
        format!("{open} {base}/openapi.json"),
    ];
    for line in lines {
        println!("  {line}");
    }
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("admin:{password}"),
    );
    let g = format!("grpcurl {g_tls} -H 'authorization: Basic {auth}'");
    println!("\ngRPC (reflection and health are open; the services take the same credentials):");
    for line in [
        format!("grpcurl {g_tls} {GRPC} list"),
        format!("grpcurl {g_tls} {GRPC} describe ocp.v1.HostAgentService"),
        format!("grpcurl {g_tls} {GRPC} grpc.health.v1.Health/Check"),
        format!("{g} {GRPC} ocp.v1.HostAgentService/ListHosts"),
        format!(
            "{g} -d '{{\"host_ids\":[{host_id}]}}' {GRPC} ocp.v1.HostAgentService/BatchRestartAgents"
        ),
        format!("{g} -d '{{\"id\":{task_id}}}' {GRPC} ocp.v1.TaskService/GetTask"),
    ] {
        println!("  {line}");
    }
    if fleet.pki.is_some() {
        println!(
            "\nAn agent serves only the controller's certificate (without -cert/-key the handshake fails):"
        );
    } else {
        println!("\nAn agent:");
    }
    println!(
        "  grpcurl {agent_tls} {} ocp.agent.v1.AgentService/ListProcesses",
        fleet.hosts[0].addr
    );
    println!("\nLogs: {}", fleet.spec.root.join("logs").display());
    Ok(())
}

/// A path for a shell command line, quoted only when it needs to be.
fn shell_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// One demo at a time: a second one would find the addresses taken and fail obscurely.
struct DemoLock {
    path: PathBuf,
}

impl DemoLock {
    fn take(dir: &Path) -> anyhow::Result<DemoLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("demo.pid");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid_alive(pid)
        {
            bail!(
                "a demo is already running (pid {pid}); stop it with Ctrl-C in its terminal (or `kill {pid}`) before starting another"
            );
        }
        std::fs::write(&path, std::process::id().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(DemoLock { path })
    }
}

impl Drop for DemoLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}
