//! A Kind backed by a Helm chart (`spec.chart`): each instance is one release of the
//! chart on each cluster it goes to, named after the instance, in the instance's
//! namespace, with values that are templates over the instance (CEL, [`super::expr`], the
//! same variables as the kind's resource templates) and the cluster's `clusterValues`
//! merged over them.
//!
//! Render stays pure: [`package_requests`] lists one request per instance and cluster,
//! something else expands them, and the team's render reads each expansion as the
//! instance's objects, exactly as the kind's templates' objects are read: placed in the
//! team's namespaces (never cluster-scoped, never another team's), labelled and owned as
//! the team's, under the platform's policies, waiting for the kind's `requires` and
//! counted in the instance's health and `dependsOn`. The kind is the platform's, so, as
//! for its templates, `allowedKinds` (what a team may write by hand) does not limit it.
//! Every diagnostic is placed at the instance and names the kind's file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::instances::{InstanceDoc, expression_scope, merge_override, spec_for};
use super::manifests::stamp;
use super::policy_check::Origin;
use super::team::TeamRender;
use super::teams::{self, select_clusters};
use super::{Files, expr, is_manifest_file, kinds, packages, platform};
use crate::desired::{
    Applier, ClusterName, DesiredObject, Diagnostic, Expansion, ObjectKey, PackageOwner,
    PackageRequest, SourceRef, TeamName,
};
use crate::model::{
    self, API_VERSION, ClusterDef, Document, Instance, KindChart, Platform, Team, diag, type_name,
};

/// The id a chart's objects carry among an instance's resources (for `dependsOn`
/// between instances, which waits for all of them).
const CHART_RESOURCE: &str = "chart";

