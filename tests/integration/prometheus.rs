//! The dashboard and the alert rules against a real Prometheus (Debian's `prometheus`)
//! scraping a real pontoon while it syncs a real control plane from a real Gitea: a
//! Synced unit, a Failed one, a hand edit corrected, a pruned object, a push webhook and
//! commit statuses. Then every panel query of `deploy/grafana/pontoon.json` and every alert
//! expression of `deploy/prometheus/pontoon-rules.yaml` is evaluated through Prometheus'
//! HTTP API and must return series: an expression that can never return data fails here.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::control_plane::{self, eventually, repo_root, unique_name};
use crate::support::daemon::{Daemon, free_port, write};
use crate::support::git::git;
use crate::support::gitea;

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(target: &str, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: pontoon\n    static_configs: [{{targets: ['{target}']}}]\n",
                rules.display()
            ),
        )
        .expect("prometheus config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus is needed for this test: apt-get install prometheus (make test installs it)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", p.url);
        eventually("Prometheus ready", Duration::from_secs(60), || async {
            let r = reqwest::get(&ready).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        p
    }

    async fn query(&self, expr: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", expr)],
        )
        .expect("query url");
        let r: Value = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(r["status"], "success", "{expr}: {r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Whether `expr` returns series within 30 s.
    async fn returns_series(&self, expr: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if !self.query(expr).await.is_empty() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A panel query with Grafana's variables filled in as "All" would.
fn concrete(expr: &str) -> String {
    expr.replace("$cluster", ".*")
        .replace("$team", ".*")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "10m")
}

/// An alert expression without its threshold (and without `absent()`), which must
/// return series while pontoon runs.
fn underlying(expr: &str) -> String {
    let strip = |e: &str| -> String {
        let e = e.trim();
        for op in ["==", "!=", ">=", "<=", ">", "<"] {
            if let Some((lhs, rhs)) = e.rsplit_once(op)
                && rhs.trim().parse::<f64>().is_ok()
            {
                return lhs.trim().to_owned();
            }
        }
        e.to_owned()
    };
    let e = strip(expr);
    match e.strip_prefix("absent(").and_then(|r| r.strip_suffix(')')) {
        Some(inner) => strip(inner),
        None => e,
    }
}

/// (panel title, expression) for every query of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/grafana/pontoon.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("json");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("title").to_owned();
        for t in p["targets"].as_array().expect("targets") {
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_is_importable_and_every_panel_queries_prometheus() {
    let path = repo_root().join("deploy/grafana/pontoon.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("json");
    assert_eq!(dash["uid"], "pontoon");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "cluster", "team"]);
    let mut ids = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate panel id"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(
            !p["targets"].as_array().expect("targets").is_empty(),
            "{} has no query",
            p["title"]
        );
        assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert!(dashboard_queries().len() >= 18);
}

/// The first commit in `work`: team shop with two ConfigMaps, team broken with one the
/// API server refuses; the cluster is a rollout stage, so its units have a waiting series.
fn first_commit(work: &Path) {
    git(work, &["init", "-q"]);
    write(
        work,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: m}\nspec:\n  clusters: [{name: prom}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n  rollout:\n    stages: [{name: all, clusters: {names: [prom]}}]\n",
    );
    for team in ["shop", "broken"] {
        write(
            work,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [prom]}}\n"
            ),
        );
    }
    write(
        work,
        "teams/shop/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n",
    );
    // The API server refuses this key: an apply error, and a Failed unit.
    write(
        work,
        "teams/broken/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: refused}\ndata: {\"not a key!\": x}\n",
    );
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "first"]);
}

