//! A team's packages: Kustomize folders and `kind: Chart` references in its folder, where
//! `platform.yaml` allows them (`spec.teamPackages`). Render stays pure: it lists the
//! [`PackageRequest`]s a revision makes ([`package_requests`]), something else expands
//! them, and the team's render reads each expansion's documents on its cluster exactly
//! like plain manifests (allowed kinds, the team's namespaces, ownership, policies).
//! Diagnostics about an expansion's objects point at the chart document or the
//! kustomization file and name the template the object came from.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::team::TeamRender;
use super::teams::{self, select_clusters};
use super::{Files, is_manifest_file, platform};
use crate::desired::{
    Diagnostic, Expansion, PackageError, PackageOwner, PackageRequest, PackageSource, TeamName,
};
use crate::model::{
    self, API_VERSION, CHART_KIND, ChartDoc, ClusterDef, Document, Platform, Team, diag,
};

/// What a team's folder holds as packages.
#[derive(Debug, Default)]
pub(super) struct TeamPackageScan {
    /// Kustomize folders built on their own (no other kustomization of the team names
    /// them), each with its kustomization file.
    pub kustomize_roots: Vec<(String, String)>,
    /// Folders holding `Chart.yaml`, by their `Chart.yaml`.
    pub chart_folders: Vec<String>,
    /// Files that are a package's inputs, not manifests of their own.
    pub package_files: BTreeSet<String>,
    /// References that leave the team's folder or the repo, or name what it lacks.
    pub errors: Vec<Diagnostic>,
}

/// Finds the Kustomize folders and chart folders of a team's folder.
pub(super) fn scan_team(team_name: &TeamName, files: &[(&String, &Vec<u8>)]) -> TeamPackageScan {
    let mut scan = TeamPackageScan::default();
    let dir_of = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    let kustomize_dirs: Vec<String> = files
        .iter()
        .filter(|(p, _)| {
            model::KUSTOMIZATION_FILES
                .iter()
                .any(|k| p.rsplit('/').next() == Some(k))
        })
        .map(|(p, _)| dir_of(p))
        .collect();
    let chart_dirs: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.ends_with("/Chart.yaml"))
        .map(|(p, _)| dir_of(p))
        .collect();
    if kustomize_dirs.is_empty() && chart_dirs.is_empty() {
        return scan;
    }
    let team_files: BTreeMap<String, &Vec<u8>> =
        files.iter().map(|(p, b)| ((*p).clone(), *b)).collect();
    let boundary = format!("teams/{team_name}");
    let mut named = BTreeSet::new();
    let mut inputs_of = Vec::new();
    for dir in &kustomize_dirs {
        match model::kustomize_inputs(&team_files, dir, &boundary) {
            Ok(inputs) => {
                named.extend(inputs.folders.iter().filter(|f| *f != dir).cloned());
                scan.package_files
                    .extend(inputs.read(&team_files).into_iter().cloned());
                inputs_of.push(dir.clone());
            }
            Err(e) => {
                scan.errors.push(diag(
                    &e.file,
                    1,
                    1,
                    Some(team_name),
                    "package-reference",
                    e.message,
                ));
                // Its files are no manifests either way.
                let prefix = format!("{dir}/");
                scan.package_files.extend(
                    team_files
                        .keys()
                        .filter(|p| p.starts_with(&prefix))
                        .cloned(),
                );
            }
        }
    }
    for dir in inputs_of {
        if !named.contains(&dir) {
            let file = model::join(
                &dir,
                model::kustomization_file(&team_files, &dir).unwrap_or(""),
            );
            scan.kustomize_roots.push((dir, file));
        }
    }
    for dir in chart_dirs {
        let prefix = format!("{dir}/");
        scan.package_files.extend(
            team_files
                .keys()
                .filter(|p| p.starts_with(&prefix))
                .cloned(),
        );
        scan.chart_folders.push(format!("{dir}/Chart.yaml"));
    }
    scan
}

