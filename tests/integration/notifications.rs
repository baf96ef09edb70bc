//! Notifications through the daemon's own wiring against the real control plane, to a
//! local HTTP receiver in the test that records every request: one message per state
//! change to each receiver (Slack and Teams bodies in their documented shapes, a webhook
//! signed with HMAC-SHA256 and checked here), none on a resync that changes nothing, and
//! a receiver that is down gets its messages afterwards, in order.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::exposition::sample;

const SECRET: &str = "the-hmac-key";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered: 200, or 503 while down.
    answered: u16,
}

impl Request {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Recorded {
    requests: Vec<Request>,
    down: bool,
}

/// A local HTTP server answering every POST, recording it.
#[derive(Clone)]
pub(crate) struct Receiver {
    recorded: Arc<Mutex<Recorded>>,
    pub(crate) base: String,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { recorded, base }
    }

    fn set_down(&self, down: bool) {
        self.recorded.lock().expect("lock").down = down;
    }

    /// The requests to `path` it answered 200, in order.
    pub(crate) fn delivered(&self, path: &str) -> Vec<Request> {
        self.recorded
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.path == path && r.answered == 200)
            .cloned()
            .collect()
    }

    fn refused(&self, path: &str) -> usize {
        self.recorded
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.path == path && r.answered != 200)
            .count()
    }
}

async fn record(
    State(recorded): State<Arc<Mutex<Recorded>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut r = recorded.lock().expect("lock");
    let answered = if r.down { 503 } else { 200 };
    r.requests.push(Request {
        path: uri.path().to_owned(),
        headers,
        body,
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// The `event` of each webhook request delivered to `path`, in order.
pub(crate) fn events(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .delivered(path)
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A platform repo of one team in namespace `team` owning ConfigMaps `settings`, `other`
/// and `warm` (plus `broken`, which the API server refuses, when `broken`), whose team.yaml
/// names `notify`.
fn platform(repo: &Path, cluster: &str, team: &str, notify: &[&str], broken: bool) {
    write(
        repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: notify}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n"
        ),
    );
    write(
        repo,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{cluster}]}}\n  notify: [{}]\n",
            notify.join(", ")
        ),
    );
    let mut app = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {value: desired}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {value: desired}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: warm}\ndata: {value: desired}\n",
    );
    if broken {
        // A label value the API server refuses: the unit's sync fails.
        app.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken, labels: {tier: \"not valid!\"}}\ndata: {value: x}\n");
    }
    write(repo, &format!("teams/{team}/app.yaml"), &app);
}

/// The daemon's config with `notifications` added.
pub(crate) fn config_with(
    config: &DaemonConfig,
    dir: &Path,
    notifications: Value,
) -> std::path::PathBuf {
    std::fs::write(dir.join("hmac"), format!("{SECRET}\n")).expect("write secret");
    let mut doc = config.to_value();
    doc["notifications"] = notifications;
    let path = dir.join("pontoon.yaml");
    std::fs::write(
        &path,
        serde_saphyr::to_string(&doc).expect("config renders as YAML"),
    )
    .expect("write pontoon.yaml");
    path
}

/// `kubectl edit` of ConfigMap `name`: `data.value` becomes `value`.
async fn hand_edit(cms: &Api<ConfigMap>, name: &str, value: &str) {
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch(name, &pp, &Patch::Merge(json!({"data": {"value": value}})))
        .await
        .expect("hand edit");
}

async fn unit_state(daemon: &Daemon, team: &str) -> Option<String> {
    let s = daemon.status().await?;
    s["units"]
        .as_array()?
        .iter()
        .find(|u| u["team"] == team)
        .and_then(|u| u["state"].as_str().map(str::to_owned))
}

async fn reaches(daemon: &Daemon, team: &str, state: &str) {
    eventually(
        &format!("the unit {state}"),
        Duration::from_secs(90),
        || async { (unit_state(daemon, team).await.as_deref() == Some(state)).then_some(()) },
    )
    .await;
}

/// Waits until the webhook at `path` got `n` messages.
async fn delivered(receiver: &Receiver, path: &str, n: usize) {
    eventually(
        &format!("{n} messages at {path}"),
        Duration::from_secs(90),
        || async { (receiver.delivered(path).len() >= n).then_some(()) },
    )
    .await;
}

/// The signature the receiver expects: HMAC-SHA256 of `<timestamp>.<body>`.
pub(crate) fn assert_signed(r: &Request) {
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    };
    let ts = header("x-pontoon-timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sent: u64 = ts.parse().expect("a Unix timestamp");
    assert!(
        now.abs_diff(sent) < 300,
        "timestamp {ts} is not now ({now})"
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        header("x-pontoon-signature"),
        expected,
        "signature of {:?}",
        r.body
    );
    assert_eq!(header("x-pontoon-event"), r.json()["event"]);
    assert_eq!(header("x-pontoon-delivery"), r.json()["id"]);
}

