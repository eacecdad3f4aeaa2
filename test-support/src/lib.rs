//! What the workspace's tests share, written once: free ports, whether a pid lives,
//! where cargo put the binaries, users files, a launched `ocp-controller`, a test PKI
//! and a `/metrics` scrape read as Prometheus reads it.
//!
//! It depends on no crate of the workspace but `trust` and `proto`, so every crate's
//! integration tests (and xtask) may use it without linking a second copy of the crate
//! under test.

pub mod agent_calls;
pub mod bins;
pub mod controller;
pub mod pki;
pub mod ports;
pub mod procs;
pub mod scrape;
pub mod users;

use std::time::Duration;

pub use ports::{free_port, port_free_on};

/// Generous, so a slow machine passes; every wait polls a condition, so a fast one
/// does not sit out the whole of it.
pub const WAIT: Duration = Duration::from_secs(60);
