//! Rendering: a pure function from the files of one revision to the desired objects of
//! every (team, cluster) unit, with diagnostics. No I/O, no clock, no environment: the
//! same files always give the same output, byte for byte. It never imports the cluster
//! connections nor the daemon's config.
//!
//! One team's mistakes never stop another team: every error is recorded against the team
//! whose files caused it, and a team with any error gets no units at all (its clusters
//! keep what they run). Only a broken `platform.yaml` stops everything.
//!
//! A render reads, in this order: `platform` (`platform.yaml`), `kinds` (`kinds/`),
//! `teams` (each `team.yaml` and the clusters it selects), `claims` (who owns each
//! namespace); then `team` renders each team's documents: `instances` of platform kinds,
//! plain `manifests`, and the team's `base` objects; `dependencies` checks and resolves
//! what objects wait for (`dependsOn`). `components` renders the platform's components
//! to one `platform` unit per cluster. `report` formats the diagnostics. `rollout`
//! resolves the platform's rollout stages to clusters.

mod autoscaling;
mod base;
mod claims;
pub mod components;
mod dependencies;
pub mod expr;
mod health;
mod instances;
mod kind_charts;
mod kinds;
mod manifests;
mod packages;
mod platform;
pub mod policies;
mod policy_check;
mod report;
mod rollout;
pub mod schema;
mod secrets;
mod skipped;
mod team;
mod teams;

use std::collections::BTreeMap;

use crate::desired::*;
use crate::model::{self, Skipped};

pub use base::plural;
pub use instances::merge_override;
pub use report::{format_github, format_text};
pub use secrets::{Decryption, NO_KEYS, REDACTED, is_secret, redacted};

/// Every package a revision asks to expand before [`render_expanded`] renders it: the
/// teams' (Kustomize folders, charts), the platform's components', and the charts of the
/// kinds that have one, per instance.
pub fn package_requests(files: &Files) -> Vec<PackageRequest> {
    let mut requests = packages::package_requests(files);
    requests.extend(components::package_requests(files));
    requests.extend(kind_charts::package_requests(files));
    requests
}

/// The files of a revision: path (relative, `/`-separated) → content.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Renders a revision on its own, with nothing known of earlier ones: a namespace that
/// several teams claim is refused to all of them. With no date given, policy exceptions
/// hold whatever their expiry ([`render_revision`] takes the day).
pub fn render(files: &Files, revision: &str) -> DesiredState {
    render_after(files, revision, &NamespaceOwners::new())
}

/// Renders a revision that follows one whose render gave each namespace the owner in
/// `earlier` (the daemon's last render, or what the clusters' Namespaces say). A team
/// that claims a namespace another team already holds is the one that fails: a new team
/// copying an existing team's namespace into its team.yaml stops itself, not the team
/// that was there first.
pub fn render_after(files: &Files, revision: &str, earlier: &NamespaceOwners) -> DesiredState {
    render_revision(files, &[], revision, earlier, None)
}

/// Renders a revision as [`render_after`] does, with the entries its source did not read
/// (`skipped`): each fails what it belongs to (the module `skipped` says how), so that nothing the
/// revision holds vanishes from the render without an error. `today` (UTC) decides which
/// policy exceptions still hold: the caller reads the clock, render never does; `None`
/// checks no expiry.
pub fn render_revision(
    files: &Files,
    skipped: &[Skipped],
    revision: &str,
    earlier: &NamespaceOwners,
    today: Option<jiff::civil::Date>,
) -> DesiredState {
    render_decrypting(
        files,
        skipped,
        revision,
        earlier,
        Decryption::Keys(&NO_KEYS),
        today,
    )
}

/// Renders a revision as [`render_revision`] does (on `today`), decrypting the teams' SOPS files as
/// `decryption` says: with the daemon's keys, each team with its own (the module
/// `secrets`), or, without keys, checking their structure only.
pub fn render_decrypting(
    files: &Files,
    skipped: &[Skipped],
    revision: &str,
    earlier: &NamespaceOwners,
    decryption: Decryption,
    today: Option<jiff::civil::Date>,
) -> DesiredState {
    render_expanded(
        files,
        skipped,
        revision,
        earlier,
        decryption,
        today,
        &Expansions::new(),
    )
}

