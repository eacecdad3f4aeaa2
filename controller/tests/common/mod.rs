#![allow(dead_code, unused_imports)]
//! Shared helpers of the controller's integration tests.

pub mod binary;
pub mod controllers;
pub mod fleet;
pub mod metrics;
pub mod netns;
pub mod proc_agent;
pub mod slow_link;
pub mod stores;
