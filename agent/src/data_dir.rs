//! What survives an agent restart, under `--data-dir`:
//!
//! - `agent.lock`: held (flock) while an agent runs, so that two agents on one
//!   data dir cannot both supervise, and so double, the same processes;
//! - `cluster`: the id of the controller cluster this agent belongs to (see
//!   [`crate::cluster`]), so that another cluster is refused after a restart too;
//! - `processes/<alias>.desired`: `running` or `stopped`, what the operator last
//!   asked for, so that a process the operator stopped stays stopped;
//! - `versions/`: the agent binaries this host holds, and which one is committed
//!   (see [`crate::versions`]);
//! - `processes/<alias>.pid`: `<pid> <start ticks>` of the running process, so
//!   that the next agent run can find it even when this one was killed; before the
//!   spawn it holds `spawning <token>`, the mark the child carries in its
//!   environment (see [`crate::spawn::SPAWN_ENV`]), so that a child whose agent was
//!   killed before it could write the pid is found too.
//!
//! Files are replaced atomically (write to a temporary file, rename), so a crash
//! leaves either the old or the new content, never a torn one. The desired state is
//! also durable: the file and then its folder are fsynced, so that the rename too
//! survives a power cut.
//!
//! The agent runs on one runtime thread, which an fsync would hold for as long as
//! the disk takes (tens of milliseconds on a busy one): so the writes the supervisors
//! make while serving are `async` and run on the blocking pool.
//!
//! A pid file names a process group the agent will signal, and a root agent may
//! signal anyone's: so the folders are created 0700 and the files 0600 whatever the
//! umask, and the agent refuses to start on a data dir, or a pid file of a configured
//! process, that another user owns or could write into (see [`distrust`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: data dir is in use by another ocp-agent (lock held)")]
    Busy { path: PathBuf },
    #[error("{path}: cannot lock: {error}")]
    Lock { path: PathBuf, error: Errno },
    #[error("{path}: {problem}; {}", problem.fix("700", path))]
    UntrustedDir { path: PathBuf, problem: Distrust },
    #[error("{path}: {problem}; {}", problem.pid_file_fix(alias, path))]
    UntrustedPidFile {
        path: PathBuf,
        alias: String,
        problem: Distrust,
    },
    #[error("{path}: the write did not finish: {error}")]
    Unfinished {
        path: PathBuf,
        error: tokio::task::JoinError,
    },
}

/// Why a folder or file under the data dir could have been written by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    NotOurs { owner: u32, euid: u32 },
    Writable { mode: u32 },
    NotRegular,
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Distrust::NotOurs { owner, euid } => write!(
                f,
                "owned by uid {owner}, not by uid {euid} the agent runs as"
            ),
            Distrust::Writable { mode } => {
                let by = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                    (true, true) => "group and others",
                    (true, false) => "group",
                    _ => "others",
                };
                write!(f, "writable by {by} (mode {:04o})", mode & 0o7777)
            }
            Distrust::NotRegular => f.write_str("not a regular file"),
        }
    }
}

impl Distrust {
    /// The command that mends it; `mode` is what the agent itself would have created.
    fn fix(&self, mode: &str, path: &Path) -> String {
        match self {
            Distrust::NotOurs { euid, .. } => {
                format!(
                    "run `chown -R {euid} {}` or use another --data-dir",
                    path.display()
                )
            }
            Distrust::Writable { .. } => format!("run `chmod {mode} {}`", path.display()),
            Distrust::NotRegular => format!("remove {}", path.display()),
        }
    }

    /// Removing the file is always safe once the operator saw that nothing it may name
    /// still runs; vouching for it instead lets the agent stop what it names.
    fn pid_file_fix(&self, alias: &str, path: &Path) -> String {
        let check = format!("remove it after checking that no `{alias}` is running");
        match self {
            Distrust::NotOurs { euid, .. } => {
                format!("{check}, or run `chown {euid} {}`", path.display())
            }
            Distrust::Writable { .. } => format!("{check}, or run `chmod 600 {}`", path.display()),
            Distrust::NotRegular => check,
        }
    }
}

