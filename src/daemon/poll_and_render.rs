//! Polling the source and rendering what it finds: polls on a timer that webhooks and the
//! directory watch cut short, renders each new revision off the async runtime, and
//! publishes the desired state to the scheduler. A failed poll keeps the last state; a render that breaks platform.yaml is
//! published too (it changes nothing, and the board shows why).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use tokio::sync::{Notify, watch};

use crate::config::{GitRef, SourceConfig, SourceLocation, WebhookAuth};
use crate::desired::{ClusterName, DesiredState, NamespaceOwners, Owner};
use crate::sops::Keyring;
use crate::source::{Snapshot, Source, webhook};
use crate::sync::Syncer;

/// Source metrics, registered in one place.
#[derive(Clone)]
pub struct SourceMetrics {
    pub last_fetch: GaugeVec,
    pub fetches: IntCounterVec,
    pub duration: Histogram,
    pub errors: IntCounterVec,
    pub revision: GaugeVec,
    pub webhooks: IntCounterVec,
    pub diagnostics: GaugeVec,
}

impl SourceMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<SourceMetrics> {
        let m = SourceMetrics {
            last_fetch: GaugeVec::new(
                Opts::new(
                    "pontoon_source_last_fetch_timestamp_seconds",
                    "When the source was last polled, by result",
                ),
                &["result"],
            )?,
            fetches: IntCounterVec::new(
                Opts::new(
                    "pontoon_source_fetches_total",
                    "Polls of the source, by result",
                ),
                &["result"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "pontoon_source_fetch_duration_seconds",
                    "Duration of one poll (ref check, and fetch when it moved)",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "pontoon_source_errors_total",
                    "Failed polls, by kind of error",
                ),
                &["kind"],
            )?,
            revision: GaugeVec::new(
                Opts::new(
                    "pontoon_source_revision_info",
                    "1 for the revision currently rendered",
                ),
                &["revision"],
            )?,
            webhooks: IntCounterVec::new(
                Opts::new(
                    "pontoon_webhook_requests_total",
                    "Webhook requests, by provider and result",
                ),
                &["provider", "result"],
            )?,
            diagnostics: GaugeVec::new(
                Opts::new(
                    "pontoon_render_diagnostics",
                    "Diagnostics of the last render, by severity",
                ),
                &["severity"],
            )?,
        };
        r.register(Box::new(m.last_fetch.clone()))?;
        r.register(Box::new(m.fetches.clone()))?;
        r.register(Box::new(m.duration.clone()))?;
        r.register(Box::new(m.errors.clone()))?;
        r.register(Box::new(m.revision.clone()))?;
        r.register(Box::new(m.webhooks.clone()))?;
        r.register(Box::new(m.diagnostics.clone()))?;
        // Known label values start at 0, so rate() and alerts see the first increment.
        for result in ["success", "error"] {
            m.fetches.with_label_values(&[result]);
        }
        for kind in ["auth", "remote", "ref", "cache", "directory", "timeout"] {
            m.errors.with_label_values(&[kind]);
        }
        for provider in ["github", "gitea", "gitlab"] {
            for result in ["poll", "plan", "busy", "ignored", "unauthorized"] {
                m.webhooks.with_label_values(&[provider, result]);
            }
        }
        Ok(m)
    }
}

/// Renders off the async runtime (rendering is CPU work), after a render that gave each
/// namespace the owner in `earlier`, with the daemon's `owner` label on every object (once
/// here rather than at each sync of a unit).
/// Each team's SOPS files are decrypted with its key from `keys`.
pub async fn render(
    snapshot: Arc<Snapshot>,
    earlier: NamespaceOwners,
    owner: &Owner,
    keys: &Arc<Keyring>,
    packages: &super::packages::Packages,
) -> DesiredState {
    let expansions = packages.expand(&snapshot).await;
    let revision = snapshot.revision.clone();
    let kept = earlier.clone();
    let owner = owner.clone();
    let keys = keys.clone();
    tokio::task::spawn_blocking(move || {
        let mut state = crate::render::render_expanded(
            &snapshot.files,
            &snapshot.skipped,
            &snapshot.revision,
            &earlier,
            crate::render::Decryption::Keys(&keys),
            Some(today()),
            &expansions,
        );
        owner.stamp_state(&mut state);
        for skipped in &snapshot.skipped {
            tracing::warn!(entry = %skipped, "not read from the platform repo");
        }
        state.revision = snapshot.revision.clone();
        state
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "render task failed");
        DesiredState {
            revision,
            platform_failed: true,
            namespace_owners: kept,
            ..DesiredState::default()
        }
    })
}

