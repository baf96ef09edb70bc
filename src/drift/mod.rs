//! Drift: one watch per managed kind per cluster (label-filtered, never per object), and
//! a decision per event that agrees with server-side apply: an object is drifted when a
//! field pontoon applied no longer has the applied value, or when it was deleted.
//! Fields pontoon never set — defaults, status, an HPA's replicas, other controllers'
//! annotations — are not drift. pontoon's own writes are not drift: an object whose
//! resourceVersion is the one pontoon's last apply produced is not even looked at.
//!
//! In `correct` mode a drifted object's unit is synced at once (the sync re-applies the
//! unit's last desired state and recreates deleted objects); in `report` mode it is only
//! recorded, and the sync leaves it alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::Resolved;
use crate::desired::{
    DriftMode, LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE, ObjectKey, TeamName, UnitId,
};
use crate::sync::{AppliedObject, Syncer};

/// Field managers that stand for people.
pub const HUMAN_MANAGERS: &[&str] = &[
    "kubectl-edit",
    "kubectl-patch",
    "kubectl-set",
    "kubectl-client-side-apply",
    "kubectl-label",
    "kubectl-annotate",
    "kubectl-scale",
    "kubectl",
];

/// One drift seen on a cluster.
#[derive(Debug, Clone)]
pub struct DriftEvent {
    pub unit: UnitId,
    pub key: ObjectKey,
    /// Paths of fields that no longer hold the applied value (or `(deleted)`).
    pub paths: Vec<String>,
    /// Who changed the object last (from managedFields), and when.
    pub manager: String,
    pub at: String,
    pub mode: DriftMode,
    /// The manager stands for a person (kubectl's managers, or one the config names).
    pub by_person: bool,
    pub detected: Instant,
    /// Set on the follow-up event once the object is back to what pontoon applied.
    pub corrected: bool,
}

/// Compares what pontoon applied with the live object: every leaf pontoon set must hold
/// the same value. Lists are compared element by element; a list that grew or shrank is
/// drift (a container added by hand). Returns the paths that differ.
pub fn differences(desired: &Value, live: &Value, ignore: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    walk(desired, live, String::new(), ignore, &mut out);
    out
}

fn walk(desired: &Value, live: &Value, path: String, ignore: &[String], out: &mut Vec<String>) {
    if ignore
        .iter()
        .any(|i| path == *i || path.starts_with(&format!("{i}/")))
    {
        return;
    }
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                match l.get(k) {
                    Some(lv) => walk(dv, lv, p, ignore, out),
                    None if dv.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(d), Value::Array(l)) => {
            if d.len() != l.len() {
                out.push(path);
                return;
            }
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                walk(dv, lv, format!("{path}/{i}"), ignore, out);
            }
        }
        // Numbers may come back as another JSON number type (8080 vs 8080.0).
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        // Kubernetes writes int-or-string ports and quantities back as given, but a
        // number may be read back as a string of it.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a))
            if a.to_string() == *b => {}
        (d, l) if d == l => {}
        _ => out.push(path),
    }
}

