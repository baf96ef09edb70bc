//! Health of custom resources against a real kube-apiserver: fixture CRDs whose status the
//! test writes as an operator would, read by kstatus (`Ready`, `Stalled`,
//! `observedGeneration`), by a Kind resource's `readyWhen`/`failedWhen` and by
//! `platform.yaml`'s rule for the kind; a kind with no status is Synced and says it has
//! no health rule. And `pontoon sync --once` waiting for every unit's health together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use pontoon::daemon::board::Board;
use pontoon::desired::{DesiredState, UnitDesired};
use pontoon::server::StatusSource;
use pontoon::status::{SyncReport, Tracker};
use pontoon::sync::{Syncer, UnitResult, UnitState};
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, RequestKey, repo_root, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

const KIND: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Probe}
spec:
  resources:
    - id: widget
      readyWhen: has(self.status.phase) && self.status.phase == 'Ready'
      failedWhen: has(self.status.phase) && self.status.phase == 'Broken'
      healthMessage: \"probe says ${self.status.reason}\"
      template:
        apiVersion: health.pontoon.dev/v1
        kind: Widget
        metadata: {name: \"${name}\"}
        spec: {size: 1}
";

/// A platform repo of one team on `cp`, through the real renderer: a Widget and a Gadget
/// as plain manifests, a Widget from the Probe kind, and the platform's rule for Widgets
/// (which the Probe's own rule comes before).
fn render(cp: &ControlPlane, team: &str) -> Arc<DesiredState> {
    let mut f = pontoon::render::Files::new();
    f.insert(
        "platform.yaml".into(),
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds:\n      - {{group: health.pontoon.dev, kind: Widget}}\n      - {{group: health.pontoon.dev, kind: Gadget}}\n  health:\n    - group: health.pontoon.dev\n      kind: Widget\n      failedWhen: has(self.status.phase) && self.status.phase == 'Broken'\n      message: \"widget broken: ${{self.status.reason}}\"\n",
            cp.name
        )
        .into_bytes(),
    );
    f.insert("kinds/probe.yaml".into(), KIND.into());
    f.insert(
        format!("teams/{team}/team.yaml"),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{}]}}\n", cp.name).into_bytes(),
    );
    f.insert(
        format!("teams/{team}/app.yaml"),
        "apiVersion: health.pontoon.dev/v1\nkind: Widget\nmetadata: {name: plain}\nspec: {size: 1}\n---\napiVersion: health.pontoon.dev/v1\nkind: Gadget\nmetadata: {name: bare}\nspec: {size: 1}\n---\napiVersion: pontoon.dev/v1alpha1\nkind: Probe\nmetadata: {name: ruled}\n"
            .into(),
    );
    let state = pontoon::render::render(&f, "r1");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    Arc::new(state)
}

/// What a result shows outward: the unit's error in `/api/status`, the status page, and
/// the description of the unit's commit status.
fn shown(cp: &ControlPlane, state: &Arc<DesiredState>, r: &UnitResult) -> [String; 3] {
    let board = Board::new();
    board.set_leading(true);
    board.rendered(state, &[cp.name.to_owned()]);
    board.record(r, false);
    let units = board.units();
    let api = units[0].last_error.clone().unwrap_or_default();
    let page = pontoon::server::page::render(&units, &state.revision, true, &[]);
    let mut tracker = Tracker::new([cp.name.to_owned()]);
    tracker.rendered(state);
    let statuses = tracker.reported(&SyncReport {
        result: r.clone(),
        first_attempt: true,
        removal: false,
    });
    let context = pontoon::status::unit_context(&r.unit);
    let description = statuses
        .into_iter()
        .find(|s| s.context == context)
        .map(|s| s.description)
        .unwrap_or_default();
    [api, page, description]
}

/// Each of the paths outward says `what`.
fn shown_everywhere(cp: &ControlPlane, state: &Arc<DesiredState>, r: &UnitResult, what: &str) {
    let paths = ["/api/status", "the page", "the commit status"];
    for (path, text) in paths.into_iter().zip(shown(cp, state, r)) {
        assert!(text.contains(what), "{path}: {text}");
    }
}

