//! What the bench reads from and asks of the OS: memory and CPU time from /proc, the
//! open-files limit a thousand agents need, and a clean-up that also runs on Ctrl-C
//! (scratch databases included).

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};

/// Resident and peak resident memory of a process, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mb: f64,
    pub peak_mb: f64,
}

pub fn memory(pid: u32) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Memory {
        rss_mb: field("VmRSS:"),
        peak_mb: field("VmHWM:"),
    }
}

/// User plus system CPU time the process spent so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    let per_second = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) => ticks.max(1) as f64,
        _ => 1.0,
    };
    ticks / per_second
}

/// Raises the soft open-files limit to the hard one; children inherit it. A thousand
/// agents each hold a listener and connections, the controller one channel per agent.
pub fn raise_open_files() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            hard
        }
        Err(_) => 0,
    }
}

/// Pid files of processes started outside our process tree (Ansible's `setsid`), which
/// the clean-up must find by file since they are no longer our children.
static PID_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn register_pid_file(path: PathBuf) {
    if let Ok(mut files) = PID_FILES.lock() {
        files.push(path);
    }
}

/// Kills what the registered pid files name and forgets them.
pub fn kill_pid_files() {
    let files = PID_FILES
        .lock()
        .map(|mut f| std::mem::take(&mut *f))
        .unwrap_or_default();
    let mut killed = Vec::new();
    for file in files {
        if let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&p| p > 1)
        {
            // A pid we started; at worst it is gone already.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    // A killed process still holds its listening socket until it has exited: the next
    // scenario binds the same addresses, and once found one of them still taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in killed {
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Running or stopped, not yet a zombie (whose sockets are closed) nor reaped.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

type Undo = Box<dyn FnOnce() + Send>;

/// What the interrupt clean-up undoes once every child is gone; each must be harmless
/// when already undone, since the scenario may have undone it itself.
static AT_INTERRUPT: Mutex<Vec<Undo>> = Mutex::new(Vec::new());

/// E.g. dropping a scratch database, which outlives the processes that used it.
pub fn at_interrupt(undo: impl FnOnce() + Send + 'static) {
    if let Ok(mut all) = AT_INTERRUPT.lock() {
        all.push(Box::new(undo));
    }
}

/// Our direct children, found by their parent pid in /proc.
fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_string();
                    let mut f = after.split_whitespace();
                    let state = f.next()?.to_string();
                    let ppid = f.next()?.to_string();
                    Some(state != "Z" && ppid == me)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// On Ctrl-C or SIGTERM: SIGTERM to every child (agents stop their processes), a
/// bounded wait, SIGKILL to what is left, the pid files' processes, what was registered
/// with `at_interrupt`, and exit 130.
pub fn install_interrupt_cleanup() {
    let _ = ctrlc::set_handler(|| {
        eprintln!("\nbench: interrupted; stopping everything it started...");
        kill_pid_files();
        let signal = |sig| {
            for pid in children() {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        };
        // Again and again: the main thread may still be starting agents. A SIGKILLed
        // agent would leave its processes behind, so the agents get time to stop them.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !children().is_empty() && Instant::now() < deadline {
            signal(Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(Signal::SIGKILL);
        let undo = AT_INTERRUPT
            .lock()
            .map(|mut all| std::mem::take(&mut *all))
            .unwrap_or_default();
        for u in undo {
            u();
        }
        std::process::exit(130);
    });
}
