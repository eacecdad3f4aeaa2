//! Upgrades in place: what ReceivePackage, SwitchVersion and CommitVersion do, and
//! the trial that takes the agent back to its committed version by itself.
//!
//! A switch ends with a plan ([`ExecPlan`]) and the serving token cancelled: the
//! agent stops taking calls, its supervisors let go of their processes without
//! stopping them, and [`crate::lifecycle`] carries the plan out with
//! [`crate::handover::exec`]. The version switched to is on trial: its image, once
//! serving, waits for CommitVersion until the trial's end, and without it makes the
//! same kind of plan back to the committed version. A crash meanwhile is a cold start,
//! which runs the committed version (see [`crate::versions::boot`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use proto::agent::v1::{PackageChunk, SwitchVersionResponse};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::data_dir::DataDirError;
use crate::handover::{ExecPlan, SelfCheckError, self_check};
use crate::package::{self, ReceiveError, Received};
use crate::supervisor::unix_ms;
use crate::versions::{LabelError, Trial, Versions, check_label};

/// How long a switched-to version waits for its commit when the caller names no trial.
pub const DEFAULT_TRIAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error("this agent runs inside another program and cannot replace itself")]
    NotReplaceable,
    #[error("version {0} was not received: push its package first")]
    NotHeld(String),
    #[error("version {0} is on trial: commit it, or wait for the agent to go back")]
    OnTrial(String),
    #[error(transparent)]
    SelfCheck(#[from] SelfCheckError),
    #[error(
        "version {version} does not run (version {running} does): its trial ran out, or it was never switched to"
    )]
    NotRunning { version: String, running: String },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("upgrade file work: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<UpgradeError> for tonic::Status {
    fn from(e: UpgradeError) -> tonic::Status {
        let message = e.to_string();
        match e {
            UpgradeError::Receive(ReceiveError::Conflict { .. }) => {
                tonic::Status::already_exists(message)
            }
            UpgradeError::Receive(
                ReceiveError::Write(_) | ReceiveError::DataDir(_) | ReceiveError::Task(_),
            )
            | UpgradeError::DataDir(_)
            | UpgradeError::Task(_) => tonic::Status::internal(message),
            UpgradeError::Receive(_) | UpgradeError::Label(_) => {
                tonic::Status::invalid_argument(message)
            }
            UpgradeError::NotReplaceable
            | UpgradeError::NotHeld(_)
            | UpgradeError::OnTrial(_)
            | UpgradeError::SelfCheck(_)
            | UpgradeError::NotRunning { .. } => tonic::Status::failed_precondition(message),
        }
    }
}

/// What GetAgentInfo says of versions; kept in memory so that it reads no file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub committed: String,
    pub trial: Option<Trial>,
    pub last_error: String,
    pub held: Vec<String>,
}

pub struct Upgrades {
    versions: Versions,
    running: String,
    config_path: PathBuf,
    replaceable: bool,
    /// One upgrade call at a time: a receive, a switch or a commit.
    busy: tokio::sync::Mutex<()>,
    report: Mutex<Report>,
    plan: Mutex<Option<ExecPlan>>,
    serving: CancellationToken,
    committed: watch::Sender<bool>,
}

impl Upgrades {
    /// Blocking: reads the folder. A trial file naming another version than the one
    /// running is what is left of a switch that did not come up, and is cleared.
    pub fn load(
        versions: Versions,
        running: String,
        config_path: PathBuf,
        replaceable: bool,
        serving: CancellationToken,
    ) -> Result<Upgrades, DataDirError> {
        versions.clear_incoming()?;
        let mut trial = versions.trial()?;
        if let Some(stale) = trial.as_ref().filter(|t| t.version != running) {
            if versions.last_error()?.is_empty() {
                versions.set_last_error(&format!(
                    "version {} did not come up; version {running} runs",
                    stale.version
                ))?;
            }
            versions.end_trial()?;
            trial = None;
        }
        let report = Report {
            committed: match (versions.committed()?, &trial) {
                (Some(committed), _) => committed,
                (None, Some(trial)) => trial.committed.clone(),
                (None, None) => running.clone(),
            },
            trial,
            last_error: versions.last_error()?,
            held: versions.held()?,
        };
        Ok(Upgrades {
            versions,
            running,
            config_path,
            replaceable,
            busy: tokio::sync::Mutex::new(()),
            report: Mutex::new(report),
            plan: Mutex::new(None),
            serving,
            committed: watch::channel(false).0,
        })
    }

    /// The version this image runs as.
    pub fn running(&self) -> &str {
        &self.running
    }

