//! Remote charts: fetched from HTTP chart repositories (`index` submodule) and OCI
//! registries (`oci`), verified by digest, and kept in a cache so that a render never
//! needs the network.
//!
//! The cache, under `<cacheDir>/charts/`:
//! * `sha256-<hex>.tgz` — an archive, named by the digest it was verified against;
//! * `pins/<hash>.json` — a pin (repository, chart, version; or reference, version,
//!   digest) and the digest of the archive it gave;
//! * `index/<hash>.yaml` and `.etag` — a repository's last index and its ETag.
//!
//! Invariants: a pin seen before is served from the cache with no request at all (a pin
//! is a version, and the archive it gave was verified); an archive is stored only after
//! its digest was checked, and a pin only after its archive, each written whole (temp
//! file, then rename), so a failed fetch leaves the cache as it was. A failure is the
//! error of that one chart. No file work runs on the async runtime.
//!
//! What is no longer used is cleaned up (`cache`): an archive stays while a render
//! holds it, while the daemon's current or previous revision uses it, and for
//! `charts.keepUnused` after its last use. Fetches are counted (`metrics`).

mod cache;
mod http;
mod index;
mod metrics;
mod oci;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use cache::{Hold, Swept};
pub use metrics::FetchMetrics;

use sha2::Digest as _;

use crate::config::ChartsConfig;
use crate::desired::{FetchedChart, PackageError, PackageSource};

/// Charts fetched at once by [`ChartFetcher::fetch_all`].
const FETCH_CONCURRENCY: usize = 4;

impl From<&ChartError> for PackageError {
    /// The package's error: it names the chart and the reason; no file of the platform
    /// repo is to blame.
    fn from(e: &ChartError) -> PackageError {
        PackageError::new(e.to_string())
    }
}

/// Why one chart could not be fetched: the chart, then the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{chart}: {reason}")]
pub struct ChartError {
    /// `chart podinfo 6.1.0 from https://…` or `chart oci://…/podinfo 6.1.0`.
    pub chart: String,
    pub reason: FetchError,
}

/// What went wrong fetching a chart. Never holds a secret or a URL's credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("not a remote chart (a folder of the platform repo is read from the revision)")]
    NotRemote,
    #[error("{0}")]
    Refused(String),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{0}")]
    Index(String),
    #[error("{0}")]
    NotHelm(String),
    #[error("digest mismatch: {what} is {actual}, but {expected} was expected")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Fetches remote charts into the cache, each pin once.
pub struct ChartFetcher {
    http: http::Http,
    dir: PathBuf,
    /// Pins served in this process, with their verified archive.
    known: Mutex<HashMap<String, FetchedChart>>,
    /// One fetch per pin at a time: a second waits and then finds the first's archive.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Which archives are in use, for the cleanup.
    uses: cache::SharedUses,
    keep_unused: Duration,
    metrics: FetchMetrics,
}

/// A remote chart and the pin that names it.
enum Remote<'a> {
    Repository {
        url: &'a str,
        chart: &'a str,
        version: &'a str,
    },
    Oci {
        reference: &'a str,
        version: &'a str,
        digest: Option<&'a str>,
    },
}

impl Remote<'_> {
    /// Equal for the same pin, different for any change to it.
    fn pin(&self) -> String {
        match self {
            Remote::Repository {
                url,
                chart,
                version,
            } => format!("repository {} {chart} {version}", url.trim_end_matches('/')),
            Remote::Oci {
                reference,
                version,
                digest,
            } => format!("oci {reference} {version} {}", digest.unwrap_or("-")),
        }
    }

    /// The kind of source, as the metrics label it.
    fn kind(&self) -> &'static str {
        match self {
            Remote::Repository { .. } => metrics::SOURCES[0],
            Remote::Oci { .. } => metrics::SOURCES[1],
        }
    }
}

/// What a fetch downloaded: the archive, and its digest, already verified.
struct Downloaded {
    bytes: Vec<u8>,
    sha256_hex: String,
}

