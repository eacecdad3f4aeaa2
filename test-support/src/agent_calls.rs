//! A client calling an agent in a loop, as a monitoring probe would, to see whether the
//! agent answers throughout something (an upgrade in place) and how late at worst.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::agent::v1::GetAgentInfoRequest;
use proto::agent::v1::agent_service_client::AgentServiceClient;
use tonic::transport::Channel;

/// What the loop saw.
#[derive(Debug, Default)]
pub struct Pestered {
    /// The calls that got no answer, as their errors read.
    pub errors: Vec<String>,
    /// The slowest answer.
    pub slowest: Duration,
    pub calls: u32,
}

/// Calls GetAgentInfo back to back on `client` until `stop`. A call the agent never
/// took, because the connection it was on was closing (an agent's GOAWAY), comes back
/// CANCELLED when it was still queued, or refused by the GOAWAY when it was already on
/// its way ([`trust::untaken`]); it is sent again, once, as gRPC's transparent retry
/// does (tonic has none): the agent refused nothing, and a second failure counts.
pub fn pester(
    mut client: AgentServiceClient<Channel>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Pestered> {
    tokio::spawn(async move {
        let mut seen = Pestered::default();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let mut answer = client.get_agent_info(GetAgentInfoRequest {}).await;
            if answer
                .as_ref()
                .is_err_and(|e| e.code() == tonic::Code::Cancelled || trust::untaken(e))
            {
                answer = client.get_agent_info(GetAgentInfoRequest {}).await;
            }
            if let Err(e) = answer {
                seen.errors.push(e.to_string());
            }
            seen.slowest = seen.slowest.max(started.elapsed());
            seen.calls += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen
    })
}
