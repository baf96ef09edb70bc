//! Each team folder's `team.yaml`: parsed and checked against the platform (the folder's
//! name, the namespaces it claims, the clusters it names), and the platform clusters a
//! team (or an instance) selects. Reading every team.yaml comes first, before any team
//! renders, so that namespace claims can be settled across teams.

use std::collections::BTreeMap;

use super::Files;
use crate::desired::{
    ClusterName, DEFAULT_NAMESPACE, Diagnostic, PLATFORM_UNIT, ReceiverName,
    TEAM_IDENTITY_NAMESPACE, TeamName, is_dns_label,
};
use crate::model::{
    self, API_VERSION, ClusterDef, ClusterSelector, Document, Platform, Team, diag,
};

/// A revision's files by team folder (`teams/<team>/…`), each with its path.
pub(super) type FilesByTeam<'a> = BTreeMap<String, Vec<(&'a String, &'a Vec<u8>)>>;

/// Every team folder's team.yaml: its document and what it says, or why it cannot be used.
pub(super) type TeamYamls = BTreeMap<String, Result<(Document, Team), Vec<Diagnostic>>>;

/// Groups the files under `teams/` by team folder.
pub(super) fn files_by_team(files: &Files) -> FilesByTeam<'_> {
    let mut by_team = FilesByTeam::new();
    for (path, bytes) in files.range("teams/".to_owned()..) {
        let Some(rest) = path.strip_prefix("teams/") else {
            break;
        };
        if let Some((team, _)) = rest.split_once('/') {
            by_team
                .entry(team.to_owned())
                .or_default()
                .push((path, bytes));
        }
    }
    by_team
}

/// Reads and checks the team.yaml of every team folder.
pub(super) fn read_team_yamls(files_by_team: &FilesByTeam, platform: &Platform) -> TeamYamls {
    files_by_team
        .iter()
        .map(|(name, files)| (name.clone(), read_team_yaml(name, files, platform)))
        .collect()
}

fn read_team_yaml(
    name: &str,
    files: &[(&String, &Vec<u8>)],
    platform: &Platform,
) -> Result<(Document, Team), Vec<Diagnostic>> {
    let team_name = TeamName(name.to_owned());
    let path = format!("teams/{name}/team.yaml");
    let Some((_, bytes)) = files.iter().find(|(p, _)| **p == path) else {
        return Err(vec![diag(
            &path,
            1,
            1,
            Some(&team_name),
            "missing-team-file",
            format!("team folder teams/{name}/ has no team.yaml"),
        )]);
    };
    let mut problems = Vec::new();
    let docs = model::documents(&path, bytes, Some(&team_name), &mut problems);
    match (docs.first(), problems.is_empty()) {
        (Some(doc), true) => match model::typed::<Team>(doc, Some(&team_name)) {
            Ok(team) => {
                let errs = check_team(doc, &team, name, platform);
                if errs.is_empty() {
                    Ok((doc.clone(), team))
                } else {
                    Err(errs)
                }
            }
            Err(e) => Err(vec![*e]),
        },
        (None, true) => Err(vec![diag(
            &path,
            1,
            1,
            Some(&team_name),
            "schema",
            "team.yaml is empty",
        )]),
        (_, false) => Err(problems),
    }
}

/// The notification receivers each team.yaml names (`notify`), with where each is
/// written. Whether the daemon defines them is the daemon's to say: render knows no config.
pub(super) fn receiver_names(team_yamls: &TeamYamls) -> BTreeMap<TeamName, Vec<ReceiverName>> {
    let mut out = BTreeMap::new();
    for (name, read) in team_yamls {
        let Ok((doc, team)) = read else { continue };
        if team.spec.notify.is_empty() {
            continue;
        }
        let fields = doc.fields();
        let names = team
            .spec
            .notify
            .iter()
            .enumerate()
            .map(|(i, receiver)| {
                let (line, column) = fields.position_of(&format!("spec.notify[{i}]"));
                ReceiverName {
                    name: receiver.clone(),
                    file: doc.file.clone(),
                    line,
                    column,
                }
            })
            .collect();
        out.insert(TeamName(name.clone()), names);
    }
    out
}

/// The clusters of every team whose team.yaml reads, so that a team failing later is
/// reported where it runs.
pub(super) fn clusters_by_team(
    team_yamls: &TeamYamls,
    platform: &Platform,
) -> BTreeMap<String, Vec<ClusterName>> {
    team_yamls
        .iter()
        .filter_map(|(name, t)| {
            let (_, team) = t.as_ref().ok()?;
            let on = select_clusters(platform, &team.spec.clusters)
                .into_iter()
                .map(|c| ClusterName(c.name.clone()))
                .collect();
            Some((name.clone(), on))
        })
        .collect()
}

/// The platform's clusters a selector picks: by name, or by all of its labels.
pub(super) fn select_clusters<'a>(
    platform: &'a Platform,
    selector: &ClusterSelector,
) -> Vec<&'a ClusterDef> {
    platform
        .spec
        .clusters
        .iter()
        .filter(|c| {
            selector.names.contains(&c.name)
                || (!selector.match_labels.is_empty()
                    && selector
                        .match_labels
                        .iter()
                        .all(|(k, v)| c.labels.get(k) == Some(v)))
        })
        .collect()
}

