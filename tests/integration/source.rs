//! The Git source against real repositories over file://, and the directory source.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pontoon::config::GitRef;
use pontoon::source::git::{GitTarget, ResolvedAuth};
use pontoon::source::{Source, SourceError};

use crate::support::git::{count_files, git};

struct Remote {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    cache: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        let bare = tmp.path().join("remote.git");
        std::fs::create_dir(&work).expect("mkdir");
        git(&work, &["init", "-q"]);
        Remote {
            cache: tmp.path().join("cache"),
            _tmp: tmp,
            work,
            bare,
        }
    }

    fn commit(&self, file: &str, content: &str) -> String {
        let p = self.work.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("change {file}")],
        );
        if !self.bare.exists() {
            git(
                self.work.parent().expect("parent"),
                &["clone", "-q", "--bare", "work", "remote.git"],
            );
        } else {
            git(
                &self.work,
                &[
                    "push",
                    "-q",
                    "--force",
                    self.bare.to_str().expect("path"),
                    "main",
                ],
            );
        }
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn source(&self) -> Source {
        Source::git(GitTarget {
            url: format!("file://{}", self.bare.display()),
            git_ref: GitRef::Branch("main".into()),
            cache_dir: self.cache.clone(),
            auth: ResolvedAuth::default(),
            timeout: Duration::from_secs(60),
        })
    }
}

#[tokio::test]
async fn new_commits_are_picked_up_and_an_unchanged_ref_is_not_fetched() {
    let r = Remote::new();
    let c1 = r.commit("teams/a/team.yaml", "one");
    let mut s = r.source();
    let p = s.poll().await;
    let snap = p
        .new
        .unwrap_or_else(|| panic!("first poll brings a snapshot: {:?}", p.error));
    assert_eq!(snap.revision, c1);
    assert_eq!(snap.files["teams/a/team.yaml"], b"one");
    assert!(snap.message.contains("change teams/a/team.yaml"));

    // Nothing moved: no snapshot, and the cache gains no objects.
    let before = count_files(&r.cache);
    let p = s.poll().await;
    assert!(p.new.is_none() && p.error.is_none(), "{p:?}");
    assert_eq!(
        count_files(&r.cache),
        before,
        "a no-change poll must not fetch"
    );

    let c2 = r.commit("teams/a/app.yaml", "two");
    let snap = s.poll().await.new.expect("new commit");
    assert_eq!(snap.revision, c2);
    assert_eq!(snap.files.len(), 2);
}

#[tokio::test]
async fn force_push_deleted_ref_and_remote_down_keep_the_last_good_snapshot() {
    let r = Remote::new();
    r.commit("a.yaml", "1");
    let c2 = r.commit("a.yaml", "2");
    let mut s = r.source();
    assert_eq!(s.poll().await.new.expect("snapshot").revision, c2);

    // Force push: history rewritten to a sibling commit.
    git(&r.work, &["reset", "-q", "--hard", "HEAD~1"]);
    let c3 = r.commit("a.yaml", "3");
    let p = s.poll().await;
    assert_eq!(p.new.as_ref().expect("snapshot").revision, c3);
    assert!(p.forced, "a non-fast-forward move is reported");

    // The remote goes away: an error, and the last snapshot is still served.
    std::fs::rename(&r.bare, r.bare.with_extension("moved")).expect("rename");
    let p = s.poll().await;
    assert!(matches!(p.error, Some(SourceError::Remote(_))), "{p:?}");
    assert_eq!(s.last().expect("last good").revision, c3);
    std::fs::rename(r.bare.with_extension("moved"), &r.bare).expect("rename back");
    let p = s.poll().await;
    assert!(
        p.error.is_none() && p.new.is_none(),
        "back, unchanged: {p:?}"
    );

    // The branch is deleted on the remote.
    git(&r.bare, &["branch", "-m", "main", "renamed"]);
    let p = s.poll().await;
    match p.error {
        Some(SourceError::Ref(m)) => assert!(m.contains("refs/heads/main does not exist"), "{m}"),
        other => panic!("expected a ref error, got {other:?}"),
    }
    assert_eq!(s.last().expect("last good").revision, c3);
}

#[tokio::test]
async fn a_corrupted_cache_is_rebuilt() {
    let r = Remote::new();
    let c1 = r.commit("a.yaml", "1");
    let mut s = r.source();
    assert_eq!(s.poll().await.new.expect("snapshot").revision, c1);
    // Wreck the cache repository.
    std::fs::remove_dir_all(r.cache.join("objects")).expect("rm objects");
    std::fs::write(r.cache.join("HEAD"), "garbage").expect("write");
    let c2 = r.commit("a.yaml", "2");
    let p = s.poll().await;
    assert!(p.error.is_none(), "{p:?}");
    assert_eq!(p.new.expect("snapshot").revision, c2);
}

#[tokio::test]
async fn symlinks_are_reported_never_followed() {
    let r = Remote::new();
    std::os::unix::fs::symlink("/etc/passwd", r.work.join("escape.yaml")).expect("symlink");
    r.commit("teams/a/team.yaml", "x");
    let mut s = r.source();
    let snap = s.poll().await.new.expect("snapshot");
    assert!(!snap.files.contains_key("escape.yaml"));
    assert!(
        snap.skipped
            .iter()
            .any(|e| e.to_string().contains("escape.yaml (symlink")),
        "{:?}",
        snap.skipped
    );
}

#[tokio::test]
async fn a_directory_source_sees_a_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("teams/a")).expect("mkdir");
    std::fs::write(dir.path().join("teams/a/team.yaml"), "one").expect("write");
    let wake = Arc::new(tokio::sync::Notify::new());
    let _watch = pontoon::source::dir::watch(dir.path(), wake.clone()).expect("watch");
    let cfg = pontoon::config::SourceConfig {
        location: pontoon::config::SourceLocation::Directory(dir.path().to_owned()),
        poll_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(60),
        webhook: pontoon::config::WebhookAuth::Off,
        plan_forks: false,
        cache_dir: dir.path().join(".cache"),
    };
    let mut s = Source::from_config(&cfg).expect("source");
    let first = s.poll().await.new.expect("snapshot");
    std::fs::write(dir.path().join("teams/a/team.yaml"), "two").expect("write");
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("the watch fires on a save");
    let second = s.poll().await.new.expect("changed snapshot");
    assert_ne!(first.revision, second.revision);
    assert_eq!(second.files["teams/a/team.yaml"], b"two");
}
