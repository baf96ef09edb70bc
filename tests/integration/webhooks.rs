//! The webhook endpoints over HTTP with real payloads: GitHub's own examples (npm package
//! `@octokit/webhooks-examples`) and GitLab's as its documentation shows them, each signed
//! the way the forge signs it; good, bad and missing signatures. (Gitea's are sent by a
//! real Gitea in the forge tests.)

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use pontoon::config::Secret;
use pontoon::source::webhook::{PullRequest, WebhookState, router};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::support::control_plane::repo_root;
use crate::support::npm;

struct Endpoint {
    base: String,
    wake: Arc<Notify>,
    plans: mpsc::Receiver<PullRequest>,
    requests: prometheus::IntCounterVec,
}

async fn serve(tracked: &str) -> Endpoint {
    let wake = Arc::new(Notify::new());
    let (tx, plans) = mpsc::channel(64);
    let requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new("webhooks", "test"),
        &["provider", "result"],
    )
    .expect("counter");
    let app = router(WebhookState {
        secret: Some(Secret::new("s3cret")),
        tracked_ref: Some(tracked.to_owned()),
        wake: wake.clone(),
        requests: requests.clone(),
        reviews: Some(tx),
        plan_forks: false,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint {
        base,
        wake,
        plans,
        requests,
    }
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn github_examples(event: &str) -> Vec<Value> {
    let index = npm::package("@octokit/webhooks-examples").join("api.github.com/index.json");
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(&index).expect("examples")).expect("json");
    all.as_array()
        .expect("events")
        .iter()
        .find(|e| e["name"] == event)
        .and_then(|e| e["examples"].as_array())
        .unwrap_or_else(|| panic!("no {event} examples"))
        .clone()
}

async fn post(base: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("webhook request");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn github_push_examples_poll_only_for_the_tracked_branch() {
    let mut e = serve("refs/heads/master").await;
    let mut polled = 0;
    for example in github_examples("push") {
        let body = serde_json::to_vec(&example).expect("json");
        let headers = [
            ("X-GitHub-Event", "push".to_owned()),
            ("X-Hub-Signature-256", github_signature("s3cret", &body)),
        ];
        let (code, text) = post(&e.base, "/webhooks/github", &headers, &body).await;
        assert_eq!(code, 202);
        if example["ref"] == "refs/heads/master" {
            assert_eq!(text, "polling");
            tokio::time::timeout(Duration::from_secs(2), e.wake.notified())
                .await
                .expect("the poller is woken");
            polled += 1;
        } else {
            assert_eq!(text, "ignored", "{}", example["ref"]);
        }
    }
    assert!(polled >= 1, "the examples hold a push to master");
    assert!(e.plans.try_recv().is_err(), "a push asks for no plan");
}

#[tokio::test]
async fn bad_and_missing_signatures_are_refused_and_counted() {
    let e = serve("refs/heads/master").await;
    let body = serde_json::to_vec(&github_examples("push")[0]).expect("json");
    let wrong = [
        ("X-GitHub-Event", "push".to_owned()),
        ("X-Hub-Signature-256", github_signature("guess", &body)),
    ];
    assert_eq!(
        post(&e.base, "/webhooks/github", &wrong, &body).await.0,
        401
    );
    let missing = [("X-GitHub-Event", "push".to_owned())];
    assert_eq!(
        post(&e.base, "/webhooks/github", &missing, &body).await.0,
        401
    );
    // A body changed after signing.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signed = [
        ("X-GitHub-Event", "push".to_owned()),
        ("X-Hub-Signature-256", github_signature("s3cret", &body)),
    ];
    assert_eq!(
        post(&e.base, "/webhooks/github", &signed, &tampered)
            .await
            .0,
        401
    );
    let gitlab = std::fs::read(repo_root().join("tests/fixtures/webhooks/gitlab-push.json"))
        .expect("fixture");
    let wrong_token = [
        ("X-Gitlab-Event", "Push Hook".to_owned()),
        ("X-Gitlab-Token", "guess".to_owned()),
    ];
    assert_eq!(
        post(&e.base, "/webhooks/gitlab", &wrong_token, &gitlab)
            .await
            .0,
        401
    );
    let gitea_unsigned = [("X-Gitea-Event", "push".to_owned())];
    assert_eq!(
        post(&e.base, "/webhooks/gitea", &gitea_unsigned, &gitlab)
            .await
            .0,
        401
    );
    let count = |p: &str| e.requests.with_label_values(&[p, "unauthorized"]).get();
    assert_eq!(
        (count("github"), count("gitlab"), count("gitea")),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn github_pull_request_examples_ask_for_plans_of_their_heads() {
    let mut e = serve("refs/heads/master").await;
    let mut planned = 0;
    for example in github_examples("pull_request") {
        let body = serde_json::to_vec(&example).expect("json");
        let headers = [
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-Hub-Signature-256", github_signature("s3cret", &body)),
        ];
        let (code, text) = post(&e.base, "/webhooks/github", &headers, &body).await;
        assert_eq!(code, 202);
        let action = example["action"].as_str().unwrap_or("");
        let head_repo = example["pull_request"]["head"]["repo"]["full_name"].as_str();
        let fork = head_repo.is_none()
            || head_repo != example["pull_request"]["base"]["repo"]["full_name"].as_str();
        if ["opened", "reopened", "synchronize"].contains(&action) && !fork {
            assert_eq!(text, "planning", "{action}");
            let pr = e.plans.recv().await.expect("a plan request");
            let number = example["number"].as_u64().expect("number");
            assert_eq!(pr.number, number);
            assert_eq!(
                pr.sha,
                example["pull_request"]["head"]["sha"]
                    .as_str()
                    .expect("head sha")
            );
            assert_eq!(pr.head_ref, format!("refs/pull/{number}/head"));
            planned += 1;
        } else {
            // Closed and labelled events, and pull requests from forks (not planned
            // unless `source.webhook.planForks` says so).
            assert_eq!(text, "ignored", "{action}, fork: {fork}");
        }
    }
    assert!(
        planned >= 3,
        "opened, reopened and synchronize examples: {planned}"
    );
    assert!(e.plans.try_recv().is_err());
}

#[tokio::test]
async fn gitlab_push_and_merge_request_hooks() {
    let mut e = serve("refs/heads/master").await;
    let token = [("X-Gitlab-Token", "s3cret".to_owned())];
    let push = std::fs::read(repo_root().join("tests/fixtures/webhooks/gitlab-push.json"))
        .expect("fixture");
    let headers = [token[0].clone(), ("X-Gitlab-Event", "Push Hook".to_owned())];
    assert_eq!(
        post(&e.base, "/webhooks/gitlab", &headers, &push).await,
        (202, "polling".to_owned())
    );
    let mr = std::fs::read(repo_root().join("tests/fixtures/webhooks/gitlab-merge-request.json"))
        .expect("fixture");
    let headers = [
        token[0].clone(),
        ("X-Gitlab-Event", "Merge Request Hook".to_owned()),
    ];
    assert_eq!(
        post(&e.base, "/webhooks/gitlab", &headers, &mr).await,
        (202, "planning".to_owned())
    );
    let pr = e.plans.recv().await.expect("plan request");
    assert_eq!(pr.number, 1);
    assert_eq!(pr.sha, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(pr.head_ref, "refs/merge-requests/1/head");
}
