//! Shards: the teams split across replicas by `sync.shards` Leases. A team's units (all
//! its clusters) belong to shard [`shard_of`] — a hash of the team's name that is the same
//! on every version and platform — so one team's commit statuses, rollout stages and drift
//! come from one process. Each shard is a Lease (`<leaseName>-shard-<i>`) elected as
//! `leader` elects the single Lease: taken only once free or expired by this process's
//! own clock, renewed with the resourceVersion read, so two replicas never both hold it.
//!
//! Fairness: each replica also holds a member Lease (`<leaseName>-member-<identity>`), so
//! every replica knows how many replicas live; a replica takes no shard in the round that
//! announced it, so replicas started together count each other first. A replica takes a free shard only while it
//! holds fewer than its fair share, `ceil(shards / live replicas)`, and gives up one shard
//! per round while it holds more (a replica joined): it fences the shard first (its syncs
//! cancelled, `active` says when) and only then releases the Lease, so the next holder
//! never writes beside it.
//!
//! Fencing: a shard whose renewal fails, or that another replica holds, leaves `held` at
//! once; the daemon stops every write for its teams. A replica never takes a shard while a
//! live Lease of its owner says another shard count (or the single leader Lease is held):
//! two replicas that disagree on `hash(team) mod N` would both write for a team.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use tokio::sync::watch;
use tokio::time::Instant;

use super::leader::{LeaseSettings, Observed, now, observe_expired};
use crate::desired::{LABEL_MANAGED_BY, LABEL_OWNER, MANAGED_BY_VALUE, Owner};
pub use crate::server::ShardView;

/// The shard count a shard Lease was taken with.
pub const ANNOTATION_SHARDS: &str = "pontoon.dev/shards";
/// The page of the replica holding a Lease (`http://…`), so every replica links the others.
pub const ANNOTATION_URL: &str = "pontoon.dev/url";
/// What a Lease of pontoon's is for: `shard` or `member` (none: the single leader Lease).
pub const LABEL_LEASE_ROLE: &str = "pontoon.dev/lease-role";

/// The shard of `team` among `count`: FNV-1a (64 bit) of the team's name, modulo `count`.
/// Written out here rather than taken from the standard library, whose hashers may change
/// between Rust versions: every replica, of every version, must agree.
pub fn shard_of(team: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in team.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// The Lease of shard `shard`.
pub fn shard_lease_name(base: &str, shard: u32) -> String {
    format!("{base}-shard-{shard}")
}

/// The member Lease of the replica `identity`: its name made a valid object name.
fn member_lease_name(base: &str, identity: &str) -> String {
    let cleaned: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{base}-member-{}", cleaned.trim_matches(['-', '.']));
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// How many shards one of `replicas` live replicas may hold: `ceil(count / replicas)`.
pub fn fair_share(count: u32, replicas: usize) -> usize {
    let count = count as usize;
    count.div_ceil(replicas.max(1))
}

/// How this replica takes part in the shards.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    /// Namespace, base name (`leaderElection.leaseName`), identity, duration, owner.
    pub lease: LeaseSettings,
    pub count: u32,
    /// This replica's page, written on the Leases it holds.
    pub url: Option<String>,
    /// How long a stopping replica keeps its shards while its last syncs finish
    /// (`shutdownTimeout`).
    pub drain: Duration,
}

/// What the election loop keeps between rounds.
#[derive(Default)]
struct Round {
    /// Shards this replica may write for.
    held: BTreeSet<u32>,
    /// Shards given up but still in our Lease until their syncs are cancelled.
    releasing: BTreeSet<u32>,
    /// Every Lease seen, by name: when it last changed, by our clock.
    observed: HashMap<String, Option<Observed>>,
    /// Whether this replica's member Lease has stood for a round: until then it takes
    /// no shard, so replicas started together see each other before they split the
    /// shards, rather than the first taking them all and cancelling its syncs to hand
    /// them on.
    joined: bool,
}

/// Runs the shard election until `stop` turns true. `held` says which shards this replica
/// may write for; `active` (from the daemon) which shards it schedules, so a shard given
/// up is released only once the daemon has taken in the shards published since and
/// stopped the syncs of that one; `holders` what every
/// shard Lease says. On stop, the shards are kept while the daemon's last syncs finish
/// (at most `drain`), then fenced, released, and the member Lease deleted.
pub async fn run(
    client: kube::Client,
    s: ShardSettings,
    held: watch::Sender<BTreeSet<u32>>,
    mut active: watch::Receiver<BTreeSet<u32>>,
    holders: watch::Sender<Vec<ShardView>>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &s.lease.namespace);
    let mut round = Round::default();
    loop {
        // The daemon's answer to the shards last published: a shard given up is released
        // only once the daemon has taken in that it is gone and stopped its syncs.
        let running = active.borrow().clone();
        let caught_up = running == *held.borrow();
        let seen = match one_round(&api, &s, &mut round, &running, caught_up).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::warn!(error = %crate::describe(&e), "shard Leases cannot be read or renewed; fencing every shard");
                round.held.clear();
                round.releasing.clear();
                Vec::new()
            }
        };
        held.send_if_modified(|h| {
            let changed = *h != round.held;
            if changed {
                tracing::info!(identity = %s.lease.identity, shards = ?round.held, "shards held changed");
                h.clone_from(&round.held);
            }
            changed
        });
        holders.send_if_modified(|h| {
            let changed = *h != seen && !seen.is_empty();
            if changed {
                *h = seen;
            }
            changed
        });
        tokio::select! {
            _ = tokio::time::sleep(s.lease.retry) => {}
            _ = stop.changed() => break,
        }
    }
    // The daemon finishes its in-flight syncs (within `drain`): keep the shards meanwhile,
    // or another replica could write beside them. Then fence, and let go: a standby may
    // write the moment a Lease is released.
    let deadline = Instant::now() + s.drain;
    let mut kept: BTreeSet<u32> = round.held.union(&round.releasing).copied().collect();
    while !active.borrow().is_empty() && Instant::now() < deadline && !kept.is_empty() {
        for shard in kept.clone() {
            let name = shard_lease_name(&s.lease.name, shard);
            let renewed = match api.get_opt(&name).await {
                Ok(lease) => write_lease(&api, &s, &name, lease.as_ref(), false).await,
                Err(e) => Err(e),
            };
            if !matches!(renewed, Ok(true)) {
                tracing::warn!(shard, "shard lost while the last syncs finish");
                kept.remove(&shard);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(s.lease.retry) => {}
            _ = active.changed() => {}
        }
    }
    held.send_replace(BTreeSet::new());
    let wait = active.wait_for(BTreeSet::is_empty);
    let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    if active.borrow().is_empty() {
        for shard in 0..s.count {
            let _ = release(&api, &shard_lease_name(&s.lease.name, shard), &s.lease).await;
        }
    }
    let member = member_lease_name(&s.lease.name, &s.lease.identity);
    let _ = api.delete(&member, &DeleteParams::default()).await;
}

