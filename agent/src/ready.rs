//! When a spawned process counts as started: it lived `min_live` and every one of
//! its `ports` listens on a socket of its group.
//!
//! The wait races the child's exit against a short port poll (every 1 ms for the
//! first 10 ms, then growing to 10 ms), so a process that is ready quickly is seen as
//! ready quickly, and one that dies is seen dying at once rather than at the end of a
//! fixed sleep. Most processes bind within a few milliseconds: a poll that doubled
//! from the start found a port bound at 3.5 ms only at 7 ms. Each poll reads the
//! socket table (and, once the ports listen, walks the group in `/proc`) on the
//! blocking pool, so that fifty processes starting at once do not hold up the
//! runtime thread that answers calls.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::ProcessSpec;
use crate::procfs;

const FIRST_POLL: Duration = Duration::from_millis(1);
const FAST_POLLING: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(10);

/// Waits until the process is started; the error says why it is not.
pub async fn await_ready(
    child: &mut Child,
    pgid: i32,
    spec: &ProcessSpec,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let spawned = Instant::now();
    let live_at = spawned + spec.min_live;
    let give_up_at = spawned + spec.min_live.max(spec.start_timeout);
    let mut poll = FIRST_POLL;
    loop {
        let now = Instant::now();
        if now >= live_at && procfs::ports_ready_async(pgid, spec.ports.clone()).await {
            return Ok(());
        }
        if now >= give_up_at {
            return Err(not_listening(pgid, spec).await);
        }
        let next = if now < live_at { live_at } else { now + poll };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err("the agent is shutting down".into()),
            waited = child.wait() => {
                return Err(match waited {
                    Ok(status) => describe_exit(status, spawned.elapsed()),
                    Err(e) => format!("cannot wait for pid {pgid}: {e}"),
                });
            }
            _ = sleep_until(next.min(give_up_at)) => {}
        }
        if now >= live_at + FAST_POLLING {
            poll = (poll * 2).min(MAX_POLL);
        }
    }
}

async fn not_listening(pgid: i32, spec: &ProcessSpec) -> String {
    let held = procfs::group_ports_async(pgid).await;
    let missing: Vec<String> = spec
        .ports
        .iter()
        .filter(|&&p| !held.contains(&u32::from(p)))
        .map(u16::to_string)
        .collect();
    let noun = if missing.len() == 1 { "port" } else { "ports" };
    let waited = spec.min_live.max(spec.start_timeout);
    format!(
        "{noun} {} not listening after {}",
        missing.join(", "),
        humantime::format_duration(waited)
    )
}

/// "exited with code 1 after 0.2s", "killed by signal 9 (SIGKILL) after 3.0s".
pub fn describe_exit(status: ExitStatus, lived: Duration) -> String {
    let after = format!("after {:.1}s", lived.as_secs_f64());
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code} {after}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(name) => format!("killed by signal {sig} ({name}) {after}"),
            Err(_) => format!("killed by signal {sig} {after}"),
        },
        (None, None) => format!("ended ({status}) {after}"),
    }
}
