//! What the agent writes where nobody watches on a terminal (journald, a file, a pipe):
//! no colour codes, and no line per heartbeat at INFO, while what changes still shows.

mod common;

use common::*;
use nix::sys::signal::Signal;
use proto::agent::v1::GetAgentInfoRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_run_writes_no_colour_codes_and_no_line_per_heartbeat() {
    let setup = Setup::new(&demo_process("sleeper", &[], ""));
    // Neither RUST_LOG nor NO_COLOR: the agent as a unit starts it, its stderr a pipe.
    let mut running = setup
        .start_with(|command| {
            command.env_remove("RUST_LOG").env_remove("NO_COLOR");
        })
        .await;
    let client = &mut running.client;
    wait_running(client, "sleeper").await;

    // Twenty heartbeats, and a page that shows the host's processes.
    for _ in 0..20 {
        client
            .get_agent_info(GetAgentInfoRequest {})
            .await
            .expect("GetAgentInfo");
    }
    list(client).await;
    // A change, and a call that fails.
    client
        .stop_process(request("sleeper"))
        .await
        .expect("StopProcess");
    let unknown = client.stop_process(request("no-such-process")).await;
    assert!(unknown.is_err(), "{unknown:?}");

    running.agent.signal(Signal::SIGTERM);
    let status = running.agent.wait_exit().await;
    assert!(status.success(), "{status}");
    let lines = running.agent.stderr();
    let text = lines.join("\n");

    assert!(!text.contains('\x1b'), "colour codes in the log:\n{text:?}");
    let said = |words: &str| lines.iter().any(|l| l.contains(words));
    assert!(
        said(" INFO ") && said(" WARN "),
        "the run logs at INFO and WARN:\n{text}"
    );
    assert!(
        said("StopProcess") && said("no-such-process"),
        "the change and the failure are logged:\n{text}"
    );
    let reads: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("GetAgentInfo") || l.contains("ListProcesses"))
        .collect();
    assert!(reads.is_empty(), "a line per read at INFO: {reads:#?}");
}
