//! Applying a unit's objects phase by phase, in the order [`Phase`] gives: concurrently
//! within a phase (the cluster's request limit bounds how many run at once), each phase
//! after the one before it has been applied, and the CRDs established before anything
//! that may be of their kinds. What each apply did is recorded in the unit's result.

use std::collections::{BTreeMap, BTreeSet};

use super::apply::{Applied, ApplyError, Change, Rbac};
use super::health::Health;
use super::inventory::{Entry, Inventory};
use super::live::LiveObjects;
use super::memory::{AppliedObject, AppliedObjects, Known};
use super::order::Phase;
use super::resolve::Planned;
use super::waves::Outcome;
use super::{ObjectError, Syncer, UnitResult};
use crate::cluster::Resolved;
use crate::desired::{ObjectKey, TeamName};

/// What applying a unit's objects left behind.
pub(super) struct ApplyPass {
    /// Every object applied (or found unchanged), with the version it now has.
    pub objects: AppliedObjects,
    /// Every object was healthy right after its apply.
    pub healthy: bool,
    /// New objects whose apply got no answer: the server may have created them.
    pub may_exist: Vec<Entry>,
    /// Whether this pass changed RBAC (a Role or a binding).
    pub rbac: Rbac,
    /// Objects no request of this pass wrote (found holding pontoon's apply, or left
    /// drifted): a resourceVersion of theirs that moved is not worth an inventory write
    /// on its own.
    pub unwritten: BTreeSet<ObjectKey>,
    /// How each object this pass tried ended, for the objects that depend on it.
    pub outcomes: BTreeMap<ObjectKey, Outcome>,
    /// Objects not applied because what they depend on is not healthy yet.
    pub waiting: BTreeSet<ObjectKey>,
}

impl ApplyPass {
    pub fn new() -> Self {
        ApplyPass {
            objects: BTreeMap::new(),
            healthy: true,
            may_exist: Vec::new(),
            rbac: Rbac::Settled,
            unwritten: BTreeSet::new(),
            outcomes: BTreeMap::new(),
            waiting: BTreeSet::new(),
        }
    }
}

type Applies<'a> = (Planned<'a>, Result<Applied, ApplyError>);

impl Syncer {
    /// Applies `planned` phase by phase, into `pass`; every failure is an error in `r`.
    pub(super) async fn apply_in_order(
        &self,
        planned: Vec<Planned<'_>>,
        team: &TeamName,
        live: &LiveObjects,
        known: &Known<'_>,
        pass: &mut ApplyPass,
        r: &mut UnitResult,
    ) {
        let previous = known.inventory;
        let mut phases: BTreeMap<Phase, Vec<Planned>> = BTreeMap::new();
        let mut deferred = Vec::new();
        for p in planned {
            match p.phase() {
                Some(phase) => phases.entry(phase).or_default().push(p),
                None => deferred.push(p),
            }
        }
        for phase in Phase::APPLY_ORDER {
            if phase == Phase::ClusterScoped {
                // CRDs are established by now: resolve the custom resources that came with them.
                for p in std::mem::take(&mut deferred) {
                    if let Some(p) = self.resolve_deferred(p, r).await
                        && let Some(to) = p.phase()
                    {
                        phases.entry(to).or_default().push(p);
                    }
                }
            }
            let Some(batch) = phases.remove(&phase) else {
                continue;
            };
            let outcomes = self
                .apply_batch(batch, phase, team, live, known, pass.rbac)
                .await;
            let mut crds = Vec::new();
            for (p, out) in outcomes {
                crds.extend(pass.record(p, out, phase, previous, r));
            }
            for crd in crds {
                if let Err(e) = self.wait_established(&crd.name).await {
                    r.error(&crd, e.to_string());
                }
            }
        }
        r.created.sort();
        r.updated.sort();
        r.no_health_rule.sort();
    }

