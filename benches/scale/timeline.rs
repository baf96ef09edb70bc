//! How a convergence from empty went over time: every few seconds, how many units the
//! replicas show Synced (`/api/status`) and how many Unit resources say `Ready` (listed
//! from the watch caches of the three apiservers, `resourceVersion=0`, so reading them
//! costs the servers little). Printed as the time each share was reached and the counts
//! at fixed times, so a slow start (few units Synced in the first minute though the rest
//! come fast) and Units trailing their syncs show apart from the total time.

use kube::Api;
use kube::api::{DynamicObject, ListParams};

use crate::control_plane::ControlPlane;

/// One look at the convergence.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Seconds since the replicas started.
    pub at: f64,
    pub synced: usize,
    /// Unit resources whose `Ready` condition is `True`.
    pub units_ready: usize,
}

/// The looks of one convergence.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub points: Vec<Point>,
    pub total: usize,
}

/// Unit resources of the benchmark's teams whose `Ready` condition is `True`, the three
/// clusters summed (0 for a cluster that does not answer).
pub async fn units_ready(cps: &[ControlPlane]) -> usize {
    let mut ready = 0;
    for cp in cps {
        let api: Api<DynamicObject> = Api::namespaced_with(
            cp.client().await,
            pontoon::config::DEFAULT_NAMESPACE,
            &pontoon::units::control::resource(),
        );
        let Ok(list) = api.list(&ListParams::default().match_any()).await else {
            continue;
        };
        ready += list
            .items
            .iter()
            .filter(|u| {
                u.data["spec"]["team"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("team-"))
            })
            .filter(|u| {
                u.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
    }
    ready
}

impl Timeline {
    /// The first look at which `count` of a point reached `n`.
    fn reached(&self, n: usize, count: impl Fn(&Point) -> usize) -> Option<f64> {
        self.points.iter().find(|p| count(p) >= n).map(|p| p.at)
    }

    /// The last look at or before `at`.
    fn at(&self, at: f64) -> Option<&Point> {
        self.points.iter().rev().find(|p| p.at <= at)
    }

    /// Two lines: when each share of the units was Synced and its Unit Ready, and the
    /// counts at fixed times.
    pub fn describe(&self) -> String {
        let total = self.total.max(1);
        let mut marks: Vec<(String, usize)> = vec![("first".to_owned(), 1)];
        if total > 200 {
            marks.push(("100".to_owned(), 100));
        }
        for share in [10, 25, 50, 75, 100] {
            marks.push((format!("{share}%"), (total * share).div_ceil(100)));
        }
        let secs = |t: Option<f64>| t.map_or_else(|| "—".to_owned(), |t| format!("{t:.0} s"));
        let reached: Vec<String> = marks
            .iter()
            .map(|(name, n)| {
                format!(
                    "{name} {} ({})",
                    secs(self.reached(*n, |p| p.synced)),
                    secs(self.reached(*n, |p| p.units_ready))
                )
            })
            .collect();
        let at: Vec<String> = [10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0]
            .iter()
            .filter_map(|t| {
                let p = self.at(*t)?;
                (self.points.last()?.at >= *t)
                    .then(|| format!("{t:.0} s {} ({})", p.synced, p.units_ready))
            })
            .collect();
        format!(
            "units Synced (Units Ready) reached: {}\n    units Synced (Units Ready) at: {}",
            reached.join(", "),
            at.join(", ")
        )
    }
}