/// One round: renew our member Lease, count the live replicas, renew, give up and take
/// shards. Returns who holds each shard.
async fn one_round(
    api: &Api<Lease>,
    s: &ShardSettings,
    round: &mut Round,
    active: &BTreeSet<u32>,
    caught_up: bool,
) -> Result<Vec<ShardView>, kube::Error> {
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let at = Instant::now();
    let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
    for lease in listed.items {
        if !s.lease.owner.owns(lease.metadata.labels.as_ref()) {
            continue;
        }
        let Some(name) = lease.metadata.name.clone() else {
            continue;
        };
        leases.insert(name, lease);
    }
    let mut live: BTreeMap<String, bool> = BTreeMap::new();
    for (name, lease) in &leases {
        let spec = lease.spec.clone().unwrap_or_default();
        let observed = round.observed.entry(name.clone()).or_default();
        live.insert(name.clone(), !observe_expired(observed, &spec, at));
    }
    round.observed.retain(|name, _| leases.contains_key(name));

    let members = renew_member(api, s, &leases, &live).await?;
    let share = if round.joined {
        fair_share(s.count, members)
    } else {
        round.joined = true;
        0
    };
    let disagreeing = disagreeing(s, &leases, &live);
    if let Some(why) = &disagreeing {
        tracing::error!(%why, "not taking shards while another shard count is live; fencing every shard");
        round.held.clear();
    }

    let mut holders = Vec::new();
    for shard in 0..s.count {
        let name = shard_lease_name(&s.lease.name, shard);
        let lease = leases.get(&name);
        let mine = lease.and_then(holder_of).as_deref() == Some(s.lease.identity.as_str());
        let free = lease.is_none() || !live.get(&name).copied().unwrap_or(false);
        if round.releasing.contains(&shard) {
            if !mine {
                round.releasing.remove(&shard);
            } else if active.contains(&shard) || !caught_up {
                // Still cancelling its syncs: keep the Lease meanwhile.
                if !write_lease(api, s, &name, lease, false).await? {
                    round.releasing.remove(&shard);
                }
            } else {
                release(api, &name, &s.lease).await?;
                round.releasing.remove(&shard);
                tracing::info!(shard, "shard handed over: released once its syncs stopped");
            }
        } else if mine && round.held.contains(&shard) {
            if round.held.len() > share && round.held.last() == Some(&shard) {
                tracing::info!(
                    shard,
                    share,
                    members,
                    "more shards than a fair share: giving one up"
                );
                round.held.remove(&shard);
                round.releasing.insert(shard);
            }
            if !write_lease(api, s, &name, lease, false).await? {
                round.held.remove(&shard);
                round.releasing.remove(&shard);
            }
        } else if disagreeing.is_none() && (mine || free) && round.held.len() < share {
            if write_lease(api, s, &name, lease, true).await? {
                round.held.insert(shard);
            }
        } else {
            round.held.remove(&shard);
        }
        let holder = if round.held.contains(&shard) || round.releasing.contains(&shard) {
            Some(s.lease.identity.clone())
        } else {
            lease.and_then(holder_of).filter(|_| !free)
        };
        let url = if holder.as_deref() == Some(s.lease.identity.as_str()) {
            s.url.clone()
        } else {
            lease.and_then(|l| annotation(l, ANNOTATION_URL))
        };
        holders.push(ShardView {
            shard,
            lease: name,
            this_replica: holder.as_deref() == Some(s.lease.identity.as_str()),
            holder,
            url,
        });
    }
    Ok(holders)
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

fn annotation(lease: &Lease, key: &str) -> Option<String> {
    lease.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Why this replica must not take shards: a live Lease of its owner that another shard
/// count wrote (or the single leader Lease, held). None when all agree.
fn disagreeing(
    s: &ShardSettings,
    leases: &BTreeMap<String, Lease>,
    live: &BTreeMap<String, bool>,
) -> Option<String> {
    leases.iter().find_map(|(name, lease)| {
        let role = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_LEASE_ROLE));
        let count = match role.map(String::as_str) {
            Some("member") => return None,
            Some(_) => annotation(lease, ANNOTATION_SHARDS)?.parse::<u32>().ok()?,
            None if name == &s.lease.name => 1,
            None => return None,
        };
        let alive = live.get(name).copied().unwrap_or(false) && holder_of(lease).is_some();
        (alive && count != s.count).then(|| {
            format!(
                "Lease {name} is held by {} with {count} shard(s); this replica has sync.shards {}",
                holder_of(lease).unwrap_or_default(),
                s.count
            )
        })
    })
}

