//! Waiting for health: a CRD until it is Established (inside a sync, before the custom
//! resources that need it), and a Progressing unit until its rollouts are done or its
//! time is up (after a sync, driven by the daemon). The rules themselves are in
//! [`super::health`]; this only reads objects again and applies them.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use super::health::{self, Health};
use super::{Syncer, UnitResult, UnitState};
use crate::cluster::Cluster;
use crate::desired::ObjectKey;

/// How long a CRD of a sync may take to be Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a CRD could not be seen Established.
#[derive(Debug, thiserror::Error)]
pub(super) enum EstablishError {
    #[error("{0}")]
    Read(#[from] kube::Error),
    #[error("CRD not Established after {}s", ESTABLISH_TIMEOUT.as_secs())]
    TimedOut,
}

impl Syncer {
    /// Waits until the CRD `name` is Established.
    pub(super) async fn wait_established(&self, name: &str) -> Result<(), EstablishError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.cluster.client().clone());
        let deadline = Instant::now() + ESTABLISH_TIMEOUT;
        loop {
            let crd = api.get(name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EstablishError::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Re-reads the health of the objects a Progressing result waits for.
    pub async fn check_health(&self, result: &UnitResult) -> Vec<(ObjectKey, Health)> {
        let applied = self.applied(&result.unit.team);
        let mut out = Vec::new();
        for (key, _) in &result.not_ready {
            let Some(a) = applied.as_ref().and_then(|m| m.get(key)) else {
                continue;
            };
            let api = Cluster::api(self.cluster.client().clone(), &a.resolved, &key.namespace);
            let h = match self.get(&api, &key.name).await {
                Ok(v) => health::of(&v, a.desired.health.as_deref()),
                Err(e) => Health::Progressing(format!("cannot read: {e}")),
            };
            out.push((key.clone(), h));
        }
        out
    }

    /// Waits until a Progressing unit is healthy, or fails it after `timeout` (counted
    /// from `since`, the first time this revision was seen Progressing). Returns early,
    /// still Progressing, once objects that wait for others could be applied
    /// ([`UnitResult::dependencies_ready`]); [`Syncer::settle`] then syncs again.
    pub async fn wait_healthy(
        &self,
        mut result: UnitResult,
        since: Instant,
        timeout: Duration,
        every: Duration,
    ) -> UnitResult {
        while result.state == UnitState::Progressing {
            let checks = self.check_health(&result).await;
            result.not_ready.clear();
            for (key, h) in checks {
                match h {
                    Health::Healthy => {}
                    Health::NoRule => {
                        if !result.no_health_rule.contains(&key) {
                            result.no_health_rule.push(key);
                        }
                    }
                    Health::Progressing(why) => result.not_ready.push((key, why)),
                    Health::Failed(why) => result.error(&key, why),
                }
            }
            result.message = None;
            let d = result.duration;
            result.finish(Instant::now() - d);
            if result.dependencies_ready()
                || (result.not_ready.is_empty() && result.waits_for_components())
            {
                // Objects wait for what is healthy now (only a sync applies them), or for
                // components, which the platform unit's syncs find healthy.
                break;
            }
            if result.state == UnitState::Progressing && since.elapsed() >= timeout {
                let (key, why) = result.not_ready[0].clone();
                result.message = Some(format!(
                    "not healthy after {}: {key}: {why}",
                    humantime::format_duration(timeout)
                ));
                result.state = UnitState::Failed;
                break;
            }
            if result.state == UnitState::Progressing {
                tokio::time::sleep(every).await;
            }
        }
        if result.state == UnitState::Synced {
            self.memory.mark_healthy(&result.unit.team);
        }
        result
    }
}
