//! Processes as `/proc` shows them: whether a pid lives, its group, its CPU time, and
//! finding a test's processes among the machine's.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, SysconfVar, sysconf};

/// The fields of `/proc/<pid>/stat` the tests read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// R, S, D, T, Z, X...
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// User and system time, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: with the pid, it names one process for good.
    pub start_ticks: u64,
}

/// The stat of `pid`, if it is in `/proc`.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The command name may hold spaces and parentheses: the fields start after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(number(1)?).ok()?,
        pgrp: u32::try_from(number(2)?).ok()?,
        cpu_ticks: number(11)? + number(12)?,
        start_ticks: number(19)?,
    })
}

/// Alive means present in `/proc` and not a zombie: a zombie has died and only waits
/// for a parent (maybe a non-reaping init) to collect it, its sockets already closed.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// CPU time `pid` has used so far (user + system).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let ticks = stat(pid)?.cpu_ticks;
    let per_second = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Living children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.ppid == parent && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

/// Living members of a process group.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        })
        .collect()
}

/// Living processes whose command line holds `tag` as one argument.
pub fn tagged(tag: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|arg| arg == tag.as_bytes()))
                .unwrap_or(false)
                && alive(pid)
        })
        .collect()
}

/// A tag unique to one test, to count its processes in the whole machine.
pub fn unique_tag(name: &str, dir: &Path) -> String {
    format!("{name}-{}", dir.display())
}

/// Sends `signal` to `pid`; false when there is no such process.
pub fn signal(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), signal).is_ok())
}

/// SIGKILL to the group `pgid` leads, if its leader is still the process that started
/// at `start_ticks` (a pid file's pair): a recycled pid is left alone.
pub fn kill_group_of(pgid: u32, start_ticks: u64) {
    if stat(pgid).is_some_and(|s| s.start_ticks == start_ticks)
        && let Ok(pgid) = i32::try_from(pgid)
    {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_parentheses_and_spaces_is_skipped() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 9876 0 0";
        let stat = parse_stat(line).expect("parsed");
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                ppid: 1,
                pgrp: 42,
                cpu_ticks: 12,
                start_ticks: 9876
            }
        );
    }

    #[test]
    fn this_process_has_resident_memory() {
        let rss = rss_kib(std::process::id()).expect("VmRSS");
        assert!(rss > 100, "{rss} KiB");
        assert!(status_kib(std::process::id(), "VmHWM").expect("VmHWM") >= rss);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let deadline = std::time::Instant::now() + crate::WAIT;
        while stat(pid).is_some_and(|s| s.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stat(pid).is_some(), "still in /proc until reaped");
        assert!(!alive(pid));
        drop(child);
    }
}
