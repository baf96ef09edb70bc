//! Leader election on a real Lease: one leader at a time; when it dies without letting
//! go, a standby takes over within the lease duration; a clean stop hands over at once.
//! Expiry is timed by the candidate's own clock, whatever the holder's clock says, and a
//! leader whose Lease is taken makes no write once it notices (fenced).

use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use pontoon::daemon::leader::{self, LeaseSettings};
use serde_json::json;
use tokio::sync::watch;

use crate::support::audit;
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::{spawn_run, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::slow_link::SlowLink;

struct Candidate {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn candidate(client: kube::Client, lease: &str, identity: &str) -> Candidate {
    let (tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let settings = LeaseSettings {
        retry: Duration::from_millis(300),
        ..LeaseSettings::new("default", lease, identity, Duration::from_secs(3))
    };
    let task = tokio::spawn(leader::run(client, settings, tx, stop_rx));
    Candidate {
        leading,
        stop,
        task,
    }
}

async fn wait_leading(c: &mut Candidate, within: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(within, c.leading.wait_for(|l| *l))
        .await
        .expect("did not become leader in time")
        .expect("election task ended");
    start.elapsed()
}

#[tokio::test]
async fn one_leader_and_a_standby_takes_over_when_it_dies() {
    let cp = control_plane::shared();
    let lease = unique_name("pontoon-leader");
    let mut a = candidate(cp.client().await, &lease, "a").await;
    wait_leading(&mut a, Duration::from_secs(10)).await;
    let mut b = candidate(cp.client().await, &lease, "b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        *a.leading.borrow() && !*b.leading.borrow(),
        "exactly one leader"
    );

    // kill -9: the task vanishes without releasing the lease.
    a.task.abort();
    let took = wait_leading(&mut b, Duration::from_secs(8)).await;
    assert!(
        took <= Duration::from_secs(5),
        "takeover took {took:?} with a 3s lease"
    );

    // A clean stop releases the lease: a new candidate leads almost at once.
    let mut c = candidate(cp.client().await, &lease, "c").await;
    b.stop.send_replace(true);
    let _ = b.task.await;
    let took = wait_leading(&mut c, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "handover after release took {took:?}"
    );
    c.stop.send_replace(true);
}

/// Another process holding `lease`: it writes itself in as holder and renews every 300 ms
/// with `renewTime` read from a clock `skew` off ours, until the returned sender says stop.
fn other_holder(
    lease: Api<Lease>,
    name: String,
    identity: &'static str,
    skew: jiff::SignedDuration,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(Some(mut l)) = lease.get_opt(&name).await {
                let spec = l.spec.get_or_insert_with(Default::default);
                let now = MicroTime(jiff::Timestamp::now() + skew);
                if spec.holder_identity.as_deref() != Some(identity) {
                    spec.holder_identity = Some(identity.into());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(now);
                // A conflict with the other candidate is retried on the next round.
                let _ = lease.replace(&name, &PostParams::default(), &l).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = stopped.changed() => return,
            }
        }
    });
    (stop, task)
}

#[tokio::test]
async fn expiry_is_timed_by_the_candidates_clock_not_the_holders() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");

    // A holder whose clock is an hour behind renews all along: it keeps the lease, though
    // its renewTime is an hour old by the candidate's clock.
    let behind = unique_name("pontoon-behind");
    let mut a = candidate(client.clone(), &behind, "a").await;
    wait_leading(&mut a, Duration::from_secs(10)).await;
    a.stop.send_replace(true);
    let _ = a.task.await;
    let (stop, holder) = other_holder(
        leases.clone(),
        behind.clone(),
        "slow-clock",
        -jiff::SignedDuration::from_hours(1),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut b = candidate(client.clone(), &behind, "b").await;
    let took = tokio::time::timeout(Duration::from_secs(6), b.leading.wait_for(|l| *l)).await;
    assert!(
        took.is_err(),
        "b took a 3s lease its holder renews every 300 ms"
    );
    stop.send_replace(true);
    let _ = holder.await;
    b.stop.send_replace(true);
    let _ = b.task.await;

    // A holder whose clock is an hour ahead dies: its renewTime lies an hour in the
    // future, yet a candidate takes over a lease duration after it last changed.
    let ahead = unique_name("pontoon-ahead");
    let mut a = candidate(client.clone(), &ahead, "a").await;
    wait_leading(&mut a, Duration::from_secs(10)).await;
    a.stop.send_replace(true);
    let _ = a.task.await;
    let (stop, holder) = other_holder(
        leases,
        ahead.clone(),
        "fast-clock",
        jiff::SignedDuration::from_hours(1),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send_replace(true);
    let _ = holder.await;
    let mut c = candidate(client, &ahead, "c").await;
    let took = wait_leading(&mut c, Duration::from_secs(10)).await;
    assert!(
        took <= Duration::from_secs(5),
        "takeover of a dead holder's 3s lease took {took:?}"
    );
    c.stop.send_replace(true);
}

fn configmaps(n: usize) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i:03}}}\ndata: {{i: \"{i}\"}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A platform repo in `repo` with one team on `cluster` that owns `n` ConfigMaps.
fn one_team_repo(repo: &std::path::Path, cluster: &str, team: &str, n: usize) {
    write(
        repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: f}}\nspec:\n  clusters: [{{name: {}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n",
            cluster
        ),
    );
    write(
        repo,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{}]}}\n",
            cluster
        ),
    );
    write(repo, &format!("teams/{team}/config.yaml"), &configmaps(n));
}

