//! Mutual TLS between `ocp-controller` and its agents (docs/trust.md): the built-in CA
//! that issues every certificate, the role each certificate carries, and TLS for both
//! ends that re-reads its files on demand, so that SIGHUP rotates them without a restart.
//!
//! An agent can stop every database process of its host, so it serves only clients
//! whose certificate chains to the fleet's CA *and* was issued for the controller or an
//! operator (whom the agent serves read-only, from the role each connection carries in
//! its [`ConnInfo`]); the controller, in turn, talks to an agent only when the agent's
//! certificate names the host's address. These checks live here, once, for both
//! binaries.

mod client;
mod files;
mod incoming;
mod listener;
pub mod pki;
mod plaintext;
mod rate_log;
mod refusal;
mod role;
mod server_tls;
pub mod strict;
mod untaken;
mod waiting;

pub use client::{AgentConnector, ClientTls, ClientTlsFiles};
pub use files::TrustError;
pub use incoming::ConnInfo;
pub use listener::{Conn, ConnLimits, Incoming, parse_timeout};
pub use refusal::{Refusal, causes, refusal};
pub use role::{OPERATOR_METHODS, Role};
pub use server_tls::{ServerTls, ServerTlsFiles};
pub use untaken::untaken;

/// rustls needs one process-wide crypto provider when more than one could be compiled
/// in; this workspace builds with ring only, and every config here names it directly.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
