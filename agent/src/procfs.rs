//! What the OS says about a process, read from `/proc`.
//!
//! Hand-written rather than the `procfs` crate (0.17): reading one `stat` took
//! 4.4 us here and 5.1 us through `Process::new(pid)?.stat()` (which also opens the
//! process's folder and parses every field), and the crate added 41 KB to a
//! stripped binary; the agent needs three fields of two files.
//!
//! Everything the agent reports about a running process (owner, ports, age) comes
//! from here rather than from the agent's own bookkeeping, so that a report stays
//! true when a process changed user, closed a port or was replaced behind the
//! agent's back. A file that vanished or cannot be read means "not there": a
//! process can die between any two reads, which is not an error.
//!
//! Every read here is blocking (a `/proc` file of a process stuck in the kernel can
//! take long), so the agent's one runtime thread calls the `_async` forms, which run
//! on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::{Pid, SysconfVar, Uid, User, sysconf};

use crate::sockdiag;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Clock ticks after boot; with the pid, it identifies one process for good.
    pub start_ticks: u64,
    /// User and system time so far, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

impl Stat {
    /// A zombie already died; it only waits for its parent to reap it.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// [`stat`] on the blocking pool.
pub async fn stat_async(pid: i32) -> Option<Stat> {
    off_thread(move || stat(pid)).await.flatten()
}

/// Runs a read on the blocking pool; `None` only when the pool could not run it (the
/// runtime is shutting down).
async fn off_thread<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(read).await.ok()
}

/// The command name may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

/// The real uid, from the `Uid:` line of `/proc/<pid>/status`.
pub fn uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The user name, or the number when the uid has no passwd entry.
pub fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn clock_ticks() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

pub fn ticks_to_ms(ticks: u64) -> u64 {
    ticks.saturating_mul(1000) / clock_ticks()
}

pub fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

/// How long a process with this start time has lived, from `/proc/uptime`.
pub fn elapsed(start_ticks: u64) -> Option<Duration> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let started = start_ticks as f64 / clock_ticks() as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

/// The living members of each asked process group.
///
/// Members are found by walking down the process tree from the group's leader
/// (`/proc/<pid>/task/<tid>/children`): a few files per group, where a scan of `/proc`
/// reads one file per process on the machine. With 1,000 agents and their 2,000
/// processes on one machine, those scans were 90% of all CPU during a fleet restart
/// (perf: `do_task_stat`, `next_tgid`). The scan remains for what a walk cannot see:
/// a group whose leader is gone but which still exists (an orphaned member, or
/// leftovers of an earlier agent run), and kernels without the `children` files.
/// The walk misses a member that left the leader's subtree (reparented to init)
/// while the leader lives; its ports are then not reported.
pub fn group_members(pgids: &HashSet<i32>) -> HashMap<i32, Vec<i32>> {
    let mut members = HashMap::new();
    let mut unresolved = HashSet::new();
    for &pgid in pgids {
        match subtree_members(pgid) {
            Some(found) if !found.is_empty() => {
                members.insert(pgid, found);
            }
            _ if group_exists(pgid) => {
                unresolved.insert(pgid);
            }
            _ => {}
        }
    }
    if !unresolved.is_empty() {
        members.extend(scan_members(&unresolved));
    }
    members
}

/// The living members of the group found below its leader, the leader first; None
/// when this kernel has no `children` files.
fn subtree_members(pgid: i32) -> Option<Vec<i32>> {
    /// Bounds the walk should pids be reused under it.
    const MAX_WALK: usize = 10_000;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    if !*SUPPORTED.get_or_init(|| Path::new("/proc/thread-self/children").exists()) {
        return None;
    }
    let mut found = Vec::new();
    let mut queue = vec![pgid];
    let mut walked = 0;
    while let Some(pid) = queue.pop() {
        walked += 1;
        if pgid <= 1 || walked > MAX_WALK {
            break;
        }
        if stat(pid).is_some_and(|s| s.is_alive() && s.pgrp == pgid) {
            found.push(pid);
        } else if pid == pgid {
            // A dead leader's subtree was reparented away: only a scan finds the rest.
            break;
        }
        queue.extend(children(pid));
    }
    Some(found)
}