/// Slack's incoming-webhook message: `text` (the fallback) and `blocks` of known types, a
/// section's text an `mrkdwn` or `plain_text` object of at most 3000 characters.
fn assert_slack_shape(v: &Value) {
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    let blocks = v["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{v}");
    for b in blocks {
        match b["type"].as_str() {
            Some("section") => {
                assert!(matches!(
                    b["text"]["type"].as_str(),
                    Some("mrkdwn" | "plain_text")
                ));
                let text = b["text"]["text"].as_str().expect("section text");
                assert!(!text.is_empty() && text.chars().count() <= 3000, "{b}");
            }
            Some("context") => {
                let elements = b["elements"].as_array().expect("context elements");
                assert!(!elements.is_empty() && elements.len() <= 10, "{b}");
                for e in elements {
                    assert!(matches!(e["type"].as_str(), Some("mrkdwn" | "plain_text")));
                }
            }
            other => panic!("a block of type {other:?}: {b}"),
        }
    }
}

/// Teams' workflow-webhook message: one Adaptive Card attachment.
fn assert_teams_shape(v: &Value) {
    assert_eq!(v["type"], "message", "{v}");
    let attachments = v["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{v}");
    let a = &attachments[0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["version"].as_str().is_some(), "{card}");
    let body = card["body"].as_array().expect("card body");
    assert!(!body.is_empty());
    for element in body {
        match element["type"].as_str() {
            Some("TextBlock") => assert!(element["text"].as_str().is_some(), "{element}"),
            Some("FactSet") => {
                for f in element["facts"].as_array().expect("facts") {
                    assert!(f["title"].is_string() && f["value"].is_string(), "{f}");
                }
            }
            other => panic!("an element of type {other:?}: {element}"),
        }
    }
}

/// Drift, a failure, the recovery and a held deletion: each one message to each receiver
/// (the platform's Slack and Teams, the team's webhook), in order, the webhook signed;
/// then resyncs that change nothing send nothing more.
#[tokio::test]
async fn each_state_change_is_one_message_to_each_receiver_and_a_resync_sends_none() {
    let cp: &ControlPlane = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let team = unique_name("notified");
    let repo = tmp.path().join("platform");
    platform(&repo, cp.name, &team, &["team-hook"], false);
    let receiver = Receiver::start().await;
    let config = DaemonConfig::dir(&repo)
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&unique_name("notify-inv"))
        .resync_interval("2s");
    let base = &receiver.base;
    let path = config_with(
        &config,
        tmp.path(),
        json!({
            "receivers": [
                {"name": "ops-slack", "type": "slack", "url": format!("{base}/slack")},
                {"name": "ops-teams", "type": "teams", "url": format!("{base}/teams")},
                {"name": "team-hook", "type": "webhook", "url": format!("{base}/hook"), "secret": {"file": "hmac"}},
                {"name": "unused", "type": "webhook", "url": format!("{base}/unused"), "secret": {"file": "hmac"}},
            ],
            "platform": ["ops-slack", "ops-teams"],
        }),
    );
    let daemon = Daemon::start(&path);
    reaches(&daemon, &team, "Synced").await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);

    // The drift watches start after the first sync: edit until a correction is told.
    eventually("a hand edit told", Duration::from_secs(60), || async {
        hand_edit(&cms, "settings", "by-hand").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        events(&receiver, "/hook")
            .contains(&"drift-corrected".to_owned())
            .then_some(())
    })
    .await;

    platform(&repo, cp.name, &team, &["team-hook"], true);
    delivered(&receiver, "/hook", 3).await;
    platform(&repo, cp.name, &team, &["team-hook"], false);
    reaches(&daemon, &team, "Synced").await;
    delivered(&receiver, "/hook", 4).await;
    // A commit deleting every object of the team is held.
    write(
        &repo,
        &format!("teams/{team}/app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: newcomer}\ndata: {value: x}\n",
    );
    delivered(&receiver, "/hook", 5).await;
    // Resyncs every 2s that find nothing changed (the unit still held).
    tokio::time::sleep(Duration::from_secs(8)).await;

    let expected = [
        "drift-detected",
        "drift-corrected",
        "failed",
        "recovered",
        "deletions-held",
    ];
    assert_eq!(events(&receiver, "/hook"), expected);
    let hooks = receiver.delivered("/hook");
    for r in &hooks {
        assert_signed(r);
        assert_eq!(r.json()["team"], team.as_str());
    }
    assert_eq!(hooks[0].json()["by"], "kubectl-edit", "drift names who");
    assert!(
        hooks[2].json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("broken")),
        "the failure says what failed: {}",
        hooks[2].json()
    );
    assert!(
        hooks[4].json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("pontoon release")),
        "the hold says how to release it: {}",
        hooks[4].json()
    );
    let slack = receiver.delivered("/slack");
    let titles: Vec<String> = hooks
        .iter()
        .map(|r| r.json()["title"].as_str().unwrap_or("").to_owned())
        .collect();
    let slack_texts: Vec<String> = slack
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(slack_texts, titles, "the same messages, in order, on Slack");
    slack.iter().for_each(|r| assert_slack_shape(&r.json()));
    let teams = receiver.delivered("/teams");
    assert_eq!(teams.len(), expected.len());
    teams.iter().for_each(|r| assert_teams_shape(&r.json()));
    assert!(
        receiver.delivered("/unused").is_empty(),
        "a receiver no one names"
    );
    let metrics = daemon.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "pontoon_notifications_total",
            &[("receiver", "team-hook"), ("result", "sent")]
        ),
        Some(5.0)
    );
    daemon.finish().await;
}

