//! Pruning: deleting what the unit's previous inventory holds and its desired state does
//! not, in reverse apply order, after a clean apply only. Also the mass-deletion hold (over
//! the team's own objects) and its release for one revision, and the widen-then-narrow of
//! the team's Role: the team's objects are deleted as the team, so its Role keeps `delete`
//! on their kinds until they are gone.
//!
//! A prune never deletes an object marked `pontoon.dev/prune: disabled`, nor a Namespace
//! or CRD the platform does not let pontoon delete; those are kept and reported.
//!
//! A prune deletes only what pontoon created (the guard is in `delete`): an entry whose
//! object is someone else's is dropped from the inventory with a warning and reported as
//! left, never deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::delete::Outcome;
use super::inventory::{ANNOTATION_RELEASE, Entry, Inventory, Release, name_for};
use super::live::{Live, LiveObjects};
use super::order::Phase;
use super::phases::ApplyPass;
use super::resolve::Planned;
use super::{Syncer, UnitResult};
use crate::cluster::gvk_of;
use crate::desired::{
    Applier, DesiredObject, ObjectKey, Owner, PrunePolicy, TEAM_ROLE, TeamName, UnitDesired,
};

/// What the previous inventory holds and the desired state does not.
pub(super) fn candidates(previous: &Inventory, desired_keys: &BTreeSet<ObjectKey>) -> Vec<Entry> {
    previous
        .entries
        .iter()
        .filter(|(k, _)| !desired_keys.contains(*k))
        .map(|(_, e)| e.clone())
        .collect()
}

/// What the mass-deletion rule says of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hold {
    /// Within the platform's share (or nothing of the team's to delete): go ahead.
    Clear,
    /// Over the share: held, recorded in the result; nothing is to be written.
    Held,
    /// Over the share, but a platform owner released the unit for this very revision:
    /// go ahead, and remove the release once the prune is done.
    Released(Release),
}

/// The mass-deletion rule: a sync that would delete more than the platform's share of the
/// team's own objects (those applied as the team; the base pontoon renders for it, its
/// Namespaces, quota, RBAC and NetworkPolicy, counts neither way) is held before anything
/// is written, unless the inventory carries a release for this revision. `namespace` is
/// where inventories live, for the release command the message gives.
pub(super) fn hold_mass_deletion(
    to_prune: &[Entry],
    previous: &Inventory,
    policy: &PrunePolicy,
    namespace: &str,
    owner: &Owner,
    r: &mut UnitResult,
) -> Hold {
    let own = |e: &&Entry| e.applier == Applier::Team;
    let deleting = to_prune.iter().filter(own).count();
    let holds = previous.entries.values().filter(own).count();
    let share = deleting as f64 / holds.max(1) as f64;
    if deleting == 0 || policy.max_share >= 1.0 || share <= policy.max_share {
        return Hold::Clear;
    }
    if let Some(release) = previous
        .release
        .as_ref()
        .filter(|x| x.revision == r.revision)
    {
        tracing::info!(unit = %r.unit, revision = %r.revision, by = %release.by,
            deleting, holds, "the mass-deletion hold is released for this revision");
        r.released = Some(release.by.clone());
        return Hold::Released(release.clone());
    }
    let (team, cluster, revision) = (&r.unit.team, &r.unit.cluster, &r.revision);
    let ns_flag = if namespace == crate::desired::DEFAULT_NAMESPACE {
        String::new()
    } else {
        format!(" --namespace {namespace}")
    };
    let owner_flag = if owner.is_default() {
        String::new()
    } else {
        format!(" --owner {owner}")
    };
    r.held = to_prune.iter().map(Entry::key).collect();
    r.message = Some(format!(
        "held: this revision would delete {deleting} of the team's {holds} objects ({:.0}% > the platform's limit of {:.0}%); nothing was applied. To release it for this revision only: pontoon release --team {team} --cluster {cluster} --revision {revision}{ns_flag}{owner_flag} (or kubectl -n {namespace} annotate configmap {} {ANNOTATION_RELEASE}={revision} --overwrite)",
        share * 100.0,
        policy.max_share * 100.0,
        name_for(owner, team),
    ));
    Hold::Held
}

