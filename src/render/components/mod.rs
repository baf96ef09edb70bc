//! The platform's components (`components/<name>.yaml`) to one `platform` unit per
//! cluster: every component that selects the cluster, its objects applied as pontoon
//! (the platform repo is trusted: cluster-scoped objects and CRDs are allowed, the team
//! rules are not checked, `platform.yaml`'s policies are), each component's objects
//! recorded so that a Kind's `requires` can wait for that component's health.
//!
//! A component's plain manifests are read from its folder (`objects`); its Kustomize
//! folder or Helm chart is expanded out of process from the requests `packages` lists, and
//! read from the expansions. A component with an error fails
//! the `platform` unit on the clusters it selects (what runs there stays, nothing is
//! pruned); the platform units of other clusters and every team go on.

mod objects;
mod packages;

pub use packages::package_requests;

use std::collections::{BTreeMap, BTreeSet};

use super::health::PlatformHealth;
use super::policies::Policies;
use super::team::TeamUnits;
use super::teams::select_clusters;
use super::{Files, platform};
use crate::desired::{
    ClusterName, DesiredObject, Diagnostic, Expansions, NamespaceOwners, ObjectKey, PLATFORM_UNIT,
    SourceRef, TeamName, UnitComponents, UnitDesired, UnitId, is_dns_label,
};
use crate::model::{self, API_VERSION, ClusterDef, Component, Document, Platform, diag};

/// The folder components are written in.
pub const FOLDER: &str = "components/";

/// Every component file that reads: its document, what it says and the clusters it
/// selects; with the errors of those that do not.
#[derive(Default)]
pub(super) struct Components {
    pub read: BTreeMap<String, ReadComponent>,
    /// Files that do not read as a component, by component name (the file's stem).
    pub broken: BTreeMap<String, Vec<Diagnostic>>,
}

pub(super) struct ReadComponent {
    pub doc: Document,
    pub component: Component,
    pub clusters: Vec<String>,
}

impl Components {
    /// Whether the revision has any component at all (else there is no `platform` unit).
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.broken.is_empty()
    }

    /// Whether component `name` runs on `cluster`.
    pub fn runs_on(&self, name: &str, cluster: &str) -> bool {
        self.read
            .get(name)
            .is_some_and(|c| c.clusters.iter().any(|n| n == cluster))
    }
}

fn platform_team() -> TeamName {
    TeamName(PLATFORM_UNIT.to_owned())
}

/// Reads every `components/<name>.yaml` (top level only: subfolders hold manifests).
pub(super) fn read(files: &Files, platform: &Platform) -> Components {
    let mut out = Components::default();
    for (path, bytes) in files.range(FOLDER.to_owned()..) {
        let Some(rest) = path.strip_prefix(FOLDER) else {
            break;
        };
        let Some(stem) = rest
            .strip_suffix(".yaml")
            .or_else(|| rest.strip_suffix(".yml"))
        else {
            continue;
        };
        if stem.contains('/') {
            continue;
        }
        match read_one(path, stem, bytes, platform) {
            Ok(c) => {
                out.read.insert(stem.to_owned(), c);
            }
            Err(errs) => {
                out.broken.insert(stem.to_owned(), errs);
            }
        }
    }
    out
}

