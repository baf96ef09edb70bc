//! `platform.yaml`: the clusters teams may target, the defaults and the team policy. The
//! one file whose mistakes stop the whole render: without it there is nothing to render
//! for, and nothing may be pruned. Its adoption list (`spec.adopt`) is the only way a team
//! takes over an object that exists without pontoon's labels.

use std::collections::BTreeSet;

use jiff::civil::Date;

use super::Files;
use super::health::{self, PlatformHealth};
use super::policies::Policies;
use crate::desired::{
    Adoption, Diagnostic, ObjectKey, PrunePolicy, SourceRef, TeamName, is_dns_label,
};
use crate::model::{self, API_VERSION, Document, Platform, diag};

/// The objects `platform.yaml` hands over, each with the team that takes it.
pub(super) type Adoptions = Vec<(TeamName, Adoption)>;

/// What `platform.yaml` holds for the rest of the render, checked.
pub(super) struct PlatformRead {
    pub platform: Platform,
    pub adoptions: Adoptions,
    pub health: PlatformHealth,
    /// The platform's policies, with the exceptions that hold on the render's day.
    pub policies: Policies,
}

/// Reads and checks `platform.yaml`, its policies with the exceptions that hold on
/// `today`; `None` (with the reasons in `diags`) when it is
/// missing, holds anything but one good Platform document, or breaks a rule.
pub(super) fn read(
    files: &Files,
    today: Option<Date>,
    diags: &mut Vec<Diagnostic>,
) -> Option<PlatformRead> {
    let Some(bytes) = files.get("platform.yaml") else {
        diags.push(diag(
            "platform.yaml",
            1,
            1,
            None,
            "missing-platform",
            "the repo has no platform.yaml",
        ));
        return None;
    };
    let docs = model::documents("platform.yaml", bytes, None, diags);
    match docs.as_slice() {
        [doc] => match model::typed::<Platform>(doc, None) {
            Ok(p) => {
                let p = check(doc, p, diags)?;
                let adoptions = adoptions(doc, &p, diags)?;
                let health = health::platform_rules(doc, &p, diags)?;
                let policies = Policies::read(&p, doc, today, diags)?;
                Some(PlatformRead {
                    platform: p,
                    adoptions,
                    health,
                    policies,
                })
            }
            Err(d) => {
                diags.push(*d);
                None
            }
        },
        [] => None,
        [_, second, ..] => {
            diags.push(diag(
                "platform.yaml",
                second.line,
                1,
                None,
                "parse",
                "platform.yaml holds exactly one document",
            ));
            None
        }
    }
}

/// The platform's pruning rules, as every unit (and every team that left) gets them.
pub(super) fn prune_policy(platform: &Platform) -> PrunePolicy {
    PrunePolicy {
        namespaces: platform.spec.policy.prune.namespaces,
        crds: platform.spec.policy.prune.crds,
        max_share: platform.spec.policy.prune.max_share,
    }
}

/// The platform, if it breaks none of the rules YAML cannot see.
fn check(doc: &Document, p: Platform, diags: &mut Vec<Diagnostic>) -> Option<Platform> {
    let before = diags.len();
    if p.api_version != API_VERSION || p.kind != "Platform" {
        diags.push(doc.diag_at(
            "kind",
            None,
            "schema",
            format!("platform.yaml must be `apiVersion: {API_VERSION}`, `kind: Platform`"),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, c) in p.spec.clusters.iter().enumerate() {
        let field = format!("spec.clusters[{i}].name");
        if !is_dns_label(&c.name) {
            diags.push(doc.diag_at(
                &field,
                None,
                "invalid-name",
                format!("{:?} is not a valid cluster name", c.name),
            ));
        }
        if !names.insert(&c.name) {
            diags.push(doc.diag_at(
                &field,
                None,
                "duplicate-cluster",
                format!("cluster {} is listed twice", c.name),
            ));
        }
    }
    let share = p.spec.policy.prune.max_share;
    if !(0.0..=1.0).contains(&share) {
        diags.push(doc.diag_at(
            "spec.policy.prune.maxShare",
            None,
            "schema",
            format!("policy.prune.maxShare must be between 0 and 1, not {share}"),
        ));
    }
    (diags.len() == before).then_some(p)
}

/// The adoption list, each entry placed at its line; `None` (with the reasons in
/// `diags`) when an entry names no kind, name, team or reason, or names a Namespace
/// inside a namespace.
fn adoptions(doc: &Document, p: &Platform, diags: &mut Vec<Diagnostic>) -> Option<Adoptions> {
    let before = diags.len();
    let fields = doc.fields();
    let mut out = Vec::new();
    for (i, a) in p.spec.adopt.iter().enumerate() {
        let at = format!("spec.adopt[{i}]");
        let mut refuse = |field: &str, message: String| {
            diags.push(doc.diag_at(&format!("{at}.{field}"), None, "schema", message));
        };
        for (field, value) in [("kind", &a.kind), ("name", &a.name), ("reason", &a.reason)] {
            if value.trim().is_empty() {
                refuse(field, format!("an adoption needs a {field}"));
            }
        }
        if !is_dns_label(&a.team) {
            refuse("team", format!("{:?} is not a valid team name", a.team));
        }
        if a.kind == "Namespace" && a.group.is_empty() && !a.namespace.is_empty() {
            refuse(
                "namespace",
                "a Namespace is cluster-scoped: its adoption names no namespace".to_owned(),
            );
        }
        let (line, _) = fields.position_of(&at);
        out.push((
            TeamName(a.team.clone()),
            Adoption {
                key: ObjectKey {
                    group: a.group.clone(),
                    kind: a.kind.clone(),
                    namespace: a.namespace.clone(),
                    name: a.name.clone(),
                },
                reason: a.reason.clone(),
                source: SourceRef {
                    file: "platform.yaml".to_owned(),
                    line,
                },
            },
        ));
    }
    (diags.len() == before).then_some(out)
}
