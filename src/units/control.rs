//! The requests behind the Units of one cluster: the status written when it changed
//! (compared with what this process last wrote or listed, so a no-op resync sends
//! nothing), the Unit created with its first status, removed with its team, and the
//! watch that reads what people ask of a unit (the reconcile annotation).
//!
//! Unit writes have a limit of their own per cluster ([`WRITES_AT_ONCE`]) instead of
//! taking the cluster's write permits: behind a first sync's thousands of queued applies,
//! each Unit would wait its turn twice (create, then status) and show a unit Synced
//! minutes after it was. The apiserver sees at most `sync.concurrency` applies and
//! [`WRITES_AT_ONCE`] Unit writes from pontoon at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Semaphore;

use super::status::{ComponentHealth, Observed, UnitStatus, next_status};
use super::suspend::{SuspendSpec, Suspension, suspension};
use super::{
    ANNOTATION_RECONCILE, ANNOTATION_RECONCILE_SOURCE, API_VERSION, GROUP, KIND, PLURAL, UnitError,
    VERSION,
};
use crate::cluster::Cluster;
use crate::desired::{LABEL_OWNER, Owner, TeamName};
use crate::sync::UnitResult;

/// The Unit's REST resource.
pub fn resource() -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        plural: PLURAL.to_owned(),
    }
}

/// The Units API in `namespace`.
pub fn api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &resource())
}

/// The label selector of `owner`'s Units.
pub fn selector(owner: &Owner) -> String {
    format!("{LABEL_OWNER}={owner}")
}

/// Unit writes in flight at once per cluster.
pub const WRITES_AT_ONCE: usize = 8;

/// What is known of one Unit on the cluster.
#[derive(Debug, Clone, Default)]
struct Known {
    generation: i64,
    status: Option<UnitStatus>,
}

/// The Units of one cluster, as this process wrote or listed them. Writes of different
/// teams may run at once; the caller keeps each team's writes in order (one at a time).
pub struct UnitWriter {
    cluster: Arc<Cluster>,
    api: Api<DynamicObject>,
    namespace: String,
    owner: Owner,
    known: Mutex<HashMap<TeamName, Known>>,
    writes: Semaphore,
}