    pub fn report(&self) -> Report {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The binary to become once serving stopped, when a switch or a trial's end asked.
    pub fn take_plan(&self) -> Option<ExecPlan> {
        self.plan.lock().ok().and_then(|mut p| p.take())
    }

    pub async fn receive<S>(&self, stream: S) -> Result<Received, UpgradeError>
    where
        S: Stream<Item = Result<PackageChunk, tonic::Status>> + Unpin,
    {
        let _busy = self.busy.lock().await;
        let received = package::receive(&self.versions, stream).await?;
        if !received.already_held {
            info!(version = %received.version, sha256 = %received.sha256, "received an agent package");
            let held = self.blocking(|v| v.held()).await?;
            self.change(|r| r.held = held);
        }
        Ok(received)
    }

    pub async fn switch(
        &self,
        version: String,
        trial_seconds: u32,
    ) -> Result<SwitchVersionResponse, UpgradeError> {
        if !self.replaceable {
            return Err(UpgradeError::NotReplaceable);
        }
        check_label(&version)?;
        let _busy = self.busy.lock().await;
        let report = self.report();
        if let Some(trial) = report.trial {
            return Err(UpgradeError::OnTrial(trial.version));
        }
        if version == self.running {
            return Ok(SwitchVersionResponse {
                from_version: self.running.clone(),
                to_version: version,
                self_check: String::new(),
            });
        }
        let held = {
            let version = version.clone();
            self.blocking(move |v| v.held_sha256(&version)).await?
        };
        if held.is_none() {
            return Err(UpgradeError::NotHeld(version));
        }
        let committed = report.committed;
        // The way back must be there before the way forward is taken.
        if committed == self.running {
            let running = self.running.clone();
            self.blocking(move |v| v.keep_running_binary(&running))
                .await?;
        }
        let binary = self.versions.binary(&version);
        let checked = self_check(&binary, &self.config_path).await;
        if let Err(e) = &checked {
            warn!(%version, "the new agent failed its self-check: {e}");
            let why = e.to_string();
            self.blocking(move |v| v.set_last_error(&why)).await?;
            self.change(|r| r.last_error = e.to_string());
        }
        let checked = checked?;
        let trial = match trial_seconds {
            0 => DEFAULT_TRIAL,
            s => Duration::from_secs(u64::from(s)),
        };
        let trial = Trial {
            version: version.clone(),
            until_ms: unix_ms() + i64::try_from(trial.as_millis()).unwrap_or(i64::MAX),
            committed,
        };
        {
            let trial = trial.clone();
            self.blocking(move |v| {
                v.set_last_error("")?;
                v.begin_trial(&trial)
            })
            .await?;
        }
        info!(from = %self.running, to = %version, check = %checked, "switching to another agent version, on trial until committed");
        if let Ok(mut plan) = self.plan.lock() {
            *plan = Some(ExecPlan {
                binary,
                version: version.clone(),
            });
        }
        self.serving.cancel();
        Ok(SwitchVersionResponse {
            from_version: self.running.clone(),
            to_version: version,
            self_check: checked,
        })
    }

    pub async fn commit(&self, version: String) -> Result<(), UpgradeError> {
        check_label(&version)?;
        let _busy = self.busy.lock().await;
        if version != self.running {
            return Err(UpgradeError::NotRunning {
                version,
                running: self.running.clone(),
            });
        }
        let held = {
            let version = version.clone();
            self.blocking(move |v| {
                v.keep_running_binary(&version)?;
                v.commit(&version)?;
                v.held()
            })
            .await?
        };
        self.change(|r| {
            r.committed = version.clone();
            r.trial = None;
            r.held = held;
        });
        self.committed.send_replace(true);
        info!(%version, "agent version committed: it is the one started after a crash or a reboot");
        Ok(())
    }

    /// While the running version is on trial: waits for its commit, and without it by
    /// the trial's end plans the way back and stops serving. Ends with `cancel`.
    pub async fn watch_trial(self: Arc<Upgrades>, cancel: CancellationToken) {
        let Some(trial) = self.report().trial else {
            return;
        };
        let left = u64::try_from(trial.until_ms - unix_ms()).unwrap_or(0);
        info!(version = %trial.version, seconds_left = left / 1000, "on trial until committed");
        let mut committed = self.committed.subscribe();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = committed.wait_for(|c| *c) => return,
            _ = tokio::time::sleep(Duration::from_millis(left)) => {}
        }
        let _busy = self.busy.lock().await;
        if *self.committed.borrow() {
            return;
        }
        let why = format!(
            "version {} was not committed within its trial; went back to version {}",
            trial.version, trial.committed
        );
        warn!("{why}");
        let saved = {
            let why = why.clone();
            self.blocking(move |v| {
                v.set_last_error(&why)?;
                v.end_trial()
            })
            .await
        };
        if let Err(e) = saved {
            warn!("cannot record the end of the trial: {e}");
        }
        if let Ok(mut plan) = self.plan.lock() {
            *plan = Some(ExecPlan {
                binary: self.versions.binary(&trial.committed),
                version: trial.committed.clone(),
            });
        }
        self.serving.cancel();
    }

    fn change(&self, edit: impl FnOnce(&mut Report)) {
        if let Ok(mut report) = self.report.lock() {
            edit(&mut report);
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Versions) -> Result<T, DataDirError> + Send + 'static,
    ) -> Result<T, UpgradeError> {
        let versions = self.versions.clone();
        Ok(tokio::task::spawn_blocking(move || work(&versions)).await??)
    }
}
