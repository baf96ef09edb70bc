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
