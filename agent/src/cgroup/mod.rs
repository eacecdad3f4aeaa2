//! Each limited process's own cgroup under the agent's (docs/agent.md#limits): made and
//! limited before its spawn, joined by the child before exec, read for usage and for
//! OOM kills, and removed once the process is gone.
//!
//! Only processes with `cpu_quota` or `memory_limit` get one: a cgroup makes every
//! spawn fork without `posix_spawn` and write a handful of files, which the
//! single-process restart figure would pay for nothing. Everything here is blocking
//! file I/O on cgroupfs, so callers run it on the blocking pool.

mod layout;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use layout::Layout;

use crate::limits::{self, Limits};

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {error}", path.display())]
pub struct CgroupError {
    action: &'static str,
    path: PathBuf,
    error: io::Error,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |error| CgroupError {
        action,
        path,
        error,
    }
}

/// The agent's cgroups, found and checked writable at start.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    /// Names this agent's children apart from another agent's under the same cgroup
    /// (tests run many agents in one process); stable across restarts of one agent.
    instance: String,
}

impl Cgroups {
    /// Finds where the agent may make cgroups; the error is the one line the agent logs
    /// before it runs without limits.
    pub fn discover(data_dir: &Path) -> Result<Cgroups, String> {
        let read = |p: &str| fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
        let layout = layout::locate(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
            |dir| fs::read_to_string(dir.join("cgroup.controllers")).ok(),
        )?;
        let layout = match layout {
            Layout::V2 { own } => {
                // Already in the leaf (an earlier run moved there, or systemd's
                // `DelegateSubgroup=ocp-agent` put it there): the cgroup above is the agent's.
                let own = match own.parent() {
                    Some(parent) if own.file_name() == Some(LEAF.as_ref()) => parent.to_path_buf(),
                    _ => own,
                };
                delegate(&own)?;
                Layout::V2 { own }
            }
            v1 => v1,
        };
        let cgroups = Cgroups {
            layout,
            instance: instance_of(data_dir),
        };
        let probe = cgroups.process(&format!(".probe{}", std::process::id()), Limits::default());
        for dir in &probe.dirs {
            fs::create_dir(dir)
                .and_then(|()| fs::remove_dir(dir))
                .map_err(|e| format!("cannot make a cgroup under {}: {e}", parent(dir)))?;
        }
        Ok(cgroups)
    }

    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V2 { .. } => "v2",
            Layout::V1 { .. } => "v1",
        }
    }

    pub fn process(&self, alias: &str, limits: Limits) -> ProcessCgroup {
        let name = format!("{alias}@{}", self.instance);
        match &self.layout {
            Layout::V2 { own } => ProcessCgroup {
                v2: true,
                dirs: vec![own.join(&name)],
                cpuacct: None,
                limits,
            },
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
            } => {
                let cpuacct = cpuacct.as_ref().map(|d| d.join(&name));
                let mut dirs = vec![memory.join(&name), cpu.join(&name)];
                if let Some(acct) = cpuacct.as_ref().filter(|d| !dirs.contains(d)) {
                    dirs.push(acct.clone());
                }
                ProcessCgroup {
                    v2: false,
                    dirs,
                    cpuacct,
                    limits,
                }
            }
        }
    }
}

fn parent(dir: &Path) -> String {
    dir.parent().unwrap_or(dir).display().to_string()
}

/// The agent's own leaf on cgroup v2.
const LEAF: &str = "ocp-agent";

/// cgroup v2 lets a cgroup hand controllers to its children only while it holds no
/// process itself, so the agent first moves into a leaf of its own (as a systemd
/// service with `Delegate=yes` must).
fn delegate(own: &Path) -> Result<(), String> {
    let control = own.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    let on = |c: &str| enabled.split_whitespace().any(|e| e == c);
    if on("memory") && on("cpu") {
        return Ok(());
    }
    let enable = || fs::write(&control, "+memory +cpu");
    match enable() {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {
            return Err(format!("cannot write {}: {e}", control.display()));
        }
        Err(_) => {}
    }
    let leaf = own.join(LEAF);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make {}: {e}", leaf.display())),
    }
    fs::write(leaf.join("cgroup.procs"), "0")
        .map_err(|e| format!("cannot move the agent into {}: {e}", leaf.display()))?;
    enable().map_err(|e| {
        format!(
            "cannot write {}: {e}; other processes share the agent's cgroup {}: run it in a cgroup of its own (systemd: Delegate=yes)",
            control.display(),
            own.display()
        )
    })
}

