//! Upgrading the real `ocp-agent` binary in place: the same pid, the same socket, the
//! same supervised processes; a version on trial that is not committed, or fails its
//! self-check, or arrives truncated, leaves the agent as it was.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use proto::agent::v1::package_chunk::Part;
use proto::agent::v1::{
    AgentInfo, CommitVersionRequest, GetAgentInfoRequest, PackageChunk, PackageHeader,
    SwitchVersionRequest,
};
use sha2::Digest;
use tokio::time::{Instant, sleep};

const NEW: &str = "9.9.9-test";

/// Two demo processes, each tagged so that `tagged` counts its copies.
fn two_processes(setup: &Setup) -> Vec<String> {
    let tags: Vec<String> = ["one", "two"]
        .iter()
        .map(|name| unique_tag(name, setup.dir.path()))
        .collect();
    let config = format!(
        "{}{}",
        demo_process("one", &["--tag", &tags[0]], "min_live = \"0s\""),
        demo_process("two", &["--tag", &tags[1]], "min_live = \"0s\""),
    );
    std::fs::write(setup.config(), config).expect("config");
    tags
}

/// An agent serving [`two_processes`], both running.
async fn started() -> (Setup, Vec<String>, RunningAgent) {
    let setup = Setup::new("");
    let tags = two_processes(&setup);
    let mut running = setup.start().await;
    wait_running(&mut running.client, "one").await;
    wait_running(&mut running.client, "two").await;
    (setup, tags, running)
}

async fn info(client: &mut Client) -> AgentInfo {
    client
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect("GetAgentInfo")
        .into_inner()
}

/// The file's bytes as a ReceivePackage stream, `keep` of them at most.
fn package(version: &str, path: &Path, keep: Option<usize>) -> Vec<PackageChunk> {
    let bytes = std::fs::read(path).expect("read the binary");
    let sha256: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut chunks = vec![PackageChunk {
        part: Some(Part::Header(PackageHeader {
            version: version.to_string(),
            sha256,
            size: bytes.len() as u64,
        })),
    }];
    let sent = &bytes[..keep.unwrap_or(bytes.len())];
    chunks.extend(sent.chunks(1 << 20).map(|c| PackageChunk {
        part: Some(Part::Data(c.to_vec())),
    }));
    chunks
}

async fn push(client: &mut Client, version: &str, path: &Path) {
    let sent = client
        .receive_package(futures::stream::iter(package(version, path, None)))
        .await
        .expect("ReceivePackage")
        .into_inner();
    assert_eq!(sent.version, version);
}

async fn switch(
    client: &mut Client,
    version: &str,
    trial_seconds: u32,
) -> Result<(), tonic::Status> {
    client
        .switch_version(SwitchVersionRequest {
            version: version.to_string(),
            trial_seconds,
        })
        .await
        .map(drop)
}

