//! Webhooks that make the next poll happen now: GitHub (`X-Hub-Signature-256`), Gitea
//! (`X-Gitea-Signature`) and GitLab (`X-Gitlab-Token`) push events. Signatures are
//! checked in constant time. A push to the tracked branch wakes the poller; anything
//! else is answered and ignored. Polling stays the ground truth: a lost webhook only
//! means the change arrives at the next poll.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// What the webhook handlers need.
#[derive(Clone)]
pub struct WebhookState {
    pub secret: Option<Secret>,
    /// The ref a push must name to matter, e.g. `refs/heads/main`.
    pub tracked_ref: Option<String>,
    pub wake: Arc<tokio::sync::Notify>,
    pub requests: prometheus::IntCounterVec,
}

/// Routes under `/webhooks/`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitea", post(gitea))
        .route("/webhooks/gitlab", post(gitlab))
        .with_state(state)
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
}

fn push_ref(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("ref")?
        .as_str()
        .map(str::to_owned)
}

fn decide(s: &WebhookState, authorized: bool, is_push: bool, body: &[u8]) -> Verdict {
    if !authorized {
        return Verdict::Unauthorized;
    }
    if !is_push {
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
    };
    s.requests.with_label_values(&[provider, result]).inc();
    (code, text)
}

async fn github(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = match (&s.secret, header(&h, "x-hub-signature-256")) {
        (Some(secret), Some(sig)) => {
            equal(sig, &format!("sha256={}", hmac_hex(secret.expose(), &body)))
        }
        (None, _) => true,
        (Some(_), None) => false,
    };
    let v = decide(
        &s,
        authorized,
        header(&h, "x-github-event") == Some("push"),
        &body,
    );
    answer(&s, "github", v)
}

async fn gitea(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = match (&s.secret, header(&h, "x-gitea-signature")) {
        (Some(secret), Some(sig)) => equal(sig, &hmac_hex(secret.expose(), &body)),
        (None, _) => true,
        (Some(_), None) => false,
    };
    let v = decide(
        &s,
        authorized,
        header(&h, "x-gitea-event") == Some("push"),
        &body,
    );
    answer(&s, "gitea", v)
}

async fn gitlab(
    State(s): State<WebhookState>,
    h: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let authorized = match (&s.secret, header(&h, "x-gitlab-token")) {
        (Some(secret), Some(token)) => equal(token, secret.expose()),
        (None, _) => true,
        (Some(_), None) => false,
    };
    let v = decide(
        &s,
        authorized,
        header(&h, "x-gitlab-event") == Some("Push Hook"),
        &body,
    );
    answer(&s, "gitlab", v)
}