/// FNV-1a of the data directory, which one agent at a time holds (its lock).
fn instance_of(data_dir: &Path) -> String {
    let path = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = path
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:08x}", hash >> 32)
}

/// Kernels before 4.13 (CentOS 7's 3.10) count no OOM kills on v1, only how often
/// the limit was hit; a SIGKILL after such hits is the OOM killer's all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomCount {
    Kills(u64),
    LimitHits(u64),
}

impl OomCount {
    /// Whether the exit since `before` was the memory limit's doing.
    pub fn killed_since(self, before: OomCount, sigkill: bool) -> bool {
        match (self, before) {
            (OomCount::Kills(now), OomCount::Kills(then)) => now > then,
            (OomCount::LimitHits(now), OomCount::LimitHits(then)) => sigkill && now > then,
            _ => false,
        }
    }
}

/// What a process's cgroup has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub cpu_usec: u64,
}

/// One process's cgroup: a directory on v2, one per hierarchy on v1.
#[derive(Debug)]
pub struct ProcessCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
    cpuacct: Option<PathBuf>,
    pub limits: Limits,
}

impl ProcessCgroup {
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    fn cpu_dir(&self) -> &Path {
        self.dirs.get(1).unwrap_or(&self.dirs[0])
    }

    /// Makes the cgroup (or takes over one an earlier run left) and writes the limits;
    /// answers what the kernel already counted, so that only new counts name an exit.
    pub fn prepare(&self) -> Result<OomCount, CgroupError> {
        for dir in &self.dirs {
            match fs::create_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_err("make", dir)(e));
                }
                _ => {}
            }
        }
        let memory = self.limits.memory_limit.map(|m| m.0);
        if self.v2 {
            let max = memory.map_or("max".to_string(), |b| b.to_string());
            self.write(self.memory_dir(), "memory.max", &max)?;
            // Swap would let a process over its limit slow down instead of stopping.
            self.write_if_present(
                "memory.swap.max",
                if memory.is_some() { "0" } else { "max" },
            )?;
            self.write_if_present("memory.oom.group", "1")?;
            self.write(
                self.cpu_dir(),
                "cpu.max",
                &limits::cpu_max(self.limits.cpu_quota),
            )?;
        } else {
            let bytes = memory.map_or("-1".to_string(), |b| b.to_string());
            // memsw may never be below the limit: lift it, set the limit, then lower it.
            let memsw = self.memory_dir().join("memory.memsw.limit_in_bytes");
            let has_memsw = memsw.exists();
            if has_memsw {
                self.write(self.memory_dir(), "memory.memsw.limit_in_bytes", "-1")?;
            }
            self.write(self.memory_dir(), "memory.limit_in_bytes", &bytes)?;
            if has_memsw {
                self.write(self.memory_dir(), "memory.memsw.limit_in_bytes", &bytes)?;
            }
            // Without swap accounting (Debian's default) memsw is absent: keep the
            // cgroup's pages out of swap all the same, or the limit would stretch.
            if memory.is_some() {
                self.write_if_present("memory.swappiness", "0")?;
            }
            let quota = self
                .limits
                .cpu_quota
                .map_or("-1".to_string(), |q| limits::cpu_quota_us(q).to_string());
            self.write(
                self.cpu_dir(),
                "cpu.cfs_period_us",
                &limits::CPU_PERIOD_US.to_string(),
            )?;
            self.write(self.cpu_dir(), "cpu.cfs_quota_us", &quota)?;
        }
        Ok(self.oom_count())
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = dir.join(file);
        fs::write(&path, value).map_err(io_err("write", &path))
    }

    /// For files older kernels or swapless hosts do not have.
    fn write_if_present(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        match self.write(self.memory_dir(), file, value) {
            Err(e) if e.error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The `cgroup.procs` files a child writes "0" to, between fork and exec, so that
    /// it runs its first instruction already limited.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// What the kernel has counted against the memory limit since the cgroup was made.
    pub fn oom_count(&self) -> OomCount {
        let read = |file: &str| fs::read_to_string(self.memory_dir().join(file)).ok();
        if self.v2 {
            return OomCount::Kills(
                read("memory.events")
                    .and_then(|t| keyed(&t, "oom_kill"))
                    .unwrap_or(0),
            );
        }
        match read("memory.oom_control").and_then(|t| keyed(&t, "oom_kill")) {
            Some(kills) => OomCount::Kills(kills),
            None => OomCount::LimitHits(
                read("memory.failcnt")
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0),
            ),
        }
    }

    pub fn usage(&self) -> Usage {
        let read = |dir: &Path, file: &str| fs::read_to_string(dir.join(file)).ok();
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse().ok());
        if self.v2 {
            Usage {
                memory_bytes: number(read(self.memory_dir(), "memory.current")).unwrap_or(0),
                cpu_usec: read(self.cpu_dir(), "cpu.stat")
                    .and_then(|t| keyed(&t, "usage_usec"))
                    .unwrap_or(0),
            }
        } else {
            Usage {
                memory_bytes: number(read(self.memory_dir(), "memory.usage_in_bytes")).unwrap_or(0),
                cpu_usec: self
                    .cpuacct
                    .as_deref()
                    .and_then(|d| number(read(d, "cpuacct.usage")))
                    .map_or(0, |ns: u64| ns / 1000),
            }
        }
    }

    /// Stops what is left in the cgroup (a daemon that left the process group is still
    /// in it) as the process itself is stopped: `stop_signal`, `stop_timeout`, then
    /// SIGKILL; and removes the cgroup.
    pub fn remove(&self, stop_signal: i32, stop_timeout: Duration) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            if !members(dir).is_empty() {
                signal_members(dir, stop_signal);
                wait_empty(dir, stop_timeout);
            }
            // Killing again until none is left catches a member that forked meanwhile.
            while !members(dir).is_empty() && !wait_empty(dir, KILL_WAIT) {
                if fs::write(dir.join("cgroup.kill"), "1").is_err() {
                    signal_members(dir, libc::SIGKILL);
                }
            }
            remove_dir(dir)?;
        }
        Ok(())
    }

    /// The directory a spawn could not join, if one has gone.
    pub fn missing_dir(&self) -> Option<&Path> {
        self.dirs.iter().find(|d| !d.is_dir()).map(PathBuf::as_path)
    }
}

