//! The queue of one cluster's Unit writes: several teams' Units written at once (at most
//! [`WRITES_AT_ONCE`]), each team's writes one at a time in the order they were asked,
//! and a team's report that has not started yet replaced by a newer one (the Unit shows
//! the newest; a status written only to be overwritten is no use).
//!
//! With a thousand units finishing their first sync close together, writing the Units one
//! after another made them trail the syncs by minutes. The writes run as futures of the
//! task that owns the queue (the term's Unit task), never as tasks of their own, so when
//! that task is aborted at the end of a term every write in flight stops with it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::desired::TeamName;
use crate::sync::UnitResult;
use crate::units::control::{UnitWriter, WRITES_AT_ONCE};
use crate::units::status::ComponentHealth;
use crate::units::suspend::Suspension;

/// One write asked of a team's Unit.
pub(super) enum Write {
    /// The status a report leaves the Unit in (`answered`: the reconcile request it
    /// answers; `now`: the time it was reported).
    Report {
        result: Box<UnitResult>,
        answered: Option<String>,
        suspended: Option<Suspension>,
        components: BTreeMap<String, ComponentHealth>,
        now: String,
    },
    /// A suspension (or its end) no sync reported, with the Unit's generation observed
    /// (negative: the one last seen when the write starts).
    Suspension {
        suspended: Option<Suspension>,
        generation: i64,
    },
    /// The team left the cluster: its Unit goes.
    Remove,
}

/// A finished write: the team, and the reconcile request its Unit now says it answered.
pub(super) struct Done {
    pub team: TeamName,
    pub answered: Option<String>,
}

/// The Unit writes of one cluster, queued and in flight.
pub(super) struct UnitWrites {
    writer: Arc<UnitWriter>,
    queued: HashMap<TeamName, VecDeque<Write>>,
    /// Teams with a write queued and none in flight, in the order they came.
    next: VecDeque<TeamName>,
    running: HashSet<TeamName>,
    in_flight: FuturesUnordered<BoxFuture<'static, Done>>,
}

impl UnitWrites {
    pub(super) fn new(writer: Arc<UnitWriter>) -> UnitWrites {
        UnitWrites {
            writer,
            queued: HashMap::new(),
            next: VecDeque::new(),
            running: HashSet::new(),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Queues a write of `team`'s Unit, after the team's writes asked before it.
    pub(super) fn push(&mut self, team: TeamName, write: Write) {
        let queue = self.queued.entry(team.clone()).or_default();
        if matches!(write, Write::Report { .. })
            && matches!(queue.back(), Some(Write::Report { .. }))
        {
            queue.pop_back();
        }
        let waiting = !queue.is_empty();
        queue.push_back(write);
        if !waiting && !self.running.contains(&team) {
            self.next.push_back(team);
        }
        self.start();
    }

    /// Whether a write is in flight (else [`UnitWrites::finished`] has nothing to wait for).
    pub(super) fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Waits for a write in flight to finish and starts the next ones.
    pub(super) async fn finished(&mut self) -> Option<Done> {
        let done = self.in_flight.next().await?;
        self.running.remove(&done.team);
        if self.queued.contains_key(&done.team) {
            self.next.push_back(done.team.clone());
        }
        self.start();
        Some(done)
    }

    fn start(&mut self) {
        while self.in_flight.len() < WRITES_AT_ONCE {
            let Some(team) = self.next.pop_front() else {
                return;
            };
            let Some(queue) = self.queued.get_mut(&team) else {
                continue;
            };
            let Some(write) = queue.pop_front() else {
                self.queued.remove(&team);
                continue;
            };
            if queue.is_empty() {
                self.queued.remove(&team);
            }
            self.running.insert(team.clone());
            let writer = self.writer.clone();
            self.in_flight
                .push(Box::pin(async move { run(&writer, team, write).await }));
        }
    }
}

/// One write; a failure is logged (the team's next report writes its status anyway).
async fn run(writer: &UnitWriter, team: TeamName, write: Write) -> Done {
    let mut answered = None;
    let outcome = match write {
        Write::Report {
            result,
            answered: answers,
            suspended,
            components,
            now,
        } => {
            let written = writer
                .record(
                    &result,
                    answers.as_deref(),
                    suspended.as_ref(),
                    &components,
                    &now,
                )
                .await;
            if written.is_ok() {
                answered = answers;
            }
            written.map(|_| ())
        }
        Write::Suspension {
            suspended,
            generation,
        } => {
            let generation = if generation < 0 {
                writer.generation(&team)
            } else {
                generation
            };
            writer
                .suspension(&team, suspended.as_ref(), generation)
                .await
                .map(|_| ())
        }
        Write::Remove => writer.remove(&team).await,
    };
    if let Err(e) = outcome {
        tracing::warn!(%team, error = %crate::describe(&e), "writing the Unit");
    }
    Done { team, answered }
}
