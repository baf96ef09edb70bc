//! Shards across replicas: three real `pontoon run` processes (each with its own
//! `POD_NAME`, which its user agent carries into the apiserver's audit log) share six
//! teams on two control planes through three shard Leases. Every object is applied once
//! per revision, by the replica holding its team's shard; a replica killed with SIGKILL
//! hands its shard over within the lease, and its units are resynced without a write; a
//! rolling restart of all three applies nothing twice; and no two replicas ever write
//! for one shard. Every replica's `/api/status` and page say who holds which shard and
//! link to the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use pontoon::daemon::shards::shard_of;
use serde_json::{Value, json};

use crate::support::audit::{self, Event};
use crate::support::control_plane::{self, ControlPlane, eventually, unique_name};
use crate::support::daemon::write;
use crate::support::daemon_config::DaemonConfig;

const SHARDS: u32 = 3;
const LEASE: Duration = Duration::from_secs(3);

/// A `pontoon run` replica named `identity`; killed (SIGKILL) when dropped.
struct Replica {
    identity: String,
    base: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn start(setup: &Setup, identity: &str) -> Replica {
        let dir = setup.tmp.join(identity);
        std::fs::create_dir_all(&dir).expect("replica dir");
        let config = DaemonConfig::dir(&setup.repo)
            .cluster(setup.one.name, &setup.one.kubeconfig)
            .cluster(setup.two.name, &setup.two.kubeconfig)
            .inventory_namespace(&setup.system)
            .leader_election(setup.one.name, &setup.lease, "3s")
            .shards(SHARDS);
        let base = config.base_url();
        let path = config.write(&dir);
        let log = std::fs::File::create(dir.join("pontoon.log")).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(["run", "--config"])
            .arg(&path)
            .env("POD_NAME", identity)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pontoon run");
        Replica {
            identity: identity.to_owned(),
            base,
            child,
        }
    }

    /// SIGTERM, and waits until it exited.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not stop within 40 s of SIGTERM", self.identity);
    }

    async fn status(&self) -> Option<Value> {
        reqwest::get(format!("{}/api/status", self.base))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

struct Setup {
    one: &'static ControlPlane,
    two: &'static ControlPlane,
    tmp: PathBuf,
    repo: PathBuf,
    system: String,
    lease: String,
    teams: Vec<String>,
}

/// Six teams, two in each shard, each on both clusters with three ConfigMaps.
fn teams(prefix: &str) -> Vec<String> {
    let mut per = BTreeMap::<u32, Vec<String>>::new();
    for i in 0.. {
        let team = format!("{prefix}t{i}");
        let list = per.entry(shard_of(&team, SHARDS)).or_default();
        if list.len() < 2 {
            list.push(team);
        }
        if per.len() == SHARDS as usize && per.values().all(|l| l.len() == 2) {
            break;
        }
    }
    per.into_values().flatten().collect()
}

fn write_repo(s: &Setup, version: u32) {
    write(
        &s.repo,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {}}}, {{name: {}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: ConfigMap}}]\n",
            s.one.name, s.two.name
        ),
    );
    for team in &s.teams {
        write(
            &s.repo,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{}, {}]}}\n",
                s.one.name, s.two.name
            ),
        );
        let cms: Vec<String> = (0..3)
            .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}}}\ndata: {{v: \"{version}\"}}\n"))
            .collect();
        write(
            &s.repo,
            &format!("teams/{team}/config.yaml"),
            &cms.join("---\n"),
        );
    }
}

/// The team a write was for: an object in its namespace, its Namespace, its Unit, or its
/// inventory (and the inventory's pages) in the daemon's namespace.
fn team_of<'a>(s: &'a Setup, e: &Event) -> Option<&'a str> {
    let o = e.object_ref.as_ref()?;
    if o.resource == "leases" || o.resource == "events" {
        return None;
    }
    s.teams.iter().map(String::as_str).find(|t| {
        let inventory = format!("pontoon-inventory-{t}");
        o.namespace == *t
            || (o.resource == "namespaces" && o.name == *t)
            || (o.resource == "units" && o.namespace == s.system && o.name == *t)
            || (o.namespace == s.system
                && (o.name == inventory || o.name.starts_with(&format!("{inventory}-"))))
    })
}

/// The replica a request came from: the identity in its user agent.
fn replica_of(e: &Event) -> String {
    e.user_agent
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or_else(|| e.user_agent.clone(), |(id, _)| id.to_owned())
}