/// The packages every team's folder asks for, on each cluster: what must be expanded
/// before [`super::render_expanded`] renders the revision. Nothing when `platform.yaml`
/// does not read or allows no team packages; the render names the problems.
pub fn package_requests(files: &Files) -> Vec<PackageRequest> {
    let mut ignored = Vec::new();
    let Some(read) = platform::read(files, None, &mut ignored) else {
        return Vec::new();
    };
    let platform = &read.platform;
    let allowed = platform.spec.team_packages;
    if !allowed.kustomize && !allowed.charts {
        return Vec::new();
    }
    let by_team = teams::files_by_team(files);
    let mut requests = Vec::new();
    for (name, yaml) in teams::read_team_yamls(&by_team, platform) {
        let Ok((_, team)) = yaml else { continue };
        let team_name = TeamName(name.clone());
        let team_files = &by_team[&name];
        let clusters = select_clusters(platform, &team.spec.clusters);
        let scan = scan_team(&team_name, team_files);
        if allowed.kustomize {
            for (dir, file) in &scan.kustomize_roots {
                requests.extend(
                    clusters
                        .iter()
                        .map(|c| kustomize_request(&team_name, dir, file, c)),
                );
            }
        }
        if !allowed.charts {
            continue;
        }
        for (path, bytes) in team_files {
            if !is_manifest_file(path)
                || scan.package_files.contains(*path)
                || !bytes
                    .windows(CHART_KIND.len())
                    .any(|w| w == CHART_KIND.as_bytes())
            {
                continue;
            }
            let mut errors = Vec::new();
            for doc in model::documents(path, bytes, Some(&team_name), &mut errors) {
                if is_chart_document(&doc) {
                    let ctx = ChartContext {
                        platform,
                        team_name: &team_name,
                        team: &team,
                        clusters: &clusters,
                    };
                    if let Ok(found) = ctx.requests(path, &doc) {
                        requests.extend(found.into_iter().map(|(r, _)| r));
                    }
                }
            }
        }
    }
    requests
}

/// Whether a document of a team's folder is a chart reference.
pub(super) fn is_chart_document(doc: &Document) -> bool {
    doc.value.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        && doc.value.get("kind").and_then(Value::as_str) == Some(CHART_KIND)
}

fn kustomize_request(team: &TeamName, dir: &str, file: &str, c: &ClusterDef) -> PackageRequest {
    PackageRequest {
        source: PackageSource::Kustomize {
            path: dir.to_owned(),
        },
        release: String::new(),
        namespace: String::new(),
        values: Value::Null,
        cluster: crate::desired::ClusterName(c.name.clone()),
        owner: PackageOwner::Team(team.clone()),
        origin: format!("{file}:1"),
    }
}

/// What a chart reference's requests are built from.
struct ChartContext<'a, 'c> {
    platform: &'a Platform,
    team_name: &'c TeamName,
    team: &'c Team,
    /// The team's clusters.
    clusters: &'c [&'a ClusterDef],
}

