//! One actor per configured process, and the [`Handle`] that sends it [`Command`]s.
//!
//! Every change to a process (operator commands, its unexpected exit, a retry after
//! backoff, agent shutdown) happens inside its actor, one at a time, so calls on
//! the same process are serialised rather than interleaved: a stop racing a start
//! ends in whichever state was asked last. The actor publishes its state through a
//! `watch` channel, so that listing processes never queues behind a slow start.
//!
//! A start request is answered when the process gets to RUNNING, or when it cannot:
//! FATAL after repeated quick exits (see [`crate::policy`]), or a later stop.
//! Start failures are retried with backoff whether or not `autorestart` is set
//! (like supervisord's `startretries`); `autorestart` only decides what happens
//! when a RUNNING process exits.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::cgroup::{OomCount, ProcessCgroup};
use crate::child::{Adopted, ChildProc};
use crate::config::ProcessSpec;
use crate::data_dir::{PidFile, PidRecord, ProcessFiles};
use crate::group;
use crate::leftovers::terminate_leftover;
use crate::metrics::ProcessMetrics;
use crate::policy::{Decision, MAX_QUICK_EXITS, RestartPolicy};
use crate::procfs;
use crate::ready::{await_ready, describe_exit};
use crate::spawn::{Spawned, spawn_async, spawn_token};

type Reply = oneshot::Sender<Result<(), String>>;

/// What an operator can ask of a process; [`Handle::call`] sends it to the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Start => "start",
            Command::Stop => "stop",
            Command::Restart => "restart",
        })
    }
}

/// A command on its way to the actor, with where its outcome goes.
struct Request {
    command: Command,
    reply: Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Fatal,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::Fatal,
    ];

    /// The state's name as supervisord writes it, and as the agent reports it.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Stopped => "STOPPED",
            State::Fatal => "FATAL",
        }
    }
}

/// What the actor knows; what the OS says is read separately, by [`crate::process_info`].
#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    /// 0 when no process runs.
    pub pid: i32,
    pub desired_running: bool,
    pub last_error: String,
    /// Unix ms when the process was last known alive; 0 if never.
    pub last_alive_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Failed(String),
    #[error("the supervisor of {0} has stopped")]
    Gone(String),
}

/// The way to talk to one actor; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    pub spec: Arc<ProcessSpec>,
    /// Where its limits are enforced; `None` without limits or without cgroups.
    pub cgroup: Option<Arc<ProcessCgroup>>,
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Status>,
}

