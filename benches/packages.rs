//! Rendering teams that each run a chart (made by `helm create`), with the real `helm`
//! built by `tests/support/go-build.sh packages`: the first render of 20 charts (each
//! rendered by helm), the re-render of the same revision with none changed (every chart
//! from the cache), and the same re-render with 1,000 teams. Each figure is the whole
//! path a render takes: listing the requests, expanding (or finding) each chart, and
//! rendering the expansions under the teams' rules. Prints medians; asserts nothing
//! about time.
//!
//!     cargo bench --bench packages

#[allow(dead_code)]
mod common;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pontoon::config::PackagesConfig;
use pontoon::daemon::packages::Packages;
use pontoon::desired::NamespaceOwners;
use pontoon::render::{Decryption, NO_KEYS};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin(name: &str) -> PathBuf {
    let cache = std::env::var_os("PONTOON_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pontoon")))
        .expect("no cache folder: set PONTOON_CACHE");
    let path = cache.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/support/go-build.sh packages",
        path.display()
    );
    path
}

fn read_tree(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let repo_path = format!("{prefix}/{name}");
        if path.is_dir() {
            read_tree(&path, &repo_path, out);
        } else {
            out.push((repo_path, std::fs::read(&path).expect("read")));
        }
    }
}

/// A repo of `teams` teams, each with a copy of the `helm create` chart and a
/// `kind: Chart` document for it.
fn repo(teams: usize, chart: &[(String, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        "platform.yaml".to_owned(),
        b"apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: prod}]\n  teamPackages: {charts: true}\n  policy:\n    allowedKinds:\n      - {group: apps, kind: Deployment}\n      - {kind: Service}\n      - {kind: ServiceAccount}\n".to_vec(),
    );
    for t in 0..teams {
        let team = format!("team-{t:04}");
        files.insert(
            format!("teams/{team}/team.yaml"),
            format!("apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [prod]}}\n").into_bytes(),
        );
        files.insert(
            format!("teams/{team}/web.yaml"),
            b"apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {name: web}\nspec:\n  path: web\n  values: {replicaCount: 2}\n".to_vec(),
        );
        for (path, bytes) in chart {
            files.insert(format!("teams/{team}/web/{path}"), bytes.clone());
        }
    }
    files
}

/// One render as the daemon does it, and how many objects it gave.
fn render(packages: &Packages, files: &BTreeMap<String, Vec<u8>>) -> usize {
    let expansions = packages.expand_blocking(files);
    let state = pontoon::render::render_expanded(
        files,
        &[],
        "bench",
        &NamespaceOwners::new(),
        Decryption::Keys(&NO_KEYS),
        None,
        &expansions,
    );
    assert!(
        state.diagnostics.is_empty(),
        "{:?}",
        state.diagnostics.first()
    );
    state.units.values().map(|u| u.objects.len()).sum()
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

fn main() {
    let runs = setting("PONTOON_BENCH_RUNS", 5);
    let many = setting("PONTOON_PACKAGES_TEAMS", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("helm"))
        .args(["create", "web"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .expect("helm create");
    assert!(out.status.success(), "{out:?}");
    let mut chart = Vec::new();
    read_tree(&dir.path().join("web"), "", &mut chart);
    let chart: Vec<(String, Vec<u8>)> = chart
        .into_iter()
        .map(|(p, b)| (p.trim_start_matches('/').to_owned(), b))
        .collect();
    let config = PackagesConfig {
        helm: bin("helm"),
        kustomize: bin("kustomize"),
        ..PackagesConfig::default()
    };

    // 20 charts: each first render runs helm 20 times (a fresh cache each run).
    let files = repo(20, &chart);
    let (mut first, mut again) = (Vec::new(), Vec::new());
    let mut objects = 0;
    for _ in 0..runs {
        let packages = Packages::offline(&config);
        let t = Instant::now();
        objects = render(&packages, &files);
        first.push(t.elapsed());
        assert_eq!(packages.runs(), 20);
        let t = Instant::now();
        render(&packages, &files);
        again.push(t.elapsed());
        assert_eq!(packages.runs(), 20, "a re-render runs no tool");
    }
    println!("packages: 20 teams x 1 chart (helm create) = {objects} objects");
    println!(
        "first render (20 helm runs) median {:.3} s over {runs} runs",
        median(first)
    );
    println!("re-render, no chart changed, median {:.4} s", median(again));

    // 1,000 charts: helm runs once per chart to fill the cache, then the re-renders.
    let files = repo(many, &chart);
    let packages = Packages::offline(&config);
    let t = Instant::now();
    let objects = render(&packages, &files);
    println!(
        "{many} teams x 1 chart = {objects} objects: first render ({} helm runs) {:.1} s",
        packages.runs(),
        t.elapsed().as_secs_f64()
    );
    let mut again = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let (t, c) = (Instant::now(), common::cpu_seconds());
        render(&packages, &files);
        again.push(t.elapsed());
        cpu.push(Duration::from_secs_f64(common::cpu_seconds() - c));
    }
    assert_eq!(packages.runs() as usize, many, "a re-render runs no tool");
    println!(
        "{many} teams, re-render with no chart changed: median {:.3} s wall, {:.3} s CPU over {runs} runs",
        median(again),
        median(cpu)
    );
    println!("peak RSS {:.1} MiB", common::peak_rss_mib());
}
