//! One run of the benchmark: three fresh control planes, `replicas` `pontoon run`
//! processes sharing `sync.shards = replicas` shard Leases, and the platform repo of one
//! size. Measures the convergence from empty clusters, one period of steady state (its
//! no-op resync's requests and the CPU it costs), the peak RSS of each replica, and with
//! several replicas the recovery after `kill -9` of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;

use crate::control_plane::ControlPlane;
use crate::daemon_config::DaemonConfig;
use crate::measure::Requests;
use crate::platform::{CLUSTERS, team};
use crate::recovery::{self, Recovery};
use crate::replica::{Replica, metric_sum, samples};
use crate::timeline::{Point, Timeline, units_ready};
use crate::{audit, common};

/// The shard and leader Leases' base name.
pub const LEASE_NAME: &str = "pontoon";

/// What a run is given.
pub struct Plan {
    pub replicas: usize,
    pub teams: usize,
    /// `sync.resyncInterval`, also the length of the steady-state window.
    pub resync: Duration,
    /// `leaderElection.leaseDuration`.
    pub lease: Duration,
    /// How long convergence may take before the run gives up.
    pub timeout: Duration,
    pub repo: PathBuf,
    pub work: PathBuf,
}

/// One period of steady state, one resync interval long.
pub struct Steady {
    pub window: f64,
    /// Unit syncs the replicas counted in it (`pontoon_sync_duration_seconds_count`).
    pub syncs: f64,
    /// Requests the apiservers counted, all three summed (leases apart).
    pub requests: Requests,
    /// Writes from pontoon's user agent in the audit logs, by verb and resource, Leases
    /// apart.
    pub writes: BTreeMap<String, u64>,
    /// Lease writes (renewals) in the audit logs.
    pub lease_writes: usize,
    /// CPU seconds each replica used in it.
    pub cpu: Vec<f64>,
    /// CPU seconds the apiservers and etcds used in it.
    pub servers_cpu: f64,
}

/// What a run measured.
pub struct Figures {
    pub replicas: usize,
    pub teams: usize,
    pub units: usize,
    /// Objects the replicas manage, summed (`pontoon_managed_objects`).
    pub objects: f64,
    /// Per replica: objects it manages, in steady state.
    pub managed: Vec<f64>,
    pub converge: f64,
    /// Units Synced and Units Ready over the convergence.
    pub timeline: Timeline,
    /// Requests the apiservers counted until every unit was Synced (Leases apart).
    pub converge_requests: Requests,
    /// Successful writes pontoon sent until its writes ended (Leases apart).
    pub converge_writes: usize,
    /// Seconds from the start until pontoon's last write of the convergence (Leases apart):
    /// the Unit resources trail the syncs.
    pub writes_done: f64,
    pub converge_cpu: Vec<f64>,
    pub converge_servers_cpu: f64,
    pub steady: Steady,
    /// Per replica: VmHWM after the steady window, before any kill, MiB.
    pub peak_rss: Vec<f64>,
    /// Per replica: VmRSS after the steady window, MiB.
    pub rss: Vec<f64>,
    pub recovery: Option<Recovery>,
    /// `/proc/loadavg` at the start and the end.
    pub load: (String, String),
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// CPU seconds every apiserver and etcd of `cps` used so far.
fn servers_cpu(cps: &[ControlPlane]) -> f64 {
    cps.iter()
        .map(|cp| {
            common::servers_cpu(&cp.dir.to_string_lossy())
                .values()
                .sum::<f64>()
        })
        .sum()
}

/// The apiservers' request counters, the three summed.
pub fn requests(cps: &[ControlPlane]) -> Requests {
    let mut sum = Requests::default();
    for cp in cps {
        let r = Requests::read(cp);
        for (into, from) in [
            (&mut sum.by_verb, r.by_verb),
            (&mut sum.by_resource, r.by_resource),
            (&mut sum.ours, r.ours),
        ] {
            for (k, n) in from {
                *into.entry(k).or_default() += n;
            }
        }
    }
    sum
}

/// pontoon's successful writes in the three audit logs received after `after`, as
/// (`verb resource`, is a Lease).
pub fn writes_since(cps: &[ControlPlane], after: jiff::Timestamp) -> Vec<(String, bool)> {
    cps.iter()
        .flat_map(|cp| audit::writes_by(&cp.dir, pontoon::cluster::USER_AGENT, after))
        .filter(|e| !e.dry_run() && e.succeeded())
        .map(|e| {
            let resource = e
                .object_ref
                .as_ref()
                .map_or_else(String::new, |o| o.resource.clone());
            (format!("{} {resource}", e.verb), resource == "leases")
        })
        .collect()
}

/// Starts the three control planes at once, each with pontoon's namespace.
async fn control_planes() -> Vec<ControlPlane> {
    let cps: Vec<ControlPlane> = std::thread::scope(|s| {
        let started: Vec<_> = CLUSTERS
            .iter()
            .map(|name| s.spawn(move || ControlPlane::start(name)))
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("control plane started"))
            .collect()
    });
    for cp in &cps {
        let namespaces: Api<Namespace> = Api::all(cp.client().await);
        let ns = serde_json::from_value(
            serde_json::json!({"metadata": {"name": pontoon::config::DEFAULT_NAMESPACE}}),
        )
        .expect("namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("pontoon's namespace");
    }
    cps
}

/// Per (team, cluster) of the benchmark's teams: whether every replica that shows it
/// shows it Synced.
async fn unit_states(http: &reqwest::Client, replicas: &[Replica]) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for r in replicas {
        for u in r.units(http).await.unwrap_or_default() {
            if u.team.starts_with("team-") {
                let synced = out
                    .entry(format!("{}/{}", u.team, u.cluster))
                    .or_insert(true);
                *synced &= u.state == "Synced";
            }
        }
    }
    out
}

