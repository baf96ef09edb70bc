//! The long-running process: triggers (poll timer, webhooks, local watch, drift, resync)
//! feed one scheduler of per-unit workers; results feed status, metrics and commit
//! statuses.

pub mod leader;
pub mod scheduler;
