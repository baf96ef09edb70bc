//! The Gitea harness itself: a repository created over the API, a commit pushed over
//! HTTP, a commit status written with the token and read back, and pontoon polling the
//! repository over Git's smart HTTP with the token; a fetch that outlives its timeout is
//! cancelled and never overlaps the next job on the same cache.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::control_plane::unique_name;
use crate::support::git::{count_files, git};
use crate::support::gitea;
use crate::support::slow_link::SlowLink;

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
async fn polling_over_http_refuses_a_wrong_token_then_follows_pushes_and_force_pushes() {
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
        timeout: Duration::from_secs(60),
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

    // The same transport for the rest of the life of a source: an unchanged ref fetches
    // nothing, a new commit arrives, a force push is reported as one.
    let poll_from = |last: String| {
        let t = target(gitea.token(), cache.path());
        async move {
            tokio::task::spawn_blocking(move || poll(&t, Some(&last)))
                .await
                .expect("join")
        }
    };
    let objects = count_files(&cache.path().join("objects"));
    match poll_from(head.clone()).await.expect("no-change poll") {
        Polled::Unchanged => {}
        Polled::Changed { snapshot, .. } => panic!("nothing moved, got {}", snapshot.revision),
    }
    assert_eq!(
        count_files(&cache.path().join("objects")),
        objects,
        "a no-change poll fetched"
    );

    std::fs::write(work.path().join("teams.yaml"), "second\n").expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "second"]);
    gitea.push(work.path(), &repo, "main");
    let second = git(work.path(), &["rev-parse", "HEAD"]);
    match poll_from(head.clone()).await.expect("poll after a push") {
        Polled::Changed { snapshot, forced } => {
            assert_eq!(snapshot.revision, second);
            assert_eq!(snapshot.files["teams.yaml"], b"second\n");
            assert!(!forced, "a fast-forward is not a force push");
        }
        Polled::Unchanged => panic!("the pushed commit was not seen"),
    }

    git(work.path(), &["reset", "-q", "--hard", &head]);
    std::fs::write(work.path().join("other.yaml"), "rewritten\n").expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "rewritten"]);
    git(
        work.path(),
        &[
            "-c",
            "credential.helper=",
            "push",
            "-q",
            "--force",
            &gitea.clone_url(&repo),
            "HEAD:refs/heads/main",
        ],
    );
    let rewritten = git(work.path(), &["rev-parse", "HEAD"]);
    match poll_from(second).await.expect("poll after a force push") {
        Polled::Changed { snapshot, forced } => {
            assert_eq!(snapshot.revision, rewritten);
            assert!(
                !snapshot.files.contains_key("teams.yaml"),
                "old tree served"
            );
            assert!(forced, "a force push must be reported");
        }
        Polled::Unchanged => panic!("the force-pushed commit was not seen"),
    }
}

#[tokio::test]
async fn a_fetch_past_its_timeout_is_cancelled_and_never_overlaps_the_next() {
    use pontoon::config::{GitRef, Secret};
    use pontoon::source::SourceError;
    use pontoon::source::git::{GitTarget, Polled, ResolvedAuth, poll};

    let gitea = gitea::shared();
    let repo = unique_name("slow");
    gitea.create_repo(&repo).await;
    let work = tempfile::tempdir().expect("tempdir");
    git(work.path(), &["init", "-q"]);
    std::fs::write(work.path().join("platform.yaml"), "kind: Platform\n").expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "first"]);
    gitea.push(work.path(), &repo, "main");
    let head = git(work.path(), &["rev-parse", "HEAD"]);

    // Every answer of the forge arrives 1.5 s late: listing the ref, then the fetch's own
    // round trips, put the pack's first bytes well past a 2 s timeout.
    let upstream = gitea
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("gitea address");
    let link = SlowLink::start(upstream).await;
    link.set_delay(Duration::from_millis(1500));
    let url = format!("http://{}/{}/{repo}.git", link.addr, gitea.user());
    let cache = tempfile::tempdir().expect("cache");
    let target = |timeout: Duration| GitTarget {
        url: url.clone(),
        git_ref: GitRef::Branch("main".into()),
        cache_dir: cache.path().to_path_buf(),
        auth: ResolvedAuth {
            username: Some(gitea.user().to_owned()),
            password: Some(Secret::new(gitea.token())),
            ..ResolvedAuth::default()
        },
        timeout,
    };

    let (slow, started) = (target(Duration::from_secs(2)), Instant::now());
    let first = tokio::task::spawn_blocking(move || (poll(&slow, None), started.elapsed()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next job on the same cache waits for it, up to its own deadline.
    let next = target(Duration::from_millis(500));
    let second = tokio::task::spawn_blocking(move || poll(&next, None))
        .await
        .expect("join");
    match second {
        Err(SourceError::Timeout(m)) => assert!(m.contains("still running"), "{m}"),
        other => panic!("a second fetch into a busy cache must wait and time out, got {other:?}"),
    }
    let (first, took) = first.await.expect("join");
    match first {
        Err(SourceError::Timeout(m)) => assert!(m.contains("cancelled"), "{m}"),
        other => panic!("a fetch past its timeout must be cancelled, got {other:?} after {took:?}"),
    }
    assert!(
        took < Duration::from_secs(8),
        "the cancelled fetch took {took:?}"
    );

    // The cache is whole and free again: a fast link fetches the commit.
    link.set_delay(Duration::ZERO);
    let fast = target(Duration::from_secs(60));
    let polled = tokio::task::spawn_blocking(move || poll(&fast, None))
        .await
        .expect("join")
        .expect("a poll after the cancelled one");
    match polled {
        Polled::Changed { snapshot, .. } => assert_eq!(snapshot.revision, head),
        Polled::Unchanged => panic!("first successful poll"),
    }
}
