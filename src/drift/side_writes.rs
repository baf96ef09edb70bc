//! Writes drift makes besides syncs: removing fields a person added, and the Kubernetes
//! Events about drifted objects. They go through one bounded queue per cluster, a few at a
//! time; each waits for one of the cluster's write permits (the limit syncs share) and has
//! a timeout. A full queue drops the write and reports it as a drift failure of its team,
//! which the daemon counts (`pontoon_drift_errors_total`) and shows on the unit, so
//! nothing here grows without bound or fails unseen. Stopping the watches stops these
//! writes too: a replica that stops leading writes nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::{DriftError, FailureSink};
use crate::cluster::Cluster;
use crate::desired::TeamName;

/// How many side writes may wait, run at once, and how long one may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub queue: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue: 256,
            concurrency: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

type Write = Pin<Box<dyn Future<Output = Result<(), DriftError>> + Send>>;

struct Job {
    team: TeamName,
    what: &'static str,
    write: Write,
}

/// The side-write queue of one cluster.
pub(super) struct SideWrites {
    tx: mpsc::Sender<Job>,
    failures: FailureSink,
    worker: JoinHandle<()>,
}

impl SideWrites {
    pub(super) fn start(cluster: Arc<Cluster>, failures: FailureSink, limits: Limits) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(limits.queue.max(1));
        let sink = failures.clone();
        let jobs =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|job| (job, rx)) },
            );
        let worker = tokio::spawn(jobs.for_each_concurrent(
            limits.concurrency.max(1),
            move |job| {
                let (cluster, sink) = (cluster.clone(), sink.clone());
                async move {
                    let _permit = cluster.write_permit().await;
                    match tokio::time::timeout(limits.timeout, job.write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => sink.object(&job.team, error),
                        Err(_) => sink.object(
                            &job.team,
                            DriftError::WriteTimedOut {
                                what: job.what,
                                after: limits.timeout,
                            },
                        ),
                    }
                }
            },
        ));
        SideWrites {
            tx,
            failures,
            worker,
        }
    }

    /// Queues `write` (what it is: `what`) for `team`; a full queue drops it and says so.
    pub(super) fn submit(
        &self,
        team: &TeamName,
        what: &'static str,
        write: impl Future<Output = Result<(), DriftError>> + Send + 'static,
    ) {
        let job = Job {
            team: team.clone(),
            what,
            write: Box::pin(write),
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                self.failures
                    .object(&job.team, DriftError::QueueFull { what: job.what });
            }
        }
    }

    /// Stops every queued and running side write.
    pub(super) fn stop(&self) {
        self.worker.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ClusterName;
    use crate::drift::error::{DriftFailure, FailureScope};

    fn cluster() -> Arc<Cluster> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        Arc::new(Cluster::from_config(ClusterName("c".into()), config, 1).expect("cluster"))
    }

    fn errors(rx: &mut mpsc::Receiver<DriftFailure>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            assert_eq!(f.scope, FailureScope::Team(TeamName("shop".into())));
            out.push(f.error.to_string());
        }
        out
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_reports_and_a_slow_write_times_out() {
        let (tx, mut rx) = mpsc::channel(64);
        let sink = FailureSink::new(ClusterName("c".into()), tx);
        let limits = Limits {
            queue: 2,
            concurrency: 1,
            timeout: Duration::from_millis(300),
        };
        let writes = SideWrites::start(cluster(), sink, limits);
        let team = TeamName("shop".into());
        // Six writes that never end, submitted at once: the queue takes two, four are
        // dropped and reported.
        for _ in 0..6 {
            writes.submit(&team, "an Event", std::future::pending());
        }
        let full = errors(&mut rx);
        assert_eq!(full.len(), 4, "{full:?}");
        assert!(
            full.iter()
                .all(|e| e == "the drift queue is full: an Event was dropped"),
            "{full:?}"
        );
        // One at a time (concurrency 1), each given up after 300 ms.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let timed_out = errors(&mut rx);
        assert_eq!(
            timed_out,
            [
                "an Event timed out after 300ms",
                "an Event timed out after 300ms"
            ]
        );
        writes.stop();
    }
}
