//! Sync and drift metrics, registered in one place. Labels are `team` and `cluster` (and `status`
//! for the state set) — never revisions, object names or error text.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::desired::UnitId;
use crate::drift::{DriftEvent, DriftFailure, FailureScope};
use crate::sync::{UnitResult, UnitState};

const STATES: [UnitState; 4] = [
    UnitState::Synced,
    UnitState::OutOfSync,
    UnitState::Progressing,
    UnitState::Failed,
];

pub struct Metrics {
    pub sync_status: IntGaugeVec,
    pub last_attempt: GaugeVec,
    pub last_success: GaugeVec,
    pub duration: HistogramVec,
    pub managed_objects: IntGaugeVec,
    pub apply_errors: IntCounterVec,
    pub pruned: IntCounterVec,
    pub prune_held: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub drift_detected: IntCounterVec,
    pub drift_corrected: IntCounterVec,
    pub drift_correction: HistogramVec,
    pub drifted: IntGaugeVec,
    pub drift_errors: IntCounterVec,
    pub drift_watch_errors: IntCounterVec,
    /// 1 for a unit waiting on an earlier rollout stage, 0 for one in a stage that does not.
    pub rollout_waiting: IntGaugeVec,
    /// Suspended units: 1 with who and why; since and until as timestamps.
    pub suspended: IntGaugeVec,
    pub suspended_since: GaugeVec,
    pub suspended_until: GaugeVec,
    /// Per unit: when its suspension has lasted too long (its `until`, at most a day after
    /// it began); +Inf for a unit not suspended, so the alert's series always exist.
    pub suspension_deadline: GaugeVec,
    suspended_series: std::sync::Mutex<std::collections::HashMap<UnitId, (String, String)>>,
    /// The stage each unit's `rollout_waiting` series names, to drop it when that changes.
    rollout_series: std::sync::Mutex<std::collections::BTreeMap<UnitId, String>>,
    /// Policy debt: per platform rule, the objects of the newest render that break it.
    pub policy_violations: IntGaugeVec,
}

