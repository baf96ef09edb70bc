//! A Deployment that sets `spec.replicas` while a HorizontalPodAutoscaler of the same team
//! scales it is a warning at the Deployment, once, that does not fail the team.

use super::*;

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: app, image: x}]}}\n";
const HPA: &str = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web-hpa}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 2\n  maxReplicas: 10\n";

fn with_autoscaling(extra: &[(&str, &str)]) -> (DesiredState, Vec<String>) {
    let mut f = repo(extra);
    f.insert(
        "platform.yaml".into(),
        PLATFORM
            .replace(
                "      - {group: \"\", kind: ConfigMap}\n",
                "      - {group: \"\", kind: ConfigMap}\n      - {group: apps, kind: Deployment}\n      - {group: autoscaling, kind: HorizontalPodAutoscaler}\n",
            )
            .into_bytes(),
    );
    let s = render(&f, "rev");
    let d = s.diagnostics.iter().map(|d| d.to_string()).collect();
    (s, d)
}

#[test]
fn replicas_an_autoscaler_owns_are_a_warning_at_the_deployment() {
    let (s, d) = with_autoscaling(&[("teams/a/web.yaml", DEPLOY), ("teams/a/hpa.yaml", HPA)]);
    assert_eq!(
        d,
        [
            "teams/a/web.yaml:1:1: warning[replicas-with-autoscaler]: team a: Deployment web sets spec.replicas, and HorizontalPodAutoscaler web-hpa scales it: pontoon would reset the autoscaler's count on every sync and correct it as drift; leave spec.replicas out and let the autoscaler own it"
        ],
        "one warning for both clusters"
    );
    assert_eq!(s.units.len(), 4, "a warning fails no team");
}

#[test]
fn without_replicas_or_without_an_autoscaler_nothing_is_said() {
    let no_replicas = DEPLOY.replace("  replicas: 3\n", "");
    let (_, d) = with_autoscaling(&[
        ("teams/a/web.yaml", &no_replicas),
        ("teams/a/hpa.yaml", HPA),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let (_, d) = with_autoscaling(&[("teams/a/web.yaml", DEPLOY)]);
    assert!(d.is_empty(), "{d:?}");
    // Another team's autoscaler (another namespace) does not scale team a's Deployment.
    let (_, d) = with_autoscaling(&[("teams/a/web.yaml", DEPLOY), ("teams/b/hpa.yaml", HPA)]);
    assert!(d.is_empty(), "{d:?}");
}
