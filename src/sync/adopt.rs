//! A team takes only what is free. An object that exists on the cluster without pontoon's
//! labels for the team (made by hand, by another tool, by a controller) is never applied
//! over, and nothing at all is applied into a Namespace that exists so: the Namespace, the
//! team's base (quota, owners' RoleBinding, NetworkPolicy, Role) and the team's objects
//! there are all left out. Only `platform.yaml` can hand such an object to a team
//! (`spec.adopt`); a team's own files cannot.
//!
//! What is refused is never applied, so it never carries pontoon's labels, never enters
//! the inventory, and is never pruned. The sync and `plan` give the same refusals, with
//! the rule ids [`RULE_NAMESPACE_EXISTS`] and [`RULE_OBJECT_EXISTS`]. Everything here only
//! decides; it never writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::UnitResult;
use super::inventory::Inventory;
use super::resolve::Planned;
use crate::desired::{ObjectKey, SourceRef, UnitDesired};

/// A Namespace the team claims exists without pontoon's labels for the team.
pub const RULE_NAMESPACE_EXISTS: &str = "namespace-exists";
/// An object the team's files define exists without pontoon's labels for the team.
pub const RULE_OBJECT_EXISTS: &str = "object-exists";

/// Live objects without pontoon's labels, by key, with their uid.
pub(super) type Unmanaged = HashMap<ObjectKey, String>;

/// Whether the unit may apply over `key`, which exists without pontoon's labels for the
/// team and has `uid`: the platform adopts it, or it is the very object pontoon created
/// for the unit (the uid its inventory recorded) with its labels taken off since.
pub(super) fn may_take(
    key: &ObjectKey,
    uid: &str,
    desired: &UnitDesired,
    previous: &Inventory,
) -> bool {
    desired.adopts(key)
        || previous
            .entries
            .get(key)
            .and_then(|e| e.uid.as_deref())
            .is_some_and(|recorded| !uid.is_empty() && recorded == uid)
}

fn is_namespace(key: &ObjectKey) -> bool {
    key.group.is_empty() && key.kind == "Namespace"
}

/// Why a unit may not apply `key`, which exists without pontoon's labels for the team, in
/// the words of its rule; `source` is where the repo asks for it.
pub fn refusal(key: &ObjectKey, desired: &UnitDesired, source: &SourceRef) -> String {
    let team = &desired.unit.team;
    if is_namespace(key) {
        format!(
            "{source}: error[{RULE_NAMESPACE_EXISTS}]: team {team}: namespace {} exists on cluster {} without pontoon's labels for the team; nothing is applied into it unless platform.yaml adopts it (spec.adopt)",
            key.name, desired.unit.cluster
        )
    } else {
        format!(
            "{source}: error[{RULE_OBJECT_EXISTS}]: team {team}: {key} exists on cluster {} without pontoon's labels for the team; pontoon does not apply over it unless platform.yaml adopts it (spec.adopt)",
            desired.unit.cluster
        )
    }
}

/// Leaves out of `planned` every object that exists without pontoon's labels for the team
/// and that the unit may not take (an error in `r` each), and every object in a Namespace
/// so refused (one error for the Namespace). Logs each adoption the platform allowed.
pub(super) fn refuse_unmanaged(
    planned: &mut Vec<Planned<'_>>,
    unmanaged: &Unmanaged,
    previous: &Inventory,
    desired: &UnitDesired,
    r: &mut UnitResult,
) {
    let taken = |p: &Planned| {
        unmanaged
            .get(&p.key)
            .map(|uid| may_take(&p.key, uid, desired, previous))
    };
    let mut refused_namespaces = BTreeMap::new();
    for p in planned.iter().filter(|p| is_namespace(&p.key)) {
        if taken(p) == Some(false) {
            refused_namespaces.insert(p.key.name.clone(), p);
        }
    }
    for (name, p) in &refused_namespaces {
        let inside = planned.iter().filter(|o| o.key.namespace == *name).count();
        r.error(
            &p.key,
            format!(
                "{}; left out: the Namespace and {inside} object(s) in it",
                refusal(&p.key, desired, &p.object.source)
            ),
        );
    }
    let mut refused: BTreeSet<ObjectKey> =
        refused_namespaces.values().map(|p| p.key.clone()).collect();
    for p in planned.iter() {
        if refused_namespaces.contains_key(&p.key.namespace) {
            refused.insert(p.key.clone());
            continue;
        }
        match taken(p) {
            Some(false) if !is_namespace(&p.key) => {
                r.error(&p.key, refusal(&p.key, desired, &p.object.source));
                refused.insert(p.key.clone());
            }
            Some(true) => {
                if let Some(a) = desired.adopt.iter().find(|a| a.key == p.key) {
                    tracing::info!(unit = %desired.unit, object = %p.key, reason = %a.reason,
                        adopted_at = %a.source, "adopting an existing object without pontoon's labels, as platform.yaml says");
                }
            }
            _ => {}
        }
    }
    planned.retain(|p| !refused.contains(&p.key));
}
