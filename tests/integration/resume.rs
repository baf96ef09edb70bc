//! `pontoon resume --all` against two real control planes in two rollout stages
//! (`staging`, then `prod`), each with the platform's `platform` unit (a component a
//! team's Kind requires) and a team: the Units are resumed stage by stage, the platform
//! unit before the team, each wave only once the one before is Ready (the order read
//! from the apiservers' audit logs of writes), and a wave that fails stops the rest,
//! which stay suspended. And what a unit suspended with keepCorrecting runs until it is
//! resumed, after a restart: the revision its inventory records, drift put back to it.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::Kubeconfig;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;

/// Stages staging then prod; component `base` (a ConfigMap in `<id>-ops`) on both, which
/// Kind `Database` requires; team `<id>` on both with a Database and `settings`.
fn platform_repo(root: &Path, id: &str, value: &str) {
    write(
        root,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: staging}, {name: prod}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n  rollout:\n    stages:\n    - {name: staging, clusters: {names: [staging]}}\n    - {name: prod, clusters: {names: [prod]}}\n",
    );
    write(
        root,
        "components/base.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: base}}\nspec:\n  clusters: {{names: [staging, prod]}}\n  namespace: {id}-ops\n  source: {{manifests: {{path: components/base}}}}\n"
        ),
    );
    write(
        root,
        "components/base/base.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {id}-ops}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: base}}\ndata: {{value: \"{value}\"}}\n"
        ),
    );
    write(
        root,
        "kinds/database.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Database}\nspec:\n  requires: [base]\n  resources:\n    - id: db\n      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-db\"}, data: {v: \"1\"}}\n",
    );
    write(
        root,
        &format!("teams/{id}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {id}}}\nspec:\n  namespaces: [{id}]\n  clusters: {{names: [staging, prod]}}\n"
        ),
    );
    write(
        root,
        &format!("teams/{id}/app.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Database\nmetadata: {{name: ledger}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{\"{value}\": \"x\"}}\n"
        ),
    );
}

/// One kubeconfig with a context per cluster, named like it: what an operator holds.
fn kubeconfig(path: &Path, clusters: &[(&str, &ControlPlane)]) {
    let mut merged: Option<Kubeconfig> = None;
    for (name, cp) in clusters {
        let mut k = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
        for c in &mut k.clusters {
            c.name = (*name).to_owned();
        }
        for u in &mut k.auth_infos {
            u.name = format!("admin-{name}");
        }
        for c in &mut k.contexts {
            c.name = (*name).to_owned();
            if let Some(ctx) = c.context.as_mut() {
                ctx.cluster = (*name).to_owned();
                ctx.user = Some(format!("admin-{name}"));
            }
        }
        k.current_context = Some((*name).to_owned());
        merged = Some(match merged {
            None => k,
            Some(m) => m.merge(k).expect("merge kubeconfigs"),
        });
    }
    let text = serde_json::to_string(&merged).expect("kubeconfig json");
    std::fs::write(path, text).expect("write kubeconfig");
}

/// `pontoon ARGS` with `kubeconfig`; exit code and output.
async fn pontoon(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"));
    command.env("KUBECONFIG", kubeconfig).args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run pontoon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn value(cp: &ControlPlane, namespace: &str, name: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, namespace);
    let cm = cms.get_opt(name).await.expect("get")?;
    cm.data
        .and_then(|d| d.into_iter().next())
        .map(|(k, v)| if name == "settings" { k } else { v })
}

/// The Unit's `spec.suspend`, null when none.
async fn suspend_of(cp: &ControlPlane, ns: &str, name: &str) -> serde_json::Value {
    let u = crate::units::unit(cp, ns, name).await.expect("the Unit");
    u["spec"]["suspend"].clone()
}

/// Every Unit patch `pontoon resume` made in `ns` since `after`, across both clusters,
/// oldest first, as `cluster/unit`.
fn resumes(clusters: &[(&str, &ControlPlane)], ns: &str, after: jiff::Timestamp) -> Vec<String> {
    let mut seen = Vec::new();
    for (name, cp) in clusters {
        for e in audit::writes(cp.dir()) {
            let Some(o) = &e.object_ref else { continue };
            if o.resource == "units"
                && o.namespace == ns
                && e.verb == "patch"
                && e.request_uri.contains("fieldManager=pontoon-cli")
                && e.received() > after
            {
                seen.push((e.received(), format!("{name}/{}", o.name)));
            }
        }
    }
    seen.sort();
    seen.into_iter().map(|(_, u)| u).collect()
}

