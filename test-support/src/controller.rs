//! One `ocp-controller` process started as an operator starts it: a data dir, REST and
//! gRPC on free ports, its output in a log file; and waiting until it serves.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{WAIT, free_port, procs};

/// How to start one controller: kept whole, so that a crashed one starts again alike.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The wrapper's words, if any, then the binary.
    program: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// Variables removed from what the test's own environment passes on.
    unset: Vec<OsString>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    max_open_files: Option<u64>,
    umask: Option<u32>,
    /// The CA both faces' certificate chains to, when they serve TLS.
    ca: Option<PathBuf>,
    /// The uid and gid it runs as, when not the test's.
    user: Option<(u32, u32)>,
}

impl Launch {
    /// `bin` on 127.0.0.1 ports free now, keeping its store in `data_dir` and writing
    /// stdout and stderr to `log`, at `RUST_LOG=warn` without colours.
    pub fn new(bin: impl AsRef<OsStr>, data_dir: &Path, log: &Path) -> Launch {
        let local = |port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        Launch {
            program: vec![bin.as_ref().to_os_string()],
            args: Vec::new(),
            envs: vec![
                ("RUST_LOG".into(), "warn".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            unset: Vec::new(),
            http: local(free_port()),
            grpc: local(free_port()),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            max_open_files: None,
            umask: None,
            ca: None,
            user: None,
        }
    }

    /// On these addresses instead of free loopback ports.
    pub fn at(mut self, http: SocketAddr, grpc: SocketAddr) -> Launch {
        self.http = http;
        self.grpc = grpc;
        self
    }

    /// Run through `wrapper` (a program and its arguments, e.g. `env LD_PRELOAD=...`),
    /// which must exec the controller so that signals reach it.
    pub fn wrapped(mut self, wrapper: &str) -> Launch {
        let mut words: Vec<OsString> = wrapper.split_whitespace().map(OsString::from).collect();
        words.append(&mut self.program);
        self.program = words;
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        let key = key.as_ref().to_os_string();
        self.envs.retain(|(k, _)| *k != key);
        self.unset.retain(|k| *k != key);
        self.envs.push((key, value.as_ref().to_os_string()));
        self
    }

    /// What it logs: a `RUST_LOG` value.
    pub fn log_filter(self, filter: &str) -> Launch {
        self.env("RUST_LOG", filter)
    }

    /// Logging as a service unit leaves it: neither `RUST_LOG` nor `NO_COLOR`, here or
    /// in the test's environment, so that the binary alone decides what it writes.
    pub fn default_logging(mut self) -> Launch {
        for key in ["RUST_LOG", "NO_COLOR"] {
            self.envs.retain(|(k, _)| k != key);
            self.unset.push(key.into());
        }
        self
    }

    /// `--users path`: no bootstrap admin, the users of the file instead.
    pub fn users(self, path: &Path) -> Launch {
        self.arg("--users").arg(path)
    }

    /// Both faces serve TLS with `cert` and `key`, which chain to `ca`.
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Launch {
        self.ca = Some(ca.to_path_buf());
        self.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key)
    }

    /// At most `limit` open descriptors (RLIMIT_NOFILE), as a tight systemd unit sets.
    pub fn max_open_files(mut self, limit: u64) -> Launch {
        self.max_open_files = Some(limit);
        self
    }

    /// Started under `mask` instead of the test's umask.
    pub fn umask(mut self, mask: u32) -> Launch {
        self.umask = Some(mask);
        self
    }

    /// Run as `uid` and `gid` (no supplementary groups), as a service user: the test
    /// must be root.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Launch {
        self.user = Some((uid, gid));
        self
    }

    /// Whether it was given a users file, and so has no bootstrap admin.
    pub fn has_users_file(&self) -> bool {
        self.args.iter().any(|a| a == "--users")
    }