impl ChartFetcher {
    pub fn new(config: &ChartsConfig) -> Result<ChartFetcher, FetchError> {
        Ok(ChartFetcher {
            http: http::Http::new(config)?,
            dir: config.cache_dir.join("charts"),
            known: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            uses: Arc::default(),
            keep_unused: config.keep_unused,
            metrics: FetchMetrics::new().map_err(|e| FetchError::Metrics(e.to_string()))?,
        })
    }

    /// The fetcher's metrics, to register where they are served.
    pub fn metrics(&self) -> &FetchMetrics {
        &self.metrics
    }

    /// A hold for one render's archives: what is fetched with it stays in the cache
    /// while it lives.
    pub fn hold(&self) -> Hold {
        Hold::new(&self.uses)
    }

    /// The chart `source` pins, from the cache when this pin was fetched before (no
    /// request), else fetched, verified and stored. Nothing holds it afterwards: a
    /// render fetches with [`ChartFetcher::fetch_held`].
    pub async fn fetch(&self, source: &PackageSource) -> Result<FetchedChart, ChartError> {
        self.fetch_held(source, &self.hold()).await
    }

    /// [`ChartFetcher::fetch`], its archive held by `hold` from before it is looked for:
    /// a cleanup meanwhile cannot remove it.
    pub async fn fetch_held(
        &self,
        source: &PackageSource,
        hold: &Hold,
    ) -> Result<FetchedChart, ChartError> {
        let fail = |reason| ChartError {
            chart: source.to_string(),
            reason,
        };
        let remote = match source {
            PackageSource::ChartRepository {
                url,
                chart,
                version,
            } => Remote::Repository {
                url,
                chart,
                version,
            },
            PackageSource::ChartOci {
                reference,
                version,
                digest,
            } => Remote::Oci {
                reference,
                version,
                digest: digest.as_deref(),
            },
            PackageSource::ChartFolder { .. } | PackageSource::Kustomize { .. } => {
                return Err(fail(FetchError::NotRemote));
            }
        };
        let pin = remote.pin();
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            fetching.entry(pin.clone()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let kind = remote.kind();
        if let Some(found) = self.cached(&pin).await {
            hold.add(digest_hex(&found));
            // Held now; a cleanup before it may have taken the file.
            if tokio::fs::try_exists(&found.archive).await.unwrap_or(false) {
                self.count(kind, "cached");
                return Ok(found);
            }
        }
        let started = Instant::now();
        let downloaded = match remote {
            Remote::Repository {
                url,
                chart,
                version,
            } => index::fetch(&self.http, &self.dir, url, chart, version).await,
            Remote::Oci {
                reference,
                version,
                digest,
            } => oci::fetch(&self.http, reference, version, digest).await,
        };
        let stored = match downloaded {
            Ok(d) => {
                hold.add(&d.sha256_hex);
                let size = d.bytes.len();
                self.store(&pin, d).await.map(|f| (f, size))
            }
            Err(e) => Err(e),
        };
        self.metrics
            .duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        let (fetched, size) = stored.map_err(|e| {
            self.count(kind, "failed");
            fail(e)
        })?;
        self.count(kind, "fetched");
        self.metrics.cache_bytes.add(size as i64);
        tracing::info!(chart = %source, digest = %fetched.digest, "fetched a remote chart");
        self.remember(&pin, &fetched);
        Ok(fetched)
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics
            .fetches
            .with_label_values(&[kind, result])
            .inc();
    }

    /// The archives of the daemon's newest published render (by sha256 hex): they and
    /// the previous render's stay in the cache whatever their age.
    pub fn publish(&self, archives: BTreeSet<String>) {
        cache::publish(&self.uses, archives);
    }

    /// Removes what no render holds, the daemon's current and previous renders do not
    /// use, and nothing used for `charts.keepUnused`; off the async runtime.
    pub async fn sweep(&self) -> Swept {
        let (dir, uses, keep) = (self.dir.clone(), self.uses.clone(), self.keep_unused);
        let swept = tokio::task::spawn_blocking(move || {
            cache::sweep(&dir, &uses, keep, std::time::SystemTime::now())
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "chart cache cleanup failed");
            Swept::default()
        });
        if !swept.removed.is_empty() {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.retain(|_, f| !swept.removed.iter().any(|r| r == digest_hex(f)));
            tracing::info!(
                removed = swept.removed.len(),
                kept_bytes = swept.kept_bytes,
                "removed chart archives no render has used for charts.keepUnused"
            );
        }
        self.metrics.removed.inc_by(swept.removed.len() as u64);
        self.metrics.cache_bytes.set(swept.kept_bytes as i64);
        swept
    }

