//! What survives an agent restart, under `--data-dir`:
//!
//! - `agent.lock`: held (flock) while an agent runs, so that two agents on one
//!   data dir cannot both supervise, and so double, the same processes;
//! - `processes/<alias>.desired`: `running` or `stopped`, what the operator last
//!   asked for, so that a process the operator stopped stays stopped;
//! - `processes/<alias>.pid`: `<pid> <start ticks>` of the running process, so
//!   that the next agent run can find it even when this one was killed.
//!
//! Files are replaced atomically (write to a temporary file, rename), so a crash
//! leaves either the old or the new content, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: data dir is in use by another ocp-agent (lock held)")]
    Busy { path: PathBuf },
    #[error("{path}: cannot lock: {source}")]
    Lock { path: PathBuf, source: Errno },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data dir, locked for as long as this value lives.
pub struct DataDir {
    processes: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    pub fn open(root: &Path) -> Result<DataDir, StateError> {
        let processes = root.join("processes");
        std::fs::create_dir_all(&processes).map_err(io_err(&processes))?;
        let lock_path = root.join("agent.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Err(StateError::Busy { path: lock_path }),
            Err((_, source)) => {
                return Err(StateError::Lock {
                    path: lock_path,
                    source,
                });
            }
        };
        Ok(DataDir {
            processes,
            _lock: lock,
        })
    }

    pub fn process(&self, alias: &str) -> ProcessFiles {
        ProcessFiles {
            desired: self.processes.join(format!("{alias}.desired")),
            pid: self.processes.join(format!("{alias}.pid")),
        }
    }
}

/// Identifies one process for good: a pid alone may be reused by another program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: i32,
    pub start_ticks: u64,
}

/// The files of one process; only its supervisor touches them.
#[derive(Debug, Clone)]
pub struct ProcessFiles {
    desired: PathBuf,
    pid: PathBuf,
}

impl ProcessFiles {
    /// `None` when the operator never asked anything of this process.
    pub fn desired_running(&self) -> Result<Option<bool>, StateError> {
        Ok(
            match read_optional(&self.desired)?.as_deref().map(str::trim) {
                Some("running") => Some(true),
                Some("stopped") => Some(false),
                _ => None,
            },
        )
    }

    pub fn set_desired_running(&self, running: bool) -> Result<(), StateError> {
        let text = if running { "running\n" } else { "stopped\n" };
        write_atomic(&self.desired, text, true)
    }

    /// A pid file that does not parse is treated as absent: there is nothing in it to act on.
    pub fn pid_record(&self) -> Result<Option<PidRecord>, StateError> {
        let Some(text) = read_optional(&self.pid)? else {
            return Ok(None);
        };
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        Ok(match (parts.next(), parts.next()) {
            (Some(Ok(pid)), Some(Ok(start_ticks))) => i32::try_from(pid)
                .ok()
                .map(|pid| PidRecord { pid, start_ticks }),
            _ => None,
        })
    }

    pub fn write_pid(&self, record: PidRecord) -> Result<(), StateError> {
        write_atomic(
            &self.pid,
            &format!("{} {}\n", record.pid, record.start_ticks),
            false,
        )
    }

    pub fn remove_pid(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.pid) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&self.pid)(e)),
            _ => Ok(()),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// `durable` asks for fsync: the operator's wish must survive a power cut, but a
/// pid file need not, since a power cut also ends the process it names.
fn write_atomic(path: &Path, text: &str, durable: bool) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    if durable {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::open(dir.path()).expect("first lock");
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(StateError::Busy { .. })
        ));
        let files = data.process("a");
        assert_eq!(files.desired_running().expect("read"), None);
        files.set_desired_running(false).expect("write");
        assert_eq!(files.desired_running().expect("read"), Some(false));
        let record = PidRecord {
            pid: 42,
            start_ticks: 7,
        };
        files.write_pid(record).expect("write pid");
        assert_eq!(files.pid_record().expect("read pid"), Some(record));
        files.remove_pid().expect("remove");
        files.remove_pid().expect("remove twice");
        assert_eq!(files.pid_record().expect("read pid"), None);
        drop(data);
        DataDir::open(dir.path()).expect("lock after release");
    }
}
