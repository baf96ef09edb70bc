//! Where the platform repo comes from: a Git remote polled with libgit2, or a local
//! directory watched for changes. Either way the result is an owned [`Snapshot`] — the
//! files of one revision as path → bytes — which the renderer takes.
//!
//! The source never runs libgit2 or a file walk on the async runtime: each poll is one
//! `spawn_blocking` job returning an owned result. It keeps the last good snapshot, so a
//! remote that is down (or a ref that vanished) keeps the clusters on what they have.
//!
//! `charts` fetches the remote charts a revision pins (chart repositories, OCI
//! registries) into a cache by digest, so rendering them needs no network.

pub mod charts;
pub mod dir;
pub mod git;
pub mod watch;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{SourceConfig, SourceLocation};
use crate::model::Skipped;

/// The files of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Commit id, or a content hash for a directory source.
    pub revision: String,
    /// Path relative to the repo root, `/`-separated → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Entries that were not read: symlinks and submodules (never followed), names that
    /// are not UTF-8, files too large or unreadable. Render fails what each belongs to.
    pub skipped: Vec<Skipped>,
    pub author: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("remote unavailable: {0}")]
    Remote(String),
    #[error("ref: {0}")]
    Ref(String),
    #[error("cache: {0}")]
    Cache(String),
    #[error("reading directory: {0}")]
    Directory(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl SourceError {
    /// Short kind for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Auth(_) => "auth",
            SourceError::Remote(_) => "remote",
            SourceError::Ref(_) => "ref",
            SourceError::Cache(_) => "cache",
            SourceError::Directory(_) => "directory",
            SourceError::Timeout(_) => "timeout",
        }
    }
}

/// The outcome of one poll, with the snapshot to serve either way.
#[derive(Debug, Clone)]
pub struct PollResult {
    /// Set when a new revision arrived.
    pub new: Option<Arc<Snapshot>>,
    /// A force push or branch rollback was seen.
    pub forced: bool,
    pub error: Option<SourceError>,
    pub duration: Duration,
}

/// A configured source with its last good snapshot.
pub struct Source {
    kind: Kind,
    last: Option<Arc<Snapshot>>,
}

/// Reads any commit of a Git source again, off the async runtime: what a restarted
/// daemon renders for a unit that runs an older commit than the newest.
#[derive(Clone)]
pub struct History(git::GitTarget);

impl History {
    pub async fn snapshot(&self, revision: &str) -> Result<Arc<Snapshot>, SourceError> {
        let (target, revision) = (self.0.clone(), revision.to_owned());
        tokio::task::spawn_blocking(move || git::read_revision(&target, &revision))
            .await
            .unwrap_or_else(|e| Err(SourceError::Cache(format!("read task failed: {e}"))))
            .map(Arc::new)
    }
}

enum Kind {
    Git(git::GitTarget),
    Dir(std::path::PathBuf),
}

impl Source {
    pub fn from_config(cfg: &SourceConfig) -> Result<Source, SourceError> {
        let kind = match &cfg.location {
            SourceLocation::Git { url, git_ref, auth } => {
                // One cache per URL, so two configs never share a repository by accident.
                let digest = {
                    use sha2::Digest;
                    hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8])
                };
                Kind::Git(git::GitTarget {
                    url: url.clone(),
                    git_ref: git_ref.clone(),
                    cache_dir: cfg.cache_dir.join(digest),
                    auth: git::ResolvedAuth::from_config(auth)?,
                    timeout: cfg.timeout,
                })
            }
            SourceLocation::Directory(p) => Kind::Dir(p.clone()),
        };
        Ok(Source { kind, last: None })
    }

    pub fn git(target: git::GitTarget) -> Source {
        Source {
            kind: Kind::Git(target),
            last: None,
        }
    }

    pub fn last(&self) -> Option<Arc<Snapshot>> {
        self.last.clone()
    }

    /// Where a Git source fetches from (None for a directory).
    pub fn git_target(&self) -> Option<&git::GitTarget> {
        match &self.kind {
            Kind::Git(t) => Some(t),
            Kind::Dir(_) => None,
        }
    }

    /// Older revisions of a Git source (None for a directory, which keeps no history).
    pub fn history(&self) -> Option<History> {
        self.git_target().cloned().map(History)
    }

    /// The folder a directory source watches.
    pub fn directory(&self) -> Option<&std::path::Path> {
        match &self.kind {
            Kind::Dir(p) => Some(p),
            Kind::Git(_) => None,
        }
    }

    /// Polls once, off the async runtime.
    pub async fn poll(&mut self) -> PollResult {
        let started = Instant::now();
        let last_rev = self.last.as_ref().map(|s| s.revision.clone());
        let outcome = match &self.kind {
            Kind::Git(t) => {
                let t = t.clone();
                tokio::task::spawn_blocking(move || git::poll(&t, last_rev.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(SourceError::Cache(format!("poll task failed: {e}"))))
            }
            Kind::Dir(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || dir::read(&p))
                    .await
                    .unwrap_or_else(|e| {
                        Err(SourceError::Directory(format!("read task failed: {e}")))
                    })
                    .map(|snapshot| {
                        if last_rev.as_deref() == Some(snapshot.revision.as_str()) {
                            git::Polled::Unchanged
                        } else {
                            git::Polled::Changed {
                                snapshot,
                                forced: false,
                            }
                        }
                    })
            }
        };
        let mut result = PollResult {
            new: None,
            forced: false,
            error: None,
            duration: started.elapsed(),
        };
        match outcome {
            Ok(git::Polled::Unchanged) => {}
            Ok(git::Polled::Changed { snapshot, forced }) => {
                let snapshot = Arc::new(snapshot);
                self.last = Some(snapshot.clone());
                result.new = Some(snapshot);
                result.forced = forced;
            }
            Err(e) => result.error = Some(e),
        }
        result
    }
}
