//! Packages: Helm charts and Kustomize folders, as the pure side of pontoon sees them.
//!
//! A package is rendered in three steps. `render` lists the [`PackageRequest`]s a revision
//! makes (pure); the `expand` engine runs `helm template` or `kustomize build` for each
//! (I/O, out of process) and gives back [`Expansions`]; `render` then reads each
//! expansion's documents like plain manifests, under the same governance. These types are
//! all the three steps share: plain data, no process, no file system, no clock.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ClusterName, TeamName};

/// Where a package comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum PackageSource {
    /// A folder of the platform repo holding `Chart.yaml` (path relative to the repo root,
    /// `/`-separated, no trailing slash).
    ChartFolder { path: String },
    /// A chart from an HTTP chart repository (its `index.yaml` at `url`), pinned by version.
    ChartRepository {
        url: String,
        chart: String,
        version: String,
    },
    /// A chart in an OCI registry (`oci://host/path/chart`), pinned by version (its tag)
    /// and, optionally, by manifest digest.
    ChartOci {
        reference: String,
        version: String,
        digest: Option<String>,
    },
    /// A folder of the platform repo holding `kustomization.yaml` (path relative to the
    /// repo root, `/`-separated, no trailing slash).
    Kustomize { path: String },
}

impl PackageSource {
    /// Whether `helm template` expands it (every source but [`PackageSource::Kustomize`]).
    pub fn is_chart(&self) -> bool {
        !matches!(self, PackageSource::Kustomize { .. })
    }

    /// Whether it is fetched from outside the platform repo (a chart repository or an OCI
    /// registry) before it can be expanded.
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            PackageSource::ChartRepository { .. } | PackageSource::ChartOci { .. }
        )
    }
}

impl fmt::Display for PackageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageSource::ChartFolder { path } => write!(f, "chart {path}"),
            PackageSource::ChartRepository {
                url,
                chart,
                version,
            } => write!(f, "chart {chart} {version} from {url}"),
            PackageSource::ChartOci {
                reference, version, ..
            } => write!(f, "chart {reference} {version}"),
            PackageSource::Kustomize { path } => write!(f, "kustomization {path}"),
        }
    }
}

/// Who asked for a package: named in diagnostics, and whose governance its output meets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PackageOwner {
    /// A team's folder (a Kustomize folder or a `kind: Chart` document in it).
    Team(TeamName),
    /// A platform component (`components/<name>.yaml`).
    Component(String),
}

impl fmt::Display for PackageOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageOwner::Team(team) => write!(f, "team {team}"),
            PackageOwner::Component(name) => write!(f, "component {name}"),
        }
    }
}

/// One package to expand for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRequest {
    pub source: PackageSource,
    /// Helm's release name (unused by Kustomize).
    pub release: String,
    /// Helm's `--namespace` (unused by Kustomize).
    pub namespace: String,
    /// Helm values, already merged for this cluster (`null` or `{}`: none).
    pub values: serde_json::Value,
    pub cluster: ClusterName,
    pub owner: PackageOwner,
    /// Where the request is written: `teams/a/chart.yaml:3`, or a folder `teams/a/app`.
    pub origin: String,
}

impl PackageRequest {
    /// The request's key in [`Expansions`]: equal for equal requests, whatever the order of
    /// keys in its values. Readable where it can be (cluster, owner, origin), then a digest
    /// of the rest, so a key stays short however large the values.
    pub fn key(&self) -> String {
        use sha2::Digest as _;
        let mut canonical = String::new();
        write_canonical(
            &serde_json::json!({
                "source": serde_json::to_value(&self.source).unwrap_or_default(),
                "release": self.release,
                "namespace": self.namespace,
                "values": self.values,
            }),
            &mut canonical,
        );
        let digest = sha2::Sha256::digest(canonical.as_bytes());
        format!(
            "{}|{}|{}|{}",
            self.cluster,
            self.owner,
            self.origin,
            hex::encode(&digest[..16])
        )
    }
}

/// Writes `value` as JSON with every object's keys sorted, whatever map the JSON library
/// was built with.
pub fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What the cluster a package is expanded for says about itself (from its discovery):
/// Helm's `--kube-version` and `--api-versions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterCapabilities {
    /// `v1.37.0`, as the server's version says.
    pub kube_version: String,
    /// Every `group/version` the cluster serves, and every `group/version/Kind`, sorted.
    pub api_versions: Vec<String>,
}

/// What a package gave: its documents in output order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expansion {
    pub documents: Vec<ExpandedDocument>,
}

/// One document of an expansion: YAML (or JSON) text, and where it came from
/// (`chart podinfo 6.1.0, templates/deployment.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpandedDocument {
    pub origin: String,
    pub text: String,
}

/// Why a package could not be expanded: the message names the chart or folder; the file
/// (a template, `kustomization.yaml`) and line where they are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct PackageError {
    pub message: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl PackageError {
    /// An error with no file or line to point at.
    pub fn new(message: impl Into<String>) -> Self {
        PackageError {
            message: message.into(),
            file: None,
            line: None,
        }
    }
}

/// The expansions of a revision's packages, keyed by [`PackageRequest::key`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expansions(pub BTreeMap<String, Result<Expansion, PackageError>>);

impl Expansions {
    pub fn new() -> Self {
        Expansions::default()
    }

    pub fn insert(&mut self, request: &PackageRequest, result: Result<Expansion, PackageError>) {
        self.0.insert(request.key(), result);
    }

    /// The expansion of `request`; `None` when it was not expanded at all.
    pub fn get(&self, request: &PackageRequest) -> Option<&Result<Expansion, PackageError>> {
        self.0.get(&request.key())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A remote chart fetched into the cache: its `.tgz` and the digest it was verified by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedChart {
    pub archive: PathBuf,
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(values: serde_json::Value) -> PackageRequest {
        PackageRequest {
            source: PackageSource::ChartFolder {
                path: "teams/a/chart".into(),
            },
            release: "web".into(),
            namespace: "a".into(),
            values,
            cluster: ClusterName("prod".into()),
            owner: PackageOwner::Team(TeamName("a".into())),
            origin: "teams/a/chart.yaml:1".into(),
        }
    }

    #[test]
    fn a_key_ignores_key_order_and_tells_values_apart() {
        let mut one = serde_json::Map::new();
        one.insert("b".into(), 1.into());
        one.insert("a".into(), serde_json::json!({"y": 1, "x": [1, 2]}));
        let mut two = serde_json::Map::new();
        two.insert("a".into(), serde_json::json!({"x": [1, 2], "y": 1}));
        two.insert("b".into(), 1.into());
        let key = request(one.into()).key();
        assert_eq!(key, request(two.into()).key());
        assert!(
            key.starts_with("prod|team a|teams/a/chart.yaml:1|"),
            "{key}"
        );
        assert_ne!(key, request(serde_json::json!({"b": 2})).key());
        let mut other = request(serde_json::Value::Null);
        other.cluster = ClusterName("test".into());
        assert_ne!(request(serde_json::Value::Null).key(), other.key());
    }

    #[test]
    fn expansions_are_found_by_request() {
        let mut expansions = Expansions::new();
        let req = request(serde_json::json!({"replicas": 2}));
        expansions.insert(&req, Err(PackageError::new("broken")));
        assert_eq!(
            expansions.get(&req),
            Some(&Err(PackageError::new("broken")))
        );
        assert!(expansions.get(&request(serde_json::Value::Null)).is_none());
    }
}
