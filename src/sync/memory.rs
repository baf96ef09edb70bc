//! What the engine remembers between syncs of a unit on one cluster: the last complete
//! apply (to skip a sync that would change nothing without a single write) and every
//! object as last applied (what the drift engine compares the cluster with).
//!
//! Memory is only ever a shortcut: forgetting it costs requests, never correctness. It
//! lives in the process, so a restart starts with none; then the unit's inventory is the
//! memory ([`Known`]): each entry's uid, resourceVersion and digest say the same for its
//! object. Per object only what deciding needs is kept (a digest, a resourceVersion, a
//! uid), besides the applied manifest the drift engine compares with. No lock is held
//! across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::inventory::{Entry, Inventory};
use super::live::Live;
use super::resolve::{Planned, api_version_of};
use super::watched::Epochs;
use crate::cluster::Resolved;
use crate::desired::{DesiredObject, Digest, ObjectKey, TeamName, UnitDesired};

/// An object as last applied, for the drift engine.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    pub desired: DesiredObject,
    pub resolved: Resolved,
    pub resource_version: String,
    /// The uid the apply answered with (or the live object's, when nothing was written).
    pub uid: String,
}

impl AppliedObject {
    /// The inventory entry of the object applied under `key`.
    pub(super) fn entry(&self, key: &ObjectKey) -> Entry {
        Entry {
            api_version: api_version_of(&self.desired.object).to_owned(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            applier: self.desired.applier,
            uid: (!self.uid.is_empty()).then(|| self.uid.clone()),
            resource_version: (!self.resource_version.is_empty())
                .then(|| self.resource_version.clone()),
            digest: Some(self.desired.digest()),
        }
    }
}

/// Objects as last applied, by key.
pub(super) type AppliedObjects = BTreeMap<ObjectKey, AppliedObject>;

/// What one object's last apply left: the manifest's digest, the resourceVersion the
/// apply produced (or the one the object was found at, still holding it) and its uid.
#[derive(Debug, Clone)]
pub(super) struct Version {
    digest: Digest,
    resource_version: String,
    uid: String,
}

/// What the engine remembers about a unit's last complete (error-free) apply.
#[derive(Debug, Clone, Default)]
pub(super) struct LastApply {
    objects: HashMap<ObjectKey, Version>,
    inventory: BTreeSet<ObjectKey>,
    /// Every object was healthy then (or became so while the daemon waited).
    healthy: bool,
    /// A full sync found nothing to do since that apply (see [`Checked`]).
    pub checked: Option<Checked>,
}

/// What a full sync that found nothing to do leaves for the resyncs after it, which may
/// answer from the drift watches instead of listing (`super::watched`).
#[derive(Debug, Clone)]
pub(super) struct Checked {
    /// The epoch of the watch of each of the unit's kinds before it listed.
    pub epochs: Epochs,
    /// The inventory's resourceVersion it read.
    pub inventory: String,
    /// Its objects found with no health rule and no status, as it reported them.
    pub no_health_rule: Vec<ObjectKey>,
    /// Resyncs answered from the watches since.
    pub answered: u32,
}

impl LastApply {
    fn of(applied: &AppliedObjects, healthy: bool) -> LastApply {
        LastApply {
            objects: applied
                .iter()
                .map(|(k, a)| {
                    let version = Version {
                        digest: a.desired.digest(),
                        resource_version: a.resource_version.clone(),
                        uid: a.uid.clone(),
                    };
                    (k.clone(), version)
                })
                .collect(),
            inventory: applied.keys().cloned().collect(),
            healthy,
            checked: None,
        }
    }

    /// The same manifest as last applied, and the object with `uid` at
    /// `resource_version` is the one that apply left (or found holding it).
    pub fn holds_at(&self, p: &Planned, uid: &str, resource_version: &str) -> bool {
        self.objects.get(&p.key).is_some_and(|v| {
            v.digest == p.digest && v.resource_version == resource_version && v.uid == uid
        })
    }

    /// The same manifest as last applied, and the live object still at the version that
    /// apply produced: nothing to do for it.
    pub fn unchanged(&self, p: &Planned, live: &Live) -> bool {
        self.objects
            .get(&p.key)
            .is_some_and(|v| v.digest == p.digest && v.resource_version == live.resource_version)
    }

