//! Starting one configured process: its own process group, its args, env, cwd and
//! user, and stdout and stderr appended to its log file (opened by the child as that
//! user, see [`crate::child_log`]).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, User, geteuid, setgid, setgroups, setuid, write};
use tokio::process::{Child, Command};

use crate::cgroup::ProcessCgroup;
use crate::child_log::{ChildLog, Failed};
use crate::config::ProcessSpec;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no such file: {0}")]
    NoSuchFile(String),
    #[error("no such directory: {0}")]
    NoSuchDir(String),
    #[error("cannot {step} log file {} as {who}: {error}{hint}", path.display())]
    LogFile {
        path: PathBuf,
        step: &'static str,
        /// Whose rights the log was opened with.
        who: String,
        error: io::Error,
        /// What the file or folder in the way is, when that explains the failure.
        hint: String,
    },
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("cannot look up user {user:?}: {error}")]
    UserLookup { user: String, error: nix::Error },
    #[error("cannot run as user {0:?}: the agent is not root")]
    NotRoot(String),
    #[error("cannot join the cgroup {}: {error}", dir.display())]
    Cgroup { dir: PathBuf, error: io::Error },
    #[error("cannot start {command}: {error}")]
    Io { command: String, error: io::Error },
}

/// The environment variable that marks a child with its spawn's token, written to the
/// pid file before the spawn: an agent killed between the spawn and the pid file
/// leaves a child the next run can still find by it (see [`crate::leftovers`]).
pub const SPAWN_ENV: &str = "OCP_AGENT_SPAWN";

/// A token no other spawn on this machine has had: the agent's pid and start time
/// name this agent run for good, and a counter names the spawn within it.
pub fn spawn_token(alias: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static SPAWNS: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        let pid = std::process::id();
        let started = i32::try_from(pid)
            .ok()
            .and_then(crate::procfs::stat)
            .map_or(0, |s| s.start_ticks);
        format!("{pid}.{started}")
    });
    let n = SPAWNS.fetch_add(1, Ordering::Relaxed);
    format!("{alias}:{run}.{n}")
}

/// A started process; it leads its own group, so its pid is also the group id.
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
}

/// Who to become in the child, computed before fork because the child may only
/// make async-signal-safe calls.
pub(crate) struct Identity {
    pub(crate) uid: Uid,
    gid: Gid,
    pub(crate) groups: Vec<libc::gid_t>,
    pub(crate) name: String,
    home: PathBuf,
}

