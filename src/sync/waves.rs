//! Applying in waves (`dependsOn`): an object that depends on others is applied only once
//! every object it depends on is applied and healthy. The objects that depend on nothing
//! go first, in the order of [`super::order::Phase`]; then, wave after wave, those whose
//! dependencies this sync has seen healthy. The rest wait, and the unit is Progressing
//! (`waiting for Database/ledger …`) until a later sync of the unit applies them — the
//! daemon and `pontoon sync --once` sync it again as soon as what they wait for turns
//! healthy ([`Syncer::settle`]). An object whose dependency failed fails without being
//! applied.
//!
//! Waiting objects are desired: nothing prunes them, the mass-deletion hold never counts
//! them, and the inventory records one only once it may exist (each wave is recorded
//! before it is applied, as the first one is). One that exists already (a new revision
//! changes it) stays as last applied meanwhile, and drift goes on judging it by that. The prune itself waits until nothing
//! does, so what a new revision replaces is deleted after its replacement is applied.
//!
//! Which rule found an object healthy is the health module's business, not this one's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::health::Health;
use super::inventory::Inventory;
use super::live::LiveObjects;
use super::memory::Known;
use super::phases::ApplyPass;
use super::resolve::Planned;
use super::{Syncer, UnitResult, UnitState, Waiting};
use crate::desired::{Dependency, ObjectKey, TeamName, UnitDesired};

/// How an object's apply in this sync ended, as the objects that depend on it see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Healthy,
    NotYet,
    Failed(String),
}

impl Outcome {
    /// Whatever rule decided it: only rolling out and failed hold dependents back, and
    /// anything else the health rules say (a kind healthy once applied, too) lets them go.
    pub fn of(health: &Health) -> Outcome {
        match health {
            Health::Progressing(_) => Outcome::NotYet,
            Health::Failed(why) => Outcome::Failed(why.clone()),
            _ => Outcome::Healthy,
        }
    }
}

/// What an object that depends on others may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Apply,
    /// Not yet: the first dependency not healthy, with its objects that are not.
    Wait {
        on: String,
        until: Vec<ObjectKey>,
    },
    /// Never in this sync: a dependency failed (or was not applied at all).
    Fail(String),
}

/// Decides for an object that depends on `deps`, from what this sync did so far
/// (`outcomes`) and the objects still undecided (`pending`). A failure wins over a wait,
/// so an object fails as soon as anything it depends on has. A wait names the first
/// dependency that is rolling out (else the first that waits itself), and lists every
/// object not healthy yet.
fn judge(
    deps: &[Dependency],
    outcomes: &BTreeMap<ObjectKey, Outcome>,
    pending: &BTreeSet<ObjectKey>,
) -> Verdict {
    let (mut rolling, mut waits, mut until) = (None, None, Vec::new());
    for d in deps {
        for k in &d.objects {
            match outcomes.get(k) {
                Some(Outcome::Healthy) => continue,
                Some(Outcome::NotYet) => {
                    rolling.get_or_insert(&d.name);
                }
                Some(Outcome::Failed(why)) => {
                    return Verdict::Fail(format!("not applied: {} failed: {k}: {why}", d.name));
                }
                None if pending.contains(k) => {
                    waits.get_or_insert(&d.name);
                }
                None => {
                    return Verdict::Fail(format!("not applied: {} was not applied ({k})", d.name));
                }
            }
            until.push(k.clone());
        }
    }
    match rolling.or(waits) {
        Some(on) => Verdict::Wait {
            on: on.clone(),
            until,
        },
        None => Verdict::Apply,
    }
}

