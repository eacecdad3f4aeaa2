//! The console in a real browser: headless Chromium under ChromeDriver, signed in to a
//! real controller with real agents, doing what an operator does with the mouse, and
//! every claim checked against the REST API and the OS. Screenshots go to
//! `target/console-screenshots/`.
//!
//! Without Chromium and ChromeDriver the tests say SKIPPED, unless
//! `OCP_REQUIRE_BROWSER=1` (CI) makes that a failure.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::bin_dir;
use test_support::users::{self, User};
use xtask::browser::{self, Browser};
use xtask::fleet::{AgentProfile, Fleet, Transport, demo_controller_args};
use xtask::rest::Rest;

const ADMIN: (&str, &str) = ("admin", "console-admin-secret");
const VIEWER: (&str, &str) = ("viewer", "console-viewer-secret");
const HOSTS_ONLY: (&str, &str) = ("hostwatcher", "console-hosts-secret");
const TASKS_ONLY: (&str, &str) = ("taskwatcher", "console-tasks-secret");

fn screenshots() -> PathBuf {
    bin_dir()
        .parent()
        .expect("target")
        .join("console-screenshots")
}

/// Whether to go on: false (with the reason printed) when no browser is installed here.
fn browser_here() -> bool {
    match browser::available() {
        Ok(()) => true,
        Err(e) if std::env::var("OCP_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("OCP_REQUIRE_BROWSER=1 but {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            false
        }
    }
}

fn users_file(dir: &Path) -> PathBuf {
    let user = |(name, password), permissions| User {
        name,
        password,
        permissions,
    };
    users::write(
        dir,
        &[
            user(ADMIN, users::ALL),
            user(VIEWER, &["HOST_VIEWER", "TASK_VIEWER"]),
            user(HOSTS_ONLY, &["HOST_VIEWER"]),
            user(TASKS_ONLY, &["TASK_VIEWER"]),
        ],
    )
}

fn start_fleet(
    root: &Path,
    ips: Vec<IpAddr>,
    profile: AgentProfile,
    transport: Transport,
) -> Fleet {
    let users = users_file(root);
    let mut controller_args = demo_controller_args();
    controller_args.extend(["--users".to_string(), users.display().to_string()]);
    let mut fleet =
        support::start_fleet(root.join("fleet"), ips, profile, transport, controller_args);
    fleet.admin_password = ADMIN.1.to_string();
    fleet
}

/// A fleet on `ips` with this test's users, its hosts registered: the folder it lives
/// in, the fleet, a REST client as admin and the host ids.
fn setup(
    ips: impl Iterator<Item = Ipv4Addr>,
    profile: AgentProfile,
    transport: Transport,
) -> (tempfile::TempDir, Fleet, Rest, Vec<i64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ips = ips.map(IpAddr::V4).collect();
    let fleet = start_fleet(dir.path(), ips, profile, transport);
    let rest = fleet.rest().expect("REST client");
    let hosts = fleet.register_hosts(&rest).expect("register the hosts");
    (dir, fleet, rest, hosts)
}

const LONG: Duration = Duration::from_secs(60);

/// Waits for `check`, or fails saying what the page showed: its address, the banner
/// (an API refusal) and a screenshot.
async fn wait(b: &Browser, limit: Duration, what: &str, check: &str) -> Value {
    match b.wait_until(limit, what, check).await {
        Ok(v) => v,
        Err(e) => {
            let shown = b
                .client
                .execute(
                    "const e = document.querySelector('#banner'); return location.hash + ' | banner: ' + (e && !e.hidden ? e.textContent : '(none)')",
                    vec![],
                )
                .await
                .map(|v| v.to_string())
                .unwrap_or_else(|e| e.to_string());
            let shot = screenshots().join("failure.png");
            let _ = b.screenshot(&shot).await;
            panic!("{e}; the page: {shown}; screenshot {}", shot.display())
        }
    }
}

async fn sign_in(b: &Browser, base: &str, credentials: (&str, &str)) {
    submit_credentials(b, base, credentials).await;
    wait(
        b,
        LONG,
        "the signed-in user's name in the header",
        &format!(
            "return document.querySelector('#username')?.textContent === '{}'",
            credentials.0
        ),
    )
    .await;
}

async fn submit_credentials(b: &Browser, base: &str, (user, password): (&str, &str)) {
    b.client
        .goto(&format!("{base}/console/"))
        .await
        .expect("open the console");
    wait(
        b,
        LONG,
        "the sign-in form",
        "return !!document.querySelector('#login-user')",
    )
    .await;
    let find = |css: &'static str| {
        let client = b.client.clone();
        async move { client.find(fantoccini::Locator::Css(css)).await.expect(css) }
    };
    find("#login-user")
        .await
        .send_keys(user)
        .await
        .expect("user");
    find("#login-password")
        .await
        .send_keys(password)
        .await
        .expect("password");
    b.click("#login-submit").await.expect("submit");
}

