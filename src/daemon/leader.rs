//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go's
//! leaderelection does it: the holder renews `renewTime` well inside the lease duration;
//! a candidate takes the lease over only once the lease has not changed for
//! `leaseDuration`, timed by this process's own monotonic clock from when it last saw the
//! record change. The timestamps in the Lease come from another host's clock and are never
//! compared with ours: a holder whose clock runs behind is not robbed while it renews, and
//! one whose clock runs ahead does not keep the lease for long after it dies.
//! Every write carries the resourceVersion it read, so two candidates can never both win
//! (the loser gets a 409 and reads again).
//!
//! The Lease carries its daemon's owner (`pontoon.dev/owner`; the default owner's Lease
//! from before owners existed carries none): a candidate never takes a Lease another
//! owner's daemon holds, even one configured with the same Lease name.
//!
//! A standby keeps serving `/healthz` and `/metrics`; only the leader syncs, and the
//! daemon stops every write of a leader the moment `leading` turns false.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::desired::{LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY_VALUE, Owner};

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Who we are: the pod name in a cluster, host and pid elsewhere.
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub duration: Duration,
    /// How often the holder renews (and a candidate retries).
    pub retry: Duration,
    /// The daemon instance the Lease is for (`sync.owner`); labels the Lease.
    pub owner: Owner,
}

impl LeaseSettings {
    pub fn new(namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseSettings {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            retry: duration / 3,
            owner: Owner::default(),
        }
    }
}

/// This process's identity for leases: `$POD_NAME`, else `<hostname>-<pid>`.
pub fn default_identity() -> String {
    crate::cluster::process_identity()
}

/// Runs the election until `stop` turns true; `leading` says whether we hold the lease.
/// On stop while leading, the lease is released so a standby takes over at once.
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observed: Option<Observed> = None;
    let mut shard_leases = HashMap::new();
    loop {
        let attempt = try_acquire_or_renew(&api, &settings, &mut observed, &mut shard_leases);
        let held = match attempt.await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %crate::describe(&e), lease = %settings.name, "lease request failed");
                // Without a successful renewal we cannot know we still lead.
                false
            }
        };
        if *leading.borrow() != held {
            tracing::info!(identity = %settings.identity, leading = held, "leadership changed");
            leading.send_replace(held);
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.retry) => {}
            _ = stop.changed() => {
                if *leading.borrow() {
                    let _ = release(&api, &settings).await;
                    leading.send_replace(false);
                }
                return;
            }
        }
    }
}

pub(super) fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The Lease record as this process last saw it, and when (by its own clock) it last saw
/// it change. Only a change restarts the clock: a holder proves it lives by renewing.
#[derive(Debug, Clone)]
pub(super) struct Observed {
    record: Record,
    since: Instant,
}

/// The fields of a Lease that a renewal or a take-over changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    acquired: Option<Timestamp>,
    renewed: Option<Timestamp>,
    duration_secs: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone(),
            acquired: spec.acquire_time.as_ref().map(|t| t.0),
            renewed: spec.renew_time.as_ref().map(|t| t.0),
            duration_secs: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// Notes `spec` as seen at `now`, and says whether its holder's term has run out: no
/// holder, or the record unchanged for its lease duration since this process first saw
/// it as it is.
pub(super) fn observe_expired(
    observed: &mut Option<Observed>,
    spec: &LeaseSpec,
    now: Instant,
) -> bool {
    let record = Record::of(spec);
    let since = match observed {
        Some(o) if o.record == record => o.since,
        _ => now,
    };
    let expired = record.holder.is_none()
        || now.saturating_duration_since(since)
            >= Duration::from_secs(u64::try_from(record.duration_secs.unwrap_or(15)).unwrap_or(15));
    *observed = Some(Observed { record, since });
    expired
}

/// Whether a sharded replica of our owner still holds a shard Lease: then the single
/// Lease is not taken, since that replica may be writing for any of its teams.
async fn sharded_replica_lives(
    api: &Api<Lease>,
    s: &LeaseSettings,
    shard_leases: &mut HashMap<String, Option<Observed>>,
) -> Result<bool, kube::Error> {
    let live = super::shards::live_shard_lease(api, &s.owner, shard_leases).await?;
    if let Some(lease) = &live {
        tracing::warn!(%lease, "a replica with sync.shards > 1 still holds a shard Lease; not leading until it expires");
    }
    Ok(live.is_some())
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    s: &LeaseSettings,
    observed: &mut Option<Observed>,
    shard_leases: &mut HashMap<String, Option<Observed>>,
) -> Result<bool, kube::Error> {
    let duration_secs = i32::try_from(s.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        if sharded_replica_lives(api, s, shard_leases).await? {
            return Ok(false);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                labels: Some(
                    [
                        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                        (LABEL_OWNER.to_owned(), s.owner.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_duration_seconds: Some(duration_secs),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    if !s.owner.owns(lease.metadata.labels.as_ref()) {
        tracing::error!(lease = %s.name, owner = %s.owner,
            holder = Owner::of_labels(lease.metadata.labels.as_ref()),
            "the Lease belongs to another owner's daemon; not leading (give each owner its own leaderElection.leaseName, or leave it to its default)");
        return Ok(false);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(&s.identity);
    let expired = observe_expired(observed, spec, Instant::now());
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        if sharded_replica_lives(api, s, shard_leases).await? {
            return Ok(false);
        }
        spec.holder_identity = Some(s.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_secs);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, s: &LeaseSettings) -> Result<(), kube::Error> {
    if let Some(mut lease) = api.get_opt(&s.name).await?
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(&s.identity)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        api.replace(&s.name, &PostParams::default(), &lease).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_after_its_duration_unchanged_by_this_processs_clock() {
        let t0 = Instant::now();
        let mut seen = None;
        // The holder's clock is an hour ahead: its renewTime says nothing to us.
        let ahead = Timestamp::now() + jiff::SignedDuration::from_hours(1);
        assert!(!observe_expired(&mut seen, &spec("a", ahead), t0));
        assert!(!observe_expired(
            &mut seen,
            &spec("a", ahead),
            t0 + Duration::from_secs(14)
        ));
        assert!(observe_expired(
            &mut seen,
            &spec("a", ahead),
            t0 + Duration::from_secs(15)
        ));
    }

    #[test]
    fn a_holder_that_keeps_renewing_never_expires_whatever_its_clock_says() {
        let t0 = Instant::now();
        let mut seen = None;
        // The holder's clock is an hour behind, yet it renews every 5 s.
        let behind = Timestamp::now() - jiff::SignedDuration::from_hours(1);
        for i in 0..10u64 {
            let renewed =
                behind + jiff::SignedDuration::from_secs(i64::try_from(i * 5).unwrap_or(0));
            assert!(
                !observe_expired(
                    &mut seen,
                    &spec("a", renewed),
                    t0 + Duration::from_secs(i * 5)
                ),
                "renewal {i} must keep the lease"
            );
        }
    }

    #[test]
    fn a_lease_without_holder_is_free_at_once() {
        let mut seen = None;
        assert!(observe_expired(
            &mut seen,
            &LeaseSpec::default(),
            Instant::now()
        ));
    }
}