    /// Applies one phase's objects together.
    async fn apply_batch<'a>(
        &self,
        mut batch: Vec<Planned<'a>>,
        phase: Phase,
        team: &TeamName,
        live: &LiveObjects,
        known: &Known<'_>,
        rbac: Rbac,
    ) -> Vec<Applies<'a>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        // RBAC granted a moment ago reaches the authorizer a little later: the first
        // team object goes alone (retrying while it is refused), so the rest are not
        // all refused and retried together.
        if rbac == Rbac::JustChanged && phase == Phase::TeamNamespaced && batch.len() > 1 {
            let p = batch.remove(0);
            let out = self
                .apply_one(&p, team, live.get(&p.key), Some(known), rbac)
                .await;
            outcomes.push((p, out));
        }
        // Futures built in a loop rather than by a closure: the cluster's request
        // limit (a semaphore inside every call) bounds how many run at once.
        let mut pending = Vec::with_capacity(batch.len());
        for p in batch {
            let live = live.get(&p.key);
            pending.push(async move {
                let out = self.apply_one(&p, team, live, Some(known), rbac).await;
                (p, out)
            });
        }
        outcomes.extend(futures::future::join_all(pending).await);
        outcomes
    }
}

impl ApplyPass {
    /// Records what one apply did, in the pass and in `r`. Returns the CRD to wait for
    /// when it is not yet established.
    fn record(
        &mut self,
        p: Planned,
        out: Result<Applied, ApplyError>,
        phase: Phase,
        previous: &Inventory,
        r: &mut UnitResult,
    ) -> Option<ObjectKey> {
        let a = match out {
            Ok(a) => a,
            Err(e) => {
                if e.unanswered() && !previous.entries.contains_key(&p.key) {
                    self.may_exist.push(p.entry());
                }
                let message = format!("{e} (from {})", p.object.source);
                self.outcomes
                    .insert(p.key.clone(), Outcome::Failed(message.clone()));
                r.error(&p.key, message);
                return None;
            }
        };
        r.writes += a.writes;
        if a.writes == 0 {
            self.unwritten.insert(p.key.clone());
        }
        if let Some(c) = a.conflict {
            r.conflicts.push(ObjectError {
                object: p.key.to_string(),
                message: c,
            });
        }
        if p.key.group == "rbac.authorization.k8s.io" && !matches!(a.change, Change::Unchanged) {
            self.rbac = Rbac::JustChanged;
        }
        match a.change {
            Change::Created => r.created.push(p.key.clone()),
            Change::Updated => r.updated.push(p.key.clone()),
            Change::Unchanged => r.unchanged += 1,
            Change::LeftDrifted => {
                r.unchanged += 1;
                r.drifted.push(p.key.clone());
            }
        }
        let mut establishing = None;
        self.outcomes.insert(p.key.clone(), Outcome::of(&a.health));
        match a.health {
            Health::Healthy => {}
            Health::NoRule => r.no_health_rule.push(p.key.clone()),
            Health::Progressing(why) => {
                self.healthy = false;
                if phase == Phase::Crds {
                    establishing = Some(p.key.clone());
                } else {
                    r.not_ready.push((p.key.clone(), why));
                }
            }
            Health::Failed(why) => {
                self.healthy = false;
                r.error(&p.key, why);
            }
        }
        let resolved = p
            .resolved
            .clone()
            .unwrap_or_else(|| unreachable_resolved(&p.key));
        self.objects.insert(
            p.key.clone(),
            AppliedObject {
                desired: p.object.clone(),
                resolved,
                resource_version: a.resource_version,
                uid: a.uid,
            },
        );
        establishing
    }
}

fn unreachable_resolved(key: &ObjectKey) -> Resolved {
    // apply_one refuses unresolved objects, so an applied object always has one; this
    // keeps the type total without a panic.
    Resolved {
        resource: kube::api::ApiResource {
            group: key.group.clone(),
            version: String::new(),
            api_version: String::new(),
            kind: key.kind.clone(),
            plural: String::new(),
        },
        namespaced: !key.namespace.is_empty(),
    }
}