impl Syncer {
    /// Applies `planned` in waves (see the module documentation), recording each wave's
    /// new objects in the inventory before applying them. `stored` is the inventory as
    /// last written by this sync (`None`: as read); it is kept up to date.
    pub(super) async fn apply_in_waves(
        &self,
        planned: Vec<Planned<'_>>,
        stored: &mut Option<Inventory>,
        live: &LiveObjects,
        known: &Known<'_>,
        r: &mut UnitResult,
    ) -> Result<ApplyPass, kube::Error> {
        let (desired, previous) = (known.unit, known.inventory);
        let team = &desired.unit.team;
        let deps = &desired.dependencies;
        let mut pass = ApplyPass::new();
        let (planned, blocked) = self.wait_for_components(planned, desired, &mut pass, r);
        let (now, mut later): (Vec<_>, Vec<_>) = planned
            .into_iter()
            .partition(|p| !deps.contains_key(&p.key));
        self.record_wave(previous, stored, &now, team, r).await?;
        self.apply_in_order(now, team, live, known, &mut pass, r)
            .await;
        while !later.is_empty() {
            let pending: BTreeSet<ObjectKey> = later
                .iter()
                .map(|p| p.key.clone())
                .chain(blocked.iter().cloned())
                .collect();
            let (mut ready, mut still, mut failed) = (Vec::new(), Vec::new(), false);
            for p in later {
                let of = deps.get(&p.key).map(Vec::as_slice).unwrap_or_default();
                match judge(of, &pass.outcomes, &pending) {
                    Verdict::Apply => ready.push(p),
                    Verdict::Wait { on, until } => still.push((p, on, until)),
                    Verdict::Fail(why) => {
                        pass.outcomes
                            .insert(p.key.clone(), Outcome::Failed(why.clone()));
                        r.error(&p.key, why);
                        failed = true;
                    }
                }
            }
            if ready.is_empty() && !failed {
                // One that exists already stays as last applied, for drift to judge.
                let last = self.memory.applied(team);
                for (p, on, until) in still {
                    if let Some(a) = last.as_ref().and_then(|l| l.get(&p.key)) {
                        pass.objects.insert(p.key.clone(), a.clone());
                    }
                    pass.waiting.insert(p.key.clone());
                    r.waiting.push(Waiting {
                        object: p.key,
                        on,
                        until,
                        component: None,
                        reason: None,
                    });
                }
                pass.healthy = false;
                break;
            }
            self.record_wave(previous, stored, &ready, team, r).await?;
            self.apply_in_order(ready, team, live, known, &mut pass, r)
                .await;
            later = still.into_iter().map(|(p, _, _)| p).collect();
        }
        Ok(pass)
    }

