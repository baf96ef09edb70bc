//! Pull-request plans: a pull (merge) request opened or updated against the tracked
//! branch gets its head commit fetched, rendered and planned against the live clusters
//! (as `pontoon plan` does: a dry run only for what the pull request changes, nothing
//! written), and the answer posted as `pontoon/plan` on that commit: `staging +3 ~1 -0,
//! prod +3 ~1 -0`, or a failure naming the first errors, refusals and held units.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::desired::{
    ClusterName, DesiredState, Diagnostic, NamespaceOwners, PLATFORM_UNIT, Severity,
};
use crate::sops::Keyring;
use crate::source::git::GitTarget;
use crate::source::webhook::PullRequest;
use crate::status::{DESCRIPTION_LIMIT, Notifier, State, Status};
use crate::sync::Syncer;
use crate::sync::plan::{Action, UnitPlan};

/// How many diagnostics a failed plan's description names.
const SHOWN_ERRORS: usize = 2;

/// Plans pull requests one at a time until the channel closes. Requests for a pull
/// request that is already queued again are planned once, for the newest head.
pub async fn plan_pull_requests(
    target: GitTarget,
    syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    clusters: Vec<String>,
    statuses: Option<Arc<Notifier>>,
    desired: watch::Receiver<Option<Arc<DesiredState>>>,
    mut requests: mpsc::Receiver<PullRequest>,
    (keys, packages): (Arc<Keyring>, Arc<super::packages::Packages>),
) {
    while let Some(first) = requests.recv().await {
        let mut batch: BTreeMap<u64, PullRequest> = BTreeMap::new();
        batch.insert(first.number, first);
        while let Ok(more) = requests.try_recv() {
            batch.insert(more.number, more);
        }
        for pr in batch.into_values() {
            let post = |s: Status| {
                tracing::info!(pull_request = pr.number, sha = %pr.sha, state = s.state.as_str(), description = %s.description, "pull request plan");
                if let Some(n) = &statuses {
                    n.post(vec![s]);
                }
            };
            post(Status::plan(&pr.sha, State::Pending, "planning"));
            // A pull request follows the tracked branch's current render: a namespace
            // its teams hold stays theirs.
            let current = desired
                .borrow()
                .as_ref()
                .map(|d| d.namespace_owners.clone());
            let owners = match current {
                Some(o) => o,
                None => super::poll_and_render::namespace_owners(&syncers).await,
            };
            let status =
                plan_pull_request(&target, &syncers, &clusters, &pr, owners, &keys, &packages)
                    .await;
            post(status);
        }
    }
}

/// The `pontoon/plan` status of one pull request: its head fetched from `target`,
/// rendered with the namespaces `owners` holds, and planned on each of `clusters` with a
/// connection in `syncers`, for the head commit (a release of the hold for it counts).
pub async fn plan_pull_request(
    target: &GitTarget,
    syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
    clusters: &[String],
    pr: &PullRequest,
    owners: NamespaceOwners,
    keys: &Arc<Keyring>,
    packages: &super::packages::Packages,
) -> Status {
    let fetched = {
        let (t, r, s) = (target.clone(), pr.head_ref.clone(), pr.sha.clone());
        tokio::task::spawn_blocking(move || crate::source::git::fetch_review(&t, &r, &s)).await
    };
    let snapshot = match fetched {
        Ok(Ok(s)) => Arc::new(s),
        Ok(Err(e)) => {
            return Status::plan(
                &pr.sha,
                State::Error,
                format!("cannot fetch the pull request: {e}"),
            );
        }
        Err(e) => return Status::plan(&pr.sha, State::Error, format!("fetch task failed: {e}")),
    };
    let owner = syncers.values().next().map(|s| s.owner().clone());
    let state = super::poll_and_render::render(
        snapshot,
        owners,
        &owner.unwrap_or_default(),
        keys,
        packages,
    )
    .await;
    if let Some(description) = render_errors(&state) {
        return Status::plan(&pr.sha, State::Failure, description);
    }
    plan_state(&state, syncers, clusters)
        .await
        .into_status(&pr.sha)
}

