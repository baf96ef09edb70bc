//! Webhook secrets as the running daemon applies them: with a secret, an unsigned request
//! or one signed with anything else (an empty GitLab token included) changes nothing;
//! with no `source.webhook` the endpoints are off; unsigned requests pass only with an
//! explicit `insecure: true`; and an empty secret is refused before the daemon starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::control_plane::{self, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::exposition::sample;

const PUSH: &str =
    r#"{"ref": "refs/heads/main", "after": "6dcb09b5b57875f334f61aebed695e2e4193db5e"}"#;

/// A platform repo with no team: the daemon serves its endpoints and touches nothing.
fn empty_platform(dir: &Path) -> PathBuf {
    let repo = dir.join("platform");
    write(
        &repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: hooks}}\nspec:\n  clusters: [{{name: {}}}]\n",
            control_plane::shared().name
        ),
    );
    repo
}

/// The daemon's config for `dir`, with `webhook` as `source.webhook` (none when `Null`).
fn config(dir: &Path, webhook: Value) -> (PathBuf, String) {
    let cp = control_plane::shared();
    let built = DaemonConfig::dir(&empty_platform(dir))
        .cluster(cp.name, &cp.kubeconfig)
        .inventory_namespace(&unique_name("hooks-inv"))
        .resync_interval("1h");
    let mut doc = built.to_value();
    if !webhook.is_null() {
        doc["source"]["webhook"] = webhook;
    }
    let path = dir.join("pontoon.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&doc).expect("yaml")).expect("write");
    (path, built.base_url())
}

/// POSTs a push event to `/webhooks/{forge}` with `headers`; status code and body.
async fn push(base: &str, forge: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let event = match forge {
        "github" => ("X-GitHub-Event", "push"),
        "gitea" => ("X-Gitea-Event", "push"),
        _ => ("X-Gitlab-Event", "Push Hook"),
    };
    let mut req = reqwest::Client::new()
        .post(format!("{base}/webhooks/{forge}"))
        .header("Content-Type", "application/json")
        .header(event.0, event.1)
        .body(PUSH);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    // The server may not be up yet right after start.
    for _ in 0..100 {
        if let Ok(resp) = req.try_clone().expect("clonable").send().await {
            let code = resp.status().as_u16();
            return (code, resp.text().await.unwrap_or_default());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the daemon's webhook endpoint never answered");
}

fn hmac_hex(secret: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(PUSH.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_webhook_with_a_secret_refuses_unsigned_and_garbage_requests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("hook-secret"), "s3cret\n").expect("secret");
    let (path, base) = config(tmp.path(), json!({"secret": {"file": "hook-secret"}}));
    let daemon = Daemon::start(&path);

    let github_sig = format!("sha256={}", hmac_hex("s3cret"));
    let gitea_sig = hmac_hex("s3cret");
    let empty_key_github = format!("sha256={}", hmac_hex(""));
    let empty_key_gitea = hmac_hex("");
    let refused: [(&str, Vec<(&str, &str)>); 10] = [
        ("github", vec![]),
        ("github", vec![("X-Hub-Signature-256", "sha256=garbage")]),
        (
            "github",
            vec![("X-Hub-Signature-256", empty_key_github.as_str())],
        ),
        ("gitea", vec![]),
        ("gitea", vec![("X-Gitea-Signature", "not-hex-at-all")]),
        (
            "gitea",
            vec![("X-Gitea-Signature", empty_key_gitea.as_str())],
        ),
        ("gitea", vec![("X-Gitea-Signature", "")]),
        ("gitlab", vec![]),
        ("gitlab", vec![("X-Gitlab-Token", "wrong")]),
        ("gitlab", vec![("X-Gitlab-Token", "")]),
    ];
    for (forge, headers) in &refused {
        let (code, body) = push(&base, forge, headers).await;
        assert_eq!(
            (code, body.as_str()),
            (401, "bad or missing signature"),
            "{forge} {headers:?}"
        );
    }
    for (forge, header) in [
        ("github", ("X-Hub-Signature-256", github_sig.as_str())),
        ("gitea", ("X-Gitea-Signature", gitea_sig.as_str())),
        ("gitlab", ("X-Gitlab-Token", "s3cret")),
    ] {
        assert_eq!(push(&base, forge, &[header]).await.0, 202, "{forge} signed");
    }
    let metrics = daemon.metrics().await;
    let count = |provider: &str, result: &str| {
        sample(
            &metrics,
            "pontoon_webhook_requests_total",
            &[("provider", provider), ("result", result)],
        )
    };
    assert_eq!(
        [
            count("github", "unauthorized"),
            count("gitea", "unauthorized"),
            count("gitlab", "unauthorized"),
            count("github", "poll"),
        ],
        [Some(3.0), Some(4.0), Some(3.0), Some(1.0)],
        "{metrics}"
    );
    daemon.finish().await;
}

#[tokio::test]
async fn without_a_webhook_section_the_endpoints_are_off_and_insecure_must_be_said() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (path, base) = config(tmp.path(), Value::Null);
    let daemon = Daemon::start(&path);
    for forge in ["github", "gitea", "gitlab"] {
        let (code, body) = push(&base, forge, &[]).await;
        assert_eq!(code, 404, "{forge}: {body}");
        assert!(
            body.contains("set source.webhook.secret (or source.webhook.insecure: true)"),
            "{body}"
        );
    }
    daemon.finish().await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let (path, base) = config(tmp.path(), json!({"insecure": true}));
    let daemon = Daemon::start(&path);
    assert_eq!(
        push(&base, "gitlab", &[]).await.0,
        202,
        "insecure: unsigned passes"
    );
    daemon.finish().await;
}

#[test]
fn an_empty_webhook_secret_is_a_config_error_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let check = |webhook: Value, env: (&str, &str)| {
        let (path, _) = config(tmp.path(), webhook);
        let out = Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(["config", "check", path.to_str().expect("utf-8 path")])
            .env(env.0, env.1)
            .output()
            .expect("run pontoon");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(
        json!({"secret": {"env": "PONTOON_HOOK_SECRET"}}),
        ("PONTOON_HOOK_SECRET", ""),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("source.webhook.secret: environment variable PONTOON_HOOK_SECRET is empty"),
        "{err}"
    );
    std::fs::write(tmp.path().join("hook-secret"), "\n").expect("secret");
    let (code, err) = check(
        json!({"secret": {"file": "hook-secret"}}),
        ("PONTOON_UNUSED", ""),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("source.webhook.secret: secret file") && err.contains("is empty"),
        "{err}"
    );
    let (code, err) = check(json!({}), ("PONTOON_UNUSED", ""));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("source.webhook: set `secret`") && err.contains("or `insecure: true`"),
        "{err}"
    );
}
