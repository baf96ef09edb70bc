//! What can go wrong while watching for drift and acting on it, and where it goes: every
//! failure is sent to the daemon (which counts it and shows it on the unit), and logged
//! as a warning. Drift that cannot be watched or corrected is never only a debug line.

use tokio::sync::mpsc;

use crate::cluster::ClusterError;
use crate::desired::{ClusterName, ObjectKey, TeamName};

/// One way watching or correcting drift failed.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// A kind a unit manages cannot be found on the cluster: it is not watched.
    #[error("cannot watch {api_version} {kind}: {source}")]
    Resolve {
        api_version: String,
        kind: String,
        source: ClusterError,
    },
    /// The watch of a kind failed; it retries with backoff.
    #[error("the watch of {kind} failed (retrying): {source}")]
    Watch {
        kind: String,
        source: kube::runtime::watcher::Error,
    },
    /// A drifted object could not be read again after its team's sync.
    #[error("cannot read {object} again after its team's sync: {source}")]
    ReadAgain {
        object: ObjectKey,
        source: kube::Error,
    },
    /// No client to act as the object's applier.
    #[error("cannot remove fields added by hand to {object}: {source}")]
    Client {
        object: ObjectKey,
        source: ClusterError,
    },
    #[error("cannot build the patch removing fields added by hand to {object}: {source}")]
    BuildPatch {
        object: ObjectKey,
        source: serde_json::Error,
    },
    /// The patch was refused, most often because the object changed again since it was
    /// read: the next change decides afresh.
    #[error("removing fields added by hand to {object} failed: {source}")]
    RemoveAdditions {
        object: ObjectKey,
        source: kube::Error,
    },
    #[error("cannot publish the Kubernetes Event about {object}: {source}")]
    PublishEvent {
        object: ObjectKey,
        source: kube::Error,
    },
    /// Too much drift at once: the bounded queue of a cluster's drift reports or side
    /// writes is full, and this one is dropped (the next change or resync catches up).
    #[error("the drift queue is full: {what} was dropped")]
    QueueFull { what: &'static str },
    /// A side write (a removal patch, an Event) did not finish in time.
    #[error("{what} timed out after {after:?}")]
    WriteTimedOut {
        what: &'static str,
        after: std::time::Duration,
    },
}

/// What a drift failure concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureScope {
    /// The watch of a whole kind: every unit of the cluster.
    Kind(String),
    /// One of the team's objects.
    Team(TeamName),
}

/// A drift failure on one cluster, for the daemon to count and show.
#[derive(Debug)]
pub struct DriftFailure {
    pub cluster: ClusterName,
    pub scope: FailureScope,
    pub error: DriftError,
}

/// Where one cluster's drift failures go.
#[derive(Clone)]
pub(super) struct FailureSink {
    cluster: ClusterName,
    tx: mpsc::Sender<DriftFailure>,
}

impl FailureSink {
    pub(super) fn new(cluster: ClusterName, tx: mpsc::Sender<DriftFailure>) -> Self {
        FailureSink { cluster, tx }
    }

    /// A failure about one of `team`'s objects.
    pub(super) fn object(&self, team: &TeamName, error: DriftError) {
        self.send(FailureScope::Team(team.clone()), error);
    }

    /// A failure of the watch of `kind`.
    pub(super) fn kind(&self, kind: &str, error: DriftError) {
        self.send(FailureScope::Kind(kind.to_owned()), error);
    }

    fn send(&self, scope: FailureScope, error: DriftError) {
        tracing::warn!(cluster = %self.cluster, ?scope, error = %crate::describe(&error), "drift cannot be watched or acted on");
        let failure = DriftFailure {
            cluster: self.cluster.clone(),
            scope,
            error,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(failure) {
            tracing::warn!(cluster = %self.cluster, "drift failure queue full; a failure was not counted");
        }
    }
}
