//! A process's user who controls its log folder cannot make the agent (root) write
//! anywhere that user could not: the log is opened by the child as that user. A log
//! swapped for a symlink to a root-only file, or to a new path in a root-only folder,
//! leaves the process FATAL with the reason and the target untouched; under umask 000
//! the folders and logs the agent makes are 0750 and 0640.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::*;
use proto::agent::v1::ProcessState;

/// The probe's user: the agent runs as root, the process as `nobody`.
fn nobody() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("nobody").ok().flatten()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
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

/// A process `p` of ocp-demo-proc with `args`, logging to `log_file`.
fn process(args: &str, log_file: &str, extra: &str) -> String {
    format!(
        "[[process]]\nalias = \"p\"\ncommand = {DEMO:?}\nargs = [{args}]\nlog_file = {log_file:?}\nmin_live = \"0s\"\n{extra}\n"
    )
}

/// Waits for `p` to have exited on its own (`--exit-after`, no autorestart).
async fn wait_exited(client: &mut Client) {
    wait_for(client, "p", "its exit", |p| {
        p.state != ProcessState::Running as i32 && p.pid == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_swapped_for_a_symlink_is_opened_with_the_process_users_rights() {
    let Some(nobody) = nobody() else {
        eprintln!("skipped: needs root and a user named nobody");
        return;
    };
    let setup = Setup::new(&process(
        "\"--exit-after\", \"300\"",
        "log/p.log",
        "user = \"nobody\"\nautorestart = false",
    ));
    let log = setup.give_log_folder(&nobody).join("p.log");
    let vault = setup.dir.path().join("vault");
    std::fs::create_dir(&vault).expect("vault");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let secret = vault.join("secret");
    std::fs::write(&secret, "root's own\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut a = setup.start().await;
    wait_running(&mut a.client, "p").await;
    wait_exited(&mut a.client).await;
    let meta = std::fs::metadata(&log).expect("the log was created");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (nobody.uid.as_raw(), 0o640),
        "the log is the process user's, 0640"
    );
    assert!(
        std::fs::read_to_string(&log)
            .expect("log")
            .contains("ready pid="),
        "the process's output is in its log"
    );

    // What the process's user can do: replace its log with a symlink to a root-only
    // file, then with one to a path that does not exist yet in a root-only folder.
    let cron = vault.join("cron-line");
    for target in [&secret, &cron] {
        std::fs::remove_file(&log).expect("remove the log");
        std::os::unix::fs::symlink(target, &log).expect("symlink");
        let started = a.client.start_process(request("p")).await;
        assert!(started.is_err(), "the start went through: {started:?}");
        let info = wait_for(&mut a.client, "p", "FATAL", |p| {
            p.state == ProcessState::Fatal as i32
        })
        .await;
        eprintln!(
            "with the log a symlink to {}: {}",
            target.display(),
            info.last_error
        );
        assert!(
            info.last_error.contains("cannot open log file")
                && info.last_error.contains(&log.display().to_string())
                && info.last_error.contains("as user \"nobody\"")
                && info.last_error.contains("Permission denied"),
            "the reason names the log, the user and the refusal: {}",
            info.last_error
        );
    }
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "root's own\n",
        "nothing was appended to the root-only file"
    );
    assert!(
        !cron.exists(),
        "a file was created in the root-only folder: {}",
        cron.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_folders_and_files_are_0750_and_0640_under_umask_000() {
    let setup = Setup::new(&process("", "logs/deep/p.log", ""));
    let mut a = setup.start_with(umask_000).await;
    let info = wait_running(&mut a.client, "p").await;
    let logs = setup.dir.path().join("logs");
    let modes = [
        mode(&logs),
        mode(&logs.join("deep")),
        mode(&logs.join("deep/p.log")),
    ];
    assert_eq!(modes, [0o750, 0o750, 0o640], "logs/, logs/deep/, the log");
    let umask = std::fs::read_to_string(format!("/proc/{}/status", info.pid))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Umask:").map(|u| u.trim().to_string()))
        .expect("Umask line");
    assert_eq!(umask, "0000", "the process keeps the umask the agent has");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_folder_the_process_user_cannot_write_is_a_fatal_reason() {
    let Some(nobody) = nobody() else {
        eprintln!("skipped: needs root and a user named nobody");
        return;
    };
    // Root's folder, which nobody may enter but not write: its log cannot be made.
    let setup = Setup::new(&process("", "rootlogs/new/p.log", "user = \"nobody\""));
    setup.give_log_folder(&nobody);
    let root_logs = setup.dir.path().join("rootlogs");
    std::fs::create_dir(&root_logs).expect("rootlogs");
    std::fs::set_permissions(&root_logs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut a = setup.start().await;
    let info = wait_for(&mut a.client, "p", "FATAL", |p| {
        p.state == ProcessState::Fatal as i32
    })
    .await;
    assert!(
        info.last_error
            .contains("cannot create the folder of its log file")
            && info.last_error.contains("Permission denied"),
        "{}",
        info.last_error
    );
    assert!(
        !root_logs.join("new").exists(),
        "root made the folder for it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_place_of_the_log_fails_the_start_instead_of_holding_it() {
    let setup = Setup::new(&process("", "log/p.log", "autostart = false"));
    let logs = setup.dir.path().join("log");
    std::fs::create_dir(&logs).expect("log folder");
    nix::unistd::mkfifo(&logs.join("p.log"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let mut a = setup.start().await;
    // Nobody reads the FIFO: an open that waited for a reader would never return.
    let started = tokio::time::timeout(WAIT, a.client.start_process(request("p")))
        .await
        .expect("the start was answered");
    assert!(started.is_err(), "{started:?}");
    let info = wait_for(&mut a.client, "p", "FATAL", |p| {
        p.state == ProcessState::Fatal as i32
    })
    .await;
    assert!(
        info.last_error.contains("cannot open log file"),
        "{}",
        info.last_error
    );
}
