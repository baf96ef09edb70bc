//! Judging one change a watch delivered: is it drift, who made it, and what to do. An
//! object is drifted when a field pontoon applied no longer has the applied value, when a
//! person added a field pontoon never set, or when it was deleted. pontoon's own writes
//! are not drift: an object whose resourceVersion is the one pontoon's last apply produced
//! is not even looked at.
//!
//! The only write made here is the patch removing what a person added (mode `correct`);
//! everything else is reported: the unit's sync does the correcting.

use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DynamicObject, TypeMeta};
use serde_json::Value;
use tokio::sync::mpsc;

use super::DriftEvent;
use super::error::DriftError;
use super::events::{Outcome, reference};
use super::watch::DriftWatch;
use crate::cluster::Resolved;
use crate::desired::{DriftMode, LABEL_TEAM, ObjectKey, TeamName, UnitId};
use crate::ssa::compare::differences;
use crate::ssa::managed_fields::{
    Addition, changed_by, human_additions, last_writer, removal_patch, written_by_pontoon,
};
use crate::sync::AppliedObject;

/// What the watch saw happen to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Created or changed: the object as it is now.
    Written,
    /// Deleted: the object as it was last.
    Deleted,
}

impl DriftWatch {
    /// Decides whether `o`, as the watch delivered it, has drifted from what pontoon
    /// applied, and reports the drift (or its end).
    pub(super) fn judge_change(
        self: &Arc<Self>,
        resolved: &Resolved,
        o: DynamicObject,
        change: Change,
    ) {
        let deleted = change == Change::Deleted;
        // Another daemon instance's object is none of this one's business.
        if !self.syncer.owner().owns(o.metadata.labels.as_ref()) {
            return;
        }
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
        // The objects of a watch's first list come without apiVersion and kind (a list
        // names them once for all its items): without them every object a controller
        // wrote since pontoon's apply would differ there.
        let mut o = o;
        if o.types.is_none() {
            o.types = Some(TypeMeta {
                api_version: resolved.resource.api_version.clone(),
                kind: resolved.resource.kind.clone(),
            });
        }
        let live = serde_json::to_value(&o).unwrap_or(Value::Null);
        let ours = self.syncer.owner().field_manager();
        let (paths, additions) = if deleted {
            (vec!["(deleted)".to_owned()], Vec::new())
        } else {
            // A tree of the manifest for this comparison only: the desired state keeps text.
            let desired = a.desired.object.to_value();
            (
                differences(&desired, &live, &a.desired.ignore_fields),
                human_additions(
                    &desired,
                    &live,
                    &self.human_managers,
                    &a.desired.ignore_fields,
                    &ours,
                ),
            )
        };
        if paths.is_empty() && additions.is_empty() {
            // Back to what pontoon applied, or changed only where pontoon has no say (a
            // controller at work).
            self.close_if_open(&key, &live);
            return;
        }
        let (manager, at) = if deleted {
            ("unknown".to_owned(), String::new())
        } else {
            changed_by(&live, &paths, &ours).unwrap_or_else(|| last_writer(&live))
        };
        if manager == ours && !deleted && additions.is_empty() {
            if self.syncer.is_syncing(&team) {
                // Our own write in flight: the sync that made it records the new version.
                // A field someone removed while the sync ran is owned by nobody: judged
                // again once the sync is over, against what it applied, or it is lost
                // when the sync's apply came first.
                if !written_by_pontoon(&live, &paths, &ours) {
                    self.recheck_after_sync(resolved, team, key, None);
                }
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
        if a.desired.drift == DriftMode::Correct
            && !additions.is_empty()
            && !self.syncer.is_frozen(&team)
        {
            self.remove_additions(resolved, &team, &key, a, &o, &additions);
        }
        let mut event = self.new_event(team, key, a, paths, manager, at);
        event.added = additions.into_iter().map(|a| a.path).collect();
        event.reference = reference(&a.desired.object, &o);
        self.report(event);
    }

    fn report_unowned(
        &self,
        team: TeamName,
        key: ObjectKey,
        a: &AppliedObject,
        o: &DynamicObject,
        paths: Vec<String>,
    ) {
        let mut event = self.new_event(team, key, a, paths, "unknown".to_owned(), String::new());
        event.reference = reference(&a.desired.object, o);
        self.report(event);
    }

    /// Removes what people added, with a JSON patch that applies only to the version read
    /// (a conflict means someone changed it again: the next event decides afresh).
    fn remove_additions(
        &self,
        resolved: &Resolved,
        team: &TeamName,
        key: &ObjectKey,
        a: &AppliedObject,
        o: &DynamicObject,
        additions: &[Addition],
    ) {
        let rv = o.metadata.resource_version.as_deref().unwrap_or_default();
        let failed = |error| self.failures.object(team, error);
        let client = match self.syncer.cluster().client_for(a.desired.applier, team) {
            Ok(c) => c,
            Err(source) => {
                return failed(DriftError::Client {
                    object: key.clone(),
                    source,
                });
            }
        };
        let patch: json_patch::Patch = match serde_json::from_value(removal_patch(additions, rv)) {
            Ok(p) => p,
            Err(source) => {
                return failed(DriftError::BuildPatch {
                    object: key.clone(),
                    source,
                });
            }
        };
        let api: kube::Api<DynamicObject> = match &o.metadata.namespace {
            Some(ns) => kube::Api::namespaced_with(client, ns, &resolved.resource),
            None => kube::Api::all_with(client, &resolved.resource),
        };
        let name = o.metadata.name.clone().unwrap_or_default();
        let paths: Vec<String> = additions.iter().map(|a| a.path.clone()).collect();
        let object = key.clone();
        let manager = self.syncer.owner().field_manager();
        self.side_writes
            .submit(team, "removing fields added by hand", async move {
                let params = kube::api::PatchParams {
                    field_manager: Some(manager),
                    ..Default::default()
                };
                api.patch(&name, &params, &kube::api::Patch::<()>::Json(patch))
                    .await
                    .map_err(|source| DriftError::RemoveAdditions { object, source })?;
                tracing::info!(object = %name, fields = %paths.join(", "), "removed fields added by hand");
                Ok(())
            });
    }

    fn new_event(
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
            again: false,
            reference: ObjectReference::default(),
        }
    }

    /// Opens the drift (once per object until it closes) and sends it on.
    ///
    /// A drift already open is sent on again, marked `again`, in `correct` mode: the sync
    /// its opening asked for may have run before this change (an edit landing just after
    /// that sync's apply), and nothing else would correct it. Dropping it left the object
    /// drifted, and every later edit ignored, until the periodic resync. The scheduler
    /// coalesces these into at most one sync waiting behind the running one.
    fn report(&self, mut event: DriftEvent) {
        let again = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.entry(event.key.clone()) {
                Entry::Occupied(_) => true,
                Entry::Vacant(v) => {
                    v.insert(event.clone());
                    false
                }
            }
        };
        if again {
            if event.mode == DriftMode::Correct {
                event.again = true;
                self.send(event);
            }
            return;
        }
        if event.mode == DriftMode::Report {
            self.publish(&event, Outcome::LeftDrifted);
        }
        self.send(event);
    }

    /// Hands a drift report to the daemon; a full queue drops it and counts it as a drift
    /// failure of its team (the next change, or the resync, catches up).
    fn send(&self, event: DriftEvent) {
        if let Err(
            mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
        ) = self.events.try_send(event)
        {
            self.failures.object(
                &event.unit.team,
                DriftError::QueueFull {
                    what: "a drift report",
                },
            );
        }
    }

    fn publish(&self, e: &DriftEvent, outcome: Outcome) {
        let publishing = self.publisher.publish(e, outcome);
        self.side_writes
            .submit(&e.unit.team, "a Kubernetes Event", publishing);
    }

    /// The object is back to what pontoon applied: an open drift closes as corrected.
    fn close_if_open(&self, key: &ObjectKey, live: &Value) {
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
            self.publish(&e, Outcome::Corrected);
            self.send(e);
        }
    }
}
