//! The Git source over SSH against a real OpenSSH server (`git-ssh.sh`): key auth, the
//! server's host key checked against known_hosts, a new commit picked up, a no-change poll
//! that fetches nothing, and clear errors — naming no secret — for a wrong key, an unknown
//! host key and a host key that does not match.

use std::path::Path;
use std::sync::OnceLock;

use pontoon::config::{GitRef, Secret};
use pontoon::source::SourceError;
use pontoon::source::git::{GitTarget, Polled, ResolvedAuth, poll};

use crate::support::git::git;
use crate::support::script::Script;

fn server() -> &'static Script {
    static SSH: OnceLock<Script> = OnceLock::new();
    SSH.get_or_init(|| {
        Script::start(
            "git-ssh.sh",
            "git",
            "PONTOON_SSH_CLEANUP",
            "it needs OpenSSH's sshd and ssh-keygen (apt-get install openssh-server; make test does)",
        )
    })
}

fn repo(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let work = root.join("work");
    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("platform.yaml"), "kind: Platform\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(root, &["clone", "-q", "--bare", "work", "platform.git"]);
    (work, root.join("platform.git"))
}

fn target(bare: &Path, cache: &Path, auth: ResolvedAuth) -> GitTarget {
    let s = server();
    GitTarget {
        url: format!(
            "ssh://{}@127.0.0.1:{}{}",
            s.get("SSH_USER"),
            s.get("SSH_PORT"),
            bare.display()
        ),
        git_ref: GitRef::Branch("main".into()),
        cache_dir: cache.to_path_buf(),
        auth,
        timeout: std::time::Duration::from_secs(60),
    }
}

fn key() -> String {
    std::fs::read_to_string(server().get("SSH_KEY")).expect("client key")
}

fn good_auth() -> ResolvedAuth {
    ResolvedAuth {
        ssh_key: Some(Secret::new(key())),
        known_hosts: Some(server().get("SSH_KNOWN_HOSTS") + "\n"),
        ..ResolvedAuth::default()
    }
}

#[test]
fn commits_arrive_over_ssh_with_the_host_key_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (work, bare) = repo(tmp.path());
    let cache = tmp.path().join("cache");
    let t = target(&bare, &cache, good_auth());
    let first = match poll(&t, None).expect("first poll") {
        Polled::Changed { snapshot, .. } => snapshot,
        Polled::Unchanged => panic!("the first poll fetches"),
    };
    assert_eq!(first.revision, git(&work, &["rev-parse", "HEAD"]));
    assert!(first.files.contains_key("platform.yaml"));
    assert!(matches!(
        poll(&t, Some(&first.revision)).expect("second poll"),
        Polled::Unchanged
    ));
    std::fs::write(work.join("team.yaml"), "kind: Team\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second"]);
    git(&work, &["push", "-q", bare.to_str().expect("path"), "main"]);
    match poll(&t, Some(&first.revision)).expect("third poll") {
        Polled::Changed { snapshot, forced } => {
            assert_eq!(snapshot.revision, git(&work, &["rev-parse", "HEAD"]));
            assert!(snapshot.files.contains_key("team.yaml"));
            assert!(!forced);
        }
        Polled::Unchanged => panic!("a new commit"),
    }
}

#[test]
fn a_wrong_key_is_an_auth_error_that_names_no_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, bare) = repo(tmp.path());
    // A key the server does not know.
    let other = tmp.path().join("other");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let wrong = std::fs::read_to_string(&other).expect("key");
    let auth = ResolvedAuth {
        ssh_key: Some(Secret::new(wrong.clone())),
        ..good_auth()
    };
    let err = poll(&target(&bare, &tmp.path().join("cache"), auth), None)
        .expect_err("the server refuses the key");
    assert!(matches!(err, SourceError::Auth(_)), "{err:?}");
    let text = err.to_string();
    let secret_line = wrong.lines().nth(1).expect("key body");
    assert!(!text.contains(secret_line), "{text}");
}

#[test]
fn unknown_and_mismatched_host_keys_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, bare) = repo(tmp.path());
    let unknown = ResolvedAuth {
        known_hosts: None,
        ..good_auth()
    };
    let err =
        poll(&target(&bare, &tmp.path().join("c1"), unknown), None).expect_err("no known_hosts");
    assert!(matches!(err, SourceError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("knownHosts"), "{err}");

    let port = server().get("SSH_PORT");
    let mismatched = ResolvedAuth {
        known_hosts: Some(format!(
            "[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd1ZK4E8B3U0s8rV8r6Z9lWbq0ZKQk3s3f0qzq1x2yZ\n"
        )),
        ..good_auth()
    };
    let err =
        poll(&target(&bare, &tmp.path().join("c2"), mismatched), None).expect_err("another key");
    assert!(err.to_string().contains("host key"), "{err}");

    let allowed = ResolvedAuth {
        known_hosts: None,
        insecure_skip_host_key_check: true,
        ..good_auth()
    };
    assert!(poll(&target(&bare, &tmp.path().join("c3"), allowed), None).is_ok());
}

#[test]
fn this_build_of_libgit2_speaks_https_and_ssh() {
    let v = git2::Version::get();
    assert!(
        v.https(),
        "libgit2 without HTTPS: enable git2's `https` feature"
    );
    assert!(v.ssh(), "libgit2 without SSH: enable git2's `ssh` feature");
}