/// A webhook answering 503 for a while: the sync goes on regardless (the drift is
/// corrected meanwhile), the messages are retried with backoff, and once it answers again
/// it gets each of them once, in the order they happened.
#[tokio::test]
async fn a_receiver_that_is_down_gets_its_messages_afterwards_in_order() {
    let cp: &ControlPlane = control_plane::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let team = unique_name("notdown");
    let repo = tmp.path().join("platform");
    platform(&repo, cp.name, &team, &[], false);
    let receiver = Receiver::start().await;
    let config = DaemonConfig::dir(&repo)
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&unique_name("notify-inv"))
        .resync_interval("1h");
    let path = config_with(
        &config,
        tmp.path(),
        json!({
            "receivers": [
                {"name": "hook", "type": "webhook", "url": format!("{}/hook", receiver.base), "secret": {"file": "hmac"}},
            ],
            "platform": ["hook"],
            "retry": {"initial": "200ms", "max": "1s"},
        }),
    );
    let daemon = Daemon::start(&path);
    reaches(&daemon, &team, "Synced").await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    eventually("a hand edit told", Duration::from_secs(60), || async {
        hand_edit(&cms, "warm", "warm-up").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (events(&receiver, "/hook").len() >= 2).then_some(())
    })
    .await;
    let before = receiver.delivered("/hook").len();

    receiver.set_down(true);
    let value = |name: &'static str| {
        let cms = cms.clone();
        async move { cms.get(name).await.ok()?.data?.remove("value") }
    };
    let queued = || async {
        sample(
            &daemon.metrics().await,
            "pontoon_notifications_queued",
            &[("receiver", "hook")],
        )
    };
    for (i, name) in ["other", "settings"].into_iter().enumerate() {
        hand_edit(&cms, name, "while-down").await;
        eventually(
            &format!("{name} corrected while the receiver is down"),
            Duration::from_secs(30),
            || async { (value(name).await.as_deref() == Some("desired")).then_some(()) },
        )
        .await;
        // The next edit once this one's correction is told, so the order is known.
        let told = (2 * (i + 1)) as f64;
        eventually(
            &format!("{told} messages queued"),
            Duration::from_secs(30),
            || async { (queued().await == Some(told)).then_some(()) },
        )
        .await;
    }
    eventually("retries while down", Duration::from_secs(30), || async {
        (receiver.refused("/hook") >= 3).then_some(())
    })
    .await;
    assert_eq!(
        queued().await,
        Some(4.0),
        "four messages wait while it is down"
    );
    assert_eq!(receiver.delivered("/hook").len(), before);
    receiver.set_down(false);

    delivered(&receiver, "/hook", before + 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<(String, String)> = receiver.delivered("/hook")[before..]
        .iter()
        .map(|r| {
            assert_signed(r);
            let v = r.json();
            (
                v["event"].as_str().unwrap_or("").to_owned(),
                v["object"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let other = format!("ConfigMap {team}/other");
    let settings = format!("ConfigMap {team}/settings");
    assert_eq!(
        after,
        [
            ("drift-detected".to_owned(), other.clone()),
            ("drift-corrected".to_owned(), other),
            ("drift-detected".to_owned(), settings.clone()),
            ("drift-corrected".to_owned(), settings),
        ],
        "each once, in order"
    );
    let metrics = daemon.metrics().await;
    assert!(
        sample(
            &metrics,
            "pontoon_notifications_total",
            &[("receiver", "hook"), ("result", "retried")]
        )
        .is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    daemon.finish().await;
}
