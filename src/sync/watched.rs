//! What the drift watches of one cluster have seen of pontoon's objects, so that a resync
//! of an unchanged unit can be answered without listing anything.
//!
//! **What the watches hold.** The drift watches (one label-filtered watch per managed kind,
//! `crate::drift`) judge each event and keep nothing of it. Here they also leave, per kind
//! (group, kind), the last `(uid, resourceVersion)` seen of each object, fed as a reflector
//! is: the objects of an initial list are gathered apart and replace the kind's objects at
//! `InitDone`; `Apply` sets an object, `Delete` removes it. An object that stops matching a
//! watch's label selector (pontoon's labels taken off) arrives as a deletion. Nothing else
//! of an object is kept: an object's resourceVersion moves with every write to it (spec,
//! labels, status, a deletion and a new object of the same name), so "the same uid and
//! resourceVersion" is "exactly the object a list would show".
//!
//! **When that knowledge is complete.** A kind counts only while its watch runs and has
//! listed, and only as far back as its *epoch*: a number that changes whenever the watch
//! may have missed something or starts over — a new watch (the kind watched again, the
//! drift watches rebuilt for other teams, a restart), an `Init` (kube's watcher re-lists
//! after a 410 or a failed start), any error the watcher reports, and the watch stopping.
//! A unit's full sync records the epochs of its kinds *before* it lists; a later resync may
//! trust the watches only if every one of its kinds is still listed at that same epoch:
//! then each watch has run without a gap since the lists, and delivered, in order, every
//! change made since (at most it lags by the events still in flight, which the drift
//! watch judges as they arrive, as it would after a list).
//!
//! **What a resync then skips** (`Syncer::answered_by_watches`): the unit's lists, and
//! nothing else. It still reads its inventory (one GET), and it answers only when
//! everything the full path's "nothing changed" check asks holds, with the live
//! resourceVersions taken from here: the unit's last sync was complete and healthy, and a
//! full sync since found nothing to do (the record it leaves, [`Checked`]); the desired
//! objects and their digests are what was applied; the inventory is at the
//! resourceVersion that full sync read and lists exactly the desired objects; every
//! desired object's kind is resolved and listed at the recorded epoch, and the object is
//! here with the uid and resourceVersion pontoon's sync left. Anything else — a write to
//! make, a prune, an adoption, a missing object, a new kind, a changed inventory, a gap,
//! an error, a restart (nothing remembered) — takes the full path with its lists, which
//! records a new [`Checked`] when it finds nothing to do. And every `sync.fullResyncEvery`
//! -th resync of an unchanged unit takes the full path anyway, so that a change a watch
//! missed without saying so cannot hide for longer than that.
//!
//! Only reads; the feed never fails and never blocks on I/O (one short lock per event).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::health::Health;
use super::inventory::Inventory;
use super::live::LiveObjects;
use super::memory::{Checked, LastApply};
use super::resolve::Planned;
use super::{Syncer, UnitResult};
use crate::desired::{ObjectKey, TeamName};

/// A kind as watches and object keys name it: (group, kind).
pub(super) type GroupKind = (String, String);

/// The epoch of each of a unit's kinds when its last full sync began to list.
pub(super) type Epochs = BTreeMap<GroupKind, u64>;

/// One object as its watch last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub uid: String,
    pub resource_version: String,
}

/// A namespace and name within a kind.
type Name = (String, String);

