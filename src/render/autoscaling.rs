//! Replicas an autoscaler owns: a team object that sets `spec.replicas` while a
//! HorizontalPodAutoscaler of the same unit scales it would have pontoon and the HPA
//! fight (every sync and every drift correction resets the HPA's count). pontoon warns,
//! as Flux and Argo CD advise: leave `spec.replicas` out of the manifest and let the HPA
//! own it (server-side apply then leaves the HPA's value alone).

use serde_json::Value;

use crate::desired::{DesiredObject, Diagnostic, Severity, TeamName};
use crate::model::diag;

/// A warning for each object in `objects` that sets `spec.replicas` and is the
/// `scaleTargetRef` of a HorizontalPodAutoscaler among them (same namespace).
pub(super) fn replicas_under_autoscaler(
    objects: &[DesiredObject],
    team: &TeamName,
) -> Vec<Diagnostic> {
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let mut out = Vec::new();
    for hpa in objects.iter().filter(|o| {
        str_at(&o.object, "/kind").as_deref() == Some("HorizontalPodAutoscaler")
            && str_at(&o.object, "/apiVersion").is_some_and(|v| v.starts_with("autoscaling/"))
    }) {
        let namespace = str_at(&hpa.object, "/metadata/namespace");
        let (Some(kind), Some(name)) = (
            str_at(&hpa.object, "/spec/scaleTargetRef/kind"),
            str_at(&hpa.object, "/spec/scaleTargetRef/name"),
        ) else {
            continue;
        };
        let hpa_name = str_at(&hpa.object, "/metadata/name").unwrap_or_default();
        for target in objects.iter().filter(|o| {
            str_at(&o.object, "/kind").as_deref() == Some(kind.as_str())
                && str_at(&o.object, "/metadata/name").as_deref() == Some(name.as_str())
                && str_at(&o.object, "/metadata/namespace") == namespace
                && o.object.pointer("/spec/replicas").is_some()
        }) {
            let mut d = diag(
                &target.source.file,
                target.source.line,
                1,
                Some(team),
                "replicas-with-autoscaler",
                format!(
                    "{kind} {name} sets spec.replicas, and HorizontalPodAutoscaler {hpa_name} \
                     scales it: pontoon would reset the autoscaler's count on every sync and \
                     correct it as drift; leave spec.replicas out and let the autoscaler own it"
                ),
            );
            d.severity = Severity::Warning;
            out.push(d);
        }
    }
    out
}
