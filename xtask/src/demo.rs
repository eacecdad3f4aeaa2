//! `cargo xtask demo`: the whole product on one machine, for a newcomer's first look,
//! with mutual TLS as in production, and the commands to try it by hand; with
//! `--upgrade`, its agents upgraded in place (demo_upgrade).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::demo_upgrade;
use crate::fleet::{AgentProfile, Fleet, FleetSpec, Transport, demo_controller_args};
use crate::progress::{Screen, render};
use crate::rest::Rest;
use crate::upgrade;

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
    /// Run the batch restart as a rolling one, N hosts a batch (or N% of them), that
    /// pauses after the first batch until you resume it with the command it prints
    /// (with --no-wait the demo resumes it itself after a few seconds).
    #[arg(long, value_name = "N", value_parser = batch_size)]
    pub rollout: Option<BatchSize>,
    /// After the restart, upload the ocp-agent binary as a new agent version, upgrade
    /// every agent to it in one batch task, and show each host's agent version and pid
    /// and its processes' pids before and after: the same pids.
    #[arg(long)]
    pub upgrade: bool,
}

/// `--rollout`: a number of hosts per batch, or a percentage of them, as `batchSize`
/// takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Hosts(u64),
    Percent(u8),
}

impl BatchSize {
    fn json(self) -> Value {
        match self {
            BatchSize::Hosts(n) => json!(n),
            BatchSize::Percent(p) => json!(format!("{p}%")),
        }
    }
}

fn batch_size(text: &str) -> Result<BatchSize, String> {
    match text.strip_suffix('%') {
        Some(p) => match p.parse::<u8>() {
            Ok(p @ 1..=100) => Ok(BatchSize::Percent(p)),
            _ => Err("a percentage from 1% to 100%".to_string()),
        },
        None => match text.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(BatchSize::Hosts(n)),
            _ => Err("a number of hosts (1 or more) or a percentage such as 50%".to_string()),
        },
    }
}

