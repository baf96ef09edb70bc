//! `pontoon plan` and pull-request plans end to end: a repository rendered and planned by
//! the command, or fetched, rendered and planned as the daemon plans a pull request, and
//! their dry runs counted in the apiserver's audit log.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use pontoon::desired::ClusterName;

use super::assert_synced;
use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

/// `pontoon <args> --config FILE`: its exit code and what it printed.
fn pontoon(args: &[&str], config: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run pontoon");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

#[tokio::test]
async fn pontoon_plan_says_nothing_to_do_without_a_dry_run_and_holds_a_team_that_left() {
    let cp = control_plane::shared();
    let team = unique_name("plan-cli");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(
        &repo,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: plans}\nspec:\n  clusters: [{name: plans}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n",
    );
    write(
        &repo,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [plans]}}\n"
        ),
    );
    let app = |colour: &str| {
        write(
            &repo,
            &format!("teams/{team}/app.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{colour: {colour}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other}}\ndata: {{a: b}}\n"
            ),
        )
    };
    app("blue");
    // Inventories of their own, so no other test's team is a team removed from this repo.
    let config = DaemonConfig::dir(&repo)
        .cluster("plans", &cp.kubeconfig)
        .inventory_namespace(&format!("{team}-pontoon"))
        .write(tmp.path());
    let (code, out) = pontoon(&["sync", "--once"], &config);
    assert_eq!(code, Some(0), "{out}");

    let unchanged_at = Timestamp::now();
    let (code, out) = pontoon(&["plan"], &config);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("plans/{team}: +0 ~0 -0, nothing to do")),
        "{out}"
    );

    let changed_at = Timestamp::now();
    app("green");
    let (code, out) = pontoon(&["plan"], &config);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("plans/{team}: +0 ~1 -0")), "{out}");
    let changed = eventually(
        "the changed object's dry run in the audit log",
        Duration::from_secs(30),
        || async {
            Some(audit::dry_runs_in(cp.dir(), &team, changed_at)).filter(|d| !d.is_empty())
        },
    )
    .await;
    assert_eq!(changed.len(), 1, "{changed:#?}");
    let unchanged = audit::dry_runs_in(cp.dir(), &team, unchanged_at)
        .into_iter()
        .filter(|e| e.received() < changed_at)
        .count();
    assert_eq!(
        unchanged, 0,
        "pontoon plan of an unchanged repository sent dry runs"
    );

    // The team leaves the repo for another: its removal is planned, and held.
    std::fs::remove_dir_all(repo.join(format!("teams/{team}"))).expect("remove team");
    let newcomer = format!("{team}-new");
    write(
        &repo,
        &format!("teams/{newcomer}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {newcomer}}}\nspec:\n  namespaces: [{newcomer}]\n  clusters: {{names: [plans]}}\n"
        ),
    );
    let (code, out) = pontoon(&["plan"], &config);
    assert_eq!(code, Some(1), "{out}");
    for want in [
        format!("plans/{team} (left the repo): +0 ~0 -5 held"),
        "  held: this revision would delete 2 of the team's 2 objects".to_owned(),
        format!("  - ConfigMap {team}/settings"),
        format!("  = Namespace/{team} (kept: the platform does not let pontoon delete Namespaces"),
    ] {
        assert!(out.contains(&want), "missing {want:?} in {out}");
    }
}

/// A platform repo of one team on `cp` whose `app.yaml` holds a ConfigMap per
/// (name, value), the team in `namespaces` (a ConfigMap named `ns/name` goes into `ns`).
fn write_platform(
    work: &std::path::Path,
    cp: &ControlPlane,
    team: &str,
    namespaces: &[&str],
    cms: &[(&str, &str)],
) {
    write(
        work,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n",
            cp.name
        ),
    );
    write(
        work,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{}]\n  clusters: {{names: [{}]}}\n",
            namespaces.join(", "),
            cp.name
        ),
    );
    let app: Vec<String> = cms
        .iter()
        .map(|(name, value)| {
            let (ns, name) = name.split_once('/').unwrap_or((namespaces[0], name));
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{k: \"{value}\"}}\n")
        })
        .collect();
    write(work, &format!("teams/{team}/app.yaml"), &app.join("---\n"));
}