    /// Leaves out of this sync the objects whose Kind requires a platform component that
    /// is not healthy on the cluster: they wait as objects whose dependencies are not
    /// healthy do (one that exists stays as last applied). Returns the rest, and the keys
    /// of what waits.
    fn wait_for_components<'p>(
        &self,
        planned: Vec<Planned<'p>>,
        desired: &UnitDesired,
        pass: &mut ApplyPass,
        r: &mut UnitResult,
    ) -> (Vec<Planned<'p>>, BTreeSet<ObjectKey>) {
        let requires = &desired.components.requires;
        if requires.is_empty() {
            return (planned, BTreeSet::new());
        }
        let last = self.memory.applied(&desired.unit.team);
        let mut blocked = BTreeSet::new();
        let mut go = Vec::with_capacity(planned.len());
        for p in planned {
            let Some((name, why)) = requires
                .get(&p.key)
                .and_then(|names| self.components.first_not_healthy(names))
            else {
                go.push(p);
                continue;
            };
            if let Some(a) = last.as_ref().and_then(|l| l.get(&p.key)) {
                pass.objects.insert(p.key.clone(), a.clone());
            }
            pass.waiting.insert(p.key.clone());
            pass.healthy = false;
            blocked.insert(p.key.clone());
            r.waiting.push(Waiting {
                object: p.key,
                on: format!("component {name}"),
                until: Vec::new(),
                component: Some(name.to_owned()),
                reason: Some(why),
            });
        }
        (go, blocked)
    }

    /// Records a wave's new objects in the inventory before any of them is created.
    async fn record_wave(
        &self,
        previous: &Inventory,
        stored: &mut Option<Inventory>,
        wave: &[Planned<'_>],
        team: &TeamName,
        r: &mut UnitResult,
    ) -> Result<(), kube::Error> {
        let base = stored.as_ref().unwrap_or(previous);
        if let Some(written) = self.record_union(base, wave, team, r).await? {
            *stored = Some(written);
        }
        Ok(())
    }

    /// Waits until a Progressing unit is healthy, as [`Syncer::wait_healthy`] does, and
    /// syncs `desired` at `revision` again each time what its waiting objects depend on
    /// has turned healthy, so the next wave is applied; fails it after `timeout` counted
    /// from `since`, as the wait does. The result counts what every pass did.
    pub async fn settle(
        &self,
        desired: &UnitDesired,
        revision: &str,
        mut result: UnitResult,
        since: Instant,
        timeout: Duration,
        every: Duration,
    ) -> UnitResult {
        loop {
            result = self.wait_healthy(result, since, timeout, every).await;
            self.components.record(desired, &result);
            if !result.dependencies_ready() {
                return result;
            }
            let mut next = self.sync(desired, revision).await;
            next.carry(&result);
            // A pass that applied no new wave (what it waits for turned unhealthy again)
            // waits a poll interval before the next look, never spins.
            let stuck =
                next.state == UnitState::Progressing && next.waiting.len() >= result.waiting.len();
            result = next;
            if result.state != UnitState::Progressing {
                return result;
            }
            if stuck {
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn dep(name: &str, objects: &[&str]) -> Dependency {
        Dependency {
            name: name.into(),
            objects: objects.iter().map(|o| key(o)).collect(),
        }
    }

    #[test]
    fn an_object_is_applied_after_its_dependencies_are_healthy_and_fails_with_them() {
        use Outcome::*;
        let outcomes: BTreeMap<ObjectKey, Outcome> = [
            (key("up"), Healthy),
            (key("rolling"), NotYet),
            (
                key("broken"),
                Failed("Job failed: BackoffLimitExceeded".into()),
            ),
        ]
        .into();
        let pending: BTreeSet<ObjectKey> = [key("waits-too")].into();
        let wait = |on: &str, until: &[&str]| Verdict::Wait {
            on: on.into(),
            until: until.iter().map(|u| key(u)).collect(),
        };
        let cases: Vec<(Vec<Dependency>, Verdict)> = vec![
            (vec![], Verdict::Apply),
            (vec![dep("Database/ledger", &["up"])], Verdict::Apply),
            (
                vec![dep("Database/ledger", &["up", "rolling"])],
                wait("Database/ledger", &["rolling"]),
            ),
            // One that waits itself is waited for.
            (
                vec![dep("Job/migrate", &["waits-too"])],
                wait("Job/migrate", &["waits-too"]),
            ),
            // The first dependency not healthy is named, one rolling out before one that
            // waits itself, and every object not healthy is waited for.
            (
                vec![dep("Job/migrate", &["up"]), dep("Database/ledger", &["rolling"])],
                wait("Database/ledger", &["rolling"]),
            ),
            (
                vec![dep("Job/migrate", &["waits-too"]), dep("Database/ledger", &["rolling"])],
                wait("Database/ledger", &["waits-too", "rolling"]),
            ),
            // A failure wins over a wait, wherever it is.
            (
                vec![dep("Database/ledger", &["rolling"]), dep("Job/migrate", &["broken"])],
                Verdict::Fail(
                    "not applied: Job/migrate failed: ConfigMap shop/broken: Job failed: BackoffLimitExceeded"
                        .into(),
                ),
            ),
            // A dependency the sync did not apply at all (refused, not served) fails it.
            (
                vec![dep("Database/ledger", &["refused"])],
                Verdict::Fail(
                    "not applied: Database/ledger was not applied (ConfigMap shop/refused)".into(),
                ),
            ),
        ];
        for (deps, want) in cases {
            assert_eq!(judge(&deps, &outcomes, &pending), want, "{deps:?}");
        }
    }

    #[test]
    fn health_maps_to_what_dependents_see() {
        assert_eq!(Outcome::of(&Health::Healthy), Outcome::Healthy);
        assert_eq!(
            Outcome::of(&Health::Progressing("1 of 2".into())),
            Outcome::NotYet
        );
        assert_eq!(
            Outcome::of(&Health::Failed("x".into())),
            Outcome::Failed("x".into())
        );
    }
}
