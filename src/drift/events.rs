//! Kubernetes Events about drifted objects: `DriftCorrected` once an object is back to
//! what pontoon applied, `DriftDetected` when it is left drifted (drift mode `report`),
//! each naming who changed it. Publishing never blocks drift handling: it runs on its own
//! task, and a failure is reported, not retried.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::borrow::Cow;

use super::DriftEvent;
use super::error::DriftError;
use crate::desired::Manifest;

/// The reference Kubernetes Events use for an object.
pub(super) fn reference(desired: &Manifest, o: &DynamicObject) -> ObjectReference {
    let head = desired.head();
    ObjectReference {
        api_version: head.api_version.map(Cow::into_owned),
        kind: head.kind.map(Cow::into_owned),
        name: o.metadata.name.clone(),
        namespace: o.metadata.namespace.clone(),
        uid: o.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// How a drift ended, as far as its Event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Back to what pontoon applied.
    Corrected,
    /// Left as it is (drift mode `report`).
    LeftDrifted,
}

/// Publishes Events as pontoon (`reportingController`), from this process
/// (`reportingInstance`).
pub(super) struct EventPublisher {
    recorder: Recorder,
}

impl EventPublisher {
    /// `instance` names this process (the daemon passes its leader-election identity).
    pub(super) fn new(client: kube::Client, instance: String) -> Self {
        EventPublisher {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: crate::desired::FIELD_MANAGER.to_owned(),
                    instance: Some(instance),
                },
            ),
        }
    }

    /// The Event about `e`, to be run on a task of its own.
    pub(super) fn publish(
        &self,
        e: &DriftEvent,
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), DriftError>> + Send + 'static {
        let recorder = self.recorder.clone();
        let event = drift_event(e, outcome);
        let reference = e.reference.clone();
        let object = e.key.clone();
        async move {
            recorder
                .publish(&event, &reference)
                .await
                .map_err(|source| DriftError::PublishEvent { object, source })
        }
    }
}

fn drift_event(e: &DriftEvent, outcome: Outcome) -> Event {
    let mut fields: Vec<String> = e.paths.clone();
    fields.extend(e.added.iter().map(|p| format!("{p} (added)")));
    let by = if e.at.is_empty() {
        e.manager.clone()
    } else {
        format!("{} at {}", e.manager, e.at)
    };
    let (reason, type_, note, action) = match outcome {
        Outcome::Corrected => (
            "DriftCorrected",
            EventType::Normal,
            format!(
                "changed by {by}: {}; restored to the platform repo's state",
                fields.join(", ")
            ),
            "Correct",
        ),
        Outcome::LeftDrifted => (
            "DriftDetected",
            EventType::Warning,
            format!(
                "changed by {by}: {}; left as it is (drift mode report)",
                fields.join(", ")
            ),
            "Report",
        ),
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::status::truncate(&note, 1000)),
        action: action.to_owned(),
        secondary: None,
    }
}
