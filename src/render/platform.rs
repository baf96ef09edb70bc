//! `platform.yaml`: the clusters teams may target, the defaults and the team policy. The
//! one file whose mistakes stop the whole render: without it there is nothing to render
//! for, and nothing may be pruned.

use std::collections::BTreeSet;

use super::Files;
use crate::desired::{Diagnostic, PrunePolicy, is_dns_label};
use crate::model::{self, API_VERSION, Document, Platform, diag};

/// Reads and checks `platform.yaml`; `None` (with the reasons in `diags`) when it is
/// missing, holds anything but one good Platform document, or breaks a rule.
pub(super) fn read(files: &Files, diags: &mut Vec<Diagnostic>) -> Option<Platform> {
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
            Ok(p) => check(doc, p, diags),
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
