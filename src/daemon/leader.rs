//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go's
//! leaderelection does it: the holder renews `renewTime` well inside the lease duration;
//! a candidate takes the lease over only once `renewTime + leaseDuration` has passed.
//! Every write carries the resourceVersion it read, so two candidates can never both win
//! (the loser gets a 409 and reads again).
//!
//! A standby keeps serving `/healthz` and `/metrics`; only the leader syncs.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

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
}

impl LeaseSettings {
    pub fn new(namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseSettings {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            retry: duration / 3,
        }
    }
}

/// This process's identity for leases: `$POD_NAME`, else `<hostname>-<pid>`.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "pontoon".to_owned());
        format!("{host}-{}", std::process::id())
    })
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
    loop {
        let held = match try_acquire_or_renew(&api, &settings).await {
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

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec, at: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed
        .0
        .saturating_add(SignedDuration::from_secs(secs))
        .is_ok_and(|until| until < at)
}

async fn try_acquire_or_renew(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let duration_secs = i32::try_from(s.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
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
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(&s.identity);
    if !mine && !expired(spec, Timestamp::now()) && spec.holder_identity.is_some() {
        return Ok(false);
    }
    if !mine {
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

    #[test]
    fn a_lease_expires_after_its_duration_since_renewal() {
        let t0 = Timestamp::now();
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(t0)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, t0 + SignedDuration::from_secs(14)));
        assert!(expired(&spec, t0 + SignedDuration::from_secs(16)));
        assert!(
            expired(&LeaseSpec::default(), t0),
            "a lease never renewed is free"
        );
    }
}