/// When pontoon first wrote an object in `ns` of `cp` after `after`.
fn first_apply(cp: &ControlPlane, ns: &str, after: jiff::Timestamp) -> jiff::Timestamp {
    audit::writes(cp.dir())
        .into_iter()
        .filter(|e| {
            e.touches_namespace(ns)
                && e.received() > after
                && e.user_agent.starts_with("pontoon")
                && !e.dry_run()
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource == "configmaps")
        })
        .map(|e| e.received())
        .min()
        .expect("pontoon applied in the namespace")
}

#[tokio::test]
async fn resume_all_goes_stage_by_stage_platform_first_and_a_failing_wave_stops_the_rest() {
    let (staging, prod) = (control_plane::shared(), control_plane::second());
    let clusters = [("staging", staging), ("prod", prod)];
    let tmp = tempfile::tempdir().expect("tempdir");
    let (id, ns) = (unique_name("resume"), unique_name("pontoon-resume"));
    let repo = tmp.path().join("repo");
    platform_repo(&repo, &id, "v1");
    let config = DaemonConfig::dir(&repo)
        .cluster("staging", &staging.kubeconfig)
        .cluster("prod", &prod.kubeconfig)
        .inventory_namespace(&ns)
        .resync_interval("2s")
        .write(tmp.path());
    let daemon = Daemon::start(&config);
    for (_, cp) in clusters {
        for unit in ["platform", id.as_str()] {
            eventually(
                &format!("{unit} Ready"),
                Duration::from_secs(120),
                || async {
                    let u = crate::units::unit(cp, &ns, unit).await?;
                    (crate::units::condition(&u, "Ready")?.0 == "True").then_some(())
                },
            )
            .await;
        }
    }
    let kube = tmp.path().join("kubeconfig");
    kubeconfig(&kube, &clusters);
    let config = config.to_str().expect("utf-8 path");

    // Everything suspended, then a commit: nothing takes it.
    for team in ["platform", id.as_str()] {
        let (code, out) = pontoon(
            &kube,
            &[
                "suspend", "--team", team, "--config", config, "--reason", "INC-7",
            ],
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    platform_repo(&repo, &id, "v2");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        value(prod, &format!("{id}-ops"), "base").await.as_deref(),
        Some("v1")
    );

    // Resumed in waves: staging's platform unit, staging's team, then prod's.
    let before = jiff::Timestamp::now();
    let (code, out) = pontoon(
        &kube,
        &[
            "resume",
            "--all",
            "--config",
            config,
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "resume order: 1. stage staging, platform (staging/platform); 2. stage staging, teams (staging/{id}); 3. stage prod, platform (prod/platform); 4. stage prod, teams (prod/{id})"
        )),
        "{out}"
    );
    let order = resumes(&clusters, &ns, before);
    assert_eq!(
        order,
        [
            "staging/platform".to_owned(),
            format!("staging/{id}"),
            "prod/platform".to_owned(),
            format!("prod/{id}"),
        ],
        "{out}"
    );
    // Each wave waited for the one before: staging's team applied v2 before prod's
    // platform unit was resumed.
    let staging_team_applied = first_apply(staging, &id, before);
    let prod_resumed = audit::writes(prod.dir())
        .into_iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "units" && o.namespace == ns)
                && e.request_uri.contains("fieldManager=pontoon-cli")
                && e.received() > before
        })
        .map(|e| e.received())
        .min()
        .expect("prod resumed");
    assert!(
        staging_team_applied < prod_resumed,
        "{staging_team_applied} vs {prod_resumed}"
    );
    assert_eq!(value(prod, &id, "settings").await.as_deref(), Some("v2"));
    assert_eq!(
        value(prod, &format!("{id}-ops"), "base").await.as_deref(),
        Some("v2")
    );

    // Suspended again, and a commit the API server refuses for the team: staging's team
    // fails, so prod stays suspended and keeps v2.
    for team in ["platform", id.as_str()] {
        let (code, out) = pontoon(
            &kube,
            &[
                "suspend", "--team", team, "--config", config, "--reason", "INC-8",
            ],
        )
        .await;
        assert_eq!(code, 0, "{out}");
    }
    platform_repo(&repo, &id, "bad key!");
    let (code, out) = pontoon(
        &kube,
        &[
            "resume",
            "--all",
            "--config",
            config,
            "--wait",
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "stopped at wave 2: staging/{id} not resumed Ready; left suspended: prod/platform, prod/{id}"
        )),
        "{out}"
    );
    assert!(suspend_of(staging, &ns, "platform").await.is_null());
    for unit in ["platform", id.as_str()] {
        assert_eq!(
            suspend_of(prod, &ns, unit).await["reason"],
            "INC-8",
            "prod/{unit}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        value(prod, &format!("{id}-ops"), "base").await.as_deref(),
        Some("v2")
    );
    daemon.finish().await;
}