impl<'a> ChartContext<'a, '_> {
    /// The chart's request on each cluster it goes to (with that cluster), or why the
    /// document cannot be one.
    fn requests(
        &self,
        path: &str,
        doc: &Document,
    ) -> Result<Vec<(PackageRequest, &'a ClusterDef)>, Box<Diagnostic>> {
        let team = Some(self.team_name);
        let chart: ChartDoc = model::typed(doc, team)?;
        let spec = &chart.spec;
        let source = match (&spec.path, &spec.repository, &spec.oci) {
            (Some(p), None, None) => {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let boundary = format!("teams/{}/", self.team_name);
                match model::resolve(dir, p) {
                    Some(folder) if folder.starts_with(&boundary) => {
                        PackageSource::ChartFolder { path: folder }
                    }
                    _ => {
                        return Err(Box::new(doc.diag_at(
                            "spec.path",
                            team,
                            "package-reference",
                            format!("{p} leaves the team's folder teams/{}", self.team_name),
                        )));
                    }
                }
            }
            (None, Some(url), None) => PackageSource::ChartRepository {
                url: url.clone(),
                chart: spec.chart.clone().ok_or_else(|| {
                    self.missing(
                        doc,
                        "spec.chart",
                        "a chart from a repository needs spec.chart",
                    )
                })?,
                version: self.version(doc, spec)?,
            },
            (None, None, Some(reference)) => PackageSource::ChartOci {
                reference: reference.clone(),
                version: self.version(doc, spec)?,
                digest: spec.digest.clone(),
            },
            _ => {
                return Err(self.missing(
                    doc,
                    "spec",
                    "a chart needs exactly one of spec.path, spec.repository or spec.oci",
                ));
            }
        };
        let on: Vec<&'a ClusterDef> = match &chart.clusters {
            Some(selector) => select_clusters(self.platform, selector)
                .into_iter()
                .filter(|c| self.clusters.iter().any(|t| t.name == c.name))
                .collect(),
            None => self.clusters.to_vec(),
        };
        let namespace = chart
            .metadata
            .namespace
            .clone()
            .or_else(|| self.team.spec.namespaces.first().cloned())
            .unwrap_or_default();
        Ok(on
            .into_iter()
            .map(|c| {
                let mut values = match &spec.values {
                    Value::Null => Value::Object(Default::default()),
                    v => v.clone(),
                };
                if let Some(o) = chart.overrides.get(&c.name) {
                    super::merge_override(&mut values, o);
                }
                let request = PackageRequest {
                    source: source.clone(),
                    release: spec
                        .release
                        .clone()
                        .unwrap_or_else(|| chart.metadata.name.clone()),
                    namespace: namespace.clone(),
                    values,
                    cluster: crate::desired::ClusterName(c.name.clone()),
                    owner: PackageOwner::Team(self.team_name.clone()),
                    origin: format!("{path}:{}", doc.line),
                };
                (request, c)
            })
            .collect())
    }

    fn version(&self, doc: &Document, spec: &model::ChartSpec) -> Result<String, Box<Diagnostic>> {
        spec.version.clone().ok_or_else(|| {
            self.missing(
                doc,
                "spec.version",
                "a remote chart is pinned by spec.version",
            )
        })
    }

    fn missing(&self, doc: &Document, field: &str, message: &str) -> Box<Diagnostic> {
        Box::new(doc.diag_at(field, Some(self.team_name), "schema", message))
    }
}

impl<'a> TeamRender<'a> {
    /// The team's Kustomize folders, built on each of its clusters; and a refusal at each
    /// package the platform does not allow.
    pub(super) fn add_packages(&mut self, scan: TeamPackageScan) {
        let allowed = self.revision.platform.spec.team_packages;
        self.errors.extend(scan.errors);
        if !allowed.charts {
            for file in &scan.chart_folders {
                self.errors
                    .push(not_allowed(file, self.team_name, "a chart", "charts"));
            }
        }
        for (dir, file) in &scan.kustomize_roots {
            if !allowed.kustomize {
                self.errors.push(not_allowed(
                    file,
                    self.team_name,
                    "a Kustomize folder",
                    "kustomize",
                ));
                continue;
            }
            for c in self.clusters.clone() {
                let request = kustomize_request(self.team_name, dir, file, c);
                self.add_expansion(&request, (file, 1), c, None);
            }
        }
    }

    /// A `kind: Chart` document: its chart rendered on each cluster it goes to.
    pub(super) fn add_chart(&mut self, path: &str, doc: &Document) {
        if !self.revision.platform.spec.team_packages.charts {
            let mut d = not_allowed(path, self.team_name, "a chart", "charts");
            d.line = doc.line;
            self.errors.push(d);
            return;
        }
        let clusters = self.clusters.clone();
        let ctx = ChartContext {
            platform: self.revision.platform,
            team_name: self.team_name,
            team: self.team,
            clusters: &clusters,
        };
        match ctx.requests(path, doc) {
            Ok(requests) => {
                for (request, c) in requests {
                    let namespace = request.namespace.clone();
                    self.add_expansion(&request, (path, doc.line), c, Some(&namespace));
                }
            }
            Err(d) => self.errors.push(*d),
        }
    }

