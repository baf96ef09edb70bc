use super::*;
use crate::desired::{Diagnostic, Severity, UnitDesired};

fn id(team: &str, cluster: &str) -> UnitId {
    UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }
}

fn unit(team: &str, cluster: &str, objects: usize) -> UnitDesired {
    UnitDesired {
        unit: id(team, cluster),
        namespaces: vec![team.into()],
        objects: (0..objects)
            .map(|i| crate::desired::DesiredObject {
                object: std::sync::Arc::new(
                    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("c{i}"), "namespace": team}})
                    .into(),
                ),
                source: crate::desired::SourceRef {
                    file: "teams/x.yaml".into(),
                    line: 1,
                },
                applier: crate::desired::Applier::Platform,
                drift: crate::desired::DriftMode::Correct,
                ignore_fields: Vec::new(),
                health: None,
            })
            .collect(),
        prune: Default::default(),
        adopt: Vec::new(),
        dependencies: Default::default(),
        components: Default::default(),
    }
}

fn state(rev: &str, units: &[(&str, &str, usize)]) -> std::sync::Arc<DesiredState> {
    std::sync::Arc::new(DesiredState {
        revision: rev.into(),
        units: units
            .iter()
            .map(|(t, c, n)| (id(t, c), unit(t, c, *n)))
            .collect(),
        ..Default::default()
    })
}

fn report(rev: &str, team: &str, cluster: &str, state: UnitState) -> SyncReport {
    let mut result = UnitResult::new(id(team, cluster), rev);
    result.state = state;
    if state != UnitState::Synced {
        result.message = Some("deployment web: 0/2 available".into());
    }
    SyncReport {
        result,
        first_attempt: false,
        removal: false,
    }
}

/// The last status for `context` on the newest commit of `out`'s batch (a batch may also
/// resolve older commits).
fn find<'a>(out: &'a [Status], context: &str) -> Option<&'a Status> {
    let newest = out.first().map(|s| s.sha.as_str())?;
    out.iter()
        .rev()
        .find(|s| s.context == context && s.sha == newest)
}

#[test]
fn first_render_posts_pending_for_every_unit_and_cluster() {
    let mut t = Tracker::new(["staging".to_owned(), "prod".to_owned()]);
    let out = t.rendered(&state(
        "aaa",
        &[("payments", "staging", 2), ("data", "prod", 1)],
    ));
    let contexts: Vec<(&str, State)> = out.iter().map(|s| (s.context.as_str(), s.state)).collect();
    assert_eq!(
        contexts,
        vec![
            ("pontoon/prod/data", State::Pending),
            ("pontoon/staging/payments", State::Pending),
            ("pontoon/staging", State::Pending),
            ("pontoon/prod", State::Pending),
        ]
    );
    assert!(out.iter().all(|s| s.sha == "aaa"));
}

#[test]
fn only_changed_units_get_their_own_status_but_summaries_count_all() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state(
        "aaa",
        &[("payments", "prod", 2), ("data", "prod", 1)],
    ));
    let out = t.rendered(&state(
        "bbb",
        &[("payments", "prod", 3), ("data", "prod", 1)],
    ));
    assert!(find(&out, "pontoon/prod/payments").is_some());
    assert!(find(&out, "pontoon/prod/data").is_none(), "{out:#?}");
    let out = t.reported(&report("bbb", "data", "prod", UnitState::Synced));
    assert!(find(&out, "pontoon/prod/data").is_none());
    let s = find(&out, "pontoon/prod").expect("summary");
    assert_eq!(s.state, State::Pending);
    assert_eq!(s.description, "1/2 teams synced; waiting: payments");
    let out = t.reported(&report("bbb", "payments", "prod", UnitState::Synced));
    let own = find(&out, "pontoon/prod/payments").expect("own status");
    assert_eq!(own.state, State::Success);
    assert_eq!(own.description, "applied 0 (+0 ~0), pruned 0, 0 drift");
    let s = find(&out, "pontoon/prod").expect("summary");
    assert_eq!(
        (s.state, s.description.as_str()),
        (State::Success, "2/2 teams synced")
    );
}

