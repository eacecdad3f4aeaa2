//! What the bench reads from and asks of the OS: memory and CPU time from /proc, the
//! open-files limit a thousand agents need, and a clean-up that also runs on Ctrl-C
//! (scratch databases included).

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Resident and peak resident memory of a process, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mb: f64,
    pub peak_mb: f64,
}

pub fn memory(pid: u32) -> Memory {
    let mb =
        |field| test_support::procs::status_kib(pid, field).map_or(0.0, |kb| kb as f64 / 1024.0);
    Memory {
        rss_mb: mb("VmRSS"),
        peak_mb: mb("VmHWM"),
    }
}

/// User plus system CPU time the process spent so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    test_support::procs::cpu_time(pid).map_or(0.0, |t| t.as_secs_f64())
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
    u32::try_from(pid).is_ok_and(test_support::procs::alive)
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
    test_support::procs::children_of(std::process::id())
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
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
