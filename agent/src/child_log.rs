//! A process's log file, opened by the child itself once it has become the process's
//! user, so that the agent's root rights never reach a path that user controls.
//!
//! The agent used to open the log before the fork, as root, following symlinks: a process
//! user who could write its log folder swapped the log for a symlink to a root-only file
//! (or to a new path in a root-only folder) and had the agent write there on the next
//! restart. Opened in the child after `setuid`, a symlink, a hard link or a rename can
//! only lead to where that user could write anyway.
//!
//! Missing folders are made 0750 and a new log 0640 whatever the agent's umask, which
//! the child then gets back untouched. Everything that can fail before the fork (paths,
//! the pipe) is done in [`ChildLog::prepare`]; the child makes only async-signal-safe
//! calls, and says which of its steps failed on a pipe, so that the parent can name the
//! log in the process's reason instead of a bare errno.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{dup2_stderr, dup2_stdout, mkdir, write};

/// Modes of what the child creates: the process's user and its group may read the log,
/// nobody else; the agent (root) reads it anyway for TailLog.
const DIR_MODE: Mode = Mode::from_bits_truncate(0o750);
const FILE_MODE: Mode = Mode::from_bits_truncate(0o640);

/// What the child reports on the pipe before it fails.
const FAILED_DIR: u8 = b'd';
const FAILED_OPEN: u8 = b'o';

/// The log of one spawn, ready for the child to open.
pub(crate) struct ChildLog {
    path: PathBuf,
    c_path: CString,
    /// Folders to create, outermost first; those that exist by then are skipped.
    dirs: Vec<CString>,
    /// The child's end of the report pipe (close-on-exec: gone once it runs the program).
    report: OwnedFd,
    /// The parent's end, non-blocking: empty unless a step of the child failed.
    reports: OwnedFd,
}

/// Which step of opening the log failed in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    CreatingFolder,
    Opening,
}

impl ChildLog {
    /// Blocking (it looks at the file system): run before the fork, on the blocking pool.
    pub(crate) fn prepare(path: &Path) -> io::Result<ChildLog> {
        // The child may change directory (`cwd`) before it opens the log.
        let path = std::path::absolute(path)?;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
        };
        let mut dirs = Vec::new();
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || dir.exists() {
                break;
            }
            dirs.push(c(dir)?);
        }
        dirs.reverse();
        let (reports, report) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(ChildLog {
            c_path: c(&path)?,
            path,
            dirs,
            report,
            reports,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs in the child between fork and exec, after it took the process's user:
    /// creates the missing folders, opens the log for appending and makes it the
    /// child's stdout and stderr. Only async-signal-safe calls, on data made before
    /// the fork.
    pub(crate) fn open_in_child(&self) -> io::Result<()> {
        // umask, mkdir, open, fcntl, dup2, close and write are async-signal-safe, and
        // nix's wrappers of them allocate nothing: the paths are CStrings already.
        let old_umask = umask(Mode::empty());
        let fail = |step: u8, error: Errno| {
            umask(old_umask);
            let _ = write(&self.report, &[step]);
            Err(error.into())
        };
        for dir in &self.dirs {
            match mkdir(dir.as_c_str(), DIR_MODE) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return fail(FAILED_DIR, e),
            }
        }
        // Non-blocking, so that a FIFO put in the log's place fails the open (no
        // reader) instead of holding the spawn forever; blocking again once open.
        let fd = match open(
            self.c_path.as_c_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_APPEND
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            FILE_MODE,
        ) {
            Ok(fd) => fd,
            Err(e) => return fail(FAILED_OPEN, e),
        };
        let blocking = fcntl(&fd, FcntlArg::F_GETFL).and_then(|flags| {
            let flags = OFlag::from_bits_retain(flags) - OFlag::O_NONBLOCK;
            fcntl(&fd, FcntlArg::F_SETFL(flags))
        });
        if let Err(e) = blocking {
            drop(fd);
            return fail(FAILED_OPEN, e);
        }
        umask(old_umask);
        // dup2 leaves close-on-exec off on the copies, so only they reach the program.
        let duped = dup2_stdout(&fd).and_then(|()| dup2_stderr(&fd));
        drop(fd);
        if let Err(e) = duped {
            let _ = write(&self.report, &[FAILED_OPEN]);
            return Err(e.into());
        }
        Ok(())
    }

    /// After a failed spawn: whether it was this log that failed, and at which step.
    pub(crate) fn failure(&self) -> Option<Failed> {
        let mut byte = [0u8; 1];
        match nix::unistd::read(&self.reports, &mut byte) {
            Ok(1) if byte[0] == FAILED_DIR => Some(Failed::CreatingFolder),
            Ok(1) => Some(Failed::Opening),
            _ => None,
        }
    }
}