/// Today's date in UTC: the day a render decides which policy exceptions still hold on.
pub fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

/// Who holds each of pontoon's Namespaces on the clusters, for a render with no earlier
/// one (the daemon's first, a pull request's plan before it, `pontoon plan` and `sync`).
/// A namespace the clusters disagree about, or that an unreachable cluster alone holds,
/// is left out: the repo then decides alone.
pub async fn namespace_owners(syncers: &BTreeMap<ClusterName, Arc<Syncer>>) -> NamespaceOwners {
    let asked = futures::future::join_all(syncers.iter().map(|(name, s)| async move {
        let answer = tokio::time::timeout(OWNERS_TIMEOUT, s.namespace_owners()).await;
        (name, answer)
    }))
    .await;
    let mut owners = NamespaceOwners::new();
    let mut disputed = BTreeSet::new();
    for (cluster, answer) in asked {
        let found = match answer {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(%cluster, error = %crate::describe(&e), "cannot read which team holds each namespace");
                continue;
            }
            Err(_) => {
                tracing::warn!(%cluster, timeout = ?OWNERS_TIMEOUT, "cannot read which team holds each namespace");
                continue;
            }
        };
        for (ns, team) in found {
            match owners.get(&ns) {
                Some(t) if *t != team => {
                    disputed.insert(ns);
                }
                _ => {
                    owners.insert(ns, team);
                }
            }
        }
    }
    owners.retain(|ns, _| !disputed.contains(ns));
    owners
}

const OWNERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The webhook routes for this source.
pub fn webhook_routes(
    cfg: &SourceConfig,
    wake: Arc<Notify>,
    metrics: &SourceMetrics,
    plan_requests: Option<tokio::sync::mpsc::Sender<webhook::PullRequest>>,
) -> anyhow::Result<axum::Router> {
    let secret = match &cfg.webhook {
        WebhookAuth::Off => return Ok(webhook::off_router(metrics.webhooks.clone())),
        WebhookAuth::Insecure => {
            tracing::warn!(
                "source.webhook.insecure is set: webhook requests are accepted unsigned, from anyone who can reach /webhooks/*"
            );
            None
        }
        WebhookAuth::Secret(r) => Some(webhook::read_secret(r)?),
    };
    let tracked_ref = match &cfg.location {
        SourceLocation::Git {
            git_ref: GitRef::Branch(b),
            ..
        } => Some(format!("refs/heads/{b}")),
        SourceLocation::Git {
            git_ref: GitRef::Tag(t),
            ..
        } => Some(format!("refs/tags/{t}")),
        _ => None,
    };
    Ok(webhook::router(webhook::WebhookState {
        secret,
        tracked_ref,
        wake,
        requests: metrics.webhooks.clone(),
        reviews: plan_requests,
        plan_forks: cfg.plan_forks,
    }))
}

/// What the daemon's first render starts from: who holds each namespace on the clusters,
/// and the daemon's own owner, whose label every rendered object carries.
pub struct RenderStart {
    pub namespace_owners: NamespaceOwners,
    pub owner: Owner,
    /// The age keys SOPS files are decrypted with.
    pub keys: Arc<Keyring>,
    /// How the packages of each revision are expanded.
    pub packages: Arc<super::packages::Packages>,
    /// Counts polls started and finished, for whoever wakes the loop and waits for the
    /// poll it asked for ([`PollNow`]).
    pub polls: watch::Sender<Polls>,
}

/// Polls started and finished so far. A poll is finished once what it brought is
/// rendered and published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polls {
    pub started: u64,
    pub finished: u64,
}

/// Counts a poll as finished when dropped, whichever way the poll ended.
struct PollDone<'a>(&'a watch::Sender<Polls>);

impl Drop for PollDone<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|p| p.finished += 1);
    }
}

