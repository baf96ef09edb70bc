//! One receiver's queue of notifications, sent in the background in the order they were
//! queued. The pattern of the commit-status poster (`status::poster`): queueing never
//! waits for the network, a failed attempt is retried with capped exponential backoff
//! (or after the receiver's `Retry-After`), and shutdown flushes within a deadline. Unlike
//! a commit status, every notification counts: the head of the queue is retried until it
//! is sent or refused for good, and nothing behind it overtakes it. The queue is bounded;
//! what overflows is dropped oldest first and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::sync::Notify;

use super::event::Event;
use super::receiver::{Outcome, Receiver};

/// Notifications waiting per receiver beyond this are dropped, oldest first.
pub const MAX_QUEUE: usize = 1_000;

/// The metrics every outbox reports under its receiver's name.
#[derive(Clone)]
pub struct OutboxMetrics {
    pub sent: IntCounterVec,
    pub queued: IntGaugeVec,
}

impl OutboxMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<OutboxMetrics> {
        let sent = IntCounterVec::new(
            prometheus::Opts::new(
                "pontoon_notifications_total",
                "Notification attempts by receiver and result: sent, retried (no answer, a \
                 server error or a rate limit), rejected (refused for good), dropped (queue full)",
            ),
            &["receiver", "result"],
        )?;
        let queued = IntGaugeVec::new(
            prometheus::Opts::new(
                "pontoon_notifications_queued",
                "Notifications waiting to be sent, by receiver",
            ),
            &["receiver"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        Ok(OutboxMetrics { sent, queued })
    }
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    /// The head is being sent (or waited on between attempts).
    busy: bool,
}

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
}

/// One receiver's queue.
#[derive(Clone)]
pub struct Outbox {
    name: String,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    idle: Arc<Notify>,
    metrics: OutboxMetrics,
}

impl Outbox {
    pub fn new(name: &str, metrics: OutboxMetrics) -> Outbox {
        for r in ["sent", "retried", "rejected", "dropped"] {
            metrics.sent.with_label_values(&[name, r]);
        }
        metrics.queued.with_label_values(&[name]).set(0);
        Outbox {
            name: name.to_owned(),
            queue: Arc::new(Mutex::new(Queue::default())),
            wake: Arc::new(Notify::new()),
            idle: Arc::new(Notify::new()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, result: &str) {
        self.metrics
            .sent
            .with_label_values(&[&self.name, result])
            .inc();
    }

    fn set_queued(&self, q: &Queue) {
        self.metrics
            .queued
            .with_label_values(&[&self.name])
            .set(q.events.len() as i64);
    }

    /// Queues one notification; never waits.
    pub fn push(&self, event: Arc<Event>) {
        let mut q = self.lock();
        q.events.push_back(event);
        // The head may be in flight: drop the oldest behind it.
        while q.events.len() > MAX_QUEUE {
            let at = usize::from(q.busy);
            if q.events.remove(at).is_some() {
                self.count("dropped");
            }
        }
        self.set_queued(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// How many notifications wait (the one in flight included).
    pub fn pending(&self) -> usize {
        self.lock().events.len()
    }

    /// Sends until the task is dropped or aborted.
    pub async fn run(self, receiver: Receiver, retry: Retry) {
        let mut failures: u32 = 0;
        loop {
            let head = {
                let mut q = self.lock();
                let head = q.events.front().cloned();
                q.busy = head.is_some();
                head
            };
            let Some(event) = head else {
                self.idle.notify_waiters();
                self.wake.notified().await;
                continue;
            };
            let outcome = receiver.send(&event).await;
            let wait = match &outcome {
                Outcome::Sent => {
                    failures = 0;
                    self.count("sent");
                    tracing::debug!(receiver = %self.name, event = event.kind.name(), unit = %event.unit, "notification sent");
                    None
                }
                Outcome::Rejected(why) => {
                    failures = 0;
                    self.count("rejected");
                    tracing::error!(receiver = %self.name, event = event.kind.name(), unit = %event.unit, reason = %why, "the receiver refused a notification; it is not sent again");
                    None
                }
                Outcome::Retry { after, why } => {
                    failures = failures.saturating_add(1);
                    self.count("retried");
                    let wait = after.unwrap_or_else(|| {
                        crate::backoff::backoff(retry.initial, retry.max, failures)
                    });
                    tracing::warn!(receiver = %self.name, event = event.kind.name(), unit = %event.unit, reason = %why, retry_in = ?wait, "notification not sent yet");
                    Some(wait)
                }
            };
            {
                let mut q = self.lock();
                if wait.is_none() && q.events.front().is_some_and(|e| Arc::ptr_eq(e, &event)) {
                    q.events.pop_front();
                }
                q.busy = false;
                self.set_queued(&q);
            }
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Waits until everything queued was sent (or refused), at most `deadline`. Returns
    /// how many notifications were still waiting.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let idle = self.idle.notified();
            {
                let q = self.lock();
                if q.events.is_empty() && !q.busy {
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