/// A shard Lease of `owner` that a live replica holds, as the single leader Lease's
/// candidates must see before they take it: sharded replicas of the same owner may still
/// be writing. `observed` keeps when each was last seen changing, by our clock.
pub(super) async fn live_shard_lease(
    api: &Api<Lease>,
    owner: &Owner,
    observed: &mut HashMap<String, Option<Observed>>,
) -> Result<Option<String>, kube::Error> {
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_LEASE_ROLE}=shard");
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let at = Instant::now();
    let mut found = None;
    for lease in listed.items {
        let Some(name) = lease.metadata.name.clone() else {
            continue;
        };
        if !owner.owns(lease.metadata.labels.as_ref()) {
            continue;
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let expired = observe_expired(observed.entry(name.clone()).or_default(), &spec, at);
        if !expired && found.is_none() {
            found = Some(format!(
                "{name} (held by {})",
                spec.holder_identity.unwrap_or_default()
            ));
        }
    }
    Ok(found)
}

/// Renews (or creates) this replica's member Lease and deletes those of replicas seen dead;
/// returns how many replicas live, this one included.
async fn renew_member(
    api: &Api<Lease>,
    s: &ShardSettings,
    leases: &BTreeMap<String, Lease>,
    live: &BTreeMap<String, bool>,
) -> Result<usize, kube::Error> {
    let me = member_lease_name(&s.lease.name, &s.lease.identity);
    write_lease(api, s, &me, leases.get(&me), true).await?;
    let mut members = 1;
    for (name, lease) in leases {
        let member = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_LEASE_ROLE))
            .is_some_and(|r| r == "member");
        if !member || name == &me {
            continue;
        }
        if live.get(name).copied().unwrap_or(false) {
            members += 1;
        } else {
            // Gone for a lease duration: nobody renews it. Deleted only as read.
            let precondition = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(name, &precondition).await;
        }
    }
    Ok(members)
}