#[derive(Debug, Default)]
struct KindSeen {
    /// The feed (watch) whose events count; another one's are ignored.
    feed: u64,
    epoch: u64,
    /// The watch has listed since its epoch began, and `objects` say what is there.
    listed: bool,
    objects: HashMap<Name, Seen>,
    /// The objects of an initial list under way.
    listing: Option<HashMap<Name, Seen>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last number handed out, for feeds and epochs alike: none is used twice.
    counter: u64,
    kinds: HashMap<GroupKind, KindSeen>,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// What the drift watches of one cluster have seen (see the module documentation).
#[derive(Debug, Default)]
pub struct Watched {
    inner: Mutex<Inner>,
}

impl Watched {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new watch of `group`/`kind` feeds what it sees from now on; the kind's earlier
    /// feed, if any, no longer counts, and nothing is known of the kind until this one
    /// has listed.
    pub fn feed(self: &Arc<Self>, group: &str, kind: &str) -> Feed {
        let gk = (group.to_owned(), kind.to_owned());
        let mut inner = self.lock();
        let (feed, epoch) = (inner.next(), inner.next());
        inner.kinds.insert(
            gk.clone(),
            KindSeen {
                feed,
                epoch,
                ..KindSeen::default()
            },
        );
        Feed {
            watched: self.clone(),
            kind: gk,
            id: feed,
        }
    }

    /// The current epoch of each kind of `kinds`, when every one of them is listed.
    pub(super) fn epochs<'a>(
        &self,
        kinds: impl IntoIterator<Item = &'a GroupKind>,
    ) -> Option<Epochs> {
        let inner = self.lock();
        kinds
            .into_iter()
            .map(|gk| {
                let k = inner.kinds.get(gk).filter(|k| k.listed)?;
                Some((gk.clone(), k.epoch))
            })
            .collect()
    }

    /// What the watches have seen of each of `keys`, provided each key's kind is still
    /// listed at the epoch `since` records for it (so nothing was missed since); `None`
    /// when that is not so, or an object is not there.
    pub(super) fn current<'a>(
        &self,
        since: &Epochs,
        keys: impl IntoIterator<Item = &'a ObjectKey>,
    ) -> Option<Vec<Seen>> {
        let inner = self.lock();
        let mut out = Vec::new();
        for key in keys {
            let gk = (key.group.clone(), key.kind.clone());
            let epoch = since.get(&gk)?;
            let k = inner
                .kinds
                .get(&gk)
                .filter(|k| k.listed && k.epoch == *epoch)?;
            let seen = k.objects.get(&(key.namespace.clone(), key.name.clone()))?;
            out.push(seen.clone());
        }
        Some(out)
    }
}

/// One watch's feed of what it sees of one kind. Dropping it (the watch stopped or was
/// aborted) ends what is known of the kind, unless another watch feeds it since.
pub struct Feed {
    watched: Arc<Watched>,
    kind: GroupKind,
    id: u64,
}

impl Feed {
    /// Runs `f` on the kind's record if this feed is still the one that counts.
    fn with(&self, f: impl FnOnce(&mut KindSeen, &mut dyn FnMut() -> u64)) {
        let mut inner = self.watched.lock();
        let Inner { counter, kinds } = &mut *inner;
        let Some(k) = kinds.get_mut(&self.kind).filter(|k| k.feed == self.id) else {
            return;
        };
        let mut next = || {
            *counter += 1;
            *counter
        };
        f(k, &mut next);
    }

    /// The watch starts (again) with a list: nothing seen before counts until it is done.
    pub fn listing(&self) {
        self.with(|k, next| {
            k.epoch = next();
            k.listed = false;
            k.listing = Some(HashMap::new());
        });
    }

    /// The initial list is done: what it held is what the kind has.
    pub fn listed(&self) {
        self.with(|k, _| {
            k.objects = k.listing.take().unwrap_or_default();
            k.listed = true;
        });
    }

    /// The object with `meta` as it is now (created, changed, or in a list).
    pub fn seen(&self, meta: &kube::api::ObjectMeta) {
        let name = name_of(meta);
        let seen = Seen {
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        };
        self.with(|k, _| match &mut k.listing {
            Some(listing) => {
                listing.insert(name, seen);
            }
            None => {
                k.objects.insert(name, seen);
            }
        });
    }

