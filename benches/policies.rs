//! What platform policies cost a render: 1,000 teams × 10 instances of the example
//! platform's kinds (as `benches/render.rs` renders them), rendered with no rules and with
//! 20 rules (the example's shapes: registry, replicas in prod, memory limits, a required
//! label, no LoadBalancer Services; four of each), runs alternating. Every rule passes,
//! the common case: each matching object is converted for CEL once and every matching
//! rule evaluated on it. Prints the medians and their ratio.
//!
//!     cargo bench --bench policies

#[allow(dead_code)]
mod common;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 20 rules, as `spec.policies` entries.
fn rules() -> String {
    let mut out = String::from("  policies:\n");
    for k in 0..4 {
        out.push_str(&format!(
            r#"    - id: registry-{k}
      match: {{kinds: [{{group: apps, kind: Deployment}}]}}
      expression: "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example.com/'))"
      fieldPath: spec.template.spec.containers[*].image
      message: images come from registry.example.com
    - id: replicas-{k}
      match: {{kinds: [{{group: apps, kind: Deployment}}], clusters: {{matchLabels: {{env: prod}}}}}}
      expression: "!has(object.spec.replicas) || object.spec.replicas >= 2"
      message: prod needs 2 replicas
    - id: limits-{k}
      match: {{kinds: [{{group: apps, kind: Deployment}}]}}
      expression: "object.spec.template.spec.containers.all(c, has(c.resources) && has(c.resources.limits) && has(c.resources.limits.memory))"
      message: every container sets a memory limit
    - id: label-{k}
      action: warn
      match: {{kinds: [{{group: apps, kind: Deployment}}]}}
      expression: "has(object.spec.template.metadata.labels) && 'app.kubernetes.io/name' in object.spec.template.metadata.labels"
      message: pods carry app.kubernetes.io/name
    - id: load-balancers-{k}
      match: {{kinds: [{{kind: Service}}]}}
      expression: "team == 'edge' || !has(object.spec.type) || object.spec.type != 'LoadBalancer'"
      message: only the edge team exposes LoadBalancer Services
"#
        ));
    }
    out
}

/// The repo: the example's kinds and platform (its own rules cut), then `policies`.
fn repo(teams: usize, policies: &str) -> BTreeMap<String, Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example-platform");
    let example = pontoon::source::dir::read(&root)
        .expect("example platform")
        .files;
    let mut files: BTreeMap<String, Vec<u8>> = example
        .into_iter()
        .filter(|(p, _)| !p.starts_with("teams/"))
        .collect();
    let platform = String::from_utf8(files["platform.yaml"].clone()).expect("utf-8");
    let base = platform
        .split_once("\n  # The platform's own rules")
        .map_or(platform.as_str(), |(b, _)| b);
    files.insert(
        "platform.yaml".into(),
        format!("{base}\n{policies}").into_bytes(),
    );
    common::add_teams(&mut files, teams);
    files
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

fn main() {
    let teams = setting("PONTOON_RENDER_TEAMS", 1000);
    let runs = setting("PONTOON_RENDER_RUNS", 7);
    let without = repo(teams, "");
    let with = repo(teams, &rules());
    let (mut plain, mut ruled) = (Vec::new(), Vec::new());
    let (mut cpu_plain, mut cpu_ruled) = (Vec::new(), Vec::new());
    let mut objects = 0;
    for _ in 0..runs {
        for (files, times, cpu) in [
            (&without, &mut plain, &mut cpu_plain),
            (&with, &mut ruled, &mut cpu_ruled),
        ] {
            let (t, cpu_before) = (Instant::now(), common::cpu_seconds());
            let state = pontoon::render::render(files, "bench");
            times.push(t.elapsed());
            cpu.push(Duration::from_secs_f64(
                (common::cpu_seconds() - cpu_before).max(0.0),
            ));
            assert!(
                state.diagnostics.is_empty(),
                "{:?}",
                state.diagnostics.first()
            );
            objects = state.units.values().map(|u| u.objects.len()).sum();
        }
    }
    let (p, r) = (median(&mut plain), median(&mut ruled));
    let (cp, cr) = (median(&mut cpu_plain), median(&mut cpu_ruled));
    println!(
        "render: {teams} teams x 10 instances = {objects} objects, {runs} runs each, alternating"
    );
    println!("no rules:  median {p:.3} s wall, {cp:.2} s CPU");
    println!("20 rules:  median {r:.3} s wall, {cr:.2} s CPU");
    println!(
        "ratio 20 rules / none: {:.2} wall, {:.2} CPU",
        r / p,
        cr / cp
    );
}