/// Why a prune keeps `e` instead of deleting it, when a rule says so: the object is marked
/// `pontoon.dev/prune: disabled` (`live`: as listed), or it is a Namespace or a CRD the
/// platform does not let pontoon delete.
pub(super) fn kept_by_rule(
    e: &Entry,
    live: Option<&Live>,
    policy: &PrunePolicy,
) -> Option<&'static str> {
    let phase = Phase::of_entry(e);
    if live.is_some_and(|l| l.prune_disabled) {
        Some("marked pontoon.dev/prune: disabled")
    } else if phase.is_namespace() && !policy.namespaces {
        Some("the platform does not let pontoon delete Namespaces (spec.policy.prune.namespaces)")
    } else if phase.is_crd() && !policy.crds {
        Some("the platform does not let pontoon delete CRDs (spec.policy.prune.crds)")
    } else {
        None
    }
}

/// Puts the widened Roles in place of the rendered ones in `planned`; returns the Roles
/// as rendered, to apply again once the prune is done.
pub(super) fn put_widened_roles<'a>(
    planned: &mut [Planned<'a>],
    widened: &'a [DesiredObject],
) -> Vec<Planned<'a>> {
    let mut narrow_after = Vec::new();
    for p in planned.iter_mut() {
        if let Some(w) = widened.iter().find(|w| w.key().as_ref() == Some(&p.key)) {
            narrow_after.push(Planned::new(p.key.clone(), p.object, p.resolved.clone()));
            *p = Planned::new(p.key.clone(), w, p.resolved.clone());
        }
    }
    narrow_after
}

