//! Several real controllers on one PostgreSQL database (issue 13), driving real agents:
//!
//! - the owner of a batch restart is SIGKILLed at a random moment, twenty times: a
//!   survivor takes the task over and finishes it, every process running once;
//! - an owner frozen past its lease and woken after a survivor finished its task changes
//!   nothing, and says it was fenced;
//! - a task made on one controller is read, watched (SSE and WatchTask) and cancelled
//!   through another;
//! - a rolling task driven by one controller is paused and resumed through another;
//! - conflicting submissions to two controllers at the same moment: one wins;
//! - a second controller on one SQLite store refuses to start;
//! - each host is heartbeated by one controller at a time, and by a survivor once its
//!   controller dies;
//! - a lease that no runner drives (its request was dropped after the commit) runs out
//!   and the task is taken over, instead of being renewed forever;
//! - an owner woken after a takeover sends its agents nothing more for the task;
//! - an owner frozen inside a transaction on its task still loses the task;
//! - a task taken over names the survivor as its executor, its watches on the survivor
//!   carry the takeover event, and its reads and events name each subtask's host.
//!
//! Every test needs PostgreSQL and says SKIPPED without it (unless
//! `OCP_REQUIRE_POSTGRES=1`), except the SQLite one. The tests run one at a time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::controllers::*;
use common::fleet::{free_port, hosts_client, tasks_client, workspace_bin};
use common::proc_agent::{ProcAgent, unique_tag};
use proto::agent::v1::ProcessStatus;
use proto::ocp::v1::{
    AddHostRequest, BatchRestartAgentsRequest, GetHostAgentRequest, GetHostRequest, GetTaskRequest,
    Task, WatchTaskRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

const START_ALL: &str = "Start all OCP agent processes";
const STOP_ALL: &str = "Stop all OCP agent processes";

/// How long a survivor may take to touch a dead or frozen owner's task: many TTLs, so
/// that only a controller that never takes over fails.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(20);

/// Agents on loopback, each supervising `basic_processes` with a listener that takes
/// `startup_delay_ms` to come up and a stubborn process that takes `stubborn_stop` to stop.
async fn start_agents(n: usize, startup_delay_ms: u64, stubborn_stop: &str) -> Vec<ProcAgent> {
    let mut agents = Vec::new();
    for _ in 0..n {
        let tag = unique_tag();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = basic_processes(&tag, startup_delay_ms, stubborn_stop);
        // Every call logged, reads included (the agent's default leaves those at
        // DEBUG), so that the heartbeats can be counted in each agent's log.
        let env = [("RUST_LOG", "info,agent::grpc=debug")];
        agents.push(ProcAgent::start_with_env(addr, tag, &config, &env).await);
    }
    agents
}

async fn wait_all_started(agent: &ProcAgent) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = agent.processes().await;
        if list.len() == ALIASES.len()
            && list
                .iter()
                .all(|p| p.status() == ProcessStatus::Started && p.pid != 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all started: {list:#?}\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn add_hosts(node: &Node, agents: &[ProcAgent]) -> Vec<i64> {
    let mut client = hosts_client(node.grpc).await;
    let mut ids = Vec::new();
    for agent in agents {
        ids.push(
            client
                .add_host(AddHostRequest {
                    inner_ip_address: agent.addr.ip().to_string(),
                    agent_port: u32::from(agent.addr.port()),
                    name: String::new(),
                })
                .await
                .expect("add host")
                .into_inner()
                .id,
        );
    }
    ids
}

async fn host_status(node: &Node, host_id: i64) -> String {
    hosts_client(node.grpc)
        .await
        .get_host(GetHostRequest { host_id })
        .await
        .expect("get host")
        .into_inner()
        .status
}

async fn wait_online(node: &Node, hosts: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for &host in hosts {
        while host_status(node, host).await != "ONLINE" {
            assert!(Instant::now() < deadline, "host {host} never ONLINE");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads the task through `node`'s gRPC until `done` holds, failing after `limit`.
async fn wait_task(node: &Node, id: i64, limit: Duration, done: impl Fn(&Task) -> bool) -> Task {
    let mut client = tasks_client(node.grpc).await;
    let deadline = Instant::now() + limit;
    loop {
        let task = client
            .get_task(GetTaskRequest { id })
            .await
            .expect("get task")
            .into_inner();
        if done(&task) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not reach the condition in {limit:?} on {}: {task:#?}",
            node.grpc
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit_batch(node: &Node, hosts: &[i64]) -> Task {
    hosts_client(node.grpc)
        .await
        .batch_restart_agents(BatchRestartAgentsRequest {
            host_ids: hosts.to_vec(),
            rollout: None,
        })
        .await
        .unwrap_or_else(|e| panic!("submit to {}: {e}", node.grpc))
        .into_inner()
}

/// Each basic process runs exactly once, as the pid the agent reports and the
/// controller (`node`) shows for the host.
async fn assert_each_runs_once(agent: &ProcAgent, node: &Node, host_id: i64, context: &str) {
    let list = agent.processes().await;
    let shown = hosts_client(node.grpc)
        .await
        .get_host_agent(GetHostAgentRequest { host_id })
        .await
        .expect("get host agent")
        .into_inner();
    for alias in ALIASES {
        let reported = list
            .iter()
            .find(|p| p.alias == alias)
            .unwrap_or_else(|| panic!("{context}: {alias} not reported: {list:#?}"));
        assert_eq!(
            reported.status(),
            ProcessStatus::Started,
            "{context}: {alias}: {reported:?}"
        );
        assert_eq!(
            agent.live_copies(alias),
            vec![reported.pid],
            "{context}: {alias} should run once, as pid {}; agent log:\n{}",
            reported.pid,
            agent.log_tail()
        );
        let pid = shown
            .processes
            .iter()
            .find(|p| p.alias == alias)
            .map(|p| p.pid);
        assert_eq!(
            pid,
            i32::try_from(reported.pid).ok(),
            "{context}: the controller shows another pid for {alias}: {shown:#?}"
        );
    }
}

/// The pid of each basic process of each agent, as the agents report them.
async fn pids(agents: &[ProcAgent]) -> Vec<Vec<(String, u32)>> {
    let mut all = Vec::new();
    for agent in agents {
        let mut mine: Vec<(String, u32)> = agent
            .processes()
            .await
            .into_iter()
            .map(|p| (p.alias, p.pid))
            .collect();
        mine.sort();
        all.push(mine);
    }
    all
}

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Twenty times: a batch restart over three hosts is submitted to one of three
/// controllers, which is SIGKILLed after a random delay (the seed is printed; set
/// `OCP_TEST_SEED` to replay it); a survivor must take the task over and end it
/// SUCCESSFUL with every basic process running exactly once. Takeover time is from the
/// kill to the first event a survivor writes for the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_sigkilled_at_random_moments_20_times() {
    const TRIALS: usize = 20;
    let _serial = serial().await;
    let Some(mut cluster) = Cluster::start(
        "owner_sigkilled_at_random_moments_20_times",
        3,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "15s"],
    )
    .await
    else {
        return;
    };
    let agents = start_agents(3, 700, "1s").await;
    for agent in &agents {
        wait_all_started(agent).await;
    }
    let hosts = add_hosts(&cluster.nodes[0], &agents).await;
    wait_online(&cluster.nodes[0], &hosts).await;

    let seed = std::env::var("OCP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("owner kills: seed {seed} (replay with OCP_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut takeovers = Vec::new();
    for trial in 0..TRIALS {
        let owner = rng.random_range(0..cluster.nodes.len());
        let delay = Duration::from_millis(rng.random_range(0..2000));
        let task = submit_batch(&cluster.nodes[owner], &hosts).await;
        tokio::time::sleep(delay).await;
        cluster.nodes[owner].kill();
        let killed_at = Instant::now();
        let killed_ms = unix_ms(SystemTime::now());
        let context = format!(
            "trial {trial} (seed {seed}, task {}, owner killed {delay:?} after the submission)",
            task.id
        );

        let last_seq = cluster.db.events(task.id).await.last().map_or(0, |e| e.seq);
        let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
            .bind(task.id)
            .fetch_one(&cluster.db.pool)
            .await
            .expect("task status");
        if status == "RUNNING" {
            // A late commit of the dead owner carries an earlier time: only an event
            // made after the kill is a survivor's.
            loop {
                let news: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM task_events WHERE task_id = $1 AND id > $2 AND at >= $3",
                )
                .bind(task.id)
                .bind(last_seq)
                .bind(killed_ms)
                .fetch_one(&cluster.db.pool)
                .await
                .expect("read task_events");
                if news > 0 {
                    takeovers.push(killed_at.elapsed());
                    break;
                }
                assert!(
                    killed_at.elapsed() < TAKEOVER_LIMIT,
                    "{context}: no survivor wrote anything for the task in {TAKEOVER_LIMIT:?} \
                     (lease TTL {LEASE_TTL:?})\n{}",
                    cluster.logs(30)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        let survivor = &cluster.nodes[(owner + 1) % cluster.nodes.len()];
        let done = wait_task(survivor, task.id, Duration::from_secs(60), |t| {
            t.status != "RUNNING"
        })
        .await;
        assert_eq!(done.status, "SUCCESSFUL", "{context}: {done:#?}");
        assert!(
            done.subtasks.iter().all(|s| s.status == "SUCCESSFUL"),
            "{context}: {done:#?}"
        );
        assert_eq!(
            cluster.db.held_locks().await,
            vec![],
            "{context}: no host lock outlives its task"
        );
        for (agent, &host) in agents.iter().zip(&hosts) {
            assert_each_runs_once(agent, survivor, host, &context).await;
        }
        eprintln!(
            "{context}: {} at the kill, {}",
            status,
            takeovers
                .last()
                .filter(|_| status == "RUNNING")
                .map_or("no takeover needed".to_string(), |t| format!(
                    "taken over {t:?} after the kill"
                ))
        );
        cluster.replace(owner).await;
    }

    takeovers.sort();
    eprintln!(
        "takeover after SIGKILL: median {:?}, max {:?} over {} kills inside a task (of {TRIALS} \
         trials), lease TTL {LEASE_TTL:?}",
        median(&takeovers),
        takeovers.last().copied().unwrap_or_default(),
        takeovers.len()
    );
    assert!(
        takeovers.len() >= TRIALS / 2,
        "most kills must land inside a task to test anything: {} did",
        takeovers.len()
    );
}

/// What a user could see of a finished task and its hosts.
#[derive(Debug, PartialEq)]
struct Snapshot {
    task: Task,
    events: Vec<StoredEvent>,
    log_lines: Vec<(i64, String)>,
    pids: Vec<Vec<(String, u32)>>,
    locks: Vec<(i64, i64)>,
}

async fn snapshot(cluster: &Cluster, node: &Node, id: i64, agents: &[ProcAgent]) -> Snapshot {
    Snapshot {
        task: tasks_client(node.grpc)
            .await
            .get_task(GetTaskRequest { id })
            .await
            .expect("get task")
            .into_inner(),
        events: cluster.db.events(id).await,
        log_lines: cluster.db.log_lines(id).await,
        pids: pids(agents).await,
        locks: cluster.db.held_locks().await,
    }
}

/// The owner is frozen (SIGSTOP) while Start all runs, for longer than its lease; a
/// survivor takes over and finishes the task; the owner is woken (SIGCONT). Whatever the
/// woken owner still had in flight must change nothing: statuses, runTime, events, log
/// lines and the processes' pids stay as the survivor left them, and its log says it
/// was fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owner_woken_after_takeover_changes_nothing() {
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "a_stopped_owner_woken_after_takeover_changes_nothing",
        2,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "15s"],
    )
    .await
    else {
        return;
    };
    let agents = start_agents(2, 1500, "1s").await;
    for agent in &agents {
        wait_all_started(agent).await;
    }
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let hosts = add_hosts(b, &agents).await;
    wait_online(b, &hosts).await;

    let task = submit_batch(a, &hosts).await;
    wait_task(b, task.id, Duration::from_secs(30), |t| {
        t.subtasks
            .iter()
            .any(|s| s.name == START_ALL && s.status == "RUNNING")
    })
    .await;
    a.freeze();
    let frozen_at = Instant::now();
    let done = wait_task(b, task.id, TAKEOVER_LIMIT + Duration::from_secs(15), |t| {
        t.status != "RUNNING"
    })
    .await;
    eprintln!(
        "owner frozen: task {} {:?} after the freeze; Start all run times {:?}",
        done.status,
        frozen_at.elapsed(),
        done.subtasks
            .iter()
            .filter(|s| s.name == START_ALL)
            .map(|s| s.run_time)
            .collect::<Vec<_>>()
    );
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    for (agent, &host) in agents.iter().zip(&hosts) {
        assert_each_runs_once(agent, b, host, "finished by the survivor").await;
    }
    let before = snapshot(&cluster, b, task.id, &agents).await;

    a.thaw();
    tokio::time::sleep(3 * LEASE_TTL).await;
    let after = snapshot(&cluster, b, task.id, &agents).await;
    assert_eq!(before.task, after.task, "the woken owner changed the task");
    assert_eq!(before.events, after.events, "the woken owner wrote events");
    assert_eq!(
        before.log_lines, after.log_lines,
        "the woken owner wrote subtask log lines"
    );
    assert_eq!(before.pids, after.pids, "the woken owner touched processes");
    assert_eq!(before.locks, after.locks, "the woken owner took host locks");
    for (agent, &host) in agents.iter().zip(&hosts) {
        assert_each_runs_once(agent, b, host, "after the owner woke").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log().to_lowercase().contains("fenced") {
        assert!(
            Instant::now() < deadline,
            "the woken owner's log does not say it was fenced:\n{}",
            a.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fenced: Vec<String> = a
        .log()
        .lines()
        .filter(|l| l.to_lowercase().contains("fenced"))
        .map(str::to_string)
        .collect();
    eprintln!("the woken owner says:\n{}", fenced.join("\n"));
}

/// (seq, subtask id, status, operation, message) of an event, however it came.
type Transition = (i64, Option<i64>, String, String, String);

fn stored_transition(e: &StoredEvent) -> Transition {
    (
        e.seq,
        e.subtask_id,
        e.status.clone(),
        e.operation.clone(),
        e.message.clone(),
    )
}

fn sse_transition(e: &Value) -> Transition {
    (
        e["seq"].as_i64().expect("seq"),
        e["subtaskId"].as_i64(),
        e["status"].as_str().expect("status").to_string(),
        e["operation"].as_str().expect("operation").to_string(),
        e["message"].as_str().expect("message").to_string(),
    )
}

fn grpc_transition(e: &proto::ocp::v1::TaskEvent) -> Transition {
    (
        e.seq,
        (e.subtask_id != 0).then_some(e.subtask_id),
        e.status.clone(),
        e.operation.clone(),
        e.message.clone(),
    )
}

/// Server-sent events and WatchTask opened on one controller for one task, each
/// collecting what it is sent, with when, until the task ends.
struct Watches {
    sse: tokio::task::JoinHandle<Vec<(Value, SystemTime)>>,
    grpc: tokio::task::JoinHandle<Vec<(proto::ocp::v1::TaskEvent, SystemTime)>>,
}

impl Watches {
    fn open(rest: &Rest, node: &Node, id: i64) -> Watches {
        let sse = tokio::spawn({
            let rest = rest.clone();
            let url = node.url(&format!("/tasks/instances/{id}/events"));
            async move { rest.watch_sse(&url).await }
        });
        let grpc = tokio::spawn({
            let grpc = node.grpc;
            async move {
                let mut stream = tasks_client(grpc)
                    .await
                    .watch_task(WatchTaskRequest { id, after_seq: 0 })
                    .await
                    .expect("WatchTask")
                    .into_inner();
                let mut events = Vec::new();
                while let Some(e) = stream.message().await.expect("WatchTask stream") {
                    events.push((e, SystemTime::now()));
                }
                events
            }
        });
        Watches { sse, grpc }
    }

    /// Both streams once the task ended, and the transitions the store holds, which
    /// each stream must carry exactly, in order: none lost, reordered or invented.
    async fn agree_with_store(
        self,
        db: &Database,
        id: i64,
    ) -> (
        Vec<(Value, SystemTime)>,
        Vec<(proto::ocp::v1::TaskEvent, SystemTime)>,
        Vec<Transition>,
    ) {
        let sse = tokio::time::timeout(Duration::from_secs(15), self.sse)
            .await
            .expect("the SSE stream ends with the task")
            .expect("SSE watcher");
        let grpc = tokio::time::timeout(Duration::from_secs(15), self.grpc)
            .await
            .expect("WatchTask ends with the task")
            .expect("WatchTask watcher");
        let stored: Vec<Transition> = db.events(id).await.iter().map(stored_transition).collect();
        let over_sse: Vec<Transition> = sse.iter().map(|(e, _)| sse_transition(e)).collect();
        assert_eq!(
            over_sse, stored,
            "SSE lost, reordered or invented transitions"
        );
        let over_grpc: Vec<Transition> = grpc.iter().map(|(e, _)| grpc_transition(e)).collect();
        assert_eq!(
            over_grpc, stored,
            "WatchTask lost, reordered or invented transitions"
        );
        (sse, grpc, stored)
    }
}

/// How late each event reached a watcher, after the time the event carries.
fn lateness(events: impl Iterator<Item = (i64, SystemTime)>) -> Vec<Duration> {
    let mut late: Vec<Duration> = events
        .map(|(at, arrived)| {
            Duration::from_millis(u64::try_from(unix_ms(arrived) - at).unwrap_or(0))
        })
        .collect();
    late.sort();
    late
}

fn subtask_json(task: &Value, id: i64) -> &Value {
    task["subtasks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"].as_i64() == Some(id)))
        .unwrap_or_else(|| panic!("no subtask {id} in {task:#}"))
}

/// Created through A's REST; read through B; watched through B over SSE and WatchTask
/// from the start; its running Stop all (a process that ignores SIGTERM for 30 s) is
/// cancelled through B while A drives it. The step ends FAILED/CANCEL within a second of
/// the cancel's answer, and both watchers got every transition the store holds, in
/// order, none of them late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_made_on_one_controller_is_read_watched_and_cancelled_through_another() {
    const LATE: Duration = Duration::from_millis(1500);
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "a_task_made_on_one_controller_is_read_watched_and_cancelled_through_another",
        2,
        &["--heartbeat-interval", "1s"],
    )
    .await
    else {
        return;
    };
    let mut agents = start_agents(1, 0, "30s").await;
    wait_all_started(&agents[0]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let hosts = add_hosts(a, &agents).await;
    wait_online(b, &hosts).await;
    let rest = Rest::new();

    let (status, created) = rest
        .post(
            &a.url("/compute/hosts/batchRestartAgents"),
            json!({ "hostIds": hosts }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created:#}");
    let created = created["data"].clone();
    let id = created["id"].as_i64().expect("task id");

    let read = rest.task(b, id).await;
    assert_eq!(read["name"], created["name"], "{read:#}");
    let ids = |t: &Value| -> Vec<i64> {
        t["subtasks"]
            .as_array()
            .expect("subtasks")
            .iter()
            .map(|s| s["id"].as_i64().expect("subtask id"))
            .collect()
    };
    assert_eq!(ids(&read), ids(&created), "B shows another task: {read:#}");

    let watches = Watches::open(&rest, b, id);

    let running = rest
        .wait_task(b, id, Duration::from_secs(30), |t| {
            t["subtasks"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == STOP_ALL && s["status"] == "RUNNING")
            })
        })
        .await;
    let stop_all = running["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .find(|s| s["name"] == STOP_ALL)
        .and_then(|s| s["id"].as_i64())
        .expect("Stop all");
    // Well inside the agent's call, which waits for the stubborn process.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let (status, answer) = rest
        .call(
            Method::POST,
            &b.url(&format!("/tasks/instances/{id}/subtasks/{stop_all}/cancel")),
            None,
        )
        .await;
    let answered = Instant::now();
    assert_eq!(status, StatusCode::OK, "cancel through B: {answer:#}");
    assert!(
        answered - sent <= Duration::from_secs(3),
        "the cancel took {:?} to answer",
        answered - sent
    );
    let cancelled = rest
        .wait_task(b, id, Duration::from_secs(10), |t| {
            let s = subtask_json(t, stop_all);
            s["status"] == "FAILED" && s["operation"] == "CANCEL"
        })
        .await;
    let stopped_after = answered.elapsed();
    eprintln!(
        "cancel through B: answered in {:?}, Stop all FAILED/CANCEL {stopped_after:?} after the answer",
        answered - sent
    );
    assert!(
        stopped_after <= Duration::from_secs(1),
        "Stop all ended FAILED/CANCEL {stopped_after:?} after the cancel's answer: {cancelled:#}"
    );
    let ended = rest
        .wait_task(b, id, Duration::from_secs(15), |t| t["status"] != "RUNNING")
        .await;
    assert_eq!(ended["status"], "FAILED", "{ended:#}");
    assert_eq!(rest.task(a, id).await, ended, "A and B disagree");

    let (sse, watched, stored) = watches.agree_with_store(&cluster.db, id).await;
    assert!(
        stored
            .iter()
            .any(|(_, sub, status, op, _)| *sub == Some(stop_all)
                && status == "FAILED"
                && op == "CANCEL"),
        "{stored:#?}"
    );

    let sse_late = lateness(
        sse.iter()
            .map(|(e, t)| (rfc3339_ms(e["time"].as_str().expect("time")), *t)),
    );
    let grpc_late = lateness(watched.iter().map(|(e, t)| (rfc3339_ms(&e.time), *t)));
    eprintln!(
        "watching on B what A wrote: {} events; SSE latest {:?}, WatchTask latest {:?}",
        stored.len(),
        sse_late.last(),
        grpc_late.last()
    );
    for (face, late) in [("SSE", &sse_late), ("WatchTask", &grpc_late)] {
        let worst = late.last().copied().unwrap_or_default();
        assert!(
            worst <= LATE,
            "{face} on B delivered a transition {worst:?} after it happened"
        );
    }
    // Not a graceful stop, which would wait out the stubborn process's 30 s.
    agents[0].kill();
}

/// Ten rounds: the same host's batch restart sent to two controllers at the same moment.
/// Exactly one is accepted; the other is refused with 409 naming the winner's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_submissions_to_two_controllers_one_wins_10_rounds() {
    const ROUNDS: usize = 10;
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "racing_submissions_to_two_controllers_one_wins_10_rounds",
        2,
        &["--heartbeat-interval", "1s"],
    )
    .await
    else {
        return;
    };
    let agents = start_agents(1, 0, "1s").await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let hosts = add_hosts(a, &agents).await;
    wait_online(b, &hosts).await;
    let rest = Rest::new();
    let body = json!({ "hostIds": hosts });
    let (url_a, url_b) = (
        a.url("/compute/hosts/batchRestartAgents"),
        b.url("/compute/hosts/batchRestartAgents"),
    );
    let mut wins = [0; 2];
    for round in 0..ROUNDS {
        let (on_a, on_b) = tokio::join!(
            rest.post(&url_a, body.clone()),
            rest.post(&url_b, body.clone()),
        );
        let answers = [on_a, on_b];
        let accepted: Vec<usize> = (0..2).filter(|&i| answers[i].0 == StatusCode::OK).collect();
        assert_eq!(accepted.len(), 1, "round {round}: {answers:#?}");
        let (winner, loser) = (accepted[0], 1 - accepted[0]);
        wins[winner] += 1;
        let task = answers[winner].1["data"]["id"].as_i64().expect("task id");
        let (status, refusal) = &answers[loser];
        assert_eq!(*status, StatusCode::CONFLICT, "round {round}: {refusal:#}");
        let message = refusal["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("task {task}")),
            "round {round}: the refusal should name task {task}: {refusal:#}"
        );
        let node = &cluster.nodes[loser];
        let done = rest
            .wait_task(node, task, Duration::from_secs(60), |t| {
                t["status"] != "RUNNING"
            })
            .await;
        assert_eq!(done["status"], "SUCCESSFUL", "round {round}: {done:#}");
    }
    eprintln!("racing submissions: A won {}, B won {}", wins[0], wins[1]);
}

/// Whether `pid` stands in `line` as a number of its own.
fn names_pid(line: &str, pid: u32) -> bool {
    line.split(|c: char| !c.is_ascii_digit())
        .any(|word| word == pid.to_string())
}

/// SQLite has one controller: a second one started on the same data dir exits non-zero
/// within seconds, with one line that names the first one's pid, and the first one
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_on_the_same_sqlite_store_exits_with_one_line() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let users = write_users_file(dir.path());
    let data = dir.path().join("data");
    let mut first = Node::spawn(&NodeSpec {
        data_dir: &data,
        database_url: None,
        users: &users,
        flags: &[],
        log_filter: "warn",
        log: &dir.path().join("first.log"),
    });
    first.wait_serving().await;
    // Only errors, so that its start-up warnings do not count as lines.
    let mut second = Node::spawn(&NodeSpec {
        data_dir: &data,
        database_url: None,
        users: &users,
        flags: &[],
        log_filter: "error",
        log: &dir.path().join("second.log"),
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_exit() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a second controller on the same SQLite store still runs after 10 s:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let said = second.log();
    eprintln!("the second controller exited with {status}, saying:\n{said}");
    assert!(!status.success(), "{status}");
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{said}");
    assert!(
        names_pid(lines[0], first.pid()),
        "the line should name the first controller's pid {}: {}",
        first.pid(),
        lines[0]
    );
    assert!(first.is_running(), "the first controller is gone");
    let answered = reqwest::get(first.url("/openapi.json"))
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(answered, "the first controller stopped serving");
}

/// Unix ms of each heartbeat (GetAgentInfo without a task) in the agent's log, after
/// `from` bytes of it.
fn heartbeats(agent: &ProcAgent, from: usize) -> Vec<i64> {
    let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
    strip_ansi(log.get(from..).unwrap_or_default())
        .lines()
        .filter(|l| l.contains("method=\"GetAgentInfo\"") && l.contains("task_id= "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .collect()
}

fn log_len(agent: &ProcAgent) -> usize {
    std::fs::metadata(agent.log_path()).map_or(0, |m| m.len() as usize)
}

/// Counts each agent's heartbeats over `window` and checks they are one controller's
/// worth: about one per interval, and no two controllers interleaved (which would put
/// every other gap under half an interval).
async fn assert_one_heartbeater(
    agents: &[ProcAgent],
    interval: Duration,
    window: Duration,
    when: &str,
) {
    let starts: Vec<usize> = agents.iter().map(log_len).collect();
    tokio::time::sleep(window).await;
    let one_worth = (window.as_millis() / interval.as_millis()) as usize;
    for (i, (agent, &from)) in agents.iter().zip(&starts).enumerate() {
        let beats = heartbeats(agent, from);
        let gaps: Vec<i64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
        let half = i64::try_from(interval.as_millis() / 2).expect("ms");
        let short = gaps.iter().filter(|&&g| g < half).count();
        eprintln!(
            "{when}: agent {i}: {} heartbeats in {window:?} (one controller: at most {one_worth}), \
             {short} of {} gaps under {half} ms",
            beats.len(),
            gaps.len()
        );
        assert!(
            beats.len() >= one_worth * 3 / 10,
            "{when}: agent {i} is hardly heartbeated: {} in {window:?}\n{}",
            beats.len(),
            agent.log_tail()
        );
        assert!(
            beats.len() <= one_worth * 3 / 2,
            "{when}: agent {i} got {} heartbeats in {window:?}: more than one controller's {one_worth}",
            beats.len()
        );
        assert!(
            short * 4 < gaps.len(),
            "{when}: agent {i}: {short} of {} gaps between heartbeats are under half the interval: \
             two controllers check it",
            gaps.len()
        );
    }
}

/// Two controllers and four hosts: each host is heartbeated by one of them; once one is
/// SIGKILLed, the survivor heartbeats every host, none goes OFFLINE past the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_heartbeated_by_one_controller_at_a_time() {
    const INTERVAL: Duration = Duration::from_millis(200);
    const GRACE: Duration = Duration::from_secs(3);
    const WINDOW: Duration = Duration::from_secs(4);
    let _serial = serial().await;
    let interval = format!("{}ms", INTERVAL.as_millis());
    let grace = format!("{}ms", GRACE.as_millis());
    let Some(mut cluster) = Cluster::start(
        "hosts_are_heartbeated_by_one_controller_at_a_time",
        2,
        &["--heartbeat-interval", &interval, "--offline-grace", &grace],
    )
    .await
    else {
        return;
    };
    let demo = workspace_bin("ocp-demo-proc");
    let mut agents = Vec::new();
    for _ in 0..4 {
        let tag = unique_tag();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = format!(
            "[[process]]\nalias = \"idle\"\ncommand = {demo:?}\nargs = [\"--tag\", \"{tag}-idle\"]\nmin_live = \"0s\"\n"
        );
        // Every call logged, reads included (the agent's default leaves those at
        // DEBUG), so that the heartbeats can be counted in each agent's log.
        let env = [("RUST_LOG", "info,agent::grpc=debug")];
        agents.push(ProcAgent::start_with_env(addr, tag, &config, &env).await);
    }
    let hosts = add_hosts(&cluster.nodes[0], &agents).await;
    wait_online(&cluster.nodes[1], &hosts).await;
    // Both controllers know of each other and have split the hosts.
    tokio::time::sleep(3 * LEASE_TTL).await;
    assert_one_heartbeater(&agents, INTERVAL, WINDOW, "two controllers").await;

    cluster.nodes[0].kill();
    let killed_at = Instant::now();
    let survivor = &cluster.nodes[1];
    let mut offline = Vec::new();
    // Past the grace twice over, then a whole window: the dead one's hosts must have
    // been picked up in time.
    while killed_at.elapsed() < 2 * GRACE + 3 * LEASE_TTL {
        for &host in &hosts {
            let status = host_status(survivor, host).await;
            if status != "ONLINE" {
                offline.push((killed_at.elapsed(), host, status));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        offline.is_empty(),
        "hosts not ONLINE after a controller died: {offline:?}\n{}",
        survivor.log_tail(40)
    );
    assert_one_heartbeater(&agents, INTERVAL, WINDOW, "one survivor").await;
    for &host in &hosts {
        let shown = hosts_client(survivor.grpc)
            .await
            .get_host_agent(GetHostAgentRequest { host_id: host })
            .await
            .expect("host agent")
            .into_inner();
        assert_eq!(host_status(survivor, host).await, "ONLINE");
        let heard = unix_ms(SystemTime::now()) - rfc3339_ms(&shown.last_available_time);
        assert!(
            heard <= i64::try_from(GRACE.as_millis()).expect("ms"),
            "host {host} last heard {heard} ms ago: {shown:#?}"
        );
    }
}

/// A controller holds a lease that no runner of its own drives: the request that
/// claimed the task (a retry, a submission) was dropped between its commit and the
/// engine's start, e.g. by a client that hung up. Emulated here by reopening a finished
/// task under a new generation of the same owner, as a retry's commit does. The lease
/// must run out rather than be renewed forever, so that the task is taken over and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_task_no_runner_drives_is_taken_over_not_kept_forever() {
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "a_claimed_task_no_runner_drives_is_taken_over_not_kept_forever",
        2,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "15s"],
    )
    .await
    else {
        return;
    };
    let agents = start_agents(1, 0, "0s").await;
    wait_all_started(&agents[0]).await;
    let a = &cluster.nodes[0];
    let hosts = add_hosts(a, &agents).await;
    wait_online(a, &hosts).await;
    let task = submit_batch(a, &hosts).await;
    let done = wait_task(a, task.id, Duration::from_secs(60), |t| {
        t.status != "RUNNING"
    })
    .await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");

    let reopened = sqlx::query(
        "UPDATE tasks SET status = 'RUNNING', finish_time = NULL, \
         lease_generation = lease_generation + 1, lease_expires = $2 \
         WHERE id = $1 AND lease_owner IS NOT NULL",
    )
    .bind(task.id)
    .bind(unix_ms(SystemTime::now()) + LEASE_TTL.as_millis() as i64)
    .execute(&cluster.db.pool)
    .await
    .expect("reopen the task")
    .rows_affected();
    assert_eq!(reopened, 1, "the finished task keeps its owner");
    let ended = wait_task(a, task.id, TAKEOVER_LIMIT, |t| t.status != "RUNNING").await;
    assert_eq!(ended.status, "SUCCESSFUL", "{ended:#?}");
}

/// Waits until `node`'s log holds `needle`.
async fn wait_log(node: &Node, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !node.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within {limit:?}:\n{}",
            node.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The owner is frozen between two attempts of Stop all against an agent that is down,
/// the survivor takes over and, once the agent is back, finishes the task; then the
/// owner wakes. Its step must not call the agent again: a Stop all sent then would stop
/// what the survivor just started, behind a task that says SUCCESSFUL. Store writes are
/// fenced; agent calls cannot be, so the step waits until its lease is known to hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_owner_calls_no_agent_for_a_task_it_lost() {
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "a_woken_owner_calls_no_agent_for_a_task_it_lost",
        2,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "60s"],
    )
    .await
    else {
        return;
    };
    // A stubborn process makes Stop all last seconds, long enough to kill the agent
    // while the owner waits on it.
    let mut agents = start_agents(1, 0, "4s").await;
    wait_all_started(&agents[0]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let hosts = add_hosts(b, &agents).await;
    wait_online(b, &hosts).await;

    let task = submit_batch(a, &hosts).await;
    wait_task(b, task.id, Duration::from_secs(30), |t| {
        t.subtasks
            .iter()
            .any(|s| s.name == STOP_ALL && s.status == "RUNNING")
    })
    .await;
    agents[0].kill();
    wait_log(a, "attempt 1 failed", Duration::from_secs(20)).await;
    a.freeze();
    wait_log(b, "took the task over", TAKEOVER_LIMIT).await;
    agents[0].spawn().await;
    let done = wait_task(b, task.id, Duration::from_secs(60), |t| {
        t.status != "RUNNING"
    })
    .await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    assert_each_runs_once(&agents[0], b, hosts[0], "finished by the survivor").await;
    let before = pids(&agents).await;

    a.thaw();
    tokio::time::sleep(3 * LEASE_TTL).await;
    assert_eq!(
        before,
        pids(&agents).await,
        "the woken owner acted on the agent; its log:\n{}",
        a.log_tail(30)
    );
    assert_each_runs_once(&agents[0], b, hosts[0], "after the owner woke").await;
}

/// The owner is frozen in the middle of a transaction that holds its task's row: a
/// table lock taken by the test makes its log flush wait after the fence, and SIGSTOP
/// lands there. The database must end the frozen controller's transaction, so that a
/// survivor takes the task over as from any silent owner, instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_frozen_inside_a_transaction_still_loses_its_task() {
    use sqlx::Connection;
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "an_owner_frozen_inside_a_transaction_still_loses_its_task",
        2,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "60s"],
    )
    .await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // Hosts whose agents never answer: their Prepare steps retry, and log each attempt.
    let mut client = hosts_client(a.grpc).await;
    let mut hosts = Vec::new();
    for port in 1..=4 {
        hosts.push(
            client
                .add_host(AddHostRequest {
                    inner_ip_address: "127.0.0.1".to_string(),
                    agent_port: port,
                    name: String::new(),
                })
                .await
                .expect("add host")
                .into_inner()
                .id,
        );
    }
    let mut blocker = sqlx::PgConnection::connect(&cluster.db.url)
        .await
        .expect("connect");
    let mut held = blocker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE subtask_logs IN SHARE MODE")
        .execute(&mut *held)
        .await
        .expect("lock subtask_logs");
    let task = submit_batch(a, &hosts).await;
    let owner: String = sqlx::query_scalar("SELECT lease_owner FROM tasks WHERE id = $1")
        .bind(task.id)
        .fetch_one(&cluster.db.pool)
        .await
        .expect("owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO subtask_logs%'",
        )
        .fetch_one(&cluster.db.pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no log flush ever waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.freeze();
    held.commit().await.expect("let the flush through");
    let frozen_at = Instant::now();
    loop {
        let holder: String = sqlx::query_scalar("SELECT lease_owner FROM tasks WHERE id = $1")
            .bind(task.id)
            .fetch_one(&cluster.db.pool)
            .await
            .expect("owner");
        if holder != owner {
            eprintln!("taken over {:?} after the freeze", frozen_at.elapsed());
            break;
        }
        assert!(
            frozen_at.elapsed() < TAKEOVER_LIMIT,
            "the frozen owner's open transaction kept the task from the survivor for \
             {TAKEOVER_LIMIT:?}:\n{}",
            b.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.thaw();
}

/// A rolling restart submitted to A (which drives it) and paused through B while its
/// first batch runs: A holds the second batch until B is asked to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_task_driven_by_one_controller_is_paused_and_resumed_through_another() {
    let _serial = serial().await;
    let Some(cluster) = Cluster::start(
        "a_rolling_task_driven_by_one_controller_is_paused_and_resumed_through_another",
        2,
        &["--heartbeat-interval", "1s"],
    )
    .await
    else {
        return;
    };
    // Slow starts keep the first batch running while the pause comes.
    let agents = start_agents(2, 1500, "1s").await;
    for agent in &agents {
        wait_all_started(agent).await;
    }
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let hosts = add_hosts(a, &agents).await;
    wait_online(b, &hosts).await;
    let rest = Rest::new();
    let (status, created) = rest
        .post(
            &a.url("/compute/hosts/batchRestartAgents"),
            json!({"hostIds": hosts, "rollout": {"batchSize": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created:#}");
    let id = created["data"]["id"].as_i64().expect("task id");
    let act = |action: &str| b.url(&format!("/tasks/instances/{id}/{action}"));

    let (status, paused) = rest.call(Method::POST, &act("pause"), None).await;
    assert_eq!(status, StatusCode::OK, "pause through B: {paused:#}");
    let of_host = |t: &Value, index: i64| -> Vec<Value> {
        t["subtasks"]
            .as_array()
            .expect("subtasks")
            .iter()
            .filter(|s| s["parallelIdx"] == index)
            .cloned()
            .collect()
    };
    assert!(
        of_host(&paused["data"], 0)
            .iter()
            .any(|s| s["status"] != "SUCCESSFUL"),
        "the pause came after the first batch: {paused:#}"
    );
    let barrier_ready = |t: &Value| {
        t["subtasks"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "Wait node" && s["status"] == "READY")
        })
    };
    let held = rest
        .wait_task(a, id, Duration::from_secs(30), |t| barrier_ready(t))
        .await;
    assert_eq!(held["status"], "RUNNING");
    assert!(
        of_host(&held, 0)
            .iter()
            .all(|s| s["status"] == "SUCCESSFUL"),
        "{held:#}"
    );
    assert!(
        of_host(&held, 1).iter().all(|s| s["status"] == "PENDING"),
        "the second batch started while paused: {held:#}"
    );

    let (status, resumed) = rest.call(Method::POST, &act("resume"), None).await;
    assert_eq!(status, StatusCode::OK, "resume through B: {resumed:#}");
    let done = rest
        .wait_task(a, id, Duration::from_secs(30), |t| t["status"] != "RUNNING")
        .await;
    assert_eq!(done["status"], "SUCCESSFUL", "{done:#}");
}

/// What an event says of a subtask, however it came: (subtask id, name, host id, status).
type Labelled = (i64, String, Option<i64>, String);

/// The subtask events of an SSE stream, with what each says of its subtask.
fn sse_labels(events: &[(Value, SystemTime)]) -> Vec<Labelled> {
    events
        .iter()
        .filter_map(|(e, _)| {
            Some((
                e["subtaskId"].as_i64()?,
                e["name"]
                    .as_str()
                    .expect("a subtask event's name")
                    .to_string(),
                e["hostId"].as_i64(),
                e["status"].as_str().expect("status").to_string(),
            ))
        })
        .collect()
}

fn grpc_labels(events: &[(proto::ocp::v1::TaskEvent, SystemTime)]) -> Vec<Labelled> {
    events
        .iter()
        .filter(|(e, _)| e.subtask_id != 0)
        .map(|(e, _)| (e.subtask_id, e.name.clone(), e.host_id, e.status.clone()))
        .collect()
}

/// The batch restart's owner A is SIGKILLed while Start all runs (slow listeners keep it
/// running); B takes the task over and finishes it. B's reads name B as the task's
/// executor (A before the kill); B's watches, SSE and WatchTask, opened before the kill,
/// carry exactly one takeover event naming B, in its place among every other event the
/// store holds. Every read gives each per-host subtask its host and the barriers none,
/// and every subtask event names its subtask and host beside its status, as the task
/// shows that subtask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_taken_over_names_its_new_executor_in_reads_and_watches() {
    let _serial = serial().await;
    let Some(mut cluster) = Cluster::start(
        "a_task_taken_over_names_its_new_executor_in_reads_and_watches",
        2,
        &["--heartbeat-interval", "1s", "--max-subtask-timeout", "15s"],
    )
    .await
    else {
        return;
    };
    let agents = start_agents(2, 3000, "1s").await;
    for agent in &agents {
        wait_all_started(agent).await;
    }
    let (a_name, b_name) = (
        cluster.nodes[0].advertise.clone(),
        cluster.nodes[1].advertise.clone(),
    );
    assert_ne!(a_name, b_name, "the controllers must tell apart");
    let hosts = add_hosts(&cluster.nodes[1], &agents).await;
    wait_online(&cluster.nodes[1], &hosts).await;
    let rest = Rest::new();

    let task = submit_batch(&cluster.nodes[0], &hosts).await;
    let id = task.id;
    assert_eq!(task.executor, a_name, "A drives what was submitted to it");
    let watches = Watches::open(&rest, &cluster.nodes[1], id);
    wait_task(&cluster.nodes[1], id, Duration::from_secs(30), |t| {
        t.subtasks
            .iter()
            .any(|s| s.name == START_ALL && s.status == "RUNNING")
    })
    .await;
    let before = rest.task(&cluster.nodes[1], id).await;
    assert_eq!(before["executor"], a_name.as_str(), "{before:#}");
    cluster.nodes[0].kill();

    let b = &cluster.nodes[1];
    let done = wait_task(b, id, TAKEOVER_LIMIT + Duration::from_secs(30), |t| {
        t.status != "RUNNING"
    })
    .await;
    assert_eq!(done.status, "SUCCESSFUL", "{done:#?}");
    assert_eq!(done.executor, b_name, "gRPC names the survivor: {done:#?}");
    let read = rest.task(b, id).await;
    assert_eq!(read["executor"], b_name.as_str(), "REST names the survivor");

    // Per-host subtasks carry their host, barriers none, on both faces.
    let host_of = |parallel_idx: i32| hosts[usize::try_from(parallel_idx).expect("a host")];
    let subtasks = read["subtasks"].as_array().expect("subtasks");
    assert_eq!(subtasks.len(), done.subtasks.len());
    for (json, pb) in subtasks.iter().zip(&done.subtasks) {
        let expected = (pb.name != "Wait node").then(|| host_of(pb.parallel_idx));
        assert_eq!(pb.host_id, expected, "gRPC: {pb:#?}");
        assert_eq!(json["hostId"].as_i64(), expected, "REST: {json:#}");
        assert_eq!(
            json.get("hostId").is_some(),
            expected.is_some(),
            "a barrier has no hostId, not even null: {json:#}"
        );
    }
    assert_eq!(
        done.subtasks.iter().filter(|s| s.host_id.is_none()).count(),
        4,
        "a batch restart has four barriers"
    );

    let (sse, watched, _) = watches.agree_with_store(&cluster.db, id).await;

    let taken: Vec<&Value> = sse
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.get("takenOverBy").is_some())
        .collect();
    assert_eq!(taken.len(), 1, "one takeover: {taken:#?}");
    let takeover = taken[0];
    assert_eq!(takeover["takenOverBy"], b_name.as_str(), "{takeover:#}");
    assert_eq!(
        takeover["message"],
        format!("taken over by {b_name}").as_str()
    );
    assert_eq!(takeover["status"], "RUNNING");
    assert_eq!(takeover["operation"], "EXECUTE");
    assert!(takeover.get("subtaskId").is_none(), "{takeover:#}");
    let taken_grpc: Vec<&proto::ocp::v1::TaskEvent> = watched
        .iter()
        .map(|(e, _)| e)
        .filter(|e| !e.taken_over_by.is_empty())
        .collect();
    assert_eq!(taken_grpc.len(), 1, "{taken_grpc:#?}");
    assert_eq!(taken_grpc[0].taken_over_by, b_name);
    assert_eq!(taken_grpc[0].seq, takeover["seq"].as_i64().expect("seq"));
    // Start all was running at the kill: after the takeover, B queues it again.
    let at = sse
        .iter()
        .position(|(e, _)| e.get("takenOverBy").is_some())
        .expect("the takeover");
    assert!(
        sse[at + 1..].iter().any(|(e, _)| e["name"] == START_ALL
            && e["status"] == "READY"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("queued again"))),
        "Start all is queued again after the takeover: {:#?}",
        &sse[at..]
    );

    // Each subtask event says which step of which host, and its status, as the task
    // shows that subtask; the task's own events name none.
    let by_id = |sid: i64| {
        subtasks
            .iter()
            .find(|s| s["id"].as_i64() == Some(sid))
            .unwrap_or_else(|| panic!("no subtask {sid}"))
    };
    let labels = sse_labels(&sse);
    assert!(labels.len() > 20, "{labels:#?}");
    for (sid, name, host, status) in &labels {
        let s = by_id(*sid);
        assert_eq!(s["name"], name.as_str(), "event of {s:#}");
        assert_eq!(s["hostId"].as_i64(), *host, "event of {s:#}");
        assert!(
            [
                "PENDING",
                "READY",
                "RUNNING",
                "CANCELING",
                "FAILED",
                "SUCCESSFUL"
            ]
            .contains(&status.as_str()),
            "{status}"
        );
    }
    assert_eq!(
        labels,
        grpc_labels(&watched),
        "SSE and WatchTask say the same"
    );
    for (e, _) in sse.iter().filter(|(e, _)| e.get("subtaskId").is_none()) {
        assert!(
            e.get("name").is_none() && e.get("hostId").is_none(),
            "the task's own event names no subtask: {e:#}"
        );
    }
    // The last event of every subtask is the status a read shows.
    for s in subtasks {
        let sid = s["id"].as_i64().expect("id");
        let last = labels
            .iter()
            .rev()
            .find(|l| l.0 == sid)
            .map(|l| l.3.as_str());
        assert_eq!(last, Some("SUCCESSFUL"), "{s:#}");
    }
}