    /// The object with `meta` is gone (deleted, or no longer matching the watch).
    pub fn gone(&self, meta: &kube::api::ObjectMeta) {
        let name = name_of(meta);
        self.with(|k, _| {
            k.objects.remove(&name);
            if let Some(listing) = &mut k.listing {
                listing.remove(&name);
            }
        });
    }

    /// The watch reported an error: it may have missed something, so what a unit's last
    /// full sync recorded no longer counts (what is seen from here on still does).
    pub fn interrupted(&self) {
        self.with(|k, next| k.epoch = next());
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.with(|k, next| {
            k.epoch = next();
            k.listed = false;
            k.objects = HashMap::new();
            k.listing = None;
        });
    }
}

fn name_of(meta: &kube::api::ObjectMeta) -> Name {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Syncer {
    /// Answers a resync from the drift watches, as `watched` describes: true (the unit
    /// unchanged in `r`) only when the full path's "nothing changed" would hold with the
    /// live resourceVersions the watches saw, every watch of the unit's kinds has run
    /// without a gap since a full sync found nothing to do, the inventory is as that sync
    /// read it, and this is not the resync that must list anyway
    /// (`sync.fullResyncEvery`).
    pub(super) fn answered_by_watches(
        &self,
        last: &LastApply,
        previous: &Inventory,
        desired_keys: &BTreeSet<ObjectKey>,
        planned: &[Planned<'_>],
        r: &mut UnitResult,
    ) -> bool {
        let Some(checked) = &last.checked else {
            return false;
        };
        if checked.answered.saturating_add(1) >= self.options.full_resync_every
            || !last.same_objects(previous, desired_keys)
            || previous.resource_version.as_deref() != Some(checked.inventory.as_str())
            || planned.iter().any(|p| p.resolved.is_none())
        {
            return false;
        }
        let Some(seen) = self
            .watched
            .current(&checked.epochs, planned.iter().map(|p| &p.key))
        else {
            return false;
        };
        if !planned
            .iter()
            .zip(&seen)
            .all(|(p, s)| last.holds_at(p, &s.uid, &s.resource_version))
        {
            return false;
        }
        r.unchanged = planned.len();
        r.no_health_rule = checked.no_health_rule.clone();
        tracing::debug!(unit = %r.unit, "unchanged, as the drift watches saw it: nothing listed");
        true
    }

    /// The full path found nothing to do: `r` says the unit unchanged, and the resyncs
    /// after it may answer from the watches of its kinds, if each was listed at the
    /// `epochs` taken before the lists.
    pub(super) fn found_unchanged(
        &self,
        team: &TeamName,
        planned: &[Planned<'_>],
        live: &LiveObjects,
        previous: &Inventory,
        epochs: Option<Epochs>,
        r: &mut UnitResult,
    ) {
        r.unchanged = planned.len();
        r.no_health_rule = planned
            .iter()
            .filter(|p| live.get(&p.key).and_then(|l| l.health.as_ref()) == Some(&Health::NoRule))
            .map(|p| p.key.clone())
            .collect();
        r.no_health_rule.sort();
        let checked = match (epochs, previous.resource_version.clone()) {
            (Some(epochs), Some(inventory)) => Some(Checked {
                epochs,
                inventory,
                no_health_rule: r.no_health_rule.clone(),
                answered: 0,
            }),
            _ => None,
        };
        self.memory.checked(team, checked);
    }
}

/// The kinds whose watches a unit's resyncs may answer from: those of its desired objects
/// and of its inventory's entries.
pub(super) fn kinds_of(planned: &[Planned<'_>], previous: &Inventory) -> BTreeSet<GroupKind> {
    let keys = planned.iter().map(|p| &p.key);
    keys.chain(previous.entries.keys())
        .map(|k| (k.group.clone(), k.kind.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, rv: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn cm() -> GroupKind {
        (String::new(), "ConfigMap".into())
    }

    fn rvs(watched: &Watched, since: &Epochs, names: &[&str]) -> Option<Vec<String>> {
        let keys: Vec<ObjectKey> = names.iter().map(|n| key(n)).collect();
        watched
            .current(since, &keys)
            .map(|s| s.into_iter().map(|s| s.resource_version).collect())
    }

    /// A watch that listed `a` at version 1.
    fn listed(watched: &Arc<Watched>) -> Feed {
        let feed = watched.feed("", "ConfigMap");
        feed.listing();
        feed.seen(&meta("a", "1"));
        feed.listed();
        feed
    }

    #[test]
    fn nothing_counts_before_the_first_list_is_done() {
        let watched = Arc::new(Watched::default());
        assert_eq!(watched.epochs([&cm()]), None, "never watched");
        let feed = watched.feed("", "ConfigMap");
        feed.listing();
        feed.seen(&meta("a", "1"));
        assert_eq!(watched.epochs([&cm()]), None, "listing");
        feed.listed();
        let since = watched.epochs([&cm()]).expect("listed");
        assert_eq!(rvs(&watched, &since, &["a"]), Some(vec!["1".into()]));
        assert_eq!(rvs(&watched, &since, &["b"]), None, "not there");
    }

    #[test]
    fn changes_since_are_seen_and_a_deletion_removes_the_object() {
        let watched = Arc::new(Watched::default());
        let feed = listed(&watched);
        let since = watched.epochs([&cm()]).expect("listed");
        feed.seen(&meta("a", "7"));
        feed.seen(&meta("b", "8"));
        assert_eq!(
            rvs(&watched, &since, &["a", "b"]),
            Some(vec!["7".into(), "8".into()])
        );
        feed.gone(&meta("a", "9"));
        assert_eq!(rvs(&watched, &since, &["a"]), None);
    }

    #[test]
    fn an_error_a_relist_a_stop_or_a_new_watch_each_break_what_was_recorded() {
        let watched = Arc::new(Watched::default());
        let feed = listed(&watched);
        let since = watched.epochs([&cm()]).expect("listed");
        feed.interrupted();
        assert_eq!(rvs(&watched, &since, &["a"]), None, "error");
        let since = watched
            .epochs([&cm()])
            .expect("still listed after an error");
        assert_eq!(rvs(&watched, &since, &["a"]), Some(vec!["1".into()]));

        // A relist replaces what is known, objects deleted meanwhile included.
        feed.listing();
        assert_eq!(watched.epochs([&cm()]), None, "relisting");
        feed.seen(&meta("b", "5"));
        feed.listed();
        assert_eq!(rvs(&watched, &since, &["b"]), None, "relisted");
        let since = watched.epochs([&cm()]).expect("listed again");
        assert_eq!(rvs(&watched, &since, &["a"]), None, "gone in the relist");
        assert_eq!(rvs(&watched, &since, &["b"]), Some(vec!["5".into()]));

        drop(feed);
        assert_eq!(rvs(&watched, &since, &["b"]), None, "stopped");
        assert_eq!(watched.epochs([&cm()]), None);
    }

    #[test]
    fn a_replaced_watch_no_longer_counts_even_when_it_stops_late() {
        let watched = Arc::new(Watched::default());
        let old = listed(&watched);
        let new = listed(&watched);
        let since = watched.epochs([&cm()]).expect("listed");
        old.seen(&meta("a", "99"));
        assert_eq!(rvs(&watched, &since, &["a"]), Some(vec!["1".into()]));
        drop(old);
        assert_eq!(rvs(&watched, &since, &["a"]), Some(vec!["1".into()]));
        drop(new);
        assert_eq!(rvs(&watched, &since, &["a"]), None);
    }

    #[test]
    fn a_kind_not_recorded_never_counts() {
        let watched = Arc::new(Watched::default());
        let _feed = listed(&watched);
        let mut other = key("a");
        other.kind = "Secret".into();
        let since = watched.epochs([&cm()]).expect("listed");
        assert!(watched.current(&since, [&other]).is_none());
    }
}