impl Handle {
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Sends the command and waits for its outcome; dropping the future (a caller's
    /// deadline) leaves the command to complete in the actor.
    pub async fn call(&self, command: Command) -> Result<(), SupervisorError> {
        let gone = || SupervisorError::Gone(self.spec.alias.clone());
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .await
            .map_err(|_| gone())?;
        outcome
            .await
            .map_err(|_| gone())?
            .map_err(SupervisorError::Failed)
    }
}

/// How an actor begins and ends.
#[derive(Clone)]
pub struct Lifetime {
    /// Stops the process, without recording that as the operator's wish.
    pub cancel: CancellationToken,
    /// Ends the actor and leaves its process running, for the next agent version
    /// this process `exec`s (see [`crate::handover`]).
    pub detach: CancellationToken,
}

/// A process the previous version of this agent left running, found by [`adoptable`].
#[derive(Debug, Clone, Copy)]
pub struct Adoptable {
    pid: i32,
    age: Duration,
}

/// Starts the actor of one process on `tracker`; it runs until `cancel`, then stops
/// its process without recording that as the operator's wish, or until `detach`,
/// then leaves it running. `adoptable` is taken over as it runs, RUNNING from the
/// first moment anyone can ask; otherwise what an earlier run left is terminated, and
/// without a recorded wish `autostart` says whether the process starts now.
pub fn launch(
    spec: ProcessSpec,
    files: ProcessFiles,
    cgroup: Option<ProcessCgroup>,
    metrics: ProcessMetrics,
    lifetime: Lifetime,
    adoptable: Option<Adoptable>,
    tracker: &TaskTracker,
) -> Handle {
    let desired_running = match files.desired_running() {
        Ok(Some(desired)) => desired,
        Ok(None) => spec.autostart,
        Err(e) => {
            warn!(alias = %spec.alias, error = %e, "cannot read desired state; using the default");
            spec.autostart
        }
    };
    let cgroup = cgroup.map(Arc::new);
    let mut policy = RestartPolicy::new(spec.min_live);
    let adopted = adoptable.and_then(|Adoptable { pid, age }| match Adopted::new(pid) {
        Ok(child) => {
            let spawned_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            policy.spawned(spawned_at);
            Some(Running {
                child: ChildProc::Adopted(child),
                pid,
                spawned_at,
            })
        }
        Err(e) => {
            warn!(alias = %spec.alias, pid, error = %e, "cannot take over the running process; treating it as a leftover");
            None
        }
    });
    let (state, pid) = match &adopted {
        Some(running) => (State::Running, running.pid),
        None => (State::Stopped, 0),
    };
    let (status_tx, status_rx) = watch::channel(Status {
        state,
        pid,
        desired_running,
        last_error: String::new(),
        last_alive_ms: if adopted.is_some() { unix_ms() } else { 0 },
    });
    let (requests_tx, requests_rx) = mpsc::channel(8);
    let spec = Arc::new(spec);
    let span = tracing::info_span!("process", alias = %spec.alias);
    let actor = Actor {
        policy,
        spec: spec.clone(),
        files,
        cgroup: cgroup.clone(),
        oom_before: OomCount::Kills(0),
        status: status_tx,
        child: adopted,
        retry_at: None,
        restart_after_exit: false,
        waiters: Vec::new(),
        metrics,
        cancel: lifetime.cancel,
        detach: lifetime.detach,
    };
    tracker.spawn(actor.run(requests_rx).instrument(span));
    Handle {
        spec,
        cgroup,
        requests: requests_tx,
        status: status_rx,
    }
}

struct Running {
    child: ChildProc,
    pid: i32,
    spawned_at: Instant,
}

struct Actor {
    spec: Arc<ProcessSpec>,
    files: ProcessFiles,
    cgroup: Option<Arc<ProcessCgroup>>,
    /// What the cgroup's memory counters said when the process was spawned.
    oom_before: OomCount,
    status: watch::Sender<Status>,
    policy: RestartPolicy,
    child: Option<Running>,
    retry_at: Option<Instant>,
    /// The attempt due at `retry_at` starts the process again after it exited, rather
    /// than retrying a start that failed: it counts as a restart.
    restart_after_exit: bool,
    /// Start requests waiting for RUNNING or for the reason it will not get there.
    waiters: Vec<Reply>,
    metrics: ProcessMetrics,
    cancel: CancellationToken,
    detach: CancellationToken,
}

impl Actor {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        if self.child.is_some() {
            self.adopted().await;
        } else {
            self.start_afresh().await;
        }
        let mut handles_left = true;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = self.detach.cancelled() => {
                    self.settle(Err("the agent is being replaced by another version".into()));
                    if let Some(running) = &self.child {
                        info!(pid = running.pid, "left running for the next agent version");
                    }
                    return;
                }
                // Every handle gone means the server stopped; `cancel` or `detach`
                // then says whether the process stops or is handed over.
                request = requests.recv(), if handles_left => match request {
                    Some(request) => self.handle(request).await,
                    None => handles_left = false,
                },
                waited = wait_child(&mut self.child) => self.exited(waited).await,
                _ = sleep_until_some(self.retry_at) => {
                    self.retry_at = None;
                    if std::mem::take(&mut self.restart_after_exit) {
                        self.metrics.restarts_after_exit.inc();
                    }
                    self.attempt().await;
                }
            }
        }
        self.settle(Err("the agent is shutting down".into()));
        if let Err(e) = self.stop().await {
            warn!(error = %e, "cannot stop at shutdown");
        }
    }

    /// Terminates what an earlier agent run left, then starts the process if wanted.
    async fn start_afresh(&mut self) {
        match terminate_leftover(&self.files, self.spec.stop_signal, self.spec.stop_timeout).await {
            Ok(Some(pid)) => info!(pid, "terminated the leftover of an earlier agent run"),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot reconcile the leftover of an earlier agent run"),
        }
        // What an earlier run left in the cgroup would share the new process's limits.
        self.release_cgroup().await;
        if self.status.borrow().desired_running && !self.cancel.is_cancelled() {
            self.attempt().await;
        }
    }

    /// Reads what the OOM counter says of the process taken over at launch.
    async fn adopted(&mut self) {
        if let Some(cgroup) = self.cgroup.clone()
            && let Ok(count) = tokio::task::spawn_blocking(move || cgroup.oom_count()).await
        {
            self.oom_before = count;
        }
        if let Some(running) = &self.child {
            info!(
                pid = running.pid,
                "kept running across the agent's replacement"
            );
        }
    }

    async fn handle(&mut self, Request { command, reply }: Request) {
        match command {
            Command::Start => {
                self.want_running(true).await;
                if self.child.is_some() {
                    let _ = reply.send(Ok(()));
                    return;
                }
                self.waiters.push(reply);
                self.attempt_now().await;
            }
            Command::Stop => {
                self.want_running(false).await;
                self.settle(Err("stopped by a later request".into()));
                self.retry_at = None;
                self.restart_after_exit = false;
                self.policy.reset();
                let _ = reply.send(self.stop().await);
            }
            Command::Restart => {
                self.metrics.restarts_asked.inc();
                self.want_running(true).await;
                if let Err(e) = self.stop().await {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.waiters.push(reply);
                self.attempt_now().await;
            }
        }
    }

    /// An operator's start: earlier failures (and FATAL) no longer count.
    async fn attempt_now(&mut self) {
        self.policy.reset();
        self.retry_at = None;
        self.restart_after_exit = false;
        self.attempt().await;
    }

    /// One try to get to RUNNING; on failure, BACKOFF or FATAL as the policy says.
    async fn attempt(&mut self) {
        self.update(|s| {
            s.state = State::Starting;
            s.pid = 0;
        });
        let reason = match self.start_once().await {
            Ok(()) => {
                self.update(|s| {
                    s.state = State::Running;
                    s.last_error.clear();
                });
                info!(pid = self.status.borrow().pid, "running");
                self.settle(Ok(()));
                return;
            }
            Err(reason) => reason,
        };
        warn!(%reason, "start failed");
        if self.cancel.is_cancelled() {
            self.update(|s| {
                s.state = State::Stopped;
                s.last_error = reason;
            });
            return;
        }
        match self.policy.start_failed() {
            Decision::RetryAfter(delay) => self.back_off(delay, reason),
            Decision::Fatal => self.fatal(reason),
        }
    }

    async fn start_once(&mut self) -> Result<(), String> {
        let token = spawn_token(&self.spec.alias);
        if let Err(e) = self.files.write_spawning(&token).await {
            warn!(error = %e, "cannot write pid file");
        }
        if let Err(e) = self.prepare_cgroup().await {
            self.forget_pid().await;
            return Err(e);
        }
        let spawned = spawn_async(self.spec.clone(), token, self.cgroup.clone()).await;
        let Spawned { mut child, pid } = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                self.forget_pid().await;
                self.release_cgroup().await;
                return Err(e.to_string());
            }
        };
        let spawned_at = Instant::now();
        self.policy.spawned(spawned_at);
        match procfs::stat_async(pid).await {
            Some(stat) => {
                let record = PidRecord {
                    pid,
                    start_ticks: stat.start_ticks,
                };
                if let Err(e) = self.files.write_pid(record).await {
                    warn!(error = %e, "cannot write pid file");
                }
            }
            None => warn!(pid, "gone before its pid file could be written"),
        }
        self.update(|s| {
            s.pid = pid;
            s.last_alive_ms = unix_ms();
        });
        match await_ready(&mut child, pid, &self.spec, &self.cancel).await {
            Ok(()) => {
                self.metrics
                    .start_latency
                    .observe(spawned_at.elapsed().as_secs_f64());
                self.child = Some(Running {
                    child: ChildProc::Spawned(child),
                    pid,
                    spawned_at,
                });
                Ok(())
            }
            Err(reason) => {
                // A start cut short says only its reason; the count of OOM kills
                // still tells, except on kernels that count none.
                let reason = self.explain_exit(reason, false).await;
                let mut child = ChildProc::Spawned(child);
                let stopped = group::stop_child(
                    &mut child,
                    pid,
                    self.spec.stop_signal,
                    self.spec.stop_timeout,
                )
                .await;
                match stopped {
                    Ok(_) => {
                        self.forget_pid().await;
                        self.release_cgroup().await;
                    }
                    Err(e) => warn!(error = %e, "cannot clean up after a failed start"),
                }
                Err(reason)
            }
        }
    }

    /// The process died without being asked to.
    async fn exited(&mut self, waited: io::Result<ExitStatus>) {
        let Some(running) = self.child.take() else {
            return;
        };
        self.metrics.unexpected_exits.inc();
        let now = Instant::now();
        let sigkill = waited
            .as_ref()
            .is_ok_and(|s| s.signal() == Some(libc::SIGKILL));
        let reason = match waited {
            Ok(status) => describe_exit(status, now - running.spawned_at),
            Err(e) => format!("cannot wait for pid {}: {e}", running.pid),
        };
        let reason = self.explain_exit(reason, sigkill).await;
        warn!(pid = running.pid, %reason, "exited unexpectedly");
        if let Err(e) =
            group::terminate_group(running.pid, self.spec.stop_signal, self.spec.stop_timeout).await
        {
            warn!(error = %e, "cannot stop what is left of the process group");
        }
        self.forget_pid().await;
        self.release_cgroup().await;
        self.update(|s| s.last_error = reason.clone());
        if !(self.status.borrow().desired_running && self.spec.autorestart) {
            self.update(|s| s.state = State::Stopped);
            return;
        }
        match self.policy.exited(now) {
            Decision::RetryAfter(delay) => {
                self.back_off(delay, reason);
                self.restart_after_exit = true;
            }
            Decision::Fatal => self.fatal(reason),
        }
    }

    /// Stops the process, if one runs, and reports STOPPED once it is really gone.
    async fn stop(&mut self) -> Result<(), String> {
        let Some(mut running) = self.child.take() else {
            self.update(|s| s.state = State::Stopped);
            return Ok(());
        };
        self.update(|s| s.state = State::Stopping);
        let stopped = group::stop_child(
            &mut running.child,
            running.pid,
            self.spec.stop_signal,
            self.spec.stop_timeout,
        )
        .await;
        match stopped {
            Ok(status) => {
                info!(pid = running.pid, %status, "stopped");
                self.forget_pid().await;
                self.release_cgroup().await;
                self.update(|s| s.state = State::Stopped);
                Ok(())
            }
            Err(e) => {
                self.child = Some(running);
                self.update(|s| {
                    s.state = State::Running;
                    s.last_error = e.to_string();
                });
                Err(e.to_string())
            }
        }
    }

    /// Makes the process's cgroup and sets its limits before the spawn.
    async fn prepare_cgroup(&mut self) -> Result<(), String> {
        let Some(cgroup) = self.cgroup.clone() else {
            return Ok(());
        };
        let prepared = tokio::task::spawn_blocking(move || cgroup.prepare())
            .await
            .map_err(|e| format!("cannot set up the cgroup: {e}"))?;
        self.oom_before = prepared.map_err(|e| format!("cannot apply the limits: {e}"))?;
        Ok(())
    }

    /// Names the memory limit when the kernel's OOM killer ended the process, since
    /// "killed by signal 9" alone sends an operator looking for who sent it.
    /// `sigkill`: whether the exit was a SIGKILL, when known.
    async fn explain_exit(&self, reason: String, sigkill: bool) -> String {
        let Some(cgroup) = self.cgroup.clone() else {
            return reason;
        };
        let Some(limit) = cgroup.limits.memory_limit else {
            return reason;
        };
        let Ok(now) = tokio::task::spawn_blocking(move || cgroup.oom_count()).await else {
            return reason;
        };
        if now.killed_since(self.oom_before, sigkill) {
            format!("killed: memory limit {limit} ({reason})")
        } else {
            reason
        }
    }

    /// The cgroup goes with the process; what is left in it (a daemon that left the
    /// process group) goes too.
    async fn release_cgroup(&self) {
        let Some(cgroup) = self.cgroup.clone() else {
            return;
        };
        let (signal, timeout) = (self.spec.stop_signal as i32, self.spec.stop_timeout);
        match tokio::task::spawn_blocking(move || cgroup.remove(signal, timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot remove the cgroup"),
            Err(e) => warn!(error = %e, "cannot remove the cgroup"),
        }
    }

    fn back_off(&mut self, delay: Duration, reason: String) {
        self.retry_at = Some(Instant::now() + delay);
        self.update(|s| {
            s.state = State::Backoff;
            s.last_error = reason;
        });
    }

    fn fatal(&mut self, reason: String) {
        warn!(%reason, "giving up: FATAL");
        self.update(|s| {
            s.state = State::Fatal;
            s.last_error = format!("{reason} ({MAX_QUICK_EXITS} quick exits in a row)");
        });
        self.settle(Err(reason));
    }

    /// Answers every waiting start request.
    fn settle(&mut self, outcome: Result<(), String>) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
    }

    async fn want_running(&mut self, running: bool) {
        if self.status.borrow().desired_running == running {
            return;
        }
        if let Err(e) = self.files.set_desired_running(running).await {
            warn!(error = %e, "cannot record the desired state");
        }
        self.update(|s| s.desired_running = running);
    }

    async fn forget_pid(&mut self) {
        if let Err(e) = self.files.remove_pid().await {
            warn!(error = %e, "cannot remove pid file");
        }
        self.update(|s| {
            s.pid = 0;
            s.last_alive_ms = unix_ms();
        });
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        self.status.send_modify(change);
    }
}

/// The process the pid file names, when it is alive and this process's child with the
/// recorded start time: the one the previous image of this process spawned. Blocking.
pub fn adoptable(files: &ProcessFiles) -> Option<Adoptable> {
    let Ok(Some(PidFile::Running(record))) = files.pid_file() else {
        return None;
    };
    let stat = procfs::stat(record.pid)?;
    let ours = stat.is_alive()
        && stat.start_ticks == record.start_ticks
        && u32::try_from(stat.ppid).ok() == Some(std::process::id());
    ours.then(|| Adoptable {
        pid: record.pid,
        age: procfs::elapsed(stat.start_ticks).unwrap_or_default(),
    })
}

async fn wait_child(child: &mut Option<Running>) -> io::Result<ExitStatus> {
    match child {
        Some(running) => running.child.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
