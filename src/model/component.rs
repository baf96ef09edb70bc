//! `components/<name>.yaml`: what the platform itself runs on its clusters (the operators
//! its kinds stand on), from plain manifests, a Kustomize folder or a Helm chart, with
//! per-cluster overrides. Parsed here only; `render::components` turns them into the
//! `platform` unit of each cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ClusterSelector, Metadata};
use crate::desired::PackageSource;

/// `components/<name>.yaml`, `metadata.name` = the file's name.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Component {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ComponentSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentSpec {
    /// The clusters it runs on, by name or labels (as a team selects its clusters).
    pub clusters: ClusterSelector,
    /// Where its objects come from: exactly one of `manifests`, `kustomize`, `chart`.
    pub source: ComponentSource,
    /// Helm's `--namespace` for a chart (where its namespaced objects go when a template
    /// names none).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Helm values of a chart.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub values: Value,
    /// Per cluster name: values merged over `values`, and patches of the objects there.
    #[serde(default)]
    pub overrides: BTreeMap<String, ComponentOverride>,
}

/// Exactly one of its fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentSource {
    /// A folder of the platform repo (`components/cloudnative-pg`) whose `*.yaml`,
    /// `*.yml` and `*.json` files (subfolders included) are applied as written.
    #[serde(default)]
    pub manifests: Option<FolderRef>,
    /// A folder of the platform repo holding `kustomization.yaml`, built by `kustomize`.
    #[serde(default)]
    pub kustomize: Option<FolderRef>,
    /// A Helm chart, rendered by `helm template`.
    #[serde(default)]
    pub chart: Option<ChartRef>,
}

/// A folder of the platform repo, relative to its root.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderRef {
    pub path: String,
}

/// A chart: a folder of the repo (`path`), or a chart of an HTTP chart repository
/// (`repository`, `name`, `version`), or of an OCI registry (`oci`: `oci://host/path/chart`,
/// `version`, optional `digest`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartRef {
    #[serde(default)]
    pub path: Option<String>,
    /// The chart repository's URL (where its `index.yaml` is).
    #[serde(default)]
    pub repository: Option<String>,
    /// The chart's name in the repository.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub oci: Option<String>,
    /// The pinned version (required for a repository or OCI chart).
    #[serde(default)]
    pub version: Option<String>,
    /// The OCI manifest digest the version must have (`sha256:…`).
    #[serde(default)]
    pub digest: Option<String>,
}

impl ChartRef {
    /// The package source it names: `None` unless exactly one of `path`, `repository`
    /// and `oci` is given (a missing name or version reads as empty: checked where the
    /// reference is read).
    pub fn source(&self) -> Option<PackageSource> {
        let version = || self.version.clone().unwrap_or_default();
        Some(match (&self.path, &self.repository, &self.oci) {
            (Some(path), None, None) => PackageSource::ChartFolder {
                path: path.trim_end_matches('/').to_owned(),
            },
            (None, Some(url), None) => PackageSource::ChartRepository {
                url: url.clone(),
                chart: self.name.clone().unwrap_or_default(),
                version: version(),
            },
            (None, None, Some(reference)) => PackageSource::ChartOci {
                reference: reference.clone(),
                version: version(),
                digest: self.digest.clone(),
            },
            _ => return None,
        })
    }
}

/// What changes on one cluster.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentOverride {
    /// Merged over the component's `values` on that cluster.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub values: Value,
    /// Merged over the objects they target on that cluster, after rendering.
    #[serde(default)]
    pub patches: Vec<ComponentPatch>,
}

/// A merge patch (`patch`, merged as an instance's overrides are) of the objects that
/// `target` names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentPatch {
    pub target: PatchTarget,
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub patch: Value,
}

/// Objects by kind and name (and group, namespace when given).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTarget {
    /// API group; absent matches any.
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    /// Absent matches any.
    #[serde(default)]
    pub namespace: Option<String>,
}
