//! `platform.yaml` `spec.rollout`: the stages a commit goes through, resolved to the
//! platform's clusters, and the teams whose `team.yaml` skips them. A mistake here is a
//! mistake of `platform.yaml` and stops the whole render, as any other of that file: a
//! rollout order nobody can trust must not let a commit reach prod first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Files;
use super::teams::{TeamYamls, select_clusters};
use crate::desired::{ClusterName, Diagnostic, Rollout, Stage, TeamName};
use crate::model::{self, Document, Platform};

/// The stages of `platform`, each with its clusters and soak time; `None` (with the
/// reasons in `diags`, each at its line of platform.yaml) when a stage names an unknown
/// cluster, selects none, shares a cluster with another stage, repeats a name or has a
/// soak time that does not read.
pub(super) fn stages(
    files: &Files,
    platform: &Platform,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Stage>> {
    let specs = &platform.spec.rollout.stages;
    if specs.is_empty() {
        return Some(Vec::new());
    }
    // platform.yaml read as one good document already; read it again for positions.
    let bytes = files.get("platform.yaml")?;
    let mut scratch = Vec::new();
    let docs = model::documents("platform.yaml", bytes, None, &mut scratch);
    let doc = docs.first()?;
    let before = diags.len();
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let mut stage_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("spec.rollout.stages[{i}]");
        let mut refuse = |field: &str, rule: &str, message: String| {
            diags.push(doc.diag_at(&format!("{at}.{field}"), None, rule, message));
        };
        if spec.name.trim().is_empty() {
            refuse("name", "schema", "a rollout stage needs a name".to_owned());
        } else if !names.insert(spec.name.as_str()) {
            refuse(
                "name",
                "duplicate-stage",
                format!("rollout stage {} is listed twice", spec.name),
            );
        }
        let soak = match spec.soak.as_deref().map(str::trim) {
            None => Duration::ZERO,
            Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
                refuse(
                    "soak",
                    "invalid-duration",
                    format!(
                        "rollout stage {}: soak {text:?} is not a duration ({e}); write it like \"30s\", \"10m\" or \"1h 30m\"",
                        spec.name
                    ),
                );
                Duration::ZERO
            }),
        };
        for (j, name) in spec.clusters.names.iter().enumerate() {
            if !platform.spec.clusters.iter().any(|c| &c.name == name) {
                let known = platform.spec.clusters.iter().map(|c| c.name.as_str());
                refuse(
                    &format!("clusters.names[{j}]"),
                    "unknown-cluster",
                    format!(
                        "rollout stage {}: cluster {name} is not defined in platform.yaml{}",
                        spec.name,
                        model::did_you_mean(name, known)
                    ),
                );
            }
        }
        let selected = select_clusters(platform, &spec.clusters);
        if selected.is_empty() && spec.clusters.names.is_empty() {
            refuse(
                "clusters",
                "empty-stage",
                format!("rollout stage {} selects no cluster", spec.name),
            );
        }
        for c in &selected {
            if let Some(first) = stage_of.insert(c.name.as_str(), spec.name.as_str()) {
                refuse(
                    "clusters",
                    "cluster-in-two-stages",
                    format!(
                        "cluster {} is in rollout stages {first} and {}: a cluster belongs to one stage",
                        c.name, spec.name
                    ),
                );
            }
        }
        out.push(Stage {
            name: spec.name.clone(),
            clusters: selected
                .iter()
                .map(|c| ClusterName(c.name.clone()))
                .collect(),
            soak,
        });
    }
    (diags.len() == before).then_some(out)
}