impl UnitWriter {
    pub fn new(cluster: Arc<Cluster>, namespace: &str, owner: &Owner) -> UnitWriter {
        UnitWriter {
            api: api(cluster.client().clone(), namespace),
            cluster,
            namespace: namespace.to_owned(),
            owner: owner.clone(),
            known: Mutex::new(HashMap::new()),
            writes: Semaphore::new(WRITES_AT_ONCE),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<TeamName, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A turn among this cluster's Unit writes.
    async fn write_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed.
        self.writes.acquire().await.ok()
    }

    fn remember(&self, team: &TeamName, known: Option<Known>) {
        match known {
            Some(k) => self.known().insert(team.clone(), k),
            None => self.known().remove(team),
        };
    }

    /// Reads the owner's Units once, so a restarted daemon writes none that is as its
    /// first sync would write it.
    pub async fn load(&self) -> Result<Vec<Asked>, UnitError> {
        let _permit = self.cluster.read_permit().await;
        let list = self
            .api
            .list(&ListParams::default().labels(&selector(&self.owner)))
            .await
            .map_err(|source| UnitError::Request {
                name: format!("{}/*", self.namespace),
                source,
            })?;
        let mut asked = Vec::new();
        for o in list.items {
            asked.extend(asked_of(&self.owner, &o));
            let Some(team) = o
                .metadata
                .name
                .as_deref()
                .and_then(|n| super::team_of(&self.owner, n))
            else {
                continue;
            };
            self.remember(&team, Some(known_of(&o)));
        }
        Ok(asked)
    }

    /// Takes what the watch saw of a Unit another replica writes: when this replica takes
    /// the team's shard over, its first sync then writes nothing the Unit already says.
    pub fn observe(&self, asked: &Asked) {
        let known = (!asked.gone).then(|| Known {
            generation: asked.generation,
            status: asked.status.clone(),
        });
        self.remember(&asked.team, known);
    }

    /// The generation this process last saw of `team`'s Unit.
    pub fn generation(&self, team: &TeamName) -> i64 {
        self.known().get(team).map_or(0, |k| k.generation)
    }

    /// The status this process knows `team`'s Unit to have.
    pub fn status(&self, team: &TeamName) -> Option<UnitStatus> {
        self.known().get(team).and_then(|k| k.status.clone())
    }

    /// Writes the status `result` leaves the Unit in, unless it already has it; creates
    /// the Unit first when there is none. `handled`: the reconcile request this sync
    /// answers, if it answers one; `components`: the `platform` unit's components' health
    /// (empty for a team). Returns whether anything was written.
    pub async fn record(
        &self,
        result: &UnitResult,
        handled: Option<&str>,
        suspended: Option<&Suspension>,
        components: &BTreeMap<String, ComponentHealth>,
        now: &str,
    ) -> Result<bool, UnitError> {
        let team = &result.unit.team;
        let name = super::unit_name(&self.owner, team);
        let known = self.known().get(team).cloned();
        let handled = handled.map(str::to_owned).or_else(|| {
            known
                .as_ref()
                .and_then(|k| k.status.as_ref())
                .and_then(|s| s.last_handled_reconcile_at.clone())
        });
        let decide = |generation| UnitStatus {
            components: components.clone(),
            ..next_status(
                result,
                known.as_ref().and_then(|k| k.status.as_ref()),
                Observed {
                    generation,
                    handled_reconcile: handled.as_deref(),
                    now,
                    suspended,
                },
            )
        };
        let mut generation = known.as_ref().map_or(0, |k| k.generation);
        if let Some(k) = &known
            && k.status.as_ref() == Some(&decide(generation))
        {
            return Ok(false);
        }
        let _turn = self.write_turn().await;
        let request = |source| UnitError::Request {
            name: format!("{}/{name}", self.namespace),
            source,
        };
        if known.is_none() {
            let body = json!({
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": {LABEL_OWNER: self.owner.as_str()}},
                "spec": {"team": team.0, "cluster": result.unit.cluster.0},
            });
            let created = self
                .api
                .patch(
                    &name,
                    &crate::desired::apply_params(&self.owner).force(),
                    &Patch::Apply(body),
                )
                .await
                .map_err(request)?;
            generation = known_of(&created).generation;
        }
        let status = decide(generation);
        let body = json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "status": status,
        });
        let params = crate::desired::apply_params(&self.owner).force();
        let written = match self
            .api
            .patch_status(&name, &params, &Patch::Apply(body))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // Deleted by someone since: the next report creates it again.
                self.remember(team, None);
                return Err(request(kube::Error::Api(s)));
            }
            other => other.map_err(request)?,
        };
        let written = Known {
            generation: known_of(&written).generation,
            status: Some(status),
        };
        self.remember(team, Some(written));
        Ok(true)
    }

    /// Writes a suspension (or its end) that no sync reported, with the Unit's
    /// `generation` observed, on the status last written; nothing when that is as it
    /// would be, or when the unit has no status yet (its first report writes it).
    pub async fn suspension(
        &self,
        team: &TeamName,
        suspended: Option<&Suspension>,
        generation: i64,
    ) -> Result<bool, UnitError> {
        let Some(mut status) = self.status(team) else {
            return Ok(false);
        };
        status.suspended = suspended.cloned();
        status.observed_generation = generation;
        for c in &mut status.conditions {
            c.observed_generation = generation;
        }
        if self.status(team).as_ref() == Some(&status) {
            return Ok(false);
        }
        let name = super::unit_name(&self.owner, team);
        let _turn = self.write_turn().await;
        let body = json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "status": status,
        });
        let params = crate::desired::apply_params(&self.owner).force();
        let written = self
            .api
            .patch_status(&name, &params, &Patch::Apply(body))
            .await
            .map_err(|source| UnitError::Request {
                name: format!("{}/{name}", self.namespace),
                source,
            })?;
        let written = Known {
            generation: known_of(&written).generation,
            status: Some(status),
        };
        self.remember(team, Some(written));
        Ok(true)
    }

    /// Deletes `team`'s Unit (its team left the cluster); one already gone is fine.
    pub async fn remove(&self, team: &TeamName) -> Result<(), UnitError> {
        let name = super::unit_name(&self.owner, team);
        let _turn = self.write_turn().await;
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(UnitError::Request {
                    name: format!("{}/{name}", self.namespace),
                    source,
                });
            }
        }
        self.remember(team, None);
        Ok(())
    }
}

