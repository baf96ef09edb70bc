//! One view across shard replicas: three real `pontoon run` processes with three shards on
//! two control planes, a platform whose component `operator` a Kind `requires`, and a
//! dependent team in every shard, so most of them live on replicas that do not sync the
//! `platform` unit. Those replicas read the component's health from the `platform` Unit's
//! status: a dependent waits with the component's own reason, and syncs once the
//! component turns healthy. The platform repo lives in a real Gitea where each replica
//! posts with a token of its own user, so each commit status names the replica that
//! posted it: each unit's status comes from the replica syncing it, and the per-cluster
//! summary from the one holding the `platform` team's shard alone, counting every unit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use pontoon::daemon::shards::shard_of;
use pontoon::desired::PLATFORM_UNIT;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea::{self, Gitea};
use crate::units::{condition, unit};

const SHARDS: u32 = 3;
const REPLICAS: [&str; 3] = ["r0", "r1", "r2"];

/// A `pontoon run` replica; killed when dropped.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    one: &'static ControlPlane,
    two: &'static ControlPlane,
    gitea: &'static Gitea,
    tmp: PathBuf,
    work: PathBuf,
    repo: String,
    system: String,
    lease: String,
    id: String,
    /// One team in each shard, each with an instance of the Kind that requires the
    /// component.
    teams: Vec<String>,
}

impl Setup {
    /// The Gitea user replica `r` posts as.
    fn user(&self, r: &str) -> String {
        format!("{}-{r}", self.id)
    }

    fn start(&self, identity: &str) -> Replica {
        let dir = self.tmp.join(identity);
        let owner = self.gitea.user();
        let config = DaemonConfig::git(
            &format!("{}/{owner}/{}.git", self.gitea.url(), self.repo),
            &dir.join("cache"),
        )
        .git_token(owner, "git-token")
        .gitea_statuses(
            &format!("{}/api/v1", self.gitea.url()),
            &format!("{owner}/{}", self.repo),
            "status-token",
        )
        .cluster(self.one.name, &self.one.kubeconfig)
        .cluster(self.two.name, &self.two.kubeconfig)
        .inventory_namespace(&self.system)
        .leader_election(self.one.name, &self.lease, "3s")
        .shards(SHARDS);
        let path = config.write(&dir);
        let log = std::fs::File::create(dir.join("pontoon.log")).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(["run", "--config"])
            .arg(&path)
            .env("POD_NAME", identity)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pontoon run");
        Replica(child)
    }
}

/// A team in each shard (none of them `platform`'s own shard twice).
fn teams(prefix: &str) -> Vec<String> {
    let mut per = BTreeMap::<u32, String>::new();
    for i in 0.. {
        let team = format!("{prefix}t{i}");
        per.entry(shard_of(&team, SHARDS)).or_insert(team);
        if per.len() == SHARDS as usize {
            break;
        }
    }
    per.into_values().collect()
}

/// The platform alone, with no team and no component: what the replicas start on.
fn write_platform(s: &Setup) {
    write(
        &s.work,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters:\n    - {{name: {}, labels: {{env: prod}}}}\n    - {{name: {}, labels: {{env: prod}}}}\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n",
            s.one.name, s.two.name
        ),
    );
}

/// The component, the Kind that requires it and the teams with an instance each.
fn write_repo(s: &Setup) {
    let (root, id) = (&s.work, &s.id);
    write(
        root,
        "components/operator.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: operator}}\nspec:\n  clusters: {{matchLabels: {{env: prod}}}}\n  namespace: {id}-ops\n  source: {{manifests: {{path: components/operator}}}}\n"
        ),
    );
    write(
        root,
        "components/operator/operator.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {id}-ops}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: operator}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: operator}}}}\n  template:\n    metadata: {{labels: {{app: operator}}}}\n    spec: {{containers: [{{name: operator, image: operator:1}}]}}\n"
        ),
    );
    write(
        root,
        "kinds/database.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Database}\nspec:\n  requires: [operator]\n  resources:\n    - id: db\n      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-db\"}, data: {v: \"1\"}}\n",
    );
    for team in &s.teams {
        write(
            root,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{}, {}]}}\n",
                s.one.name, s.two.name
            ),
        );
        write(
            root,
            &format!("teams/{team}/app.yaml"),
            "apiVersion: pontoon.dev/v1alpha1\nkind: Database\nmetadata: {name: ledger}\n",
        );
    }
}