/// Polls GetAgentInfo (through reconnects) until `cond` holds.
async fn wait_info(
    client: &mut Client,
    what: &str,
    cond: impl Fn(&AgentInfo) -> bool,
) -> AgentInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(got) = client.get_agent_info(GetAgentInfoRequest {}).await {
            let got = got.into_inner();
            if cond(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "never {what}: {got:?}");
        }
        assert!(Instant::now() < deadline, "never {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn pids(client: &mut Client) -> Vec<(String, u32)> {
    let mut pids: Vec<_> = list(client)
        .await
        .into_iter()
        .map(|p| (p.alias, p.pid))
        .collect();
    pids.sort();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_keeps_the_agents_pid_its_socket_and_every_process() {
    let (setup, tags, mut running) = started().await;
    let client = &mut running.client;
    let before = pids(client).await;
    let old = info(client).await;
    assert_eq!(old.pid, running.agent.child.id());

    push(client, NEW, Path::new(AGENT)).await;
    assert!(info(client).await.held_versions.contains(&NEW.to_string()));
    let addr = running.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let pestering = test_support::agent_calls::pester(connect(addr).await, stop.clone());
    sleep(Duration::from_millis(100)).await;
    switch(client, NEW, 60).await.expect("SwitchVersion");
    let new = wait_info(client, "on the new version", |i| i.version == NEW).await;
    sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let test_support::agent_calls::Pestered {
        errors,
        slowest,
        calls,
    } = pestering.await.expect("pester");
    assert!(
        errors.is_empty(),
        "{} of {calls} calls failed during the switch: {errors:?}",
        errors.len()
    );
    println!("switch gap: slowest GetAgentInfo {slowest:?} over {calls} calls");

    assert_eq!(new.pid, old.pid, "the same process");
    assert_eq!(
        new.committed_version, old.version,
        "on trial, not committed"
    );
    assert!(new.trial_remaining_ms > 0);
    assert_eq!(
        pids(client).await,
        before,
        "every process kept its pid: {:#?}",
        running.agent.stderr()
    );
    for tag in &tags {
        assert_eq!(tagged(tag).len(), 1, "{tag} runs once");
    }

    client
        .commit_version(CommitVersionRequest {
            version: NEW.into(),
        })
        .await
        .expect("CommitVersion");
    let committed = info(client).await;
    assert_eq!(committed.committed_version, NEW);
    assert_eq!(committed.trial_remaining_ms, 0);

    // A process that exits now is the adopted child's: it is seen and restarted.
    let one = before.iter().find(|(a, _)| a == "one").expect("one").1;
    test_support::procs::signal(one, nix::sys::signal::Signal::SIGKILL);
    let again = wait_for(client, "one", "restarted", |p| p.pid != 0 && p.pid != one).await;
    assert!(again.pid > 0);

    // After a crash the installed binary starts the committed version.
    running.agent.signal(nix::sys::signal::Signal::SIGKILL);
    running.agent.wait_exit().await;
    let mut second = setup.start().await;
    let after = wait_info(&mut second.client, "up again", |_| true).await;
    assert_eq!(
        after.version, NEW,
        "the committed version runs after a crash"
    );
    wait_running(&mut second.client, "one").await;
    for tag in &tags {
        assert!(
            eventually(|| tagged(tag).len() == 1).await,
            "{tag} runs once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_left_uncommitted_goes_back_by_itself_processes_untouched() {
    let (_setup, _, mut running) = started().await;
    let client = &mut running.client;
    let before = pids(client).await;
    let old = info(client).await;
    push(client, NEW, Path::new(AGENT)).await;
    switch(client, NEW, 2).await.expect("SwitchVersion");
    wait_info(client, "on the new version", |i| i.version == NEW).await;
    let back = wait_info(client, "back on the old version", |i| {
        i.version == old.version
    })
    .await;
    assert_eq!(back.pid, old.pid);
    assert_eq!(back.trial_remaining_ms, 0);
    assert!(
        back.last_upgrade_error
            .contains("was not committed within its trial"),
        "{back:?}"
    );
    assert_eq!(
        pids(client).await,
        before,
        "every process kept its pid: {:#?}",
        running.agent.stderr()
    );
    let refused = client
        .commit_version(CommitVersionRequest {
            version: NEW.into(),
        })
        .await
        .expect_err("too late to commit");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_failing_its_self_check_is_refused_and_changes_nothing() {
    let (_setup, _, mut running) = started().await;
    let client = &mut running.client;
    let before = pids(client).await;
    let old = info(client).await;
    push(client, "exits-1", Path::new("/bin/false")).await;
    let refused = switch(client, "exits-1", 60)
        .await
        .expect_err("self-check fails");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("the new agent exited with status 1"),
        "{refused:?}"
    );
    let now = info(client).await;
    assert_eq!((now.version, now.pid), (old.version, old.pid));
    assert!(now.last_upgrade_error.contains("exited with status 1"));
    assert_eq!(pids(client).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_package_leaves_nothing_to_switch_to() {
    let setup = Setup::new("");
    two_processes(&setup);
    let mut running = setup.start().await;
    let client = &mut running.client;
    let refused = client
        .receive_package(futures::stream::iter(package(
            NEW,
            Path::new(AGENT),
            Some(3 << 20),
        )))
        .await
        .expect_err("truncated");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("ended after 3145728 of its"),
        "{refused:?}"
    );
    let not_held = switch(client, NEW, 60)
        .await
        .expect_err("nothing to switch to");
    assert!(
        not_held.message().contains("was not received"),
        "{not_held:?}"
    );
    assert!(info(client).await.held_versions.is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(setup.data_dir().join("versions"))
        .expect("versions folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_on_trial_starts_its_committed_version_and_runs_each_process_once() {
    let (setup, tags, mut running) = started().await;
    let client = &mut running.client;
    let old = info(client).await;
    push(client, NEW, Path::new(AGENT)).await;
    switch(client, NEW, 60).await.expect("SwitchVersion");
    wait_info(client, "on the new version", |i| i.version == NEW).await;
    running.agent.signal(nix::sys::signal::Signal::SIGKILL);
    running.agent.wait_exit().await;

    let mut second = setup.start().await;
    let after = wait_info(&mut second.client, "up again", |_| true).await;
    assert_eq!(after.version, old.version, "the committed version starts");
    assert!(
        after
            .last_upgrade_error
            .contains("stopped before it was committed"),
        "{after:?}"
    );
    wait_running(&mut second.client, "one").await;
    wait_running(&mut second.client, "two").await;
    for tag in &tags {
        assert!(
            eventually(|| tagged(tag).len() == 1).await,
            "{tag} runs once"
        );
    }
}