    /// The whole unit is as the last apply left it, healthy, and its inventory says so:
    /// a sync would write nothing.
    pub fn still_holds(
        &self,
        previous: &Inventory,
        desired_keys: &BTreeSet<ObjectKey>,
        planned: &[Planned],
        live: &HashMap<ObjectKey, Live>,
    ) -> bool {
        self.same_objects(previous, desired_keys)
            && planned
                .iter()
                .all(|p| live.get(&p.key).is_some_and(|l| self.unchanged(p, l)))
    }

    /// The last apply was healthy, and it, the inventory and the desired state name the
    /// same objects: what [`LastApply::still_holds`] asks besides the live objects.
    pub fn same_objects(&self, previous: &Inventory, desired_keys: &BTreeSet<ObjectKey>) -> bool {
        self.healthy
            && previous.exists
            && self.inventory == *desired_keys
            && previous.keys() == *desired_keys
    }
}

/// What a sync knows of its unit's objects before it applies: the last complete apply it
/// remembers, else what the unit's inventory recorded (after a restart, a leadership
/// hand-over, in `pontoon sync --once`).
pub(super) struct Known<'a> {
    pub last: Option<&'a LastApply>,
    pub inventory: &'a Inventory,
    pub unit: &'a UnitDesired,
}

/// What is known of one object's last apply, from memory or from its inventory entry.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recorded<'a> {
    Remembered(&'a Version),
    Inventory(&'a Entry),
}

impl<'a> Known<'a> {
    /// What the last apply of `key` left, if anything says.
    pub fn of(&self, key: &ObjectKey) -> Option<Recorded<'a>> {
        if let Some(v) = self.last.and_then(|l| l.objects.get(key)) {
            return Some(Recorded::Remembered(v));
        }
        self.inventory.entries.get(key).map(Recorded::Inventory)
    }

    /// Whether a live object at `resource_version` may have moved since pontoon's last
    /// apply of `key` (or nothing says what that apply left): its whole object is needed
    /// to judge it.
    pub fn moved(&self, key: &ObjectKey, resource_version: &str) -> bool {
        self.of(key)
            .is_none_or(|r| r.resource_version() != Some(resource_version))
    }
}

impl Recorded<'_> {
    /// The digest of the manifest applied, when recorded.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Recorded::Remembered(v) => Some(&v.digest),
            Recorded::Inventory(e) => e.digest.as_ref(),
        }
    }

    /// The resourceVersion that apply left, when recorded.
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Recorded::Remembered(v) => Some(v.resource_version.as_str()),
            Recorded::Inventory(e) => e.resource_version.as_deref(),
        }
        .filter(|rv| !rv.is_empty())
    }

    /// The uid of the object that apply created or found, when recorded.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Recorded::Remembered(v) => Some(v.uid.as_str()),
            Recorded::Inventory(e) => e.uid.as_deref(),
        }
        .filter(|uid| !uid.is_empty())
    }

    /// The live object (`live`) is exactly as that apply of the manifest with `digest`
    /// left it: the same uid, the same resourceVersion. Nothing to do for it.
    pub fn unchanged(&self, digest: &Digest, live: &Live) -> bool {
        match self {
            Recorded::Remembered(v) => {
                v.digest == *digest
                    && v.resource_version == live.resource_version
                    && (v.uid.is_empty() || v.uid == live.uid)
            }
            Recorded::Inventory(e) => e.unchanged(digest, &live.uid, &live.resource_version),
        }
    }
}

/// What the engine remembers, per team, on one cluster.
#[derive(Default)]
pub(super) struct Memory {
    last: Mutex<HashMap<TeamName, LastApply>>,
    applied: Mutex<HashMap<TeamName, Arc<AppliedObjects>>>,
}

impl Memory {
    fn last(&self) -> std::sync::MutexGuard<'_, HashMap<TeamName, LastApply>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn applied_lock(&self) -> std::sync::MutexGuard<'_, HashMap<TeamName, Arc<AppliedObjects>>> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The team's last complete apply, if remembered.
    pub fn last_apply(&self, team: &TeamName) -> Option<LastApply> {
        self.last().get(team).cloned()
    }

    /// What the last sync of `team` applied.
    pub fn applied(&self, team: &TeamName) -> Option<Arc<AppliedObjects>> {
        self.applied_lock().get(team).cloned()
    }

    /// Forgets the last apply, so the next sync re-checks every object.
    pub fn forget_last_apply(&self, team: &TeamName) {
        self.last().remove(team);
    }

