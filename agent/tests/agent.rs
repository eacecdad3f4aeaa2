//! End-to-end behaviour of ocp-agent: a real agent, real children, real signals.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proto::agent::v1::{
    BulkRequest, GetAgentInfoRequest, ProcessKind, ProcessState, ProcessStatus,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replaces_the_process_and_reports_its_real_ports() {
    let (port, extra_port) = (free_port(), free_port());
    let config = demo_process(
        "web",
        &[
            "--listen",
            &port.to_string(),
            "--listen",
            &format!("[::]:{extra_port}"),
        ],
        &format!("ports = [{port}]\nmin_live = \"0s\""),
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;

    let before = wait_running(&mut a.client, "web").await;
    assert_eq!(before.status, ProcessStatus::Started as i32);
    let mut expected = vec![u32::from(port), u32::from(extra_port)];
    expected.sort_unstable();
    let before = wait_for(&mut a.client, "web", "both ports", |p| p.ports == expected).await;
    assert_eq!(before.user, whoami());
    assert_eq!(before.kind, ProcessKind::Basic as i32);
    assert!(before.start_command.starts_with(DEMO));
    assert!(before.log_file_pattern.ends_with("log/web.log*"));
    assert!(before.desired_running && before.last_active_time_ms > 0);
    assert!(alive(before.pid));

    let restarted = a
        .client
        .restart_process(request("web"))
        .await
        .expect("RestartProcess")
        .into_inner()
        .process
        .expect("process in response");
    assert_ne!(restarted.pid, before.pid);
    assert!(!alive(before.pid), "old pid {} still alive", before.pid);
    assert!(alive(restarted.pid));
    assert_eq!(restarted.state, ProcessState::Running as i32);
    assert!(restarted.ports.contains(&u32::from(port)));
}

fn whoami() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_is_killed_after_stop_timeout() {
    let config = demo_process(
        "stubborn",
        &["--ignore-term"],
        "stop_timeout = \"300ms\"\nmin_live = \"0s\"",
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let pid = wait_running(&mut a.client, "stubborn").await.pid;

    let started = Instant::now();
    let stopped = a
        .client
        .stop_process(request("stubborn"))
        .await
        .expect("StopProcess")
        .into_inner()
        .process
        .expect("process in response");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "stopped after {took:?}");
    assert!(!alive(pid), "pid {pid} survived SIGKILL");
    assert_eq!(stopped.state, ProcessState::Stopped as i32);
    assert_eq!(stopped.pid, 0);
    assert!(!stopped.desired_running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_process_stops_its_own_children() {
    let config = demo_process("parent", &["--spawn-child"], "min_live = \"0s\"");
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let pid = wait_running(&mut a.client, "parent").await.pid;
    assert!(
        eventually(|| group_members(pid).len() == 2).await,
        "no grandchild in group {pid}"
    );
    let members = group_members(pid);
    let grandchild = *members.iter().find(|&&m| m != pid).expect("grandchild");

    a.client
        .stop_process(request("parent"))
        .await
        .expect("StopProcess");
    assert!(!alive(pid));
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} outlived its group"
    );
    assert!(group_members(pid).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_fatal_and_an_explicit_start_retries() {
    let config = demo_process(
        "crashy",
        &["--exit-after", "50", "--exit-code", "3"],
        "kind = \"work\"\nmin_live = \"1s\"\nautostart = false",
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let idle = get(&mut a.client, "crashy").await;
    assert_eq!(
        idle.state,
        ProcessState::Stopped as i32,
        "autostart = false waits"
    );

    for _ in 0..2 {
        let err = a
            .client
            .start_process(request("crashy"))
            .await
            .expect_err("a crashing process does not start");
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        assert!(err.message().contains("exited with code 3"), "{err:?}");
        let info = get(&mut a.client, "crashy").await;
        assert_eq!(info.state, ProcessState::Fatal as i32);
        assert!(info.last_error.contains("exited with code 3"));
        assert_eq!(info.pid, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_says_why() {
    let port = free_port();
    let config = format!(
        "{}{}",
        demo_process(
            "deaf",
            &[],
            &format!(
                "kind = \"work\"\nautostart = false\nmin_live = \"0s\"\nports = [{port}]\nstart_timeout = \"200ms\"\nstop_timeout = \"100ms\""
            ),
        ),
        "[[process]]\nalias = \"missing\"\ncommand = \"./gone.sh\"\nkind = \"work\"\nautostart = false\n"
    );
    let setup = Setup::new(&config);
    // A program that is there when the agent loads its config, and removed after.
    let gone = setup.dir.path().join("gone.sh");
    std::fs::write(&gone, "#!/bin/sh\nexec sleep 300\n").expect("write script");
    std::fs::set_permissions(&gone, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod script");
    let mut a = setup.start().await;
    std::fs::remove_file(&gone).expect("remove script");
    let err = a
        .client
        .start_process(request("deaf"))
        .await
        .expect_err("never listens");
    assert!(
        err.message()
            .contains(&format!("port {port} not listening after 200ms")),
        "{err:?}"
    );
    let err = a
        .client
        .start_process(request("missing"))
        .await
        .expect_err("no such program");
    assert!(
        err.message().contains("no such file: ") && err.message().contains("/gone.sh"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_operator_stopped_stays_stopped_across_an_agent_restart() {
    let config = format!(
        "{}{}",
        demo_process("kept", &[], "min_live = \"0s\""),
        demo_process("halted", &[], "min_live = \"0s\"")
    );
    let setup = Setup::new(&config);
    let mut first = setup.start().await;
    let kept = wait_running(&mut first.client, "kept").await.pid;
    let halted = wait_running(&mut first.client, "halted").await.pid;
    first
        .client
        .stop_process(request("halted"))
        .await
        .expect("StopProcess");
    assert!(!alive(halted));

    first.agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = first.agent.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{:?}", first.agent.stderr());
    assert!(!alive(kept), "SIGTERM to the agent stops its children");

    let mut second = setup.start().await;
    let again = wait_running(&mut second.client, "kept").await;
    assert!(again.desired_running);
    assert_ne!(again.pid, kept);
    let still = get(&mut second.client, "halted").await;
    assert_eq!(still.state, ProcessState::Stopped as i32);
    assert_eq!(still.pid, 0);
    assert!(!still.desired_running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_data_dir_refuses_to_start() {
    let setup = Setup::new("");
    let tag = unique_tag("lock", setup.dir.path());
    std::fs::write(
        setup.config(),
        demo_process("once", &["--tag", &tag], "min_live = \"0s\""),
    )
    .expect("config");
    let mut first = setup.start().await;
    wait_running(&mut first.client, "once").await;

    let mut second = setup.spawn();
    let status = second.wait_exit().await;
    assert!(!status.success());
    let lines = second.stderr();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("in use by another ocp-agent"),
        "{lines:?}"
    );
    assert_eq!(tagged(&tag).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_killed_agent_run_exactly_once() {
    let setup = Setup::new("");
    let tag = unique_tag("leftover", setup.dir.path());
    let port = free_port();
    std::fs::write(
        setup.config(),
        demo_process(
            "survivor",
            &[
                "--tag",
                &tag,
                "--spawn-child",
                "--listen",
                &port.to_string(),
            ],
            &format!("min_live = \"0s\"\nports = [{port}]"),
        ),
    )
    .expect("config");
    let mut first = setup.start().await;
    let old = wait_running(&mut first.client, "survivor").await.pid;
    first.agent.signal(nix::sys::signal::Signal::SIGKILL);
    first.agent.wait_exit().await;
    assert!(alive(old), "the orphan lives on until a new agent comes");

    let mut second = setup.start().await;
    let new = wait_running(&mut second.client, "survivor").await;
    assert_ne!(new.pid, old);
    assert!(!alive(old));
    assert!(group_members(old).is_empty(), "the old group is gone");
    assert_eq!(tagged(&tag), vec![new.pid], "runs exactly once");
    assert_eq!(new.ports, vec![u32::from(port)]);
}

/// An agent killed after it spawned a process but before it wrote the pid file leaves
/// `spawning <token>` there and the token in the child's environment: the next agent
/// finds that child by it, and only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_spawned_just_before_the_agent_was_killed_is_found_by_its_mark() {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let setup = Setup::new("");
    let tag = unique_tag("marked", setup.dir.path());
    std::fs::write(
        setup.config(),
        demo_process(
            "survivor",
            &["--tag", &tag, "--spawn-child"],
            "min_live = \"0s\"",
        ),
    )
    .expect("config");
    let leftover = |token: &str| {
        std::process::Command::new(DEMO)
            .args(["--tag", &tag, "--spawn-child"])
            .env("OCP_AGENT_SPAWN", token)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a leftover")
    };
    // The tag makes the tokens unique to this test run, as the agent's own are.
    let token = format!("survivor:{tag}.0");
    let mut marked = leftover(&token);
    let mut stranger = leftover(&format!("survivor:{tag}.1"));
    let processes = setup.data_dir().join("processes");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&processes)
        .expect("data dir");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(processes.join("survivor.pid"))
        .and_then(|mut f| writeln!(f, "spawning {token}"))
        .expect("pid file");
    let deadline = Instant::now() + WAIT;
    while group_members(marked.id()).len() < 2 || group_members(stranger.id()).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the leftovers' children did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut agent = setup.start().await;
    let new = wait_running(&mut agent.client, "survivor").await.pid;
    assert!(!alive(marked.id()), "the marked leftover was terminated");
    assert!(
        group_members(marked.id()).is_empty(),
        "with its child: {:?}",
        group_members(marked.id())
    );
    assert!(
        alive(stranger.id()),
        "another spawn's process is left alone"
    );
    let mut running = tagged(&tag);
    running.sort_unstable();
    let mut expected = vec![new, stranger.id()];
    expected.sort_unstable();
    assert_eq!(
        running, expected,
        "the new run and the stranger, nothing else"
    );
    assert!(
        agent
            .agent
            .stderr()
            .iter()
            .any(|l| l.contains("terminated the leftover") && l.contains(&marked.id().to_string())),
        "{:?}",
        agent.agent.stderr()
    );
    let stranger_group = nix::unistd::Pid::from_raw(stranger.id() as i32);
    let _ = nix::sys::signal::killpg(stranger_group, nix::sys::signal::Signal::SIGKILL);
    let _ = stranger.wait();
    let _ = marked.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_child_and_exits_zero() {
    let config = format!(
        "{}{}",
        demo_process("one", &["--spawn-child"], "min_live = \"0s\""),
        demo_process(
            "two",
            &["--ignore-term"],
            "min_live = \"0s\"\nstop_timeout = \"200ms\"\nkind = \"work\""
        )
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let one = wait_running(&mut a.client, "one").await.pid;
    a.client
        .start_process(request("two"))
        .await
        .expect("StartProcess");
    let two = get(&mut a.client, "two").await.pid;
    assert!(eventually(|| group_members(one).len() == 2).await);

    a.agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = a.agent.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{:?}", a.agent.stderr());
    assert!(group_members(one).is_empty());
    assert!(!alive(two));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_exits_with_one_line_naming_file_and_key() {
    let bad = format!(
        "{}{}",
        demo_process("a", &[], ""),
        demo_process("b", &[], "stop_timeout = \"10x\"")
    );
    let setup = Setup::new(&bad);
    let mut agent = setup.spawn();
    let status = agent.wait_exit().await;
    assert!(!status.success());
    let lines = agent.stderr();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(&setup.config().display().to_string()));
    assert!(
        lines[0].contains(": process[1].stop_timeout: invalid duration \"10x\""),
        "{lines:?}"
    );

    std::fs::write(setup.config(), demo_process("a", &[], "colour = \"red\"")).expect("config");
    let mut agent = setup.spawn();
    assert!(!agent.wait_exit().await.success());
    let lines = agent.stderr();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("process[0].colour"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_and_agent_status() {
    let config = format!(
        "[agent]\nversion = \"4.2.1\"\n{}{}{}",
        demo_process("proxy", &[], "proxy = true\nmin_live = \"0s\""),
        demo_process("locked", &[], "operable = false\nmin_live = \"0s\""),
        demo_process(
            "job",
            &[],
            "kind = \"work\"\nmin_live = \"0s\"\nautostart = false"
        ),
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let proxy = wait_running(&mut a.client, "proxy").await.pid;
    wait_running(&mut a.client, "locked").await;
    let info = a
        .client
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect("GetAgentInfo")
        .into_inner();
    assert_eq!(info.version, "4.2.1");
    assert_eq!(info.status, ProcessStatus::Started as i32);
    assert_eq!(get(&mut a.client, "job").await.pid, 0, "work stays idle");

    let restarted = a
        .client
        .restart_proxy(BulkRequest { timeout_ms: 0 })
        .await
        .expect("RestartProxy")
        .into_inner();
    assert!(restarted.failures.is_empty());
    assert_eq!(restarted.processes.len(), 1);
    assert_ne!(restarted.processes[0].pid, proxy);
    assert!(!alive(proxy));

    let stopped = a
        .client
        .stop_all(BulkRequest { timeout_ms: 0 })
        .await
        .expect("StopAll")
        .into_inner();
    assert!(stopped.failures.is_empty(), "{:?}", stopped.failures);
    assert_eq!(
        stopped.processes.len(),
        2,
        "bulk calls act on basic processes"
    );
    assert!(stopped.processes.iter().all(|p| p.pid == 0));
    let info = a
        .client
        .get_agent_info(GetAgentInfoRequest {})
        .await
        .expect("GetAgentInfo")
        .into_inner();
    assert_eq!(info.status, ProcessStatus::Stopped as i32);

    let started = a
        .client
        .start_all(BulkRequest { timeout_ms: 0 })
        .await
        .expect("StartAll")
        .into_inner();
    assert!(started.failures.is_empty(), "{:?}", started.failures);
    assert!(started.processes.iter().all(|p| alive(p.pid)));
    let again = a
        .client
        .start_all(BulkRequest { timeout_ms: 0 })
        .await
        .expect("StartAll is idempotent")
        .into_inner();
    let pids = |r: &proto::agent::v1::BulkResponse| -> Vec<u32> {
        r.processes.iter().map(|p| p.pid).collect()
    };
    assert_eq!(pids(&again), pids(&started));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_failures_list_the_processes_that_did_not_start() {
    let config = format!(
        "{}{}",
        demo_process("fine", &[], "min_live = \"0s\""),
        demo_process("broken", &["--exit-after", "0", "--exit-code", "1"], ""),
    );
    let setup = Setup::new(&config);
    let mut a = setup.start().await;
    let reply = a
        .client
        .start_all(BulkRequest { timeout_ms: 0 })
        .await
        .expect("StartAll answers OK")
        .into_inner();
    assert_eq!(reply.failures.len(), 1, "{:?}", reply.failures);
    assert_eq!(reply.failures[0].alias, "broken");
    assert!(
        reply.failures[0].reason.contains("exited with code 1"),
        "{:?}",
        reply.failures
    );
    let no_proxy = a
        .client
        .restart_proxy(BulkRequest { timeout_ms: 0 })
        .await
        .expect("RestartProxy without a proxy")
        .into_inner();
    assert!(no_proxy.processes.is_empty() && no_proxy.failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_configured_user_and_reports_it_from_the_os() {
    if !nix::unistd::geteuid().is_root()
        || nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .is_none()
    {
        eprintln!("skipped: needs root and a user named nobody");
        return;
    }
    let config = demo_process("lowly", &[], "user = \"nobody\"\nmin_live = \"0s\"");
    let setup = Setup::new(&config);
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("nobody");
    setup.give_log_folder(&nobody);
    let mut a = setup.start().await;
    let info = wait_running(&mut a.client, "lowly").await;
    assert_eq!(info.user, "nobody");
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_and_stops_end_in_one_defined_state() {
    let setup = Setup::new("");
    let tag = unique_tag("race", setup.dir.path());
    std::fs::write(
        setup.config(),
        demo_process("racer", &["--tag", &tag], "min_live = \"0s\""),
    )
    .expect("config");
    let a = setup.start().await;
    for _ in 0..5 {
        let (mut c1, mut c2, mut c3) = (a.client.clone(), a.client.clone(), a.client.clone());
        let (start, stop, restart) = tokio::join!(
            c1.start_process(request("racer")),
            c2.stop_process(request("racer")),
            c3.restart_process(request("racer")),
        );
        assert!(start.is_ok() || stop.is_ok() || restart.is_ok());
        let mut client = a.client.clone();
        let info = get(&mut client, "racer").await;
        let running = tagged(&tag);
        if info.desired_running {
            assert_eq!(info.state, ProcessState::Running as i32, "{info:?}");
            assert_eq!(running, vec![info.pid]);
        } else {
            assert_eq!(info.state, ProcessState::Stopped as i32, "{info:?}");
            assert!(running.is_empty(), "{running:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_logged_with_the_controllers_trace_and_task_ids() {
    let setup = Setup::new(&demo_process("traced", &[], "min_live = \"0s\""));
    let mut a = setup.start().await;
    let mut req = tonic::Request::new(request("traced"));
    req.metadata_mut()
        .insert("x-trace-id", "135b61d1965d4be3".parse().expect("ascii"));
    req.metadata_mut()
        .insert("x-task-id", "42".parse().expect("ascii"));
    req.metadata_mut()
        .insert("x-subtask-id", "7".parse().expect("ascii"));
    a.client.start_process(req).await.expect("StartProcess");
    let logged = eventually(|| {
        a.agent.stderr().iter().any(|l| {
            l.contains("StartProcess")
                && l.contains("trace_id=135b61d1965d4be3")
                && l.contains("task_id=42")
                && l.contains("subtask_id=7")
        })
    })
    .await;
    assert!(logged, "{:?}", a.agent.stderr());
}
