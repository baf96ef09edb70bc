//! Who owns each namespace: every team claims the namespaces its team.yaml lists, and a
//! namespace belongs to one team. A team that claims a namespace it does not get fails
//! (with a diagnostic at the claim); the team that held it goes on rendering.

use std::collections::BTreeMap;

use super::teams::TeamYamls;
use crate::desired::{NamespaceOwners, TeamName};

/// Decides which team owns each namespace the teams claim, and fails every team that
/// claims one it does not get. A namespace goes to its earlier owner if that team still
/// claims it (or its team.yaml does not parse, so nobody can tell), else to its only
/// claimant; with several claimants and no earlier owner, to nobody.
pub(super) fn claim_namespaces(
    teams: &mut TeamYamls,
    earlier: &NamespaceOwners,
) -> NamespaceOwners {
    let mut claims: BTreeMap<&String, Vec<(&String, usize)>> = BTreeMap::new();
    for (name, t) in teams.iter() {
        if let Ok((_, team)) = t {
            for (i, ns) in team.spec.namespaces.iter().enumerate() {
                claims.entry(ns).or_default().push((name, i));
            }
        }
    }
    let unreadable = |team: &TeamName| matches!(teams.get(&team.0), Some(Err(_)));
    let mut owners = NamespaceOwners::new();
    // team -> (index in spec.namespaces, message)
    let mut refused: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (ns, claimants) in &claims {
        let held = earlier
            .get(*ns)
            .filter(|t| unreadable(t) || claimants.iter().any(|(n, _)| **n == t.0));
        let owner = match (held, claimants.as_slice()) {
            (Some(t), _) => Some(t.clone()),
            (None, [(only, _)]) => Some(TeamName((*only).clone())),
            (None, _) => None,
        };
        for (name, i) in claimants {
            let message = match &owner {
                Some(o) if o.0 == **name => continue,
                Some(o) => format!(
                    "namespace {ns} belongs to team {o}; a team may not claim another team's namespace"
                ),
                None => format!(
                    "namespace {ns} is claimed by teams {}; a namespace belongs to one team, and no earlier revision says which",
                    claimants
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            };
            refused
                .entry((*name).clone())
                .or_default()
                .push((*i, message));
        }
        if let Some(o) = owner {
            owners.insert((*ns).clone(), o);
        }
    }
    // A team whose team.yaml does not parse keeps what it held.
    for (ns, t) in earlier {
        if unreadable(t) {
            owners.entry(ns.clone()).or_insert_with(|| t.clone());
        }
    }
    for (name, problems) in refused {
        let Some(t) = teams.get_mut(&name) else {
            continue;
        };
        let Ok((doc, _)) = &*t else { continue };
        let errs = problems
            .into_iter()
            .map(|(i, message)| {
                doc.diag_at(
                    &format!("spec.namespaces[{i}]"),
                    Some(&TeamName(name.clone())),
                    "namespace-claimed",
                    message,
                )
            })
            .collect();
        *t = Err(errs);
    }
    owners
}