    /// The command, not started; its output appends to the log.
    pub fn command(&self) -> std::io::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .args(["--http-addr", &self.http.to_string()])
            .args(["--grpc-addr", &self.grpc.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for key in &self.unset {
            command.env_remove(key);
        }
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let (limit, mask) = (self.max_open_files, self.umask);
        if limit.is_some() || mask.is_some() {
            use nix::sys::resource::{Resource, setrlimit};
            use nix::sys::stat::{Mode, umask};
            use std::os::unix::process::CommandExt;
            // SAFETY: only umask(2) and setrlimit(2), async-signal-safe, run between
            // fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if let Some(mask) = mask {
                        umask(Mode::from_bits_truncate(mask));
                    }
                    if let Some(limit) = limit {
                        setrlimit(Resource::RLIMIT_NOFILE, limit, limit)?;
                    }
                    Ok(())
                });
            }
        }
        Ok(command)
    }

    /// Starts it; does not wait for it to serve.
    pub fn spawn(self) -> std::io::Result<Launched> {
        let child = self.command()?.spawn()?;
        Ok(Launched {
            pid: child.id(),
            child: Some(child),
            launch: self,
        })
    }

    /// Starts it and waits until both faces serve; panics with its log if it does not.
    pub async fn start(self) -> Launched {
        let mut launched = self.spawn().expect("spawn ocp-controller");
        launched.wait_serving().await;
        launched
    }
}

/// Why a controller did not come to listen.
#[derive(Debug)]
pub enum NotServing {
    Exited(ExitStatus),
    TimedOut(Duration),
}

/// A started controller; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Launched {
    launch: Launch,
    child: Option<Child>,
    pid: u32,
}

impl Launched {
    pub fn http(&self) -> SocketAddr {
        self.launch.http
    }

    pub fn grpc(&self) -> SocketAddr {
        self.launch.grpc
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://addr`, or `https://addr` when it serves TLS.
    pub fn base_url(&self) -> String {
        let scheme = if self.launch.ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.launch.http)
    }

    /// The password of the bootstrap admin, once the controller has written it.
    pub fn admin_password(&self) -> Option<String> {
        std::fs::read_to_string(self.launch.data_dir.join("admin-password"))
            .ok()
            .map(|p| p.trim().to_string())
    }

    /// Its log, ANSI colours removed.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.launch.log).unwrap_or_default())
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its exit status, once it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit().is_none()
    }

    /// Blocks until both ports accept connections (the controller binds them once its
    /// recovery is done) or it exits, for at most `limit`.
    pub fn wait_listening(&mut self, limit: Duration) -> Result<(), NotServing> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(NotServing::Exited(status));
            }
            let accepts =
                |addr| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            if accepts(self.launch.http) && accepts(self.launch.grpc) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NotServing::TimedOut(limit));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until REST answers `GET /api/v2/openapi.json` (over TLS, trusting the CA,
    /// when it serves TLS) and gRPC accepts connections, and, without a users file,
    /// until the admin's password is written; panics with the log if it exits first.
    pub async fn wait_serving(&mut self) {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(ca) = &self.launch.ca {
            let pem = std::fs::read(ca).expect("read the CA certificate");
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA pem"));
        }
        let client = client.build().expect("HTTP client");
        let url = format!("{}/api/v2/openapi.json", self.base_url());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let password = self.launch.has_users_file() || self.admin_password().is_some();
            let rest = password
                && client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if rest
                && tokio::net::TcpStream::connect(self.launch.grpc)
                    .await
                    .is_ok()
            {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "ocp-controller {} exited with {status}:\n{}",
                    self.pid,
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ocp-controller {} never served:\n{}",
                self.pid,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap, as a crash or the OOM killer would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then the same command again on the same data and addresses, and waits
    /// until it serves.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        let child = self.launch.command().and_then(|mut c| c.spawn());
        let child = child.expect("spawn ocp-controller again");
        self.pid = child.id();
        self.child = Some(child);
        self.wait_serving().await;
    }

    /// Sends `signal`; the controller must not have been reaped yet.
    pub fn signal(&self, signal: Signal) {
        assert!(self.child.is_some(), "controller {} is gone", self.pid);
        assert!(procs::signal(self.pid, signal), "{signal} to {}", self.pid);
    }

    /// SIGSTOP: the process is frozen, its sockets stay open, its timers stand still.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM without waiting.
    pub fn terminate(&self) {
        if self.child.is_some() {
            procs::signal(self.pid, Signal::SIGTERM);
        }
    }

    /// SIGTERM, then waits up to `limit` for it to finish shutting down (SIGKILL after
    /// that); its exit status, if it exited by itself.
    pub fn stop_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.terminate();
        let mut child = self.child.take()?;
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// SIGTERM, and waits for a clean shutdown; panics if it takes longer than [`WAIT`].
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.stop_within(WAIT);
        status.unwrap_or_else(|| panic!("controller {} did not stop:\n{}", self.pid, self.log()))
    }

    /// CPU time it has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        procs::cpu_time(self.pid).expect("the controller's /proc stat")
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Without the colour codes tracing writes when it thinks it talks to a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
