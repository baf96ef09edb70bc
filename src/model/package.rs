//! Packages in the platform repo, as written: what `platform.yaml` lets teams hold
//! (`spec.teamPackages`), a team's chart reference (`kind: Chart`), a Kind's chart
//! (`spec.chart`, values templated over each instance), and a Kustomize
//! folder's references read without running kustomize: which files of the repo it reads,
//! and what it names outside the repo (a remote base), which pontoon refuses.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChartRef, ClusterSelector, Metadata};

/// `spec.teamPackages` of `platform.yaml`: the packages a team folder may hold. Both off by
/// default: a team's folder then holds instances and plain manifests only.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamPackages {
    /// A folder holding `kustomization.yaml`, built by `kustomize build`.
    #[serde(default)]
    pub kustomize: bool,
    /// `kind: Chart` documents, rendered by `helm template`.
    #[serde(default)]
    pub charts: bool,
}

/// The kind of a team's chart reference.
pub const CHART_KIND: &str = "Chart";

/// A chart a team runs (`kind: Chart` in its folder), rendered by `helm template` on each
/// of its clusters; its objects meet the team's rules like its plain manifests.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartDoc {
    pub api_version: String,
    pub kind: String,
    /// `name` is the release name unless `spec.release` says otherwise; `namespace`, the
    /// release namespace (default: the team's first namespace).
    pub metadata: Metadata,
    pub spec: ChartSpec,
    /// Per-cluster values merged over `spec.values`: `{prod: {replicaCount: 3}}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    pub overrides: BTreeMap<String, Value>,
    /// Limits the chart to some of the team's clusters.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
}

/// Where the chart is and how it is released. One of `path`, `repository` (with
/// `chart` and `version`) or `oci` (with `version`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartSpec {
    /// A folder holding `Chart.yaml`, relative to the file's folder; subcharts must be in
    /// its `charts/`.
    #[serde(default)]
    pub path: Option<String>,
    /// An HTTP chart repository (where its `index.yaml` is).
    #[serde(default)]
    pub repository: Option<String>,
    /// The chart's name in `repository`.
    #[serde(default)]
    pub chart: Option<String>,
    /// An OCI reference `oci://host/path/chart`.
    #[serde(default)]
    pub oci: Option<String>,
    /// The chart version (the OCI tag): required for `repository` and `oci`.
    #[serde(default)]
    pub version: Option<String>,
    /// The OCI manifest digest (`sha256:…`) the chart must have.
    #[serde(default)]
    pub digest: Option<String>,
    /// The release name, default `metadata.name`.
    #[serde(default)]
    pub release: Option<String>,
    /// Helm values.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub values: Value,
}

/// `spec.chart` of a Kind: a Helm chart that every instance of the kind renders, as one
/// release named after the instance, in the instance's namespace. Its values are
/// templates over the instance, as the kind's resource templates are: a string may hold
/// `${expression}` in CEL (`replicaCount: ${spec.replicas}`), over the same variables.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindChart {
    /// Where the chart is: a folder of the platform repo (`path`, from the repo's root,
    /// outside `kinds/` and `teams/`), a chart of an HTTP chart repository (`repository`,
    /// `name`, `version`) or of an OCI registry (`oci`, `version`, optional `digest`).
    pub source: ChartRef,
    /// Helm values, as templates over the instance.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub values: Value,
    /// Per cluster name: values (templates too) merged over `values` on that cluster.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    pub cluster_values: BTreeMap<String, Value>,
}

/// The names kustomize reads a folder's kustomization from.
pub const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The kustomization file of folder `dir` in `files`, if it holds one.
pub fn kustomization_file<V>(files: &BTreeMap<String, V>, dir: &str) -> Option<&'static str> {
    KUSTOMIZATION_FILES
        .iter()
        .find(|name| files.contains_key(&join(dir, name)))
        .copied()
}

/// `dir/name`, or `name` for the repo root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// What a Kustomize folder reads, found by following its kustomization's references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KustomizeInputs {
    /// Folders whose every file kustomize may read (each holding a kustomization, or a
    /// folder a reference names), the folder itself first.
    pub folders: BTreeSet<String>,
    /// Single files named by a reference.
    pub files: BTreeSet<String>,
}

impl KustomizeInputs {
    /// Every file of the repo the build may read, sorted.
    pub fn read<'a, V>(&self, repo: &'a BTreeMap<String, V>) -> Vec<&'a String> {
        repo.keys()
            .filter(|path| {
                self.files.contains(path.as_str())
                    || self
                        .folders
                        .iter()
                        .any(|f| f.is_empty() || path.starts_with(&format!("{f}/")))
            })
            .collect()
    }
}

/// A reference a kustomization makes that pontoon refuses, located at its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct KustomizeRefError {
    /// The kustomization file that names it.
    pub file: String,
    pub message: String,
}

/// The fields of a kustomization that name files or folders.
const PATH_LISTS: &[&str] = &[
    "resources",
    "bases",
    "components",
    "crds",
    "patchesStrategicMerge",
    "transformers",
    "generators",
    "validators",
    "configurations",
];

