//! ocp-agent: a process supervisor for one host, served over gRPC
//! (`ocp.agent.v1.AgentService`, see docs/agent.md).
//!
//! [`Agent::start`] is the whole agent, usable from tests: it serves on the given
//! address (port 0 for a free one) until its cancellation token fires.

mod cgroup;
mod child;
mod child_log;
mod cluster;
pub mod config;
mod data_dir;
mod group;
mod grpc;
pub mod handover;
mod leftovers;
mod lifecycle;
mod limits;
mod log_tail;
mod metrics;
mod operator_gate;
mod package;
mod policy;
mod process_info;
mod procfs;
mod ready;
mod sockdiag;
mod spawn;
mod supervisor;
mod upgrade;
pub mod versions;

pub use cluster::{ClusterError, forget as forget_cluster};
pub use config::{Config, ConfigError};
pub use lifecycle::{Agent, AgentError, AgentOptions, Serving, cold_start};
pub use trust::{ConnLimits, ServerTlsFiles};