fn install_crds(cp: &ControlPlane) {
    let path = repo_root().join("tests/fixtures/health/crds.yaml");
    let out = cp.kubectl(&["apply", "--server-side", "-f", path.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for crd in ["widgets.health.pontoon.dev", "gadgets.health.pontoon.dev"] {
        let out = cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes a Widget's status, as its operator would.
async fn set_status(widgets: &Api<DynamicObject>, name: &str, status: Value) {
    widgets
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect("status");
}

fn waits_for(r: &UnitResult, name: &str) -> Option<String> {
    r.not_ready
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(_, why)| why.clone())
}

#[tokio::test]
async fn custom_resources_are_healthy_by_their_conditions_and_the_platforms_rules() {
    let cp = control_plane::shared();
    install_crds(cp);
    let s: Syncer = crate::sync::syncer(cp).await;
    let team = unique_name("health");
    let state = render(cp, &team);
    let d: &UnitDesired = state.units.values().next().expect("one unit");
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        cp.client().await,
        &team,
        &ApiResource {
            group: "health.pontoon.dev".into(),
            version: "v1".into(),
            api_version: "health.pontoon.dev/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
    );

    // Just applied: the plain Widget and the Gadget have no status and no rule that could
    // read one; the Probe's Widget waits for its readyWhen, which has no status to read.
    let r = s.sync(d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert!(
        waits_for(&r, "ruled").is_some_and(|w| w
            .starts_with("waiting for readyWhen: `has(self.status.phase)")
            && w.ends_with("No such key: status")),
        "{r:?}"
    );
    let unruled: Vec<&str> = r.no_health_rule.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(unruled, ["bare", "plain"], "{r:?}");

    // kstatus: Ready=False is progressing, with the condition's message.
    let ready = |status: &str, message: &str| {
        json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": status, "reason": "Checked", "message": message,
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    };
    set_status(&widgets, "plain", ready("False", "warming up")).await;
    let before = cp.requests_by_resource();
    let r = s.sync(d, "r1").await;
    // Read from the list the resync makes anyway: not one request for a Widget alone.
    let gets: u64 = RequestKey::delta(&before, cp.requests_by_resource())
        .iter()
        .filter(|(k, _)| k.resource == "widgets" && k.verb == "GET")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(gets, 0, "{r:?}");
    assert_eq!(
        waits_for(&r, "plain").as_deref(),
        Some("not ready: warming up"),
        "{r:?}"
    );
    assert_eq!(
        r.writes, 0,
        "a status written by the operator is no change: {r:?}"
    );

    // kstatus: Stalled=True has failed, with the condition's message.
    let mut stalled = ready("False", "warming up");
    stalled["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(
            json!({"type": "Stalled", "status": "True", "reason": "Quota",
                     "message": "out of quota", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        );
    set_status(&widgets, "plain", stalled).await;
    let r = s.sync(d, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.message
            .as_deref()
            .unwrap_or("")
            .contains("plain: out of quota"),
        "{r:?}"
    );
    // The condition's message reaches /api/status, the page and the commit status.
    shown_everywhere(cp, &state, &r, "plain: out of quota");

    // The platform's failedWhen for Widgets, with its message.
    set_status(
        &widgets,
        "plain",
        json!({"conditions": null, "phase": "Broken", "reason": "disk full"}),
    )
    .await;
    let r = s.sync(d, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let message = r.message.clone().unwrap_or_default();
    assert!(
        message.contains("plain: widget broken: disk full (platform.yaml:"),
        "{message}"
    );
    shown_everywhere(cp, &state, &r, "plain: widget broken: disk full");

    // The Kind's failedWhen comes before the platform's: its own message.
    let mut fine = ready("True", "");
    fine["phase"] = Value::Null;
    set_status(&widgets, "plain", fine).await;
    set_status(
        &widgets,
        "ruled",
        json!({"phase": "Broken", "reason": "bad disk"}),
    )
    .await;
    let r = s.sync(d, "r1").await;
    let message = r.message.clone().unwrap_or_default();
    assert!(
        message.contains("ruled: probe says bad disk (kinds/probe.yaml:"),
        "{message}"
    );

    // readyWhen holds, but of an older generation than the Widget's: not ready yet.
    set_status(
        &widgets,
        "ruled",
        json!({"observedGeneration": 0, "phase": "Ready", "reason": "fine"}),
    )
    .await;
    let r = s.sync(d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(
        waits_for(&r, "ruled").as_deref(),
        Some("generation 1 not yet observed (the status is of generation 0)"),
        "{r:?}"
    );

    // The operator catches up while pontoon waits: Synced, the Gadget still named as
    // having no health rule.
    set_status(&widgets, "ruled", json!({"observedGeneration": 1})).await;
    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    let unruled: Vec<&str> = r.no_health_rule.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(unruled, ["bare"], "{r:?}");
    let r = s.sync(d, "r1").await;
    assert_eq!((r.state, r.writes), (UnitState::Synced, 0), "{r:?}");
    assert!(
        r.summary().ends_with(", 1 with no health rule"),
        "{}",
        r.summary()
    );
    let [api_error, page, _] = shown(cp, &state, &r);
    assert_eq!(api_error, "", "Synced");
    assert!(
        page.contains(&format!(
            "no health rule: Gadget.health.pontoon.dev {team}/bare"
        )),
        "{page}"
    );
    let board = Board::new();
    board.record(&r, false);
    assert_eq!(
        board.units()[0].no_health_rule,
        [format!("Gadget.health.pontoon.dev {team}/bare")]
    );
}

/// Units whose health never comes: one team per unit, each with a Gadget the platform
/// says is ready when `false` is true.
const TEAMS_THAT_NEVER_BECOME_HEALTHY: usize = 4;
/// Long enough that waiting for the units one after another (4 × 12 s) could not be taken
/// for waiting for them together (12 s, plus the process's start and the applies).
const HEALTH_TIMEOUT_SECONDS: u64 = 12;

#[tokio::test]
async fn sync_once_waits_for_every_units_health_at_once() {
    let cp = control_plane::shared();
    install_crds(cp);
    let prefix = unique_name("once");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(
        &repo,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: once}]\n  policy:\n    allowedKinds: [{group: health.pontoon.dev, kind: Gadget}]\n  health:\n    - {group: health.pontoon.dev, kind: Gadget, readyWhen: \"false\", message: never ready}\n",
    );
    for i in 0..TEAMS_THAT_NEVER_BECOME_HEALTHY {
        let team = format!("{prefix}-{i}");
        write(
            &repo,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [once]}}\n"
            ),
        );
        write(
            &repo,
            &format!("teams/{team}/app.yaml"),
            "apiVersion: health.pontoon.dev/v1\nkind: Gadget\nmetadata: {name: g}\nspec: {size: 1}\n",
        );
    }
    let config = DaemonConfig::dir(&repo)
        .cluster("once", &cp.kubeconfig)
        .inventory_namespace(&format!("{prefix}-pontoon"))
        .health_timeout(&format!("{HEALTH_TIMEOUT_SECONDS}s"))
        .write(tmp.path());

    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["sync", "--config", config.to_str().expect("path"), "--once"])
        .output()
        .expect("run pontoon");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let timed_out = stdout
        .lines()
        .filter(|l| {
            l.contains("Failed")
                && l.contains(&format!("not healthy after {HEALTH_TIMEOUT_SECONDS}s"))
                && l.contains("never ready")
        })
        .count();
    assert_eq!(timed_out, TEAMS_THAT_NEVER_BECOME_HEALTHY, "{stdout}");
    // One after another would take at least 4 × 12 s = 48 s.
    let one_after_another =
        Duration::from_secs(HEALTH_TIMEOUT_SECONDS * TEAMS_THAT_NEVER_BECOME_HEALTHY as u64);
    assert!(
        took < one_after_another - Duration::from_secs(HEALTH_TIMEOUT_SECONDS),
        "took {took:?}: the units were waited for one after another\n{stdout}"
    );
}
