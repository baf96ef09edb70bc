//! The Gitea harness itself: a repository created over the API, a commit pushed over
//! HTTP, and a commit status written with the token and read back.

use reqwest::Method;
use serde_json::json;

use crate::support::control_plane::unique_name;
use crate::support::git::git;
use crate::support::gitea;

#[tokio::test]
async fn a_commit_status_posted_with_the_token_is_read_back() {
    let gitea = gitea::shared();
    let repo = unique_name("status");
    gitea.create_repo(&repo).await;

    let work = tempfile::tempdir().expect("tempdir");
    git(work.path(), &["init", "-q"]);
    std::fs::write(work.path().join("README"), "hello\n").expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "first"]);
    let sha = git(work.path(), &["rev-parse", "HEAD"]);
    gitea.push(work.path(), &repo, "main");

    let path = format!("/repos/{}/{repo}/statuses/{sha}", gitea.user());
    let resp = gitea
        .api(Method::POST, &path)
        .json(&json!({
            "state": "success",
            "context": "pontoon/prod",
            "description": "synced",
            "target_url": format!("{}/somewhere", gitea.url()),
        }))
        .send()
        .await
        .expect("POST status");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED, "POST {path}");

    let statuses = gitea.statuses(&repo, &sha).await;
    let list = statuses.as_array().expect("a list of statuses");
    assert_eq!(list.len(), 1, "{statuses:#}");
    assert_eq!(list[0]["status"], "success", "{statuses:#}");
    assert_eq!(list[0]["context"], "pontoon/prod", "{statuses:#}");
    assert_eq!(list[0]["description"], "synced", "{statuses:#}");
}

#[tokio::test]
async fn polling_over_http_with_a_wrong_token_is_a_clear_auth_error() {
    use pontoon::config::{GitRef, Secret};
    use pontoon::source::SourceError;
    use pontoon::source::git::{GitTarget, Polled, ResolvedAuth, poll};

    let gitea = gitea::shared();
    let repo = unique_name("private");
    gitea.create_repo(&repo).await;
    // Private, so reading it needs the token.
    let resp = gitea
        .api(Method::PATCH, &format!("/repos/{}/{repo}", gitea.user()))
        .json(&json!({"private": true}))
        .send()
        .await
        .expect("make private");
    assert!(resp.status().is_success());
    let work = tempfile::tempdir().expect("tempdir");
    git(work.path(), &["init", "-q"]);
    std::fs::write(work.path().join("platform.yaml"), "kind: Platform\n").expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "first"]);
    gitea.push(work.path(), &repo, "main");
    let head = git(work.path(), &["rev-parse", "HEAD"]);

    let url = format!(
        "http://{}/{}/{repo}.git",
        gitea.url().trim_start_matches("http://"),
        gitea.user()
    );
    let target = |token: &str, cache: &std::path::Path| GitTarget {
        url: url.clone(),
        git_ref: GitRef::Branch("main".into()),
        cache_dir: cache.to_path_buf(),
        auth: ResolvedAuth {
            username: Some(gitea.user().to_owned()),
            password: Some(Secret::new(token)),
            ..ResolvedAuth::default()
        },
    };
    let cache = tempfile::tempdir().expect("cache");
    let wrong = "0000000000000000000000000000000000000000";
    let t = target(wrong, cache.path());
    let err = tokio::task::spawn_blocking(move || poll(&t, None))
        .await
        .expect("join")
        .expect_err("a wrong token is refused");
    assert!(matches!(err, SourceError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains(wrong), "{err}");

    let t = target(gitea.token(), cache.path());
    let polled = tokio::task::spawn_blocking(move || poll(&t, None))
        .await
        .expect("join")
        .expect("the right token works");
    match polled {
        Polled::Changed { snapshot, .. } => assert_eq!(snapshot.revision, head),
        Polled::Unchanged => panic!("first poll"),
    }
}
