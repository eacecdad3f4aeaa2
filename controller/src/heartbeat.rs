//! Checks every agent on an interval and keeps each host ONLINE or OFFLINE.
//!
//! A host whose agent stops answering stays as it was for `offline_grace` (a restart of
//! the agent is not an outage), then goes OFFLINE; one answer brings it back ONLINE.
//!
//! A check has a short deadline (`timeout`); one not answered by then is reported as
//! missed, but is still awaited until the grace is over: an agent starved of CPU
//! during a fleet-wide restart answers late but answers, and a late answer is a sign
//! of life. A host with a check still out gets no second one, so a slow agent is never
//! buried under queued checks; the rule "no answer for the whole grace" is applied on
//! every round all the same, so a partitioned host, whose check simply hangs, goes
//! OFFLINE on time. Checks run concurrently, bounded, so a large fleet is covered
//! within one interval.
//!
//! With several controllers on one store, each host is checked by one of them (see
//! [`Membership`]); a controller that dies leaves its hosts to the others once it is no
//! longer seen alive, a lease TTL later.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent_client::{self, AgentPool, CallOrigin};
use crate::membership::Membership;
use crate::model::{AgentSummary, Host, HostStatus, Millis, now_millis};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    pub interval: Duration,
    /// When a check that has not been answered is reported as missed.
    pub timeout: Duration,
    /// How long an agent may stay silent before its host is OFFLINE; also how long one
    /// check waits for its answer.
    pub offline_grace: Duration,
    /// How many checks may be out at once.
    pub concurrency: usize,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            offline_grace: Duration::from_secs(30),
            concurrency: 1024,
        }
    }
}

pub struct Heartbeat {
    pub store: Store,
    pub agents: Arc<AgentPool>,
    pub options: HeartbeatOptions,
    /// Wakes the loop early, when a host was added.
    pub wake: Arc<Notify>,
    /// Which hosts are this controller's to check.
    pub membership: watch::Receiver<Membership>,
    /// Counts checks not answered within their deadline.
    pub misses: Counter,
}

/// What the loop and the checks it spawned share.
struct Checks {
    store: Store,
    agents: Arc<AgentPool>,
    options: HeartbeatOptions,
    /// Hosts whose check has not come back yet.
    out: Mutex<HashSet<i64>>,
    /// When this controller began checking each of its hosts: a host it took over (or
    /// found at its start) gets a whole grace of its own, since the store's last answer
    /// may trail the one the previous checker kept in memory.
    since: Mutex<HashMap<i64, Millis>>,
    /// Hosts whose reason this controller wrote: their next answer clears it, whatever
    /// the snapshot the check was sent with says.
    reasoned: Mutex<HashSet<i64>>,
    permits: Semaphore,
    membership: watch::Receiver<Membership>,
    misses: Counter,
}

impl Heartbeat {
    pub async fn run(self, cancel: CancellationToken) {
        let checks = Arc::new(Checks {
            permits: Semaphore::new(self.options.concurrency.max(1)),
            store: self.store,
            agents: self.agents,
            options: self.options,
            out: Mutex::new(HashSet::new()),
            since: Mutex::new(HashMap::new()),
            reasoned: Mutex::new(HashSet::new()),
            membership: self.membership,
            misses: self.misses,
        });
        let tracker = TaskTracker::new();
        loop {
            if let Err(e) = checks.round(&tracker, &cancel).await {
                tracing::warn!("heartbeat round failed: {e}");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(checks.options.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }
}

impl Checks {
    /// Judges every host by its last answer and sends a check to each host that has
    /// none out.
    async fn round(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<(), StoreError> {
        let membership = *self.membership.borrow();
        let hosts: Vec<Host> = self
            .store
            .all_hosts()
            .await?
            .into_iter()
            .filter(|h| membership.checks(h.id))
            .collect();
        {
            let now = now_millis();
            let mut since = self.since.lock();
            since.retain(|id, _| hosts.iter().any(|h| h.id == *id));
            for host in &hosts {
                since.entry(host.id).or_insert(now);
            }
        }
        for host in hosts {
            let waiting = !self.lock_out().insert(host.id);
            if waiting {
                self.judge(&host, "its last check is still unanswered")
                    .await?;
                continue;
            }
            let checks = Arc::clone(self);
            let cancel = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    result = checks.check(&host) => if let Err(e) = result {
                        tracing::warn!(host_id = host.id, "recording heartbeat failed: {e}");
                    }
                }
                checks.lock_out().remove(&host.id);
            });
        }
        Ok(())
    }

    fn lock_out(&self) -> MutexGuard<'_, HashSet<i64>> {
        self.out.lock()
    }