/// The children of every thread of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None) != Err(Errno::ESRCH)
}

/// The living members of each asked group, from one scan of `/proc`.
fn scan_members(pgids: &HashSet<i32>) -> HashMap<i32, Vec<i32>> {
    let mut members: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(s) = stat(pid).filter(|s| pgids.contains(&s.pgrp) && s.is_alive()) {
            members.entry(s.pgrp).or_default().push(pid);
        }
    }
    members
}

/// The process groups of every living process whose environment holds `entry`
/// (`NAME=value`), from one scan of `/proc`; processes the agent may not read are
/// not its own, and are skipped.
pub fn groups_marked(entry: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        })
        .filter_map(|pid| stat(pid).filter(Stat::is_alive).map(|s| s.pgrp))
        .filter(|&pgid| pgid > 1 && pgid != nix::unistd::getpgrp().as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Whether any living process is left in the group. Zombies keep a group "existing"
/// for the kernel until reaped, which may never happen under a non-reaping init, so
/// only living members count.
pub fn group_alive(pgid: i32) -> bool {
    group_members(&HashSet::from([pgid])).contains_key(&pgid)
}

/// [`group_alive`] on the blocking pool; a group that could not be looked at counts
/// as alive, so that nobody goes on as if it had been stopped.
pub async fn group_alive_async(pgid: i32) -> bool {
    off_thread(move || group_alive(pgid)).await.unwrap_or(true)
}

/// LISTEN sockets of this network namespace: socket inode to port.
pub struct ListenTable(HashMap<u64, u16>);

impl ListenTable {
    /// From netlink `sock_diag` (see [`crate::sockdiag`] for why), else from the
    /// LISTEN (`0A`) lines of `/proc/net/tcp` and `/proc/net/tcp6`.
    pub fn read() -> ListenTable {
        match sockdiag::listening() {
            Ok(found) => return ListenTable(found.into_iter().collect()),
            Err(e) => tracing::debug!(error = %e, "sock_diag failed; reading /proc/net/tcp"),
        }
        let mut table = HashMap::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                table.extend(text.lines().skip(1).filter_map(parse_listen_line));
            }
        }
        ListenTable(table)
    }

    pub fn has_port(&self, port: u16) -> bool {
        self.0.values().any(|&p| p == port)
    }

    /// The ports that sockets held by these processes listen on, sorted, without repeats.
    pub fn ports_of(&self, pids: &[i32]) -> Vec<u32> {
        let mut ports: Vec<u32> = pids
            .iter()
            .flat_map(|&pid| socket_inodes(pid))
            .filter_map(|inode| self.0.get(&inode).map(|&p| u32::from(p)))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_listen_line(line: &str) -> Option<(u64, u16)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if *fields.get(3)? != "0A" {
        return None;
    }
    let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some((inode, port))
}

fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| socket_inode(&target))
        .collect()
}

fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The ports the living members of a group listen on.
pub fn group_ports(pgid: i32) -> Vec<u32> {
    let members = group_members(&HashSet::from([pgid]));
    let pids = members.get(&pgid).map(Vec::as_slice).unwrap_or_default();
    ListenTable::read().ports_of(pids)
}

/// [`group_ports`] on the blocking pool.
pub async fn group_ports_async(pgid: i32) -> Vec<u32> {
    off_thread(move || group_ports(pgid))
        .await
        .unwrap_or_default()
}

