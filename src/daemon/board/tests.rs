//! The board against renders and reports as the daemon hands them on: render failures,
//! summaries kept across quiet resyncs, units dropped and drift failures shown.

use super::*;
use crate::desired::{PrunePolicy, UnitDesired};

fn unit(team: &str, cluster: &str) -> UnitId {
    UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }
}

fn render(revision: &str, broken: Option<&str>) -> DesiredState {
    let mut s = DesiredState {
        revision: revision.into(),
        ..DesiredState::default()
    };
    if let Some(team) = broken {
        s.failed_teams.insert(
            TeamName(team.into()),
            vec![Diagnostic {
                file: format!("teams/{team}/app.yaml"),
                line: 3,
                column: 21,
                team: Some(TeamName(team.into())),
                cluster: None,
                severity: Severity::Error,
                rule: "namespace-not-owned".into(),
                message: "ConfigMap in namespace b, which belongs to team b".into(),
            }],
        );
    }
    s
}

fn view(board: &Board, id: &UnitId) -> UnitView {
    board
        .units()
        .into_iter()
        .find(|u| u.team == id.team.0 && u.cluster == id.cluster.0)
        .expect("unit on the board")
}

/// Reports as the daemon's report loop hands them on.
fn report(board: &Board, r: &UnitResult) -> UnitState {
    let shown = board.with_render_failure(r, false);
    board.record(&shown, false);
    shown.state
}

#[test]
fn a_team_that_fails_to_render_stays_failed_while_its_last_good_state_is_resynced() {
    let board = Board::new();
    let shop = unit("shop", "prod");
    assert_eq!(
        report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1")),
        UnitState::Synced
    );

    // The newest commit breaks the team: Failed at once, on the cluster it runs on only.
    let failed = board
        .rendered(
            &render("bbbbbbb2", Some("shop")),
            &["prod".into(), "dev".into()],
        )
        .failed;
    assert_eq!(failed, std::slice::from_ref(&shop));
    let v = view(&board, &shop);
    assert_eq!(v.state, "Failed");
    let error = v.last_error.expect("render error shown");
    assert!(error.contains("render failed at bbbbbbb"), "{error}");
    assert!(error.contains("teams/shop/app.yaml:3:21"), "{error}");

    // A resync of the last good state (drift, the periodic pass) does not hide it.
    assert_eq!(
        report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1")),
        UnitState::Failed
    );
    let v = view(&board, &shop);
    assert_eq!(
        (v.state.as_str(), v.revision.as_str()),
        ("Failed", "aaaaaaa1")
    );
    assert!(
        v.last_error
            .is_some_and(|e| e.contains("teams/shop/app.yaml:3:21"))
    );

    // A commit that renders again clears it with the next sync.
    assert!(
        board
            .rendered(&render("ccccccc3", None), &["prod".into()])
            .failed
            .is_empty()
    );
    assert_eq!(
        report(&board, &UnitResult::new(shop.clone(), "ccccccc3")),
        UnitState::Synced
    );
    assert_eq!(view(&board, &shop).last_error, None);
}

#[test]
fn each_unit_of_a_team_that_fails_to_render_shows_its_own_clusters_error() {
    let spec = |cluster: &str, line: u64| Diagnostic {
        file: "teams/data/pipeline.yaml".into(),
        line,
        column: 3,
        team: Some(TeamName("data".into())),
        cluster: Some(cluster.into()),
        severity: Severity::Error,
        rule: "invalid-spec".into(),
        message: format!("Topic clickstream on {cluster}: spec.partitions must be an integer"),
    };
    let everywhere = Diagnostic {
        cluster: None,
        rule: "namespace-not-owned".into(),
        message: "ConfigMap in namespace b, which belongs to team b".into(),
        ..spec("any", 20)
    };
    let mut state = render("bbbbbbb2", None);
    state.failed_teams.insert(
        TeamName("data".into()),
        vec![
            spec("staging", 6),
            spec("prod", 6),
            everywhere.clone(),
            everywhere,
        ],
    );
    let clusters = ["staging".into(), "prod".into(), "dev".into()];
    board_errors(&state, &clusters, |cluster, error| match cluster {
        "staging" | "prod" => {
            assert!(
                error.contains(&format!("Topic clickstream on {cluster}:")),
                "{error}"
            );
            assert!(error.ends_with("(and 1 more error)"), "{error}");
        }
        _ => {
            assert!(error.contains("belongs to team b"), "{error}");
            assert!(!error.contains("more error"), "{error}");
        }
    });

    // A unit with no error of its own still fails with its team, and says why.
    let mut state = render("bbbbbbb2", None);
    state
        .failed_teams
        .insert(TeamName("data".into()), vec![spec("staging", 6)]);
    board_errors(&state, &clusters[..2], |_, error| {
        assert!(error.contains("Topic clickstream on staging:"), "{error}");
    });
}

