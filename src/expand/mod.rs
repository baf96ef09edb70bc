//! Expansion: a revision's packages (Helm charts, Kustomize folders) turned into
//! documents by the pinned `helm` and `kustomize` CLIs, out of process ([`run`]), with a
//! timeout and no network. The one engine that runs other programs; render stays pure
//! and reads what this gives back ([`Expansions`]).
//!
//! Each expansion is cached by the content of every input: the files the package reads
//! (a chart folder, or every folder and file a kustomization names), the chart's digest,
//! the values, release and namespace, the cluster's version and API versions (charts
//! only: a kustomization's output does not depend on the cluster), and the tool's version.
//! A package whose inputs did not change is not run again. The cache holds a bounded
//! number of expansions and forgets the least recently used. Everything here blocks:
//! the daemon calls [`Expander::expand`] off the async runtime.

mod archive;
mod helm;
mod kustomize;
pub mod run;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::Digest as _;

use crate::desired::package::write_canonical;

use crate::desired::{
    ClusterCapabilities, ClusterName, Expansion, Expansions, FetchedChart, PackageError,
    PackageRequest, PackageSource,
};

pub use helm::split_documents;

/// How packages are expanded.
#[derive(Debug, Clone)]
pub struct ExpandConfig {
    /// The `helm` binary (default: `helm` on `PATH`).
    pub helm: PathBuf,
    /// The `kustomize` binary (default: `kustomize` on `PATH`).
    pub kustomize: PathBuf,
    /// How long one `helm template` or `kustomize build` may run before it is stopped.
    pub timeout: Duration,
    /// Expansions the cache keeps (least recently used forgotten first).
    pub cache_entries: usize,
}

impl Default for ExpandConfig {
    fn default() -> Self {
        ExpandConfig {
            helm: PathBuf::from("helm"),
            kustomize: PathBuf::from("kustomize"),
            timeout: Duration::from_secs(60),
            cache_entries: 4096,
        }
    }
}

type CacheKey = [u8; 32];

/// A tool's run: its result, and whether a failure may not recur (not cached).
type Ran = (Result<Expansion, PackageError>, bool);

struct Cached {
    result: Result<Expansion, PackageError>,
    used: u64,
}

/// Runs packages' tools and remembers what they gave.
pub struct Expander {
    config: ExpandConfig,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    clock: AtomicU64,
    runs: AtomicU64,
    versions: Mutex<BTreeMap<PathBuf, String>>,
}

/// The inputs of one package's run, once read from the revision.
struct Inputs<'f> {
    /// Files written to the work folder, by their repo path.
    files: Vec<(&'f str, &'f [u8])>,
    /// What the tool is pointed at, relative to the work folder (or absolute, for a
    /// fetched archive).
    target: String,
    /// A fetched chart's digest.
    digest: Option<String>,
}