/// [`ports_ready`] on the blocking pool, for many polls at once: every poll that asks
/// while the socket table is being read waits for the next read, and that one read
/// answers them all. Fifty processes starting together then cost one table read per
/// poll interval rather than fifty. The cheap global check comes first, since
/// readiness is polled often while nothing listens yet.
pub async fn ports_ready_async(pgid: i32, wanted: Vec<u16>) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let Some(table) = shared_listen_table().await else {
        return false;
    };
    if !wanted.iter().all(|&p| table.has_port(p)) {
        return false;
    }
    off_thread(move || {
        let members = group_members(&HashSet::from([pgid]));
        let pids = members.get(&pgid).map(Vec::as_slice).unwrap_or_default();
        let held = table.ports_of(pids);
        wanted.iter().all(|&p| held.contains(&u32::from(p)))
    })
    .await
    .unwrap_or(false)
}

/// A socket table read after the call began: the last one when it started later, else
/// a new one, read by one caller while the others wait for it.
async fn shared_listen_table() -> Option<Arc<ListenTable>> {
    static LAST: tokio::sync::Mutex<Option<(Instant, Arc<ListenTable>)>> =
        tokio::sync::Mutex::const_new(None);
    let asked = Instant::now();
    let mut last = LAST.lock().await;
    if let Some((_, table)) = last.as_ref().filter(|(read_at, _)| *read_at >= asked) {
        return Some(table.clone());
    }
    let read_at = Instant::now();
    let table = Arc::new(off_thread(ListenTable::read).await?);
    *last = Some((read_at, table.clone()));
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 1,
                pgrp: 42,
                start_ticks: 98765,
                cpu_ticks: 3,
                rss_pages: 10,
            }
        );
    }

    #[test]
    fn parses_listen_lines() {
        let listen = "   0: 0100007F:F2A8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listen_line(listen), Some((123456, 0xF2A8)));
        let established = listen.replace(" 0A ", " 01 ");
        assert_eq!(parse_listen_line(&established), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert!(s.is_alive());
        assert!(elapsed(s.start_ticks).is_some());
        assert_eq!(uid(me), Some(nix::unistd::getuid().as_raw()));
    }

    fn spawn_group(script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    }

    fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "condition never held");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn finds_group_members_below_the_leader_and_orphans_by_scan() {
        let mut leader = spawn_group("sleep 30 & sleep 30 & wait");
        let pgid = leader.id() as i32;
        wait_for(|| {
            group_members(&HashSet::from([pgid]))
                .get(&pgid)
                .map(Vec::len)
                == Some(3)
        });
        assert_eq!(group_members(&HashSet::from([pgid]))[&pgid][0], pgid);
        killpg(Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).expect("kill group");
        leader.wait().expect("reap");
        wait_for(|| !group_alive(pgid));

        // The leader exits; its child lives on, reparented away from the leader's subtree.
        let mut leader = spawn_group("sleep 30 & exit 0");
        let pgid = leader.id() as i32;
        leader.wait().expect("reap the leader");
        assert!(group_alive(pgid), "the orphan keeps the group alive");
        let orphans = group_members(&HashSet::from([pgid]))[&pgid].clone();
        assert_eq!(orphans.len(), 1);
        assert_ne!(orphans[0], pgid);
        killpg(Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).expect("kill group");
        wait_for(|| !group_alive(pgid));
    }

    #[tokio::test]
    async fn polls_at_once_share_a_socket_table_read_after_they_asked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let polls: Vec<_> = (0..10)
            .map(|_| tokio::spawn(shared_listen_table()))
            .collect();
        let mut tables: Vec<Arc<ListenTable>> = Vec::new();
        for poll in polls {
            let table = poll.await.expect("joined").expect("read");
            assert!(table.has_port(port), "a socket bound before the poll asked");
            if !tables.iter().any(|t| Arc::ptr_eq(t, &table)) {
                tables.push(table);
            }
        }
        assert!(tables.len() <= 2, "{} reads for 10 polls", tables.len());
        assert!(!ports_ready_async(1, vec![port]).await, "not init's port");
        assert!(ports_ready_async(1, Vec::new()).await);
    }

    #[test]
    fn finds_own_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let me = std::process::id() as i32;
        assert!(
            ListenTable::read()
                .ports_of(&[me])
                .contains(&u32::from(port))
        );
    }
}
