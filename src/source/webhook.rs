//! Webhooks that make the next poll happen now: GitHub (`X-Hub-Signature-256`), Gitea
//! (`X-Gitea-Signature`) and GitLab (`X-Gitlab-Token`) push events. Signatures are
//! checked in constant time. A push to the tracked branch wakes the poller; a pull
//! (merge) request opened or updated against it asks for a plan of its head commit;
//! anything else is answered and ignored. Polling stays the ground truth: a lost webhook
//! only means the change arrives at the next poll.
//!
//! A request is let through only when it is signed with the configured secret, which is
//! never empty (an HMAC with an empty key, or an empty GitLab token, proves nothing), or
//! when the config says `insecure: true`. With no `source.webhook` at all the endpoints
//! refuse everything ([`off_router`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::config::{Secret, SecretError, SecretRef};

/// What the webhook handlers need.
#[derive(Clone)]
pub struct WebhookState {
    /// The secret requests must be signed with; `None` only when the config says
    /// `insecure: true`. An empty secret lets nothing through.
    pub secret: Option<Secret>,
    /// The ref a push must name to matter, e.g. `refs/heads/main`.
    pub tracked_ref: Option<String>,
    pub wake: Arc<tokio::sync::Notify>,
    pub requests: prometheus::IntCounterVec,
    /// Where pull-request plans are asked for; `None` ignores pull requests.
    pub reviews: Option<tokio::sync::mpsc::Sender<PullRequest>>,
    /// Whether pull requests from forks are planned (`source.webhook.planForks`). A plan
    /// renders the head's files and dry-runs them on the clusters: from a fork, that is
    /// anyone on the forge, so by default they are not planned.
    pub plan_forks: bool,
}

/// A pull (merge) request whose head commit should be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// The head commit.
    pub sha: String,
    /// Where the base repository keeps the head: `refs/pull/7/head` (GitHub, Gitea),
    /// `refs/merge-requests/7/head` (GitLab).
    pub head_ref: String,
    /// Whether the head lives in another repository than the base (a fork); a deleted
    /// fork counts as one.
    pub from_fork: bool,
}

/// Which forge sent an event: their pull-request payloads differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    Github,
    Gitea,
    Gitlab,
}

/// The pull request an event asks to plan: opened, reopened or updated, against the
/// tracked branch (any branch when pontoon tracks a tag or a commit).
pub fn pull_request(forge: Forge, body: &[u8], tracked_ref: Option<&str>) -> Option<PullRequest> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let str_at = |p: &str| v.pointer(p).and_then(|x| x.as_str());
    let (action, number, sha, base, head_ref, from_fork) = match forge {
        Forge::Github | Forge::Gitea => {
            let number = v.get("number").and_then(|n| n.as_u64())?;
            let head_repo = str_at("/pull_request/head/repo/full_name");
            (
                str_at("/action")?,
                number,
                str_at("/pull_request/head/sha")?,
                str_at("/pull_request/base/ref")?,
                format!("refs/pull/{number}/head"),
                head_repo.is_none() || head_repo != str_at("/pull_request/base/repo/full_name"),
            )
        }
        Forge::Gitlab => {
            let number = v
                .pointer("/object_attributes/iid")
                .and_then(|n| n.as_u64())?;
            let project = |p: &str| v.pointer(p).and_then(serde_json::Value::as_u64);
            let source = project("/object_attributes/source_project_id");
            (
                str_at("/object_attributes/action")?,
                number,
                str_at("/object_attributes/last_commit/id")?,
                str_at("/object_attributes/target_branch")?,
                format!("refs/merge-requests/{number}/head"),
                source.is_none() || source != project("/object_attributes/target_project_id"),
            )
        }
    };
    // GitHub says `synchronize`, Gitea `synchronized`, GitLab `update`.
    let planned = matches!(
        action,
        "opened" | "reopened" | "synchronize" | "synchronized" | "open" | "reopen" | "update"
    );
    if !planned {
        return None;
    }
    if let Some(tracked) = tracked_ref.and_then(|r| r.strip_prefix("refs/heads/")) {
        if base != tracked {
            return None;
        }
    } else if tracked_ref.is_some() {
        // A tag is tracked: pull requests do not change what is deployed.
        return None;
    }
    if sha.len() < 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(PullRequest {
        number,
        sha: sha.to_owned(),
        head_ref,
        from_fork,
    })
}

/// Why the webhook secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSecretError {
    #[error("source.webhook.secret: {0}")]
    Read(#[from] SecretError),
    #[error(
        "source.webhook.secret: the secret is empty; an empty secret would let any request through"
    )]
    Empty,
}

