//! How the benchmark prints what it measured: each run in detail as it ends, then one
//! Markdown table of every run, then the figures derived from two sizes.

use std::collections::BTreeMap;

use crate::measure::counts;
use crate::run::Figures;

fn per_replica(v: &[f64], unit: &str, digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// `n` or `none`.
fn writes_line(w: &BTreeMap<String, u64>) -> String {
    counts(w)
}

/// Idle CPU of each replica as a percentage of one core.
fn idle_percent(f: &Figures) -> Vec<f64> {
    f.steady
        .cpu
        .iter()
        .map(|c| 100.0 * c / f.steady.window)
        .collect()
}

pub fn print_run(f: &Figures) {
    let s = &f.steady;
    println!(
        "  converged: {} units ({:.0} objects) Synced {:.1} s after start; {} writes, the last {:.1} s after start; replicas' CPU {} s; servers' CPU {:.1} s",
        f.units,
        f.objects,
        f.converge,
        f.converge_writes,
        f.writes_done,
        per_replica(&f.converge_cpu, "", 1),
        f.converge_servers_cpu
    );
    println!("    {}", f.timeline.describe());
    println!(
        "    requests until every unit was Synced {}: {}",
        f.converge_requests.total(),
        counts(&f.converge_requests.by_resource)
    );
    println!(
        "  steady, one resync interval ({:.1} s): {:.0} unit syncs; pontoon's writes: {} (Lease renewals {}); apiserver requests {}: {}",
        s.window,
        s.syncs,
        writes_line(&s.writes),
        s.lease_writes,
        s.requests.total(),
        counts(&s.requests.by_verb)
    );
    println!("    by resource: {}", counts(&s.requests.by_resource));
    println!(
        "    CPU per replica {} s ({} of a core), servers {:.2} s; managed objects per replica {}",
        per_replica(&s.cpu, "", 2),
        per_replica(&idle_percent(f), "%", 2),
        s.servers_cpu,
        per_replica(&f.managed, "", 0)
    );
    println!(
        "  peak RSS per replica {} MiB; resident {} MiB",
        per_replica(&f.peak_rss, "", 1),
        per_replica(&f.rss, "", 1)
    );
    if let Some(r) = &f.recovery {
        println!(
            "  kill -9 of one replica: its shards held by the others after {:.1} s, its {} units Synced again after {:.1} s; pontoon's writes: {}; requests {}: {}",
            r.taken,
            r.units,
            r.synced,
            writes_line(&r.writes),
            r.requests.total(),
            counts(&r.requests.by_verb)
        );
    }
    println!(
        "  load average {} at the start, {} at the end",
        f.load.0, f.load.1
    );
}

pub fn print_table(all: &[Figures]) {
    println!();
    println!(
        "| teams | replicas | units | converge | writes | no-op resync: syncs, requests, writes | idle CPU per replica | peak RSS per replica | kill -9: shards taken, units Synced, writes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in all {
        let s = &f.steady;
        let recovery = f.recovery.as_ref().map_or_else(
            || "—".to_owned(),
            |r| {
                format!(
                    "{:.1} s, {:.1} s, {}",
                    r.taken,
                    r.synced,
                    r.writes.values().sum::<u64>()
                )
            },
        );
        println!(
            "| {} | {} | {} | {:.1} s | {} | {:.0}, {}, {} | {} | {} MiB | {recovery} |",
            f.teams,
            f.replicas,
            f.units,
            f.converge,
            f.converge_writes,
            s.syncs,
            s.requests.total(),
            s.writes.values().sum::<u64>(),
            per_replica(&idle_percent(f), "%", 2),
            per_replica(&f.peak_rss, "", 0),
        );
    }
}

pub fn print_derived(all: &[Figures]) {
    println!();
    for f in all {
        let cpu: f64 = f.steady.cpu.iter().sum();
        println!(
            "{} teams, {} replica(s): CPU per idle unit {:.1} µs per second ({:.2} ms per unit resync, resyncInterval {:.0} s)",
            f.teams,
            f.replicas,
            1e6 * cpu / f.steady.window / f.units as f64,
            1e3 * cpu / f.steady.syncs,
            f.steady.window
        );
    }
    for big in all {
        let Some(small) = all
            .iter()
            .find(|s| s.replicas == big.replicas && s.teams < big.teams)
        else {
            continue;
        };
        let objects = mean(&big.managed) - mean(&small.managed);
        let peak = mean(&big.peak_rss) - mean(&small.peak_rss);
        let resident = mean(&big.rss) - mean(&small.rss);
        println!(
            "{} replica(s), {} → {} teams: memory per managed object {:.2} KiB peak, {:.2} KiB resident ({:.0} more objects per replica: +{peak:.1} MiB peak, +{resident:.1} MiB resident)",
            big.replicas,
            small.teams,
            big.teams,
            1024.0 * peak / objects,
            1024.0 * resident / objects,
            objects
        );
    }
}
