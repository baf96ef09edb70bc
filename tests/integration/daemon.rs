//! The daemon end to end: a commit in a real Git repository, a signed webhook, the unit
//! applied to the control plane, status in /api/status and /metrics, a hand edit
//! corrected by the next resync, and a commit that breaks the team shown as Failed while
//! the cluster keeps its last good state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::control_plane::{self, eventually};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::exposition::sample;
use crate::support::git::git;

const PLATFORM: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: e2e}\nspec:\n  clusters: [{name: e2e}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n";
const TEAM: &str = "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {name: shop}\nspec:\n  namespaces: [shop]\n  clusters: {names: [e2e]}\n";

fn app(colour: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{colour: {colour}}}\n"
    )
}

/// The body of `GET {base}{path}`.
async fn fetch(http: &reqwest::Client, base: &str, path: &str) -> String {
    http.get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"))
}

async fn status(http: &reqwest::Client, base: &str) -> Value {
    serde_json::from_str(&fetch(http, base, "/api/status").await).expect("status is JSON")
}

/// The `colour` the live settings ConfigMap holds.
async fn colour(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get("settings").await.ok()?.data?.remove("colour")
}

fn unit<'a>(s: &'a Value, team: &str) -> Option<&'a Value> {
    s["units"].as_array()?.iter().find(|u| u["team"] == team)
}

/// Whether /api/status shows the unit Synced at `revision`; None also while the server
/// is not up yet.
async fn synced_at(http: &reqwest::Client, base: &str, revision: &str) -> Option<()> {
    let s: Value = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let u = unit(&s, "shop")?;
    (u["state"] == "Synced" && u["revision"] == revision).then_some(())
}