#[test]
fn failure_then_retry_success_and_resyncs_change_nothing() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state("aaa", &[("payments", "prod", 2)]));
    let out = t.reported(&report("aaa", "payments", "prod", UnitState::Failed));
    let own = find(&out, "pontoon/prod/payments").expect("own");
    assert_eq!(own.state, State::Failure);
    assert_eq!(own.description, "Failed: deployment web: 0/2 available");
    assert_eq!(
        find(&out, "pontoon/prod").map(|s| s.state),
        Some(State::Failure)
    );
    let out = t.reported(&report("aaa", "payments", "prod", UnitState::Synced));
    assert_eq!(
        find(&out, "pontoon/prod/payments").map(|s| s.state),
        Some(State::Success)
    );
    assert_eq!(
        find(&out, "pontoon/prod").map(|s| s.state),
        Some(State::Success)
    );
    // A later resync (or a drift correction) of the same commit says nothing new.
    assert!(
        t.reported(&report("aaa", "payments", "prod", UnitState::Failed))
            .is_empty()
    );
}

#[test]
fn progressing_stays_pending_with_the_reason() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state("aaa", &[("payments", "prod", 2)]));
    let out = t.reported(&report("aaa", "payments", "prod", UnitState::Progressing));
    let own = find(&out, "pontoon/prod/payments").expect("own");
    assert_eq!(own.state, State::Pending);
    assert!(
        own.description.starts_with("applied, rolling out:"),
        "{}",
        own.description
    );
    assert!(
        t.reported(&report("aaa", "payments", "prod", UnitState::Progressing))
            .is_empty()
    );
}

#[test]
fn a_newer_commit_supersedes_an_unfinished_one() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state("aaa1111", &[("payments", "prod", 2)]));
    t.reported(&report(
        "aaa1111",
        "payments",
        "prod",
        UnitState::Progressing,
    ));
    t.rendered(&state("bbb2222", &[("payments", "prod", 3)]));
    let out = t.reported(&report("bbb2222", "payments", "prod", UnitState::Synced));
    let old = out
        .iter()
        .find(|s| s.sha == "aaa1111" && s.context == "pontoon/prod/payments")
        .expect("old commit resolved");
    assert_eq!(old.state, State::Error);
    assert_eq!(old.description, "superseded by bbb2222 before it finished");
    let old_summary = out
        .iter()
        .find(|s| s.sha == "aaa1111" && s.context == "pontoon/prod")
        .expect("old summary");
    assert_eq!(old_summary.state, State::Error);
}

#[test]
fn a_broken_team_fails_on_its_clusters_and_others_go_on() {
    let mut t = Tracker::new(["staging".to_owned(), "prod".to_owned()]);
    t.rendered(&state(
        "aaa",
        &[("payments", "prod", 2), ("data", "prod", 1)],
    ));
    let mut s = state("bbb", &[("data", "prod", 2)]);
    std::sync::Arc::make_mut(&mut s).failed_teams.insert(
        TeamName("payments".into()),
        vec![Diagnostic {
            file: "teams/payments/web.yaml".into(),
            line: 4,
            column: 3,
            team: Some(TeamName("payments".into())),
            cluster: None,
            severity: Severity::Error,
            rule: "unknown-field".into(),
            message: "unknown field `replica`".into(),
        }],
    );
    let out = t.rendered(&s);
    let own = find(&out, "pontoon/prod/payments").expect("payments fails");
    assert_eq!(own.state, State::Failure);
    assert!(
        own.description.contains("teams/payments/web.yaml:4:3"),
        "{}",
        own.description
    );
    assert!(
        find(&out, "pontoon/staging/payments").is_none(),
        "never on staging"
    );
    let out = t.reported(&report("bbb", "data", "prod", UnitState::Synced));
    let s = find(&out, "pontoon/prod").expect("summary");
    assert_eq!(s.state, State::Failure);
    assert_eq!(s.description, "1/2 teams synced; not rendered: payments");
}

/// A `deny` policy on prod alone: prod's status fails naming the rule, staging's unit
/// syncs and reports as itself.
#[test]
fn a_team_denied_on_one_cluster_fails_there_alone() {
    let mut t = Tracker::new(["staging".to_owned(), "prod".to_owned()]);
    t.rendered(&state(
        "aaa",
        &[("payments", "prod", 2), ("payments", "staging", 2)],
    ));
    let mut s = state("bbb", &[("payments", "staging", 3)]);
    std::sync::Arc::make_mut(&mut s).failed_teams.insert(
        TeamName("payments".into()),
        vec![Diagnostic {
            file: "teams/payments/web.yaml".into(),
            line: 9,
            column: 5,
            team: Some(TeamName("payments".into())),
            cluster: Some("prod".into()),
            severity: Severity::Error,
            rule: "policy/replicas-in-prod".into(),
            message: "policy replicas-in-prod on prod: web runs 1 replica(s)".into(),
        }],
    );
    let out = t.rendered(&s);
    let prod = find(&out, "pontoon/prod/payments").expect("prod fails");
    assert_eq!(prod.state, State::Failure);
    assert!(
        prod.description
            .contains("teams/payments/web.yaml:9:5: error[policy/replicas-in-prod]"),
        "{}",
        prod.description
    );
    let staging = find(&out, "pontoon/staging/payments").expect("staging syncs");
    assert_eq!(staging.state, State::Pending, "{staging:?}");
}

