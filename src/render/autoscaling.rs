//! Replicas an autoscaler owns: a team object that sets `spec.replicas` while a
//! HorizontalPodAutoscaler of the same unit scales it would have pontoon and the HPA
//! fight (every sync and every drift correction resets the HPA's count). pontoon warns,
//! as Flux and Argo CD advise: leave `spec.replicas` out of the manifest and let the HPA
//! own it (server-side apply then leaves the HPA's value alone).

use serde_json::Value;

use crate::desired::{DesiredObject, Diagnostic, ObjectKey, Severity, TeamName};
use crate::model::diag;

/// A warning for each object in `objects` that sets `spec.replicas` and is the
/// `scaleTargetRef` of a HorizontalPodAutoscaler among them (same namespace). `keys` are
/// the objects' keys, in the same order: only autoscalers and the objects they scale are
/// read as trees.
pub(super) fn replicas_under_autoscaler(
    objects: &[DesiredObject],
    keys: &[Option<ObjectKey>],
    team: &TeamName,
) -> Vec<Diagnostic> {
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let keyed = || {
        objects
            .iter()
            .zip(keys)
            .filter_map(|(o, k)| Some((o, k.as_ref()?)))
    };
    let mut out = Vec::new();
    for (hpa, hpa_key) in
        keyed().filter(|(_, k)| k.kind == "HorizontalPodAutoscaler" && k.group == "autoscaling")
    {
        let hpa = hpa.object.to_value();
        let (Some(kind), Some(name)) = (
            str_at(&hpa, "/spec/scaleTargetRef/kind"),
            str_at(&hpa, "/spec/scaleTargetRef/name"),
        ) else {
            continue;
        };
        let hpa_name = &hpa_key.name;
        for (target, _) in keyed().filter(|(o, k)| {
            k.kind == kind
                && k.name == name
                && k.namespace == hpa_key.namespace
                && o.object.to_value().pointer("/spec/replicas").is_some()
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