/// Follows the references of the kustomization in folder `dir` (and of every folder it
/// names): what the build reads, or the first reference that leaves folder `boundary`
/// (`""`: the repo; a team's folder for a team) or names something the repo does not
/// hold. Remote bases are refused here: a build never needs the network.
pub fn kustomize_inputs<V: AsRef<[u8]>>(
    repo: &BTreeMap<String, V>,
    dir: &str,
    boundary: &str,
) -> Result<KustomizeInputs, KustomizeRefError> {
    let mut inputs = KustomizeInputs::default();
    let mut queue = vec![dir.to_owned()];
    while let Some(folder) = queue.pop() {
        if !inputs.folders.insert(folder.clone()) {
            continue;
        }
        let Some(name) = kustomization_file(repo, &folder) else {
            continue;
        };
        let file = join(&folder, name);
        let fail = |message: String| KustomizeRefError {
            file: file.clone(),
            message,
        };
        let text = repo.get(&file).map(AsRef::as_ref).unwrap_or_default();
        let value: Value = serde_saphyr::from_slice(text)
            .map_err(|e| fail(format!("does not read as YAML: {e}")))?;
        if value.get("helmCharts").is_some() || value.get("helmGlobals").is_some() {
            return Err(fail(
                "helmCharts in a kustomization are not supported: write the chart as a chart package".into(),
            ));
        }
        for reference in references(&value) {
            let target = resolve(&folder, &reference).ok_or_else(|| {
                fail(if looks_remote(&reference) {
                    format!("{reference} is a remote base: pontoon builds from the repo alone, without network")
                } else {
                    format!("{reference} leaves the repository")
                })
            })?;
            if !boundary.is_empty()
                && target != boundary
                && !target.starts_with(&format!("{boundary}/"))
            {
                return Err(fail(format!("{reference} leaves {boundary}")));
            }
            if kustomization_file(repo, &target).is_some()
                || repo.keys().any(|p| p.starts_with(&format!("{target}/")))
            {
                queue.push(target);
            } else if repo.contains_key(&target) {
                inputs.files.insert(target);
            } else if looks_remote(&reference) {
                return Err(fail(format!(
                    "{reference} is a remote base: pontoon builds from the repo alone, without network"
                )));
            } else {
                return Err(fail(format!("{reference} is not in the repository")));
            }
        }
    }
    Ok(inputs)
}

/// Every path a kustomization names, as written.
fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<String>, v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(s.to_owned());
        }
    };
    for field in PATH_LISTS {
        for item in value
            .get(*field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // An inline patch or transformer is no path.
            if item.as_str().is_some_and(|s| !s.contains('\n')) {
                push(&mut out, item);
            }
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for item in value
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(path) = item.get("path") {
                push(&mut out, path);
            }
        }
    }
    if let Some(path) = value.get("openapi").and_then(|o| o.get("path")) {
        push(&mut out, path);
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for item in value
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for f in item
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // `key=path` names the file after the `=`.
                if let Some(s) = f.as_str() {
                    out.push(s.rsplit_once('=').map_or(s, |(_, p)| p).to_owned());
                }
            }
            for f in item
                .get("envs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                push(&mut out, f);
            }
            if let Some(env) = item.get("env") {
                push(&mut out, env);
            }
        }
    }
    out
}

fn looks_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with("git::")
        || reference.starts_with("git@")
        || reference.starts_with("github.com/")
        || reference.starts_with("gitlab.com/")
        || reference.starts_with("bitbucket.org/")
        || reference.contains("?ref=")
}

/// `reference` relative to folder `dir`, normalised; `None` when it is absolute, remote,
/// or climbs out of the repository.
pub fn resolve(dir: &str, reference: &str) -> Option<String> {
    if reference.starts_with('/') || looks_remote(reference) {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn an_overlay_reads_its_base_component_and_patches() {
        let files = repo(&[
            (
                "teams/a/app/overlays/prod/kustomization.yaml",
                "resources: [../../base]\ncomponents: [../../components/probe]\npatches:\n- path: replicas.yaml\n",
            ),
            ("teams/a/app/overlays/prod/replicas.yaml", "x: 1"),
            (
                "teams/a/app/base/kustomization.yaml",
                "resources: [deploy.yaml]",
            ),
            ("teams/a/app/base/deploy.yaml", "x: 1"),
            (
                "teams/a/app/components/probe/kustomization.yaml",
                "kind: Component",
            ),
            ("teams/a/other.yaml", "x: 1"),
        ]);
        let inputs =
            kustomize_inputs(&files, "teams/a/app/overlays/prod", "teams/a").expect("local");
        let read: Vec<&str> = inputs
            .read(&files)
            .into_iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            read,
            [
                "teams/a/app/base/deploy.yaml",
                "teams/a/app/base/kustomization.yaml",
                "teams/a/app/components/probe/kustomization.yaml",
                "teams/a/app/overlays/prod/kustomization.yaml",
                "teams/a/app/overlays/prod/replicas.yaml",
            ]
        );
    }

    #[test]
    fn remote_bases_and_escapes_are_refused_naming_the_file() {
        for (reference, says) in [
            ("https://example.org/base", "remote base"),
            ("github.com/org/repo//base?ref=v1", "remote base"),
            ("git::https://example.org/repo.git", "remote base"),
            ("../../../../etc", "leaves the repository"),
            ("../../b/app", "leaves teams/a"),
            ("missing", "is not in the repository"),
        ] {
            let files = repo(&[(
                "teams/a/app/kustomization.yaml",
                &format!("resources: ['{reference}']"),
            )]);
            let err = kustomize_inputs(&files, "teams/a/app", "teams/a").expect_err(reference);
            assert_eq!(err.file, "teams/a/app/kustomization.yaml");
            assert!(err.message.contains(says), "{reference}: {}", err.message);
        }
    }
}