/// `3 errors: teams/a/web.yaml:4:3: error[unknown-field]: …; …`, or None when it renders.
/// Said as `pontoon validate` says them where that fits the forge's limit; otherwise
/// what each error's file already says is left out, step by step ([`Brevity`]), so
/// that the place a chart's template failed is not what the limit cuts off.
fn render_errors(state: &DesiredState) -> Option<String> {
    let errors: Vec<&Diagnostic> = state
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if errors.is_empty() && !state.platform_failed && state.failed_teams.is_empty() {
        return None;
    }
    let n = errors.len().max(1);
    let head = format!("{n} error{}: ", if n == 1 { "" } else { "s" });
    if errors.is_empty() {
        return Some(format!("{head}the platform does not render"));
    }
    let say = |brevity: Brevity| {
        let shown: Vec<String> = errors
            .iter()
            .take(SHOWN_ERRORS)
            .map(|d| brevity.say(d))
            .collect();
        format!("{head}{}", shown.join("; "))
    };
    let fits = |s: &String| s.chars().count() <= DESCRIPTION_LIMIT;
    let whole = say(Brevity::Whole);
    if fits(&whole) {
        return Some(whole);
    }
    let without_team = say(Brevity::WithoutTeam);
    if fits(&without_team) {
        return Some(without_team);
    }
    Some(say(Brevity::WithoutPackage))
}

/// How much of an error a pull request's status says, each step leaving out more of
/// what the error's file already names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Brevity {
    /// As `pontoon validate` prints it.
    Whole,
    /// Without `team T: ` where the file is in the team's folder (or, for the platform
    /// unit, in `components/`).
    WithoutTeam,
    /// Also without the package a `package-error` names (`chart teams/a/web on cluster
    /// prod: ` becomes `cluster prod: `): the file is the document that declares it, and
    /// the place the tool gave (`web/templates/cm.yaml:6`) starts with the chart's name.
    WithoutPackage,
}

impl Brevity {
    fn say(self, d: &Diagnostic) -> String {
        if self == Brevity::Whole {
            return d.to_string();
        }
        let team = d.team.as_ref().filter(|t| {
            let in_folder = d.file.starts_with(&format!("teams/{t}/"));
            let platforms = t.0 == PLATFORM_UNIT && d.file.starts_with("components/");
            !(in_folder || platforms)
        });
        let message = match d.message.split_once(" on cluster ") {
            Some((_, rest)) if self == Brevity::WithoutPackage && d.rule == "package-error" => {
                format!("cluster {rest}")
            }
            _ => d.message.clone(),
        };
        let team = team.map(|t| format!("team {t}: ")).unwrap_or_default();
        // Only errors are said.
        format!(
            "{}:{}:{}: error[{}]: {team}{message}",
            d.file, d.line, d.column, d.rule
        )
    }
}

/// Totals per cluster.
#[derive(Debug, Default)]
struct PlanTotals {
    per_cluster: Vec<(String, [usize; 4])>,
    /// Objects the API server would refuse, or clusters that cannot be planned.
    problems: Vec<String>,
}

impl PlanTotals {
    /// Adds one unit's plan: its counts to its cluster's, its held hold and refusals to
    /// the problems.
    fn add(&mut self, plan: &UnitPlan, counts: &mut [usize; 4]) {
        let id = &plan.unit;
        if let Some(held) = &plan.held {
            self.problems.push(format!("{id}: {}", first_clause(held)));
        }
        let (a, c, d, e) = plan.counts();
        for (slot, n) in counts.iter_mut().zip([a, c, d, e]) {
            *slot += n;
        }
        for o in &plan.objects {
            if let Action::Error { message } = &o.action {
                self.problems.push(format!("{id}: {}: {message}", o.object));
            }
        }
    }

    fn into_status(self, sha: &str) -> Status {
        let summary: Vec<String> = self
            .per_cluster
            .iter()
            .map(|(c, [add, change, del, refused])| {
                let mut s = format!("{c} +{add} ~{change} -{del}");
                if *refused > 0 {
                    s.push_str(&format!(" !{refused}"));
                }
                s
            })
            .collect();
        let summary = summary.join(", ");
        if self.problems.is_empty() {
            Status::plan(sha, State::Success, summary)
        } else {
            Status::plan(
                sha,
                State::Failure,
                format!("{summary}; {}", self.problems.join("; ")),
            )
        }
    }
}

/// Every unit of `state` on each of `clusters`, and every team that left it there, as
/// the sync would meet them.
async fn plan_state(
    state: &DesiredState,
    syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
    clusters: &[String],
) -> PlanTotals {
    let mut totals = PlanTotals::default();
    for cluster in clusters {
        let name = ClusterName(cluster.clone());
        let Some(syncer) = syncers.get(&name) else {
            continue;
        };
        let mut counts = [0usize; 4];
        for (id, unit) in state.units.iter().filter(|(id, _)| id.cluster == name) {
            match syncer.plan_at(unit, &state.revision).await {
                Ok(plan) => totals.add(&plan, &mut counts),
                Err(e) => totals.problems.push(format!("{id}: cannot plan: {e}")),
            }
        }
        match syncer.plan_removals(state).await {
            Ok(plans) => plans.iter().for_each(|p| totals.add(p, &mut counts)),
            Err(e) => totals
                .problems
                .push(format!("{cluster}: cannot plan the teams that left: {e}")),
        }
        totals.per_cluster.push((cluster.clone(), counts));
    }
    totals
}

