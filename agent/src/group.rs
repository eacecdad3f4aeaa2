//! Stopping a whole process group: every configured process leads its own group,
//! so that a signal reaches the helpers it forked too, and "stopped" can mean
//! "nothing of it is left" rather than "the leader exited".

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::child::ChildProc;
use crate::procfs;

/// How long SIGKILL may take to show; beyond it the process is stuck in the kernel.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("pid {0} still alive 5s after SIGKILL")]
    Unkillable(i32),
    #[error("members of process group {0} still alive 5s after SIGKILL")]
    GroupSurvived(i32),
    #[error("waiting for pid {pid}: {error}")]
    Wait { pid: i32, error: io::Error },
}

/// A group that is already gone is not an error: that is the goal.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return;
    }
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal process group"),
    }
}

/// Polls until no living member is left; false when the deadline passed first.
pub async fn wait_group_gone(pgid: i32, deadline: Instant) -> bool {
    loop {
        if !procfs::group_alive_async(pgid).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Stops a child of this agent: `sig` to its group, SIGKILL to the group once
/// `stop_timeout` passed, and returns only after the child was reaped and no other
/// member of its group lives.
pub async fn stop_child(
    child: &mut ChildProc,
    pgid: i32,
    sig: Signal,
    stop_timeout: Duration,
) -> Result<ExitStatus, StopError> {
    let deadline = Instant::now() + stop_timeout;
    signal_group(pgid, sig);
    let waited = match timeout_at(deadline, child.wait()).await {
        Ok(waited) => waited,
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            timeout(KILL_GRACE, child.wait())
                .await
                .map_err(|_| StopError::Unkillable(pgid))?
        }
    };
    let status = waited.map_err(|error| StopError::Wait { pid: pgid, error })?;
    clear_group(pgid, deadline).await?;
    Ok(status)
}

/// The members left after the leader exited already had their chance until
/// `deadline`; then they get SIGKILL.
async fn clear_group(pgid: i32, deadline: Instant) -> Result<(), StopError> {
    if wait_group_gone(pgid, deadline).await {
        return Ok(());
    }
    signal_group(pgid, Signal::SIGKILL);
    if wait_group_gone(pgid, Instant::now() + KILL_GRACE).await {
        Ok(())
    } else {
        Err(StopError::GroupSurvived(pgid))
    }
}

/// Stops a group whose leader is not (or no longer) a child to wait for: the
/// leftovers of an earlier agent run, or helpers outliving a crashed leader.
pub async fn terminate_group(
    pgid: i32,
    sig: Signal,
    stop_timeout: Duration,
) -> Result<(), StopError> {
    if !procfs::group_alive_async(pgid).await {
        return Ok(());
    }
    signal_group(pgid, sig);
    clear_group(pgid, Instant::now() + stop_timeout).await
}