/// A Service only the first commit of the keepCorrecting test has.
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n";

/// The one-cluster platform of the Unit tests, its teams allowed Services too.
fn services_allowed(work: &Path, cp: &ControlPlane) {
    let platform = crate::units::platform(cp.name).replace(
        "kind: ConfigMap}]",
        "kind: ConfigMap}, {group: \"\", kind: Service}]",
    );
    assert!(platform.contains("Service"), "{platform}");
    write(work, "platform.yaml", &platform);
}

/// The value of each key of the ConfigMap `settings` in `ns`.
async fn settings_data(cp: &ControlPlane, ns: &str) -> std::collections::BTreeMap<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, ns);
    let cm = cms.get("settings").await.expect("settings");
    cm.data.unwrap_or_default()
}

#[tokio::test]
async fn after_a_restart_a_unit_suspended_with_keep_correcting_corrects_drift_at_its_revision() {
    let cp = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (name, ns) = (unique_name("freeze"), unique_name("pontoon-freeze"));
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    crate::support::git::git(&work, &["init", "-q"]);
    crate::units::repo(&work, cp, &name, &crate::units::settings("first"));
    services_allowed(&work, cp);
    write(&work, &format!("teams/{name}/web.yaml"), SERVICE);
    crate::support::git::git(&work, &["add", "-A"]);
    crate::support::git::git(&work, &["commit", "-q", "-m", "first"]);
    // No resync in the test's time: what corrects drift is the drift watches.
    let config = DaemonConfig::git_file(&work, &tmp.path().join("cache"))
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&ns)
        .resync_interval("1h")
        .write(tmp.path());
    let daemon = Daemon::start(&config);
    eventually("the Unit Ready", Duration::from_secs(90), || async {
        let u = crate::units::unit(cp, &ns, &name).await?;
        (crate::units::condition(&u, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let (code, out) = pontoon(
        &cp.kubeconfig,
        &[
            "suspend",
            "--team",
            &name,
            "--cluster",
            cp.name,
            "--namespace",
            &ns,
            "--context",
            "local",
            "--reason",
            "INC-9",
            "--keep-correcting",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    eventually("the suspension seen", Duration::from_secs(30), || async {
        let u = crate::units::unit(cp, &ns, &name).await?;
        u["status"]["suspended"]["keepCorrecting"]
            .as_bool()?
            .then_some(())
    })
    .await;
    daemon.finish().await;

    // A commit while the daemon is down, then a new process: the unit keeps the first
    // revision and puts a hand edit back to it.
    crate::units::repo(&work, cp, &name, &crate::units::settings("second"));
    services_allowed(&work, cp);
    crate::support::git::git(&work, &["rm", "-q", &format!("teams/{name}/web.yaml")]);
    crate::support::git::git(
        &work,
        &["commit", "-q", "-am", "second, without the Service"],
    );
    let daemon = Daemon::start(&config);
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &name);
    cms.patch(
        "settings",
        &kube::api::PatchParams::apply("kubectl-edit").force(),
        &kube::api::Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"first": "by hand"}})),
    )
    .await
    .expect("hand edit");
    eventually(
        "the hand edit put back",
        Duration::from_secs(60),
        || async {
            (settings_data(cp, &name)
                .await
                .get("first")
                .map(String::as_str)
                == Some("x"))
            .then_some(())
        },
    )
    .await;
    // A kind only the revision it runs has (the newest dropped the Service) is watched
    // too: a hand edit there is put back as well.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cp.client().await, &name);
    services
        .patch(
            "web",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"selector": {"app": "by-hand"}}})),
        )
        .await
        .expect("hand edit of the Service");
    eventually("the Service put back", Duration::from_secs(60), || async {
        let s = services.get("web").await.ok()?;
        let app = s.spec?.selector?.get("app").cloned();
        (app.as_deref() == Some("web")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let data = settings_data(cp, &name).await;
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["first"],
        "the second commit was applied"
    );
    let u = crate::units::unit(cp, &ns, &name).await.expect("the Unit");
    assert_eq!(u["spec"]["suspend"]["reason"], "INC-9");
    daemon.finish().await;
}