/// `token` goes into the child's environment as [`SPAWN_ENV`]; with a `cgroup` the
/// child joins it before exec, while it is still root.
pub fn spawn(
    spec: &ProcessSpec,
    token: &str,
    cgroup: Option<&ProcessCgroup>,
) -> Result<Spawned, SpawnError> {
    if let Some(cwd) = spec.cwd.as_ref().filter(|c| !c.is_dir()) {
        return Err(SpawnError::NoSuchDir(cwd.display().to_string()));
    }
    if spec.command.contains('/') && !Path::new(&spec.command).exists() {
        return Err(SpawnError::NoSuchFile(spec.command.clone()));
    }
    let identity = identity(spec)?;
    let who = identity.as_ref().map_or_else(
        || "the agent's user".to_string(),
        |id| format!("user {:?}", id.name),
    );
    let log = match &spec.log_file {
        Some(path) => Some(Arc::new(ChildLog::prepare(path).map_err(|error| {
            SpawnError::LogFile {
                path: path.clone(),
                step: "prepare",
                who: who.clone(),
                error,
                hint: String::new(),
            }
        })?)),
        None => None,
    };
    let owner = identity.as_ref().map(|id| (id.uid, id.name.clone()));

    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(id) = &identity {
        cmd.env("USER", &id.name)
            .env("LOGNAME", &id.name)
            .env("HOME", &id.home);
    }
    cmd.envs(&spec.env).env(SPAWN_ENV, token);
    if let Some(files) = cgroup.map(ProcessCgroup::procs_files) {
        // SAFETY: between fork and exec; open, write and close are async-signal-safe
        // and the paths were made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &files {
                    let fd = open(
                        file.as_c_str(),
                        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                    if write(&fd, b"0")? != 1 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                }
                Ok(())
            });
        }
    }
    if let Some(id) = identity {
        let (uid, gid) = (id.uid, id.gid);
        let groups: Vec<Gid> = id.groups.into_iter().map(Gid::from_raw).collect();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                setgroups(&groups)?;
                setgid(gid)?;
                setuid(uid)?;
                Ok(())
            });
        }
    }
    if let Some(log) = log.clone() {
        // SAFETY: registered after the switch of user, so it runs as the process's
        // user; `open_in_child` makes only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || log.open_in_child());
        }
    }
    let child = cmd.spawn().map_err(|error| {
        if let Some((log, failed)) = log.as_ref().and_then(|l| Some((l, l.failure()?))) {
            let (step, hint) = match failed {
                Failed::CreatingFolder => ("create the folder of its", String::new()),
                Failed::Opening => ("open", not_theirs(log.path(), owner.as_ref())),
            };
            return SpawnError::LogFile {
                path: log.path().to_path_buf(),
                step,
                who,
                error,
                hint,
            };
        }
        if let Some(dir) = cgroup.and_then(ProcessCgroup::missing_dir) {
            return SpawnError::Cgroup {
                dir: dir.to_path_buf(),
                error,
            };
        }
        match error.kind() {
            io::ErrorKind::NotFound => SpawnError::NoSuchFile(spec.command.clone()),
            _ => SpawnError::Io {
                command: spec.command.clone(),
                error,
            },
        }
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    Ok(Spawned { child, pid })
}

/// `None` when no switch is needed: no `user`, or the agent already is that user.
pub(crate) fn identity(spec: &ProcessSpec) -> Result<Option<Identity>, SpawnError> {
    let Some(name) = &spec.user else {
        return Ok(None);
    };
    let user = User::from_name(name)
        .map_err(|error| SpawnError::UserLookup {
            user: name.clone(),
            error,
        })?
        .ok_or_else(|| SpawnError::UnknownUser(name.clone()))?;
    let me = geteuid();
    if user.uid == me {
        return Ok(None);
    }
    if !me.is_root() {
        return Err(SpawnError::NotRoot(name.clone()));
    }
    let cname =
        std::ffi::CString::new(name.as_str()).map_err(|_| SpawnError::UnknownUser(name.clone()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(|error| SpawnError::UserLookup {
            user: name.clone(),
            error,
        })?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    Ok(Some(Identity {
        uid: user.uid,
        gid: user.gid,
        groups,
        name: user.name,
        home: user.dir,
    }))
}

/// Why a log the process's user could not open may be in its way: it belongs to
/// someone else (an agent before this version created logs as root). Read as the
/// agent, without following a symlink; it only adds words to the refusal, and advises
/// a chown only for a plain file with no other name, never for what may be another
/// file's hard link.
fn not_theirs(path: &Path, owner: Option<&(Uid, String)>) -> String {
    let Some((uid, name)) = owner else {
        return String::new();
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => " (it is a symlink)".to_string(),
        Ok(meta) if meta.uid() == uid.as_raw() => String::new(),
        Ok(meta) if !meta.is_file() || meta.nlink() > 1 => format!(
            " (it is owned by uid {} and is not a plain file with one name: remove it)",
            meta.uid()
        ),
        Ok(meta) => format!(
            " (it is owned by uid {}, not by {name:?}: give it to that user, e.g. chown {name} {})",
            meta.uid(),
            path.display()
        ),
        Err(_) => String::new(),
    }
}

/// [`spawn`] on the blocking pool: before the fork it looks the user up (NSS may ask
/// a directory server) and looks at the log's folders, either of which may wait on a
/// slow disk or network.
pub async fn spawn_async(
    spec: Arc<ProcessSpec>,
    token: String,
    cgroup: Option<Arc<ProcessCgroup>>,
) -> Result<Spawned, SpawnError> {
    let command = spec.command.clone();
    tokio::task::spawn_blocking(move || spawn(&spec, &token, cgroup.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(SpawnError::Io {
                command,
                error: io::Error::other(e),
            })
        })
}