/// Every write (dry runs apart) for a team on both clusters received after `after`.
fn team_writes(s: &Setup, after: jiff::Timestamp) -> Vec<(String, Event)> {
    let mut all: Vec<(String, Event)> = [s.one, s.two]
        .iter()
        .flat_map(|cp| audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, after))
        .filter(|e| !e.dry_run())
        .filter_map(|e| team_of(s, &e).map(|t| (t.to_owned(), e)))
        .collect();
    all.sort_by_key(|(_, e)| e.received());
    all
}

/// Applies the apiserver carried out, per (cluster, namespace, ConfigMap) of the teams,
/// after `after`. A refused one is not counted: a sync that creates a team's Role retries
/// the team's first applies briefly while RBAC catches up.
fn configmap_applies(s: &Setup, after: jiff::Timestamp) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cp in [s.one, s.two] {
        for e in audit::writes_by(cp.dir(), pontoon::cluster::USER_AGENT, after) {
            let Some(o) = e.object_ref.as_ref() else {
                continue;
            };
            if e.dry_run()
                || !e.succeeded()
                || o.resource != "configmaps"
                || !s.teams.contains(&o.namespace)
            {
                continue;
            }
            out.entry(format!("{}/{}/{}", cp.name, o.namespace, o.name))
                .or_default()
                .push(format!(
                    "{} by {} ({})",
                    e.verb,
                    replica_of(&e),
                    e.response_status.as_ref().map_or(0, |s| s.code)
                ));
        }
    }
    out
}

/// [`configmap_applies`] once the audit logs hold `expected` objects, or after 15 s: the
/// apiserver logs a request's event after it has answered it, so a sync the replicas
/// report done may still have events on their way to the log. Fewer than `expected`
/// after that is a missing apply; more is a write too many either way.
async fn settled_applies(
    s: &Setup,
    after: jiff::Timestamp,
    expected: usize,
) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applies = configmap_applies(s, after);
        if applies.len() >= expected || Instant::now() >= deadline {
            return applies;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Who holds each shard Lease now (None: free, absent or released).
async fn holders(s: &Setup) -> Vec<Option<String>> {
    lease_holders(s.one, &s.system, &s.lease, SHARDS).await
}

/// Who holds each of the `shards` shard Leases named after `lease` in `system`.
pub(crate) async fn lease_holders(
    cp: &ControlPlane,
    system: &str,
    lease: &str,
    shards: u32,
) -> Vec<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(cp.client().await, system);
    let mut out = Vec::new();
    for shard in 0..shards {
        let name = pontoon::daemon::shards::shard_lease_name(lease, shard);
        let holder = leases
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        out.push(holder);
    }
    out
}

/// Waits until each of `replicas` holds exactly one shard.
async fn balanced(s: &Setup, replicas: &[&Replica], within: Duration) -> Vec<String> {
    let want: BTreeSet<String> = replicas.iter().map(|r| r.identity.clone()).collect();
    eventually("one shard per replica", within, || async {
        let h = holders(s).await;
        let got: BTreeSet<String> = h.iter().flatten().cloned().collect();
        (h.iter().all(Option::is_some) && got == want).then(|| h.into_iter().flatten().collect())
    })
    .await
}

/// Waits until the replicas' `/api/status` together show every unit Synced at one
/// revision other than `not`; returns it.
async fn all_synced(s: &Setup, replicas: &[&Replica], not: &str, within: Duration) -> String {
    let expected = s.teams.len() * 2;
    eventually("every unit Synced at a new revision", within, || async {
        let mut units: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
        for r in replicas {
            let status = r.status().await?;
            for u in status["units"].as_array()? {
                let key = (
                    u["team"].as_str()?.to_owned(),
                    u["cluster"].as_str()?.to_owned(),
                );
                let v = (
                    u["state"].as_str()?.to_owned(),
                    u["revision"].as_str()?.to_owned(),
                );
                units.insert(key, v);
            }
        }
        let revisions: BTreeSet<&String> = units.values().map(|(_, r)| r).collect();
        let done = units.len() == expected
            && units
                .values()
                .all(|(state, rev)| state == "Synced" && rev != not)
            && revisions.len() == 1;
        done.then(|| revisions.into_iter().next().cloned().unwrap_or_default())
    })
    .await
}