/// Whether what has `mode` and `owner` could have been written by anyone but the
/// agent's effective user `euid`. Root is not trusted for a non-root agent either:
/// the agent only believes what it could have written itself.
pub fn distrust(mode: u32, owner: u32, euid: u32) -> Option<Distrust> {
    if owner != euid {
        Some(Distrust::NotOurs { owner, euid })
    } else if mode & 0o022 != 0 {
        Some(Distrust::Writable { mode })
    } else {
        None
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |error| DataDirError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The data dir, locked for as long as this value lives.
pub struct DataDir {
    root: PathBuf,
    processes: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    /// Blocking: call it before the runtime or on the blocking pool.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        private_dir(root)?;
        let processes = root.join("processes");
        private_dir(&processes)?;
        // Once, for the first run: the folder's own entry must survive a power cut too.
        sync_dir(root).map_err(io_err(root))?;
        let lock_path = root.join("agent.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Err(DataDirError::Busy { path: lock_path }),
            Err((_, error)) => {
                return Err(DataDirError::Lock {
                    path: lock_path,
                    error,
                });
            }
        };
        Ok(DataDir {
            root: root.to_path_buf(),
            processes,
            _lock: lock,
        })
    }

    /// The agent versions this host holds (see [`crate::versions`]).
    pub fn versions(&self) -> Result<crate::versions::Versions, DataDirError> {
        crate::versions::Versions::open(&self.root)
    }

    pub fn cluster(&self) -> ClusterFile {
        ClusterFile::in_data_dir(&self.root)
    }

    pub fn process(&self, alias: &str) -> ProcessFiles {
        ProcessFiles {
            alias: alias.to_string(),
            desired: self.processes.join(format!("{alias}.desired")),
            pid: self.processes.join(format!("{alias}.pid")),
        }
    }

    /// Refuses the first pid file of `aliases` that someone else could have written.
    /// Called before any process starts: the agent can neither stop what such a file
    /// names (it may be anyone's) nor start the process afresh (the one it names may
    /// be the earlier run's, still running), so the operator must decide.
    /// Blocking, like [`DataDir::open`].
    pub fn check_pid_files<'a>(
        &self,
        aliases: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), DataDirError> {
        aliases
            .into_iter()
            .try_for_each(|alias| self.process(alias).pid_file().map(drop))
    }
}

/// What a pid file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidFile {
    Running(PidRecord),
    /// A spawn was under way: the child, if it got that far, carries this token.
    Spawning(String),
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
    alias: String,
    desired: PathBuf,
    pid: PathBuf,
}

impl ProcessFiles {
    /// `None` when the operator never asked anything of this process.
    pub fn desired_running(&self) -> Result<Option<bool>, DataDirError> {
        Ok(
            match read_optional(&self.desired)?.as_deref().map(str::trim) {
                Some("running") => Some(true),
                Some("stopped") => Some(false),
                _ => None,
            },
        )
    }

    pub async fn set_desired_running(&self, running: bool) -> Result<(), DataDirError> {
        let text = if running { "running\n" } else { "stopped\n" };
        off_thread(&self.desired, move |path| write_atomic(path, text, true)).await
    }

    /// A pid file that does not parse is treated as absent: there is nothing in it to
    /// act on. One someone else could have written is an error: the caller must not
    /// act on it (see [`DataDir::check_pid_files`]).
    pub fn pid_file(&self) -> Result<Option<PidFile>, DataDirError> {
        Ok(read_trusted(&self.pid, &self.alias)?.and_then(|text| parse_pid_file(&text)))
    }

    pub async fn write_spawning(&self, token: &str) -> Result<(), DataDirError> {
        let text = format!("spawning {token}\n");
        off_thread(&self.pid, move |path| write_atomic(path, &text, false)).await
    }

    pub async fn write_pid(&self, record: PidRecord) -> Result<(), DataDirError> {
        let text = format!("{} {}\n", record.pid, record.start_ticks);
        off_thread(&self.pid, move |path| write_atomic(path, &text, false)).await
    }

    pub async fn remove_pid(&self) -> Result<(), DataDirError> {
        off_thread(&self.pid, remove_if_exists).await
    }
}

/// `cluster`: the id of the controller cluster the agent belongs to, one line.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    path: PathBuf,
}