/// Rules granting `delete` on the `needed` resources (plurals by API group) that `rules`
/// do not already grant.
fn missing_delete_rules(
    rules: Option<&Vec<Value>>,
    needed: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Value> {
    let covers = |group: &str, plural: &str| {
        rules.into_iter().flatten().any(|rule| {
            let has = |field: &str, want: &str| {
                rule.get(field)
                    .and_then(Value::as_array)
                    .is_some_and(|v| v.iter().any(|x| x == want || x == "*"))
            };
            has("apiGroups", group) && has("resources", plural) && has("verbs", "delete")
        })
    };
    needed
        .iter()
        .filter_map(|(group, plurals)| {
            let lacking: Vec<&String> = plurals.iter().filter(|pl| !covers(group, pl)).collect();
            (!lacking.is_empty()).then(|| {
                serde_json::json!({"apiGroups": [group], "resources": lacking, "verbs": ["delete"]})
            })
        })
        .collect()
}

impl Syncer {
    /// The unit's team-identity Roles with `delete` added for the kinds of the team's
    /// objects about to be pruned that they do not already cover; empty when none need it.
    ///
    /// The team's identity prunes what the team no longer has; its Role, rendered from the
    /// kinds the team uses now, may no longer allow that.
    pub(super) async fn widen_team_roles(
        &self,
        planned: &[Planned<'_>],
        to_prune: &[Entry],
    ) -> Vec<DesiredObject> {
        let mut needed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in to_prune.iter().filter(|e| e.applier == Applier::Team) {
            if let Ok(res) = self.cluster.resolve(&gvk_of(&e.api_version, &e.kind)).await {
                needed
                    .entry(res.resource.group.clone())
                    .or_default()
                    .insert(res.resource.plural.clone());
            }
        }
        if needed.is_empty() {
            return Vec::new();
        }
        planned
            .iter()
            .filter(|p| {
                p.object.applier == Applier::Platform
                    && p.key.group == "rbac.authorization.k8s.io"
                    && p.key.kind == "Role"
                    && p.key.name == TEAM_ROLE
            })
            .filter_map(|p| {
                let rules = p.object.object.get("rules").and_then(Value::as_array);
                let missing = missing_delete_rules(rules, &needed);
                if missing.is_empty() {
                    return None;
                }
                let mut object = (*p.object.object).clone();
                match object.get_mut("rules").and_then(Value::as_array_mut) {
                    Some(rules) => rules.extend(missing),
                    None => object["rules"] = Value::Array(missing),
                }
                Some(DesiredObject {
                    object: Arc::new(object),
                    ..p.object.clone()
                })
            })
            .collect()
    }

    /// The inventory the unit holds after this sync. After a clean apply: what was
    /// applied, and every candidate whose delete failed, once the rest is pruned. After a
    /// failed one, or one with objects still waiting for their dependencies, nothing is
    /// pruned: every previous entry is kept, and every new object an unanswered apply may
    /// have created, so a later clean sync prunes what is no longer desired.
    pub(super) async fn prune_or_keep(
        &self,
        to_prune: Vec<Entry>,
        pass: &ApplyPass,
        previous: &Inventory,
        live: &LiveObjects,
        desired: &UnitDesired,
        r: &mut UnitResult,
    ) -> Inventory {
        let mut holds = Inventory {
            entries: BTreeMap::new(),
            revision: r.revision.clone(),
            exists: true,
            resource_version: None,
            release: None,
            paged: false,
        };
        for (k, a) in &pass.objects {
            holds.entries.insert(k.clone(), a.entry(k));
        }
        if r.errors.is_empty() && pass.waiting.is_empty() {
            for e in self.prune(to_prune, live, desired, r).await {
                holds.entries.insert(e.key(), e);
            }
        } else {
            for e in &pass.may_exist {
                holds.entries.insert(e.key(), e.clone());
            }
            for (k, e) in &previous.entries {
                holds.entries.entry(k.clone()).or_insert_with(|| e.clone());
            }
        }
        holds
    }

    /// Deletes `to_prune` in reverse apply order under the prune rules; returns what it
    /// could not delete. What is not pontoon's is left and dropped.
    async fn prune(
        &self,
        mut to_prune: Vec<Entry>,
        live: &LiveObjects,
        desired: &UnitDesired,
        r: &mut UnitResult,
    ) -> Vec<Entry> {
        let policy = &desired.prune;
        let mut failed = Vec::new();
        to_prune.sort_by_key(|e| Phase::of_entry(e).prune_rank());
        for e in to_prune {
            let key = e.key();
            if kept_by_rule(&e, live.get(&key), policy).is_some() {
                r.kept.push(key);
                continue;
            }
            match self.delete(&e, live.get(&key), &desired.unit.team).await {
                Ok(Outcome::Deleted) => {
                    r.writes += 1;
                    r.pruned.push(key);
                }
                Ok(Outcome::Gone) => r.pruned.push(key),
                Ok(Outcome::NotOurs(why)) => {
                    tracing::warn!(unit = %desired.unit, object = %key, why = %why,
                        "not deleting an object pontoon did not create; it is dropped from the inventory");
                    r.left.push(key);
                }
                Err(err) => {
                    r.error(&key, format!("prune failed: {err}"));
                    failed.push(e);
                }
            }
        }
        failed
    }

    /// Removes the release a sync went ahead on, once its prune is done without errors; a
    /// sync with errors leaves it, so a retry of the same revision is still released.
    pub(super) async fn spend_release(
        &self,
        team: &TeamName,
        release: &Release,
        r: &mut UnitResult,
    ) {
        if !r.errors.is_empty() {
            return;
        }
        let (api, owner) = (self.inventory_api(), &self.options.owner);
        match Inventory::clear_release(&api, owner, team, &release.revision).await {
            Ok(true) => r.writes += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(unit = %r.unit, error = %crate::describe(&e),
                "cannot remove the release the sync used; it releases this revision only"),
        }
    }

    /// Applies the team's Roles as rendered again, now that the prune they were widened
    /// for is done.
    pub(super) async fn narrow_team_roles(
        &self,
        narrow_after: Vec<Planned<'_>>,
        pass: &mut ApplyPass,
        team: &TeamName,
        r: &mut UnitResult,
    ) {
        for p in narrow_after {
            if !pass.objects.contains_key(&p.key) {
                continue;
            }
            match self.apply_one(&p, team, None, None, pass.rbac).await {
                Ok(a) => {
                    r.writes += a.writes;
                    if let Some(o) = pass.objects.get_mut(&p.key) {
                        o.desired = p.object.clone();
                        o.resource_version = a.resource_version;
                    }
                }
                Err(e) => r.error(&p.key, format!("{e} (from {})", p.object.source)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ClusterName, UnitId};
    use serde_json::json;

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "shop".into(),
                name: format!("c{i}"),
                applier: Applier::Team,
                uid: Some(format!("u{i}")),
                resource_version: None,
                digest: None,
            })
            .collect()
    }

    fn inventory(entries: &[Entry]) -> Inventory {
        Inventory {
            entries: entries.iter().map(|e| (e.key(), e.clone())).collect(),
            revision: "a".into(),
            exists: true,
            resource_version: None,
            release: None,
            paged: false,
        }
    }

    fn result() -> UnitResult {
        let unit = UnitId {
            team: TeamName("shop".into()),
            cluster: ClusterName("c".into()),
        };
        UnitResult::new(unit, "b")
    }

    fn policy(max_share: f64) -> PrunePolicy {
        PrunePolicy {
            max_share,
            ..PrunePolicy::default()
        }
    }

    /// `n` entries of the base pontoon renders for the team (applied as the platform).
    fn base(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: "RoleBinding".into(),
                namespace: "shop".into(),
                name: format!("b{i}"),
                applier: Applier::Platform,
                uid: None,
                resource_version: None,
                digest: None,
            })
            .collect()
    }

    fn release(revision: &str) -> Option<Release> {
        Some(Release {
            revision: revision.into(),
            by: "kubectl-annotate at 2026-01-02T03:04:05Z".into(),
        })
    }

    const NS: &str = "pontoon-system";

    #[test]
    fn deleting_more_than_the_share_is_held_and_says_how_to_release_it() {
        let all = entries(4);
        let previous = inventory(&all);
        let mut r = result();
        let hold = hold_mass_deletion(
            &all[..3],
            &previous,
            &policy(0.5),
            NS,
            &Owner::default(),
            &mut r,
        );
        assert_eq!(hold, Hold::Held);
        assert_eq!(r.held.len(), 3);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "held: this revision would delete 3 of the team's 4 objects (75% > the platform's limit of 50%); nothing was applied. To release it for this revision only: pontoon release --team shop --cluster c --revision b (or kubectl -n pontoon-system annotate configmap pontoon-inventory-shop pontoon.dev/release=b --overwrite)"
            )
        );
        let mut r = result();
        hold_mass_deletion(
            &all[..3],
            &previous,
            &policy(0.5),
            "ops",
            &Owner::default(),
            &mut r,
        );
        let message = r.message.unwrap_or_default();
        assert!(
            message.contains("--revision b --namespace ops (or kubectl -n ops annotate"),
            "{message}"
        );
        let mut r = result();
        let blue = Owner::new("blue").expect("owner");
        hold_mass_deletion(&all[..3], &previous, &policy(0.5), NS, &blue, &mut r);
        let message = r.message.unwrap_or_default();
        assert!(
            message.contains(
                "--revision b --owner blue (or kubectl -n pontoon-system annotate configmap pontoon-inventory-shop.blue "
            ),
            "{message}"
        );
    }

    #[test]
    fn deleting_up_to_the_share_or_with_the_hold_off_goes_ahead() {
        let all = entries(4);
        let previous = inventory(&all);
        let mut r = result();
        let mut hold = |to_prune: &[Entry], share| {
            hold_mass_deletion(
                to_prune,
                &previous,
                &policy(share),
                NS,
                &Owner::default(),
                &mut r,
            )
        };
        assert_eq!(hold(&all[..2], 0.5), Hold::Clear);
        assert_eq!(hold(&all, 1.0), Hold::Clear);
        assert_eq!(hold(&[], 0.0), Hold::Clear);
        assert!(r.held.is_empty() && r.message.is_none());
    }

    #[test]
    fn the_base_pontoon_renders_counts_neither_way() {
        // Two workloads beside six objects of base: deleting both is all of the team's
        // own objects, held whatever the base adds to the inventory.
        let (workloads, base) = (entries(2), base(6));
        let previous = inventory(&[workloads.clone(), base.clone()].concat());
        let mut r = result();
        let hold = hold_mass_deletion(
            &workloads,
            &previous,
            &policy(0.5),
            NS,
            &Owner::default(),
            &mut r,
        );
        assert_eq!(hold, Hold::Held);
        assert!(
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("would delete 2 of the team's 2 objects (100% ")),
            "{r:?}"
        );
        // Dropping a namespace's base alone deletes none of the team's objects.
        let mut r = result();
        let hold = hold_mass_deletion(
            &base,
            &previous,
            &policy(0.0),
            NS,
            &Owner::default(),
            &mut r,
        );
        assert_eq!(hold, Hold::Clear);
        // A removed team: everything goes, the base too; the team's objects decide.
        let mut r = result();
        let everything: Vec<Entry> = previous.entries.values().cloned().collect();
        let hold = hold_mass_deletion(
            &everything,
            &previous,
            &policy(0.5),
            NS,
            &Owner::default(),
            &mut r,
        );
        assert_eq!(hold, Hold::Held);
        assert_eq!(
            r.held.len(),
            8,
            "every object the sync would delete is named"
        );
        // One workload of two is exactly the share: not over it.
        let mut r = result();
        let hold = hold_mass_deletion(
            &workloads[..1],
            &previous,
            &policy(0.5),
            NS,
            &Owner::default(),
            &mut r,
        );
        assert_eq!(hold, Hold::Clear);
    }

    #[test]
    fn a_release_lets_its_own_revision_through_and_no_other() {
        let all = entries(4);
        let mut previous = inventory(&all);
        previous.release = release("b");
        let mut r = result();
        let hold = hold_mass_deletion(&all, &previous, &policy(0.5), NS, &Owner::default(), &mut r);
        assert_eq!(hold, Hold::Released(release("b").expect("release")));
        assert!(r.held.is_empty() && r.message.is_none(), "{r:?}");
        assert_eq!(
            r.released.as_deref(),
            Some("kubectl-annotate at 2026-01-02T03:04:05Z")
        );
        // The result of revision b, released, says who released it.
        assert!(
            r.summary()
                .ends_with(", hold released by kubectl-annotate at 2026-01-02T03:04:05Z"),
            "{}",
            r.summary()
        );

        previous.release = release("a");
        let mut r = result();
        let hold = hold_mass_deletion(&all, &previous, &policy(0.5), NS, &Owner::default(), &mut r);
        assert_eq!(hold, Hold::Held);
        assert_eq!(r.released, None);
        // A prefix of the revision is not the revision.
        previous.release = Some(Release {
            revision: "b".into(),
            by: String::new(),
        });
        let mut r = UnitResult::new(result().unit, "bb");
        let hold = hold_mass_deletion(&all, &previous, &policy(0.5), NS, &Owner::default(), &mut r);
        assert_eq!(hold, Hold::Held);
    }

    #[test]
    fn candidates_are_what_is_no_longer_desired() {
        let all = entries(3);
        let desired: BTreeSet<ObjectKey> = [all[1].key()].into();
        let names: Vec<String> = candidates(&inventory(&all), &desired)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["c0", "c2"]);
    }

    #[test]
    fn a_role_gets_delete_only_where_it_lacks_it() {
        let needed: BTreeMap<String, BTreeSet<String>> = [
            ("".to_owned(), ["configmaps".to_owned()].into()),
            ("apps".to_owned(), ["deployments".to_owned()].into()),
        ]
        .into();
        let rules = vec![json!({"apiGroups": [""], "resources": ["*"], "verbs": ["delete"]})];
        assert_eq!(
            missing_delete_rules(Some(&rules), &needed),
            [json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]})]
        );
        let read_only = vec![json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]})];
        assert_eq!(missing_delete_rules(Some(&read_only), &needed).len(), 2);
        assert_eq!(missing_delete_rules(None, &needed).len(), 2);
    }
}
