//! `kill -9` of one replica: how long until the others hold its shards (read from the
//! shard Leases), how long until every unit of those shards is Synced again by its new
//! holder (read from the survivors' `/api/status`), and what that cost the apiservers,
//! writes by pontoon's user agent counted from their audit logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use pontoon::daemon::shards::{shard_lease_name, shard_of};

use crate::control_plane::ControlPlane;
use crate::measure::Requests;
use crate::replica::Replica;
use crate::run::{LEASE_NAME, Plan, writes_since};

/// What the recovery from one replica's `kill -9` took.
pub struct Recovery {
    /// Seconds from the kill until another replica held every shard of the killed one.
    pub taken: f64,
    /// Seconds from the kill until every unit of those shards was Synced by its new holder.
    pub synced: f64,
    /// Units that changed hands.
    pub units: usize,
    /// pontoon's writes after the kill, by verb and resource, Leases apart.
    pub writes: BTreeMap<String, u64>,
    /// Requests the apiservers counted from the kill until the units were Synced.
    pub requests: Requests,
}

/// Who holds each shard Lease now.
async fn holders(leases: &Api<Lease>, shards: u32) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for shard in 0..shards {
        let holder = leases
            .get_opt(&shard_lease_name(LEASE_NAME, shard))
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        out.push(holder);
    }
    out
}

/// Kills the second replica and follows its shards to their new holders.
pub async fn kill_one(
    http: &reqwest::Client,
    cps: &[ControlPlane],
    replicas: &mut Vec<Replica>,
    teams: &[String],
    plan: &Plan,
) -> Recovery {
    let shards = plan.replicas as u32;
    let leases: Api<Lease> =
        Api::namespaced(cps[0].client().await, pontoon::config::DEFAULT_NAMESPACE);
    let mut victim = replicas.remove(1);
    let before = holders(&leases, shards).await;
    let lost: BTreeSet<u32> = (0..shards)
        .filter(|s| before[*s as usize].as_deref() == Some(victim.identity.as_str()))
        .collect();
    let moved: BTreeSet<&String> = teams
        .iter()
        .filter(|t| lost.contains(&shard_of(t, shards)))
        .collect();
    let units = moved.len() * crate::platform::CLUSTERS.len();
    eprintln!(
        "    killing {} (shards {lost:?}, {units} units)",
        victim.identity
    );

    let mark = jiff::Timestamp::now();
    let requests0 = crate::run::requests(cps);
    let t = Instant::now();
    victim.kill();
    let limit = plan.lease * 4 + Duration::from_secs(120);
    let taken = loop {
        let now = holders(&leases, shards).await;
        let done = lost.iter().all(|s| {
            now[*s as usize]
                .as_deref()
                .is_some_and(|h| h != victim.identity)
        });
        if done {
            break t.elapsed().as_secs_f64();
        }
        assert!(
            t.elapsed() < limit,
            "shards {lost:?} not taken within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let synced = loop {
        let mut back = 0;
        for r in replicas.iter() {
            back += r
                .units(http)
                .await
                .unwrap_or_default()
                .iter()
                .filter(|u| moved.contains(&u.team) && u.state == "Synced" && u.synced_here)
                .count();
        }
        if back >= units {
            break t.elapsed().as_secs_f64();
        }
        assert!(
            t.elapsed() < limit + plan.timeout,
            "{back} of {units} moved units Synced again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let requests = crate::run::requests(cps).since(&requests0);
    let mut writes = BTreeMap::new();
    for (what, lease) in writes_since(cps, mark) {
        if !lease {
            *writes.entry(what).or_default() += 1;
        }
    }
    Recovery {
        taken,
        synced,
        units,
        writes,
        requests,
    }
}