fn known_of(o: &DynamicObject) -> Known {
    Known {
        generation: o.metadata.generation.unwrap_or(0),
        status: o
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok()),
    }
}

/// What a person asks of a unit, as its Unit says it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub team: TeamName,
    /// The reconcile-requested-at annotation's value.
    pub reconcile: Option<String>,
    /// The request the status says was answered last.
    pub handled: Option<String>,
    /// The request asks for the platform repo to be polled first.
    pub with_source: bool,
    /// The Unit's `metadata.generation`.
    pub generation: i64,
    /// The suspension its spec asks for, with who set it.
    pub suspend: Option<Suspension>,
    /// Its status as the replica writing for its team left it (None before its first).
    pub status: Option<UnitStatus>,
    /// The Unit was deleted (its team left the cluster).
    pub gone: bool,
}

/// Every change of the owner's Units in `namespace`, as what they ask. The stream never
/// ends; watch errors are logged and retried with backoff.
pub fn watch_asked(
    cluster: &Cluster,
    namespace: &str,
    owner: &Owner,
) -> impl Stream<Item = Asked> + Send + use<> {
    let config = watcher::Config::default()
        .labels(&selector(owner))
        .timeout(cluster.watch_timeout());
    let owner = owner.clone();
    watcher(api(cluster.client().clone(), namespace), config)
        .default_backoff()
        .filter_map(move |event| {
            let asked = match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    asked_of(&owner, &o)
                }
                // A Unit deleted asks nothing any more: a suspension it held ends.
                Ok(watcher::Event::Delete(o)) => asked_of(&owner, &o).map(|a| Asked {
                    reconcile: None,
                    suspend: None,
                    gone: true,
                    ..a
                }),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %crate::describe(&e), "watching Units");
                    None
                }
            };
            std::future::ready(asked)
        })
}

/// What each of `owner`'s Units in `api` asks, read once (for a command: its suspension,
/// its reconcile request).
pub async fn list_asked(api: &Api<DynamicObject>, owner: &Owner) -> Result<Vec<Asked>, UnitError> {
    let list = api
        .list(&ListParams::default().labels(&selector(owner)))
        .await
        .map_err(|source| UnitError::Request {
            name: "*".to_owned(),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| asked_of(owner, o))
        .collect())
}

fn asked_of(owner: &Owner, o: &DynamicObject) -> Option<Asked> {
    let team = super::team_of(owner, o.metadata.name.as_deref()?)?;
    let empty = BTreeMap::new();
    let annotations = o.metadata.annotations.as_ref().unwrap_or(&empty);
    let reconcile = annotations.get(ANNOTATION_RECONCILE).cloned();
    let suspend = o.data.get("spec").and_then(|s| s.get("suspend")).and_then(|v| {
        if v.is_null() {
            return None;
        }
        match serde_json::from_value::<SuspendSpec>(v.clone()) {
            Ok(spec) => Some(suspension(
                &spec,
                o.metadata.managed_fields.as_deref().unwrap_or_default(),
            )),
            Err(e) => {
                tracing::warn!(unit = o.metadata.name.as_deref().unwrap_or(""), error = %e, "spec.suspend does not parse; not suspended");
                None
            }
        }
    });
    Some(Asked {
        generation: o.metadata.generation.unwrap_or(0),
        status: known_of(o).status,
        gone: false,
        suspend,
        team,
        with_source: reconcile.is_some()
            && annotations.get(ANNOTATION_RECONCILE_SOURCE) == reconcile.as_ref(),
        reconcile,
        handled: o
            .data
            .get("status")
            .and_then(|s| s.get("lastHandledReconcileAt"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    })
}