/// A message's first clause: `held: this revision would delete 3 of the team's 4 objects
/// (75% > the platform's limit of 50%)` of the hold's message, which goes on to say how
/// to release it.
fn first_clause(message: &str) -> &str {
    message.split_once("; ").map_or(message, |(first, _)| first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_failure_descriptions() {
        let ok = PlanTotals {
            per_cluster: vec![
                ("staging".into(), [3, 1, 0, 0]),
                ("prod".into(), [3, 1, 0, 0]),
            ],
            problems: vec![],
        }
        .into_status("abc");
        assert_eq!(ok.state, State::Success);
        assert_eq!(ok.description, "staging +3 ~1 -0, prod +3 ~1 -0");
        assert_eq!(ok.context, "pontoon/plan");
        let bad = PlanTotals {
            per_cluster: vec![("prod".into(), [1, 0, 0, 1])],
            problems: vec!["prod/payments: Deployment payments/web: forbidden".into()],
        }
        .into_status("abc");
        assert_eq!(bad.state, State::Failure);
        assert_eq!(
            bad.description,
            "prod +1 ~0 -0 !1; prod/payments: Deployment payments/web: forbidden"
        );
    }

    fn error(file: &str, team: &str, rule: &str, message: &str) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line: 1,
            column: 1,
            team: Some(crate::desired::TeamName(team.into())),
            cluster: None,
            severity: Severity::Error,
            rule: rule.into(),
            message: message.into(),
        }
    }

    /// The description of the failed plan, as the forge gets it.
    fn failing(diagnostics: Vec<Diagnostic>) -> String {
        let state = DesiredState {
            diagnostics,
            ..DesiredState::default()
        };
        let said = render_errors(&state).expect("errors");
        Status::plan("abc", State::Failure, said).description
    }

    #[test]
    fn render_errors_are_said_whole_where_they_fit() {
        let d = error("teams/a/x.yaml", "a", "parse", "expected a mapping");
        assert_eq!(
            failing(vec![d.clone(), d]),
            "2 errors: teams/a/x.yaml:1:1: error[parse]: team a: expected a mapping; teams/a/x.yaml:1:1: error[parse]: team a: expected a mapping"
        );
    }

    #[test]
    fn a_chart_error_keeps_its_template_and_line_within_the_forges_limit() {
        let place = "web/templates/settings.yaml:6: helm template: parse error at (web/templates/settings.yaml:6): function \"nope\" not defined";
        let team = error(
            "teams/payments/web.yaml",
            "payments",
            "package-error",
            &format!("chart teams/payments/web on cluster prod: {place}"),
        );
        let said = failing(vec![team]);
        assert!(
            said.starts_with("1 error: teams/payments/web.yaml:1:1: error[package-error]: cluster prod: web/templates/settings.yaml:6: helm template: "),
            "{said}"
        );
        let component = error(
            "components/cloudnative-pg.yaml",
            PLATFORM_UNIT,
            "package-error",
            &format!(
                "component cloudnative-pg: chart components/cloudnative-pg/chart on cluster prod: {place}"
            ),
        );
        let said = failing(vec![component]);
        assert!(
            said.starts_with("1 error: components/cloudnative-pg.yaml:1:1: error[package-error]: cluster prod: web/templates/settings.yaml:6: "),
            "{said}"
        );
        // What the file does not say stays: a team's error in a platform file.
        let kind = error(
            "kinds/cache.yaml",
            "payments",
            "expression",
            &format!("instance sessions: {}", "x".repeat(140)),
        );
        assert!(failing(vec![kind]).starts_with(
            "1 error: kinds/cache.yaml:1:1: error[expression]: team payments: instance sessions: x"
        ),);
    }

    #[test]
    fn a_held_unit_is_named_by_the_first_clause_of_its_hold() {
        let held = "held: this revision would delete 3 of the team's 4 objects (75% > the platform's limit of 50%); nothing was applied. To release it for this revision only: pontoon release --team shop --cluster prod --revision abc";
        assert_eq!(
            first_clause(held),
            "held: this revision would delete 3 of the team's 4 objects (75% > the platform's limit of 50%)"
        );
        assert_eq!(first_clause("no clause"), "no clause");
    }
}