impl ClusterFile {
    /// The file in the data dir `root`, locked or not: `ocp-agent forget-cluster` works
    /// beside a running agent.
    pub fn in_data_dir(root: &Path) -> ClusterFile {
        ClusterFile {
            path: root.join("cluster"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id written, trimmed; `None` without the file or with an empty one. Blocking.
    pub fn read(&self) -> Result<Option<String>, DataDirError> {
        Ok(read_optional(&self.path)?
            .map(|text| text.trim().to_string())
            .filter(|id| !id.is_empty()))
    }

    /// Durable, like the desired state: a pin lost in a power cut would let another
    /// cluster take the agent.
    pub async fn write(&self, id: &str) -> Result<(), DataDirError> {
        let text = format!("{id}\n");
        off_thread(&self.path, move |path| write_atomic(path, &text, true)).await
    }

    pub async fn remove(&self) -> Result<(), DataDirError> {
        off_thread(&self.path, remove_durably).await
    }

    /// Blocking, for the command line.
    pub fn remove_blocking(&self) -> Result<(), DataDirError> {
        remove_durably(&self.path)
    }
}

/// Removes the file and fsyncs its folder, so that the removal survives a power cut.
fn remove_durably(path: &Path) -> Result<(), DataDirError> {
    remove_if_exists(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir).map_err(io_err(dir)),
        None => Ok(()),
    }
}

/// Runs a file operation on `path` on the blocking pool.
async fn off_thread(
    path: &Path,
    operation: impl FnOnce(&Path) -> Result<(), DataDirError> + Send + 'static,
) -> Result<(), DataDirError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || operation(&owned))
        .await
        .map_err(|error| DataDirError::Unfinished {
            path: path.to_path_buf(),
            error,
        })?
}

fn parse_pid_file(text: &str) -> Option<PidFile> {
    let mut parts = text.split_whitespace();
    match (parts.next()?, parts.next()?) {
        ("spawning", token) => Some(PidFile::Spawning(token.to_string())),
        (pid, start_ticks) => Some(PidFile::Running(PidRecord {
            pid: pid.parse().ok().filter(|&pid| pid > 1)?,
            start_ticks: start_ticks.parse().ok()?,
        })),
    }
}

