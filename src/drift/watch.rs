//! The drift watches of one cluster: one watch per managed kind (label-filtered, never per
//! object), started and stopped as the kinds the units manage change. Each change a watch
//! delivers is judged (see `judge.rs`); a change seen while its team's sync runs is
//! deferred and judged once that sync is over, against what it applied. Each watch also
//! leaves the uid and resourceVersion of what it sees with the sync engine
//! (`crate::sync::Watched`), and says when it (re)lists, errs or stops, so that a resync
//! of an unchanged unit can be answered from it without a list.
//!
//! A watch never writes; it only reads, judges and reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::DriftEvent;
use super::error::{DriftError, DriftFailure, FailureSink};
use super::events::EventPublisher;
use super::judge::Change;
use super::side_writes::{Limits, SideWrites};
use crate::cluster::Resolved;
use crate::desired::{ObjectKey, TeamName};
use crate::ssa::managed_fields::HUMAN_MANAGERS;
use crate::sync::Syncer;

/// How long a deferred object waits for its team's sync to end before it is judged.
const RECHECK_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// What a cluster's drift watches take from the daemon's config and process.
#[derive(Debug, Clone)]
pub struct DriftSettings {
    /// Field managers that stand for people, beyond [`HUMAN_MANAGERS`] (the config's
    /// `drift.humanManagers`).
    pub human_managers: Vec<String>,
    /// This process's identity: the `reportingInstance` of the Kubernetes Events drift
    /// publishes.
    pub reporter_instance: String,
}

/// An object seen while its team's sync ran, to judge when the sync is over.
struct Deferred {
    resolved: Resolved,
    key: ObjectKey,
    /// The object as the watch last saw it, when what it saw was the deletion.
    deleted: Option<DynamicObject>,
}

/// The watch of one kind.
struct KindWatch {
    task: JoinHandle<()>,
    /// Turns true once the watch's initial list has been judged.
    listed: watch::Receiver<bool>,
}

/// The drift watches of one cluster.
pub struct DriftWatch {
    pub(super) syncer: Arc<Syncer>,
    pub(super) human_managers: Vec<String>,
    pub(super) events: mpsc::Sender<DriftEvent>,
    pub(super) failures: FailureSink,
    watches: Mutex<HashMap<(String, String), KindWatch>>,
    /// Objects reported drifted and not yet seen corrected.
    pub(super) open: Mutex<BTreeMap<ObjectKey, DriftEvent>>,
    /// What to judge again when a team's sync ends, per team: one waiter per team, however
    /// many objects a sync prunes.
    deferred: Mutex<HashMap<TeamName, Vec<Deferred>>>,
    pub(super) publisher: EventPublisher,
    /// Removal patches and Events, bounded and under the cluster's write permits.
    pub(super) side_writes: SideWrites,
    /// The teams watched, when not all (`pontoon.dev/team in (…)`): a replica holding some
    /// shards watches only their teams' objects.
    teams: Mutex<Option<String>>,
}

impl DriftWatch {
    /// Drift seen on the syncer's cluster goes to `events`, and what keeps drift from being
    /// watched or corrected to `failures`.
    pub fn new(
        syncer: Arc<Syncer>,
        events: mpsc::Sender<DriftEvent>,
        failures: mpsc::Sender<DriftFailure>,
        settings: &DriftSettings,
    ) -> Arc<DriftWatch> {
        let failures = FailureSink::new(syncer.cluster().name.clone(), failures);
        let side_writes = SideWrites::start(
            syncer.cluster().clone(),
            failures.clone(),
            Limits::default(),
        );
        Arc::new(DriftWatch {
            human_managers: HUMAN_MANAGERS
                .iter()
                .map(|m| (*m).to_owned())
                .chain(settings.human_managers.iter().cloned())
                .collect(),
            publisher: EventPublisher::new(
                syncer.client().clone(),
                settings.reporter_instance.clone(),
            ),
            failures,
            side_writes,
            syncer,
            events,
            watches: Mutex::new(HashMap::new()),
            open: Mutex::new(BTreeMap::new()),
            deferred: Mutex::new(HashMap::new()),
            teams: Mutex::new(None),
        })
    }