impl Metrics {
    pub fn register(r: &Registry) -> prometheus::Result<Metrics> {
        let unit = ["team", "cluster"];
        let m = Metrics {
            sync_status: IntGaugeVec::new(
                Opts::new(
                    "pontoon_sync_status",
                    "1 for the unit's current sync status, 0 for the others",
                ),
                &["team", "cluster", "status"],
            )?,
            last_attempt: GaugeVec::new(
                Opts::new(
                    "pontoon_sync_last_attempt_timestamp_seconds",
                    "When the unit's last sync attempt finished",
                ),
                &unit,
            )?,
            last_success: GaugeVec::new(
                Opts::new(
                    "pontoon_sync_last_success_timestamp_seconds",
                    "When the unit last finished Synced",
                ),
                &unit,
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("pontoon_sync_duration_seconds", "Duration of one unit sync")
                    .buckets(vec![
                        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
                &unit,
            )?,
            managed_objects: IntGaugeVec::new(
                Opts::new(
                    "pontoon_managed_objects",
                    "Objects the unit holds after its last sync",
                ),
                &unit,
            )?,
            apply_errors: IntCounterVec::new(
                Opts::new(
                    "pontoon_apply_errors_total",
                    "Objects the API server refused or that failed health",
                ),
                &unit,
            )?,
            pruned: IntCounterVec::new(
                Opts::new("pontoon_pruned_objects_total", "Objects pruned"),
                &unit,
            )?,
            prune_held: IntGaugeVec::new(
                Opts::new(
                    "pontoon_prune_held",
                    "Objects whose deletion is held by the mass-deletion rule",
                ),
                &unit,
            )?,
            build_info: IntGaugeVec::new(
                Opts::new("pontoon_build_info", "Always 1; the version as a label"),
                &["version"],
            )?,
            drift_detected: IntCounterVec::new(
                Opts::new(
                    "pontoon_drift_detected_total",
                    "Managed objects found changed by someone else",
                ),
                &["team", "cluster", "kind"],
            )?,
            drift_corrected: IntCounterVec::new(
                Opts::new(
                    "pontoon_drift_corrected_total",
                    "Drifted objects seen back to what pontoon applied",
                ),
                &["team", "cluster", "kind"],
            )?,
            drift_correction: HistogramVec::new(
                HistogramOpts::new(
                    "pontoon_drift_correction_duration_seconds",
                    "From detecting drift to seeing it corrected",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ]),
                &["cluster"],
            )?,
            drifted: IntGaugeVec::new(
                Opts::new(
                    "pontoon_drifted_objects",
                    "Managed objects drifted now: detected and not yet seen corrected (report mode leaves them)",
                ),
                &unit,
            )?,
            drift_errors: IntCounterVec::new(
                Opts::new(
                    "pontoon_drift_errors_total",
                    "Failures to act on the unit's drift: re-reading an object, removing fields added by hand, publishing its Event",
                ),
                &unit,
            )?,
            drift_watch_errors: IntCounterVec::new(
                Opts::new(
                    "pontoon_drift_watch_errors_total",
                    "Failures of the drift watch of a kind (each retry counts), or a kind that cannot be watched",
                ),
                &["cluster", "kind"],
            )?,
            rollout_waiting: IntGaugeVec::new(
                Opts::new(
                    "pontoon_rollout_waiting",
                    "1 while the unit waits for an earlier rollout stage to take the newest commit, 0 for a unit in a stage that does not",
                ),
                &["team", "cluster", "stage"],
            )?,
            rollout_series: Default::default(),
            suspended: IntGaugeVec::new(
                Opts::new(
                    "pontoon_unit_suspended",
                    "1 while the unit is suspended, with who suspended it and why",
                ),
                &["team", "cluster", "by", "reason"],
            )?,
            suspended_series: Default::default(),
            suspension_deadline: GaugeVec::new(
                Opts::new(
                    "pontoon_unit_suspension_deadline_timestamp_seconds",
                    "When the unit's suspension lasts too long: its until, at most a day after it began (+Inf: not suspended)",
                ),
                &unit,
            )?,
            suspended_since: GaugeVec::new(
                Opts::new(
                    "pontoon_unit_suspended_since_timestamp_seconds",
                    "When the unit's suspension was set",
                ),
                &unit,
            )?,
            suspended_until: GaugeVec::new(
                Opts::new(
                    "pontoon_unit_suspended_until_timestamp_seconds",
                    "When the unit's suspension ends by itself (absent: never)",
                ),
                &unit,
            )?,
            policy_violations: IntGaugeVec::new(
                Opts::new(
                    "pontoon_policy_violations",
                    "Objects of the newest render (one per cluster) that break a platform policy: denied, warned, or exempted by an exception",
                ),
                &["policy", "state"],
            )?,
        };
        m.register_in(r)?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// A unit's suspension in force (`Some`: who, why, since, until), or its end.
    pub fn suspension(&self, unit: &UnitId, now: Option<(&str, &str, f64, Option<f64>)>) {
        let (team, cluster) = (unit.team.0.as_str(), unit.cluster.0.as_str());
        let mut series = self
            .suspended_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((by, reason)) = series.remove(unit) {
            let _ = self
                .suspended
                .remove_label_values(&[team, cluster, &by, &reason]);
        }
        let _ = self.suspended_since.remove_label_values(&[team, cluster]);
        let _ = self.suspended_until.remove_label_values(&[team, cluster]);
        if let Some((by, reason, since, until)) = now {
            self.suspended
                .with_label_values(&[team, cluster, by, reason])
                .set(1);
            series.insert(unit.clone(), (by.to_owned(), reason.to_owned()));
            self.suspended_since
                .with_label_values(&[team, cluster])
                .set(since);
            if let Some(until) = until {
                self.suspended_until
                    .with_label_values(&[team, cluster])
                    .set(until);
            }
            let deadline = until.unwrap_or(f64::INFINITY).min(since + 86_400.0);
            self.suspension_deadline
                .with_label_values(&[team, cluster])
                .set(deadline);
        } else {
            self.suspension_deadline
                .with_label_values(&[team, cluster])
                .set(f64::INFINITY);
        }
    }

    /// Registers every metric in `r`.
    fn register_in(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.sync_status.clone()))?;
        r.register(Box::new(self.drift_errors.clone()))?;
        r.register(Box::new(self.drift_watch_errors.clone()))?;
        r.register(Box::new(self.drifted.clone()))?;
        r.register(Box::new(self.last_attempt.clone()))?;
        r.register(Box::new(self.last_success.clone()))?;
        r.register(Box::new(self.duration.clone()))?;
        r.register(Box::new(self.managed_objects.clone()))?;
        r.register(Box::new(self.apply_errors.clone()))?;
        r.register(Box::new(self.pruned.clone()))?;
        r.register(Box::new(self.prune_held.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        r.register(Box::new(self.drift_detected.clone()))?;
        r.register(Box::new(self.drift_corrected.clone()))?;
        r.register(Box::new(self.drift_correction.clone()))?;
        r.register(Box::new(self.rollout_waiting.clone()))?;
        r.register(Box::new(self.policy_violations.clone()))?;
        r.register(Box::new(self.suspended.clone()))?;
        r.register(Box::new(self.suspended_since.clone()))?;
        r.register(Box::new(self.suspended_until.clone()))?;
        r.register(Box::new(self.suspension_deadline.clone()))?;
        Ok(())
    }

    /// The policy debt of a new render, counted by the render itself: no request to any
    /// cluster. A rule the platform dropped loses its series. A broken platform.yaml
    /// keeps the last figures.
    pub fn policy_debt(&self, state: &crate::desired::DesiredState) {
        if state.platform_failed {
            return;
        }
        self.policy_violations.reset();
        for (policy, debt) in &state.policy_debt {
            for (name, n) in [
                ("denied", debt.denied),
                ("warned", debt.warned),
                ("exempted", debt.exempted),
            ] {
                self.policy_violations
                    .with_label_values(&[policy.as_str(), name])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// A unit whose team fails to render at the newest revision: Failed until a sync of a
    /// revision that renders.
    pub fn render_failed(&self, unit: &UnitId) {
        self.set_state(unit, UnitState::Failed);
    }

    fn set_state(&self, unit: &UnitId, state: UnitState) {
        for s in STATES {
            self.sync_status
                .with_label_values(&[&unit.team.0, &unit.cluster.0, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    /// Drops a unit's series: its removal is done, or it was never more than a team's
    /// render failure shown on a cluster the team turned out not to run on.
    pub fn forget(&self, unit: &UnitId) {
        let (team, cluster) = (unit.team.0.as_str(), unit.cluster.0.as_str());
        for s in STATES {
            let _ = self
                .sync_status
                .remove_label_values(&[team, cluster, s.as_str()]);
        }
        let unit = [team, cluster];
        let _ = self.last_attempt.remove_label_values(&unit);
        let _ = self.last_success.remove_label_values(&unit);
        let _ = self.managed_objects.remove_label_values(&unit);
        let _ = self.prune_held.remove_label_values(&unit);
        let _ = self.drifted.remove_label_values(&unit);
        let _ = self.suspension_deadline.remove_label_values(&unit);
    }

    /// The rollout gate's view of every unit in a stage: its stage and whether it waits.
    /// A unit no longer in a stage (or in another) loses its old series.
    pub fn rollout(&self, staged: &std::collections::BTreeMap<UnitId, (String, bool)>) {
        let mut shown = self
            .rollout_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (unit, stage) in shown.iter() {
            if staged.get(unit).is_none_or(|(s, _)| s != stage) {
                let _ = self.rollout_waiting.remove_label_values(&[
                    &unit.team.0,
                    &unit.cluster.0,
                    stage,
                ]);
            }
        }
        shown.clear();
        for (unit, (stage, waiting)) in staged {
            self.rollout_waiting
                .with_label_values(&[&unit.team.0, &unit.cluster.0, stage])
                .set(i64::from(*waiting));
            shown.insert(unit.clone(), stage.clone());
        }
    }

    /// Records one finished attempt; a completed removal drops the unit's series.
    pub fn observe(&self, r: &UnitResult, removal: bool) {
        let (team, cluster) = (r.unit.team.0.as_str(), r.unit.cluster.0.as_str());
        let unit = [team, cluster];
        if removal && r.state == UnitState::Synced {
            self.forget(&r.unit);
            return;
        }
        self.set_state(&r.unit, r.state);
        let suspended = self
            .suspended_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&r.unit);
        if !suspended {
            self.suspension_deadline
                .with_label_values(&unit)
                .set(f64::INFINITY);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_attempt.with_label_values(&unit).set(now);
        if r.state == UnitState::Synced {
            self.last_success.with_label_values(&unit).set(now);
        }
        self.duration
            .with_label_values(&unit)
            .observe(r.duration.as_secs_f64());
        if r.errors.is_empty() {
            self.managed_objects
                .with_label_values(&unit)
                .set(r.applied() as i64);
        }
        self.apply_errors
            .with_label_values(&unit)
            .inc_by(r.errors.len() as u64);
        self.pruned
            .with_label_values(&unit)
            .inc_by(r.pruned.len() as u64);
        self.prune_held
            .with_label_values(&unit)
            .set(r.held.len() as i64);
        // The series exist from the first sync on, at 0 until something drifts.
        self.drifted.with_label_values(&unit);
        self.drift_errors.with_label_values(&unit);
    }

    /// Drift that could not be watched or acted on.
    pub fn drift_failed(&self, f: &DriftFailure) {
        let cluster = f.cluster.0.as_str();
        match &f.scope {
            FailureScope::Kind(kind) => self
                .drift_watch_errors
                .with_label_values(&[cluster, kind])
                .inc(),
            FailureScope::Team(team) => self
                .drift_errors
                .with_label_values(&[team.0.as_str(), cluster])
                .inc(),
        }
    }

    pub fn drift(&self, e: &DriftEvent) {
        let labels = [
            e.unit.team.0.as_str(),
            e.unit.cluster.0.as_str(),
            e.key.kind.as_str(),
        ];
        let drifted = self
            .drifted
            .with_label_values(&[e.unit.team.0.as_str(), e.unit.cluster.0.as_str()]);
        if e.corrected {
            drifted.set((drifted.get() - 1).max(0));
            self.drift_corrected.with_label_values(&labels).inc();
            // The latency pontoon answers for: drift left in report mode closes when a
            // person reverts it or the repo adopts it, hours later perhaps.
            if e.mode == crate::desired::DriftMode::Correct {
                self.drift_correction
                    .with_label_values(&[e.unit.cluster.0.as_str()])
                    .observe(e.detected.elapsed().as_secs_f64());
            }
        } else {
            drifted.inc();
            self.drift_detected.with_label_values(&labels).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One sample of the text exposition: metric name, labels, value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// Every sample the registry exposes, parsed from the text format (comments skipped).
    fn samples(r: &Registry) -> Vec<Sample> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .expect("encode");
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
                    None => (series, ""),
                };
                let labels = labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                Sample {
                    name: name.to_owned(),
                    labels,
                    value: value.parse().expect("a number"),
                }
            })
            .collect()
    }

    /// The state set of one unit, as (status, value).
    fn state_set(r: &Registry, team: &str, cluster: &str) -> BTreeMap<String, f64> {
        samples(r)
            .into_iter()
            .filter(|s| s.name == "pontoon_sync_status")
            .filter(|s| s.labels["team"] == team && s.labels["cluster"] == cluster)
            .map(|s| (s.labels["status"].clone(), s.value))
            .collect()
    }

    fn only(status: &str) -> BTreeMap<String, f64> {
        STATES
            .iter()
            .map(|s| {
                (
                    s.as_str().to_owned(),
                    f64::from(u8::from(s.as_str() == status)),
                )
            })
            .collect()
    }

    #[test]
    fn every_metric_registers_once_and_a_sync_fills_the_state_set() {
        let r = Registry::new();
        let m = Metrics::register(&r).expect("register");
        let source =
            crate::daemon::poll_and_render::SourceMetrics::register(&r).expect("source metrics");
        source.fetches.with_label_values(&["success"]).inc();
        let result = sample();
        m.observe(&result, false);
        assert_eq!(state_set(&r, "shop", "prod"), only("Synced"));
        assert!(samples(&r).iter().any(|s| s.name == "pontoon_build_info"
            && s.labels.contains_key("version")
            && s.value == 1.0));
        m.render_failed(&result.unit);
        assert_eq!(
            state_set(&r, "shop", "prod"),
            only("Failed"),
            "a render failure"
        );
        m.observe(&result, true);
        assert_eq!(
            state_set(&r, "shop", "prod"),
            BTreeMap::new(),
            "a removed unit's state set is dropped"
        );
        // A render failure shown on a cluster the team turned out not to run on.
        let elsewhere = UnitId {
            team: crate::desired::TeamName("new".into()),
            cluster: crate::desired::ClusterName("dev".into()),
        };
        m.render_failed(&elsewhere);
        assert_eq!(state_set(&r, "new", "dev"), only("Failed"));
        m.forget(&elsewhere);
        let left: Vec<Sample> = samples(&r)
            .into_iter()
            .filter(|s| s.labels.get("team").is_some_and(|t| t == "new"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn drift_failures_count_per_unit_and_per_watched_kind() {
        let r = Registry::new();
        let m = Metrics::register(&r).expect("register");
        m.observe(&sample(), false);
        let count = |name: &str| -> Vec<(BTreeMap<String, String>, f64)> {
            samples(&r)
                .into_iter()
                .filter(|s| s.name == name)
                .map(|s| (s.labels, s.value))
                .collect()
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // Known from the unit's first sync, at 0.
        assert_eq!(
            count("pontoon_drift_errors_total"),
            [(labels(&[("cluster", "prod"), ("team", "shop")]), 0.0)]
        );
        let failure = |scope| DriftFailure {
            cluster: crate::desired::ClusterName("prod".into()),
            scope,
            error: crate::drift::DriftError::BuildPatch {
                object: crate::desired::ObjectKey {
                    group: String::new(),
                    kind: "ConfigMap".into(),
                    namespace: "shop".into(),
                    name: "settings".into(),
                },
                source: serde_json::from_str::<serde_json::Value>("{").expect_err("bad json"),
            },
        };
        m.drift_failed(&failure(FailureScope::Team(crate::desired::TeamName(
            "shop".into(),
        ))));
        m.drift_failed(&failure(FailureScope::Kind("ConfigMap".into())));
        m.drift_failed(&failure(FailureScope::Kind("ConfigMap".into())));
        assert_eq!(
            count("pontoon_drift_errors_total"),
            [(labels(&[("cluster", "prod"), ("team", "shop")]), 1.0)]
        );
        assert_eq!(
            count("pontoon_drift_watch_errors_total"),
            [(labels(&[("cluster", "prod"), ("kind", "ConfigMap")]), 2.0)]
        );
    }

    #[test]
    fn drifted_objects_count_up_on_detection_and_down_on_correction() {
        let m = Metrics::register(&Registry::new()).expect("register");
        m.observe(&sample(), false);
        let mut e = DriftEvent {
            unit: sample().unit,
            key: crate::desired::ObjectKey {
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "web".into(),
            },
            paths: vec!["/spec/template/spec/containers/0/image".into()],
            added: vec![],
            manager: "kubectl-edit".into(),
            at: String::new(),
            mode: crate::desired::DriftMode::Correct,
            by_person: true,
            detected: std::time::Instant::now(),
            corrected: false,
            again: false,
            reference: Default::default(),
        };
        let now = || m.drifted.with_label_values(&["shop", "prod"]).get();
        assert_eq!(now(), 0);
        m.drift(&e);
        assert_eq!(now(), 1);
        e.corrected = true;
        m.drift(&e);
        m.drift(&e);
        assert_eq!(now(), 0, "never below zero");
        assert_eq!(
            m.drift_corrected
                .with_label_values(&["shop", "prod", "Deployment"])
                .get(),
            2
        );
        let timed = || {
            m.drift_correction
                .with_label_values(&["prod"])
                .get_sample_count()
        };
        assert_eq!(timed(), 2);
        // Drift left in report mode and closed later is not a correction latency.
        e.mode = crate::desired::DriftMode::Report;
        e.corrected = false;
        m.drift(&e);
        e.corrected = true;
        m.drift(&e);
        assert_eq!((now(), timed()), (0, 2));
    }

    fn sample() -> UnitResult {
        crate::sync::UnitResult::for_tests(
            crate::desired::UnitId {
                team: crate::desired::TeamName("shop".into()),
                cluster: crate::desired::ClusterName("prod".into()),
            },
            UnitState::Synced,
        )
    }
}
