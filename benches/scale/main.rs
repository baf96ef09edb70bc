//! Scale out: 1,000 teams × 10 instances on three real control planes (kube-apiserver +
//! etcd each), synced by one `pontoon run` replica (`sync.shards: 1`) and then by three
//! (`sync.shards: 3`), each run from empty clusters: three fresh control planes per run.
//! Prints figures; asserts nothing about time.
//!
//!     cargo bench --locked --bench scale
//!     PONTOON_SCALE_TEAMS=60 PONTOON_SCALE_SMALL_TEAMS=20 PONTOON_SCALE_RESYNC=20 \
//!         cargo bench --locked --bench scale          # a run of a few minutes
//!
//! Settings (environment): `PONTOON_SCALE_TEAMS` (1000), `PONTOON_SCALE_INSTANCES` (10
//! per team, one ConfigMap each), `PONTOON_SCALE_SMALL_TEAMS` (100: the same runs at this
//! size too, for the memory per object; 0 skips them), `PONTOON_SCALE_REPLICAS` (`1,3`),
//! `PONTOON_SCALE_RESYNC` (60: `sync.resyncInterval` in seconds, and the steady window),
//! `PONTOON_SCALE_LEASE` (15, the default lease duration, in seconds),
//! `PONTOON_SCALE_TIMEOUT` (1800 seconds to converge).
//!
//! Per run: the time from starting the replicas until every unit is Synced (from each
//! replica's `/api/status`), with when each share of the units was Synced and its Unit
//! resource said Ready (`timeline`), and the requests that took by verb and resource;
//! the writes that took (from the audit logs, by user agent);
//! then, once every unit has been resynced once, one resync interval of steady state:
//! the unit syncs in it (the replicas' `pontoon_sync_duration_seconds_count`), the
//! requests the apiservers counted (`apiserver_request_total`, Leases apart), pontoon's
//! writes in the audit logs (Lease renewals apart: they must be 0), and each replica's
//! CPU (utime + stime from `/proc/<pid>/stat`); each replica's peak RSS (VmHWM) and
//! resident set then. With several replicas, `kill -9` of one: the seconds until the
//! others hold its shards (the shard Leases) and until its units are Synced by them, with
//! the writes that took. Derived: memory per managed object (the RSS difference between
//! the two sizes over the difference in objects each replica manages) and CPU per idle
//! unit.

#[path = "../../tests/support/audit.rs"]
#[allow(dead_code)]
mod audit;
#[path = "../common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../tests/support/control_plane.rs"]
#[allow(dead_code)]
mod control_plane;
#[path = "../../tests/support/daemon_config.rs"]
#[allow(dead_code, unused_imports)]
mod daemon_config;
#[path = "../restart/measure.rs"]
#[allow(dead_code)]
mod measure;
mod platform;
mod recovery;
mod replica;
mod report;
mod run;
#[path = "../../tests/support/script.rs"]
#[allow(dead_code)]
mod script;
mod timeline;

use std::time::Duration;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    let teams = env_number("PONTOON_SCALE_TEAMS", 1000).max(1) as usize;
    let small = env_number("PONTOON_SCALE_SMALL_TEAMS", 100) as usize;
    let instances = env_number("PONTOON_SCALE_INSTANCES", 10).max(1) as usize;
    let resync = Duration::from_secs(env_number("PONTOON_SCALE_RESYNC", 60).max(5));
    let lease = Duration::from_secs(env_number("PONTOON_SCALE_LEASE", 15).max(2));
    let timeout = Duration::from_secs(env_number("PONTOON_SCALE_TIMEOUT", 1800));
    let replicas: Vec<usize> = std::env::var("PONTOON_SCALE_REPLICAS")
        .unwrap_or_else(|_| "1,3".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let mut sizes = vec![teams];
    if small > 0 && small < teams {
        sizes.insert(0, small);
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    println!(
        "teams × {instances} instances (one ConfigMap each) on 3 control planes; replicas {replicas:?}; resyncInterval {}s, lease {}s; load average {}",
        resync.as_secs(),
        lease.as_secs(),
        run::loadavg()
    );
    let mut all = Vec::new();
    for &size in &sizes {
        let repo = tmp.path().join(format!("repo-{size}"));
        platform::write_repo(&repo, size, instances);
        for &n in &replicas {
            println!("{size} teams, {n} replica(s):");
            let plan = run::Plan {
                replicas: n,
                teams: size,
                resync,
                lease,
                timeout,
                repo: repo.clone(),
                work: tmp.path().to_owned(),
            };
            let figures = rt.block_on(run::run(&plan));
            report::print_run(&figures);
            all.push(figures);
        }
    }
    report::print_table(&all);
    report::print_derived(&all);
}
