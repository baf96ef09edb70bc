//! The background queue of commit statuses owed to the forge.
//!
//! [`Poster::post`] only queues: syncing never waits for a forge. The queue keeps the
//! newest wanted status per (commit, context), so a forge that is down for an hour gets
//! the final word on each context when it is back, not an hour of history. A status equal
//! to the one last posted for its context is not sent again. Failures retry with capped
//! exponential backoff; rate limits pause the queue until the forge allows requests again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;

use super::forge::{Forge, Outcome};
use super::{State, Status};

/// Wanted statuses beyond this are dropped, oldest first.
const MAX_QUEUE: usize = 10_000;
/// Remembered posted statuses (for "not twice"), oldest forgotten first.
const MAX_REMEMBERED: usize = 50_000;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// A status's identity on the forge: (commit, context).
type Key = (String, String);

#[derive(Default)]
struct Queue {
    /// Newest wanted status per (commit, context), with the order it was queued in.
    wanted: BTreeMap<Key, (u64, Status)>,
    /// What each context last showed on the forge.
    posted: HashMap<Key, (State, String)>,
    posted_order: VecDeque<Key>,
    seq: u64,
    busy: bool,
}

impl Queue {
    fn next(&self) -> Option<(Key, u64, Status)> {
        self.wanted
            .iter()
            .min_by_key(|(_, (seq, _))| *seq)
            .map(|(k, (seq, s))| (k.clone(), *seq, s.clone()))
    }

    fn remember(&mut self, key: Key, status: &Status) {
        if self
            .posted
            .insert(key.clone(), (status.state, status.description.clone()))
            .is_none()
        {
            self.posted_order.push_back(key);
            while self.posted_order.len() > MAX_REMEMBERED {
                if let Some(old) = self.posted_order.pop_front() {
                    self.posted.remove(&old);
                }
            }
        }
    }
}

struct PosterMetrics {
    requests: IntCounterVec,
    queued: IntGauge,
}

/// The background queue of statuses owed to the forge.
#[derive(Clone)]
pub struct Poster {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    idle: Arc<Notify>,
    metrics: Arc<PosterMetrics>,
}

impl Poster {
    pub fn new(registry: &Registry) -> prometheus::Result<Poster> {
        let requests = IntCounterVec::new(
            Opts::new(
                "pontoon_commit_status_requests_total",
                "Commit status requests by result: posted, retried (forge down or rate \
                 limited), rejected (refused for good), dropped (queue full)",
            ),
            &["result"],
        )?;
        let queued = IntGauge::new(
            "pontoon_commit_status_queued",
            "Commit statuses waiting to be posted",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        for r in ["posted", "retried", "rejected", "dropped"] {
            requests.with_label_values(&[r]);
        }
        Ok(Poster {
            queue: Arc::new(Mutex::new(Queue::default())),
            wake: Arc::new(Notify::new()),
            idle: Arc::new(Notify::new()),
            metrics: Arc::new(PosterMetrics { requests, queued }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues statuses; never waits for the forge.
    pub fn post(&self, statuses: impl IntoIterator<Item = Status>) {
        let mut q = self.lock();
        for s in statuses {
            let key = (s.sha.clone(), s.context.clone());
            if q.posted.get(&key) == Some(&(s.state, s.description.clone())) {
                q.wanted.remove(&key);
                continue;
            }
            q.seq += 1;
            let seq = q.seq;
            q.wanted.insert(key, (seq, s));
        }
        while q.wanted.len() > MAX_QUEUE {
            if let Some((key, _, _)) = q.next() {
                q.wanted.remove(&key);
                self.metrics.requests.with_label_values(&["dropped"]).inc();
            }
        }
        self.metrics.queued.set(q.wanted.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// How many statuses wait to be posted.
    pub fn pending(&self) -> usize {
        self.lock().wanted.len()
    }

    /// Posts until the task is dropped or aborted.
    pub async fn run(self, forge: Forge) {
        let mut failures: u32 = 0;
        loop {
            let next = {
                let mut q = self.lock();
                let next = q.next();
                q.busy = next.is_some();
                next
            };
            let Some((key, seq, status)) = next else {
                self.idle.notify_waiters();
                self.wake.notified().await;
                continue;
            };
            let outcome = forge.send(&status).await;
            let wait = {
                let mut q = self.lock();
                let wait = match &outcome {
                    Outcome::Posted => {
                        failures = 0;
                        q.remember(key.clone(), &status);
                        self.metrics.requests.with_label_values(&["posted"]).inc();
                        tracing::debug!(sha = %status.sha, context = %status.context, state = status.state.as_str(), "commit status posted");
                        None
                    }
                    Outcome::Rejected(why) => {
                        self.metrics.requests.with_label_values(&["rejected"]).inc();
                        tracing::error!(sha = %status.sha, context = %status.context, reason = %why, "the forge refused a commit status");
                        None
                    }
                    Outcome::Retry { after, why } => {
                        failures += 1;
                        self.metrics.requests.with_label_values(&["retried"]).inc();
                        let wait = after.unwrap_or_else(|| {
                            crate::backoff::backoff(BACKOFF_BASE, BACKOFF_CAP, failures)
                        });
                        tracing::warn!(sha = %status.sha, context = %status.context, reason = %why, retry_in = ?wait, "commit status not posted yet");
                        Some(wait)
                    }
                };
                // Done with this entry, unless a newer status replaced it meanwhile.
                if wait.is_none() && q.wanted.get(&key).is_some_and(|(s, _)| *s == seq) {
                    q.wanted.remove(&key);
                }
                q.busy = false;
                self.metrics.queued.set(q.wanted.len() as i64);
                wait
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Waits until everything queued was posted (or refused), at most `deadline`. Returns
    /// how many statuses were still owed.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let idle = self.idle.notified();
            {
                let q = self.lock();
                if q.wanted.is_empty() && !q.busy {
                    return 0;
                }
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(until, idle).await.is_err() {
                return self.pending();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::forge::tests::status;

    #[test]
    fn identical_statuses_are_not_queued_twice_and_newest_wins() {
        let poster = Poster::new(&Registry::new()).expect("poster");
        let mut s = status();
        poster.post([s.clone()]);
        s.state = State::Success;
        s.description = "applied 3".into();
        poster.post([s.clone()]);
        assert_eq!(poster.pending(), 1);
        {
            let mut q = poster.lock();
            let next = q.next().expect("one wanted");
            assert_eq!(next.2.state, State::Success);
            let key = next.0.clone();
            q.remember(key.clone(), &next.2);
            q.wanted.remove(&key);
        }
        poster.post([s]);
        assert_eq!(poster.pending(), 0, "equal to what the forge shows already");
    }
}