/// No two replicas ever wrote for one shard at once: per shard, the writes in the order
/// the apiserver received them come in runs by replica, and no replica has two runs (it
/// never wrote again once another had taken the shard).
fn one_writer_per_shard(s: &Setup) {
    let mut per_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (team, e) in team_writes(s, jiff::Timestamp::UNIX_EPOCH) {
        let runs = per_shard.entry(shard_of(&team, SHARDS)).or_default();
        let who = replica_of(&e);
        if runs.last() != Some(&who) {
            runs.push(who);
        }
    }
    for (shard, runs) in &per_shard {
        let distinct: BTreeSet<&String> = runs.iter().collect();
        assert_eq!(
            distinct.len(),
            runs.len(),
            "shard {shard} was written by replicas taking turns: {runs:?}"
        );
    }
}

async fn setup() -> Setup {
    let (one, two) = (control_plane::shared(), control_plane::second());
    let tmp = tempfile::tempdir().expect("tempdir").keep();
    let system = unique_name("shard-system");
    let namespaces: Api<Namespace> = Api::all(one.client().await);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": system}})).expect("ns"),
        )
        .await
        .expect("the daemon's namespace");
    let prefix = unique_name("sh");
    let s = Setup {
        one,
        two,
        repo: tmp.join("platform"),
        tmp,
        system,
        lease: unique_name("pontoon"),
        teams: teams(&prefix),
    };
    write_repo(&s, 1);
    s
}

