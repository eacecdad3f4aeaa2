//! `cargo xtask bench`: what the product exists for, measured on this machine against
//! what an operator would use instead (Ansible, supervisord), with one command, and
//! what mutual TLS costs: each of our figures is measured in plaintext and with TLS;
//! and what rolling a restart batch by batch costs against the stage-wise DAG.
//! One controller on SQLite throughout, then two on one PostgreSQL database; how
//! promptly one agent answers while it starts 50 processes, and while it is upgraded
//! in place.
//!
//! Everything runs from release binaries: a debug xtask builds them, itself included,
//! and hands over to the release xtask so that the load tool is not the bottleneck.

mod agent_latency;
mod ansible;
mod chart;
mod cli;
mod console;
mod fleet_restart;
mod goals;
mod python;
mod release;
pub mod report;
mod restart;
mod rolling;
mod run;
mod scenarios;
mod supervisord;
mod sys;
mod table;
mod throughput;
mod two_controllers;
mod upgrade;

pub use cli::{BenchArgs, Only};
pub use run::run;

use crate::dial::DialError;
use crate::fleet::FleetError;
use crate::rest::{CaError, RestError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {status}")]
    Grpc {
        what: String,
        status: Box<tonic::Status>,
    },
    #[error(transparent)]
    Browser(#[from] crate::browser::BrowserError),
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}