/// The apiservers' write requests so far (Leases apart), the three summed.
fn write_count(cps: &[ControlPlane]) -> u64 {
    const WRITES: [&str; 6] = [
        "POST",
        "PUT",
        "PATCH",
        "APPLY",
        "DELETE",
        "DELETECOLLECTION",
    ];
    requests(cps)
        .by_verb
        .iter()
        .filter(|(verb, _)| WRITES.contains(&verb.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// Waits until the apiservers have counted no write (Leases apart) for `quiet`, so the
/// steady window holds no trailing write of the convergence (the Unit resources are
/// written after their units sync); returns the seconds from `start` to pontoon's last
/// write.
async fn writes_quiet(cps: &[ControlPlane], start: jiff::Timestamp, quiet: Duration) -> f64 {
    let mut last = (write_count(cps), Instant::now());
    while last.1.elapsed() < quiet {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = write_count(cps);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let newest = cps
        .iter()
        .flat_map(|cp| audit::writes_by(&cp.dir, pontoon::cluster::USER_AGENT, start))
        .filter(|e| e.object_ref.as_ref().is_none_or(|o| o.resource != "leases"))
        .map(|e| e.received())
        .max()
        .unwrap_or(start);
    newest.duration_since(start).as_secs_f64()
}

/// Polls until all `units` are Synced, listing the Units every `UNITS_EVERY` meanwhile;
/// panics after `timeout`. Returns what it saw over time (seconds from `t`).
async fn converged(
    http: &reqwest::Client,
    (cps, replicas): (&[ControlPlane], &[Replica]),
    (units, t): (usize, Instant),
    timeout: Duration,
) -> Timeline {
    let mut told = Instant::now();
    let mut timeline = Timeline {
        total: units,
        ..Timeline::default()
    };
    let mut looked = None::<Instant>;
    loop {
        let states = unit_states(http, replicas).await;
        let synced = states.values().filter(|s| **s).count();
        if synced == units || looked.is_none_or(|l| l.elapsed() >= UNITS_EVERY) {
            looked = Some(Instant::now());
            let units_ready = units_ready(cps).await;
            let at = t.elapsed().as_secs_f64();
            timeline.points.push(Point {
                at,
                synced,
                units_ready,
            });
        }
        if synced == units {
            return timeline;
        }
        if told.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "    {synced} of {units} units Synced after {:.0} s",
                t.elapsed().as_secs_f64()
            );
            told = Instant::now();
        }
        assert!(
            t.elapsed() < timeout,
            "{synced} of {units} units Synced after {timeout:?}; logs in {}",
            replicas.first().map_or("", |r| r.base.as_str())
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// After every unit is Synced: lists the Units until each says Ready, at most
/// `UNITS_TRAIL`, adding what it sees to `timeline`.
async fn units_trail(cps: &[ControlPlane], timeline: &mut Timeline, t: Instant) {
    let until = Instant::now() + UNITS_TRAIL;
    loop {
        let units_ready = units_ready(cps).await;
        timeline.points.push(Point {
            at: t.elapsed().as_secs_f64(),
            synced: timeline.total,
            units_ready,
        });
        if units_ready >= timeline.total || Instant::now() > until {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How often the Unit resources are listed while units converge.
const UNITS_EVERY: Duration = Duration::from_secs(5);

/// How long after every unit is Synced the Units are waited for.
const UNITS_TRAIL: Duration = Duration::from_secs(180);

/// Waits until every unit has been attempted after `since` (a resync after convergence),
/// so the steady window starts in steady state.
async fn resynced_after(
    http: &reqwest::Client,
    replicas: &[Replica],
    units: usize,
    since: f64,
    timeout: Duration,
) {
    let t = Instant::now();
    loop {
        let mut after = 0;
        for r in replicas {
            let text = r.metrics(http).await;
            after += samples(&text, "pontoon_sync_last_attempt_timestamp_seconds")
                .filter(|a| *a > since)
                .count();
        }
        if after >= units {
            return;
        }
        assert!(
            t.elapsed() < timeout,
            "{after} of {units} units resynced within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One resync interval with nothing changed: what the replicas and the servers spent.
async fn steady(
    http: &reqwest::Client,
    cps: &[ControlPlane],
    replicas: &[Replica],
    window: Duration,
) -> Steady {
    let mut syncs0 = 0.0;
    for r in replicas {
        syncs0 += metric_sum(
            &r.metrics(http).await,
            "pontoon_sync_duration_seconds_count",
        );
    }
    let mark = jiff::Timestamp::now();
    let requests0 = requests(cps);
    let servers0 = servers_cpu(cps);
    let cpu0: Vec<f64> = replicas.iter().map(Replica::cpu_seconds).collect();
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let cpu: Vec<f64> = replicas
        .iter()
        .zip(&cpu0)
        .map(|(r, c0)| r.cpu_seconds() - c0)
        .collect();
    let servers_cpu = servers_cpu(cps) - servers0;
    let requests = requests(cps).since(&requests0);
    let window = t.elapsed().as_secs_f64();
    let mut syncs = -syncs0;
    for r in replicas {
        syncs += metric_sum(
            &r.metrics(http).await,
            "pontoon_sync_duration_seconds_count",
        );
    }
    let mut writes = BTreeMap::new();
    let mut lease_writes = 0;
    for (what, lease) in writes_since(cps, mark) {
        if lease {
            lease_writes += 1;
        } else {
            *writes.entry(what).or_default() += 1;
        }
    }
    Steady {
        window,
        syncs,
        requests,
        writes,
        lease_writes,
        cpu,
        servers_cpu,
    }
}

/// Each replica's config (its own port) and the replica started on it.
fn start_replicas(plan: &Plan, cps: &[ControlPlane], dir: &Path) -> Vec<Replica> {
    (0..plan.replicas)
        .map(|i| {
            let mut config = DaemonConfig::dir(&plan.repo)
                .poll_interval("1h")
                .resync_interval(&format!("{}s", plan.resync.as_secs()))
                .shards(plan.replicas as u32)
                .leader_election(
                    CLUSTERS[0],
                    LEASE_NAME,
                    &format!("{}s", plan.lease.as_secs()),
                )
                .log_level("warn");
            for (name, cp) in CLUSTERS.iter().zip(cps) {
                config = config.cluster(name, &cp.kubeconfig);
            }
            let identity = format!("r{i}");
            let rdir = dir.join(&identity);
            std::fs::create_dir_all(&rdir).expect("replica dir");
            let path = config.write(&rdir);
            Replica::start(&identity, &path, config.base_url(), dir)
        })
        .collect()
}

pub async fn run(plan: &Plan) -> Figures {
    let dir = plan.work.join(format!("{}x{}", plan.teams, plan.replicas));
    std::fs::create_dir_all(&dir).expect("run dir");
    let cps = control_planes().await;
    let http = reqwest::Client::new();
    let units = plan.teams * CLUSTERS.len();
    let load0 = loadavg();

    let mark = jiff::Timestamp::now();
    let servers0 = servers_cpu(&cps);
    let requests0 = requests(&cps);
    let t = Instant::now();
    let mut replicas = start_replicas(plan, &cps, &dir);
    let mut timeline = converged(&http, (&cps, &replicas), (units, t), plan.timeout).await;
    let converge = t.elapsed().as_secs_f64();
    let converge_requests = requests(&cps).since(&requests0);
    let converge_cpu: Vec<f64> = replicas.iter().map(Replica::cpu_seconds).collect();
    let converge_servers_cpu = servers_cpu(&cps) - servers0;
    units_trail(&cps, &mut timeline, t).await;
    eprintln!("    converged in {converge:.1} s; waiting for the writes to end");
    let writes_done = writes_quiet(&cps, mark, Duration::from_secs(20)).await;
    eprintln!("    last write {writes_done:.1} s after start; waiting for a resync of every unit");
    let converge_writes = writes_since(&cps, mark).iter().filter(|(_, l)| !l).count();

    let settle = plan.resync * 3 + Duration::from_secs(600);
    resynced_after(&http, &replicas, units, unix_now(), settle).await;
    let steady = steady(&http, &cps, &replicas, plan.resync).await;
    let peak_rss = replicas.iter().map(Replica::peak_rss_mib).collect();
    let rss = replicas.iter().map(Replica::rss_mib).collect();
    let mut managed = Vec::new();
    for r in &replicas {
        managed.push(metric_sum(
            &r.metrics(&http).await,
            "pontoon_managed_objects",
        ));
    }

    let recovery = if plan.replicas > 1 {
        let teams: Vec<String> = (0..plan.teams).map(team).collect();
        Some(recovery::kill_one(&http, &cps, &mut replicas, &teams, plan).await)
    } else {
        None
    };
    for r in &mut replicas {
        r.terminate();
    }
    let load1 = loadavg();
    for cp in cps {
        cp.stop();
    }
    Figures {
        replicas: plan.replicas,
        teams: plan.teams,
        units,
        objects: managed.iter().sum(),
        managed,
        converge,
        timeline,
        converge_requests,
        converge_writes,
        writes_done,
        converge_cpu,
        converge_servers_cpu,
        steady,
        peak_rss,
        rss,
        recovery,
        load: (load0, load1),
    }
}