/// Reads the webhook secret (at start), refusing an empty one.
pub fn read_secret(r: &SecretRef) -> Result<Secret, WebhookSecretError> {
    let secret = r.read()?;
    if secret.expose().trim().is_empty() {
        return Err(WebhookSecretError::Empty);
    }
    Ok(secret)
}

/// Routes under `/webhooks/`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitea", post(gitea))
        .route("/webhooks/gitlab", post(gitlab))
        .with_state(state)
}

/// Routes under `/webhooks/` when no `source.webhook` is configured: every request is
/// answered 404 with what to configure, and counted as `off`.
pub fn off_router(requests: prometheus::IntCounterVec) -> Router {
    let off = |provider: &'static str| {
        let requests = requests.clone();
        post(move || async move {
            requests.with_label_values(&[provider, "off"]).inc();
            (
                StatusCode::NOT_FOUND,
                "webhooks are off: set source.webhook.secret (or source.webhook.insecure: true)",
            )
        })
    };
    Router::new()
        .route("/webhooks/github", off("github"))
        .route("/webhooks/gitea", off("gitea"))
        .route("/webhooks/gitlab", off("gitlab"))
}

/// Whether a request may act: with a secret, only one that `verify` accepts for it;
/// with none (`insecure: true`), any. An empty secret accepts nothing.
fn authorized(secret: Option<&Secret>, verify: impl FnOnce(&str) -> bool) -> bool {
    match secret {
        None => true,
        Some(s) if s.expose().is_empty() => false,
        Some(s) => verify(s.expose()),
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

enum Verdict {
    Unauthorized,
    Ignored,
    Poll,
    Plan(PullRequest),
}

fn push_ref(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("ref")?
        .as_str()
        .map(str::to_owned)
}

/// What kind of event a request carries.
#[derive(PartialEq, Eq)]
enum Event {
    Push,
    PullRequest(Forge),
    Other,
}

fn decide(s: &WebhookState, authorized: bool, event: Event, body: &[u8]) -> Verdict {
    if !authorized {
        return Verdict::Unauthorized;
    }
    if let Event::PullRequest(forge) = event {
        return match (
            &s.reviews,
            pull_request(forge, body, s.tracked_ref.as_deref()),
        ) {
            (Some(_), Some(pr)) if !pr.from_fork || s.plan_forks => Verdict::Plan(pr),
            _ => Verdict::Ignored,
        };
    }
    if event != Event::Push {
        return Verdict::Ignored;
    }
    match (&s.tracked_ref, push_ref(body)) {
        (Some(want), Some(got)) if *want == got => Verdict::Poll,
        (None, Some(_)) => Verdict::Poll,
        _ => Verdict::Ignored,
    }
}

fn answer(s: &WebhookState, provider: &str, v: Verdict) -> (StatusCode, &'static str) {
    let (code, text, result) = match v {
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "bad or missing signature",
            "unauthorized",
        ),
        Verdict::Ignored => (StatusCode::ACCEPTED, "ignored", "ignored"),
        Verdict::Poll => {
            s.wake.notify_one();
            (StatusCode::ACCEPTED, "polling", "poll")
        }
        Verdict::Plan(pr) => match s.reviews.as_ref().map(|tx| tx.try_send(pr)) {
            Some(Ok(())) => (StatusCode::ACCEPTED, "planning", "plan"),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many plans queued; retry later",
                "busy",
            ),
        },
    };
    s.requests.with_label_values(&[provider, result]).inc();
    (code, text)
}

async fn github(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = authorized(s.secret.as_ref(), |key| {
        header(&h, "x-hub-signature-256")
            .is_some_and(|sig| equal(sig, &format!("sha256={}", hmac_hex(key, &body))))
    });
    let event = match header(&h, "x-github-event") {
        Some("push") => Event::Push,
        Some("pull_request") => Event::PullRequest(Forge::Github),
        _ => Event::Other,
    };
    let v = decide(&s, authorized, event, &body);
    answer(&s, "github", v)
}

async fn gitea(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = authorized(s.secret.as_ref(), |key| {
        header(&h, "x-gitea-signature").is_some_and(|sig| equal(sig, &hmac_hex(key, &body)))
    });
    let event = match header(&h, "x-gitea-event") {
        Some("push") => Event::Push,
        Some("pull_request") => Event::PullRequest(Forge::Gitea),
        _ => Event::Other,
    };
    let v = decide(&s, authorized, event, &body);
    answer(&s, "gitea", v)
}