fn read_one(
    path: &str,
    stem: &str,
    bytes: &[u8],
    platform: &Platform,
) -> Result<ReadComponent, Vec<Diagnostic>> {
    let team = platform_team();
    let mut errs = Vec::new();
    let docs = model::documents(path, bytes, Some(&team), &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    let Some(doc) = docs.into_iter().next() else {
        return Err(vec![diag(
            path,
            1,
            1,
            Some(&team),
            "schema",
            "empty component file",
        )]);
    };
    let component = model::typed::<Component>(&doc, Some(&team)).map_err(|d| vec![*d])?;
    let mut problem = |field: &str, rule: &str, msg: String| {
        errs.push(doc.diag_at(field, Some(&team), rule, msg));
    };
    if component.api_version != API_VERSION || component.kind != "Component" {
        problem(
            "kind",
            "schema",
            format!("a component must be `apiVersion: {API_VERSION}`, `kind: Component`"),
        );
    }
    if component.metadata.name != stem || !is_dns_label(stem) {
        problem(
            "metadata.name",
            "component-name",
            format!(
                "metadata.name is {:?}; it must be the file's name, {stem:?}, a valid name (lowercase letters, digits, '-')",
                component.metadata.name
            ),
        );
    }
    check_source(&component, &mut problem);
    for cluster in component.spec.overrides.keys() {
        if !platform.spec.clusters.iter().any(|c| &c.name == cluster) {
            problem(
                &format!("spec.overrides.{cluster}"),
                "unknown-cluster",
                format!("override for cluster {cluster}, which platform.yaml does not define"),
            );
        }
    }
    let clusters: Vec<String> = select_clusters(platform, &component.spec.clusters)
        .into_iter()
        .map(|c| c.name.clone())
        .collect();
    if clusters.is_empty() {
        problem(
            "spec.clusters",
            "unknown-cluster",
            "spec.clusters selects no cluster of platform.yaml".to_owned(),
        );
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ReadComponent {
        doc,
        component,
        clusters,
    })
}

/// Exactly one source, each complete, its folder inside the repo and outside `teams/`.
fn check_source(c: &Component, problem: &mut impl FnMut(&str, &str, String)) {
    let s = &c.spec.source;
    let given = [
        s.manifests.is_some(),
        s.kustomize.is_some(),
        s.chart.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        problem(
            "spec.source",
            "schema",
            "spec.source needs exactly one of manifests, kustomize, chart".to_owned(),
        );
        return;
    }
    let folders = [
        (
            "spec.source.manifests.path",
            s.manifests.as_ref().map(|f| &f.path),
        ),
        (
            "spec.source.kustomize.path",
            s.kustomize.as_ref().map(|f| &f.path),
        ),
        (
            "spec.source.chart.path",
            s.chart.as_ref().and_then(|c| c.path.as_ref()),
        ),
    ];
    for (field, path) in folders {
        if let Some(path) = path
            && let Some(why) = folder_problem(path)
        {
            problem(field, "schema", format!("{path:?} {why}"));
        }
    }
    if let Some(chart) = &s.chart {
        let remote = [chart.repository.is_some(), chart.oci.is_some()];
        let ways = remote.iter().filter(|r| **r).count() + usize::from(chart.path.is_some());
        if ways != 1 {
            problem(
                "spec.source.chart",
                "schema",
                "a chart is one of path, repository (with name and version), oci (with version)"
                    .to_owned(),
            );
        } else if chart.repository.is_some() && (chart.name.is_none() || chart.version.is_none()) {
            problem(
                "spec.source.chart",
                "schema",
                "a chart from a repository needs name and version".to_owned(),
            );
        } else if chart.oci.is_some() && chart.version.is_none() {
            problem(
                "spec.source.chart",
                "schema",
                "a chart from an OCI registry needs version".to_owned(),
            );
        }
    }
}

/// Why a source folder cannot be read: outside the repo, or a team's.
pub(in crate::render) fn folder_problem(path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|s| s == ".." || s == ".") {
        Some("is not a folder of the platform repo (relative, without . or ..)")
    } else if path == "teams" || path.starts_with("teams/") {
        Some("is in a team's folder; a component's files are the platform's")
    } else {
        None
    }
}

/// What the components' render reads from the rest of the revision.
pub(super) struct ComponentsContext<'a> {
    pub platform: &'a Platform,
    pub files: &'a Files,
    pub namespace_owners: &'a NamespaceOwners,
    pub adoptions: &'a platform::Adoptions,
    pub health: &'a PlatformHealth,
    pub policies: &'a Policies,
    /// The components' packages (charts, Kustomize folders) as they were expanded.
    pub expansions: &'a Expansions,
}

/// One component's objects on one cluster (before its patches), or its errors there.
type Rendered = Result<Vec<DesiredObject>, Vec<Diagnostic>>;

/// The `platform` units as a team's render gives its units, with the clusters any
/// component selects (where a failure is shown).
pub(super) type PlatformUnits = (Result<TeamUnits, Vec<Diagnostic>>, Vec<ClusterName>);

