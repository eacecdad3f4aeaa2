//! Leftovers of an earlier agent run: found through pid files, TERMINATED, and then
//! started afresh, not adopted.
//!
//! Why not adopt: an adopted process is not this agent's child, so the agent could
//! not `wait()` for it (no exit status, no reaping, only polling `/proc`), and its
//! output may still go to a log file the operator since moved. Terminating it gives
//! a single code path for every running process at the cost of one restart per
//! agent restart, which OCP operators already expect from "Restart OCP agent".
//!
//! Before anything is signalled, the pid must still belong to the same program: the
//! start time recorded in the pid file has to match `/proc/<pid>/stat`. A pid that
//! was reused by an unrelated program is left alone. When the leader is gone but
//! members of its group live on, the group is still ours: a group id cannot be
//! handed out again while any member lives.
//!
//! A pid file someone else could have written (see [`crate::data_dir::distrust`]) stops
//! the agent at start, before any supervisor runs (see
//! [`crate::data_dir::DataDir::check_pid_files`]): signalling what it names could kill
//! another user's processes, and starting afresh could run the process twice when
//! the one it names is the earlier run's. Only the operator can tell which it is.
//!
//! This runs in each process's supervisor before its first start, so a process
//! never runs twice. The pid file is written right after the spawn; before it, it
//! holds the token the child carries in its environment, so a child whose agent was
//! killed in between is found by a scan of `/proc/<pid>/environ`, which only that
//! rare case pays for. The one child still missed is one killed with its agent
//! between fork and exec: it does not carry the token until its exec.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::data_dir::{DataDirError, PidFile, ProcessFiles};
use crate::group::{self, StopError};
use crate::procfs;
use crate::spawn::SPAWN_ENV;

#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("stopping leftover: {0}")]
    Stop(StopError),
    #[error("reading the pid file: {0}")]
    Task(tokio::task::JoinError),
}

impl From<StopError> for LeftoverError {
    fn from(error: StopError) -> LeftoverError {
        LeftoverError::Stop(error)
    }
}

impl From<tokio::task::JoinError> for LeftoverError {
    fn from(error: tokio::task::JoinError) -> LeftoverError {
        LeftoverError::Task(error)
    }
}

/// Returns the pid of the leftover it terminated, if there was one.
pub async fn terminate_leftover(
    files: &ProcessFiles,
    sig: Signal,
    stop_timeout: Duration,
) -> Result<Option<i32>, LeftoverError> {
    let reading = files.clone();
    let groups = tokio::task::spawn_blocking(move || {
        Ok::<_, DataDirError>(match reading.pid_file()? {
            None => Vec::new(),
            Some(PidFile::Running(record)) => {
                let ours = match procfs::stat(record.pid) {
                    Some(stat) => stat.start_ticks == record.start_ticks && stat.pgrp == record.pid,
                    None => procfs::group_alive(record.pid),
                };
                if ours { vec![record.pid] } else { Vec::new() }
            }
            Some(PidFile::Spawning(token)) => {
                procfs::groups_marked(&format!("{SPAWN_ENV}={token}"))
            }
        })
    })
    .await??;
    let mut terminated = None;
    for pgid in groups {
        if procfs::group_alive_async(pgid).await {
            group::terminate_group(pgid, sig, stop_timeout).await?;
            terminated.get_or_insert(pgid);
        }
    }
    files.remove_pid().await?;
    Ok(terminated)
}
