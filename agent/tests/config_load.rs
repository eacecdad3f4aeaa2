//! A process whose user, program or working folder is not on this host stops the
//! agent at load, with one line naming the process and the key, instead of ending in
//! FATAL after three retries.

mod common;

use common::*;

/// Starts the agent on a config with one bad process; returns its one line of stderr.
async fn load_error(extra: &str) -> (Setup, String) {
    let setup = Setup::new(&format!(
        "{}[[process]]\nalias = \"ob_cleaner\"\n{extra}\n",
        demo_process("fine", &[], "")
    ));
    let mut agent = setup.spawn();
    let status = agent.wait_exit().await;
    assert!(!status.success(), "{status}");
    let lines = agent.stderr();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let line = lines[0].clone();
    (setup, line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_does_not_exist() {
    let (setup, line) =
        load_error(&format!("command = {DEMO:?}\nuser = \"nosuch-ocp-user\"")).await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": user \"nosuch-ocp-user\" does not exist",
            setup.config().display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_is_not_there() {
    let (setup, line) = load_error("command = \"/no/such/program\"").await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": command \"/no/such/program\" does not exist",
            setup.config().display()
        )
    );
    let (setup, line) = load_error("command = \"no-such-ocp-program\"").await;
    let start = format!(
        "{}: process \"ob_cleaner\": command \"no-such-ocp-program\" is not an executable file in PATH (",
        setup.config().display()
    );
    assert!(line.starts_with(&start), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_that_is_not_a_directory() {
    let (setup, line) = load_error(&format!("command = {DEMO:?}\ncwd = \"nowhere\"")).await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": cwd {:?} does not exist",
            setup.config().display(),
            setup.dir.path().join("nowhere").display().to_string()
        )
    );
    let (setup, line) = load_error(&format!("command = {DEMO:?}\ncwd = {DEMO:?}")).await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": cwd {DEMO:?} is not a directory",
            setup.config().display(),
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_or_cwd_the_user_may_not_use() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a process as another user");
        return;
    }
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let setup = Setup::new("");
    let dir = std::fs::canonicalize(setup.dir.path()).expect("canonical");
    let script = dir.join("prog.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 300\n").expect("script");
    chmod(&script, 0o700);
    std::fs::create_dir(dir.join("work")).expect("mkdir");
    chmod(&dir.join("work"), 0o755);

    // Root-owned and 0700: root could run it, nobody cannot.
    chmod(&dir, 0o755);
    let (setup_a, line) = load_error(&format!(
        "command = {:?}\nuser = \"nobody\"",
        script.display().to_string()
    ))
    .await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": command {:?} is not executable by user \"nobody\" (mode 0700, owner uid 0, group gid 0)",
            setup_a.config().display(),
            script.display().to_string()
        )
    );

    // A folder on the way to the cwd that nobody may not enter.
    chmod(&dir, 0o700);
    let work = dir.join("work").display().to_string();
    let (setup_b, line) = load_error(&format!(
        "command = \"/bin/sleep\"\nargs = [\"300\"]\ncwd = {work:?}\nuser = \"nobody\""
    ))
    .await;
    assert_eq!(
        line,
        format!(
            "{}: process \"ob_cleaner\": cwd {work:?} is in {:?}, not searchable by user \"nobody\" (mode 0700, owner uid 0, group gid 0)",
            setup_b.config().display(),
            dir.display().to_string()
        )
    );
    drop(setup);
}

/// With no PATH anywhere, exec looks in /bin:/usr/bin; so does the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_without_any_path() {
    let setup = Setup::new("[[process]]\nalias = \"nap\"\ncommand = \"sleep\"\nargs = [\"300\"]\n");
    let mut a = setup
        .start_with(|command| {
            command.env_remove("PATH");
        })
        .await;
    wait_running(&mut a.client, "nap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_someone_else_could_write_is_refused_before_it_is_read() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(&demo_process("fine", &[], ""));
    let config = setup.config();
    let chmod = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let me = nix::unistd::geteuid().as_raw();
    let fix = format!(
        "the file and every folder above it must be owned by root or by uid {me} \
         (this process's user) and writable by no one else (chown, chmod go-w)"
    );

    chmod(&config, 0o666);
    assert_eq!(
        setup.refusal().await,
        format!(
            "{}: not trusted: it may be written by others (mode 0666, owner uid {me}); {fix}",
            config.display()
        )
    );
    chmod(&config, 0o620);
    assert!(
        setup
            .refusal()
            .await
            .contains("it may be written by its group (mode 0620"),
    );
    chmod(&config, 0o644);

    // The folder above it, which anyone may write: anyone could swap the file.
    chmod(setup.dir.path(), 0o777);
    assert_eq!(
        setup.refusal().await,
        format!(
            "{}: not trusted: its folder {} may be written by others (mode 0777, owner uid {me}); {fix}",
            config.display(),
            setup.dir.path().display()
        )
    );
    chmod(setup.dir.path(), 0o700);

    // Owned by another user (the unit's /home/admin/... as the probe found it).
    if me == 0 {
        std::os::unix::fs::chown(&config, Some(65534), None).expect("chown");
        assert_eq!(
            setup.refusal().await,
            format!(
                "{}: not trusted: it is owned by another user (mode 0644, owner uid 65534); {fix}",
                config.display()
            )
        );
        std::os::unix::fs::chown(&config, Some(0), None).expect("chown back");
    } else {
        eprintln!("skipped the owner check: it needs root");
    }
    let mut agent = setup.start().await;
    wait_running(&mut agent.client, "fine").await;
}