    async fn check(&self, host: &Host) -> Result<(), StoreError> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Ok(());
        };
        let wait = self.options.offline_grace;
        // A check is missed once: when its deadline passes unanswered, or when it fails
        // before that (a closed port answers at once).
        let mut missed = false;
        let answer = match self.agents.client(host, CallOrigin::default()) {
            Ok(client) => {
                let mut call = std::pin::pin!(client.agent_info(wait));
                let short = self.options.timeout.min(wait);
                let answered = match tokio::time::timeout(short, &mut call).await {
                    Ok(answered) => Ok(answered),
                    Err(_) => {
                        missed = true;
                        self.misses.inc();
                        tracing::info!(
                            host_id = host.id,
                            "heartbeat missed: no answer in {}; still waiting",
                            humantime::format_duration(short)
                        );
                        tokio::time::timeout(wait.saturating_sub(short), call).await
                    }
                };
                match answered {
                    Ok(Ok(info)) => Ok(info),
                    Ok(Err(error)) => Err(error.reason()),
                    Err(_) => Err(format!("no answer in {}", humantime::format_duration(wait))),
                }
            }
            Err(e) => Err(e.reason()),
        };
        if answer.is_err() && !missed {
            self.misses.inc();
        }
        match answer {
            Ok(info) => {
                let summary = agent_client::summary(&info);
                let now = now_millis();
                let reasoned = self.reasoned.lock().remove(&host.id);
                if !reasoned && !must_record(host, &summary, now, self.options.offline_grace / 2) {
                    return Ok(());
                }
                if host.status != HostStatus::Online {
                    tracing::info!(host_id = host.id, "host is ONLINE");
                }
                self.store.record_heartbeat(host.id, &summary, now).await
            }
            Err(reason) => {
                // Shown at once, before the grace is over: a refused certificate will
                // not mend by waiting, and the operator should not wait to learn of it.
                self.store.set_host_reason(host.id, &reason).await?;
                self.reasoned.lock().insert(host.id);
                match self.store.get_host(host.id).await? {
                    Some(host) => self.judge(&host, &reason).await,
                    None => Ok(()),
                }
            }
        }
    }

    /// OFFLINE once nothing was heard from the agent for the whole grace, counted from
    /// its last answer to anything (a heartbeat or a step's call), and at the earliest a
    /// grace after this controller began checking the host.
    async fn judge(&self, host: &Host, reason: &str) -> Result<(), StoreError> {
        let heard = host
            .last_available_time
            .max(self.agents.last_answer(host.id));
        let checked_since = self.since.lock().get(&host.id).copied();
        let silent = silent_for_grace(
            heard.max(checked_since).unwrap_or(host.create_time),
            now_millis(),
            self.options.offline_grace,
        );
        if silent && host.status != HostStatus::Offline {
            tracing::warn!(host_id = host.id, "host is OFFLINE: {reason}");
            // The last answer this controller heard goes with the verdict, so the store
            // (and every controller reading it) says when the agent was last heard.
            self.store
                .set_host_status(host.id, HostStatus::Offline, heard)
                .await?;
        }
        Ok(())
    }
}

/// Whether a host last heard of (or first checked by this controller) at `since` has
/// been silent for the whole grace at `now`.
fn silent_for_grace(since: Millis, now: Millis, grace: Duration) -> bool {
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(since) >= grace
}

/// Whether an answer of the host's agent must be written to the store: when it changes
/// what the store says of the host (its status, the reason it was unreachable, what
/// the agent says of itself), and otherwise once its stored last answer is `refresh`
/// old. Between those writes the answer is kept in memory (the agent pool's last
/// answer, which the faces show); the refresh bounds how stale the store is for a
/// controller that takes the host over, so that it does not judge a live host by an
/// old answer. A steady fleet thus costs the single writer a fraction of a write per
/// host and round instead of one transaction each.
fn must_record(host: &Host, summary: &AgentSummary, now: Millis, refresh: Duration) -> bool {
    let refresh = i64::try_from(refresh.as_millis()).unwrap_or(i64::MAX);
    host.status != HostStatus::Online
        || host.status_reason.is_some()
        || host.agent != *summary
        || host
            .last_available_time
            .is_none_or(|at| now.saturating_sub(at) >= refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(at: Millis) -> (Host, AgentSummary) {
        let summary = AgentSummary {
            version: "4.2.1".into(),
            install_home: "/home/admin/ocp_agent".into(),
            log_home: "/home/admin/ocp_agent/log".into(),
            status: "STARTED".into(),
        };
        let host = Host {
            id: 1,
            name: "h".into(),
            inner_ip_address: "10.0.0.1".into(),
            agent_port: 62888,
            status: HostStatus::Online,
            last_available_time: Some(at),
            agent: summary.clone(),
            create_time: 0,
            update_time: at,
            status_reason: None,
        };
        (host, summary)
    }

    const REFRESH: Duration = Duration::from_secs(15);

    #[test]
    fn a_host_taken_over_gets_a_whole_grace_from_its_new_checker() {
        let grace = Duration::from_secs(30);
        let now = 1_000_000;
        // The store's answer trails by up to the refresh: 25 s old at the takeover.
        let stored = Some(now - 25_000);
        let checked_since = Some(now - 1_000);
        let since = stored.max(checked_since).expect("since");
        assert!(!silent_for_grace(since, now, grace));
        assert!(!silent_for_grace(since, now + 28_999, grace));
        assert!(silent_for_grace(since, now + 29_000, grace));
        // A host it has checked all along goes by its last answer alone.
        assert!(silent_for_grace(now - 30_000, now, grace));
    }

    #[test]
    fn a_steady_host_is_written_only_once_its_stored_answer_is_old() {
        let (host, summary) = online(100_000);
        assert!(!must_record(&host, &summary, 100_000 + 14_999, REFRESH));
        assert!(must_record(&host, &summary, 100_000 + 15_000, REFRESH));
    }

    #[test]
    fn a_change_of_status_reason_or_agent_is_written_at_once() {
        let now = 100_001;
        let (mut host, summary) = online(100_000);
        host.status = HostStatus::Offline;
        assert!(must_record(&host, &summary, now, REFRESH));
        host.status = HostStatus::New;
        assert!(must_record(&host, &summary, now, REFRESH));
        let (mut host, summary) = online(100_000);
        host.status_reason = Some("connection refused".into());
        assert!(must_record(&host, &summary, now, REFRESH));
        let (host, mut summary) = online(100_000);
        summary.version = "4.2.2".into();
        assert!(must_record(&host, &summary, now, REFRESH));
        let (mut host, summary) = online(100_000);
        host.last_available_time = None;
        assert!(must_record(&host, &summary, now, REFRESH));
    }
}
