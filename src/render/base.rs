//! A team's base, rendered from its team.yaml on every cluster it runs on: its
//! Namespaces, quota, its owners' access, a NetworkPolicy isolating it from other teams,
//! and the Role (with its RoleBinding) that lets the team's impersonated identity manage
//! the kinds the team uses, in its namespaces only. pontoon applies these as itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::manifests::stamp;
pub use crate::desired::plural_guess as plural;
use crate::desired::{
    Applier, DesiredObject, DriftMode, LABEL_TEAM, SourceRef, TEAM_ROLE, TeamName, team_subject,
};
use crate::model::Team;

/// The team's base: Namespaces, quota, owners' access, isolation, and the RBAC that lets
/// the team's impersonated identity manage the kinds it uses in its namespaces.
pub(super) fn base_objects(
    team: &Team,
    team_name: &TeamName,
    kinds_used: &BTreeSet<(String, String)>,
    drift: DriftMode,
) -> Vec<DesiredObject> {
    let source = SourceRef {
        file: format!("teams/{team_name}/team.yaml"),
        line: 1,
    };
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (g, k) in kinds_used {
        rules.entry(g.clone()).or_default().insert(plural(k));
    }
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(g, r)| json!({"apiGroups": [g], "resources": r, "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}))
        .collect();
    let mut out = Vec::new();
    let mut push = |mut object: Value| {
        stamp(&mut object, team_name, &source);
        out.push(DesiredObject {
            object: Arc::new(object.into()),
            source: source.clone(),
            applier: Applier::Platform,
            drift,
            ignore_fields: Vec::new(),
            health: None,
        });
    };
    for ns in &team.spec.namespaces {
        push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        if !team.spec.quota.is_empty() {
            push(
                json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-quota", "namespace": ns}, "spec": {"hard": team.spec.quota}}),
            );
        }
        if !team.spec.owners.is_empty() {
            let subjects: Vec<Value> = team
                .spec
                .owners
                .iter()
                .map(
                    |o| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": o}),
                )
                .collect();
            push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-owners", "namespace": ns},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}, "subjects": subjects}),
            );
        }
        push(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "team-isolation", "namespace": ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {LABEL_TEAM: team_name.0}}}]}]}}),
        );
        push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": TEAM_ROLE, "namespace": ns}, "rules": rules}),
        );
        push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": TEAM_ROLE, "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TEAM_ROLE},
                    "subjects": [team_subject(team_name)]}),
        );
    }
    out
}
