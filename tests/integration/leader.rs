//! Leader election on a real Lease: one leader at a time; when it dies without letting
//! go, a standby takes over within the lease duration; a clean stop hands over at once.

use std::time::{Duration, Instant};

use pontoon::daemon::leader::{self, LeaseSettings};
use tokio::sync::watch;

use crate::support::control_plane::{self, unique_name};

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
