//! The agent's data dir is its user's alone: created 0700 with its files 0600 whatever
//! the umask, refused when another user owns it or could write into it; a pid file
//! someone else could have written stops the agent at start, before it signals the
//! group the file names or starts the process a second time.

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::*;

const NOBODY: u32 = 65534;

/// In octal, as `ls` and `chmod` write it.
fn mode(path: &Path) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:04o}", mode & 0o7777)
}

fn umask_000(command: &mut Command) {
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The `Umask:` line of /proc/<pid>/status.
fn umask_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_its_files_are_private_under_umask_000() {
    let config = format!(
        "{}{}",
        demo_process("base", &[], "min_live = \"0s\""),
        demo_process(
            "worker",
            &[],
            "kind = \"work\"\nautostart = false\nmin_live = \"0s\""
        )
    );
    let setup = Setup::new(&config);
    let mut a = setup.start_with(umask_000).await;
    let base = wait_running(&mut a.client, "base").await;
    a.client
        .start_process(request("worker"))
        .await
        .expect("StartProcess");

    let data = setup.data_dir();
    let modes: Vec<(&str, String)> = [
        ".",
        "processes",
        "agent.lock",
        "processes/base.pid",
        "processes/worker.pid",
        "processes/worker.desired",
    ]
    .into_iter()
    .map(|name| (name, mode(&data.join(name))))
    .collect();
    assert_eq!(
        modes,
        [
            (".", "0700"),
            ("processes", "0700"),
            ("agent.lock", "0600"),
            ("processes/base.pid", "0600"),
            ("processes/worker.pid", "0600"),
            ("processes/worker.desired", "0600"),
        ]
        .map(|(name, mode)| (name, mode.to_string()))
    );
    assert_eq!(
        umask_of(base.pid),
        "0000",
        "children keep the umask the agent was started with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_data_dir_another_user_owns() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let setup = Setup::new(&demo_process("base", &[], ""));
    let data = setup.data_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .expect("mkdir");
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).expect("chown");
    let line = setup.refusal().await;
    assert_eq!(
        line,
        format!(
            "{}: owned by uid {NOBODY}, not by uid 0 the agent runs as; run `chown -R 0 {}` or use another --data-dir",
            data.display(),
            data.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_data_dir_others_can_write() {
    let setup = Setup::new(&demo_process("base", &[], ""));
    let data = setup.data_dir();
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let line = setup.refusal().await;
    assert_eq!(
        line,
        format!(
            "{}: writable by group and others (mode 0777); run `chmod 700 {}`",
            data.display(),
            data.display()
        )
    );

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let processes = data.join("processes");
    std::fs::create_dir(&processes).expect("mkdir");
    std::fs::set_permissions(&processes, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let line = setup.refusal().await;
    assert!(
        line.starts_with(&format!(
            "{}: writable by group (mode 0770)",
            processes.display()
        )),
        "{line}"
    );
}

/// `<pid> <start ticks>`, as the agent writes a pid file.
fn pid_file_text(pid: u32) -> String {
    let stat = test_support::procs::stat(pid).expect("stat");
    format!("{pid} {}\n", stat.start_ticks)
}

/// A process leading its own group, like one an agent started; another user's when
/// the test runs as root.
struct Victim(std::process::Child);

impl Victim {
    fn start() -> Victim {
        let mut command = Command::new("sleep");
        command.arg("300").process_group(0);
        if is_root() {
            command.uid(NOBODY).gid(NOBODY);
        }
        Victim(command.spawn().expect("spawn sleep"))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plants a pid file for a basic process naming `victim`, made untrusted by `taint`,
/// and starts the agent: it must exit with one line naming the file, without
/// signalling the victim or starting the process afresh. Returns that line and the
/// pid file's path.
async fn refuses_pid_file(taint: impl FnOnce(&Path)) -> (String, std::path::PathBuf) {
    let victim = Victim::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = unique_tag("planted", dir.path());
    let setup = Setup::new(&demo_process(
        "planted",
        &["--tag", &tag],
        "min_live = \"0s\"",
    ));
    let processes = setup.data_dir().join("processes");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&processes)
        .expect("mkdir");
    let pid_file = processes.join("planted.pid");
    std::fs::write(&pid_file, pid_file_text(victim.0.id())).expect("pid file");
    std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    taint(&pid_file);

    let mut agent = setup.spawn();
    // Whichever comes first: the refusal, or a second `planted` next to the victim.
    let agent_pid = agent.child.id();
    eventually(|| !alive(agent_pid) || !tagged(&tag).is_empty()).await;
    assert_eq!(
        tagged(&tag),
        Vec::<u32>::new(),
        "started afresh while the process the pid file names may still run: {:?}",
        agent.stderr()
    );
    assert!(
        alive(victim.0.id()),
        "the group named by an untrusted pid file was signalled: {:?}",
        agent.stderr()
    );
    let status = agent.wait_exit().await;
    assert!(!status.success(), "{status}");
    let lines = agent.stderr();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(alive(victim.0.id()), "signalled on the way out");
    (lines[0].clone(), pid_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_signals_a_group_named_by_a_pid_file_another_user_owns() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let (line, pid_file) = refuses_pid_file(|pid_file| {
        std::os::unix::fs::chown(pid_file, Some(NOBODY), Some(NOBODY)).expect("chown");
    })
    .await;
    assert_eq!(
        line,
        format!(
            "{}: owned by uid {NOBODY}, not by uid 0 the agent runs as; remove it after checking that no `planted` is running, or run `chown 0 {}`",
            pid_file.display(),
            pid_file.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_signals_a_group_named_by_a_pid_file_others_can_write() {
    let (line, pid_file) = refuses_pid_file(|pid_file| {
        std::fs::set_permissions(pid_file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    })
    .await;
    assert_eq!(
        line,
        format!(
            "{}: writable by group and others (mode 0666); remove it after checking that no `planted` is running, or run `chmod 600 {}`",
            pid_file.display(),
            pid_file.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_signals_a_group_named_by_a_pid_file_that_is_a_symlink() {
    let (line, pid_file) = refuses_pid_file(|pid_file| {
        let target = pid_file.with_extension("elsewhere");
        std::fs::rename(pid_file, &target).expect("mv");
        std::os::unix::fs::symlink(&target, pid_file).expect("symlink");
    })
    .await;
    assert_eq!(
        line,
        format!(
            "{}: not a regular file; remove it after checking that no `planted` is running",
            pid_file.display()
        )
    );
}
