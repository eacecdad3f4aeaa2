//! Scenario 3, our side: one process restarted through the agent's gRPC API directly,
//! and through the controller's REST route that an OCP client calls, in either
//! transport (the fleet's).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::agent::v1::ProcessRequest;
use proto::agent::v1::agent_service_client::AgentServiceClient;

use super::BenchError;
use super::report::Latency;
use crate::dial::Dialer;
use crate::fleet::Pki;
use crate::rest::Rest;

/// Over TLS (with `pki`), the agent is dialled as the controller dials it: with the
/// controller's certificate, the only client it serves.
pub fn agent_grpc(
    rt: &tokio::runtime::Runtime,
    agent: SocketAddr,
    pki: Option<&Pki>,
    alias: &str,
    rounds: usize,
) -> Result<Latency, BenchError> {
    rt.block_on(async {
        let dialer = Dialer::agents(pki).await?;
        let mut client = AgentServiceClient::new(dialer.connect(agent).await?);
        let mut samples = Vec::with_capacity(rounds);
        // One untimed round first: the connection's and the agent's first call.
        for _ in 0..=rounds {
            let sent = Instant::now();
            client
                .restart_process(ProcessRequest {
                    alias: alias.to_string(),
                    timeout_ms: 0,
                })
                .await
                .map_err(|status| BenchError::Grpc {
                    what: format!("RestartProcess {alias}"),
                    status: Box::new(status),
                })?;
            samples.push(sent.elapsed());
        }
        samples.remove(0);
        Ok(Latency::of("agent gRPC RestartProcess", samples).over_tls(dialer.is_tls()))
    })
}

/// The REST route answers once the operation finished, like `supervisorctl restart`.
pub fn controller_rest(
    rest: &Rest,
    tls: bool,
    host_id: i64,
    alias: &str,
    rounds: usize,
) -> Result<Latency, BenchError> {
    let list = rest.get(&format!("/api/v2/compute/hosts/{host_id}/agent/processes"))?;
    let process_id = list["contents"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["alias"] == alias))
        .and_then(|p| p["id"].as_i64())
        .ok_or_else(|| {
            BenchError::Failed(format!("no process {alias} on host {host_id}: {list}"))
        })?;
    let path = format!("/api/v2/compute/hosts/{host_id}/agent/processes/{process_id}/restart");
    let mut samples: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let sent = Instant::now();
        rest.post_empty(&path)?;
        samples.push(sent.elapsed());
    }
    Ok(Latency::of("controller REST process restart", samples).over_tls(tls))
}