/// How long `--no-wait` leaves a paused rollout on screen before resuming it.
const SELF_RESUME: Duration = Duration::from_secs(3);

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
            "Certificates (ocp-controller pki init, pki issue for each agent and an operator): {}",
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

    let body = match args.rollout {
        Some(size) => json!({
            "hostIds": host_ids,
            "rollout": {"batchSize": size.json(), "pauseAfterFirstBatch": true},
        }),
        None => json!({ "hostIds": host_ids }),
    };
    let task = rest.post("/api/v2/compute/hosts/batchRestartAgents", body)?;
    let task_id = task["id"].as_i64().context("task id in the answer")?;
    match args.rollout {
        Some(_) => println!(
            "\nRolling batch restart submitted as task {task_id}; it pauses after the first batch:\n"
        ),
        None => println!("\nBatch restart submitted as task {task_id}:\n"),
    }
    let labels: Vec<String> = fleet.hosts.iter().map(|h| h.ip.to_string()).collect();
    let cli = Cli::new(&fleet);
    let resume_path = format!("/api/v2/tasks/instances/{task_id}/resume");
    let mut screen = Screen::default();
    let mut paused_at: Option<Instant> = None;
    let mut resumed = false;
    let task = loop {
        let task = rest.get(&format!("/api/v2/tasks/instances/{task_id}"))?;
        let mut lines = render(&task, &labels);
        let paused = task["status"] == "RUNNING" && task["paused"] == true;
        if paused {
            let since = *paused_at.get_or_insert_with(Instant::now);
            lines.push(String::new());
            lines.push("The rollout is paused: check the hosts done so far, then resume it with either of:".into());
            lines.extend(cli.resume(task_id).iter().map(|l| format!("  {l}")));
            if args.no_wait && !resumed {
                lines.push(format!(
                    "(--no-wait: the demo resumes it itself in {} s)",
                    SELF_RESUME.as_secs()
                ));
                if since.elapsed() >= SELF_RESUME {
                    rest.post_empty(&resume_path)?;
                    resumed = true;
                }
            }
        } else {
            paused_at = None;
        }
        screen.show(lines);
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

    if args.upgrade {
        upgrade_demo(&fleet, &cli, &rest, &host_ids)?;
    }
    print_guide(&fleet, &cli, &rest, &host_ids)?;
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

/// `--upgrade`: the fleet upgraded in place to a fresh version, shown before and after,
/// and the commands that do it by hand.
fn upgrade_demo(fleet: &Fleet, cli: &Cli, rest: &Rest, host_ids: &[i64]) -> anyhow::Result<()> {
    let version = upgrade::fresh_version_now("demo-next");
    let binary = fleet.spec.binary("ocp-agent");
    println!(
        "\nUpgrading every agent in place to {version} (the package: {}):\n",
        binary.display()
    );
    let mut screen = Screen::default();
    let (task, changes) =
        demo_upgrade::upgrade_fleet(fleet, rest, host_ids, &version, Some(&mut screen))?;
    println!(
        "\nTask {} ({}) ended {}. Before -> after:",
        task["id"],
        task["name"].as_str().unwrap_or("?"),
        task["status"].as_str().unwrap_or("?")
    );
    for line in demo_upgrade::report(&changes) {
        println!("{line}");
    }
    let all_hosts = host_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "\nThe same by hand (a new version each time: an agent at a version answers at once):"
    );
    for line in [
        cli.upload(&shell_path(&binary), "<version>"),
        format!("{} {}/agent/packages", cli.curl, cli.base),
        cli.post_json(
            "/compute/hosts/batchUpgradeAgents",
            &format!(
                r#"{{"hostIds":[{all_hosts}],"version":"<version>","rollout":{{"batchSize":1}}}}"#
            ),
        ),
        format!(
            "{} {}/compute/hosts/{}/agent",
            cli.curl, cli.base, host_ids[0]
        ),
    ] {
        println!("  {line}");
    }
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

/// The commands the guide prints, with the demo's credentials and, over TLS, its CA
/// (and, to an agent, the controller's certificate: the only client an agent serves).
struct Cli {
    /// curl with the admin's credentials.
    curl: String,
    /// curl without credentials, for the open routes.
    curl_open: String,
    /// The REST base, `/api/v2` included.
    base: String,
    /// grpcurl's transport flags to the controller, and to an agent.
    grpc_tls: String,
    agent_tls: String,
    /// grpcurl with the controller's transport flags and the admin's credentials.
    grpcurl: String,
}

impl Cli {
    fn new(fleet: &Fleet) -> Cli {
        let password = &fleet.admin_password;
        let (curl, curl_open, base, grpc_tls, agent_tls) = match &fleet.pki {
            Some(pki) => {
                let ca = shell_path(&pki.ca);
                (
                    format!("curl -s --cacert {ca} -u admin:{password}"),
                    format!("curl -s --cacert {ca}"),
                    format!("https://{HTTP}/api/v2"),
                    format!("-cacert {ca}"),
                    format!(
                        "-cacert {ca} -cert {} -key {}",
                        shell_path(&pki.operator_cert),
                        shell_path(&pki.operator_key)
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
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{password}"),
        );
        let grpcurl = format!("grpcurl {grpc_tls} -H 'authorization: Basic {auth}'");
        Cli {
            curl,
            curl_open,
            base,
            grpc_tls,
            agent_tls,
            grpcurl,
        }
    }

    fn post_json(&self, path: &str, body: &str) -> String {
        format!(
            "{} -H 'Content-Type: application/json' -X POST {}{path} -d '{body}'",
            self.curl, self.base
        )
    }

    /// Uploading an ocp-agent binary as the package of `version`.
    fn upload(&self, binary: &str, version: &str) -> String {
        format!(
            "{} -H 'Content-Type: application/octet-stream' --data-binary @{binary} '{}/agent/packages?version={version}'",
            self.curl, self.base
        )
    }

    /// A POST without a body, as the task operations take it.
    fn post(&self, path: &str) -> String {
        format!("{} -X POST {}{path}", self.curl, self.base)
    }

    /// `TaskService/<method>` of task `id` (a number, or `<id>` for the reader to fill in).
    fn task_call(&self, method: &str, id: &str) -> String {
        format!(
            "{} -d '{{\"id\":{id}}}' {GRPC} ocp.v1.TaskService/{method}",
            self.grpcurl
        )
    }

    /// Resuming a paused rollout, by REST and by gRPC.
    fn resume(&self, task_id: i64) -> [String; 2] {
        [
            self.post(&format!("/tasks/instances/{task_id}/resume")),
            self.task_call("ResumeTask", &task_id.to_string()),
        ]
    }
}

fn print_guide(fleet: &Fleet, cli: &Cli, rest: &Rest, host_ids: &[i64]) -> anyhow::Result<()> {
    let host_id = host_ids[0];
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
    println!(
        "\nConsole: {}/console/   (sign in as admin with the password above{})",
        fleet.rest_base(),
        if fleet.pki.is_some() {
            "; the browser will warn that the demo's own CA signed the certificate"
        } else {
            ""
        }
    );
    println!("\nREST (every route also answers without the /api/v2 prefix):");
    let Cli {
        curl: c,
        curl_open: open,
        base,
        ..
    } = cli;
    let all_hosts = host_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let lines = [
        format!("{c} {base}/compute/hosts"),
        format!("{c} {base}/compute/hosts/{host_id}"),
        cli.post_json(
            "/compute/hosts",
            r#"{"innerIpAddress":"127.0.0.5","agentPort":62888}"#,
        ),
        format!("{c} -X DELETE {base}/compute/hosts/<id>"),
        format!("{c} {base}/compute/hosts/{host_id}/agent"),
        format!("{c} {base}/compute/hosts/{host_id}/agent/processes"),
        cli.post(&format!(
            "/compute/hosts/{host_id}/agent/processes/{worker}/start"
        )),
        cli.post(&format!(
            "/compute/hosts/{host_id}/agent/processes/{worker}/restart"
        )),
        cli.post(&format!(
            "/compute/hosts/{host_id}/agent/processes/{worker}/stop"
        )),
        cli.post(&format!("/compute/hosts/{host_id}/agent/restart")),
        cli.post(&format!("/compute/hosts/{host_id}/agent/stop")),
        cli.post(&format!("/compute/hosts/{host_id}/agent/start")),
        cli.post_json(
            "/compute/hosts/batchRestartAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        cli.post_json(
            "/compute/hosts/batchStopAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        cli.post_json(
            "/compute/hosts/batchStartAgents",
            &format!(r#"{{"hostIds":[{host_id}]}}"#),
        ),
        cli.post_json(
            "/compute/hosts/batchRestartAgents",
            &format!(
                r#"{{"hostIds":[{all_hosts}],"rollout":{{"batchSize":1,"maxFailedHosts":0,"pauseAfterFirstBatch":true}}}}"#
            ),
        ),
        cli.post("/tasks/instances/<id>/pause"),
        cli.post("/tasks/instances/<id>/resume"),
        format!("{c} '{base}/tasks/instances?page=1&size=10'"),
        format!("{c} {base}/tasks/instances/{task_id}"),
        format!("{open} {base}/openapi.json"),
    ];
    for line in lines {
        println!("  {line}");
    }
    let Cli {
        grpc_tls: g_tls,
        agent_tls,
        grpcurl: g,
        ..
    } = cli;
    println!("\ngRPC (reflection and health are open; the services take the same credentials):");
    for line in [
        format!("grpcurl {g_tls} {GRPC} list"),
        format!("grpcurl {g_tls} {GRPC} describe ocp.v1.HostAgentService"),
        format!("grpcurl {g_tls} {GRPC} grpc.health.v1.Health/Check"),
        format!("{g} {GRPC} ocp.v1.HostAgentService/ListHosts"),
        format!(
            "{g} -d '{{\"host_ids\":[{host_id}]}}' {GRPC} ocp.v1.HostAgentService/BatchRestartAgents"
        ),
        format!(
            "{g} -d '{{\"host_ids\":[{all_hosts}],\"rollout\":{{\"batch_size\":\"1\",\"pause_after_first_batch\":true}}}}' {GRPC} ocp.v1.HostAgentService/BatchRestartAgents"
        ),
        format!("{g} -d '{{\"id\":{task_id}}}' {GRPC} ocp.v1.TaskService/GetTask"),
        cli.task_call("PauseTask", "<id>"),
        cli.task_call("ResumeTask", "<id>"),
    ] {
        println!("  {line}");
    }
    if fleet.pki.is_some() {
        println!(
            "\nAn agent takes every call from the controller's certificate only; the operator's \
             certificate reads ({}), and without -cert/-key the handshake fails:",
            trust::OPERATOR_METHODS.join(", ")
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
    u32::try_from(pid).is_ok_and(test_support::procs::alive)
}

#[cfg(test)]
mod tests {
    use super::{BatchSize, batch_size};

    #[test]
    fn rollout_takes_a_number_of_hosts_or_a_percentage_as_batch_size_does() {
        assert_eq!(batch_size("1"), Ok(BatchSize::Hosts(1)));
        assert_eq!(batch_size("25%"), Ok(BatchSize::Percent(25)));
        assert_eq!(batch_size("100%"), Ok(BatchSize::Percent(100)));
        for bad in ["0", "0%", "101%", "-1", "two", "%", ""] {
            assert!(batch_size(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(BatchSize::Hosts(2).json(), serde_json::json!(2));
        assert_eq!(BatchSize::Percent(50).json(), serde_json::json!("50%"));
    }
}