/// Every dashboard panel and alert expression returns series from `prom`, and Prometheus
/// evaluates the `rules` file it loaded without errors.
async fn every_expression_returns_series(prom: &Prometheus, rules: &Path) {
    // rate() and increase() need two samples of a series in their window, and
    // Prometheus' scrapes lag on a busy machine: an expression gets 30 s to return series.
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        let expr = concrete(&expr);
        if !prom.returns_series(&expr).await {
            empty.push(format!("panel {title:?}: {expr}"));
        }
    }
    let rules_doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(rules).expect("rules")).expect("yaml");
    for rule in rules_doc["groups"][0]["rules"].as_array().expect("rules") {
        let name = rule["alert"].as_str().expect("alert");
        let expr = underlying(rule["expr"].as_str().expect("expr"));
        if !prom.returns_series(&expr).await {
            empty.push(format!("alert {name}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "expressions that returned no series:\n{}",
        empty.join("\n")
    );
    // Prometheus loaded the rules and evaluates them without errors.
    let r: Value = reqwest::get(format!("{}/api/v1/rules", prom.url))
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    let loaded = r["data"]["groups"][0]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(loaded.len(), 7, "{r}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}

#[tokio::test]
async fn every_panel_and_alert_expression_returns_series_from_a_real_prometheus() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pontoon=info")
        .with_test_writer()
        .try_init();
    let cp = control_plane::dedicated("prom");
    let gitea = gitea::shared();
    let repo = unique_name("metrics");
    gitea.create_repo(&repo).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    first_commit(&work);
    gitea.push(&work, &repo, "main");

    let config = gitea
        .daemon_config(&repo, tmp.path())
        .poll_interval("1h")
        .cluster("prom", &cp.kubeconfig);
    let port = config.port();
    let daemon = Daemon::start(&config.write(tmp.path()));
    let rules = repo_root().join("deploy/prometheus/pontoon-rules.yaml");
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"), &rules).await;
    let base = format!("http://127.0.0.1:{port}");
    let states = || async {
        let s: Value = reqwest::get(format!("{base}/api/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let of = |team: &str| {
            s["units"]
                .as_array()?
                .iter()
                .find(|u| u["team"] == team)
                .map(|u| u["state"].as_str().unwrap_or("").to_owned())
        };
        Some((of("shop")?, of("broken")?))
    };
    eventually(
        "shop Synced and broken Failed",
        Duration::from_secs(90),
        || async {
            let (shop, broken) = states().await?;
            (shop == "Synced" && broken == "Failed").then_some(())
        },
    )
    .await;

    // A hand edit, corrected.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, "shop");
    cms.patch(
        "settings",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"colour": "red"}})),
    )
    .await
    .expect("hand edit");
    eventually(
        "the hand edit corrected",
        Duration::from_secs(30),
        || async {
            let cm = cms.get("settings").await.ok()?;
            (cm.data?.get("colour")? == "blue").then_some(())
        },
    )
    .await;

    // A commit that drops an object, announced by Gitea's own push webhook.
    let hook = gitea
        .api(Method::POST, &format!("/repos/{}/{repo}/hooks", gitea.user()))
        .json(&json!({"type": "gitea", "active": true, "events": ["push"],
            "config": {"url": format!("{base}/webhooks/gitea"), "content_type": "json", "secret": "s3cret"}}))
        .send()
        .await
        .expect("create hook");
    assert!(hook.status().is_success());
    write(
        &work,
        "teams/shop/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n",
    );
    git(&work, &["commit", "-q", "-am", "drop extra"]);
    gitea.push(&work, &repo, "main");
    eventually("extra pruned", Duration::from_secs(60), || async {
        cms.get_opt("extra").await.ok()?.is_none().then_some(())
    })
    .await;

    every_expression_returns_series(&prom, &rules).await;

    drop(prom);
    daemon.finish().await;
}

#[test]
fn alert_thresholds_and_absent_are_stripped_to_what_must_exist() {
    assert_eq!(
        underlying("absent(up{job=\"pontoon\"} == 1)"),
        "up{job=\"pontoon\"}"
    );
    assert_eq!(
        underlying("time() - max(x{result=\"success\"}) > 900"),
        "time() - max(x{result=\"success\"})"
    );
    assert_eq!(underlying("sum(rate(x[5m]))"), "sum(rate(x[5m]))");
}
