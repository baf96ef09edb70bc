//! `pontoon audit`: the platform's policies checked against the live objects pontoon
//! manages on each cluster, rather than against the repo — what a new rule, or an
//! exception expiring, would break on what runs now. Reads only: one discovery request
//! per API group and one list per kind and cluster, never a write.
//!
//! The kinds listed are those the rules name and those the repo's teams render to; each
//! live object of a team in one of the team's namespaces is checked as that team
//! (`pontoon.dev/team`) on its cluster, and as the Kind instance its `pontoon.dev/source`
//! annotation names, when it names one (its spec with the cluster's override, without
//! the kind's defaults).
//!
//! The repo is rendered as the daemon renders it, its packages (charts, Kustomize
//! folders) expanded through [`super::packages::Packages`]: the kinds a chart or an
//! overlay makes are audited like those of plain manifests. A package that does not
//! expand is a problem of the audit (what it makes cannot be listed), named with its team.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use crate::desired::{
    ANNOTATION_SOURCE, Applier, ClusterName, LABEL_TEAM, NamespaceOwners, TeamName,
};
use crate::model::{self, API_VERSION, ClusterDef, PolicyAction};
use crate::render::Files;
use crate::render::policies::{Policies, Subject};
use crate::source::Snapshot;

use super::packages::Packages;
use crate::sync::Syncer;

/// One live object that breaks one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub cluster: String,
    pub team: String,
    /// `Deployment shop/web`.
    pub object: String,
    pub rule: String,
    pub action: PolicyAction,
    /// An exception lets it through today.
    pub exempted: bool,
    pub message: String,
}

/// What an audit found, and what it could not look at.
#[derive(Debug, Default)]
pub struct Audit {
    pub findings: Vec<Finding>,
    /// Objects checked, over every cluster.
    pub checked: usize,
    /// A cluster or kind that could not be read, with why.
    pub problems: Vec<String>,
}

impl Audit {
    /// Whether a live object breaks a `deny` rule with no exception.
    pub fn denies(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.action == PolicyAction::Deny && !f.exempted)
    }
}

/// Audits every cluster of `syncers` against the policies of `snapshot`'s
/// `platform.yaml`, with the exceptions that hold on `today`; the repo's packages are
/// expanded by `packages`.
pub async fn audit(
    snapshot: &Arc<Snapshot>,
    syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
    packages: &Packages,
    today: jiff::civil::Date,
) -> anyhow::Result<Audit> {
    let (clusters, policies) = crate::render::platform_policies(&snapshot.files, Some(today))
        .map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            anyhow::anyhow!("platform.yaml does not read: {}", lines.join("; "))
        })?;
    let expansions = packages.expand(snapshot).await;
    let state = crate::render::render_expanded(
        &snapshot.files,
        &[],
        &snapshot.revision,
        &NamespaceOwners::new(),
        crate::render::Decryption::Keys(&crate::render::NO_KEYS),
        None,
        &expansions,
    );
    let mut audit = Audit::default();
    audit.problems.extend(
        state
            .diagnostics
            .iter()
            .filter(|d| d.rule.starts_with("package-"))
            .map(|d| format!("what a package makes: {d}")),
    );
    for (name, syncer) in syncers {
        let Some(cluster) = clusters.iter().find(|c| c.name == name.0) else {
            continue;
        };
        let mut kinds: BTreeSet<(String, String)> = policies.kinds().into_iter().collect();
        for unit in state.units.values().filter(|u| u.unit.cluster == *name) {
            for o in unit.objects.iter().filter(|o| o.applier == Applier::Team) {
                if let Some(key) = o.key() {
                    kinds.insert((key.group, key.kind));
                }
            }
        }
        let scope = Scope {
            cluster,
            policies: &policies,
            files: &snapshot.files,
            namespaces: &state.namespace_owners,
        };
        audit_cluster(syncer, &scope, &kinds, &mut audit).await;
    }
    Ok(audit)
}

/// What one cluster's audit reads from the repo.
struct Scope<'a> {
    cluster: &'a ClusterDef,
    policies: &'a Policies,
    files: &'a Files,
    /// The repo's namespaces and their teams: only a team's objects in its own
    /// namespaces are audited (pontoon's own inventories, and objects of teams this repo
    /// does not hold, are not the platform's rules' business).
    namespaces: &'a NamespaceOwners,
}