/// The problems of a team.yaml that YAML cannot see.
fn check_team(doc: &Document, t: &Team, folder: &str, platform: &Platform) -> Vec<Diagnostic> {
    let team_name = TeamName(folder.to_owned());
    let mut errs = Vec::new();
    let mut problem = |field: &str, rule: &str, msg: String| {
        errs.push(doc.diag_at(field, Some(&team_name), rule, msg))
    };
    if t.api_version != API_VERSION || t.kind != "Team" {
        problem(
            "kind",
            "schema",
            format!("team.yaml must be `apiVersion: {API_VERSION}`, `kind: Team`"),
        );
    }
    if t.metadata.name != folder {
        problem(
            "metadata.name",
            "team-name",
            format!(
                "metadata.name is {:?} but the folder is teams/{folder}/",
                t.metadata.name
            ),
        );
    }
    if folder == PLATFORM_UNIT {
        problem(
            "metadata.name",
            "team-reserved",
            format!(
                "{folder:?} is the unit of the platform's components on each cluster (components/); no team may take the name"
            ),
        );
    }
    if !is_dns_label(folder) {
        problem(
            "metadata.name",
            "invalid-name",
            format!("{folder:?} is not a valid team name (lowercase letters, digits, '-')"),
        );
    }
    if t.spec.namespaces.is_empty() {
        problem(
            "spec.namespaces",
            "schema",
            "spec.namespaces needs at least one namespace".to_owned(),
        );
    }
    for (i, ns) in t.spec.namespaces.iter().enumerate() {
        if !is_dns_label(ns) {
            problem(
                &format!("spec.namespaces[{i}]"),
                "invalid-name",
                format!("{ns:?} is not a valid namespace name"),
            );
        } else if let Some(owner) = reserved_namespace(ns) {
            problem(
                &format!("spec.namespaces[{i}]"),
                "namespace-reserved",
                format!("namespace {ns} belongs to {owner}; a team cannot own it"),
            );
        } else if let Some(first) = t.spec.namespaces[..i].iter().position(|n| n == ns) {
            problem(
                &format!("spec.namespaces[{i}]"),
                "schema",
                format!("namespace {ns} is listed twice (first at spec.namespaces[{first}])"),
            );
        }
    }
    for (i, owner) in t.spec.owners.iter().enumerate() {
        if owner.starts_with("system:") {
            problem(
                &format!("spec.owners[{i}]"),
                "owner-reserved",
                format!(
                    "owner {owner:?} is a name Kubernetes reserves (system: users and groups \
                     stand for components, service accounts, anonymous or every \
                     authenticated client); owners are ordinary users"
                ),
            );
        }
    }
    for (i, c) in t.spec.clusters.names.iter().enumerate() {
        if !platform.spec.clusters.iter().any(|d| &d.name == c) {
            problem(
                &format!("spec.clusters.names[{i}]"),
                "unknown-cluster",
                format!(
                    "cluster {c} is not defined in platform.yaml{}",
                    model::did_you_mean(c, platform.spec.clusters.iter().map(|d| d.name.as_str()))
                ),
            );
        }
    }
    errs
}

/// Namespaces no team may own: a team's base gives its owners `admin` there, isolates it
/// with a NetworkPolicy and puts a quota on it. Who they belong to, or `None`.
fn reserved_namespace(ns: &str) -> Option<&'static str> {
    if ns == "default" || ns.starts_with("kube-") {
        Some("Kubernetes itself")
    } else if ns == DEFAULT_NAMESPACE {
        Some("pontoon (its inventories and lease)")
    } else if ns == TEAM_IDENTITY_NAMESPACE {
        // Its admins could act as every team: `admin` and `edit` may impersonate the
        // namespace's service accounts, which are the teams' identities.
        Some("pontoon (the teams' identities)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::desired::{ReceiverName, TeamName};
    use crate::render::{Files, render};

    #[test]
    fn the_receivers_a_team_names_are_kept_with_their_lines() {
        let mut files = Files::new();
        files.insert(
            "platform.yaml".into(),
            b"apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: prod}]\n".to_vec(),
        );
        files.insert(
            "teams/shop/team.yaml".into(),
            b"apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {name: shop}\nspec:\n  namespaces: [shop]\n  clusters: {names: [prod]}\n  notify:\n    - shop-slack\n    - oncall\n".to_vec(),
        );
        files.insert(
            "teams/quiet/team.yaml".into(),
            b"apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {name: quiet}\nspec:\n  namespaces: [quiet]\n  clusters: {names: [prod]}\n".to_vec(),
        );
        let state = render(&files, "r1");
        assert!(state.failed_teams.is_empty(), "{:?}", state.diagnostics);
        let at = |name: &str, line| ReceiverName {
            name: name.into(),
            file: "teams/shop/team.yaml".into(),
            line,
            column: 7,
        };
        assert_eq!(
            state.notify.get(&TeamName("shop".into())),
            Some(&vec![at("shop-slack", 8), at("oncall", 9)])
        );
        assert!(!state.notify.contains_key(&TeamName("quiet".into())));
    }
}