/// The `platform` unit of every cluster some component selects (`None` when the revision
/// has no components), less those of clusters where a component has an error: those
/// errors, each about one cluster, are the result's `denied`.
pub(super) fn platform_units(
    cx: &ComponentsContext,
    components: &Components,
    warnings: &mut Vec<Diagnostic>,
) -> Option<PlatformUnits> {
    if components.is_empty() {
        return None;
    }
    let on: Vec<ClusterName> = cx
        .platform
        .spec
        .clusters
        .iter()
        .filter(|c| {
            components
                .read
                .values()
                .any(|r| r.clusters.contains(&c.name))
        })
        .map(|c| ClusterName(c.name.clone()))
        .collect();
    if !components.broken.is_empty() {
        // A component that does not read selects clusters nobody knows: every platform
        // unit keeps what it runs.
        let errs = components.broken.values().flatten().cloned().collect();
        return Some((Err(errs), on));
    }
    let mut units = Vec::new();
    let mut denied = Vec::new();
    for cluster in &cx.platform.spec.clusters {
        let mut unit = PlatformUnit::default();
        for (name, c) in &components.read {
            if !c.clusters.contains(&cluster.name) {
                continue;
            }
            match objects::render_on(cx, c, cluster, warnings) {
                Ok(objects) => unit.add(name, objects),
                Err(errs) => denied.extend(errs.into_iter().map(|d| d.on_cluster(&cluster.name))),
            }
        }
        if unit.components.is_empty() {
            continue;
        }
        let provides = std::mem::take(&mut unit.provides);
        let (objects, errs) = unit.into_objects(cluster);
        if !errs.is_empty() {
            denied.extend(errs);
            continue;
        }
        units.push(UnitDesired {
            unit: UnitId {
                team: platform_team(),
                cluster: ClusterName(cluster.name.clone()),
            },
            namespaces: Vec::new(),
            objects,
            prune: platform::prune_policy(cx.platform),
            adopt: cx
                .adoptions
                .iter()
                .filter(|(team, _)| team.0 == PLATFORM_UNIT)
                .map(|(_, a)| a.clone())
                .collect(),
            dependencies: BTreeMap::new(),
            components: UnitComponents {
                requires: BTreeMap::new(),
                provides,
            },
        });
    }
    let units = units
        .into_iter()
        .filter(|u| {
            !denied
                .iter()
                .any(|d: &Diagnostic| d.concerns(&u.unit.cluster.0))
        })
        .collect();
    Some((Ok(TeamUnits { units, denied }), on))
}

/// The objects of one cluster's `platform` unit as they are gathered.
#[derive(Default)]
struct PlatformUnit {
    components: Vec<String>,
    objects: Vec<DesiredObject>,
    provides: BTreeMap<String, Vec<ObjectKey>>,
}

impl PlatformUnit {
    fn add(&mut self, name: &str, objects: Vec<DesiredObject>) {
        self.components.push(name.to_owned());
        let keys = objects.iter().filter_map(DesiredObject::key).collect();
        self.provides.insert(name.to_owned(), keys);
        self.objects.extend(objects);
    }

    /// The unit's objects sorted by key; one object from two places is an error naming
    /// both, never a silent winner.
    fn into_objects(self, cluster: &ClusterDef) -> (Vec<DesiredObject>, Vec<Diagnostic>) {
        let team = platform_team();
        let mut errs = Vec::new();
        let mut seen: BTreeMap<ObjectKey, SourceRef> = BTreeMap::new();
        let mut keyed = Vec::new();
        for o in self.objects {
            let Some(key) = o.key() else { continue };
            if let Some(first) = seen.get(&key) {
                errs.push(
                    diag(
                        &o.source.file,
                        o.source.line,
                        1,
                        Some(&team),
                        "duplicate-object",
                        format!("{key} on {} is also produced by {first}", cluster.name),
                    )
                    .on_cluster(&cluster.name),
                );
                continue;
            }
            seen.insert(key.clone(), o.source.clone());
            keyed.push((key, o));
        }
        keyed.sort_by(|(a, _), (b, _)| a.cmp(b));
        (keyed.into_iter().map(|(_, o)| o).collect(), errs)
    }
}

/// The components every object of a Kind instance waits for, checked: each must be a
/// component that runs on the cluster (else the instance would wait for ever).
pub(super) fn check_requires(
    components: &Components,
    requires: &[String],
    cluster: &str,
) -> Result<(), String> {
    let missing: BTreeSet<&String> = requires
        .iter()
        .filter(|r| !components.runs_on(r, cluster))
        .collect();
    match missing.into_iter().next() {
        None => Ok(()),
        Some(name) if components.read.contains_key(name) => Err(format!(
            "requires component {name}, which does not run on cluster {cluster}"
        )),
        Some(name) => Err(format!(
            "requires component {name}, which components/ does not define"
        )),
    }
}
