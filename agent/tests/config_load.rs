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
            "{}: process \"ob_cleaner\": cwd {:?} is not a directory",
            setup.config().display(),
            setup.dir.path().join("nowhere").display().to_string()
        )
    );
}
