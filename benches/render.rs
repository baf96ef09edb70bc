//! Rendering 1,000 teams × 10 instances (about 30,000 objects) with the example
//! platform's kinds. Prints the median of several runs, in wall time and in CPU time
//! (on a busy machine a render also waits for a core, which its CPU time leaves out),
//! and the process's peak RSS.
//!
//!     cargo bench --bench render

#[allow(dead_code)]
mod common;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Teams and runs; smaller values are for profiling (`valgrind --tool=callgrind`).
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo(teams: usize) -> BTreeMap<String, Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-platform");
    let example = pontoon::source::dir::read(&root)
        .expect("example platform")
        .files;
    let mut files: BTreeMap<String, Vec<u8>> = example
        .into_iter()
        .filter(|(p, _)| !p.starts_with("teams/"))
        .collect();
    common::add_teams(&mut files, teams);
    files
}

fn main() {
    let teams = setting("PONTOON_RENDER_TEAMS", 1000);
    let runs = setting("PONTOON_RENDER_RUNS", 7);
    let files = repo(teams);
    let mut times: Vec<Duration> = Vec::new();
    let mut cpu: Vec<f64> = Vec::new();
    let mut objects = 0;
    let mut freed: Vec<Duration> = Vec::new();
    for _ in 0..runs {
        let (t, cpu_before) = (Instant::now(), common::cpu_seconds());
        let state = pontoon::render::render(&files, "bench");
        times.push(t.elapsed());
        cpu.push(common::cpu_seconds() - cpu_before);
        assert!(
            state.diagnostics.is_empty(),
            "{:?}",
            state.diagnostics.first()
        );
        objects = state.units.values().map(|u| u.objects.len()).sum();
        // The daemon frees the previous state when a new one replaces it: part of what
        // every render costs.
        let freeing = Instant::now();
        drop(state);
        freed.push(freeing.elapsed());
    }
    freed.sort();
    times.sort();
    println!("render: {teams} teams x 10 instances = {objects} objects");
    println!(
        "render median {:.3} s (min {:.3} s, max {:.3} s) over {} runs, one thread",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        times.len()
    );
    println!(
        "freeing a rendered state: median {:.3} s",
        freed[freed.len() / 2].as_secs_f64()
    );
    cpu.sort_by(f64::total_cmp);
    println!(
        "render CPU median {:.2} s (min {:.2} s, max {:.2} s)",
        cpu[cpu.len() / 2],
        cpu[0],
        cpu[cpu.len() - 1]
    );
    println!(
        "peak RSS {:.1} MiB (input files and one rendered state held)",
        common::peak_rss_mib()
    );
}