/// A Gitea user per replica, allowed to write the repository, with a token of its own
/// beside the replica's config (and the admin's token for git).
async fn replica_users(s: &Setup) {
    let admin = s.gitea.user();
    for r in REPLICAS {
        let user = s.user(r);
        let password = format!("pw-{user}-secret");
        let created = s
            .gitea
            .api(Method::POST, "/admin/users")
            .json(
                &json!({"username": user, "email": format!("{user}@example.com"),
                          "password": password, "must_change_password": false}),
            )
            .send()
            .await
            .expect("create user");
        assert!(created.status().is_success(), "user {user}: {created:?}");
        let added = s
            .gitea
            .api(
                Method::PUT,
                &format!("/repos/{admin}/{}/collaborators/{user}", s.repo),
            )
            .json(&json!({"permission": "write"}))
            .send()
            .await
            .expect("collaborator");
        assert!(
            added.status().is_success(),
            "collaborator {user}: {added:?}"
        );
        let token: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/users/{user}/tokens", s.gitea.url()))
            .basic_auth(&user, Some(&password))
            .json(&json!({"name": "pontoon", "scopes": ["write:repository"]}))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        let token = token["sha1"]
            .as_str()
            .unwrap_or_else(|| panic!("token of {user}: {token}"));
        let dir = s.tmp.join(r);
        std::fs::create_dir_all(&dir).expect("replica dir");
        std::fs::write(dir.join("status-token"), token).expect("token");
        std::fs::write(dir.join("git-token"), s.gitea.token()).expect("token");
    }
}

/// Who holds each shard Lease now.
async fn holders(s: &Setup) -> Vec<Option<String>> {
    crate::shards::lease_holders(s.one, &s.system, &s.lease, SHARDS).await
}

/// Writes the operator Deployment's status as its controller would once it rolled out.
async fn roll_out_operator(cp: &ControlPlane, ns: &str) {
    let api: Api<Deployment> = Api::namespaced(cp.client().await, ns);
    let status = json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                                   "readyReplicas": 1, "availableReplicas": 1}});
    api.patch_status("operator", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("operator status");
}

/// Every status Gitea holds for `sha` (each post is one), oldest first.
async fn all_statuses(s: &Setup, sha: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let path = format!(
            "/repos/{}/{}/statuses/{sha}?limit=50&page={page}&sort=oldest",
            s.gitea.user(),
            s.repo
        );
        let got: Vec<Value> = s
            .gitea
            .api(Method::GET, &path)
            .send()
            .await
            .expect("statuses")
            .json()
            .await
            .expect("statuses json");
        if got.is_empty() {
            break;
        }
        out.extend(got);
    }
    out
}

fn field<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    path.iter().fold(v, |v, f| &v[*f]).as_str().unwrap_or("")
}

async fn setup() -> Setup {
    let (one, two) = (control_plane::shared(), control_plane::second());
    let tmp = tempfile::tempdir().expect("tempdir").keep();
    let system = unique_name("view-system");
    let namespaces: Api<Namespace> = Api::all(one.client().await);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": system}})).expect("ns"),
        )
        .await
        .expect("the daemon's namespace");
    let gitea = gitea::shared();
    let id = unique_name("view");
    let repo = id.clone();
    gitea.create_repo(&repo).await;
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).expect("work tree");
    let s = Setup {
        one,
        two,
        gitea,
        work,
        repo,
        system,
        lease: unique_name("pontoon"),
        teams: teams(&format!("{id}-")),
        id,
        tmp,
    };
    write_platform(&s);
    git(&s.work, &["init", "-q"]);
    git(&s.work, &["add", "-A"]);
    git(&s.work, &["commit", "-q", "-m", "platform"]);
    gitea.push(&s.work, &s.repo, "main");
    replica_users(&s).await;
    s
}

/// The Unit of `team` on `cp`: (Ready status, reason, message, revision).
async fn unit_state(s: &Setup, cp: &ControlPlane, team: &str) -> Option<(String, Value)> {
    let u = unit(cp, &s.system, team).await?;
    let (ready, reason, message) = condition(&u, "Ready")?;
    Some((format!("{ready} {reason}: {message}"), u))
}