#[tokio::test]
async fn pull_request_plans_dry_run_only_what_they_change_and_name_a_held_unit() {
    use crate::support::git::git;
    use pontoon::daemon::pull_request_plans::plan_pull_request;
    use pontoon::source::git::{GitTarget, ResolvedAuth};
    use pontoon::source::webhook::PullRequest;
    use pontoon::status::State;

    let cp = control_plane::shared();
    let team = unique_name("plan-pr");
    let more = format!("{team}-more");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (work, bare) = (tmp.path().join("work"), tmp.path().join("remote.git"));
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    git(&work, &["checkout", "-q", "-b", "main"]);
    let commit = |message: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["rev-parse", "HEAD"]).trim().to_owned()
    };
    let four = [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")];
    write_platform(&work, cp, &team, &[&team], &four);
    let main = commit("four ConfigMaps");
    git(tmp.path(), &["clone", "-q", "--bare", "work", "remote.git"]);
    let push = |refname: &str| {
        let bare = bare.to_str().expect("utf-8 path");
        git(
            &work,
            &["push", "-q", "--force", bare, &format!("HEAD:{refname}")],
        );
    };
    let target = GitTarget {
        url: format!("file://{}", bare.display()),
        git_ref: pontoon::config::GitRef::Branch("main".into()),
        cache_dir: tmp.path().join("cache"),
        auth: ResolvedAuth::default(),
        timeout: Duration::from_secs(60),
    };
    // Inventories of their own: every other test's team would be a team that left.
    let cluster =
        pontoon::cluster::Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16)
            .expect("cluster");
    let options = pontoon::sync::SyncOptions {
        namespace: format!("{team}-pontoon"),
        ..pontoon::sync::SyncOptions::default()
    };
    let s = std::sync::Arc::new(pontoon::sync::Syncer::new(cluster.into(), options));
    let syncers = BTreeMap::from([(ClusterName(cp.name.into()), s.clone())]);
    let owners = pontoon::daemon::poll_and_render::namespace_owners(&syncers).await;
    // main, synced as the daemon would.
    let snapshot =
        pontoon::source::git::fetch_review(&target, "refs/heads/main", &main).expect("fetch main");
    let state = pontoon::daemon::poll_and_render::render(
        snapshot.into(),
        owners.clone(),
        &pontoon::desired::Owner::default(),
        &Default::default(),
        &Default::default(),
    )
    .await;
    for unit in state.units.values() {
        assert_synced(&s.sync(unit, &state.revision).await);
    }
    let plan = |number: u64, sha: String| {
        let (target, syncers, owners) = (&target, &syncers, owners.clone());
        async move {
            let pr = PullRequest {
                number,
                head_ref: format!("refs/pull/{number}/head"),
                sha,
                from_fork: false,
            };
            plan_pull_request(
                target,
                syncers,
                &[cp.name.to_owned()],
                &pr,
                owners,
                &Default::default(),
                &Default::default(),
            )
            .await
        }
    };

    // A pull request that changes one ConfigMap and adds a namespace with one in it.
    let before = Timestamp::now();
    write_platform(
        &work,
        cp,
        &team,
        &[&team, &more],
        &[
            ("a", "2"),
            ("b", "1"),
            ("c", "1"),
            ("d", "1"),
            (&format!("{more}/e"), "1"),
        ],
    );
    let head = commit("change a, add a namespace");
    push("refs/pull/1/head");
    let status = plan(1, head).await;
    assert_eq!(status.state, State::Success, "{status:?}");
    // The new namespace's Namespace, NetworkPolicy, Role, RoleBinding and ConfigMap.
    assert_eq!(status.description, format!("{} +5 ~1 -0", cp.name));
    let dry_runs = eventually(
        "the changed object's dry run in the audit log",
        Duration::from_secs(30),
        || async { Some(audit::dry_runs_in(cp.dir(), &team, before)).filter(|d| !d.is_empty()) },
    )
    .await;
    let names: Vec<String> = dry_runs
        .iter()
        .filter_map(|e| e.object_ref.as_ref().map(|o| o.name.clone()))
        .collect();
    assert_eq!(
        names,
        ["a"],
        "only what the pull request changes is dry-run"
    );
    let into_new: Vec<String> = audit::dry_runs_in(cp.dir(), &more, before)
        .iter()
        .map(audit::Event::describe)
        .collect();
    assert!(
        into_new.len() == 1 && into_new[0].contains("namespaces"),
        "only the new Namespace itself is dry-run: {into_new:#?}"
    );

    // One that drops three of the team's four ConfigMaps: the hold would stop it.
    git(&work, &["checkout", "-q", &main]);
    write_platform(&work, cp, &team, &[&team], &[("a", "1")]);
    let head = commit("drop three");
    push("refs/pull/2/head");
    let status = plan(2, head).await;
    assert_eq!(status.state, State::Failure, "{status:?}");
    assert!(
        status.description.starts_with(&format!(
            "{} +0 ~0 -3; {}/{team}: held: this revision would delete 3 of the team's 4 objects (75% > the platform's limit of 50%)",
            cp.name, cp.name
        )),
        "{status:?}"
    );

    // One that removes the team (another takes its place in the repo): the sync would
    // remove it, and the hold stops that too.
    git(&work, &["checkout", "-q", &main]);
    std::fs::remove_dir_all(work.join(format!("teams/{team}"))).expect("remove team");
    let newcomer = format!("{team}-new");
    write_platform(&work, cp, &newcomer, &[&newcomer], &[("a", "1")]);
    let head = commit("remove the team");
    push("refs/pull/3/head");
    let status = plan(3, head).await;
    assert_eq!(status.state, State::Failure, "{status:?}");
    assert!(
        status.description.contains(&format!(
            "{}/{team}: held: this revision would delete 4 of the team's 4 objects",
            cp.name
        )),
        "{status:?}"
    );
}