/// Writes ourselves into the Lease `name` (as read: `lease`), creating it when absent.
/// Without `take`, only a Lease we hold already is renewed. True when we hold it after.
async fn write_lease(
    api: &Api<Lease>,
    s: &ShardSettings,
    name: &str,
    lease: Option<&Lease>,
    take: bool,
) -> Result<bool, kube::Error> {
    let duration_secs = i32::try_from(s.lease.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let role = if name.starts_with(&format!("{}-member-", s.lease.name)) {
        "member"
    } else {
        "shard"
    };
    let Some(lease) = lease else {
        if !take {
            return Ok(false);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(s.lease.namespace.clone()),
                labels: Some(labels(&s.lease.owner, role)),
                annotations: Some(annotations(s)),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.lease.identity.clone()),
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
    let mut lease = lease.clone();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(s.lease.identity.as_str());
    if !mine {
        if !take {
            return Ok(false);
        }
        spec.holder_identity = Some(s.lease.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_secs);
    lease
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels(&s.lease.owner, role));
    lease
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(annotations(s));
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn labels(owner: &Owner, role: &str) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (LABEL_OWNER.to_owned(), owner.to_string()),
        (LABEL_LEASE_ROLE.to_owned(), role.to_owned()),
    ]
    .into()
}

fn annotations(s: &ShardSettings) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([(ANNOTATION_SHARDS.to_owned(), s.count.to_string())]);
    if let Some(url) = &s.url {
        a.insert(ANNOTATION_URL.to_owned(), url.clone());
    }
    a
}

/// Lets go of the Lease `name` if we hold it: a standby takes it at once.
async fn release(api: &Api<Lease>, name: &str, s: &LeaseSettings) -> Result<(), kube::Error> {
    if let Some(mut lease) = api.get_opt(name).await?
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(&s.identity)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        api.replace(name, &PostParams::default(), &lease).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teams_shard_is_the_same_on_every_version_and_platform() {
        // FNV-1a 64 of the name: these values must never change, or replicas of two
        // versions would both write for a team during an upgrade.
        assert_eq!(shard_of("", 1000), 37);
        let got: Vec<u32> = ["shop", "payments", "search", "team-0001"]
            .iter()
            .map(|t| shard_of(t, 7))
            .collect();
        assert_eq!(got, [5, 6, 3, 0]);
        assert_eq!(shard_of("shop", 1), 0);
    }

    #[test]
    fn teams_spread_over_the_shards() {
        let mut per = [0u32; 4];
        for i in 0..1000 {
            per[shard_of(&format!("team-{i:04}"), 4) as usize] += 1;
        }
        assert!(per.iter().all(|n| (200..=300).contains(n)), "{per:?}");
    }

    fn lease(name: &str, role: Option<&str>, shards: Option<&str>, holder: Option<&str>) -> Lease {
        let mut labels = labels(&Owner::default(), role.unwrap_or("shard"));
        if role.is_none() {
            labels.remove(LABEL_LEASE_ROLE);
        }
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                annotations: shards
                    .map(|n| BTreeMap::from([(ANNOTATION_SHARDS.to_owned(), n.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn no_shard_is_taken_while_a_live_lease_says_another_shard_count() {
        let s = ShardSettings {
            lease: LeaseSettings::new("ns", "pontoon", "me", Duration::from_secs(3)),
            count: 3,
            url: None,
            drain: Duration::from_secs(30),
        };
        let check = |leases: Vec<Lease>, alive: bool| {
            let live = leases
                .iter()
                .map(|l| (l.metadata.name.clone().unwrap_or_default(), alive))
                .collect();
            let leases = leases
                .into_iter()
                .map(|l| (l.metadata.name.clone().unwrap_or_default(), l))
                .collect();
            disagreeing(&s, &leases, &live)
        };
        let agreeing = lease("pontoon-shard-0", Some("shard"), Some("3"), Some("other"));
        assert_eq!(check(vec![agreeing], true), None);
        let four = lease("pontoon-shard-3", Some("shard"), Some("4"), Some("other"));
        let why = check(vec![four.clone()], true).expect("another count");
        assert!(
            why.contains("pontoon-shard-3 is held by other with 4 shard(s)"),
            "{why}"
        );
        // Expired, or released: its holder writes no more.
        assert_eq!(check(vec![four], false), None);
        let released = lease("pontoon-shard-3", Some("shard"), Some("4"), None);
        assert_eq!(check(vec![released], true), None);
        // The single leader Lease, held: a replica with one shard writes for every team.
        let single = lease("pontoon", None, None, Some("leader"));
        assert!(check(vec![single], true).is_some());
        let member = lease("pontoon-member-x", Some("member"), None, Some("x"));
        assert_eq!(check(vec![member], true), None);
    }

    #[test]
    fn a_fair_share_rounds_up_and_never_divides_by_zero() {
        assert_eq!(fair_share(3, 1), 3);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 3), 1);
        assert_eq!(fair_share(3, 5), 1);
        assert_eq!(fair_share(4, 0), 4);
    }

    #[test]
    fn member_lease_names_are_object_names() {
        assert_eq!(
            member_lease_name("pontoon", "Host_1.local-42"),
            "pontoon-member-host-1.local-42"
        );
        assert!(member_lease_name("pontoon", &"x".repeat(400)).len() <= 253);
    }
}