#[tokio::test]
async fn replicas_read_component_health_and_one_posts_each_clusters_whole_summary() {
    let s = setup().await;
    let replicas: Vec<Replica> = REPLICAS.iter().map(|r| s.start(r)).collect();
    let by_shard: Vec<String> =
        eventually("one shard per replica", Duration::from_secs(90), || async {
            let h = holders(&s).await;
            let held: std::collections::BTreeSet<&String> = h.iter().flatten().collect();
            (held.len() == REPLICAS.len()).then(|| h.into_iter().flatten().collect())
        })
        .await;
    // The component and the teams come once the shards are shared out, so that each unit
    // of the commit is synced and posted by the replica holding it now.
    write_repo(&s);
    git(&s.work, &["add", "-A"]);
    git(&s.work, &["commit", "-q", "-m", "component and teams"]);
    s.gitea.push(&s.work, &s.repo, "main");
    let head = git(&s.work, &["rev-parse", "HEAD"]);
    let platform_holder = by_shard[shard_of(PLATFORM_UNIT, SHARDS) as usize].clone();
    let away: Vec<&String> = s
        .teams
        .iter()
        .filter(|t| by_shard[shard_of(t, SHARDS) as usize] != platform_holder)
        .collect();
    assert!(away.len() >= 2, "teams {:?} on {by_shard:?}", s.teams);
    let ops = format!("{}-ops", s.id);

    // The component is not healthy yet: the platform Unit says why, and a dependent on
    // another replica waits with that reason, not for a platform unit it cannot see.
    for cp in [s.one, s.two] {
        let reason = eventually(
            "the platform Unit naming the operator's health",
            Duration::from_secs(120),
            || async {
                let (_, u) = unit_state(&s, cp, PLATFORM_UNIT).await?;
                let c = &u["status"]["components"]["operator"];
                (c["healthy"] == false && c["revision"] == head.as_str())
                    .then(|| field(c, &["reason"]).to_owned())
            },
        )
        .await;
        assert!(reason.contains("operator"), "{reason}");
        let waiting = eventually(
            "a dependent on another replica waiting for the component",
            Duration::from_secs(60),
            || async {
                let (state, u) = unit_state(&s, cp, away[0]).await?;
                (u["status"]["revision"] == head.as_str() && state.contains("Progressing"))
                    .then_some(state)
            },
        )
        .await;
        assert!(
            waiting.contains("waiting for component operator")
                && !waiting.contains("has not synced it yet"),
            "{waiting}"
        );
        let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, away[0]);
        assert!(
            cms.get_opt("ledger-db").await.expect("get").is_none(),
            "applied before its component is healthy"
        );
    }

    // The component rolls out: every unit on both clusters syncs, wherever it runs.
    for cp in [s.one, s.two] {
        roll_out_operator(cp, &ops).await;
    }
    for cp in [s.one, s.two] {
        for team in s.teams.iter().map(String::as_str).chain([PLATFORM_UNIT]) {
            eventually(
                &format!("{team} Ready on {}", cp.name),
                Duration::from_secs(120),
                || async {
                    let (state, u) = unit_state(&s, cp, team).await?;
                    (state.starts_with("True Synced") && u["status"]["revision"] == head.as_str())
                        .then_some(())
                },
            )
            .await;
        }
        for team in &s.teams {
            let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, team);
            assert!(
                cms.get_opt("ledger-db").await.expect("get").is_some(),
                "{team}'s instance on {}",
                cp.name
            );
        }
    }

    // One summary per cluster, whole, by the platform shard's holder alone; each unit's
    // own status by the replica that syncs it.
    let units = s.teams.len() + 1;
    let whole = format!("{units}/{units} teams synced");
    let statuses = eventually(
        "each cluster's summary no longer pending",
        Duration::from_secs(60),
        || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let all = all_statuses(&s, &head).await;
            let done = [s.one, s.two].iter().all(|cp| {
                let context = format!("pontoon/{}", cp.name);
                all.iter()
                    .rfind(|st| st["context"] == context.as_str())
                    .is_some_and(|st| st["status"] != "pending")
            });
            done.then_some(all)
        },
    )
    .await;
    let shown: Vec<String> = statuses
        .iter()
        .map(|st| {
            format!(
                "{} {} {} by {}",
                field(st, &["context"]),
                field(st, &["status"]),
                field(st, &["description"]),
                field(st, &["creator", "login"])
            )
        })
        .collect();
    for cp in [s.one, s.two] {
        let context = format!("pontoon/{}", cp.name);
        let summaries: Vec<&Value> = statuses
            .iter()
            .filter(|st| st["context"] == context.as_str())
            .collect();
        for st in &summaries {
            assert_eq!(
                field(st, &["creator", "login"]),
                s.user(&platform_holder),
                "a summary not by the platform shard's holder: {shown:#?}"
            );
            assert!(
                field(st, &["description"]).contains(&format!("/{units} teams synced")),
                "a summary that does not count every unit: {shown:#?}"
            );
        }
        let finished: Vec<&str> = summaries
            .iter()
            .filter(|st| st["status"] != "pending")
            .map(|st| field(st, &["description"]))
            .collect();
        assert_eq!(finished, [whole.as_str()], "{shown:#?}");
        for team in &s.teams {
            let context = format!("pontoon/{}/{team}", cp.name);
            let writer = s.user(&by_shard[shard_of(team, SHARDS) as usize]);
            let posted: Vec<&Value> = statuses
                .iter()
                .filter(|st| st["context"] == context.as_str())
                .collect();
            assert!(!posted.is_empty(), "no status for {context}: {shown:#?}");
            for st in posted {
                assert_eq!(field(st, &["creator", "login"]), writer, "{shown:#?}");
            }
        }
    }
    drop(replicas);
    let _ = std::fs::remove_dir_all(&s.tmp);
}