    /// Every remote chart among `sources`, each distinct pin fetched once, a few at a
    /// time; folders of the platform repo are left out. One chart's failure is its own
    /// entry and stops no other.
    pub async fn fetch_all<'a>(
        &self,
        sources: impl IntoIterator<Item = &'a PackageSource>,
    ) -> BTreeMap<PackageSource, Result<FetchedChart, ChartError>> {
        self.fetch_all_held(sources, &self.hold()).await
    }

    /// [`ChartFetcher::fetch_all`], every archive held by `hold`.
    pub async fn fetch_all_held<'a>(
        &self,
        sources: impl IntoIterator<Item = &'a PackageSource>,
        hold: &Hold,
    ) -> BTreeMap<PackageSource, Result<FetchedChart, ChartError>> {
        use futures::StreamExt as _;
        // Owned sources: a future borrowing each one would not be `Send` for every
        // lifetime, and the daemon spawns what awaits this.
        let distinct: std::collections::BTreeSet<PackageSource> = sources
            .into_iter()
            .filter(|s| s.is_remote())
            .cloned()
            .collect();
        futures::stream::iter(distinct)
            .map(|source| async move {
                let fetched = self.fetch_held(&source, hold).await;
                (source, fetched)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await
    }

    fn remember(&self, pin: &str, fetched: &FetchedChart) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(pin.to_owned(), fetched.clone());
    }

    /// The archive a pin gave before: known in this process, or recorded on disk with an
    /// archive that still has its digest (anything else is fetched again).
    async fn cached(&self, pin: &str) -> Option<FetchedChart> {
        let known = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.get(pin).cloned()
        };
        if let Some(found) = known
            && tokio::fs::try_exists(&found.archive).await.unwrap_or(false)
        {
            return Some(found);
        }
        let (dir, pin_owned) = (self.dir.clone(), pin.to_owned());
        let found = tokio::task::spawn_blocking(move || read_pin(&dir, &pin_owned))
            .await
            .ok()
            .flatten()?;
        self.remember(pin, &found);
        Some(found)
    }

    /// Writes the archive, then the pin, each whole.
    async fn store(&self, pin: &str, d: Downloaded) -> Result<FetchedChart, FetchError> {
        let (dir, pin) = (self.dir.clone(), pin.to_owned());
        tokio::task::spawn_blocking(move || {
            let archive = archive_path(&dir, &d.sha256_hex);
            write_whole(&archive, &d.bytes)?;
            let fetched = FetchedChart {
                archive,
                digest: format!("sha256:{}", d.sha256_hex),
            };
            let record = serde_json::json!({"pin": pin, "digest": fetched.digest});
            write_whole(&pin_path(&dir, &pin), record.to_string().as_bytes())?;
            Ok(fetched)
        })
        .await
        .map_err(|e| FetchError::Cache {
            path: self.dir.clone(),
            message: format!("store task failed: {e}"),
        })?
    }
}

/// The sha256 hex of a fetched chart's digest (`sha256:<hex>`).
pub fn digest_hex(chart: &FetchedChart) -> &str {
    chart
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&chart.digest)
}

fn archive_path(dir: &Path, sha256_hex: &str) -> PathBuf {
    dir.join(format!("sha256-{sha256_hex}.tgz"))
}

/// A short stable file name for a key (a pin or a URL).
fn hashed_name(key: &str) -> String {
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])
}

fn pin_path(dir: &Path, pin: &str) -> PathBuf {
    dir.join("pins").join(format!("{}.json", hashed_name(pin)))
}