fn board_errors(state: &DesiredState, clusters: &[String], check: impl Fn(&str, &str)) {
    let board = Board::new();
    let failed = board.rendered(state, clusters).failed;
    assert_eq!(failed.len(), clusters.len());
    for id in failed {
        let error = view(&board, &id).last_error.expect("render error shown");
        check(&id.cluster.0, &error);
        // The same message after a resync of the last good state.
        let resync = UnitResult::new(id.clone(), "aaaaaaa1");
        let shown = board.with_render_failure(&resync, false);
        assert_eq!(shown.message.as_deref(), Some(error.as_str()));
    }
}

#[test]
fn a_resync_that_changes_nothing_keeps_the_summary_of_what_the_revision_did() {
    let board = Board::new();
    let shop = unit("shop", "prod");
    let key = |name: &str| crate::desired::ObjectKey {
        group: String::new(),
        kind: "ConfigMap".into(),
        namespace: "shop".into(),
        name: name.into(),
    };
    let mut first = UnitResult::new(shop.clone(), "aaaaaaa1");
    first.created = vec![key("a"), key("b")];
    first.pruned = vec![key("old")];
    report(&board, &first);
    let did = "applied 2 (+2 ~0), pruned 1";
    assert_eq!(view(&board, &shop).summary, did);

    let mut resync = UnitResult::new(shop.clone(), "aaaaaaa1");
    resync.unchanged = 2;
    report(&board, &resync);
    assert_eq!(view(&board, &shop).summary, did);

    // A new revision that changes nothing here says so.
    let mut next = UnitResult::new(shop.clone(), "bbbbbbb2");
    next.unchanged = 2;
    report(&board, &next);
    assert_eq!(view(&board, &shop).summary, "applied 2 (+0 ~0), pruned 0");

    // After a failure, the quiet retry that recovers replaces the failure's summary.
    let mut failed = UnitResult::new(shop.clone(), "bbbbbbb2");
    failed.unchanged = 2;
    failed.message_for_tests("cannot reach the cluster");
    failed.errors.push(crate::sync::ObjectError {
        object: "ConfigMap shop/a".into(),
        message: "cannot reach the cluster".into(),
    });
    failed.state = UnitState::Failed;
    report(&board, &failed);
    assert_eq!(
        view(&board, &shop).summary,
        "applied 2 (+0 ~0), pruned 0, 1 errors"
    );
    report(&board, &next);
    assert_eq!(view(&board, &shop).summary, "applied 2 (+0 ~0), pruned 0");
    assert_eq!(view(&board, &shop).state, "Synced");
}

#[test]
fn a_new_team_that_fails_to_render_shows_on_every_cluster_and_a_removal_is_not_rewritten() {
    let board = Board::new();
    let failed = board
        .rendered(
            &render("bbbbbbb2", Some("new")),
            &["prod".into(), "dev".into()],
        )
        .failed;
    assert_eq!(failed, [unit("new", "prod"), unit("new", "dev")]);
    let removal = UnitResult::new(unit("new", "prod"), "bbbbbbb2");
    assert_eq!(
        board.with_render_failure(&removal, true).state,
        UnitState::Synced
    );

    // When its team.yaml reads, only the clusters it names.
    let board = Board::new();
    let mut state = render("bbbbbbb2", Some("new"));
    state
        .failed_team_clusters
        .insert(TeamName("new".into()), vec![ClusterName("dev".into())]);
    let failed = board
        .rendered(&state, &["prod".into(), "dev".into()])
        .failed;
    assert_eq!(failed, [unit("new", "dev")]);
}

