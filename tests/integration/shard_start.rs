//! Replicas started together split the shards without handing any on: each runs the
//! shard election of `pontoon::daemon::shards` against a real apiserver, and none ever
//! holds more than its fair share (without the round that only announces a replica, the
//! first to read the Leases saw itself alone and took every shard).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use pontoon::daemon::leader::LeaseSettings;
use pontoon::daemon::shards::{ShardSettings, ShardView, run};
use serde_json::json;
use tokio::sync::watch;

use crate::support::control_plane::{self, eventually, unique_name};

const SHARDS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_each_take_one_shard_and_hand_none_on() {
    let cp = control_plane::shared();
    let client = cp.client().await;
    let namespace = unique_name("shard-start");
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");

    let (stop_tx, stop) = watch::channel(false);
    let mut replicas = Vec::new();
    for identity in ["a", "b", "c"] {
        let settings = ShardSettings {
            lease: LeaseSettings::new(&namespace, "pontoon", identity, Duration::from_secs(6)),
            count: SHARDS,
            url: None,
            drain: Duration::from_secs(1),
        };
        let (held_tx, held) = watch::channel(BTreeSet::new());
        let (active_tx, active) = watch::channel(BTreeSet::new());
        let (holders_tx, _holders) = watch::channel(Vec::<ShardView>::new());
        // Every change of what this replica holds, answered at once as a daemon that
        // stopped the syncs of a shard it gave up would answer.
        let (seen_tx, seen) = watch::channel(Vec::<BTreeSet<u32>>::new());
        let mut follow = held.clone();
        tokio::spawn(async move {
            while follow.changed().await.is_ok() {
                let now = follow.borrow_and_update().clone();
                seen_tx.send_modify(|s| s.push(now.clone()));
                let _ = active_tx.send(now);
            }
        });
        let task = tokio::spawn(run(
            client.clone(),
            settings,
            held_tx,
            active,
            holders_tx,
            stop.clone(),
        ));
        replicas.push((identity, held, seen, task));
    }

    eventually(
        "each replica holds one shard",
        Duration::from_secs(40),
        || async {
            let all: BTreeSet<u32> = replicas
                .iter()
                .flat_map(|(_, held, _, _)| held.borrow().clone())
                .collect();
            (all.len() == SHARDS as usize
                && replicas
                    .iter()
                    .all(|(_, held, _, _)| held.borrow().len() == 1))
            .then_some(())
        },
    )
    .await;
    for (identity, _, seen, _) in &replicas {
        let history = seen.borrow().clone();
        assert!(
            history.iter().all(|h| h.len() <= 1),
            "replica {identity} held more than its share on the way: {history:?}"
        );
        assert_eq!(history.len(), 1, "replica {identity}: {history:?}");
    }
    let _ = stop_tx.send(true);
    for (_, _, _, task) in replicas {
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
}
