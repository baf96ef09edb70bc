//! Starts the real servers the integration tests talk to, and stops every process it
//! started when the test binary exits, also when a test panics.
#![allow(dead_code)]

pub mod audit;
pub mod control_plane;
pub mod daemon;
pub mod daemon_config;
pub mod exposition;
pub mod fixtures;
pub mod git;
pub mod gitea;
pub mod inventory;
pub mod npm;
pub mod prism;
pub mod registry;
pub mod script;
pub mod slow_link;