/// Creates the folder 0700 if it is missing, and refuses it if anyone but the agent's
/// user could put files in it.
pub(crate) fn private_dir(path: &Path) -> Result<(), DataDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))?;
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    match distrust(meta.mode(), meta.uid(), nix::unistd::geteuid().as_raw()) {
        Some(problem) => Err(DataDirError::UntrustedDir {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Checks the file it opened rather than the path, so that it cannot be swapped in
/// between, and does not follow a symlink to someone else's file.
fn read_trusted(path: &Path, alias: &str) -> Result<Option<String>, DataDirError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(DataDirError::UntrustedPidFile {
                path: path.to_path_buf(),
                alias: alias.to_string(),
                problem: Distrust::NotRegular,
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    let problem = if meta.is_file() {
        distrust(meta.mode(), meta.uid(), nix::unistd::geteuid().as_raw())
    } else {
        Some(Distrust::NotRegular)
    };
    if let Some(problem) = problem {
        return Err(DataDirError::UntrustedPidFile {
            path: path.to_path_buf(),
            alias: alias.to_string(),
            problem,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path))?;
    Ok(Some(text))
}

pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, DataDirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), DataDirError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// `durable` asks for fsync of the file and then of its folder, which holds the
/// rename: the operator's wish must survive a power cut, but a pid file need not,
/// since a power cut also ends the process it names.
pub(crate) fn write_atomic(path: &Path, text: &str, durable: bool) -> Result<(), DataDirError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A stale temporary file would keep the mode it was created with.
    remove_if_exists(&tmp)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    if durable {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    match path.parent() {
        Some(dir) if durable => sync_dir(dir).map_err(io_err(dir)),
        _ => Ok(()),
    }
}

/// fsync of a folder: makes the entries created, renamed or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_a_folder_and_says_when_it_cannot() {
        let dir = tempfile::tempdir().expect("tempdir");
        sync_dir(dir.path()).expect("fsync of a folder");
        let missing = sync_dir(&dir.path().join("gone")).expect_err("no such folder");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_durable_write_replaces_the_file_in_a_synced_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.desired");
        write_atomic(&path, "running\n", true).expect("first");
        write_atomic(&path, "stopped\n", true).expect("replaced");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "stopped\n");
        assert!(!dir.path().join("x.desired.tmp").exists());
        let gone = dir.path().join("gone").join("x.desired");
        assert!(matches!(
            off_thread(&gone, |p| write_atomic(p, "running\n", true)).await,
            Err(DataDirError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn round_trips_and_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::open(dir.path()).expect("first lock");
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(DataDirError::Busy { .. })
        ));
        let files = data.process("a");
        assert_eq!(files.desired_running().expect("read"), None);
        files.set_desired_running(false).await.expect("write");
        assert_eq!(files.desired_running().expect("read"), Some(false));
        let record = PidRecord {
            pid: 42,
            start_ticks: 7,
        };
        files.write_pid(record).await.expect("write pid");
        assert_eq!(
            files.pid_file().expect("read pid"),
            Some(PidFile::Running(record))
        );
        files.remove_pid().await.expect("remove");
        files.remove_pid().await.expect("remove twice");
        assert_eq!(files.pid_file().expect("read pid"), None);
        drop(data);
        DataDir::open(dir.path()).expect("lock after release");
    }

    #[test]
    fn only_what_the_agent_could_have_written_itself_is_trusted() {
        assert_eq!(distrust(0o40700, 0, 0), None);
        assert_eq!(distrust(0o100600, 1000, 1000), None);
        assert_eq!(distrust(0o40755, 0, 0), None, "readable is not writable");
        assert_eq!(
            distrust(0o40700, 65534, 0),
            Some(Distrust::NotOurs {
                owner: 65534,
                euid: 0
            }),
            "a root agent must not believe another user's files"
        );
        assert_eq!(
            distrust(0o40700, 0, 1000),
            Some(Distrust::NotOurs {
                owner: 0,
                euid: 1000
            }),
        );
        for mode in [0o40770, 0o40707, 0o41777, 0o100666, 0o100620] {
            assert_eq!(
                distrust(mode, 0, 0),
                Some(Distrust::Writable { mode }),
                "{mode:o}"
            );
        }
        assert_eq!(
            Distrust::Writable { mode: 0o40777 }.to_string(),
            "writable by group and others (mode 0777)"
        );
        assert_eq!(
            Distrust::Writable { mode: 0o100620 }.to_string(),
            "writable by group (mode 0620)"
        );
    }

    #[tokio::test]
    async fn a_pid_file_names_a_process_or_a_spawn_under_way() {
        let running = |pid, start_ticks| Some(PidFile::Running(PidRecord { pid, start_ticks }));
        assert_eq!(parse_pid_file("4242 17\n"), running(4242, 17));
        assert_eq!(
            parse_pid_file("spawning a:1:2:3\n"),
            Some(PidFile::Spawning("a:1:2:3".into()))
        );
        for nothing_to_act_on in ["", "spawning", "42", "x 7", "0 7", "1 7", "-5 7", "42 x"] {
            assert_eq!(
                parse_pid_file(nothing_to_act_on),
                None,
                "{nothing_to_act_on:?}"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::open(dir.path()).expect("open");
        let files = data.process("a");
        files.write_spawning("a:1:2:3").await.expect("write");
        assert_eq!(
            files.pid_file().expect("read"),
            Some(PidFile::Spawning("a:1:2:3".into()))
        );
    }

    #[tokio::test]
    async fn writes_private_files_and_refuses_what_others_could_write() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        let data = DataDir::open(&root).expect("open");
        let files = data.process("a");
        files.set_desired_running(true).await.expect("desired");
        let record = PidRecord {
            pid: 42,
            start_ticks: 7,
        };
        files.write_pid(record).await.expect("pid");
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("processes")), 0o700);
        assert_eq!(mode(&root.join("agent.lock")), 0o600);
        assert_eq!(mode(&root.join("processes/a.pid")), 0o600);
        assert_eq!(mode(&root.join("processes/a.desired")), 0o600);

        let pid_path = root.join("processes/a.pid");
        std::fs::set_permissions(&pid_path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        data.check_pid_files(["b"])
            .expect("only configured aliases");
        assert_eq!(
            data.check_pid_files(["b", "a"])
                .expect_err("refused")
                .to_string(),
            format!(
                "{}: writable by group and others (mode 0666); remove it after checking that no `a` is running, or run `chmod 600 {}`",
                pid_path.display(),
                pid_path.display()
            )
        );
        assert!(matches!(
            files.pid_file(),
            Err(DataDirError::UntrustedPidFile {
                problem: Distrust::Writable { .. },
                ..
            })
        ));
        std::fs::remove_file(&pid_path).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", &pid_path).expect("symlink");
        assert!(matches!(
            files.pid_file(),
            Err(DataDirError::UntrustedPidFile {
                problem: Distrust::NotRegular,
                ..
            })
        ));
        assert!(
            data.check_pid_files(["a"])
                .expect_err("a symlink")
                .to_string()
                .ends_with("not a regular file; remove it after checking that no `a` is running")
        );
        files
            .write_pid(record)
            .await
            .expect("a new pid file replaces the link");
        assert_eq!(
            files.pid_file().expect("trusted again"),
            Some(PidFile::Running(record))
        );
        drop(data);

        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = DataDir::open(&root).err().expect("refused").to_string();
        assert_eq!(
            err,
            format!(
                "{}: writable by group and others (mode 0777); run `chmod 700 {}`",
                root.display(),
                root.display()
            )
        );
    }
}