/// The manager and time of the newest change to an object's spec-like fields (status
/// updates excluded).
pub fn last_writer(live: &Value) -> (String, String) {
    let entries = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    let newest = entries.and_then(|e| {
        e.iter()
            .filter(|m| m.get("subresource").and_then(Value::as_str).unwrap_or("") != "status")
            .max_by_key(|m| {
                m.get("time")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
    });
    match newest {
        Some(m) => (
            m.get("manager")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            m.get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        None => ("unknown".to_owned(), String::new()),
    }
}

/// The drift watches of one cluster.
pub struct DriftWatch {
    syncer: Arc<Syncer>,
    human_managers: Vec<String>,
    events: mpsc::Sender<DriftEvent>,
    watches: Mutex<HashMap<(String, String), JoinHandle<()>>>,
    /// Objects reported drifted and not yet seen corrected.
    open: Arc<Mutex<BTreeMap<ObjectKey, DriftEvent>>>,
}

impl DriftWatch {
    /// `human_managers` adds to [`HUMAN_MANAGERS`] (the config's `drift.humanManagers`).
    pub fn new(
        syncer: Arc<Syncer>,
        events: mpsc::Sender<DriftEvent>,
        human_managers: &[String],
    ) -> Arc<DriftWatch> {
        Arc::new(DriftWatch {
            syncer,
            human_managers: HUMAN_MANAGERS
                .iter()
                .map(|m| (*m).to_owned())
                .chain(human_managers.iter().cloned())
                .collect(),
            events,
            watches: Mutex::new(HashMap::new()),
            open: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Starts a watch for each kind not watched yet and stops watches of kinds no unit
    /// manages any more. Kinds are (apiVersion, kind).
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
                Err(e) => tracing::debug!(error = %e, "not watching an unresolvable kind"),
            }
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|k, task| {
            let keep = kinds.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        for (k, resolved) in wanted {
            if watches.get(&k).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let me = self.clone();
            watches.insert(k, tokio::spawn(async move { me.watch(resolved).await }));
        }
    }

    pub fn stop(&self) {
        for (_, t) in self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            t.abort();
        }
    }

    async fn watch(self: Arc<Self>, resolved: Resolved) {
        let api: kube::Api<DynamicObject> =
            kube::Api::all_with(self.syncer.client().clone(), &resolved.resource);
        let config =
            watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"));
        // The watcher re-lists after an expired resourceVersion; objects whose version is
        // what pontoon applied are skipped, so a re-list causes no re-applies.
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    self.seen(&resolved, o, false)
                }
                Ok(watcher::Event::Delete(o)) => self.seen(&resolved, o, true),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, kind = %resolved.resource.kind, "watch error; retrying")
                }
            }
        }
    }

    fn seen(&self, resolved: &Resolved, o: DynamicObject, deleted: bool) {
        let Some(team) = o
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_TEAM))
            .cloned()
        else {
            return;
        };
        let team = TeamName(team);
        let key = ObjectKey {
            group: resolved.resource.group.clone(),
            kind: resolved.resource.kind.clone(),
            namespace: o.metadata.namespace.clone().unwrap_or_default(),
            name: o.metadata.name.clone().unwrap_or_default(),
        };
        let Some(applied) = self.syncer.applied(&team) else {
            return;
        };
        let Some(a) = applied.get(&key) else { return };
        let rv = o.metadata.resource_version.clone().unwrap_or_default();
        if !deleted && rv == a.resource_version {
            self.resolved_if_open(&key);
            return;
        }
        let live = serde_json::to_value(&o).unwrap_or(Value::Null);
        let paths = if deleted {
            vec!["(deleted)".to_owned()]
        } else {
            differences(&a.desired.object, &live, &a.desired.ignore_fields)
        };
        if paths.is_empty() {
            // Changed, but not in anything pontoon applied: a controller at work.
            self.resolved_if_open(&key);
            return;
        }
        let (manager, at) = if deleted {
            ("unknown".to_owned(), String::new())
        } else {
            last_writer(&live)
        };
        if manager == crate::desired::FIELD_MANAGER && !deleted {
            // Our own write in flight; the sync that made it records the new version.
            return;
        }
        self.report(team, key, a, paths, manager, at);
    }

    fn report(
        &self,
        team: TeamName,
        key: ObjectKey,
        a: &AppliedObject,
        paths: Vec<String>,
        manager: String,
        at: String,
    ) {
        let unit = UnitId {
            team,
            cluster: self.syncer.cluster().name.clone(),
        };
        let by_person = self.human_managers.contains(&manager);
        let event = DriftEvent {
            unit,
            key: key.clone(),
            paths,
            by_person,
            manager,
            at,
            mode: a.desired.drift,
            detected: Instant::now(),
            corrected: false,
        };
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains_key(&key) {
                return;
            }
            open.insert(key, event.clone());
        }
        if self.events.try_send(event).is_err() {
            tracing::warn!("drift queue full; the next resync will catch up");
        }
    }

    fn resolved_if_open(&self, key: &ObjectKey) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(mut e) = removed {
            e.corrected = true;
            let _ = self.events.try_send(e);
        }
    }
}

/// The kinds (apiVersion, kind) a state manages on one cluster.
pub fn kinds_of(
    state: &crate::desired::DesiredState,
    cluster: &crate::desired::ClusterName,
) -> BTreeSet<(String, String)> {
    state
        .units
        .values()
        .filter(|u| &u.unit.cluster == cluster)
        .flat_map(|u| u.objects.iter())
        .filter_map(|o| {
            Some((
                o.object.get("apiVersion")?.as_str()?.to_owned(),
                o.object.get("kind")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_controller_fields_are_not_drift() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "ports": [{"containerPort": 8080}]}]}}}});
        let live = json!({"spec": {"replicas": 7, "template": {"spec": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent",
                          "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}}, "status": {"replicas": 7}});
        assert!(differences(&desired, &live, &[]).is_empty());
    }

    #[test]
    fn changed_removed_and_added_entries_are_drift() {
        let desired = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a:1"}]}});
        let live = json!({"metadata": {"labels": {}}, "spec": {"containers": [{"name": "app", "image": "a:2"}, {"name": "debug", "image": "busybox"}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/metadata/labels/app", "/spec/containers"]
        );
        let live = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "a:2"}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/spec/containers/0/image"]
        );
        assert!(differences(&desired, &live, &["/spec/containers".to_owned()]).is_empty());
    }

    #[test]
    fn the_newest_non_status_writer_is_named() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "pontoon", "operation": "Apply", "time": "2026-11-24T10:00:00Z"},
            {"manager": "kubectl-set", "operation": "Update", "time": "2026-11-24T10:05:00Z"},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2026-11-24T10:06:00Z"}
        ]}});
        assert_eq!(
            last_writer(&live),
            ("kubectl-set".to_owned(), "2026-11-24T10:05:00Z".to_owned())
        );
    }
}
