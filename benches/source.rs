//! The Git source's costs on a platform repo of 1,000 commits × 10,000 files, over
//! file:// (so the figures are pontoon's and libgit2's, not a network's):
//!
//! * a no-change poll — one ref advertisement, nothing fetched — against `git ls-remote`;
//! * reading the head commit's 10,000 files into a snapshot, straight from the object
//!   database (target: under 200 ms);
//! * the first fetch of the whole history into an empty cache, against `git fetch`.
//!
//!     cargo bench --bench source
//!
//! Prints medians; asserts nothing about time.

#[allow(dead_code)]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pontoon::config::GitRef;
use pontoon::source::git::{GitTarget, Polled, ResolvedAuth, poll, read_commit};

const TEAMS: usize = 1000;
const FILES_PER_TEAM: usize = 10;
const COMMITS: usize = 1000;

fn file(team: usize, i: usize, rev: usize) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: WebService\nmetadata: {{name: app-{i}}}\nspec:\n  image: registry.example.com/team-{team:04}/app-{i}:{rev}.0\n  replicas: 2\n  port: 8080\n"
    )
}

/// A bare repository with `COMMITS` commits on main: the first adds every file, each
/// later one changes ten of them. Built with `git fast-import` (seconds, not minutes).
fn build(dir: &Path) {
    let status = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(dir)
        .status()
        .expect("git init");
    assert!(status.success());
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    let mut w = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    let data = |w: &mut dyn Write, s: &str| {
        write!(w, "data {}\n{s}\n", s.len()).expect("write");
    };
    for c in 0..COMMITS {
        writeln!(w, "commit refs/heads/main").expect("write");
        writeln!(
            w,
            "committer Bench <bench@example.com> {} +0000",
            1_700_000_000 + c
        )
        .expect("write");
        data(&mut w, &format!("change {c}"));
        if c == 0 {
            for t in 0..TEAMS {
                for i in 0..FILES_PER_TEAM {
                    writeln!(w, "M 100644 inline teams/team-{t:04}/app-{i}.yaml").expect("write");
                    data(&mut w, &file(t, i, 0));
                }
            }
        } else {
            for k in 0..10 {
                let t = (c * 7 + k * 101) % TEAMS;
                let i = k % FILES_PER_TEAM;
                writeln!(w, "M 100644 inline teams/team-{t:04}/app-{i}.yaml").expect("write");
                data(&mut w, &file(t, i, c));
            }
        }
    }
    drop(w);
    assert!(child.wait().expect("fast-import").success());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn target(url: &str, cache: &Path) -> GitTarget {
    GitTarget {
        url: url.to_owned(),
        git_ref: GitRef::Branch("main".into()),
        cache_dir: cache.to_path_buf(),
        auth: ResolvedAuth::default(),
        timeout: std::time::Duration::from_secs(60),
    }
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("platform.git");
    let started = Instant::now();
    build(&remote);
    println!(
        "repo: {COMMITS} commits, {} files at head, built in {:.1?}",
        TEAMS * FILES_PER_TEAM,
        started.elapsed()
    );
    let url = format!("file://{}", remote.display());

    // First fetch of the whole history: pontoon (libgit2) against git, three rounds each.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut head = String::new();
    for round in 0..3 {
        let cache = tmp.path().join(format!("cache-{round}"));
        let t = Instant::now();
        match poll(&target(&url, &cache), None).expect("first poll") {
            Polled::Changed { snapshot, .. } => head = snapshot.revision,
            Polled::Unchanged => panic!("a first poll must fetch"),
        }
        ours.push(t.elapsed());
        let plain = tmp.path().join(format!("plain-{round}.git"));
        assert!(
            Command::new("git")
                .args(["init", "-q", "--bare"])
                .arg(&plain)
                .status()
                .expect("git")
                .success()
        );
        let t = Instant::now();
        let ok = Command::new("git")
            .arg("-C")
            .arg(&plain)
            .args([
                "fetch",
                "-q",
                "--no-tags",
                &url,
                "+refs/heads/main:refs/heads/main",
            ])
            .status()
            .expect("git fetch");
        theirs.push(t.elapsed());
        assert!(ok.success());
    }
    let (a, b) = (median(ours), median(theirs));
    println!(
        "first fetch + snapshot (pontoon): median {}   git fetch: median {}   ratio {:.2}",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );

    // No-change polls: one ref advertisement each, no fetch.
    let cache = tmp.path().join("cache-0");
    let t = target(&url, &cache);
    let mut polls = Vec::new();
    for _ in 0..30 {
        let s = Instant::now();
        match poll(&t, Some(&head)).expect("poll") {
            Polled::Unchanged => {}
            Polled::Changed { .. } => panic!("nothing changed"),
        }
        polls.push(s.elapsed());
    }
    let mut ls = Vec::new();
    for _ in 0..30 {
        let s = Instant::now();
        let out = Command::new("git")
            .args(["ls-remote", &url, "refs/heads/main"])
            .output()
            .expect("ls-remote");
        ls.push(s.elapsed());
        assert!(out.status.success());
    }
    println!(
        "no-change poll (1 ref advertisement, 0 fetches): median {}   git ls-remote: median {}",
        ms(median(polls)),
        ms(median(ls))
    );

    // Snapshot read of the head commit.
    let repo = git2::Repository::open_bare(&cache).expect("cache repo");
    let commit = repo
        .find_commit(git2::Oid::from_str(&head).expect("oid"))
        .expect("head commit");
    let mut reads = Vec::new();
    let mut files = 0;
    for _ in 0..15 {
        let s = Instant::now();
        let snap = read_commit(&repo, &commit).expect("snapshot");
        reads.push(s.elapsed());
        files = snap.files.len();
    }
    println!(
        "snapshot read of {files} files: median {} (target < 200 ms)",
        ms(median(reads))
    );
    println!(
        "process: {:.1} s CPU, peak RSS {:.0} MiB",
        common::cpu_seconds(),
        common::peak_rss_mib()
    );
}
