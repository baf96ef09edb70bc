//! What a person asks of a Unit from the command line, as themselves (their kubeconfig,
//! so Kubernetes RBAC decides who may): a sync now, by a new value of the
//! reconcile-requested-at annotation (with the source polled first when the
//! with-source annotation carries the same value), and then following the Unit until the
//! daemon answered it.

use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::status::{RECONCILING, UnitStatus};
use super::suspend::{CLI_MANAGER_PREFIX, SuspendSpec};
use super::{ANNOTATION_RECONCILE, ANNOTATION_RECONCILE_SOURCE, UnitError};

/// Why following a Unit ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("no answer within {}s", .0.as_secs())]
    TimedOut(Duration),
}

/// Sets the reconcile request `value` on the Unit `name` as `manager`; with `with_source`
/// the daemon polls the platform repo before it syncs.
pub async fn request_reconcile(
    api: &Api<DynamicObject>,
    name: &str,
    value: &str,
    with_source: bool,
    manager: &str,
) -> Result<(), UnitError> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_RECONCILE.into(), json!(value));
    annotations.insert(
        ANNOTATION_RECONCILE_SOURCE.into(),
        if with_source {
            json!(value)
        } else {
            serde_json::Value::Null
        },
    );
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(manager.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await
    .map(|_| ())
    .map_err(|source| UnitError::Request {
        name: name.to_owned(),
        source,
    })
}

/// Whether `status` answers the request `value` and the sync it answered with is over
/// (not `Reconciling`: a unit still rolling out is followed until it settles).
pub fn answered(status: &UnitStatus, value: &str) -> bool {
    status.last_handled_reconcile_at.as_deref() == Some(value) && !status.is(RECONCILING)
}

/// Follows the Unit `name` (a watch, so the answer is seen as it is written) until its
/// status answers `value`; its status then.
pub async fn follow(
    api: &Api<DynamicObject>,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<UnitStatus, FollowError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let followed = async {
        while let Some(event) = events.next().await {
            let object = match event {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %crate::describe(&e), "watching the Unit");
                    continue;
                }
            };
            let status: Option<UnitStatus> = object
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            if let Some(s) = status
                && answered(&s, value)
            {
                return Some(s);
            }
        }
        None
    };
    match tokio::time::timeout(timeout, followed).await {
        Ok(Some(s)) => Ok(s),
        _ => Err(FollowError::TimedOut(timeout)),
    }
}

/// The user name the API server knows the caller by (a SelfSubjectReview): what
/// `pontoon suspend` names itself after, so the Unit's managedFields say who.
pub async fn whoami(client: &kube::Client) -> Result<String, UnitError> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
        .map_err(|source| UnitError::Request {
            name: "selfsubjectreviews".to_owned(),
            source,
        })?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_else(|| "unknown".to_owned()))
}

/// Sets (`Some`) or removes (`None`) the Unit's `spec.suspend` as the field manager
/// `pontoon-cli:<user>`.
pub async fn set_suspend(
    api: &Api<DynamicObject>,
    name: &str,
    suspend: Option<&SuspendSpec>,
    user: &str,
) -> Result<(), UnitError> {
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(format!("{CLI_MANAGER_PREFIX}{user}")),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"suspend": suspend}})),
    )
    .await
    .map(|_| ())
    .map_err(|source| UnitError::Request {
        name: name.to_owned(),
        source,
    })
}

/// Removes the Unit's `spec.suspend` as `pontoon-cli:<user>` and, in the same write, asks
/// for a sync with the source polled first under the request `value`: the daemon resumes
/// the unit before it takes the request, so the answer to `value` is the resumed unit's
/// sync of the newest revision (what [`follow`] waits for).
pub async fn resume_and_request(
    api: &Api<DynamicObject>,
    name: &str,
    user: &str,
    value: &str,
) -> Result<(), UnitError> {
    let patch = json!({
        "metadata": {"annotations": {ANNOTATION_RECONCILE: value, ANNOTATION_RECONCILE_SOURCE: value}},
        "spec": {"suspend": null},
    });
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(format!("{CLI_MANAGER_PREFIX}{user}")),
            ..PatchParams::default()
        },
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| UnitError::Request {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::status::Condition;

    fn status(handled: &str, reconciling: bool) -> UnitStatus {
        UnitStatus {
            last_handled_reconcile_at: Some(handled.into()),
            conditions: vec![Condition {
                type_: RECONCILING.into(),
                status: if reconciling { "True" } else { "False" }.into(),
                reason: String::new(),
                message: String::new(),
                last_transition_time: String::new(),
                observed_generation: 1,
            }],
            ..UnitStatus::default()
        }
    }

    #[test]
    fn a_request_is_answered_once_its_sync_settled() {
        assert!(answered(&status("t2", false), "t2"));
        assert!(!answered(&status("t1", false), "t2"), "an earlier request");
        assert!(!answered(&status("t2", true), "t2"), "still rolling out");
    }
}
