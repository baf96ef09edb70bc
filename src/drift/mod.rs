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
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
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
    /// Fields people added that pontoon never set (removed in correct mode).
    pub added: Vec<String>,
    /// The object, for Kubernetes Events about it.
    pub reference: ObjectReference,
}

/// The reference Kubernetes Events use for an object.
fn reference(desired: &Value, o: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: desired
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        kind: desired
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_owned),
        name: o.metadata.name.clone(),
        namespace: o.metadata.namespace.clone(),
        uid: o.metadata.uid.clone(),
        ..ObjectReference::default()
    }
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
                    // The apiserver drops null, empty lists and empty maps it is given
                    // (`omitempty`): their absence is the applied value.
                    None if is_empty(dv) => {}
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

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
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

/// Who owns the drifted fields now: the newest of the field managers other than pontoon
/// whose `managedFields` cover one of `paths` (a changed value moves to whoever changed
/// it). `managedFields` times have whole seconds, so the newest entry alone cannot tell
/// a hand edit from pontoon's apply in the same second; ownership can.
pub fn changed_by(live: &Value, paths: &[String]) -> Option<(String, String)> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let covers = |owned: &str, path: &str| {
        owned == path
            || path.starts_with(&format!("{owned}/"))
            || owned.starts_with(&format!("{path}/"))
    };
    entries
        .iter()
        .filter(|m| m.get("manager").and_then(Value::as_str) != Some(crate::desired::FIELD_MANAGER))
        .filter(|m| {
            m.get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        })
        .filter(|m| {
            let mut leaves = Vec::new();
            if let Some(f) = m.get("fieldsV1") {
                owned_leaves(f, live, &mut Vec::new(), &mut leaves);
            }
            leaves
                .iter()
                .map(|l| pointer(l))
                .any(|owned| paths.iter().any(|p| covers(&owned, p)))
        })
        .max_by_key(|m| {
            m.get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .map(|m| {
            let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (get("manager"), get("time"))
        })
}

/// One step of a path into an object: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(usize),
}

fn pointer(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// A field a person added: where it is in the live object, and who added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addition {
    pub path: String,
    pub manager: String,
    steps_: Vec<Step>,
}

/// Fields that managers standing for people (`humans`) own in `live` and that pontoon's
/// desired object does not set: an env var or a container added by `kubectl edit`, a
/// label added by `kubectl label`. Only the topmost such field is named (a whole added
/// container, not each of its fields). Fields another controller also owns are left
/// (something relies on them), and so are `ignore` pointers and prefixes of them.
pub fn human_additions(
    desired: &Value,
    live: &Value,
    humans: &[String],
    ignore: &[String],
) -> Vec<Addition> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let manager = |m: &Value| {
        m.get("manager")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let is_main = |m: &Value| {
        m.get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    };
    // What controllers (not people, not pontoon) own, to leave it alone.
    let mut controllers: Vec<Vec<Step>> = Vec::new();
    for m in entries {
        let name = manager(m);
        if humans.contains(&name) || name == crate::desired::FIELD_MANAGER {
            continue;
        }
        if let Some(f) = m.get("fieldsV1") {
            owned_leaves(f, live, &mut Vec::new(), &mut controllers);
        }
    }
    let mut out: Vec<Addition> = Vec::new();
    for m in entries.iter().filter(|m| is_main(m)) {
        let name = manager(m);
        if !humans.contains(&name) {
            continue;
        }
        let Some(f) = m.get("fieldsV1") else { continue };
        let mut found = Vec::new();
        added(f, Some(desired), live, &mut Vec::new(), &mut found);
        for steps in found {
            let path = pointer(&steps);
            let ignored = ignore.iter().any(|i| {
                path == *i
                    || path.starts_with(&format!("{i}/"))
                    || i.starts_with(&format!("{path}/"))
            });
            let shared = controllers
                .iter()
                .any(|c| c.starts_with(&steps) || steps.starts_with(c));
            if ignored || shared || out.iter().any(|a| steps.starts_with(&a.steps_)) {
                continue;
            }
            out.retain(|a| !a.steps_.starts_with(&steps));
            out.push(Addition {
                path,
                manager: name.clone(),
                steps_: steps,
            });
        }
    }
    // Removing list entries from the highest index down keeps the other indexes valid.
    out.sort_by(|a, b| b.steps_.cmp(&a.steps_));
    out
}