/// A Gitea push webhook for `after`, signed with `secret`; the answer's status code.
async fn gitea_push(http: &reqwest::Client, base: &str, after: &str, secret: &str) -> u16 {
    let body =
        serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": after})).expect("json");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(&body);
    http.post(format!("{base}/webhooks/gitea"))
        .header("X-Gitea-Event", "push")
        .header(
            "X-Gitea-Signature",
            hex::encode(mac.finalize().into_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook")
        .status()
        .as_u16()
}

/// A work tree and the bare repository the daemon reads, pushed to on every commit.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    /// The first commit in `dir`: the platform, and team `shop` with a blue ConfigMap.
    fn new(dir: &Path) -> Repo {
        let work = dir.join("work");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        write(&work, "platform.yaml", PLATFORM);
        write(&work, "teams/shop/team.yaml", TEAM);
        write(&work, "teams/shop/app.yaml", &app("blue"));
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(dir, &["clone", "-q", "--bare", "work", "platform.git"]);
        Repo {
            work,
            bare: dir.join("platform.git"),
        }
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Commits `text` as the team's app.yaml and pushes it; the new commit.
    fn commit_app(&self, text: &str, message: &str) -> String {
        write(&self.work, "teams/shop/app.yaml", text);
        git(&self.work, &["commit", "-q", "-am", message]);
        let bare = self.bare.to_str().expect("path");
        git(&self.work, &["push", "-q", bare, "main"]);
        self.head()
    }
}

/// When the unit's last sync attempt finished, as /metrics exports it.
async fn last_attempt(http: &reqwest::Client, base: &str) -> f64 {
    let text = fetch(http, base, "/metrics").await;
    sample(
        &text,
        "pontoon_sync_last_attempt_timestamp_seconds",
        &[("cluster", "e2e"), ("team", "shop")],
    )
    .unwrap_or_else(|| panic!("the unit's last attempt is exported:\n{text}"))
}

/// Waits for `n` more sync attempts of the unit (within 20 s), checking `during` on
/// /api/status every 200 ms meanwhile.
async fn attempts(http: &reqwest::Client, base: &str, n: usize, during: impl Fn(&Value)) {
    let mut seen = last_attempt(http, base).await;
    let (mut count, watching) = (0, Instant::now());
    while count < n {
        assert!(
            watching.elapsed() < Duration::from_secs(20),
            "no resync: {count} of {n} sync attempts in {:?}",
            watching.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        during(&status(http, base).await);
        let attempt = last_attempt(http, base).await;
        if attempt > seen {
            (seen, count) = (attempt, count + 1);
        }
    }
}

/// What /metrics and the status page show once the unit is Synced, after one webhook
/// with a wrong signature.
async fn synced_shown(http: &reqwest::Client, base: &str) {
    let metrics = fetch(http, base, "/metrics").await;
    for want in [
        "pontoon_sync_status{cluster=\"e2e\",status=\"Synced\",team=\"shop\"} 1",
        "pontoon_source_fetches_total{result=\"success\"}",
        "pontoon_webhook_requests_total{provider=\"gitea\",result=\"unauthorized\"} 1",
        "pontoon_managed_objects{cluster=\"e2e\",team=\"shop\"}",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let page = fetch(http, base, "/").await;
    assert!(
        page.contains("data-team=\"shop\"") && page.contains("Synced"),
        "{page}"
    );
}

#[tokio::test]
async fn a_pushed_commit_reaches_the_cluster_and_its_status_is_reported() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pontoon=info")
        .with_test_writer()
        .try_init();
    let cp = control_plane::dedicated("e2e");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(tmp.path());
    let first = repo.head();

    std::fs::write(tmp.path().join("hook-secret"), "s3cret\n").expect("secret");
    let config = DaemonConfig::git_file(&repo.bare, &tmp.path().join("cache"))
        .poll_interval("1h")
        .webhook_secret("hook-secret")
        .cluster("e2e", &cp.kubeconfig)
        .resync_interval("2s");
    let daemon = Daemon::start(&config.write(tmp.path()));
    let base = daemon.base.clone();
    let http = reqwest::Client::new();

    // First revision: applied, Synced, ready.
    eventually("the first revision Synced", Duration::from_secs(60), || {
        synced_at(&http, &base, &first)
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, "shop");
    assert_eq!(
        colour(&cms).await.as_deref(),
        Some("blue"),
        "configmap applied"
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );

    // A new commit and a signed Gitea push webhook: picked up long before the 1h poll.
    let second = repo.commit_app(&app("green"), "green");
    assert_eq!(gitea_push(&http, &base, &second, "wrong").await, 401);
    assert_eq!(gitea_push(&http, &base, &second, "s3cret").await, 202);
    eventually(
        "the second revision Synced",
        Duration::from_secs(30),
        || synced_at(&http, &base, &second),
    )
    .await;
    assert_eq!(colour(&cms).await.as_deref(), Some("green"), "configmap");

    // Someone edits the object by hand; the resync (every 2s here) puts it back.
    cms.patch("settings", &PatchParams::apply("kubectl-edit").force(), &Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"colour": "red"}})))
        .await
        .expect("hand edit");
    eventually(
        "the hand edit corrected",
        Duration::from_secs(20),
        || async { (colour(&cms).await? == "green").then_some(()) },
    )
    .await;

    synced_shown(&http, &base).await;

    // A commit that breaks the team: the cluster keeps what it runs, resyncs of that
    // last good state go on, and the unit shows Failed with the render error throughout.
    let third = repo.commit_app(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: elsewhere}\ndata: {colour: pink}\n",
        "broken",
    );
    assert_eq!(gitea_push(&http, &base, &third, "s3cret").await, 202);
    let failed = |s: &Value| {
        let u = unit(s, "shop")?;
        let error = u["last_error"].as_str()?;
        (u["state"] == "Failed"
            && error.contains(&format!("render failed at {}", &third[..7]))
            && error.contains("teams/shop/app.yaml:3:"))
        .then(|| u["revision"].clone())
    };
    eventually(
        "the broken commit shown",
        Duration::from_secs(30),
        || async { failed(&status(&http, &base).await) },
    )
    .await;
    // Resyncs of the last good state go on (every 2 s here): the unit's last attempt
    // moves on twice, and the unit shows Failed at the last good revision throughout.
    attempts(&http, &base, 2, |s| {
        assert_eq!(failed(s), Some(json!(second)), "{s}")
    })
    .await;
    assert_eq!(
        colour(&cms).await.as_deref(),
        Some("green"),
        "configmap kept"
    );
    let text = fetch(&http, &base, "/metrics").await;
    let state = |status: &str| {
        sample(
            &text,
            "pontoon_sync_status",
            &[("cluster", "e2e"), ("status", status), ("team", "shop")],
        )
    };
    assert_eq!(
        (state("Failed"), state("Synced")),
        (Some(1.0), Some(0.0)),
        "{text}"
    );

    daemon.finish().await;
}
