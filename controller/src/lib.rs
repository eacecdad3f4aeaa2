//! ocp-controller: host inventory, durable DAG tasks, and their gRPC and REST faces.
//!
//! What the binary and the tests need is public: the server, its options, the store,
//! the core's admission table, the users and credentials, the model. The faces, the
//! engine, the agent client and the metrics are the crate's own.

pub mod auth;
pub mod heartbeat;
pub mod lifecycle;
pub mod model;
pub mod plans;
pub mod service;
pub mod store;
pub mod trace;

pub(crate) mod agent_client;
pub(crate) mod console;
pub(crate) mod engine;
pub(crate) mod gateway;
pub(crate) mod grpc;
pub(crate) mod membership;
pub(crate) mod metrics;
pub(crate) mod rollout;
pub(crate) mod throttle;
pub(crate) mod time;

pub use lifecycle::{Controller, ControllerOptions, StartError};