/// Renders a revision as [`render_decrypting`] does, reading the teams' packages from
/// `expansions`: the expansions of what [`package_requests`] listed for these files. A
/// package with no expansion there fails its team (`package-not-expanded`).
pub fn render_expanded(
    files: &Files,
    skipped: &[Skipped],
    revision: &str,
    earlier: &NamespaceOwners,
    decryption: Decryption,
    today: Option<jiff::civil::Date>,
    expansions: &Expansions,
) -> DesiredState {
    let mut state = DesiredState {
        revision: revision.to_owned(),
        // Kept as they were when platform.yaml is broken and nothing renders.
        namespace_owners: earlier.clone(),
        ..DesiredState::default()
    };
    let skipped = skipped::by_owner(skipped);
    let mut diags = skipped.warnings;

    diags.extend(skipped.platform.iter().cloned());
    let platform = skipped
        .platform
        .is_empty()
        .then(|| platform::read(files, today, &mut diags))
        .flatten();
    let Some(platform::PlatformRead {
        platform,
        adoptions,
        health,
        policies,
    }) = platform
    else {
        state.platform_failed = true;
        finish(&mut state, diags);
        return state;
    };
    let Some(stages) = rollout::stages(files, &platform, &mut diags) else {
        state.platform_failed = true;
        finish(&mut state, diags);
        return state;
    };
    state.default_prune = platform::prune_policy(&platform);
    let mut kinds = kinds::read(files, &platform, &mut diags);
    for (stem, d) in skipped.kinds {
        kinds.broken.entry(stem).or_insert_with(|| d.clone());
        diags.push(d);
    }
    let components = components::read(files, &platform);
    let files_by_team = teams::files_by_team(files);
    let mut team_yamls = teams::read_team_yamls(&files_by_team, &platform);
    let clusters_by_team = teams::clusters_by_team(&team_yamls, &platform);
    state.rollout = rollout::rollout(stages, &team_yamls);
    state.notify = teams::receiver_names(&team_yamls);
    let namespace_owners = claims::claim_namespaces(&mut team_yamls, earlier);
    state.namespace_owners = namespace_owners.clone();

    let revision_context = team::RevisionContext {
        platform: &platform,
        kinds: &kinds,
        namespace_owners: &namespace_owners,
        adoptions: &adoptions,
        health: &health,
        decryption,
        policies: &policies,
        expansions,
        components: &components,
    };
    let components_context = components::ComponentsContext {
        platform: &platform,
        files,
        namespace_owners: &namespace_owners,
        adoptions: &adoptions,
        health: &health,
        policies: &policies,
        expansions,
    };
    if let Some((rendered, on)) =
        components::platform_units(&components_context, &components, &mut diags)
    {
        record_team(
            &mut state,
            &mut diags,
            TeamName(PLATFORM_UNIT.to_owned()),
            rendered,
            Some(&on),
        );
    }
    let mut skipped_by_team = skipped.teams;
    for (name, team_yaml) in team_yamls {
        let team_name = TeamName(name.clone());
        let rendered = team_yaml.and_then(|(_, team)| {
            team::render_team(
                &revision_context,
                &team_name,
                &team,
                &files_by_team[&name],
                &mut diags,
                &mut state.policy_debt,
            )
        });
        let rendered = skipped::fail_team(rendered, skipped_by_team.remove(&name));
        record_team(
            &mut state,
            &mut diags,
            team_name,
            rendered,
            clusters_by_team.get(&name),
        );
    }
    // Teams whose folder was not read at all (a symlinked or unreadable folder).
    for (name, errs) in skipped_by_team {
        record_team(&mut state, &mut diags, TeamName(name), Err(errs), None);
    }
    finish(&mut state, diags);
    state
}

/// The platform's clusters and rules with the exceptions that hold on `today`, as a
/// render of `files` reads them: what `pontoon audit` checks live objects against. The
/// diagnostics of a `platform.yaml` that does not read.
pub fn platform_policies(
    files: &Files,
    today: Option<jiff::civil::Date>,
) -> Result<(Vec<model::ClusterDef>, policies::Policies), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    match platform::read(files, today, &mut diags) {
        Some(read) => Ok((read.platform.spec.clusters, read.policies)),
        None => Err(diags),
    }
}

/// Puts one team's render in the state: its units, or its errors together with the
/// clusters where its failure is shown (when its team.yaml says where it runs). A team
/// a `deny` rule stops on some clusters has its units on the others and is failed on
/// those: a failed team's unit that the state holds is not failed.
fn record_team(
    state: &mut DesiredState,
    diags: &mut Vec<Diagnostic>,
    team_name: TeamName,
    rendered: Result<team::TeamUnits, Vec<Diagnostic>>,
    clusters: Option<&Vec<ClusterName>>,
) {
    match rendered {
        Ok(team::TeamUnits { units, denied }) => {
            for u in units {
                state.units.insert(u.unit.clone(), u);
            }
            if !denied.is_empty() {
                diags.extend(denied.iter().cloned());
                let on: Vec<ClusterName> = clusters
                    .into_iter()
                    .flatten()
                    .filter(|c| denied.iter().any(|d| d.concerns(&c.0)))
                    .cloned()
                    .collect();
                state.failed_team_clusters.insert(team_name.clone(), on);
                state.failed_teams.insert(team_name, denied);
            }
        }
        Err(errs) => {
            diags.extend(errs.iter().cloned());
            if let Some(on) = clusters.filter(|on| !on.is_empty()) {
                state
                    .failed_team_clusters
                    .insert(team_name.clone(), on.clone());
            }
            state.failed_teams.insert(team_name, errs);
        }
    }
}

/// Sorts the diagnostics into their final order and drops repeats.
fn finish(state: &mut DesiredState, mut diags: Vec<Diagnostic>) {
    diags.sort();
    diags.dedup();
    state.diagnostics = diags;
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

/// A file of a team folder that holds manifests: YAML or JSON, as kubectl reads them.
fn is_manifest_file(path: &str) -> bool {
    is_yaml(path) || path.ends_with(".json")
}

#[cfg(test)]
mod tests;