    /// Watches only the objects of `teams` (every team's by default). Set before the first
    /// [`DriftWatch::ensure`]: watches already running keep their selector.
    pub fn only_teams(&self, teams: &BTreeSet<TeamName>) {
        let names: Vec<&str> = teams.iter().map(|t| t.0.as_str()).collect();
        *self.teams.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "{},{} in ({})",
            self.syncer.owner().selector_managed(),
            crate::desired::LABEL_TEAM,
            names.join(",")
        ));
    }

    /// Starts a watch for each kind not watched yet and stops watches of kinds no unit
    /// manages any more. Kinds are (apiVersion, kind). Returns once the watches run; see
    /// [`DriftWatch::listed`] for when they see changes.
    pub async fn ensure(self: &Arc<Self>, kinds: BTreeSet<(String, String)>) {
        let mut wanted = Vec::new();
        for (api_version, kind) in &kinds {
            match self
                .syncer
                .cluster()
                .resolve(&crate::cluster::gvk_of(api_version, kind))
                .await
            {
                Ok(r) => wanted.push(((api_version.clone(), kind.clone()), r)),
                Err(source) => self.failures.kind(
                    kind,
                    DriftError::Resolve {
                        api_version: api_version.clone(),
                        kind: kind.clone(),
                        source,
                    },
                ),
            }
        }
        let mut watches = self.lock_watches();
        watches.retain(|k, w| {
            let keep = kinds.contains(k);
            if !keep {
                w.task.abort();
            }
            keep
        });
        for (k, resolved) in wanted {
            if watches.get(&k).is_some_and(|w| !w.task.is_finished()) {
                continue;
            }
            let (listed_tx, listed) = watch::channel(false);
            let me = self.clone();
            let task = tokio::spawn(async move { me.run_watch(resolved, listed_tx).await });
            watches.insert(k, KindWatch { task, listed });
        }
    }

    /// Resolves once every watch started so far has judged its initial list: a change
    /// made after that is seen. A watch that ended counts as done.
    pub async fn listed(&self) {
        let pending: Vec<watch::Receiver<bool>> = self
            .lock_watches()
            .values()
            .map(|w| w.listed.clone())
            .collect();
        for mut listed in pending {
            let _ = listed.wait_for(|done| *done).await;
        }
    }

    pub fn stop(&self) {
        for (_, w) in self.lock_watches().drain() {
            w.task.abort();
        }
        self.side_writes.stop();
    }

    fn lock_watches(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), KindWatch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run_watch(self: Arc<Self>, resolved: Resolved, listed: watch::Sender<bool>) {
        let api: kube::Api<DynamicObject> =
            kube::Api::all_with(self.syncer.client().clone(), &resolved.resource);
        // The daemon's own owner's objects only (the default owner's are told apart by
        // `judge_change`, since no selector singles out objects without an owner label).
        let selector = self
            .teams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.syncer.owner().selector_managed());
        // Closed by the server before the client's read timeout would cut a quiet watch.
        let config = watcher::Config::default()
            .labels(&selector)
            .timeout(self.syncer.cluster().watch_timeout());
        // The watcher re-lists after an expired resourceVersion; objects whose version is
        // what pontoon applied are skipped, so a re-list causes no re-applies.
        let mut stream = watcher(api, config).default_backoff().boxed();
        // What this watch sees, for resyncs answered without lists; it stops counting
        // when the task ends or is aborted (the feed is dropped).
        let feed = self
            .syncer
            .watched()
            .feed(&resolved.resource.group, &resolved.resource.kind);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    feed.seen(&o.metadata);
                    self.judge_change(&resolved, o, Change::Written)
                }
                Ok(watcher::Event::Delete(o)) => {
                    feed.gone(&o.metadata);
                    self.judge_change(&resolved, o, Change::Deleted)
                }
                Ok(watcher::Event::InitDone) => {
                    feed.listed();
                    listed.send_replace(true);
                }
                Ok(watcher::Event::Init) => feed.listing(),
                Err(source) => {
                    feed.interrupted();
                    self.failures.kind(
                        &resolved.resource.kind,
                        DriftError::Watch {
                            kind: resolved.resource.kind.clone(),
                            source,
                        },
                    )
                }
            }
        }
    }

    /// Judges the object again once the team's sync on this cluster is over, against what
    /// that sync applied: a deletion (`deleted`, the object as last seen) as it was, any
    /// other change by reading the object again.
    pub(super) fn recheck_after_sync(
        self: &Arc<Self>,
        resolved: &Resolved,
        team: TeamName,
        key: ObjectKey,
        deleted: Option<DynamicObject>,
    ) {
        let first = {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            let list = deferred.entry(team.clone()).or_default();
            let first = list.is_empty();
            list.push(Deferred {
                resolved: resolved.clone(),
                key,
                deleted,
            });
            first
        };
        if !first {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(RECHECK_WAIT_LIMIT, me.syncer.until_idle(&team)).await;
            let list = me
                .deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&team)
                .unwrap_or_default();
            let mut read = BTreeSet::new();
            for d in list {
                if let Some(o) = d.deleted {
                    me.judge_change(&d.resolved, o, Change::Deleted);
                } else if read.insert(d.key.clone()) {
                    me.read_again(&d.resolved, &team, &d.key).await;
                }
            }
        });
    }

    async fn read_again(self: &Arc<Self>, resolved: &Resolved, team: &TeamName, key: &ObjectKey) {
        let client = self.syncer.client().clone();
        let api: kube::Api<DynamicObject> = if key.namespace.is_empty() {
            kube::Api::all_with(client, &resolved.resource)
        } else {
            kube::Api::namespaced_with(client, &key.namespace, &resolved.resource)
        };
        match api.get_opt(&key.name).await {
            Ok(Some(o)) => self.judge_change(resolved, o, Change::Written),
            // Deleted meanwhile: the watch reports the deletion.
            Ok(None) => {}
            // Its next change decides.
            Err(source) => self.failures.object(
                team,
                DriftError::ReadAgain {
                    object: key.clone(),
                    source,
                },
            ),
        }
    }
}

/// The kinds (apiVersion, kind) a state manages on one cluster.
pub fn kinds_of(
    state: &crate::desired::DesiredState,
    cluster: &crate::desired::ClusterName,
) -> BTreeSet<(String, String)> {
    kinds_of_units(state.units.values(), cluster)
}

/// The kinds `units` manage on `cluster`: those of a render, or those of the revisions
/// units a rollout stage holds back run.
pub fn kinds_of_units<'a>(
    units: impl IntoIterator<Item = &'a crate::desired::UnitDesired>,
    cluster: &crate::desired::ClusterName,
) -> BTreeSet<(String, String)> {
    units
        .into_iter()
        .filter(|u| &u.unit.cluster == cluster)
        .flat_map(|u| u.objects.iter())
        .filter_map(|o| {
            // Read from the manifest's text: no tree is built for it.
            let head = o.object.head();
            Some((head.api_version?.into_owned(), head.kind?.into_owned()))
        })
        .collect()
}
