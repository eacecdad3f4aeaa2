//! Checks every agent on an interval and keeps each host ONLINE or OFFLINE.
//!
//! A host whose agent stops answering stays as it was for `offline_grace` (a restart of
//! the agent is not an outage), then goes OFFLINE; one answer brings it back ONLINE.
//! Checks run concurrently, bounded, so a large fleet is covered within one interval.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use proto::agent::v1::GetAgentInfoRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agents::{self, AgentPool, CallOrigin};
use crate::model::{Host, HostStatus, now_millis};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct HeartbeatOptions {
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    pub offline_grace: Duration,
    /// How many hosts are checked at once.
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
}

impl Heartbeat {
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.check_all().await {
                tracing::warn!("heartbeat round failed: {e}");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.options.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn check_all(&self) -> Result<(), StoreError> {
        let hosts = self.store.all_hosts().await?;
        futures::stream::iter(hosts)
            .for_each_concurrent(self.options.concurrency.max(1), |host| async move {
                if let Err(e) = self.check(&host).await {
                    tracing::warn!(host_id = host.id, "recording heartbeat failed: {e}");
                }
            })
            .await;
        Ok(())
    }

    async fn check(&self, host: &Host) -> Result<(), StoreError> {
        let answer = match self.agents.client(host) {
            Ok(mut client) => {
                let request = agents::request(
                    GetAgentInfoRequest {},
                    self.options.timeout,
                    &CallOrigin::default(),
                );
                match tokio::time::timeout(self.options.timeout, client.get_agent_info(request))
                    .await
                {
                    Ok(Ok(info)) => Ok(info.into_inner()),
                    Ok(Err(status)) => Err(status.message().to_string()),
                    Err(_) => Err("no answer in time".to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let now = now_millis();
        match answer {
            Ok(info) => {
                if host.status != HostStatus::Online {
                    tracing::info!(host_id = host.id, "host is ONLINE");
                }
                self.store
                    .record_heartbeat(host.id, &agents::summary(&info), now)
                    .await?;
            }
            Err(reason) => {
                let since = host
                    .last_available_time
                    .max(self.agents.last_answer(host.id))
                    .unwrap_or(host.create_time);
                let grace =
                    i64::try_from(self.options.offline_grace.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(since) >= grace && host.status != HostStatus::Offline {
                    tracing::warn!(host_id = host.id, "host is OFFLINE: {reason}");
                    self.store
                        .set_host_status(host.id, HostStatus::Offline, None)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