/// The live element a managedFields key (`f:name`, `k:{"name":"x"}`, `v:"x"`, `i:3`)
/// stands for, with the step to it.
fn child<'a>(key: &str, value: &'a Value) -> Option<(Step, &'a Value)> {
    if let Some(name) = key.strip_prefix("f:") {
        return value.get(name).map(|v| (Step::Key(name.to_owned()), v));
    }
    let list = value.as_array()?;
    let index = if let Some(k) = key.strip_prefix("k:") {
        let wanted: serde_json::Map<String, Value> = serde_json::from_str(k).ok()?;
        list.iter().position(|e| {
            wanted.iter().all(|(f, v)| {
                e.get(f)
                    .is_some_and(|ev| differences(v, ev, &[]).is_empty())
            })
        })?
    } else if let Some(v) = key.strip_prefix("v:") {
        let wanted: Value = serde_json::from_str(v).ok()?;
        list.iter().position(|e| *e == wanted)?
    } else if let Some(i) = key.strip_prefix("i:") {
        i.parse().ok()?
    } else {
        return None;
    };
    list.get(index).map(|v| (Step::Index(index), v))
}

/// Walks a human's fieldsV1 over the live object and the desired one at once; a field
/// the desired object lacks is an addition (and is not descended into).
fn added(
    fields: &Value,
    desired: Option<&Value>,
    live: &Value,
    at: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, sub) in map {
        if key == "." {
            continue;
        }
        let Some((step, live_child)) = child(key, live) else {
            continue;
        };
        let desired_child = desired.and_then(|d| child(key, d)).map(|(_, v)| v);
        at.push(step);
        match desired_child {
            None => out.push(at.clone()),
            Some(d) => added(sub, Some(d), live_child, at, out),
        }
        at.pop();
    }
}

/// Every field a manager owns, as paths into the live object.
fn owned_leaves(fields: &Value, live: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, sub) in map {
        if key == "." {
            out.push(at.clone());
            continue;
        }
        let Some((step, live_child)) = child(key, live) else {
            continue;
        };
        at.push(step);
        if sub.as_object().is_some_and(|m| m.is_empty()) {
            out.push(at.clone());
        } else {
            owned_leaves(sub, live_child, at, out);
        }
        at.pop();
    }
}

/// The JSON patch that removes `additions` from the object at `resource_version`, and
/// fails (HTTP 422) if the object changed since it was read.
pub fn removal_patch(additions: &[Addition], resource_version: &str) -> Value {
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": resource_version
    })];
    ops.extend(
        additions
            .iter()
            .map(|a| serde_json::json!({"op": "remove", "path": a.path})),
    );
    Value::Array(ops)
}

/// How long a deferred object waits for its team's sync to end before it is judged.
const RECHECK_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// An object seen while its team's sync ran, to judge when the sync is over.
struct Deferred {
    resolved: Resolved,
    key: ObjectKey,
    /// The object as the watch last saw it, when what it saw was the deletion.
    deleted: Option<DynamicObject>,
}

/// The drift watches of one cluster.
pub struct DriftWatch {
    syncer: Arc<Syncer>,
    human_managers: Vec<String>,
    events: mpsc::Sender<DriftEvent>,
    watches: Mutex<HashMap<(String, String), JoinHandle<()>>>,
    /// Objects reported drifted and not yet seen corrected.
    open: Arc<Mutex<BTreeMap<ObjectKey, DriftEvent>>>,
    /// What to judge again when a team's sync ends, per team: one waiter per team, however
    /// many objects a sync prunes.
    deferred: Mutex<HashMap<TeamName, Vec<Deferred>>>,
    recorder: Recorder,
}

