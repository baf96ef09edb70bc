//! A component's Kustomize folder or Helm chart: the [`PackageRequest`] it makes on each
//! cluster it selects (pure: [`package_requests`] lists them for whoever expands them), and
//! its expansion read back as the component's documents. What goes wrong in a package is
//! reported at the component's file, naming the package and the template.

use serde_json::Value;

use super::{ComponentsContext, ReadComponent, platform_team, read};
use crate::desired::{ClusterName, Diagnostic, PackageOwner, PackageRequest, PackageSource};
use crate::model::{self, ClusterDef, Document, diag};
use crate::render::instances::merge_override;
use crate::render::{Files, platform};

/// The packages the platform's components ask for, one per component and cluster it
/// selects: what must be expanded before [`crate::render::render_expanded`] renders the
/// revision. Nothing when `platform.yaml` does not read; the render names the problems.
pub fn package_requests(files: &Files) -> Vec<PackageRequest> {
    let mut ignored = Vec::new();
    let Some(platform) = platform::read(files, None, &mut ignored) else {
        return Vec::new();
    };
    let components = read(files, &platform.platform);
    components
        .read
        .values()
        .filter(|c| kustomize_problem(files, c).is_none())
        .flat_map(|c| c.clusters.iter().filter_map(|cl| request_on(c, cl)))
        .collect()
}

/// The component's package on one cluster: its values with the cluster's merged over
/// them; `None` for a component of plain manifests.
pub(super) fn request_on(c: &ReadComponent, cluster: &str) -> Option<PackageRequest> {
    let spec = &c.component.spec;
    let name = &c.component.metadata.name;
    let (source, chart) = match (&spec.source.kustomize, &spec.source.chart) {
        (Some(k), _) => (
            PackageSource::Kustomize {
                path: k.path.trim_end_matches('/').to_owned(),
            },
            false,
        ),
        (None, Some(chart)) => (chart.source()?, true),
        (None, None) => return None,
    };
    // As a team's packages are asked for: Kustomize takes no release, namespace or values.
    let (release, namespace, values) = if chart {
        let mut values = match &spec.values {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        };
        if let Some(o) = spec.overrides.get(cluster) {
            merge_override(&mut values, &o.values);
        }
        (
            name.clone(),
            spec.namespace.clone().unwrap_or_default(),
            values,
        )
    } else {
        (String::new(), String::new(), Value::Null)
    };
    Some(PackageRequest {
        source,
        release,
        namespace,
        values,
        cluster: ClusterName(cluster.to_owned()),
        owner: PackageOwner::Component(name.clone()),
        origin: format!("{}:{}", c.doc.file, c.doc.line),
    })
}

/// Why a component's Kustomize folder cannot be built: a reference that leaves the repo
/// or names what it lacks, or a remote base (a build never needs the network).
fn kustomize_problem(files: &Files, c: &ReadComponent) -> Option<Diagnostic> {
    let k = c.component.spec.source.kustomize.as_ref()?;
    let dir = k.path.trim_end_matches('/');
    let e = model::kustomize_inputs(files, dir, "").err()?;
    Some(diag(
        &e.file,
        1,
        1,
        Some(&platform_team()),
        "package-reference",
        format!("component {}: {}", c.component.metadata.name, e.message),
    ))
}

/// The documents of the component's package as expanded for `cluster`, each with where
/// in the package it came from; the package's own failure (or its absence from the
/// expansions) is an error at the component's file.
pub(super) fn expanded_documents(
    cx: &ComponentsContext,
    c: &ReadComponent,
    cluster: &ClusterDef,
    errs: &mut Vec<Diagnostic>,
) -> Vec<(Document, Option<String>)> {
    let team = platform_team();
    if let Some(problem) = kustomize_problem(cx.files, c) {
        errs.push(problem);
        return Vec::new();
    }
    let Some(request) = request_on(c, &cluster.name) else {
        return Vec::new();
    };
    let what = format!(
        "component {}: {}",
        c.component.metadata.name, request.source
    );
    let expansion = match cx.expansions.get(&request) {
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            let place = match (&e.file, e.line) {
                (Some(f), Some(l)) => format!("{f}:{l}: "),
                (Some(f), None) => format!("{f}: "),
                _ => String::new(),
            };
            errs.push(c.doc.diag_at(
                "spec.source",
                Some(&team),
                "package-error",
                format!("{what} on cluster {}: {place}{}", cluster.name, e.message),
            ));
            return Vec::new();
        }
        None => {
            errs.push(c.doc.diag_at(
                "spec.source",
                Some(&team),
                "package-not-expanded",
                format!("{what} was not expanded for cluster {}", cluster.name),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for document in &expansion.documents {
        let origin = format!("{}, {}", request.source, document.origin);
        let before = errs.len();
        let docs = model::documents(&c.doc.file, document.text.as_bytes(), Some(&team), errs);
        at_component(&mut errs[before..], c, &origin);
        for doc in docs {
            let items = doc.list_items().unwrap_or_else(|| vec![doc]);
            for mut doc in items.into_iter().filter(|d| !d.value.is_null()) {
                doc.line = c.doc.line;
                out.push((doc, Some(origin.clone())));
            }
        }
    }
    out
}

/// Puts diagnostics about a package's output at the component's file and line, naming
/// where in the package the object came from.
pub(super) fn at_component(errs: &mut [Diagnostic], c: &ReadComponent, origin: &str) {
    for e in errs {
        e.file = c.doc.file.clone();
        e.line = c.doc.line;
        e.column = 1;
        e.message = format!(
            "component {}: {origin}: {}",
            c.component.metadata.name, e.message
        );
    }
}