/// Problems of a kind's `spec.chart` (and of a kind with neither resources nor chart),
/// each at its field of the kind's document.
pub(super) fn check_kind(
    doc: &Document,
    k: &model::Kind,
    files: &Files,
    platform: &Platform,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let name = &k.metadata.name;
    let mut problem = |field: &str, rule: &str, m: String| {
        out.push(doc.diag_at(field, None, rule, format!("kind {name}: {m}")));
    };
    let Some(chart) = &k.spec.chart else {
        if k.spec.resources.is_empty() {
            problem(
                "spec",
                "invalid-kind",
                "a kind needs resources, a chart, or both".to_owned(),
            );
        }
        return out;
    };
    let source = &chart.source;
    let ways = [
        source.path.is_some(),
        source.repository.is_some(),
        source.oci.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() != 1 {
        problem(
            "spec.chart.source",
            "invalid-kind",
            "a chart is one of path, repository (with name and version), oci (with version)"
                .to_owned(),
        );
    } else if source.repository.is_some() && (source.name.is_none() || source.version.is_none()) {
        problem(
            "spec.chart.source",
            "invalid-kind",
            "a chart from a repository needs name and version".to_owned(),
        );
    } else if source.oci.is_some() && source.version.is_none() {
        problem(
            "spec.chart.source",
            "invalid-kind",
            "a chart from an OCI registry needs version".to_owned(),
        );
    }
    if let Some(path) = &source.path {
        let folder = path.trim_end_matches('/');
        let why = super::components::folder_problem(path).map(str::to_owned).or_else(|| {
            if folder.starts_with("kinds/") {
                Some("is under kinds/, where every YAML file is read as a Kind: put the chart in a folder of its own, like charts/<name>".to_owned())
            } else if !files.contains_key(&format!("{folder}/Chart.yaml")) {
                Some("holds no Chart.yaml".to_owned())
            } else {
                None
            }
        });
        if let Some(why) = why {
            problem(
                "spec.chart.source.path",
                "invalid-kind",
                format!("{path:?} {why}"),
            );
        }
    }
    let mut templates = vec![("spec.chart.values".to_owned(), &chart.values)];
    for (cluster, values) in &chart.cluster_values {
        let field = format!("spec.chart.clusterValues.{cluster}");
        if !platform.spec.clusters.iter().any(|c| &c.name == cluster) {
            problem(
                &field,
                "unknown-cluster",
                format!(
                    "chart values for cluster {cluster}, which platform.yaml does not define{}",
                    model::did_you_mean(
                        cluster,
                        platform.spec.clusters.iter().map(|c| c.name.as_str())
                    )
                ),
            );
        }
        templates.push((field, values));
    }
    for (field, values) in templates {
        if !matches!(values, Value::Null | Value::Object(_)) {
            problem(
                &field,
                "invalid-kind",
                format!("chart values are a mapping, not {}", type_name(values)),
            );
        } else if let Err((at, e)) = check_strings(values, &field) {
            problem(&at, "expression", format!("{at}: {e}"));
        }
    }
    out
}

/// Checks every `${expression}` in the strings of a values template at `path`: the
/// first that does not parse, with its path.
fn check_strings(value: &Value, path: &str) -> Result<(), (String, expr::ExprError)> {
    match value {
        Value::String(s) => expr::check_template(s).map_err(|e| (path.to_owned(), e)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_strings(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_strings(v, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

/// One instance of a chart-backed kind: what its requests are built from.
pub(super) struct ChartInstance<'a> {
    pub kind: &'a str,
    pub chart: &'a KindChart,
    /// Where the kind is written: `kinds/cache.yaml:1`.
    pub kind_at: String,
    /// The instance's file and document.
    pub path: &'a str,
    pub doc: &'a Document,
    pub name: &'a str,
    pub namespace: &'a str,
    pub team: &'a TeamName,
}

impl ChartInstance<'_> {
    /// The chart's request on `cluster`: values rendered over the instance (`scope`), the
    /// cluster's `clusterValues` merged over them; or why the values do not render.
    pub fn request(&self, scope: &expr::Scope, cluster: &str) -> Result<PackageRequest, String> {
        let source = self
            .chart
            .source
            .source()
            .ok_or_else(|| "spec.chart.source names no chart".to_owned())?;
        let render = |field: String, template: &Value| {
            scope.render(template).map_err(|e| format!("{field}: {e}"))
        };
        let mut values = render("spec.chart.values".to_owned(), &self.chart.values)?;
        if values.is_null() {
            values = Value::Object(Default::default());
        }
        if let Some(over) = self.chart.cluster_values.get(cluster) {
            let over = render(format!("spec.chart.clusterValues.{cluster}"), over)?;
            merge_override(&mut values, &over);
        }
        if !values.is_object() {
            return Err(format!(
                "spec.chart.values: the values are {}, not a mapping",
                type_name(&values)
            ));
        }
        Ok(PackageRequest {
            source,
            release: self.name.to_owned(),
            namespace: self.namespace.to_owned(),
            values,
            cluster: ClusterName(cluster.to_owned()),
            owner: PackageOwner::Team(self.team.clone()),
            origin: format!("{}:{}", self.path, self.doc.line),
        })
    }

    /// How a diagnostic names the instance and its kind on `cluster`.
    fn what(&self, cluster: &str) -> String {
        format!(
            "{} {} on {cluster}: kind {} ({})",
            self.kind, self.name, self.kind, self.kind_at
        )
    }
}

/// The requests of every instance of a chart-backed kind in every team's folder, on each
/// cluster it goes to: what must be expanded before [`super::render_expanded`] renders the
/// revision. An instance whose spec or values do not render asks for nothing (the render
/// names the problem); nothing at all when no kind has a chart.
pub fn package_requests(files: &Files) -> Vec<PackageRequest> {
    let mut ignored = Vec::new();
    let Some(read) = platform::read(files, None, &mut ignored) else {
        return Vec::new();
    };
    let platform = &read.platform;
    let kinds = kinds::read(files, platform, &mut ignored);
    let charted: BTreeMap<&str, (&Document, &model::Kind, &KindChart)> = kinds
        .defined
        .iter()
        .filter_map(|(name, (doc, k))| Some((name.as_str(), (doc, k, k.spec.chart.as_ref()?))))
        .collect();
    if charted.is_empty() {
        return Vec::new();
    }
    let by_team = teams::files_by_team(files);
    let mut requests = Vec::new();
    for (name, yaml) in teams::read_team_yamls(&by_team, platform) {
        let Ok((_, team)) = yaml else { continue };
        let team_name = TeamName(name.clone());
        let team_files = &by_team[&name];
        let scan = packages::scan_team(&team_name, team_files);
        let lister = Lister {
            platform,
            charted: &charted,
            team_name: &team_name,
            team: &team,
            clusters: select_clusters(platform, &team.spec.clusters),
        };
        for (path, bytes) in team_files {
            if !is_manifest_file(path)
                || path.ends_with("/team.yaml")
                || scan.package_files.contains(*path)
                || !charted
                    .keys()
                    .any(|k| bytes.windows(k.len()).any(|w| w == k.as_bytes()))
            {
                continue;
            }
            for doc in model::documents(path, bytes, Some(&team_name), &mut ignored) {
                lister.add(path, &doc, &mut requests);
            }
        }
    }
    requests
}

/// Lists the requests of one team's instances.
struct Lister<'a> {
    platform: &'a Platform,
    charted: &'a BTreeMap<&'a str, (&'a Document, &'a model::Kind, &'a KindChart)>,
    team_name: &'a TeamName,
    team: &'a Team,
    clusters: Vec<&'a ClusterDef>,
}

impl Lister<'_> {
    /// The requests of one document (a `List`'s items each on their own), if it is an
    /// instance of a chart-backed kind that reads.
    fn add(&self, path: &str, doc: &Document, out: &mut Vec<PackageRequest>) {
        if let Some(items) = doc.list_items() {
            for item in &items {
                self.add(path, item, out);
            }
            return;
        }
        let field = |f: &str| doc.value.get(f).and_then(Value::as_str);
        let Some(kind) = field("kind").filter(|_| field("apiVersion") == Some(API_VERSION)) else {
            return;
        };
        let Some((kind_doc, definition, chart)) = self.charted.get(kind) else {
            return;
        };
        // An encrypted instance is read only once decrypted, where the render refuses it.
        if crate::sops::is_encrypted(&doc.value) {
            return;
        }
        let Ok(instance) = model::typed::<Instance>(doc, None) else {
            return;
        };
        let namespace = instance
            .metadata
            .namespace
            .clone()
            .or_else(|| self.team.spec.namespaces.first().cloned())
            .unwrap_or_default();
        let on: Vec<&ClusterDef> = match &instance.clusters {
            Some(selector) => select_clusters(self.platform, selector)
                .into_iter()
                .filter(|c| self.clusters.iter().any(|t| t.name == c.name))
                .collect(),
            None => self.clusters.clone(),
        };
        let chart_instance = ChartInstance {
            kind,
            chart,
            kind_at: format!("{}:{}", kind_doc.file, kind_doc.line),
            path,
            doc,
            name: &instance.metadata.name,
            namespace: &namespace,
            team: self.team_name,
        };
        for cluster in on {
            let Ok(spec) = spec_for(definition, &instance, &cluster.name) else {
                continue;
            };
            let scope = expression_scope(&spec, &instance, &namespace, self.team_name, cluster);
            if let Ok(request) = chart_instance.request(&scope, &cluster.name) {
                out.push(request);
            }
        }
    }
}

impl<'a> TeamRender<'a> {
    /// The kind's chart for one instance on one cluster: its expansion read as the
    /// instance's objects there. `rendered` gets each object's key, for `dependsOn`.
    pub(super) fn add_kind_chart(
        &mut self,
        instance_doc: &InstanceDoc,
        chart: &KindChart,
        scope: &expr::Scope,
        spec: &Value,
        cluster: &ClusterDef,
        rendered: &mut Vec<(&str, ObjectKey, &[String])>,
    ) {
        let (path, doc, kind) = (instance_doc.path, instance_doc.doc, instance_doc.kind);
        let kind_at = self
            .revision
            .kinds
            .defined
            .get(kind)
            .map_or_else(String::new, |(d, _)| format!("{}:{}", d.file, d.line));
        let chart_instance = ChartInstance {
            kind,
            chart,
            kind_at,
            path,
            doc,
            name: &instance_doc.instance.metadata.name,
            namespace: &instance_doc.namespace,
            team: self.team_name,
        };
        let what = chart_instance.what(&cluster.name);
        let Some((request, expansion)) = self.kind_chart_expansion(&chart_instance, scope, cluster)
        else {
            return;
        };
        let source = SourceRef {
            file: path.to_owned(),
            line: doc.line,
        };
        for document in &expansion.documents {
            let before = (self.errors.len(), self.denied.len(), self.warnings.len());
            let mut docs = Vec::new();
            for d in model::documents(
                path,
                document.text.as_bytes(),
                Some(self.team_name),
                &mut self.errors,
            ) {
                docs.extend(d.list_items().unwrap_or_else(|| vec![d]));
            }
            for object_doc in docs.iter().filter(|d| !d.value.is_null()) {
                let reading = ChartObject {
                    instance_doc,
                    object_doc,
                    source: &source,
                    spec,
                    cluster,
                };
                if let Some(key) = self.add_chart_object(&reading) {
                    rendered.push((CHART_RESOURCE, key, &[]));
                }
            }
            // A line of helm's output means nothing in the repo: every diagnostic points
            // at the instance and names the kind, the chart and the template.
            let (errors, denied, warnings) = before;
            for e in self.errors[errors..]
                .iter_mut()
                .chain(&mut self.denied[denied..])
                .chain(&mut self.warnings[warnings..])
            {
                e.file = path.to_owned();
                e.line = doc.line;
                e.column = 1;
                e.message = format!(
                    "{what}, {}, {}: {}",
                    request.source, document.origin, e.message
                );
                e.cluster = Some(cluster.name.clone());
            }
        }
    }

    /// The request of an instance's chart on `cluster` and its expansion; `None`, with the
    /// reason recorded at the instance, when its values do not render, its file was
    /// encrypted, or the chart did not expand.
    fn kind_chart_expansion(
        &mut self,
        chart_instance: &ChartInstance,
        scope: &expr::Scope,
        cluster: &ClusterDef,
    ) -> Option<(PackageRequest, &'a Expansion)> {
        let (path, doc) = (chart_instance.path, chart_instance.doc);
        let what = chart_instance.what(&cluster.name);
        let at_instance = |rule: &str, message: String| {
            diag(path, doc.line, 1, Some(self.team_name), rule, message).on_cluster(&cluster.name)
        };
        if doc.decrypted {
            self.errors.push(at_instance(
                "sops",
                format!("{what}: a kind backed by a chart takes no parameters from a SOPS-encrypted file: helm would be handed them in clear"),
            ));
            return None;
        }
        let request = match chart_instance.request(scope, &cluster.name) {
            Ok(r) => r,
            Err(e) => {
                self.errors
                    .push(at_instance("expression", format!("{what}, {e}")));
                return None;
            }
        };
        let expansions = self.revision.expansions;
        match expansions.get(&request) {
            Some(Ok(e)) => Some((request, e)),
            Some(Err(e)) => {
                let what = format!("{what}, {}", request.source);
                self.errors.push(packages::package_error(
                    (path, doc.line),
                    self.team_name,
                    &what,
                    &cluster.name,
                    e,
                ));
                None
            }
            None => {
                self.errors.push(at_instance(
                    "package-not-expanded",
                    format!("{what}, {} was not expanded", request.source),
                ));
                None
            }
        }
    }

    /// One document of the chart's output, as an object of the instance on its cluster:
    /// its key, or `None` with the reason recorded.
    fn add_chart_object(&mut self, reading: &ChartObject) -> Option<ObjectKey> {
        let ChartObject {
            instance_doc,
            object_doc,
            source,
            spec,
            cluster,
        } = *reading;
        let field = |name: &str| object_doc.value.get(name).and_then(Value::as_str);
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        if api_version.is_none_or(str::is_empty) || kind.is_none_or(str::is_empty) {
            self.errors.push(object_doc.diag_at(
                "",
                Some(self.team_name),
                "schema",
                "every document needs apiVersion and kind",
            ));
            return None;
        }
        if api_version == Some(API_VERSION) {
            self.errors.push(object_doc.diag_at(
                "kind",
                Some(self.team_name),
                "package-output",
                format!(
                    "a chart may not produce pontoon documents ({})",
                    kind.unwrap_or_default()
                ),
            ));
            return None;
        }
        let mut object = object_doc.value.clone();
        super::secrets::string_data_into_data(&mut object);
        if !self.place_in_team_namespace(&mut object, &instance_doc.namespace, object_doc) {
            return None;
        }
        stamp(&mut object, self.team_name, source);
        let health = self.revision.health.for_object(&object);
        let key = ObjectKey::of(&object);
        let requires = &instance_doc.definition.spec.requires;
        if let Some(key) = key.as_ref().filter(|_| !requires.is_empty()) {
            self.requires
                .entry(cluster.name.clone())
                .or_default()
                .insert(key.clone(), requires.clone());
        }
        let origin = Origin::Instance {
            doc: object_doc,
            template: &Value::Null,
            kind: instance_doc.kind,
            name: &instance_doc.instance.metadata.name,
            spec,
        };
        self.check_policies(&object, cluster, origin);
        self.objects_by_cluster
            .entry(cluster.name.clone())
            .or_default()
            .push(DesiredObject {
                object: Arc::new(object.into()),
                source: source.clone(),
                applier: Applier::Team,
                drift: instance_doc.drift,
                ignore_fields: instance_doc.ignore_fields.clone(),
                health,
            });
        key
    }
}

/// One document of a chart's output being read as an instance's object.
#[derive(Clone, Copy)]
struct ChartObject<'r> {
    instance_doc: &'r InstanceDoc<'r>,
    object_doc: &'r Document,
    source: &'r SourceRef,
    spec: &'r Value,
    cluster: &'r ClusterDef,
}