impl DriftWatch {
    /// `human_managers` adds to [`HUMAN_MANAGERS`] (the config's `drift.humanManagers`).
    pub fn new(
        syncer: Arc<Syncer>,
        events: mpsc::Sender<DriftEvent>,
        human_managers: &[String],
    ) -> Arc<DriftWatch> {
        Arc::new(DriftWatch {
            human_managers: HUMAN_MANAGERS
                .iter()
                .map(|m| (*m).to_owned())
                .chain(human_managers.iter().cloned())
                .collect(),
            recorder: Recorder::new(
                syncer.client().clone(),
                Reporter {
                    controller: crate::desired::FIELD_MANAGER.to_owned(),
                    instance: Some(crate::daemon::leader::default_identity()),
                },
            ),
            syncer,
            events,
            watches: Mutex::new(HashMap::new()),
            open: Arc::new(Mutex::new(BTreeMap::new())),
            deferred: Mutex::new(HashMap::new()),
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

    fn seen(self: &Arc<Self>, resolved: &Resolved, o: DynamicObject, deleted: bool) {
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
        let is_open = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key);
        // An open drift while the team's sync runs is judged once that sync is done,
        // against what it applied: this change may be the one that closes it (a
        // re-apply, or the repo adopting the edit).
        // So is a deletion: it may be the sync's own prune, which the record it leaves
        // will no longer hold.
        if (is_open || deleted) && self.syncer.is_syncing(&team) {
            self.recheck_after_sync(resolved, team, key, deleted.then_some(o));
            return;
        }
        // pontoon's own write. Cheap unless the object is open: a re-apply cannot take
        // back what a person added, so an open object is checked in full.
        if !deleted && rv == a.resource_version && !is_open {
            return;
        }
        let live = serde_json::to_value(&o).unwrap_or(Value::Null);
        let (paths, additions) = if deleted {
            (vec!["(deleted)".to_owned()], Vec::new())
        } else {
            (
                differences(&a.desired.object, &live, &a.desired.ignore_fields),
                human_additions(
                    &a.desired.object,
                    &live,
                    &self.human_managers,
                    &a.desired.ignore_fields,
                ),
            )
        };
        if paths.is_empty() && additions.is_empty() {
            // Back to what pontoon applied, or changed only where pontoon has no say (a
            // controller at work).
            self.resolved_if_open(&key, &live);
            return;
        }
        let (manager, at) = if deleted {
            ("unknown".to_owned(), String::new())
        } else {
            changed_by(&live, &paths).unwrap_or_else(|| last_writer(&live))
        };
        if manager == crate::desired::FIELD_MANAGER && !deleted && additions.is_empty() {
            if self.syncer.is_syncing(&team) {
                // Our own write in flight; the sync that made it records the new version.
                return;
            }
            // Nobody else owns what changed: a field removed by someone (a removal leaves
            // no owner behind), or an edit within the second of our last apply.
            return self.report_unowned(team, key, a, &o, paths);
        }
        // Who to name: the person who added a field, when that is all there is.
        let manager = match additions.first() {
            Some(add) if paths.is_empty() => add.manager.clone(),
            _ => manager,
        };
        if a.desired.drift == DriftMode::Correct && !additions.is_empty() {
            self.remove_additions(resolved, &team, a, &o, &additions, &rv);
        }
        let mut event = self.event(team, key, a, paths, manager, at);
        event.added = additions.into_iter().map(|a| a.path).collect();
        event.reference = reference(&a.desired.object, &o);
        self.report(event);
    }

    /// Judges the object again once the team's sync on this cluster is over, against what
    /// that sync applied: a deletion (`deleted`, the object as last seen) as it was, any
    /// other change by reading the object again.
    fn recheck_after_sync(
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
                    me.seen(&d.resolved, o, true);
                } else if read.insert(d.key.clone()) {
                    me.read_again(&d.resolved, &d.key).await;
                }
            }
        });
    }

    async fn read_again(self: &Arc<Self>, resolved: &Resolved, key: &ObjectKey) {
        let client = self.syncer.client().clone();
        let api: kube::Api<DynamicObject> = if key.namespace.is_empty() {
            kube::Api::all_with(client, &resolved.resource)
        } else {
            kube::Api::namespaced_with(client, &key.namespace, &resolved.resource)
        };
        match api.get_opt(&key.name).await {
            Ok(Some(o)) => self.seen(resolved, o, false),
            // Deleted meanwhile: the watch reports the deletion.
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(object = %key, error = %e, "cannot read a drifted object again; its next change decides")
            }
        }
    }

    fn report_unowned(
        &self,
        team: TeamName,
        key: ObjectKey,
        a: &AppliedObject,
        o: &DynamicObject,
        paths: Vec<String>,
    ) {
        let mut event = self.event(team, key, a, paths, "unknown".to_owned(), String::new());
        event.reference = reference(&a.desired.object, o);
        self.report(event);
    }

    /// Removes what people added, with a JSON patch that applies only to the version read
    /// (a conflict means someone changed it again: the next event decides afresh).
    fn remove_additions(
        &self,
        resolved: &Resolved,
        team: &TeamName,
        a: &AppliedObject,
        o: &DynamicObject,
        additions: &[Addition],
        rv: &str,
    ) {
        let client = match self.syncer.cluster().client_for(a.desired.applier, team) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove fields added by hand");
                return;
            }
        };
        let api: kube::Api<DynamicObject> = match &o.metadata.namespace {
            Some(ns) => kube::Api::namespaced_with(client, ns, &resolved.resource),
            None => kube::Api::all_with(client, &resolved.resource),
        };
        let name = o.metadata.name.clone().unwrap_or_default();
        let paths: Vec<String> = additions.iter().map(|a| a.path.clone()).collect();
        let patch = removal_patch(additions, rv);
        tokio::spawn(async move {
            let patch: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the patch removing fields added by hand");
                    return;
                }
            };
            let params = kube::api::PatchParams {
                field_manager: Some(crate::desired::FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            match api
                .patch(&name, &params, &kube::api::Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %name, fields = %paths.join(", "), "removed fields added by hand")
                }
                Err(e) => {
                    tracing::debug!(object = %name, error = %e, "removing fields added by hand failed; the next change decides again")
                }
            }
        });
    }

    fn event(
        &self,
        team: TeamName,
        key: ObjectKey,
        a: &AppliedObject,
        paths: Vec<String>,
        manager: String,
        at: String,
    ) -> DriftEvent {
        let unit = UnitId {
            team,
            cluster: self.syncer.cluster().name.clone(),
        };
        let by_person = self.human_managers.contains(&manager);
        DriftEvent {
            unit,
            key,
            paths,
            added: Vec::new(),
            by_person,
            manager,
            at,
            mode: a.desired.drift,
            detected: Instant::now(),
            corrected: false,
            reference: ObjectReference::default(),
        }
    }

    fn report(&self, event: DriftEvent) {
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains_key(&event.key) {
                return;
            }
            open.insert(event.key.clone(), event.clone());
        }
        if event.mode == DriftMode::Report {
            self.publish(&event, false);
        }
        if self.events.try_send(event).is_err() {
            tracing::warn!("drift queue full; the next resync will catch up");
        }
    }

    /// A Kubernetes Event on the object, naming who changed it: `DriftCorrected` once it
    /// is back, `DriftDetected` when it is left drifted (report mode).
    fn publish(&self, e: &DriftEvent, corrected: bool) {
        let recorder = self.recorder.clone();
        let mut fields: Vec<String> = e.paths.clone();
        fields.extend(e.added.iter().map(|p| format!("{p} (added)")));
        let by = if e.at.is_empty() {
            e.manager.clone()
        } else {
            format!("{} at {}", e.manager, e.at)
        };
        let (reason, type_, note) = if corrected {
            (
                "DriftCorrected",
                EventType::Normal,
                format!(
                    "changed by {by}: {}; restored to the platform repo's state",
                    fields.join(", ")
                ),
            )
        } else {
            (
                "DriftDetected",
                EventType::Warning,
                format!(
                    "changed by {by}: {}; left as it is (drift mode report)",
                    fields.join(", ")
                ),
            )
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(crate::status::truncate(&note, 1000)),
            action: if corrected { "Correct" } else { "Report" }.to_owned(),
            secondary: None,
        };
        let reference = e.reference.clone();
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %err, "cannot publish a drift event");
            }
        });
    }

    fn resolved_if_open(&self, key: &ObjectKey, live: &Value) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(mut e) = removed {
            e.corrected = true;
            // A recreated object has a new uid: the event goes to the object as it is now.
            if let Some(uid) = live.pointer("/metadata/uid").and_then(Value::as_str) {
                e.reference.uid = Some(uid.to_owned());
            }
            self.publish(&e, true);
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
    fn empty_lists_and_maps_the_apiserver_dropped_are_not_drift() {
        let desired = json!({"spec": {"containers": [{"name": "app", "args": [], "env": null, "resources": {}}]}});
        let live = json!({"spec": {"containers": [{"name": "app"}]}});
        assert!(differences(&desired, &live, &[]).is_empty());
        // A list pontoon gave entries to must still hold them.
        let desired = json!({"spec": {"containers": [{"name": "app", "args": ["--once"]}]}});
        assert_eq!(
            differences(&desired, &live, &[]),
            ["/spec/containers/0/args"]
        );
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

    fn managed(entries: Value, rest: Value) -> Value {
        let mut live = rest;
        live["metadata"]["managedFields"] = entries;
        live
    }

    fn humans() -> Vec<String> {
        HUMAN_MANAGERS.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn fields_people_add_are_found_topmost_and_highest_index_first() {
        let desired = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "MODE", "value": "prod"}]}]}}}});
        let live = managed(
            json!([
                {"manager": "pontoon", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}},
                {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"app\"}": {"f:env": {"k:{\"name\":\"DEBUG\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
                {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:owner": {}}}}},
                {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}}
            ]),
            json!({"metadata": {"labels": {"app": "web", "owner": "bob"}}, "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"}]}}}}),
        );
        let found: Vec<(String, String)> = human_additions(&desired, &live, &humans(), &[])
            .into_iter()
            .map(|a| (a.path, a.manager))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "/spec/template/spec/containers/1".to_owned(),
                    "kubectl-patch".to_owned()
                ),
                (
                    "/spec/template/spec/containers/0/env/1".to_owned(),
                    "kubectl-edit".to_owned()
                ),
                (
                    "/metadata/labels/owner".to_owned(),
                    "kubectl-label".to_owned()
                ),
            ]
        );
        let patch = removal_patch(&human_additions(&desired, &live, &humans(), &[]), "42");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"})
        );
        assert_eq!(
            patch[1],
            json!({"op": "remove", "path": "/spec/template/spec/containers/1"})
        );
    }

    #[test]
    fn changed_values_controllers_and_ignored_fields_are_not_additions() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let live = managed(
            json!([
                // A person changed a value pontoon sets: the re-apply puts it back.
                {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"app\"}": {"f:image": {}}}}}}}},
                // A person scaled, and the HPA owns replicas too: left to the HPA.
                {"manager": "kubectl-scale", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}}},
                // Not a person.
                {"manager": "some-operator", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}}}}}
            ]),
            json!({"metadata": {"annotations": {"note": "hi"}, "labels": {"x": "y"}}, "spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "app", "image": "b:2"}]}}}}),
        );
        assert!(
            human_additions(
                &desired,
                &live,
                &humans(),
                &["/metadata/annotations".to_owned()]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_owner_of_the_drifted_field_is_named_even_in_the_same_second_as_pontoon() {
        let live = json!({"data": {"colour": "red", "size": "m"}, "metadata": {"managedFields": [
            {"manager": "kubectl-edit", "operation": "Apply", "time": "2026-11-24T10:00:00Z",
             "fieldsV1": {"f:data": {"f:colour": {}}}},
            {"manager": "pontoon", "operation": "Apply", "time": "2026-11-24T10:00:00Z",
             "fieldsV1": {"f:data": {"f:size": {}}}}
        ]}});
        assert_eq!(
            changed_by(&live, &["/data/colour".to_owned()]),
            Some(("kubectl-edit".to_owned(), "2026-11-24T10:00:00Z".to_owned()))
        );
        assert_eq!(changed_by(&live, &["/data/size".to_owned()]), None);
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