async fn gitlab(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = authorized(s.secret.as_ref(), |key| {
        header(&h, "x-gitlab-token").is_some_and(|token| equal(token, key))
    });
    let event = match header(&h, "x-gitlab-event") {
        Some("Push Hook") => Event::Push,
        Some("Merge Request Hook") => Event::PullRequest(Forge::Gitlab),
        _ => Event::Other,
    };
    let v = decide(&s, authorized, event, &body);
    answer(&s, "gitlab", v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";

    #[test]
    fn gitea_and_github_pull_requests_against_the_tracked_branch() {
        for (forge, action) in [
            (Forge::Gitea, "synchronized"),
            (Forge::Github, "synchronize"),
        ] {
            let body = serde_json::json!({
                "action": action,
                "number": 7,
                "pull_request": {"head": {"ref": "feature", "sha": SHA, "repo": {"full_name": "org/platform"}},
                    "base": {"ref": "main", "repo": {"full_name": "org/platform"}}},
            })
            .to_string();
            assert_eq!(
                pull_request(forge, body.as_bytes(), Some("refs/heads/main")),
                Some(PullRequest {
                    number: 7,
                    sha: SHA.into(),
                    head_ref: "refs/pull/7/head".into(),
                    from_fork: false,
                })
            );
            // From a fork (or a fork since deleted): planned only where the config says.
            for head_repo in [json!({"full_name": "mallory/platform"}), json!(null)] {
                let mut fork: serde_json::Value = serde_json::from_str(&body).expect("json");
                fork["pull_request"]["head"]["repo"] = head_repo;
                let fork = fork.to_string();
                let pr = pull_request(forge, fork.as_bytes(), Some("refs/heads/main"));
                assert_eq!(pr.as_ref().map(|p| p.from_fork), Some(true), "{fork}");
                let (tx, _rx) = tokio::sync::mpsc::channel(1);
                let mut state = WebhookState {
                    secret: None,
                    tracked_ref: Some("refs/heads/main".into()),
                    wake: Default::default(),
                    requests: prometheus::IntCounterVec::new(
                        prometheus::Opts::new("t", "t"),
                        &["provider", "result"],
                    )
                    .expect("counter"),
                    reviews: Some(tx),
                    plan_forks: false,
                };
                let event = || Event::PullRequest(forge);
                assert!(matches!(
                    decide(&state, true, event(), fork.as_bytes()),
                    Verdict::Ignored
                ));
                state.plan_forks = true;
                assert!(matches!(
                    decide(&state, true, event(), fork.as_bytes()),
                    Verdict::Plan(_)
                ));
            }
            // Against another branch, or closed: nothing to plan.
            assert_eq!(
                pull_request(forge, body.as_bytes(), Some("refs/heads/release")),
                None
            );
            let closed = body.replace(action, "closed");
            assert_eq!(
                pull_request(forge, closed.as_bytes(), Some("refs/heads/main")),
                None
            );
        }
    }

    #[test]
    fn gitlab_merge_requests() {
        let body = serde_json::json!({
            "object_kind": "merge_request",
            "object_attributes": {"iid": 3, "action": "update", "target_branch": "main",
                "last_commit": {"id": SHA}, "source_project_id": 12, "target_project_id": 12},
        })
        .to_string();
        let fork = body.replace("\"source_project_id\":12", "\"source_project_id\":99");
        assert_ne!(fork, body);
        let from = |b: &str| {
            pull_request(Forge::Gitlab, b.as_bytes(), Some("refs/heads/main")).map(|p| p.from_fork)
        };
        assert_eq!((from(&body), from(&fork)), (Some(false), Some(true)));
        let pr = pull_request(Forge::Gitlab, body.as_bytes(), Some("refs/heads/main"));
        assert_eq!(
            pr.map(|p| p.head_ref),
            Some("refs/merge-requests/3/head".to_owned())
        );
    }

    #[test]
    fn an_empty_secret_accepts_nothing_and_no_secret_only_when_insecure() {
        let empty = Secret::new("");
        assert!(!authorized(Some(&empty), |_| true));
        let secret = Secret::new("s3cret");
        assert!(authorized(Some(&secret), |key| key == "s3cret"));
        assert!(!authorized(Some(&secret), |_| false));
        assert!(authorized(None, |_| false));
    }

    #[test]
    fn an_empty_secret_file_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "\n").expect("write");
        let e = read_secret(&SecretRef::File(path.clone())).expect_err("empty");
        assert!(matches!(e, WebhookSecretError::Empty), "{e:?}");
        std::fs::write(&path, "s3cret\n").expect("write");
        let s = read_secret(&SecretRef::File(path)).expect("read");
        assert_eq!(s.expose(), "s3cret");
    }

    #[test]
    fn a_head_that_is_not_a_commit_id_is_refused() {
        let body = serde_json::json!({
            "action": "opened", "number": 1,
            "pull_request": {"head": {"sha": "--upload-pack=evil"}, "base": {"ref": "main"}},
        })
        .to_string();
        assert_eq!(pull_request(Forge::Github, body.as_bytes(), None), None);
    }
}
