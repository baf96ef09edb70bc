//! Notifications: a unit's state changes told to people, on Slack, Microsoft Teams or a
//! signed generic webhook. This engine owns what an [`Event`] is (`event`), the body each
//! receiver takes (`payload`), one request to a receiver (`receiver`) and each receiver's
//! ordered, retrying queue (`outbox`); [`Notifier`] routes an event to the platform's
//! receivers and the team's, once. Deciding *when* a unit's state changed is the daemon's
//! (`daemon::notifications`).
//!
//! It never delays a sync: [`Notifier::send`] only queues.

pub mod event;
pub mod outbox;
pub mod payload;
pub mod receiver;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use event::{Event, EventKind, Tone};

use crate::config::NotificationsConfig;
use outbox::{Outbox, OutboxMetrics, Retry};
use receiver::Receiver;

/// Events remembered as sent (for "once"), oldest forgotten first.
const MAX_REMEMBERED: usize = 50_000;

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot build the HTTP client for notifications: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot register the notification metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The keys of events already queued, bounded.
#[derive(Default)]
struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time `key` is seen.
    fn first(&mut self, key: String) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

/// Every configured receiver's queue, running in the background.
pub struct Notifier {
    outboxes: BTreeMap<String, Outbox>,
    platform: Vec<String>,
    seen: Mutex<Seen>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    /// Starts one background sender per receiver. Must run inside a Tokio runtime.
    pub fn start(
        config: &NotificationsConfig,
        registry: &prometheus::Registry,
    ) -> Result<Notifier, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("pontoon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let metrics = OutboxMetrics::register(registry)?;
        let retry = Retry {
            initial: config.retry_initial,
            max: config.retry_max,
        };
        let mut outboxes = BTreeMap::new();
        let mut tasks = Vec::new();
        for r in &config.receivers {
            let outbox = Outbox::new(&r.name, metrics.clone());
            let receiver = Receiver::new(r.clone(), http.clone());
            tasks.push(tokio::spawn(outbox.clone().run(receiver, retry)));
            outboxes.insert(r.name.clone(), outbox);
        }
        Ok(Notifier {
            outboxes,
            platform: config.platform.clone(),
            seen: Mutex::new(Seen::default()),
            tasks,
        })
    }

    /// Whether the daemon config defines a receiver of this name.
    pub fn defines(&self, name: &str) -> bool {
        self.outboxes.contains_key(name)
    }

    /// Queues `event` for the platform's receivers and `team` ones (names the config does
    /// not define are skipped: the daemon reports them at their team.yaml line). An event
    /// already sent (same [`Event::key`]) is not sent again. Returns whether it was queued.
    pub fn send(&self, event: Event, team: &[String]) -> bool {
        let to: BTreeSet<&str> = self
            .platform
            .iter()
            .chain(team)
            .map(String::as_str)
            .filter(|n| self.outboxes.contains_key(*n))
            .collect();
        if to.is_empty() {
            return false;
        }
        if !self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(event.key())
        {
            return false;
        }
        tracing::info!(unit = %event.unit, event = event.kind.name(), revision = %event.revision, receivers = %to.iter().copied().collect::<Vec<_>>().join(","), "notifying");
        let event = Arc::new(event);
        for name in to {
            if let Some(o) = self.outboxes.get(name) {
                o.push(event.clone());
            }
        }
        true
    }

    /// How many notifications wait, summed over the receivers.
    pub fn outboxes_pending(&self) -> usize {
        self.outboxes.values().map(Outbox::pending).sum()
    }

    /// Sends what is queued, at most `deadline`, then stops. Returns what was left unsent.
    pub async fn finish(&self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        let mut left = 0;
        for o in self.outboxes.values() {
            let now = tokio::time::Instant::now();
            left += o.flush(until.saturating_duration_since(now)).await;
        }
        for t in &self.tasks {
            t.abort();
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReceiverConfig, ReceiverKind, ReceiverUrl};
    use crate::desired::{ClusterName, TeamName, UnitId};

    fn event(kind: EventKind, revision: &str) -> Event {
        Event {
            unit: UnitId {
                team: TeamName("shop".into()),
                cluster: ClusterName("prod".into()),
            },
            revision: revision.into(),
            kind,
        }
    }

    fn receiver(name: &str) -> ReceiverConfig {
        ReceiverConfig {
            name: name.into(),
            kind: ReceiverKind::Slack,
            // Nothing listens there: everything stays queued.
            url: ReceiverUrl::Inline("http://127.0.0.1:9/".into()),
            secret: None,
        }
    }

    #[tokio::test]
    async fn an_event_goes_once_to_the_platform_and_team_receivers() {
        let config = NotificationsConfig {
            receivers: vec![receiver("ops"), receiver("shop-chat"), receiver("other")],
            platform: vec!["ops".into()],
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
        };
        let n = Notifier::start(&config, &prometheus::Registry::new()).expect("start");
        let team = vec!["shop-chat".to_owned(), "undefined".to_owned()];
        assert!(n.send(event(EventKind::Recovered, "r1"), &team));
        assert!(
            !n.send(event(EventKind::Recovered, "r1"), &team),
            "the same event at the same revision is sent once"
        );
        assert!(n.send(event(EventKind::Recovered, "r2"), &team));
        let drift = |object: &str| EventKind::DriftCorrected {
            object: object.into(),
            by: "kubectl-edit".into(),
        };
        assert!(n.send(event(drift("ConfigMap shop/a"), "r2"), &team));
        assert!(n.send(event(drift("ConfigMap shop/b"), "r2"), &team));
        let waiting: Vec<usize> = ["ops", "shop-chat", "other"]
            .iter()
            .map(|r| n.outboxes[*r].pending())
            .collect();
        assert_eq!(waiting, [4, 4, 0]);
        n.finish(Duration::ZERO).await;
    }
}