impl Expander {
    pub fn new(config: ExpandConfig) -> Self {
        Expander {
            config,
            cache: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            versions: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many times a tool has rendered a package (cache hits not counted).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Expands every request against `files` (a revision's files), each chart with its
    /// cluster's capabilities (none known: helm's defaults). Remote charts need their
    /// fetched archive in `fetched` (by [`PackageRequest::key`]); without it they fail.
    pub fn expand(
        &self,
        files: &BTreeMap<String, Vec<u8>>,
        requests: &[PackageRequest],
        capabilities: &BTreeMap<ClusterName, ClusterCapabilities>,
        fetched: &BTreeMap<String, FetchedChart>,
    ) -> Expansions {
        let none = ClusterCapabilities::default();
        // Tools run side by side, one per core: a first render of many charts is bound
        // by them, a render from the cache by nothing.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(requests.len().max(1));
        let next = AtomicU64::new(0);
        let results = Mutex::new(Expansions::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(request) = requests.get(i) else {
                            break;
                        };
                        let caps = capabilities.get(&request.cluster).unwrap_or(&none);
                        let result =
                            self.expand_one(files, request, caps, fetched.get(&request.key()));
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(request, result);
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// One request's expansion, from the cache when its inputs were expanded before.
    pub fn expand_one(
        &self,
        files: &BTreeMap<String, Vec<u8>>,
        request: &PackageRequest,
        capabilities: &ClusterCapabilities,
        fetched: Option<&FetchedChart>,
    ) -> Result<Expansion, PackageError> {
        let inputs = inputs(files, request, fetched)?;
        let tool = if request.source.is_chart() {
            &self.config.helm
        } else {
            &self.config.kustomize
        };
        let version = self.version(tool)?;
        let key = cache_key(request, &inputs, capabilities, &version);
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(hit) = self.lock_cache().get_mut(&key) {
            hit.used = now;
            return hit.result.clone();
        }
        let (result, transient) = self.run_tool(tool, request, &inputs, capabilities);
        if !transient {
            let mut cache = self.lock_cache();
            let full = cache.len() >= self.config.cache_entries.max(1);
            if let Some(oldest) = full
                .then(|| cache.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| *k))
                .flatten()
            {
                cache.remove(&oldest);
            }
            cache.insert(
                key,
                Cached {
                    result: result.clone(),
                    used: now,
                },
            );
        }
        result
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tool's version, asked once: part of every cache key.
    fn version(&self, tool: &Path) -> Result<String, PackageError> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = versions.get(tool) {
            return Ok(v.clone());
        }
        let work = tempfile::tempdir()
            .map_err(|e| PackageError::new(format!("cannot make a work folder: {e}")))?;
        let out = run::run(
            tool,
            &["version".to_owned()],
            work.path(),
            self.config.timeout,
        )
        .map_err(|e| PackageError::new(e.to_string()))?;
        if !out.success {
            return Err(PackageError::new(format!(
                "{} version failed: {}",
                tool.display(),
                out.stderr.trim()
            )));
        }
        let version = out.stdout.trim().to_owned();
        versions.insert(tool.to_path_buf(), version.clone());
        Ok(version)
    }

    /// Writes the inputs to a fresh work folder and runs the tool there; `true` with a
    /// failure that may not recur (a timeout, a tool that did not start): not cached.
    fn run_tool(
        &self,
        tool: &Path,
        request: &PackageRequest,
        inputs: &Inputs,
        capabilities: &ClusterCapabilities,
    ) -> Ran {
        // A chart's templates, read before helm runs: `lookup` is refused in the
        // chart, its subcharts and any archive (fetched, or packed in `charts/`).
        let templates = if request.source.is_chart() {
            match chart_templates(request, inputs) {
                Ok(t) => t,
                Err(failed) => return failed,
            }
        } else {
            Vec::new()
        };
        let work = match materialise(inputs) {
            Ok(w) => w,
            Err(e) => return (Err(e), true),
        };
        let args = if request.source.is_chart() {
            let values = serde_json::to_vec(&request.values).unwrap_or_default();
            if let Err(e) = std::fs::write(work.path().join("values.json"), values) {
                return (
                    Err(PackageError::new(format!("cannot write values: {e}"))),
                    true,
                );
            }
            helm::args(request, &inputs.target, "values.json", capabilities)
        } else {
            kustomize::args(&inputs.target)
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        // The tools name files by the work folder's path: say them as the repo's.
        let in_work = format!("{}/", work.path().display());
        let ran = run::run(tool, &args, work.path(), self.config.timeout).map(|mut out| {
            out.stderr = out.stderr.replace(&in_work, "");
            out
        });
        match ran {
            Ok(out) if out.success && request.source.is_chart() => (
                helm::documents(&out.stdout).map_err(|e| helm::at_hook_line(e, &templates)),
                false,
            ),
            Ok(out) if out.success => (Ok(kustomize::documents(&out.stdout)), false),
            Ok(out) if request.source.is_chart() => (Err(helm::error(&out.stderr)), false),
            Ok(out) => (Err(kustomize::error(&request.source, &out.stderr)), false),
            Err(e) => (Err(PackageError::new(e.to_string())), true),
        }
    }
}

/// What a request reads from the revision, checked before anything runs: a chart folder
/// holding `Chart.yaml` and no `lookup`; a kustomization naming nothing outside the repo.
fn inputs<'f>(
    files: &'f BTreeMap<String, Vec<u8>>,
    request: &PackageRequest,
    fetched: Option<&FetchedChart>,
) -> Result<Inputs<'f>, PackageError> {
    match &request.source {
        PackageSource::ChartFolder { path } => {
            let prefix = format!("{path}/");
            let chart: Vec<(&str, &[u8])> = files
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, b)| (p.as_str(), b.as_slice()))
                .collect();
            if !chart
                .iter()
                .any(|(p, _)| *p == format!("{prefix}Chart.yaml"))
            {
                return Err(PackageError::new(format!("{path} holds no Chart.yaml")));
            }
            Ok(Inputs {
                files: chart,
                target: path.clone(),
                digest: None,
            })
        }
        PackageSource::Kustomize { path } => {
            let read =
                crate::model::kustomize_inputs(files, path, "").map_err(|e| PackageError {
                    message: e.message,
                    file: Some(e.file),
                    line: None,
                })?;
            Ok(Inputs {
                files: read
                    .read(files)
                    .into_iter()
                    .filter_map(|p| files.get(p).map(|b| (p.as_str(), b.as_slice())))
                    .collect(),
                target: path.clone(),
                digest: None,
            })
        }
        PackageSource::ChartRepository { .. } | PackageSource::ChartOci { .. } => match fetched {
            Some(chart) => Ok(Inputs {
                files: Vec::new(),
                target: chart.archive.display().to_string(),
                digest: Some(chart.digest.clone()),
            }),
            None => Err(PackageError::new(format!(
                "{}: a remote chart is fetched by the daemon, `pontoon plan` and `sync --once` (with the daemon config), not by `render` or `validate`",
                request.source
            ))),
        },
    }
}

/// The templates of the chart `inputs` hold, by the names helm gives them
/// (`web/templates/x.yaml`, `web/charts/db/templates/y.yaml`), subcharts packed as `.tgz`
/// unpacked, checked for `lookup`. A failure, and whether it may not recur (an archive
/// that could not be read from the cache): the one [`Expander::run_tool`] returns.
fn chart_templates(
    request: &PackageRequest,
    inputs: &Inputs,
) -> Result<Vec<(String, Vec<u8>)>, Ran> {
    let unpack = |name: &str, bytes: &[u8]| {
        archive::files(bytes).map_err(|e| {
            (
                Err(PackageError {
                    message: format!("chart archive {e}"),
                    file: Some(name.to_owned()),
                    line: None,
                }),
                false,
            )
        })
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    match &request.source {
        PackageSource::ChartFolder { path } => {
            // helm names a file from the chart's parent folder: `web/templates/x.yaml`.
            let parent = path.rsplit_once('/').map_or(0, |(d, _)| d.len() + 1);
            for (repo_path, bytes) in &inputs.files {
                let name = &repo_path[parent.min(repo_path.len())..];
                if archive::is_subchart_archive(name) {
                    let under = name.rsplit_once('/').map_or("", |(d, _)| d);
                    for (inner, b) in unpack(name, bytes)? {
                        files.push((format!("{under}/{inner}"), b));
                    }
                } else if helm::is_template(name.split_once('/').map_or("", |(_, p)| p)) {
                    files.push((name.to_owned(), bytes.to_vec()));
                }
            }
        }
        _ => {
            let bytes = std::fs::read(&inputs.target).map_err(|e| {
                (
                    Err(PackageError::new(format!(
                        "cannot read the fetched chart {}: {e}",
                        inputs.target
                    ))),
                    true,
                )
            })?;
            files = unpack(&request.source.to_string(), &bytes)?;
        }
    }
    // Within the chart: its own folder's name is no `templates` folder.
    files.retain(|(name, _)| helm::is_template(name.split_once('/').map_or("", |(_, p)| p)));
    let named: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    helm::check_lookup(&named).map_err(|e| (Err(e), false))?;
    Ok(files)
}

/// The digest of everything a run's output depends on.
fn cache_key(
    request: &PackageRequest,
    inputs: &Inputs,
    capabilities: &ClusterCapabilities,
    version: &str,
) -> CacheKey {
    let mut h = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(version.as_bytes());
    field(
        serde_json::to_string(&request.source)
            .unwrap_or_default()
            .as_bytes(),
    );
    field(inputs.target.as_bytes());
    for (path, bytes) in &inputs.files {
        field(path.as_bytes());
        field(bytes);
    }
    field(inputs.digest.as_deref().unwrap_or("").as_bytes());
    if request.source.is_chart() {
        let mut values = String::new();
        write_canonical(&request.values, &mut values);
        field(values.as_bytes());
        field(request.release.as_bytes());
        field(request.namespace.as_bytes());
        field(capabilities.kube_version.as_bytes());
        for api in &capabilities.api_versions {
            field(api.as_bytes());
        }
    }
    h.finalize().into()
}

/// A fresh work folder holding the inputs at their repo paths.
fn materialise(inputs: &Inputs) -> Result<tempfile::TempDir, PackageError> {
    let fail = |e: std::io::Error| PackageError::new(format!("cannot write the work folder: {e}"));
    let work = tempfile::Builder::new()
        .prefix("pontoon-expand-")
        .tempdir()
        .map_err(fail)?;
    std::fs::create_dir_all(work.path().join("home")).map_err(fail)?;
    for (path, bytes) in &inputs.files {
        let target = work.path().join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::write(target, bytes).map_err(fail)?;
    }
    Ok(work)
}

#[cfg(test)]
mod tests;
