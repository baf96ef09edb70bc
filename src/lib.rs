//! pontoon: a GitOps reconciliation daemon for platform teams.
//!
//! One platform repository says, per team, what should run on which clusters, in the
//! platform's own abstractions. pontoon renders it per team, applies it with server-side
//! apply, prunes what was removed, corrects drift, and reports every (team, cluster) sync.
//! `main.rs` only wires the CLI to this library, so tests and benchmarks reach everything.

pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod drift;
pub mod expand;
pub mod model;
pub mod notify;
pub mod render;
pub mod server;
pub mod sops;
pub mod source;
pub mod ssa;
pub mod status;
pub mod sync;
pub mod units;
pub mod yaml;

/// An error with its causes, outermost first: transport errors say little on their own
/// ("client error (Connect)"); the cause says what happened (a refused connection, a
/// timeout, a certificate). A cause whose text its parent already holds is skipped.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod layers;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        source: Option<Box<Layer>>,
    }

    #[test]
    fn describe_adds_each_cause_its_parent_does_not_already_say() {
        let e = Layer {
            text: "ServiceError: client error (Connect)",
            source: Some(Box::new(Layer {
                text: "client error (Connect)",
                source: Some(Box::new(Layer {
                    text: "tcp connect error: Connection refused (os error 111)",
                    source: None,
                })),
            })),
        };
        assert_eq!(
            describe(&e),
            "ServiceError: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }
}