/// The archive a pin recorded, if its file is there and still has its digest.
fn read_pin(dir: &Path, pin: &str) -> Option<FetchedChart> {
    let text = std::fs::read(pin_path(dir, pin)).ok()?;
    let record: serde_json::Value = serde_json::from_slice(&text).ok()?;
    if record.get("pin")?.as_str()? != pin {
        return None;
    }
    let hex = record.get("digest")?.as_str()?.strip_prefix("sha256:")?;
    let archive = archive_path(dir, hex);
    let bytes = std::fs::read(&archive).ok()?;
    (sha256_hex(&bytes) == hex).then(|| FetchedChart {
        archive,
        digest: format!("sha256:{hex}"),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes a file whole: a temp file beside it, then a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let cache = |e: std::io::Error| FetchError::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(cache)?;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(cache)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cache(e)
    })
}

/// Checks downloaded bytes against the digest they were promised (`sha256:<hex>` or bare
/// hex, as chart repository indexes write it).
fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<String, FetchError> {
    let want = expected.strip_prefix("sha256:").unwrap_or(expected);
    if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FetchError::Refused(format!(
            "{what}: {expected:?} is not a sha256 digest (the only algorithm pontoon verifies)"
        )));
    }
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(want) {
        Ok(actual)
    } else {
        Err(FetchError::Digest {
            what: what.to_owned(),
            expected: format!("sha256:{}", want.to_ascii_lowercase()),
            actual: format!("sha256:{actual}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_changes_with_any_of_its_parts() {
        let a = Remote::Oci {
            reference: "oci://r.internal/c/app",
            version: "1.0.0",
            digest: None,
        };
        let b = Remote::Oci {
            reference: "oci://r.internal/c/app",
            version: "1.0.0",
            digest: Some("sha256:00"),
        };
        let c = Remote::Repository {
            url: "https://r.internal/charts/",
            chart: "app",
            version: "1.0.0",
        };
        let d = Remote::Repository {
            url: "https://r.internal/charts",
            chart: "app",
            version: "1.0.1",
        };
        assert_ne!(a.pin(), b.pin());
        assert_ne!(c.pin(), d.pin());
        assert_eq!(
            c.pin(),
            "repository https://r.internal/charts app 1.0.0",
            "a trailing slash is the same repository"
        );
    }

    #[test]
    fn verify_names_both_digests_and_refuses_other_algorithms() {
        let ok = verify("x", b"abc", &sha256_hex(b"abc")).expect("same bytes");
        assert_eq!(ok, sha256_hex(b"abc"));
        let e = verify(
            "chart archive",
            b"abd",
            &format!("sha256:{}", sha256_hex(b"abc")),
        )
        .expect_err("tampered");
        assert_eq!(
            e.to_string(),
            format!(
                "digest mismatch: chart archive is sha256:{}, but sha256:{} was expected",
                sha256_hex(b"abd"),
                sha256_hex(b"abc")
            )
        );
        let e = verify("layer", b"abc", "sha512:00").expect_err("other algorithm");
        assert!(e.to_string().contains("not a sha256 digest"), "{e}");
    }

    #[test]
    fn a_recorded_pin_is_served_only_while_its_archive_keeps_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = b"archive".to_vec();
        let hex = sha256_hex(&bytes);
        write_whole(&archive_path(dir.path(), &hex), &bytes).expect("archive");
        let record = serde_json::json!({"pin": "p", "digest": format!("sha256:{hex}")});
        write_whole(&pin_path(dir.path(), "p"), record.to_string().as_bytes()).expect("pin");
        let found = read_pin(dir.path(), "p").expect("cached");
        assert_eq!(found.digest, format!("sha256:{hex}"));
        assert!(read_pin(dir.path(), "q").is_none(), "another pin");
        std::fs::write(archive_path(dir.path(), &hex), b"changed").expect("tamper");
        assert!(
            read_pin(dir.path(), "p").is_none(),
            "a changed archive is no hit"
        );
    }
}
