//! Replacing the agent's binary under its processes, as systemd's `daemon-reexec`
//! replaces PID 1: this process `exec`s the new binary, so it keeps its pid, and the
//! processes it supervises stay its children, untouched. The listening socket is
//! handed across the `exec` (Envoy's and tableflip's way): connections that arrive
//! meanwhile wait in its backlog rather than being refused. The new image learns what
//! it was handed from two environment variables, which it takes out of its
//! environment before anything else runs, so that no supervised process inherits
//! them.
//!
//! Before that, the new binary runs once as a self-check (`ocp-agent self-check`): it
//! must start, read this agent's config and print its version, or the switch is
//! refused and nothing changes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The listening socket's descriptor number, when the agent was handed one.
pub const LISTEN_FD_ENV: &str = "OCP_AGENT_LISTEN_FD";
/// The version this binary runs as, when the agent itself started it.
pub const VERSION_ENV: &str = "OCP_AGENT_VERSION";
/// What a self-check prints first, followed by the binary's own version.
pub const SELF_CHECK_BANNER: &str = "ocp-agent ";
/// Starting and reading a config takes milliseconds; a binary that takes this long is
/// stuck, or is not an agent.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// What the image before this one handed over; empty on a cold start.
#[derive(Debug, Default)]
pub struct Inherited {
    pub listener: Option<std::net::TcpListener>,
    pub version: Option<String>,
}

impl Inherited {
    /// Reads the handover's variables and removes them from the environment.
    ///
    /// # Safety
    /// Call it while the process has one thread, before any runtime starts: changing
    /// the environment races with any other thread reading it.
    pub unsafe fn take_from_env() -> Inherited {
        let listener = std::env::var(LISTEN_FD_ENV)
            .ok()
            .and_then(|fd| fd.parse::<RawFd>().ok())
            .filter(|&fd| fd > 2 && is_listening_socket(fd))
            .map(|fd| {
                // SAFETY: the descriptor was checked to be an open listening socket that
                // this process's earlier image left open for it; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(&owned, true);
                std::net::TcpListener::from(owned)
            });
        let version = std::env::var(VERSION_ENV).ok().filter(|v| !v.is_empty());
        // SAFETY: the caller guarantees a single thread.
        unsafe {
            std::env::remove_var(LISTEN_FD_ENV);
            std::env::remove_var(VERSION_ENV);
        }
        Inherited { listener, version }
    }
}

fn is_listening_socket(fd: RawFd) -> bool {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &mut len,
        )
    };
    got == 0 && accepting == 1
}

fn set_cloexec(fd: &OwnedFd, on: bool) {
    // SAFETY: F_GETFD and F_SETFD only read and set the descriptor's flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags);
        }
    }
}

/// The binary to become, and the version it runs as.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub binary: PathBuf,
    pub version: String,
}

/// Becomes `plan`'s binary with this process's arguments, handing over `listener`;
/// returns only when the `exec` failed.
pub fn exec(plan: &ExecPlan, listener: Option<&OwnedFd>) -> io::Error {
    let mut command = std::process::Command::new(&plan.binary);
    command
        .args(std::env::args_os().skip(1))
        .env(VERSION_ENV, &plan.version);
    if let Some(fd) = listener {
        // Every other descriptor closes on exec, as Rust opens them all.
        set_cloexec(fd, false);
        command.env(LISTEN_FD_ENV, fd.as_raw_fd().to_string());
    }
    let error = command.exec();
    if let Some(fd) = listener {
        set_cloexec(fd, true);
    }
    error
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelfCheckError {
    #[error("the new agent could not be run: {0}")]
    NotRun(String),
    #[error("the new agent exited with status {code}: {said}")]
    Exited { code: i32, said: String },
    #[error("the new agent was killed by signal {signal}: {said}")]
    Killed { signal: i32, said: String },
    #[error("the new agent did not finish its self-check within {}s", SELF_CHECK_TIMEOUT.as_secs())]
    Hung,
    #[error(
        "the new agent exited 0 but printed no version (\"{SELF_CHECK_BANNER}<version>\"): {0:?}"
    )]
    NoVersion(String),
}

/// Runs `binary self-check --config <config>`; answers the version line it printed.
pub async fn self_check(binary: &Path, config: &Path) -> Result<String, SelfCheckError> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let child = tokio::process::Command::new(binary)
        .arg("self-check")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SelfCheckError::NotRun(e.to_string()))?;
    let output = tokio::time::timeout(SELF_CHECK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SelfCheckError::Hung)?
        .map_err(|e| SelfCheckError::NotRun(e.to_string()))?;
    let said = said(&output.stderr, &output.stdout);
    if let Some(signal) = output.status.signal() {
        return Err(SelfCheckError::Killed { signal, said });
    }
    match output.status.code() {
        Some(0) => {}
        code => {
            return Err(SelfCheckError::Exited {
                code: code.unwrap_or(-1),
                said,
            });
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next().unwrap_or("").trim().to_string();
    if line.starts_with(SELF_CHECK_BANNER) {
        Ok(line)
    } else {
        Err(SelfCheckError::NoVersion(line))
    }
}

/// The last lines the binary wrote, preferring its errors, short enough for a step log.
fn said(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    if text.is_empty() {
        return "it printed nothing".to_string();
    }
    let tail: String = text.chars().rev().take(500).collect();
    tail.chars().rev().collect::<String>().replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_binary_that_exits_1_fails_the_self_check_naming_its_status() {
        let got = self_check(Path::new("/bin/false"), Path::new("agent.toml")).await;
        assert_eq!(
            got,
            Err(SelfCheckError::Exited {
                code: 1,
                said: "it printed nothing".into()
            })
        );
        assert_eq!(
            got.unwrap_err().to_string(),
            "the new agent exited with status 1: it printed nothing"
        );
    }

    #[tokio::test]
    async fn a_binary_that_prints_no_version_fails_the_self_check() {
        let got = self_check(Path::new("/bin/true"), Path::new("agent.toml")).await;
        assert_eq!(got, Err(SelfCheckError::NoVersion(String::new())));
    }

    #[test]
    fn what_a_failed_binary_said_is_its_last_500_characters_on_one_line() {
        assert_eq!(said(b"", b"hello\nworld\n"), "hello | world");
        assert_eq!(said(b"bad config\n", b"ignored"), "bad config");
        let long = "x".repeat(600);
        assert_eq!(said(long.as_bytes(), b"").len(), 500);
    }
}
