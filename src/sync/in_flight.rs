//! Which teams have a sync running on a cluster right now. The drift engine asks, so it can
//! tell pontoon's own writes and deletions that are not recorded yet from someone else's.
//!
//! The count is kept by a guard that lives as long as the sync, so a sync that returns
//! early or fails still ends its count. No lock is held across an await.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::desired::TeamName;

/// Syncs in flight on one cluster, per team.
#[derive(Default)]
pub(super) struct InFlight {
    /// How many syncs of each team are running; a team with none is absent.
    running: Mutex<HashMap<TeamName, usize>>,
    /// Woken whenever a team's last sync in flight ends.
    ended: Notify,
}

/// Counts one sync of its team as running until dropped.
pub(super) struct Running<'a> {
    in_flight: &'a InFlight,
    team: TeamName,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.in_flight.lock();
        if let Some(n) = running.get_mut(&self.team) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.team);
                self.in_flight.ended.notify_waiters();
            }
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TeamName, usize>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a sync of `team` as running until the guard drops.
    pub fn start(&self, team: &TeamName) -> Running<'_> {
        *self.lock().entry(team.clone()).or_default() += 1;
        Running {
            in_flight: self,
            team: team.clone(),
        }
    }

    /// Whether a sync of `team` is running.
    pub fn contains(&self, team: &TeamName) -> bool {
        self.lock().contains_key(team)
    }

    /// Returns once no sync of `team` is running.
    pub async fn until_idle(&self, team: &TeamName) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between the two is not missed.
            ended.as_mut().enable();
            if !self.contains(team) {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_team_is_idle_once_its_last_sync_ends() {
        let in_flight = InFlight::default();
        let team = TeamName("shop".into());
        let first = in_flight.start(&team);
        let second = in_flight.start(&team);
        let idle = in_flight.until_idle(&team);
        tokio::pin!(idle);
        drop(first);
        assert!(in_flight.contains(&team));
        let early = tokio::time::timeout(Duration::from_millis(50), &mut idle).await;
        assert!(early.is_err(), "idle while a sync still runs");
        drop(second);
        assert!(!in_flight.contains(&team));
        tokio::time::timeout(Duration::from_secs(1), idle)
            .await
            .expect("a waiter is woken when the last sync ends");
    }
}
