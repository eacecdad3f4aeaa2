//! Hosts, what their agents say of themselves, and their supervised processes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Millis, UnknownWord};

words!(
    /// ONLINE/OFFLINE come from heartbeats; NEW until the first one.
    HostStatus { New = "NEW", Online = "ONLINE", Offline = "OFFLINE" }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: i64,
    pub name: String,
    pub inner_ip_address: String,
    pub agent_port: u16,
    pub status: HostStatus,
    pub last_available_time: Option<Millis>,
    pub agent: AgentSummary,
    pub create_time: Millis,
    pub update_time: Millis,
    /// Why its agent could not be reached at the last check; `None` once it answered.
    pub status_reason: Option<String>,
}

impl Host {
    /// The agent's gRPC endpoint, over TLS or not.
    pub fn agent_uri(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        if self.inner_ip_address.contains(':') {
            format!("{scheme}://[{}]:{}", self.inner_ip_address, self.agent_port)
        } else {
            format!("{scheme}://{}:{}", self.inner_ip_address, self.agent_port)
        }
    }
}

/// What the host's agent last said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    pub version: String,
    pub install_home: String,
    pub log_home: String,
    /// STARTED, STOPPED, or UNKNOWN before the agent was first reached.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub inner_ip_address: String,
    pub agent_port: u16,
}

/// One supervised process of a host, with the stable id the controller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    pub id: i64,
    pub host_id: i64,
    pub snapshot: ProcessSnapshot,
    pub create_time: Millis,
    pub update_time: Millis,
}

/// A process as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSnapshot {
    pub alias: String,
    pub pid: i64,
    pub user: String,
    pub start_command: String,
    /// Comma-separated, as OCP shows them.
    pub ports: String,
    pub elapsed_time: i64,
    pub last_active_time: Option<Millis>,
    /// STARTED or STOPPED.
    pub status: String,
    pub operable: bool,
    pub log_file_pattern: String,
}

impl ProcessSnapshot {
    /// The pid in OCP's 32-bit field: a pid beyond it does not exist on Linux, and 0 is
    /// OCP's "no process".
    pub fn wire_pid(&self) -> i32 {
        i32::try_from(self.pid).unwrap_or(0)
    }
}