#[tokio::test]
async fn three_replicas_share_the_teams_and_hand_shards_over_without_writing_twice() {
    let s = setup().await;
    let start = jiff::Timestamp::now();
    let r0 = Replica::start(&s, "r0");
    let r1 = Replica::start(&s, "r1");
    let r2 = Replica::start(&s, "r2");
    balanced(&s, &[&r0, &r1, &r2], Duration::from_secs(60)).await;
    let rev1 = all_synced(&s, &[&r0, &r1, &r2], "", Duration::from_secs(90)).await;

    // One view: every replica shows who holds each shard, linked to the holder's page.
    let urls: BTreeMap<&str, &str> = [&r0, &r1, &r2]
        .iter()
        .map(|r| (r.identity.as_str(), r.base.as_str()))
        .collect();
    for r in [&r0, &r1, &r2] {
        let shown = eventually(
            "the shard holders on /api/status",
            Duration::from_secs(10),
            || async {
                let status = r.status().await?;
                let shards = status["shards"].as_array()?.clone();
                let held: BTreeMap<String, String> = shards
                    .iter()
                    .filter_map(|v| {
                        Some((
                            v["holder"].as_str()?.to_owned(),
                            v["url"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                (held.len() == 3).then_some(held)
            },
        )
        .await;
        for (holder, url) in &shown {
            assert_eq!(
                urls.get(holder.as_str()).copied(),
                Some(url.as_str()),
                "{} shows {shown:?}",
                r.identity
            );
        }
        let page = reqwest::get(&r.base)
            .await
            .expect("page")
            .text()
            .await
            .expect("page");
        for (id, url) in &urls {
            if *id != r.identity {
                assert!(
                    page.contains(&format!("<a href=\"{url}\">{id}</a>")),
                    "{} links {id}: {page}",
                    r.identity
                );
            }
        }
        // Its metrics say which shard it holds.
        let mine = holders(&s)
            .await
            .iter()
            .position(|h| h.as_deref() == Some(r.identity.as_str()))
            .expect("a shard of its own");
        let metrics = reqwest::get(format!("{}/metrics", r.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics");
        for shard in 0..SHARDS as usize {
            let line = format!(
                "pontoon_shard_held{{shard=\"{shard}\"}} {}",
                u8::from(shard == mine)
            );
            assert!(
                metrics.contains(&line),
                "{}: no {line} in\n{metrics}",
                r.identity
            );
        }
    }

    // Every object applied exactly once for the first revision.
    let applies = settled_applies(&s, start, s.teams.len() * 2 * 3).await;
    assert_eq!(applies.len(), s.teams.len() * 2 * 3, "{applies:#?}");
    for (object, writes) in &applies {
        assert_eq!(
            writes.len(),
            1,
            "{object} written more than once at one revision: {writes:?}"
        );
    }

    // A new revision: each object applied once, by the replica holding its team's shard.
    let changed = jiff::Timestamp::now();
    write_repo(&s, 2);
    let rev2 = all_synced(&s, &[&r0, &r1, &r2], &rev1, Duration::from_secs(60)).await;
    let by_shard = holders(&s).await;
    let applies = settled_applies(&s, changed, s.teams.len() * 2 * 3).await;
    assert_eq!(applies.len(), s.teams.len() * 2 * 3, "{applies:#?}");
    for (object, writes) in &applies {
        let team = object.split('/').nth(1).unwrap_or_default();
        let holder = by_shard[shard_of(team, SHARDS) as usize]
            .clone()
            .unwrap_or_default();
        assert_eq!(writes, &[format!("patch by {holder} (200)")], "{object}");
    }

    // kill -9 of one replica: its shard is taken over within the lease, and its units
    // are synced again by the new holder without a write.
    let victim_shards: Vec<u32> = (0..SHARDS)
        .filter(|i| by_shard[*i as usize].as_deref() == Some("r1"))
        .collect();
    let killed = jiff::Timestamp::now();
    let t0 = Instant::now();
    drop(r1);
    let took = eventually(
        "the killed replica's shard taken over",
        Duration::from_secs(30),
        || async {
            let h = holders(&s).await;
            victim_shards
                .iter()
                .all(|i| h[*i as usize].as_deref().is_some_and(|who| who != "r1"))
                .then(|| t0.elapsed())
        },
    )
    .await;
    eprintln!("shard of a killed replica taken over after {took:?} (lease {LEASE:?})");
    assert!(took <= LEASE * 2 + Duration::from_secs(2), "took {took:?}");
    let new_holder = holders(&s).await[victim_shards[0] as usize]
        .clone()
        .unwrap_or_default();
    let taker = if new_holder == "r0" { &r0 } else { &r2 };
    let moved: Vec<&String> = s
        .teams
        .iter()
        .filter(|t| victim_shards.contains(&shard_of(t, SHARDS)))
        .collect();
    eventually(
        "the taken shard's units synced by the new holder",
        Duration::from_secs(30),
        || async {
            let status = taker.status().await?;
            let units = status["units"].as_array()?;
            let synced = units
                .iter()
                .filter(|u| moved.iter().any(|t| u["team"] == t.as_str()))
                .filter(|u| {
                    u["state"] == "Synced"
                        && u["revision"] == rev2.as_str()
                        && !u["seconds_since_sync"].is_null()
                })
                .count();
            (synced == moved.len() * 2).then_some(())
        },
    )
    .await;
    let after_kill = team_writes(&s, killed);
    assert!(
        after_kill.is_empty(),
        "writes after the kill: {:#?}",
        after_kill
            .iter()
            .map(|(t, e)| format!("{t}: {}", e.describe()))
            .collect::<Vec<_>>()
    );

    // A rolling restart of all three, with a new revision in the middle: nothing is
    // written before it, and each object once after it.
    let rolling = jiff::Timestamp::now();
    let r1 = Replica::start(&s, "r1-b");
    balanced(&s, &[&r0, &r1, &r2], Duration::from_secs(60)).await;
    r0.terminate();
    let r0 = Replica::start(&s, "r0-b");
    balanced(&s, &[&r0, &r1, &r2], Duration::from_secs(60)).await;
    let pushed = jiff::Timestamp::now();
    let before_push = team_writes(&s, rolling);
    write_repo(&s, 3);
    r2.terminate();
    let r2 = Replica::start(&s, "r2-b");
    balanced(&s, &[&r0, &r1, &r2], Duration::from_secs(60)).await;
    let _rev3 = all_synced(&s, &[&r0, &r1, &r2], &rev2, Duration::from_secs(60)).await;
    assert!(
        before_push.is_empty(),
        "writes while restarting with nothing changed: {:#?}",
        before_push
            .iter()
            .map(|(t, e)| format!("{t}: {}", e.describe()))
            .collect::<Vec<_>>()
    );
    let applies = settled_applies(&s, pushed, s.teams.len() * 2 * 3).await;
    assert_eq!(applies.len(), s.teams.len() * 2 * 3, "{applies:#?}");
    for (object, writes) in &applies {
        assert_eq!(
            writes.len(),
            1,
            "{object} written more than once at one revision: {writes:?}"
        );
    }
    one_writer_per_shard(&s);
    drop((r0, r1, r2));
    let _ = std::fs::remove_dir_all(&s.tmp);
}