/// Once the new team renders, only the clusters it runs on stay on the board: a Failed
/// unit nobody will ever sync would page on-call for good.
#[test]
fn a_new_team_that_renders_again_leaves_the_clusters_it_does_not_run_on() {
    let board = Board::new();
    let clusters = ["prod".into(), "dev".into()];
    board.rendered(&render("bbbbbbb2", Some("new")), &clusters);
    // A unit synced once stays until its removal is reported.
    assert_eq!(
        report(&board, &UnitResult::new(unit("shop", "dev"), "aaaaaaa1")),
        UnitState::Synced
    );
    let mut state = render("ccccccc3", None);
    state.units.insert(
        unit("new", "dev"),
        UnitDesired {
            unit: unit("new", "dev"),
            namespaces: vec!["new".into()],
            objects: Vec::new(),
            prune: PrunePolicy::default(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: Default::default(),
        },
    );
    let r = board.rendered(&state, &clusters);
    assert!(r.failed.is_empty());
    assert_eq!(r.dropped, [unit("new", "prod")]);
    // Still showing the failure until its first sync.
    assert!(board.state_of(&unit("new", "dev")).is_some());
    assert_eq!(
        board.state_of(&unit("shop", "dev")),
        Some(BoardState::Synced)
    );
    assert_eq!(board.state_of(&unit("new", "prod")), None);
}

#[test]
fn a_drift_failure_shows_on_its_unit_until_a_sync_ends_synced() {
    let board = Board::new();
    let shop = unit("shop", "prod");
    report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1"));
    report(&board, &UnitResult::new(unit("blog", "prod"), "aaaaaaa1"));
    assert_eq!(board.units_on(&ClusterName("prod".into())).len(), 2);
    board.drift_failed(
        &shop,
        "the watch of ConfigMap failed (retrying): gone".into(),
    );
    assert_eq!(
        view(&board, &shop).drift_error.as_deref(),
        Some("the watch of ConfigMap failed (retrying): gone")
    );
    assert_eq!(view(&board, &unit("blog", "prod")).drift_error, None);

    let mut failed = UnitResult::new(shop.clone(), "aaaaaaa1");
    failed.state = UnitState::Failed;
    report(&board, &failed);
    assert!(
        view(&board, &shop).drift_error.is_some(),
        "a failed sync fixes nothing"
    );
    report(&board, &UnitResult::new(shop.clone(), "aaaaaaa1"));
    assert_eq!(view(&board, &shop).drift_error, None);
}

#[test]
fn a_unit_a_rollout_stage_holds_with_nothing_to_run_does_not_keep_the_daemon_unready() {
    let board = Board::new();
    board.set_leading(true);
    let (staging, prod) = (unit("shop", "staging"), unit("shop", "prod"));
    let mut state = render("r1", None);
    for id in [&staging, &prod] {
        state.units.insert(
            id.clone(),
            UnitDesired {
                unit: id.clone(),
                namespaces: vec!["shop".into()],
                objects: Vec::new(),
                prune: PrunePolicy::default(),
                adopt: Vec::new(),
                dependencies: Default::default(),
                components: Default::default(),
            },
        );
    }
    board.rendered(&state, &["staging".into(), "prod".into()]);
    report(&board, &UnitResult::new(staging, "r1"));
    assert!(!board.ready(), "prod has not been attempted");
    board.held_back(&prod, "waiting for staging to sync and soak 10m");
    assert!(board.ready());
    let shown = view(&board, &prod);
    assert_eq!(shown.state, "Pending");
    assert_eq!(shown.summary, "waiting for staging to sync and soak 10m");
}

/// A `deny` policy stops a team on one cluster: Failed there, its unit on the other
/// cluster syncs and reports as itself.
#[test]
fn a_team_denied_on_one_cluster_is_failed_there_alone() {
    let board = Board::new();
    let clusters = ["prod".into(), "staging".into()];
    for c in ["prod", "staging"] {
        report(&board, &UnitResult::new(unit("shop", c), "aaaaaaa1"));
    }
    let mut state = render("bbbbbbb2", Some("shop"));
    state
        .failed_teams
        .get_mut(&TeamName("shop".into()))
        .expect("failed")[0]
        .cluster = Some("prod".into());
    state.units.insert(
        unit("shop", "staging"),
        UnitDesired {
            unit: unit("shop", "staging"),
            namespaces: vec!["shop".into()],
            objects: Vec::new(),
            prune: PrunePolicy::default(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: Default::default(),
        },
    );
    let r = board.rendered(&state, &clusters);
    assert_eq!(r.failed, [unit("shop", "prod")]);
    assert_eq!(
        report(
            &board,
            &UnitResult::new(unit("shop", "staging"), "bbbbbbb2")
        ),
        UnitState::Synced
    );
    assert_eq!(
        report(&board, &UnitResult::new(unit("shop", "prod"), "aaaaaaa1")),
        UnitState::Failed
    );
}