async fn sign_out(b: &Browser) {
    b.click("#signout").await.expect("sign out");
    wait(
        b,
        LONG,
        "the sign-in form",
        "return !!document.querySelector('#login-user')",
    )
    .await;
}

/// The statuses the host table shows, once it shows `n` hosts all `status`.
async fn wait_hosts(b: &Browser, n: usize, status: &str) -> Value {
    wait(b,
        LONG,
        &format!("{n} hosts {status} in the host table"),
        &format!(
            "const s = [...document.querySelectorAll('#host-table tbody tr[data-host-id] [data-status]')].map(e => e.dataset.status);
             return s.length === {n} && s.every(x => x === '{status}') ? s : false"
        ),
    )
        .await
}

/// The task page's id, once the console went there.
async fn task_page(b: &Browser) -> i64 {
    wait(
        b,
        LONG,
        "the task page",
        "return document.querySelector('#task')?.dataset.taskId || false",
    )
    .await
    .as_str()
    .and_then(|s| s.parse().ok())
    .expect("task id")
}

async fn wait_task_status(b: &Browser, status: &str) {
    wait(b,
        LONG,
        &format!("the task page to show {status}"),
        &format!("return document.querySelector('#task-status [data-status]')?.dataset.status === '{status}'"),
    )
        .await;
}

/// Selects the hundred hosts of both pages of the host list (50 a page), from whichever
/// page the list shows: it keeps the page it was left on.
async fn select_both_pages(b: &Browser) {
    let first_row = "return Number(document.querySelector('#host-table tbody tr[data-host-id]')?.dataset.hostId)";
    if b.client
        .execute(first_row, vec![])
        .await
        .expect("first row")
        != json!(1)
    {
        b.click("button[data-page=previous]").await.expect("page 1");
        wait(b, LONG, "page 1", &format!("{first_row} === 1")).await;
    }
    b.click("#select-page").await.expect("select page 1");
    b.click("button[data-page=next]").await.expect("page 2");
    wait(b, LONG, "page 2", &format!("{first_row} === 51")).await;
    b.click("#select-page").await.expect("select page 2");
    wait(
        b,
        LONG,
        "100 selected",
        "return document.querySelector('#selected-count').textContent === '100 selected'",
    )
    .await;
}

/// Subtask statuses drawn in the DAG, boxes and cells alike.
async fn drawn(b: &Browser) -> Vec<String> {
    let v = b
        .client
        .execute(
            "return [...document.querySelectorAll('#dag [data-subtask-id]')].map(e => e.dataset.status)",
            vec![],
        )
        .await
        .expect("drawn statuses");
    serde_json::from_value(v).expect("strings")
}

async fn enabled_operations(b: &Browser) -> Vec<String> {
    let v = b
        .client
        .execute(
            "return [...document.querySelectorAll('button[data-op]')].filter(x => !x.disabled).map(x => x.dataset.op)",
            vec![],
        )
        .await
        .expect("buttons");
    serde_json::from_value(v).expect("strings")
}

/// Marks the page's document: `page_was_not_reloaded` then tells whether it is the same.
async fn mark_document(b: &Browser) {
    b.client
        .execute("window.__sameDocument = true", vec![])
        .await
        .expect("marker");
}

/// Restarts the selected hosts' agents from the batch bar; the id of the task the
/// console then shows.
async fn restart_selected(b: &Browser) -> i64 {
    b.click("button[data-batch=batchRestartAgents]")
        .await
        .expect("restart");
    task_page(b).await
}

/// Waits until the task page shows its rolling task held ("paused").
async fn wait_paused(b: &Browser) {
    wait(
        b,
        LONG,
        "the canary's pause",
        "return !!document.querySelector('#task-paused')",
    )
    .await;
}

async fn page_was_not_reloaded(b: &Browser) -> bool {
    b.client
        .execute("return window.__sameDocument === true", vec![])
        .await
        .expect("marker")
        .as_bool()
        .unwrap_or(false)
}

/// What a console test drives besides the browser: the controller's address, a REST
/// client as admin, the registered hosts, and where screenshots go.
struct Console {
    base: String,
    rest: Rest,
    hosts: Vec<i64>,
    shots: PathBuf,
}

