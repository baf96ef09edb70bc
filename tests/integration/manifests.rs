//! Manifests mean on the cluster what they mean to kubectl, and nothing a team's folder
//! holds vanishes silently: each test syncs a one-team platform repo with `pontoon sync
//! --once` against the real apiserver and reads the live objects back.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, PodTemplate};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;

use crate::support::control_plane::{self, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

const PLATFORM: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: m}\nspec:\n  clusters: [{name: m}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}, {group: \"\", kind: PodTemplate}]\n";

const SETTINGS: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n";

/// What one run of the binary printed, and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}", self.code, self.stdout)
    }
}

fn pontoon(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .output()
        .expect("run pontoon");
    Run {
        code: out.status.code(),
        stdout: format!(
            "{}--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A platform repo of one team (namespace = team name) on the shared control plane, its
/// inventories in a namespace of their own.
struct OneTeam {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    config: PathBuf,
    team: String,
}

impl OneTeam {
    fn new(prefix: &str, owners: &str) -> OneTeam {
        let cp = control_plane::shared();
        let team = unique_name(prefix);
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("platform");
        write(&repo, "platform.yaml", PLATFORM);
        write(
            &repo,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [m]}}\n  owners: [{owners}]\n"
            ),
        );
        let config = DaemonConfig::dir(&repo)
            .cluster("m", &cp.kubeconfig)
            .inventory_namespace(&format!("{team}-pontoon"))
            .write(tmp.path());
        OneTeam {
            tmp,
            repo,
            config,
            team,
        }
    }

    /// Writes a file of the team's folder.
    fn file(&self, name: &str, text: &str) {
        write(&self.repo, &format!("teams/{}/{name}", self.team), text);
    }

    fn sync(&self) -> Run {
        pontoon(&[
            "sync",
            "--config",
            self.config.to_str().expect("utf-8"),
            "--once",
        ])
    }

    fn validate(&self) -> Run {
        pontoon(&["validate", self.repo.to_str().expect("utf-8")])
    }

    async fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(control_plane::shared().client().await, &self.team)
    }
}

/// A team file turned into a symlink: `validate` fails naming it, and the sync neither
/// renders the team nor prunes the file's objects.
#[tokio::test]
async fn a_symlinked_team_file_fails_validate_and_prunes_nothing() {
    let t = OneTeam::new("mf-symlink", "alice");
    t.file("app.yaml", SETTINGS);
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");
    let cms: Api<ConfigMap> = t.api().await;
    assert!(cms.get_opt("settings").await.expect("get").is_some());

    // The same manifest, now a symlink to a file outside the repo.
    let outside = t.tmp.path().join("settings.yaml");
    std::fs::write(&outside, SETTINGS).expect("write");
    let link = t.repo.join(format!("teams/{}/app.yaml", t.team));
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");

    let r = t.validate();
    assert_eq!(r.code, Some(1), "{r}");
    let want = format!(
        "teams/{0}/app.yaml:1:1: error[skipped-file]: team {0}: teams/{0}/app.yaml is not read (symlink, not followed)",
        t.team
    );
    assert!(r.stdout.contains(&want), "{r}");

    let r = t.sync();
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("render failed"), "{r}");
    let left = cms.get_opt("settings").await.expect("get");
    assert!(
        left.is_some(),
        "the symlinked file's ConfigMap was pruned: {r}"
    );
}