/// The rollout of a revision: the platform's `stages` and the teams that skip them.
pub(super) fn rollout(stages: Vec<Stage>, team_yamls: &TeamYamls) -> Rollout {
    let skip_teams = team_yamls
        .iter()
        .filter(|(_, t)| {
            t.as_ref()
                .is_ok_and(|(_, team): &(Document, _)| team.spec.rollout.skip_stages)
        })
        .map(|(name, _)| TeamName(name.clone()))
        .collect();
    Rollout { stages, skip_teams }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::desired::{ClusterName, DesiredState, TeamName};
    use crate::render::{Files, render};

    const TEAM: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {name: shop}\nspec:\n  namespaces: [shop]\n  clusters: {matchLabels: {env: any}}\n";

    fn platform(rollout: &str) -> String {
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters:\n  - {{name: staging, labels: {{env: any, tier: test}}}}\n  - {{name: prod-eu, labels: {{env: any, tier: prod}}}}\n  - {{name: prod-us, labels: {{env: any, tier: prod}}}}\n  rollout:\n{rollout}"
        )
    }

    fn render_with(rollout: &str, team: &str) -> DesiredState {
        let mut files = Files::new();
        files.insert("platform.yaml".into(), platform(rollout).into_bytes());
        files.insert("teams/shop/team.yaml".into(), team.as_bytes().to_vec());
        render(&files, "abc")
    }

    fn errors(state: &DesiredState) -> Vec<String> {
        state.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn stages_by_name_and_labels_resolve_to_clusters_in_order() {
        let state = render_with(
            "    stages:\n    - {name: staging, clusters: {names: [staging]}, soak: 10m}\n    - name: prod\n      clusters: {matchLabels: {tier: prod}}\n",
            TEAM,
        );
        assert!(!state.platform_failed, "{:?}", errors(&state));
        let stages = &state.rollout.stages;
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name, "staging");
        assert_eq!(stages[0].clusters, vec![ClusterName("staging".into())]);
        assert_eq!(stages[0].soak, Duration::from_secs(600));
        assert_eq!(
            stages[1].clusters,
            vec![ClusterName("prod-eu".into()), ClusterName("prod-us".into())]
        );
        assert_eq!(stages[1].soak, Duration::ZERO);
        assert!(state.rollout.skip_teams.is_empty());
        assert_eq!(
            state.rollout.stage_of(&ClusterName("prod-us".into())),
            Some(1)
        );
    }

    #[test]
    fn a_team_may_skip_the_stages() {
        let team = format!("{TEAM}  rollout: {{skipStages: true}}\n");
        let state = render_with(
            "    stages:\n    - {name: staging, clusters: {names: [staging]}}\n",
            &team,
        );
        assert!(state.failed_teams.is_empty(), "{:?}", errors(&state));
        assert!(state.rollout.skip_teams.contains(&TeamName("shop".into())));
    }

    #[test]
    fn a_cluster_in_two_stages_fails_the_platform_at_its_line() {
        let state = render_with(
            "    stages:\n    - {name: staging, clusters: {names: [staging, prod-eu]}}\n    - name: prod\n      clusters: {matchLabels: {tier: prod}}\n",
            TEAM,
        );
        assert!(state.platform_failed);
        assert_eq!(
            errors(&state),
            vec![
                "platform.yaml:13:7: error[cluster-in-two-stages]: cluster prod-eu is in rollout stages staging and prod: a cluster belongs to one stage"
            ]
        );
    }

    #[test]
    fn an_unknown_cluster_and_a_bad_soak_are_errors_with_their_lines() {
        let state = render_with(
            "    stages:\n    - name: staging\n      clusters: {names: [stagin]}\n      soak: ten minutes\n",
            TEAM,
        );
        assert!(state.platform_failed);
        let errs = errors(&state);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("platform.yaml:12:26: error[unknown-cluster]: rollout stage staging: cluster stagin is not defined in platform.yaml (did you mean staging?)"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("platform.yaml:13:7: error[invalid-duration]: rollout stage staging: soak \"ten minutes\" is not a duration"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_stage_selecting_nothing_and_a_repeated_name_are_errors() {
        let state = render_with(
            "    stages:\n    - {name: a, clusters: {matchLabels: {tier: none}}}\n    - {name: b, clusters: {names: [staging]}}\n    - {name: b, clusters: {names: [prod-eu]}}\n",
            TEAM,
        );
        assert!(state.platform_failed);
        let errs = errors(&state);
        assert!(
            errs.iter()
                .any(|e| e.contains("error[empty-stage]: rollout stage a selects no cluster")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("error[duplicate-stage]")),
            "{errs:?}"
        );
    }
}