    /// A full sync of `team` found nothing to do: the resyncs after it may answer from
    /// the drift watches, as `checked` says (`None`: they may not, a watch was not
    /// listed when it began).
    pub fn checked(&self, team: &TeamName, checked: Option<Checked>) {
        if let Some(last) = self.last().get_mut(team) {
            last.checked = checked;
        }
    }

    /// A resync of `team` was answered from the drift watches.
    pub fn answered(&self, team: &TeamName) {
        if let Some(c) = self.last().get_mut(team).and_then(|l| l.checked.as_mut()) {
            c.answered += 1;
        }
    }

    /// The team's last apply has become healthy (after a wait for its rollouts).
    pub fn mark_healthy(&self, team: &TeamName) {
        if let Some(last) = self.last().get_mut(team) {
            last.healthy = true;
        }
    }

    /// Records what a sync applied; only an error-free sync (`complete`) is a last apply
    /// the next sync may trust.
    pub fn record(&self, team: &TeamName, applied: AppliedObjects, complete: bool, healthy: bool) {
        if complete {
            self.last()
                .insert(team.clone(), LastApply::of(&applied, healthy));
        } else {
            self.forget_last_apply(team);
        }
        self.applied_lock().insert(team.clone(), Arc::new(applied));
    }

    /// Forgets everything about a team (it was removed from the cluster).
    pub fn drop_team(&self, team: &TeamName) {
        self.last().remove(team);
        self.applied_lock().remove(team);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Applier, ClusterName, PrunePolicy, UnitId};

    fn live(uid: &str, rv: &str) -> Live {
        Live {
            resource_version: rv.into(),
            uid: uid.into(),
            prune_disabled: false,
            health: None,
            object: None,
        }
    }

    fn entry(name: &str, uid: Option<&str>, rv: &str, digest: Digest) -> Entry {
        Entry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
            applier: Applier::Team,
            uid: uid.map(str::to_owned),
            resource_version: Some(rv.into()),
            digest: Some(digest),
        }
    }

    #[test]
    fn the_last_apply_remembered_wins_and_the_inventory_stands_in_for_it_after_a_restart() {
        let (d1, d2) = (Digest([1; 16]), Digest([2; 16]));
        let a = entry("a", Some("uid-a"), "10", d1);
        let old = entry("b", None, "20", d1);
        let inventory = Inventory {
            entries: [(a.key(), a.clone()), (old.key(), old.clone())].into(),
            exists: true,
            ..Inventory::default()
        };
        let unit = UnitDesired {
            unit: UnitId {
                team: TeamName("shop".into()),
                cluster: ClusterName("c".into()),
            },
            namespaces: Vec::new(),
            objects: Vec::new(),
            prune: PrunePolicy::default(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: Default::default(),
        };
        let restarted = Known {
            last: None,
            inventory: &inventory,
            unit: &unit,
        };
        let recorded = restarted.of(&a.key()).expect("recorded");
        assert!(recorded.unchanged(&d1, &live("uid-a", "10")));
        assert!(
            !recorded.unchanged(&d2, &live("uid-a", "10")),
            "manifest changed"
        );
        assert!(
            !recorded.unchanged(&d1, &live("uid-x", "10")),
            "another object"
        );
        assert!(!restarted.moved(&a.key(), "10"));
        assert!(restarted.moved(&a.key(), "11"));
        // An entry written before uids were recorded never says "unchanged".
        let old_recorded = restarted.of(&old.key()).expect("recorded");
        assert_eq!(old_recorded.uid(), None);
        assert!(!old_recorded.unchanged(&d1, &live("uid-b", "20")));
        // Nothing recorded: the whole object is needed.
        let mut other = a.key();
        other.name = "c".into();
        assert!(restarted.of(&other).is_none());
        assert!(restarted.moved(&other, "1"));

        // The running daemon's memory is newer than the inventory (a version found moved
        // is remembered, and written with the next inventory write only).
        let mut last = LastApply::default();
        last.objects.insert(
            a.key(),
            Version {
                digest: d1,
                resource_version: "15".into(),
                uid: "uid-a".into(),
            },
        );
        let running = Known {
            last: Some(&last),
            inventory: &inventory,
            unit: &unit,
        };
        let recorded = running.of(&a.key()).expect("remembered");
        assert_eq!(recorded.resource_version(), Some("15"));
        assert!(recorded.unchanged(&d1, &live("uid-a", "15")));
        assert!(!running.moved(&a.key(), "15"));
    }
}
