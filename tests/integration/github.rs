//! pontoon's GitHub commit status requests checked against GitHub's own published API
//! description (`@octokit/openapi`), served by Prism in its request-validating mode: a
//! request that breaks the description is refused, and would fail these tests.

use pontoon::config::{CommitStatusConfig, Provider, SecretRef};
use pontoon::status::forge::{Forge, Outcome};
use pontoon::status::{State, Status};
use serde_json::json;

use crate::support::prism;

fn status(state: State, description: &str) -> Status {
    Status {
        sha: "6dcb09b5b57875f334f61aebed695e2e4193db5e".into(),
        context: "pontoon/prod/payments".into(),
        state,
        description: description.into(),
        cluster: Some("prod".into()),
        team: Some("payments".into()),
    }
}

#[tokio::test]
async fn every_status_pontoon_posts_is_valid_for_githubs_api_description() {
    let url = prism::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("token");
    std::fs::write(&token, "ghp_not_a_real_token\n").expect("token");
    let forge = Forge::new(&CommitStatusConfig {
        provider: Provider::Github,
        api_url: url.clone(),
        repository: "octo-org/platform".into(),
        token: SecretRef::File(token),
        target_url: Some("https://pontoon.example.com/#{cluster}/{team}".into()),
    })
    .expect("forge");
    for (state, description) in [
        (State::Pending, "syncing"),
        (State::Success, "applied 12 (+3 ~1), pruned 1, 0 drift"),
        (
            State::Failure,
            "Failed: 1 object failed; first: Deployment payments/web: …",
        ),
        (State::Error, "superseded by 1a2b3c4 before it finished"),
    ] {
        assert_eq!(
            forge.send(&status(state, description)).await,
            Outcome::Posted,
            "{state:?}"
        );
    }
    // The plan status and the cluster summary: no team, no cluster in the URL.
    let plan = Status::plan(
        "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        State::Success,
        "staging +3 ~1 -0, prod +3 ~1 -0",
    );
    assert_eq!(forge.send(&plan).await, Outcome::Posted);
}

#[tokio::test]
async fn the_validator_refuses_what_github_would() {
    let url = prism::shared();
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(format!(
            "{url}/repos/octo-org/platform/statuses/6dcb09b5b57875f334f61aebed695e2e4193db5e"
        ))
        .json(&body)
        .send()
    };
    let bad_state = post(json!({"state": "done", "context": "pontoon/prod"}))
        .await
        .expect("request");
    assert_eq!(bad_state.status(), 422);
    let text = bad_state.text().await.expect("body");
    assert!(text.contains("state"), "{text}");
    let missing = post(json!({"context": "pontoon/prod"}))
        .await
        .expect("request");
    assert_eq!(missing.status(), 422, "state is required");
    // And pontoon reads such an answer as a refusal for good, with GitHub's reason.
    let forge = Forge::new(&CommitStatusConfig {
        provider: Provider::Github,
        api_url: format!("{url}/no-such-prefix"),
        repository: "octo-org/platform".into(),
        token: SecretRef::Env("HOME".into()),
        target_url: None,
    })
    .expect("forge");
    assert!(matches!(
        forge.send(&status(State::Success, "x")).await,
        Outcome::Rejected(_)
    ));
}