/// Starts a fleet on `ips` and Chromium with a `window`-sized window, lets `drive` act,
/// then stops both. Without a browser it says SKIPPED (and fails under
/// `OCP_REQUIRE_BROWSER=1`).
fn with_console(
    ips: impl Iterator<Item = Ipv4Addr>,
    profile: AgentProfile,
    transport: Transport,
    (width, height): (u32, u32),
    drive: impl AsyncFnOnce(&Browser, Console),
) {
    if !browser_here() {
        return;
    }
    let (dir, mut fleet, rest, hosts) = setup(ips, profile, transport);
    let console = Console {
        base: fleet.rest_base(),
        rest,
        hosts,
        shots: screenshots(),
    };
    runtime().block_on(async {
        let b = Browser::start(&dir.path().join("browser"), width, height)
            .await
            .expect("Chromium");
        drive(&b, console).await;
        b.close().await;
    });
    fleet.stop();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn an_operator_signs_in_restarts_three_hosts_reads_a_log_and_stops_a_process() {
    let ips = (22..=24).map(|i| Ipv4Addr::new(127, 0, 0, i));
    let window = (1400, 1000);
    with_console(
        ips,
        AgentProfile::Demo,
        Transport::MutualTls,
        window,
        async |b, c| {
            let Console {
                base,
                rest,
                hosts,
                shots,
            } = c;
            // A wrong password is said so on the form, which stays.
            submit_credentials(b, &base, (ADMIN.0, "not-the-password")).await;
            let refused = wait(
            b,
            LONG,
            "the refusal",
            "const e = document.querySelector('#banner'); return !e.hidden && !!document.querySelector('#login-user') && e.textContent",
        )
        .await;
            assert!(
                refused
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("Sign-in refused"),
                "{refused}"
            );
            sign_in(b, &base, ADMIN).await;
            wait_hosts(b, 3, "ONLINE").await;
            b.screenshot(&shots.join("hosts.png")).await.expect("shot");
            mark_document(b).await;

            // A batch restart of the three, from the console, watched to its end.
            b.click("#select-page").await.expect("select");
            let task = restart_selected(b).await;
            wait_task_status(b, "SUCCESSFUL").await;
            let statuses = drawn(b).await;
            assert_eq!(
                statuses.len(),
                5 * 3 + 4,
                "every subtask is drawn: {statuses:?}"
            );
            assert!(statuses.iter().all(|s| s == "SUCCESSFUL"), "{statuses:?}");
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{task}"))
                .expect("task");
            assert_eq!(stored["status"], "SUCCESSFUL");
            assert_eq!(stored["name"], "Batch restart OCP agent");
            assert_eq!(stored["creator"], ADMIN.0);
            assert!(page_was_not_reloaded(b).await, "the page reloaded");
            b.screenshot(&shots.join("task-3-finished.png"))
                .await
                .expect("shot");

            // A step's log, on a click on its box.
            let stop_all = b
            .client
            .execute(
                "return [...document.querySelectorAll('#dag g.node')].find(g => g.querySelector('text').textContent.startsWith('Stop all'))?.dataset.subtaskId",
                vec![],
            )
            .await
            .expect("a Stop all box");
            let stop_all = stop_all.as_str().expect("a Stop all box").to_string();
            b.click(&format!("#dag g.node[data-subtask-id='{stop_all}'] rect"))
                .await
                .expect("click the step");
            let log = wait(b,
                LONG,
                "the step's log",
                "const t = document.querySelector('#subtask-log')?.textContent; return t && t !== 'Loading…' ? t : false",
            )
        .await;
            let log = log.as_str().unwrap_or_default().to_string();
            let stored_log = rest
                .get(&format!(
                    "/api/v2/tasks/instances/{task}/subtasks/{stop_all}/log"
                ))
                .expect("log over REST");
            assert_eq!(
                log,
                stored_log["log"].as_str().unwrap_or_default(),
                "the drawer shows the step's log"
            );
            assert!(!log.is_empty() && !log.starts_with("Error"), "{log}");
            b.screenshot(&shots.join("task-3-log.png"))
                .await
                .expect("shot");
            b.click("#drawer-close").await.expect("close");

            // A rolling restart that holds after its first batch: running, then resumed
            // from the console and watched to its end, still without a reload.
            b.client
                .goto(&format!("{base}/console/#/hosts"))
                .await
                .expect("hosts");
            wait_hosts(b, 3, "ONLINE").await;
            mark_document(b).await;
            b.click("#select-page").await.expect("select");
            b.click("#rollout-on").await.expect("rolling");
            b.click("#rollout-canary").await.expect("canary");
            let rolling = restart_selected(b).await;
            wait_paused(b).await;
            let held = drawn(b).await;
            assert!(
                held.iter().any(|s| s == "SUCCESSFUL"),
                "the first batch is done: {held:?}"
            );
            assert!(
                held.iter().any(|s| s == "PENDING"),
                "the rest waits: {held:?}"
            );
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{rolling}"))
                .expect("task");
            assert_eq!(stored["status"], "RUNNING");
            assert_eq!(stored["paused"], true);
            b.screenshot(&shots.join("task-3-running.png"))
                .await
                .expect("shot");

            // What the API refuses is said with OCP's code: the last host waits in the
            // paused task, so its agent cannot be restarted by another.
            let waiting = hosts[2];
            b.client
                .goto(&format!("{base}/console/#/hosts/{waiting}"))
                .await
                .expect("host page");
            b.click("button[data-op='Restart agent']")
                .await
                .expect("restart agent");
            let banner = wait(
                b,
                LONG,
                "the refusal",
                "const e = document.querySelector('#banner'); return !e.hidden && e.textContent",
            )
            .await;
            let banner = banner.as_str().unwrap_or_default();
            assert!(
                banner.starts_with("Error 40000: ") && banner.contains(&format!("task {rolling}")),
                "{banner}"
            );
            b.client
                .goto(&format!("{base}/console/#/tasks/{rolling}"))
                .await
                .expect("back to the task");
            wait_paused(b).await;
            b.click("button[data-op=Resume]").await.expect("resume");
            wait_task_status(b, "SUCCESSFUL").await;
            let done = drawn(b).await;
            assert_eq!(done.len(), 5 * 3 + 2, "three batches of one host: {done:?}");
            assert!(done.iter().all(|s| s == "SUCCESSFUL"), "{done:?}");
            assert!(page_was_not_reloaded(b).await, "the page reloaded");

            // Stop one process from the host's page.
            let host = hosts[0];
            b.client
                .goto(&format!("{base}/console/#/hosts/{host}"))
                .await
                .expect("host page");
            let row = "#process-table tr[data-process='ob_cleaner']";
            wait(b,
            LONG,
            "ob_cleaner STARTED with a pid",
            &format!("const r = document.querySelector(\"{row}\"); return r && r.querySelector('[data-status]').dataset.status === 'STARTED' && r.querySelector('.pid').textContent"),
        )
        .await;
            let pid: i32 = rest
                .get(&format!(
                    "/api/v2/compute/hosts/{host}/agent/processes?size=100"
                ))
                .expect("processes")["contents"]
                .as_array()
                .expect("contents")
                .iter()
                .find(|p| p["alias"] == "ob_cleaner")
                .and_then(|p| p["pid"].as_i64())
                .expect("ob_cleaner's pid") as i32;
            b.click(&format!("{row} button[data-op=Stop]"))
                .await
                .expect("stop");
            wait(b,
            LONG,
            "ob_cleaner STOPPED",
            &format!("return document.querySelector(\"{row} [data-status]\").dataset.status === 'STOPPED'"),
        )
        .await;
            assert!(
                !u32::try_from(pid).is_ok_and(test_support::procs::alive),
                "pid {pid} still runs after the console stopped it"
            );
            b.screenshot(&shots.join("host-process-stopped.png"))
                .await
                .expect("shot");

            // A viewer sees everything and may press nothing.
            sign_out(b).await;
            sign_in(b, &base, VIEWER).await;
            wait_hosts(b, 3, "ONLINE").await;
            b.click("#select-page").await.expect("select");
            assert_eq!(
                enabled_operations(b).await,
                Vec::<String>::new(),
                "host list"
            );
            b.client
                .goto(&format!("{base}/console/#/hosts/{host}"))
                .await
                .expect("host page");
            wait(
                b,
                LONG,
                "the process table",
                "return !!document.querySelector('#process-table tr[data-process]')",
            )
            .await;
            assert_eq!(
                enabled_operations(b).await,
                Vec::<String>::new(),
                "host page"
            );
            b.client
                .goto(&format!("{base}/console/#/tasks/{task}"))
                .await
                .expect("task page");
            wait_task_status(b, "SUCCESSFUL").await;
            b.click(&format!("#dag g.node[data-subtask-id='{stop_all}'] rect"))
                .await
                .expect("click the step");
            wait(
                b,
                LONG,
                "the drawer",
                "return !!document.querySelector('#subtask-status')",
            )
            .await;
            assert_eq!(
                enabled_operations(b).await,
                Vec::<String>::new(),
                "task page"
            );
            let disabled = b
                .client
                .execute(
                    "return document.querySelectorAll('button[data-op]').length",
                    vec![],
                )
                .await
                .expect("count");
            assert!(
                disabled.as_u64().unwrap_or(0) >= 7,
                "the operations are shown, disabled: {disabled}"
            );

            // Who may not list tasks is not shown them.
            sign_out(b).await;
            sign_in(b, &base, HOSTS_ONLY).await;
            wait_hosts(b, 3, "ONLINE").await;
            let nav = b
                .client
                .execute("return document.querySelector('#nav').textContent", vec![])
                .await
                .expect("nav");
            assert_eq!(nav, "HostsPackages");

            // Who may only read tasks starts on the task list, with nothing refused.
            sign_out(b).await;
            sign_in(b, &base, TASKS_ONLY).await;
            wait(
            b,
            LONG,
            "the task list",
            "return location.hash === '#/tasks' && document.querySelectorAll('#task-table tbody tr[data-task-id]').length === 2",
        )
        .await;
            let banner = b
                .client
                .execute("return document.querySelector('#banner').hidden", vec![])
                .await
                .expect("banner");
            assert_eq!(banner, json!(true), "no refusal on the way in");
        },
    );
}

#[test]
fn a_hundred_host_dag_is_drawn_grouped_and_followed_live() {
    let ips = (1..=100).map(|i| Ipv4Addr::new(127, 0, 3, i));
    let window = (1600, 1200);
    with_console(
        ips,
        AgentProfile::Bench,
        Transport::Plaintext,
        window,
        async |b, c| {
            let Console {
                base, rest, shots, ..
            } = c;
            sign_in(b, &base, ADMIN).await;
            wait_hosts(b, 50, "ONLINE").await;

            // OCP's filters, from the search box: the address holds the keyword.
            let keyword = b
                .client
                .find(fantoccini::Locator::Css("#host-keyword"))
                .await
                .expect("keyword box");
            keyword.send_keys("127.0.3.7").await.expect("keyword");
            let matched = wait(
            b,
            LONG,
            "the hosts whose address holds 127.0.3.7",
            "const r = [...document.querySelectorAll('#host-table tbody tr[data-host-id] td:nth-child(4)')].map(td => td.textContent.split(':')[0]);
             return r.length === 11 && r",
        )
        .await;
            let mut matched: Vec<String> = serde_json::from_value(matched).expect("addresses");
            matched.sort();
            let mut expected: Vec<String> = std::iter::once(7)
                .chain(70..80)
                .map(|i| format!("127.0.3.{i}"))
                .collect();
            expected.sort();
            assert_eq!(matched, expected);
            // Backspaces, as a person erases it (WebDriver's clear fires no input event).
            keyword
                .send_keys(&"\u{E003}".repeat("127.0.3.7".len()))
                .await
                .expect("erase");
            wait_hosts(b, 50, "ONLINE").await;
            mark_document(b).await;

            // The seeds' stage-wise shape: nine stages, five of them a hundred hosts wide.
            select_both_pages(b).await;
            restart_selected(b).await;
            wait_task_status(b, "SUCCESSFUL").await;
            let groups = b
            .client
            .execute("return [...document.querySelectorAll('#dag g.group')].map(g => Number(g.dataset.count))", vec![])
            .await
            .expect("groups");
            assert_eq!(
                groups,
                json!([100, 100, 100, 100, 100]),
                "one box per per-host stage"
            );
            let boxes = b
                .client
                .execute(
                    "return document.querySelectorAll('#dag g.node').length",
                    vec![],
                )
                .await
                .expect("boxes");
            assert_eq!(
                boxes,
                json!(4),
                "only the four Wait nodes get a box of their own"
            );
            assert_eq!(drawn(b).await.len(), 5 * 100 + 4);
            b.screenshot(&shots.join("task-100-stages-finished.png"))
                .await
                .expect("shot");

            // Rolling, a quarter at a time, held after the first quarter.
            b.client
                .goto(&format!("{base}/console/#/hosts"))
                .await
                .expect("hosts");
            wait_hosts(b, 50, "ONLINE").await;
            select_both_pages(b).await;
            b.click("#rollout-on").await.expect("rolling");
            fill(b, "#rollout-batch-size", "25%").await;
            b.click("#rollout-canary").await.expect("canary");
            let rolling = restart_selected(b).await;
            wait_paused(b).await;
            let held = drawn(b).await;
            assert_eq!(held.len(), 5 * 100 + 3, "every subtask is drawn");
            assert_eq!(
                held.iter().filter(|s| *s == "SUCCESSFUL").count(),
                5 * 25,
                "{held:?}"
            );
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{rolling}"))
                .expect("task");
            assert_eq!(stored["paused"], true);
            let now = b
                .client
                .execute(
                    "return document.querySelector('#running-now').textContent",
                    vec![],
                )
                .await
                .expect("summary");
            assert!(
                now.as_str().unwrap_or_default().contains("125 successful"),
                "{now}"
            );
            b.screenshot(&shots.join("task-100-running.png"))
                .await
                .expect("shot");
            b.click("button[data-op=Resume]").await.expect("resume");
            wait_task_status(b, "SUCCESSFUL").await;
            let done = drawn(b).await;
            assert_eq!(done.len(), 5 * 100 + 3);
            assert!(done.iter().all(|s| s == "SUCCESSFUL"), "{done:?}");
            assert!(page_was_not_reloaded(b).await, "the page reloaded");
            b.screenshot(&shots.join("task-100-finished.png"))
                .await
                .expect("shot");
        },
    );
}

/// Counts, per batch of DOM changes under `#dag`, the elements removed and added (with
/// everything inside them) and the attributes and texts changed; remembers the svg.
const COUNT_DAG_CHANGES: &str = "
    const dag = document.querySelector('#dag');
    window.__dag = { svg: dag.querySelector('svg'), batches: [] };
    const elements = (n) => n.nodeType === 1 ? 1 + n.querySelectorAll('*').length : 0;
    new MutationObserver((records) => {
      const batch = { removed: 0, added: 0, attributes: 0, texts: 0 };
      for (const r of records) {
        if (r.type === 'childList') {
          r.removedNodes.forEach((n) => { batch.removed += elements(n); });
          r.addedNodes.forEach((n) => { batch.added += elements(n); });
        } else if (r.type === 'attributes') batch.attributes += 1;
        else batch.texts += 1;
      }
      window.__dag.batches.push(batch);
    }).observe(dag, { childList: true, subtree: true, attributes: true, characterData: true });
    return true";

#[test]
fn the_dag_is_updated_in_place_as_its_task_goes_on() {
    let ips = (1..=30).map(|i| Ipv4Addr::new(127, 0, 4, i));
    let window = (1400, 1000);
    with_console(
        ips,
        AgentProfile::Bench,
        Transport::Plaintext,
        window,
        async |b, c| {
            let Console {
                base, rest, shots, ..
            } = c;
            sign_in(b, &base, ADMIN).await;
            wait_hosts(b, 30, "ONLINE").await;
            mark_document(b).await;

            // A rolling restart in three batches of ten, held after the first: each step
            // of a batch is one box of ten cells. Each batch watches its hosts for a
            // second, so what the two batches after the resume do comes in three bursts
            // at least a second apart however fast the machine: three moments to draw.
            b.click("#select-page").await.expect("select");
            b.click("#rollout-on").await.expect("rolling");
            fill(b, "#rollout-batch-size", "10").await;
            fill(b, "#rollout-healthy", "1").await;
            b.click("#rollout-canary").await.expect("canary");
            let task = restart_selected(b).await;
            wait_paused(b).await;
            // Which operations apply is the API's to say: a paused rolling task resumes.
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{task}"))
                .expect("task");
            assert_eq!(stored["allowedOperations"], json!(["RESUME"]), "{stored:#}");
            wait(
                b,
                LONG,
                "Resume, alone enabled",
                "const on = [...document.querySelectorAll('button[data-op]')].filter(x => !x.disabled).map(x => x.dataset.op);
                 return on.length === 1 && on[0] === 'Resume'",
            )
            .await;
            let shape = b
                .client
                .execute(
                    "return [document.querySelectorAll('#dag g.group').length, document.querySelectorAll('#dag rect.cell').length, document.querySelectorAll('#dag g.node').length]",
                    vec![],
                )
                .await
                .expect("shape");
            assert_eq!(
                shape,
                json!([15, 150, 2]),
                "fifteen stages of ten cells, two barriers"
            );

            b.client
                .execute(COUNT_DAG_CHANGES, vec![])
                .await
                .expect("observer");
            b.click("button[data-op=Resume]").await.expect("resume");
            wait_task_status(b, "SUCCESSFUL").await;
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{task}"))
                .expect("task");
            assert_eq!(stored["status"], "SUCCESSFUL");
            let expected: serde_json::Map<String, Value> = stored["subtasks"]
                .as_array()
                .expect("subtasks")
                .iter()
                .map(|s| (s["id"].to_string(), s["status"].clone()))
                .collect();
            assert_eq!(expected.len(), 5 * 30 + 2);
            // What the page shows once the last events are drawn: every box and cell as
            // the API has it, every group's counts, and no operation left.
            let shown = wait(
                b,
                LONG,
                "the DAG as the API has it",
                &format!(
                    "const expected = {};
                     const shown = Object.fromEntries([...document.querySelectorAll('#dag [data-subtask-id]')].map(e => [e.dataset.subtaskId, e.dataset.status]));
                     const counts = [...document.querySelectorAll('#dag g.group text.small')].map(t => t.textContent);
                     const same = Object.keys(shown).length === Object.keys(expected).length
                       && Object.keys(expected).every(k => shown[k] === expected[k]);
                     return same && counts.length === 15 && counts.every(t => t === '10 successful') && shown",
                    Value::Object(expected.clone())
                ),
            )
            .await;
            assert_eq!(shown, Value::Object(expected));
            assert_eq!(enabled_operations(b).await, Vec::<String>::new());

            let changes = b
                .client
                .execute(
                    "return { same: document.querySelector('#dag svg') === window.__dag.svg, batches: window.__dag.batches }",
                    vec![],
                )
                .await
                .expect("changes");
            let batches = changes["batches"].as_array().expect("batches");
            let count =
                |key: &str| -> u64 { batches.iter().map(|x| x[key].as_u64().unwrap_or(0)).sum() };
            assert!(
                batches.len() >= 3,
                "the page followed the task in steps: {changes}"
            );
            assert_eq!(
                (count("removed"), count("added")),
                (0, 0),
                "no element of the DAG was replaced: {changes}"
            );
            assert!(count("attributes") > 0, "{changes}");
            assert_eq!(changes["same"], json!(true), "{changes}");
            assert!(page_was_not_reloaded(b).await, "the page reloaded");
            b.screenshot(&shots.join("task-20-in-place.png"))
                .await
                .expect("shot");
        },
    );
}

/// The version the demo fleet's agents are configured as, and the one uploaded.
const DEMO_VERSION: &str = "4.2.1-demo";
const UPLOADED: &str = "9.9.9-console";

/// Replaces what the field `css` holds with `text`.
async fn fill(b: &Browser, css: &str, text: &str) {
    let field = b
        .client
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// Chooses `file` in the upload form, types `version` and sends it.
async fn upload_package(b: &Browser, file: &Path, version: &str) {
    b.client
        .find(fantoccini::Locator::Css("#package-file"))
        .await
        .expect("the file field")
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    fill(b, "#package-version", version).await;
    b.click("#package-upload").await.expect("upload");
}

/// The agent version cells of the host table: `[version, title]` per host, once there
/// are `n` of them and `ready` (a JS expression over `cells`) holds.
async fn version_cells(b: &Browser, n: usize, what: &str, ready: &str) -> Value {
    wait(
        b,
        LONG,
        what,
        &format!(
            "const cells = [...document.querySelectorAll('#host-table tbody tr[data-host-id] td.agent-version')]
               .map(td => [td.dataset.version, td.getAttribute('title')]);
             return cells.length === {n} && ({ready}) ? cells : false"
        ),
    )
    .await
}

#[test]
fn an_operator_uploads_a_package_sees_hosts_differ_and_upgrades_them() {
    let ips = (1..=2).map(|i| Ipv4Addr::new(127, 0, 5, i));
    let window = (1400, 1000);
    with_console(
        ips,
        AgentProfile::Demo,
        Transport::MutualTls,
        window,
        async |b, c| {
            let Console {
                base,
                rest,
                hosts,
                shots,
            } = c;
            sign_in(b, &base, ADMIN).await;
            wait_hosts(b, 2, "ONLINE").await;
            // Without a package nothing is flagged.
            version_cells(
                b,
                2,
                "the agents' versions, unflagged",
                &format!("cells.every(([v, t]) => v === '{DEMO_VERSION}' && t === null)"),
            )
            .await;

            // What is not an agent binary is refused, with the API's own words.
            b.click("#nav a[href='#/packages']")
                .await
                .expect("packages");
            wait(
                b,
                LONG,
                "the empty package list",
                "return document.querySelector('#package-table tbody')?.textContent === 'No package uploaded yet.'",
            )
            .await;
            let scratch = tempfile::tempdir().expect("tempdir");
            let script = scratch.path().join("not-an-agent.sh");
            std::fs::write(&script, "#!/bin/sh\necho hello\n").expect("script");
            upload_package(b, &script, UPLOADED).await;
            let refused = wait(
                b,
                LONG,
                "the refusal",
                "const e = document.querySelector('#banner'); return !e.hidden && e.textContent",
            )
            .await;
            let refused = refused.as_str().unwrap_or_default();
            assert!(
                refused.starts_with("Error 10001:") && refused.contains("body"),
                "{refused}"
            );

            // The real agent binary is taken, and listed as the API lists it.
            let binary = test_support::bins::workspace_bin("ocp-agent");
            upload_package(b, &binary, UPLOADED).await;
            let row = wait(
                b,
                LONG,
                "the uploaded package in the list",
                &format!(
                    "const r = document.querySelector(\"#package-table tr[data-version='{UPLOADED}']\");
                     return r ? [...r.querySelectorAll('td')].slice(0, 6).map(td => td.textContent) : false"
                ),
            )
            .await;
            let listed = rest.get("/api/v2/agent/packages").expect("packages");
            let stored = &listed["contents"][0];
            assert_eq!(stored["version"], UPLOADED, "{listed}");
            assert_eq!(
                stored["size"].as_u64(),
                Some(std::fs::metadata(&binary).expect("binary").len())
            );
            let sha = stored["sha256"].as_str().expect("sha256");
            assert_eq!(row[0], UPLOADED);
            assert_eq!(row[1], stored["arch"]);
            assert_eq!(row[3], ADMIN.0);
            assert_eq!(row[5], format!("{}…", &sha[..12]), "{row}");
            b.screenshot(&shots.join("packages.png"))
                .await
                .expect("shot");

            // Every host now runs another version than the newest package's.
            b.click("#nav a[href='#/hosts']").await.expect("hosts");
            let flagged = version_cells(
                b,
                2,
                "both hosts flagged",
                "cells.every(([v, t]) => t !== null)",
            )
            .await;
            for cell in flagged.as_array().expect("cells") {
                assert_eq!(
                    cell,
                    &json!([
                        DEMO_VERSION,
                        format!("differs from the newest package {UPLOADED}")
                    ])
                );
            }
            b.screenshot(&shots.join("hosts-flagged.png"))
                .await
                .expect("shot");

            // A rolling upgrade of both, one host a batch, started and followed here.
            mark_document(b).await;
            b.click("#select-page").await.expect("select");
            b.click("#rollout-on").await.expect("rolling");
            let chosen = b
                .client
                .execute(
                    "return document.querySelector('#upgrade-version').value",
                    vec![],
                )
                .await
                .expect("chosen version");
            assert_eq!(chosen, UPLOADED);
            b.click("button[data-batch=batchUpgradeAgents]")
                .await
                .expect("upgrade");
            let task = task_page(b).await;
            wait_task_status(b, "SUCCESSFUL").await;
            let stored = rest
                .get(&format!("/api/v2/tasks/instances/{task}"))
                .expect("task");
            assert_eq!(stored["name"], "Batch upgrade OCP agent", "{stored:#}");
            assert_eq!(stored["status"], "SUCCESSFUL");
            assert_eq!(stored["creator"], ADMIN.0);
            assert_eq!(stored["rollout"]["batchSize"], 1, "{stored:#}");
            let statuses = drawn(b).await;
            assert_eq!(
                statuses.len(),
                stored["subtasks"].as_array().map_or(0, Vec::len),
                "every subtask is drawn"
            );
            assert!(statuses.iter().all(|s| s == "SUCCESSFUL"), "{statuses:?}");
            assert!(page_was_not_reloaded(b).await, "the page reloaded");
            b.screenshot(&shots.join("task-upgrade.png"))
                .await
                .expect("shot");
            for host in &hosts {
                let agent = rest
                    .get(&format!("/api/v2/compute/hosts/{host}/agent"))
                    .expect("agent");
                assert_eq!(agent["version"], UPLOADED, "{agent}");
            }

            // Upgraded, the hosts are no longer flagged.
            b.client
                .goto(&format!("{base}/console/#/hosts"))
                .await
                .expect("hosts");
            version_cells(
                b,
                2,
                "both hosts at the new version, unflagged",
                &format!("cells.every(([v, t]) => v === '{UPLOADED}' && t === null)"),
            )
            .await;

            // A viewer sees the packages and the versions, and can neither upload,
            // delete nor upgrade.
            sign_out(b).await;
            sign_in(b, &base, VIEWER).await;
            wait_hosts(b, 2, "ONLINE").await;
            b.click("#select-page").await.expect("select");
            let upgrade = b
                .client
                .execute(
                    "const b = document.querySelector('button[data-batch=batchUpgradeAgents]');
                     return [b.disabled, b.title, document.querySelector('#upgrade-version').hidden]",
                    vec![],
                )
                .await
                .expect("upgrade control");
            assert_eq!(upgrade, json!([true, "needs HOST_MANAGER", true]));
            b.click("#nav a[href='#/packages']")
                .await
                .expect("packages");
            wait(
                b,
                LONG,
                "the package list",
                &format!("return !!document.querySelector(\"#package-table tr[data-version='{UPLOADED}']\")"),
            )
            .await;
            let controls = b
                .client
                .execute(
                    "return [!!document.querySelector('#package-file'), [...document.querySelectorAll('button[data-package-op]')].map(x => x.disabled)]",
                    vec![],
                )
                .await
                .expect("controls");
            assert_eq!(controls, json!([false, [true]]));

            // The admin deletes it; the list is empty again.
            sign_out(b).await;
            sign_in(b, &base, ADMIN).await;
            b.click("#nav a[href='#/packages']")
                .await
                .expect("packages");
            b.click("button[data-package-op=delete]")
                .await
                .expect("delete");
            b.client.accept_alert().await.expect("confirm");
            wait(
                b,
                LONG,
                "the empty package list",
                "return document.querySelector('#package-table tbody')?.textContent === 'No package uploaded yet.'",
            )
            .await;
            let listed = rest.get("/api/v2/agent/packages").expect("packages");
            assert_eq!(listed["contents"], json!([]), "{listed}");
        },
    );
}