async fn audit_cluster(
    syncer: &Syncer,
    scope: &Scope<'_>,
    kinds: &BTreeSet<(String, String)>,
    audit: &mut Audit,
) {
    let Scope {
        cluster,
        policies,
        files,
        namespaces,
    } = *scope;
    let client = syncer.client();
    let mut groups: BTreeMap<&str, Option<kube::discovery::ApiGroup>> = BTreeMap::new();
    let mut instances = Instances::new(files);
    for (group, kind) in kinds {
        if !groups.contains_key(group.as_str()) {
            let found = match kube::discovery::group(client, group).await {
                Ok(g) => Some(g),
                Err(e) => {
                    audit.problems.push(format!(
                        "{}: API group {group:?} is not served: {}",
                        cluster.name,
                        crate::describe(&e)
                    ));
                    None
                }
            };
            groups.insert(group, found);
        }
        let Some((resource, _)) = groups[group.as_str()]
            .as_ref()
            .and_then(|g| g.recommended_kind(kind))
        else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let selector = syncer.owner().selector_managed();
        let live = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l,
            Err(e) => {
                audit.problems.push(format!(
                    "{}: cannot list {kind}: {}",
                    cluster.name,
                    crate::describe(&e)
                ));
                continue;
            }
        };
        for item in live.items {
            let labels = item.metadata.labels.as_ref();
            if !syncer.owner().owns(labels) {
                continue;
            }
            let Some(team) = labels.and_then(|l| l.get(LABEL_TEAM)).cloned() else {
                continue;
            };
            let namespace = item.metadata.namespace.as_deref().unwrap_or_default();
            if namespaces
                .get(namespace)
                .is_none_or(|owner| owner.0 != team)
            {
                continue;
            }
            let source = item
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_SOURCE))
                .cloned();
            let Ok(mut object) = serde_json::to_value(&item) else {
                continue;
            };
            if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            // A list's items do not say their kind: the rules match on it.
            if let Some(o) = object.as_object_mut() {
                o.insert("apiVersion".into(), resource.api_version.clone().into());
                o.insert("kind".into(), resource.kind.clone().into());
            }
            let instance = source.as_deref().and_then(|s| instances.at(s, cluster));
            let team = TeamName(team);
            let subject = Subject {
                object: &object,
                team: &team,
                cluster,
                instance: instance
                    .as_ref()
                    .map(|(kind, name, spec)| (kind.as_str(), name.as_str(), spec)),
            };
            audit.checked += 1;
            for v in policies.check(&subject) {
                audit.findings.push(Finding {
                    cluster: cluster.name.clone(),
                    team: team.0.clone(),
                    object: describe(&object),
                    rule: v.rule,
                    action: v.action,
                    exempted: v.exempted,
                    message: v.message,
                });
            }
        }
    }
}

/// `Deployment shop/web`.
fn describe(object: &Value) -> String {
    let field = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let ns = field("/metadata/namespace");
    let sep = if ns.is_empty() { "" } else { "/" };
    format!("{} {ns}{sep}{}", field("/kind"), field("/metadata/name"))
}

/// The Kind instances of the repo by the `file:line` their objects' source annotation
/// names, each file read once.
struct Instances<'f> {
    files: &'f Files,
    read: BTreeMap<String, Vec<model::Document>>,
}

impl<'f> Instances<'f> {
    fn new(files: &'f Files) -> Self {
        Instances {
            files,
            read: BTreeMap::new(),
        }
    }

    /// The kind, name and spec (its cluster's override merged over it) of the instance
    /// at `file:line`, when a Kind instance is written there.
    fn at(&mut self, source: &str, cluster: &ClusterDef) -> Option<(String, String, Value)> {
        let (file, line) = source.rsplit_once(':')?;
        let line: u64 = line.parse().ok()?;
        if !self.read.contains_key(file) {
            let docs = self
                .files
                .get(file)
                .map(|bytes| model::documents(file, bytes, None, &mut Vec::new()))
                .unwrap_or_default();
            self.read.insert(file.to_owned(), docs);
        }
        let doc = self.read[file].iter().find(|d| d.line == line)?;
        if doc.value.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION) {
            return None;
        }
        let instance = model::typed::<model::Instance>(doc, None).ok()?;
        let mut spec = instance.spec.clone();
        if let Some(o) = instance.overrides.get(&cluster.name) {
            crate::render::merge_override(&mut spec, o);
        }
        Some((instance.kind, instance.metadata.name, spec))
    }
}

/// The findings as a report: one line per finding, then the totals.
pub fn report(audit: &Audit) -> String {
    let mut out = String::new();
    for f in &audit.findings {
        let action = match (f.action, f.exempted) {
            (_, true) => "exempt",
            (PolicyAction::Deny, false) => "deny",
            (PolicyAction::Warn, false) => "warn",
        };
        out.push_str(&format!(
            "{}/{}: {}: {action}[policy/{}]: {}\n",
            f.cluster, f.team, f.object, f.rule, f.message
        ));
    }
    for p in &audit.problems {
        out.push_str(&format!("could not audit {p}\n"));
    }
    out.push_str(&format!(
        "{} live objects checked, {} break a rule\n",
        audit.checked,
        audit.findings.len()
    ));
    out
}