#[test]
fn a_removed_team_gets_a_status_for_its_removal() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state(
        "aaa",
        &[("payments", "prod", 2), ("data", "prod", 1)],
    ));
    let out = t.rendered(&state("bbb", &[("data", "prod", 1)]));
    assert_eq!(
        find(&out, "pontoon/prod/payments").map(|s| s.description.as_str()),
        Some("removing the team's objects")
    );
    let mut r = report("bbb", "payments", "prod", UnitState::Synced);
    r.removal = true;
    r.result.pruned = vec![crate::desired::ObjectKey {
        group: String::new(),
        kind: "ConfigMap".into(),
        namespace: "payments".into(),
        name: "c0".into(),
    }];
    let out = t.reported(&r);
    assert_eq!(
        find(&out, "pontoon/prod/payments").map(|s| (s.state, s.description.as_str())),
        Some((State::Success, "team removed: pruned 1"))
    );
}

#[test]
fn a_broken_platform_fails_every_cluster_and_keeps_the_last_good_render() {
    let mut t = Tracker::new(["prod".to_owned()]);
    t.rendered(&state("aaa", &[("payments", "prod", 2)]));
    let mut broken = state("bbb", &[]);
    std::sync::Arc::make_mut(&mut broken).platform_failed = true;
    let out = t.rendered(&broken);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].context, "pontoon/prod");
    assert_eq!(out[0].state, State::Failure);
    // The fix compares with the last good render: payments did not change.
    let out = t.rendered(&state("ccc", &[("payments", "prod", 2)]));
    assert!(find(&out, "pontoon/prod/payments").is_none(), "{out:#?}");
}

#[test]
fn descriptions_fit_githubs_limit() {
    let long = "x".repeat(500);
    let cut = truncate(&long, DESCRIPTION_LIMIT);
    assert_eq!(cut.chars().count(), DESCRIPTION_LIMIT);
    assert!(cut.ends_with('…'));
    assert_eq!(truncate(" short ", DESCRIPTION_LIMIT), "short");
}

#[test]
fn a_unit_a_rollout_stage_holds_waits_pending_then_is_stopped_for_good() {
    let mut t = Tracker::new(["staging".to_owned(), "prod".to_owned()]);
    t.rendered(&state(
        "aaa",
        &[("shop", "staging", 1), ("shop", "prod", 1)],
    ));
    t.rendered(&state(
        "bbb",
        &[("shop", "staging", 2), ("shop", "prod", 2)],
    ));
    let out = t.gated(
        "bbb",
        &id("shop", "prod"),
        false,
        "waiting for staging to sync",
    );
    let own = find(&out, "pontoon/prod/shop").expect("own status");
    assert_eq!(own.state, State::Pending);
    assert_eq!(own.description, "waiting for staging to sync");
    assert_eq!(
        find(&out, "pontoon/prod").map(|s| (s.state, s.description.as_str())),
        Some((State::Pending, "0/1 teams synced; waiting: shop"))
    );
    // prod's resyncs of the revision it runs say nothing about the commit it waits for.
    assert!(
        t.reported(&report("aaa", "shop", "prod", UnitState::Synced))
            .iter()
            .all(|s| s.sha == "aaa")
    );
    let out = t.gated("bbb", &id("shop", "prod"), true, "stopped: staging failed");
    let own = find(&out, "pontoon/prod/shop").expect("own status");
    assert_eq!(
        (own.state, own.description.as_str()),
        (State::Failure, "stopped: staging failed")
    );
    assert_eq!(
        find(&out, "pontoon/prod").map(|s| s.state),
        Some(State::Failure)
    );
    // Stopped is final: a later wait on the same commit posts nothing.
    assert!(
        t.gated("bbb", &id("shop", "prod"), false, "waiting")
            .is_empty()
    );
    // The next commit prod takes leaves the stopped one failed, not superseded.
    t.rendered(&state(
        "ccc",
        &[("shop", "staging", 1), ("shop", "prod", 1)],
    ));
    let out = t.reported(&report("ccc", "shop", "prod", UnitState::Synced));
    assert!(out.iter().all(|s| s.sha == "ccc"), "{out:?}");
}
