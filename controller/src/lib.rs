//! ocp-controller: host inventory, durable DAG tasks, and their gRPC and REST faces.

pub mod agent_client;
pub mod auth;
pub mod console;
pub mod engine;
pub mod gateway;
pub mod grpc;
pub mod heartbeat;
pub mod metrics;
pub mod model;
pub mod plans;
pub mod rollout;
pub mod server;
pub mod service;
pub mod store;
pub mod throttle;
pub mod time;
pub mod trace;

pub use server::{Controller, ControllerOptions, StartError};