/// The source polled on request: wakes the poll loop and waits until a poll that
/// started after the request is finished.
#[derive(Clone)]
pub struct PollNow {
    pub wake: Arc<Notify>,
    pub polls: watch::Receiver<Polls>,
}

impl PollNow {
    /// Returns once a poll started after this call is finished, or after `timeout`.
    pub async fn poll(&self, timeout: std::time::Duration) {
        let mut polls = self.polls.clone();
        let now = *polls.borrow_and_update();
        // A poll under way already may have read the repo before the request: the one
        // after it counts (the wake is kept for the loop's next turn).
        let target = if now.started > now.finished {
            now.started + 1
        } else {
            now.finished + 1
        };
        self.wake.notify_one();
        let _ = tokio::time::timeout(timeout, polls.wait_for(|p| p.finished >= target)).await;
    }
}

/// Polls until `stop` turns true, publishing each new render on `out`.
pub async fn poll_loop(
    mut source: Source,
    cfg: SourceConfig,
    wake: Arc<Notify>,
    metrics: SourceMetrics,
    out: watch::Sender<Option<Arc<DesiredState>>>,
    mut stop: watch::Receiver<bool>,
    start: RenderStart,
) {
    let (mut owners, owner, keys, packages) = (
        start.namespace_owners,
        start.owner,
        start.keys,
        start.packages,
    );
    let polls = start.polls;
    let mut tick = tokio::time::interval(cfg.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
            _ = wake.notified() => tracing::debug!("woken early by a webhook or a file change"),
        }
        polls.send_modify(|p| p.started += 1);
        let _done = PollDone(&polls);
        let polled = match tokio::time::timeout(cfg.timeout, source.poll()).await {
            Ok(p) => p,
            Err(_) => {
                metrics.fetches.with_label_values(&["error"]).inc();
                metrics.errors.with_label_values(&["timeout"]).inc();
                tracing::warn!(timeout = ?cfg.timeout, "poll timed out; serving the last good revision");
                continue;
            }
        };
        metrics.duration.observe(polled.duration.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if let Some(e) = &polled.error {
            metrics.fetches.with_label_values(&["error"]).inc();
            metrics.errors.with_label_values(&[e.kind()]).inc();
            metrics.last_fetch.with_label_values(&["error"]).set(now);
            tracing::warn!(error = %e, "poll failed; serving the last good revision");
            continue;
        }
        metrics.fetches.with_label_values(&["success"]).inc();
        metrics.last_fetch.with_label_values(&["success"]).set(now);
        let Some(snapshot) = polled.new else { continue };
        if polled.forced {
            tracing::warn!(revision = %snapshot.revision, "the tracked ref moved to a commit that does not descend from the last one (force push or rollback)");
        }
        tracing::info!(revision = %snapshot.revision, author = %snapshot.author, message = %snapshot.message, "new revision");
        let state = render(snapshot, owners, &owner, &keys, &packages).await;
        packages.published(&state.revision).await;
        owners = state.namespace_owners.clone();
        let errors = state
            .diagnostics
            .iter()
            .filter(|d| d.severity == crate::desired::Severity::Error)
            .count();
        metrics
            .diagnostics
            .with_label_values(&["error"])
            .set(errors as f64);
        metrics
            .diagnostics
            .with_label_values(&["warning"])
            .set((state.diagnostics.len() - errors) as f64);
        for d in &state.diagnostics {
            tracing::warn!(diagnostic = %d, "platform repo");
        }
        if let Some(old) = current.replace(state.revision.clone()) {
            let _ = metrics.revision.remove_label_values(&[&old]);
        }
        metrics
            .revision
            .with_label_values(&[&state.revision])
            .set(1.0);
        out.send_replace(Some(Arc::new(state)));
    }
}

/// Reads the config's age keys, off the runtime (file reads). An unreadable key stops
/// the daemon at start: running without it would fail every team that needs it.
pub async fn load_keys(config: &crate::config::DecryptionConfig) -> anyhow::Result<Arc<Keyring>> {
    let config = config.clone();
    let keys = tokio::task::spawn_blocking(move || config.keyring()).await??;
    Ok(Arc::new(keys))
}