    /// One package's expansion on one cluster, each document read as a plain manifest of
    /// the team there (objects naming no namespace go to `namespace`, or the team's
    /// default). Whatever it breaks is reported at `at` (the chart document or the
    /// kustomization), naming the package and the template.
    fn add_expansion(
        &mut self,
        request: &PackageRequest,
        at: (&str, u64),
        cluster: &'a ClusterDef,
        namespace: Option<&str>,
    ) {
        let what = request.source.to_string();
        let expansion = match self.revision.expansions.get(request) {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                self.errors
                    .push(package_error(at, self.team_name, &what, &cluster.name, e));
                return;
            }
            None => {
                self.errors.push(
                    diag(
                        at.0,
                        at.1,
                        1,
                        Some(self.team_name),
                        "package-not-expanded",
                        format!("{what} was not expanded for cluster {}", cluster.name),
                    )
                    .on_cluster(&cluster.name),
                );
                return;
            }
        };
        let all_clusters = std::mem::replace(&mut self.clusters, vec![cluster]);
        let default_namespace = self.default_namespace.clone();
        if let Some(ns) = namespace.filter(|ns| !ns.is_empty()) {
            self.default_namespace = ns.to_owned();
        }
        self.add_expansion_documents(expansion, at, &what, &cluster.name);
        self.clusters = all_clusters;
        self.default_namespace = default_namespace;
    }

    fn add_expansion_documents(
        &mut self,
        expansion: &Expansion,
        at: (&str, u64),
        what: &str,
        cluster: &str,
    ) {
        for document in &expansion.documents {
            let before = (self.errors.len(), self.denied.len(), self.warnings.len());
            let mut docs = model::documents(
                at.0,
                document.text.as_bytes(),
                Some(self.team_name),
                &mut self.errors,
            );
            let mut expanded = Vec::new();
            for doc in docs.drain(..) {
                match doc.list_items() {
                    Some(items) => expanded.extend(items),
                    None => expanded.push(doc),
                }
            }
            for mut doc in expanded {
                doc.line = at.1;
                let field = |name: &str| {
                    doc.value
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                let (api_version, kind) = (field("apiVersion"), field("kind"));
                if doc.value.is_null() {
                    continue;
                }
                if api_version.is_empty() || kind.is_empty() {
                    self.errors.push(diag(
                        at.0,
                        at.1,
                        1,
                        Some(self.team_name),
                        "schema",
                        "every document needs apiVersion and kind",
                    ));
                } else if api_version == API_VERSION {
                    self.errors.push(diag(
                        at.0,
                        at.1,
                        1,
                        Some(self.team_name),
                        "package-output",
                        format!("a package may not produce pontoon documents ({kind})"),
                    ));
                } else {
                    self.add_manifest(at.0, &doc, &api_version, &kind);
                }
            }
            // A line in the tool's output means nothing in the repo: every diagnostic
            // points at the package and names the document instead.
            let (errors, denied, warnings) = before;
            for e in self.errors[errors..]
                .iter_mut()
                .chain(&mut self.denied[denied..])
                .chain(&mut self.warnings[warnings..])
            {
                e.file = at.0.to_owned();
                e.line = at.1;
                e.column = 1;
                e.message = format!("{what}, {}: {}", document.origin, e.message);
                e.cluster = Some(cluster.to_owned());
            }
        }
    }
}

/// A team package the platform does not allow, at its file.
fn not_allowed(file: &str, team: &TeamName, what: &str, field: &str) -> Diagnostic {
    diag(
        file,
        1,
        1,
        Some(team),
        "package-not-allowed",
        format!(
            "teams may not hold {what}: platform.yaml does not allow it (spec.teamPackages.{field})"
        ),
    )
}

/// A package that did not expand, at the request's file, naming the template and line
/// where known.
pub(super) fn package_error(
    at: (&str, u64),
    team: &TeamName,
    what: &str,
    cluster: &str,
    e: &PackageError,
) -> Diagnostic {
    let place = match (&e.file, e.line) {
        (Some(f), Some(l)) => format!("{f}:{l}: "),
        (Some(f), None) => format!("{f}: "),
        _ => String::new(),
    };
    diag(
        at.0,
        at.1,
        1,
        Some(team),
        "package-error",
        format!("{what} on cluster {cluster}: {place}{}", e.message),
    )
    .on_cluster(cluster)
}
