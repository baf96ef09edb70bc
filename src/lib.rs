//! pontoon: a GitOps reconciliation daemon for platform teams.
//!
//! One platform repository says, per team, what should run on which clusters, in the
//! platform's own abstractions. pontoon renders it per team, applies it with server-side
//! apply, prunes what was removed, corrects drift, and reports every (team, cluster) sync.
//! `main.rs` only wires the CLI to this library, so tests and benchmarks reach everything.

pub mod cluster;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod drift;
pub mod model;
pub mod render;
pub mod server;
pub mod source;
pub mod status;
pub mod sync;
pub mod yaml;
