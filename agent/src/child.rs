//! A supervised process the agent can wait for: one this image spawned, or one an
//! earlier image of the same agent process spawned before it `exec`ed the new
//! version (see [`crate::handover`]), and so still this process's child.
//!
//! tokio only waits for the children it spawned; an adopted one is waited for
//! through a pidfd, which becomes readable when the process exits, and then reaped
//! with `waitpid` as any child: its exit status is not lost, and no zombie is left.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub enum ChildProc {
    Spawned(tokio::process::Child),
    Adopted(Adopted),
}

impl ChildProc {
    /// Waits until the process exits, and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            ChildProc::Spawned(child) => child.wait().await,
            ChildProc::Adopted(adopted) => adopted.wait().await,
        }
    }
}

/// A child of this process that an earlier image spawned.
pub struct Adopted {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    exited: Option<ExitStatus>,
}

impl Adopted {
    /// Fails when the process is gone already (ESRCH) or pidfds are not available
    /// (Linux before 5.3): the caller then treats it as a leftover.
    pub fn new(pid: i32) -> io::Result<Adopted> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd keeps its one descriptor open until it is dropped.
        let pidfd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Adopted {
            pid,
            pidfd,
            exited: None,
        })
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            if let Some(status) = self.reap()? {
                self.exited = Some(status);
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// `waitpid` without blocking: `None` while the process still runs.
    fn reap(&self) -> io::Result<Option<ExitStatus>> {
        let mut raw = 0;
        // SAFETY: waitpid writes only into `raw`.
        let got = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
        match got {
            0 => Ok(None),
            pid if pid == self.pid => Ok(Some(ExitStatus::from_raw(raw))),
            _ => Err(io::Error::last_os_error()),
        }
    }
}