/// How long a SIGKILLed member may take to leave, per round; a large process
/// takes a while to release its memory.
const KILL_WAIT: Duration = Duration::from_secs(1);
/// How long an emptied cgroup may stay busy while the kernel finishes the exits.
const REMOVE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn signal_members(dir: &Path, signal: i32) {
    let Ok(signal) = Signal::try_from(signal) else {
        return;
    };
    for pid in members(dir) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Whether the cgroup emptied within `wait`.
fn wait_empty(dir: &Path, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if members(dir).is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A killed process leaves its cgroup only once the kernel has finished its exit,
/// which may be a moment after the parent reaped it.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let deadline = std::time::Instant::now() + REMOVE_WAIT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(io_err("remove", dir)(e)),
        }
    }
}

/// The value of `key` in a cgroup file of "key value" lines.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_reads_the_exact_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(keyed(events, "oom_kill"), Some(2));
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n", "oom_kill"),
            Some(5)
        );
        assert_eq!(
            keyed("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
        assert_eq!(keyed("", "oom_kill"), None);
    }

    #[test]
    fn an_exit_is_the_limits_doing_only_when_the_kernel_counted_it() {
        use OomCount::*;
        assert!(Kills(2).killed_since(Kills(1), false));
        assert!(!Kills(1).killed_since(Kills(1), true));
        assert!(LimitHits(9).killed_since(LimitHits(3), true));
        assert!(
            !LimitHits(9).killed_since(LimitHits(3), false),
            "it exited by itself"
        );
        assert!(!Kills(5).killed_since(LimitHits(0), true));
    }

    #[test]
    fn each_agent_names_its_children_apart_and_the_same_across_restarts() {
        let a = instance_of(Path::new("/nonexistent/agent-a"));
        assert_eq!(a, instance_of(Path::new("/nonexistent/agent-a")));
        assert_ne!(a, instance_of(Path::new("/nonexistent/agent-b")));
        assert_eq!(a.len(), 8);
    }

    #[test]
    fn v1_gives_each_hierarchy_its_own_directory_once() {
        let together = Cgroups {
            layout: Layout::V1 {
                memory: "/m".into(),
                cpu: "/c".into(),
                cpuacct: Some("/c".into()),
            },
            instance: "0000beef".into(),
        };
        let p = together.process("ob", Limits::default());
        assert_eq!(
            p.dirs(),
            [
                PathBuf::from("/m/ob@0000beef"),
                PathBuf::from("/c/ob@0000beef")
            ]
        );
        assert_eq!(p.cpuacct.as_deref(), Some(Path::new("/c/ob@0000beef")));
        let v2 = Cgroups {
            layout: Layout::V2 { own: "/u".into() },
            instance: "0000beef".into(),
        };
        assert_eq!(
            v2.process("ob", Limits::default()).dirs(),
            [PathBuf::from("/u/ob@0000beef")]
        );
    }
}
