//! Integration tests against real servers. One binary, so one link step and one shared
//! control plane; each test works in namespaces of its own.

#[path = "../support/mod.rs"]
mod support;

mod adoption;
mod alerts;
mod audit_packages;
mod big_inventory;
mod chart_cache;
mod charts;
mod cli;
mod clusters;
mod components;
mod control_plane;
mod crash;
mod daemon;
mod depends;
mod deploy;
mod drift;
mod drift_bursts;
mod example;
mod faults;
mod forge;
mod gitea;
mod github;
mod health_rules;
mod hold;
mod leader;
mod manifests;
mod namespaces;
mod notifications;
mod notify_rollout;
mod owners;
mod packages;
mod page;
mod plans;
mod policies;
mod prometheus;
mod prune_safety;
mod rbac;
mod rebuild;
mod restart;
mod resume;
mod rollouts;
mod scheduler;
mod shard_view;
mod shards;
mod sops;
mod source;
mod ssh;
mod stages;
mod suspend;
mod sync;
mod units;
mod webhook_secrets;
mod webhooks;
