//! One component's objects on one cluster: its source's documents (its folder's
//! manifests, or its package's expansion), each checked as a Kubernetes object, put in
//! the component's namespace where it names none, patched as the cluster's override says,
//! stamped as the platform's and checked against `platform.yaml`'s policies.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{ComponentsContext, ReadComponent, Rendered, packages, platform_team};
use crate::desired::{
    Applier, DesiredObject, Diagnostic, DriftMode, Manifest, ObjectKey, Severity, SourceRef,
};
use crate::model::{self, API_VERSION, ClusterDef, ComponentPatch, Document, PolicyAction};
use crate::render::instances::merge_override;
use crate::render::is_manifest_file;
use crate::render::manifests::{group_of, is_cluster_scoped, stamp};
use crate::render::policies::Subject;

/// One component's objects on one cluster: its source's documents, placed, patched as
/// the cluster's override says, stamped and checked against the platform's policies.
pub(super) fn render_on(
    cx: &ComponentsContext,
    c: &ReadComponent,
    cluster: &ClusterDef,
    warnings: &mut Vec<Diagnostic>,
) -> Rendered {
    let team = platform_team();
    let mut errs = Vec::new();
    let docs = if c.component.spec.source.manifests.is_some() {
        folder_documents(cx, c, &mut errs)
            .into_iter()
            .map(|d| (d, None))
            .collect()
    } else {
        packages::expanded_documents(cx, c, cluster, &mut errs)
    };
    let patches = c
        .component
        .spec
        .overrides
        .get(&cluster.name)
        .map(|o| o.patches.as_slice())
        .unwrap_or_default();
    let mut used = vec![false; patches.len()];
    let mut objects = Vec::new();
    for (doc, origin) in docs {
        let before = errs.len();
        let object = place(cx, c, &doc, &mut errs);
        let object = object.map(|mut object| {
            for (i, p) in patches.iter().enumerate() {
                if targets(p, &object) {
                    merge_override(&mut object, &p.patch);
                    used[i] = true;
                }
            }
            object
        });
        let source = SourceRef {
            file: doc.file.clone(),
            line: doc.line,
        };
        if let Some(o) = &object {
            check_policies(cx, o, cluster, &doc, &mut errs, warnings);
        }
        if let Some(origin) = &origin {
            // A package's output has no lines of the repo: its problems are the
            // component file's, naming the template.
            packages::at_component(&mut errs[before..], c, origin);
        }
        let Some(mut object) = object else {
            continue;
        };
        stamp(&mut object, &team, &source);
        objects.push(DesiredObject {
            health: cx.health.for_object(&object),
            object: Arc::new(Manifest::from(object)),
            source,
            applier: Applier::Platform,
            drift: cx
                .platform
                .spec
                .defaults
                .drift_mode
                .unwrap_or(DriftMode::Correct),
            ignore_fields: Vec::new(),
        });
    }
    for (i, _) in used.iter().enumerate().filter(|(_, u)| !**u) {
        errs.push(c.doc.diag_at(
            &format!("spec.overrides.{}.patches[{i}]", cluster.name),
            Some(&team),
            "unknown-object",
            format!(
                "component {}: patch on {} targets no object of the component",
                c.component.metadata.name, cluster.name
            ),
        ));
    }
    if errs.is_empty() {
        Ok(objects)
    } else {
        Err(errs)
    }
}

/// The component's documents from its manifests folder, every `List` expanded.
fn folder_documents(
    cx: &ComponentsContext,
    c: &ReadComponent,
    errs: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    let team = platform_team();
    let Some(folder) = &c.component.spec.source.manifests else {
        return Vec::new();
    };
    let prefix = format!("{}/", folder.path.trim_end_matches('/'));
    let mut docs = Vec::new();
    for (path, bytes) in cx.files.range(prefix.clone()..) {
        if !path.starts_with(&prefix) {
            break;
        }
        if is_manifest_file(path) {
            for doc in model::documents(path, bytes, Some(&team), errs) {
                match doc.list_items() {
                    Some(items) => docs.extend(items),
                    None => docs.push(doc),
                }
            }
        }
    }
    if docs.is_empty() && errs.is_empty() {
        errs.push(c.doc.diag_at(
            "spec.source.manifests.path",
            Some(&team),
            "empty-component",
            format!(
                "component {}: {prefix} holds no manifests",
                c.component.metadata.name
            ),
        ));
    }
    docs
}

/// Checks one document as a Kubernetes object and fills the component's namespace into
/// a namespaced object that names none. A component may write anything but into a
/// namespace a team owns.
fn place(
    cx: &ComponentsContext,
    c: &ReadComponent,
    doc: &Document,
    errs: &mut Vec<Diagnostic>,
) -> Option<Value> {
    let team = platform_team();
    let mut object = doc.value.clone();
    let field =
        |o: &Value, name: &str| o.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    let (api_version, kind) = (field(&object, "apiVersion"), field(&object, "kind"));
    if api_version.is_empty() || kind.is_empty() {
        errs.push(doc.diag_at(
            "",
            Some(&team),
            "schema",
            "every document needs apiVersion and kind",
        ));
        return None;
    }
    if api_version == API_VERSION {
        errs.push(doc.diag_at(
            "apiVersion",
            Some(&team),
            "schema",
            format!("a component's files are Kubernetes manifests; {kind} is a pontoon document"),
        ));
        return None;
    }
    if object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(doc.diag_at(
            "metadata.name",
            Some(&team),
            "schema",
            format!("{kind} has no metadata.name"),
        ));
        return None;
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = match (namespace, &c.component.spec.namespace) {
        (None, Some(ns)) if !is_cluster_scoped(group_of(&api_version), &kind) => {
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".to_owned(), json!(ns));
            }
            Some(ns.clone())
        }
        (ns, _) => ns,
    };
    if let Some(ns) = namespace
        && let Some(owner) = cx.namespace_owners.get(&ns)
    {
        errs.push(doc.diag_at(
            "metadata.namespace",
            Some(&team),
            "namespace-not-owned",
            format!("{kind} in namespace {ns}, which belongs to team {owner}; a component writes outside the teams' namespaces"),
        ));
        return None;
    }
    Some(object)
}

/// Whether a patch's target names this object.
fn targets(p: &ComponentPatch, object: &Value) -> bool {
    let Some(key) = ObjectKey::of(object) else {
        return false;
    };
    let t = &p.target;
    t.kind == key.kind
        && t.name == key.name
        && t.group.as_ref().is_none_or(|g| *g == key.group)
        && t.namespace.as_ref().is_none_or(|n| *n == key.namespace)
}

/// The platform's rules hold for components too: a `deny` fails the `platform` unit on
/// that cluster, a `warn` is a warning.
fn check_policies(
    cx: &ComponentsContext,
    object: &Value,
    cluster: &ClusterDef,
    doc: &Document,
    errs: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    if cx.policies.is_empty() {
        return;
    }
    let team = platform_team();
    let subject = Subject {
        object,
        team: &team,
        cluster,
        instance: None,
    };
    for v in cx.policies.check(&subject) {
        if v.exempted {
            continue;
        }
        let field = v.field_path.as_deref().unwrap_or("");
        let mut d = doc.diag_at(
            field,
            Some(&team),
            &format!("policy/{}", v.rule),
            format!("policy {} on {}: {}", v.rule, cluster.name, v.message),
        );
        d = d.on_cluster(&cluster.name);
        match v.action {
            PolicyAction::Deny => errs.push(d),
            PolicyAction::Warn => {
                d.severity = Severity::Warning;
                warnings.push(d);
            }
        }
    }
}
