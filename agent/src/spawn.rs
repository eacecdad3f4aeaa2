//! Starting one configured process: its own process group, its args, env, cwd and
//! user, stdout and stderr appended to its log file, and its pid file written by the
//! child itself before it runs the program.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User, geteuid};
use tokio::process::{Child, Command};

use crate::config::ProcessSpec;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no such file: {0}")]
    NoSuchFile(String),
    #[error("no such directory: {0}")]
    NoSuchDir(String),
    #[error("cannot open log file {path}: {source}")]
    LogFile { path: PathBuf, source: io::Error },
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("cannot look up user {user:?}: {source}")]
    UserLookup { user: String, source: nix::Error },
    #[error("cannot run as user {0:?}: the agent is not root")]
    NotRoot(String),
    #[error("cannot start {command}: {source}")]
    Io { command: String, source: io::Error },
}

/// A started process; it leads its own group, so its pid is also the group id.
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
}

/// The pid file as the child writes it between fork and exec, so that no process of
/// ours ever runs without one: an agent killed right after a fork leaves a leftover
/// that its next run finds (`reconcile`). The supervisor writes the same line again
/// once the spawn returned; both land by rename, so a reader sees a whole line.
struct OwnPidFile {
    tmp: CString,
    path: CString,
}

impl OwnPidFile {
    fn new(path: &Path) -> Option<OwnPidFile> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".child");
        Some(OwnPidFile {
            tmp: CString::new(tmp.as_bytes()).ok()?,
            path: CString::new(path.as_os_str().as_bytes()).ok()?,
        })
    }

    /// In the child, which may only make async-signal-safe calls: system calls on
    /// buffers of its stack, no allocation, no lock. Best effort: the supervisor's own
    /// write follows.
    fn write(&self) {
        let mut stat = [0u8; 1024];
        let mut line = [0u8; PID_LINE];
        // SAFETY: system calls on valid, NUL-terminated paths and on stack buffers
        // whose lengths are passed along.
        unsafe {
            let fd = libc::open(
                c"/proc/self/stat".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return;
            }
            let read = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
            libc::close(fd);
            let Ok(read) = usize::try_from(read) else {
                return;
            };
            let Some(len) = pid_line(libc::getpid(), &stat[..read], &mut line) else {
                return;
            };
            let out = libc::open(
                self.tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            );
            if out < 0 {
                return;
            }
            let written = libc::write(out, line.as_ptr().cast(), len);
            libc::close(out);
            if usize::try_from(written) == Ok(len) {
                libc::rename(self.tmp.as_ptr(), self.path.as_ptr());
            }
        }
    }
}

const PID_LINE: usize = 48;

/// `<pid> <start ticks>\n`, the pid file's line, from the text of `/proc/self/stat`,
/// into `out`, without allocating. The command name may hold spaces and parentheses,
/// so fields are counted from the last `)`, as `procfs::stat` does.
fn pid_line(pid: i32, stat: &[u8], out: &mut [u8; PID_LINE]) -> Option<usize> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let ticks = stat[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|field| !field.is_empty())
        .nth(19)?;
    if !ticks.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut pid = u32::try_from(pid).ok()?;
    let mut digits = [0u8; 10];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (pid % 10) as u8;
        count += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let len = count + 1 + ticks.len() + 1;
    if len > out.len() {
        return None;
    }
    for (slot, digit) in out.iter_mut().zip(digits[..count].iter().rev()) {
        *slot = *digit;
    }
    out[count] = b' ';
    out[count + 1..len - 1].copy_from_slice(ticks);
    out[len - 1] = b'\n';
    Some(len)
}

/// Who to become in the child, computed before fork because the child may only
/// make async-signal-safe calls.
struct Identity {
    uid: Uid,
    gid: Gid,
    groups: Vec<libc::gid_t>,
    name: String,
    home: PathBuf,
}

/// `pid_file` is where the supervisor records the process (`<pid> <start ticks>`).
pub fn spawn(spec: &ProcessSpec, pid_file: &Path) -> Result<Spawned, SpawnError> {
    if let Some(cwd) = spec.cwd.as_ref().filter(|c| !c.is_dir()) {
        return Err(SpawnError::NoSuchDir(cwd.display().to_string()));
    }
    if spec.command.contains('/') && !Path::new(&spec.command).exists() {
        return Err(SpawnError::NoSuchFile(spec.command.clone()));
    }
    let identity = identity(spec)?;
    let (stdout, stderr) = output(spec)?;

    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
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
    cmd.envs(&spec.env);
    if let Some(own) = OwnPidFile::new(pid_file) {
        // SAFETY: the closure runs between fork and exec and only makes system calls
        // on memory prepared before the fork or on its own stack (see `write`).
        unsafe {
            cmd.pre_exec(move || {
                own.write();
                Ok(())
            });
        }
    }
    if let Some(id) = identity {
        let (uid, gid, groups) = (id.uid, id.gid, id.groups);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid.as_raw()) != 0
                    || libc::setuid(uid.as_raw()) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SpawnError::NoSuchFile(spec.command.clone()),
        _ => SpawnError::Io {
            command: spec.command.clone(),
            source,
        },
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    Ok(Spawned { child, pid })
}

/// `None` when no switch is needed: no `user`, or the agent already is that user.
fn identity(spec: &ProcessSpec) -> Result<Option<Identity>, SpawnError> {
    let Some(name) = &spec.user else {
        return Ok(None);
    };
    let user = User::from_name(name)
        .map_err(|source| SpawnError::UserLookup {
            user: name.clone(),
            source,
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
        .map_err(|source| SpawnError::UserLookup {
            user: name.clone(),
            source,
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

fn output(spec: &ProcessSpec) -> Result<(Stdio, Stdio), SpawnError> {
    let Some(path) = &spec.log_file else {
        return Ok((Stdio::null(), Stdio::null()));
    };
    let log_err = |source| SpawnError::LogFile {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(log_err)?;
    let copy = file.try_clone().map_err(log_err)?;
    Ok((Stdio::from(file), Stdio::from(copy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_pid_line_is_the_supervisors() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2 3\n";
        let mut out = [0u8; PID_LINE];
        let len = pid_line(4242, stat.as_bytes(), &mut out).expect("a line");
        let parsed = crate::procfs::parse_stat(stat).expect("stat");
        assert_eq!(
            std::str::from_utf8(&out[..len]).expect("utf-8"),
            format!("4242 {}\n", parsed.start_ticks)
        );
        assert_eq!(pid_line(1, b"no paren", &mut out), None);
        assert_eq!(pid_line(1, b"1 (x) S 1", &mut out), None);
    }
}
