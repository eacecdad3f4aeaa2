//! Developer tasks around the two binaries: the demo fleet a newcomer runs with
//! `cargo xtask demo`, the benchmarks of `cargo xtask bench`, and the pieces the
//! end-to-end test shares with them.

pub mod bench;
pub mod browser;
pub mod demo;
pub mod demo_upgrade;
pub mod dial;
pub mod fleet;
pub mod progress;
pub mod rest;
pub mod upgrade;