/// A kubeconfig like the control plane's, whose server is the slow link.
fn kubeconfig_via(cp: &ControlPlane, link: &SlowLink, path: &std::path::Path) {
    let text = std::fs::read_to_string(&cp.kubeconfig).expect("kubeconfig");
    assert!(
        text.contains(&cp.api_server),
        "kubeconfig names {}",
        cp.api_server
    );
    let via = text.replace(&cp.api_server, &format!("https://{}", link.addr));
    std::fs::write(path, via).expect("write kubeconfig");
}

/// A `pontoon run` process, killed when dropped: a failing assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(config: &std::path::Path, log: &std::path::Path) -> Running {
    Running(spawn_run(config, log))
}

/// When the daemon logged a line containing every one of `parts`.
fn logged(log: &std::path::Path, parts: &[&str]) -> Option<jiff::Timestamp> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| parts.iter().all(|p| l.contains(p)))?;
    line.split_whitespace().next()?.parse().ok()
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_mid_sync_makes_no_write_once_it_notices() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let team = unique_name("fenced");
    let system = unique_name("fence-system");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": system}})).expect("ns"),
        )
        .await
        .expect("the daemon's namespace");
    let repo = tmp.path().join("platform");
    one_team_repo(&repo, cp.name, &team, 600);

    // Answers take 50 ms: with two applies in flight the sync of 600 objects lasts
    // about 15 s, so the Lease is taken while it writes.
    let upstream = cp
        .api_server
        .trim_start_matches("https://")
        .parse()
        .expect("address");
    let link = SlowLink::start(upstream).await;
    link.set_delay(Duration::from_millis(50));
    let kubeconfig = tmp.path().join("kubeconfig");
    kubeconfig_via(cp, &link, &kubeconfig);
    let lease_name = unique_name("pontoon-fence");
    let daemon_config = DaemonConfig::dir(&repo)
        .cluster(cp.name, &kubeconfig)
        .concurrency(2)
        .inventory_namespace(&system)
        .leader_election(cp.name, &lease_name, "3s");
    let log = tmp.path().join("pontoon.log");
    let daemon = run(&daemon_config.write(tmp.path()), &log);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &team);
    eventually(
        "the leader writing its sync",
        Duration::from_secs(60),
        || async {
            let n = control_plane::configmap_names(&cms).await.len();
            (n >= 20).then_some(())
        },
    )
    .await;

    // Another process writes itself into the Lease and keeps renewing it.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &system);
    let (stop_thief, thief) = other_holder(leases, lease_name, "thief", jiff::SignedDuration::ZERO);
    let noticed = eventually("the leader noticing", Duration::from_secs(20), || async {
        logged(&log, &["leadership changed", "leading=false"])
    })
    .await;
    let created = control_plane::configmap_names(&cms).await.len();
    assert!(
        created < 600,
        "the sync ended before the Lease was taken ({created} objects)"
    );

    // A write the apiserver received before the leader noticed may still finish: count
    // once those have (a second, as for `late` below), then wait long enough for the sync
    // to have written dozens more objects had it gone on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = control_plane::configmap_names(&cms).await.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // This daemon's requests only: its user agent ends with its identity, host and pid
    // (other tests of this binary write with pontoon's user agent too).
    let pid = format!("-{})", daemon.0.id());
    let writes = |after| {
        audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, after)
            .into_iter()
            .filter(|e| e.user_agent.ends_with(&pid))
            .collect::<Vec<_>>()
    };
    let listed = |w: Vec<audit::Event>| {
        w.iter()
            .map(audit::Event::describe)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = writes(jiff::Timestamp::UNIX_EPOCH)
        .iter()
        .filter(|e| e.object_ref.as_ref().is_some_and(|o| o.namespace == team))
        .count();
    // Requests pass the slow link at once: a write sent before the leader fenced itself
    // reaches the apiserver within milliseconds; a second is room for a loaded machine.
    let late = writes(noticed + jiff::SignedDuration::from_secs(1));
    // The fence: in-flight syncs cancelled. A request the apiserver received by then may
    // still finish; none may be sent after.
    let fenced = logged(&log, &["lost leadership", "cancelled"]);
    stop_thief.send_replace(true);
    let _ = thief.await;
    drop(daemon);
    assert!(
        before >= 20,
        "the audit log shows the leader's writes ({before})"
    );
    assert!(
        late.is_empty(),
        "the old leader sent writes well after it noticed it lost the Lease:\n{}",
        listed(late)
    );
    let fenced = fenced.expect("the leader logs that it cancelled its in-flight syncs");
    let gap = fenced.duration_since(noticed);
    assert!(
        gap < jiff::SignedDuration::from_secs(1),
        "the fence came {gap:?} after the leader noticed"
    );
    let after = writes(fenced);
    assert!(
        after.is_empty(),
        "the old leader sent writes after it fenced itself:\n{}",
        listed(after)
    );
    assert_eq!(
        control_plane::configmap_names(&cms).await.len(),
        settled,
        "objects appeared after the leader noticed"
    );
}