/// Unquoted `0400`, `0444`, `0755` and `0x1FF` are octal and hex as kubectl sends them:
/// the live `defaultMode`s equal those of the same manifest applied by the real kubectl.
#[tokio::test]
async fn octal_modes_reach_the_cluster_as_kubectl_sends_them() {
    let t = OneTeam::new("mf-octal", "alice");
    let template = |name: &str| {
        format!(
            "apiVersion: v1\nkind: PodTemplate\nmetadata: {{name: {name}}}\ntemplate:\n  spec:\n    containers: [{{name: app, image: app:1}}]\n    volumes:\n      - {{name: a, secret: {{secretName: s, defaultMode: 0400}}}}\n      - {{name: b, configMap: {{name: c, defaultMode: 0444}}}}\n      - {{name: c, configMap: {{name: c, defaultMode: 0755}}}}\n      - {{name: d, configMap: {{name: c, defaultMode: 0x1FF}}}}\n"
        )
    };
    t.file("pods.yaml", &template("by-pontoon"));
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");

    let by_kubectl = t.tmp.path().join("by-kubectl.yaml");
    std::fs::write(&by_kubectl, template("by-kubectl")).expect("write");
    let out = control_plane::shared().kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=kubectl-test",
        "-n",
        &t.team,
        "-f",
        by_kubectl.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let templates: Api<PodTemplate> = t.api().await;
    let modes = |p: PodTemplate| -> Vec<Option<i32>> {
        p.template
            .and_then(|t| t.spec)
            .map(|s| s.volumes.unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                v.secret
                    .and_then(|s| s.default_mode)
                    .or(v.config_map.and_then(|c| c.default_mode))
            })
            .collect()
    };
    let ours = modes(templates.get("by-pontoon").await.expect("get"));
    assert_eq!(ours, [Some(0o400), Some(0o444), Some(0o755), Some(0o777)]);
    assert_eq!(ours, modes(templates.get("by-kubectl").await.expect("get")));
}

/// A `*.json` file in a team folder is applied, as kubectl applies it.
#[tokio::test]
async fn json_manifests_in_a_team_folder_are_applied() {
    let t = OneTeam::new("mf-json", "alice");
    t.file(
        "settings.json",
        "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\",\n  \"metadata\": {\"name\": \"from-json\"},\n  \"data\": {\"colour\": \"green\"}\n}\n",
    );
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");
    let cms: Api<ConfigMap> = t.api().await;
    let cm = cms.get_opt("from-json").await.expect("get");
    let colour = cm
        .and_then(|c| c.data)
        .and_then(|d| d.get("colour").cloned());
    assert_eq!(colour.as_deref(), Some("green"), "{r}");
}

/// A `kind: List` is applied item by item, each item stamped as the team's.
#[tokio::test]
async fn a_list_is_applied_item_by_item() {
    let t = OneTeam::new("mf-list", "alice");
    t.file(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: one}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: two}\n",
    );
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");
    let cms: Api<ConfigMap> = t.api().await;
    for name in ["one", "two"] {
        let cm = cms.get_opt(name).await.expect("get");
        let team = cm
            .and_then(|c| c.metadata.labels)
            .and_then(|l| l.get(pontoon::desired::LABEL_TEAM).cloned());
        assert_eq!(team.as_deref(), Some(t.team.as_str()), "{name}: {r}");
    }
}

/// `metadata.labels: null` is stamped like no labels: the live object is pontoon's, and
/// the next sync finds it rather than creating it again.
#[tokio::test]
async fn null_labels_are_stamped_and_found_by_the_next_sync() {
    let t = OneTeam::new("mf-null", "alice");
    t.file(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, labels: null, annotations: null}\ndata: {colour: blue}\n",
    );
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");
    let cms: Api<ConfigMap> = t.api().await;
    let labels = cms
        .get("settings")
        .await
        .expect("get")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels
            .get(pontoon::desired::LABEL_MANAGED_BY)
            .map(String::as_str),
        Some(pontoon::desired::MANAGED_BY_VALUE),
        "{labels:?}"
    );
    let r = t.sync();
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("(+0 ~0)"), "nothing created again: {r}");
}

/// An owner with a `system:` name is refused: the team does not render, and nothing binds
/// that name to `admin` in its namespace.
#[tokio::test]
async fn a_system_owner_is_refused_and_bound_nowhere() {
    let t = OneTeam::new("mf-owner", "alice, \"system:authenticated\"");
    t.file("app.yaml", SETTINGS);
    let r = t.validate();
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout.contains(&format!(
            "teams/{0}/team.yaml:7:19: error[owner-reserved]: team {0}: owner \"system:authenticated\"",
            t.team
        )),
        "{r}"
    );
    let r = t.sync();
    assert_eq!(r.code, Some(1), "{r}");
    let bindings: Api<RoleBinding> = t.api().await;
    let bound = bindings.list(&Default::default()).await.expect("list");
    let names: Vec<String> = bound
        .items
        .iter()
        .flat_map(|b| b.subjects.iter().flatten().map(|s| s.name.clone()))
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("system:")),
        "{names:?}: {r}"
    );
}
