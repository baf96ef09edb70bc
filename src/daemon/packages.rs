//! The wiring of packages: the requests render lists for a revision, each cluster's
//! capabilities (its version and API versions, from discovery, asked once and kept), the
//! expansion off the async runtime, and the render that reads the expansions. The
//! daemon's renders, `pontoon plan`, `sync --once`, pull-request plans, `render` and
//! `validate` all go through here, so all of them cover packages.
//!
//! Remote charts (HTTP chart repositories, OCI registries) are fetched by the source side
//! (`source::charts`) before expansion, each pin once and kept by digest; a chart that
//! cannot be fetched is the error of its own packages only. `render` and `validate`,
//! which read a folder and no config, fetch nothing: a remote chart fails there, saying so.
//!
//! A render holds the archives it fetched until its expansion is done; the daemon's
//! poll loop then says which render it published ([`Packages::published`]), and the
//! chart cache is cleaned up keeping that render's archives and the previous one's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ChartsConfig, PackagesConfig};
use crate::desired::{
    ClusterCapabilities, ClusterName, Expansions, FetchedChart, PackageError, PackageRequest,
};
use crate::expand::{ExpandConfig, Expander};
use crate::source::Snapshot;
use crate::source::charts::{ChartFetcher, Hold, Swept, digest_hex};
use crate::sync::Syncer;

/// How long a cluster's capabilities are kept before discovery is asked again.
const CAPABILITIES_TTL: Duration = Duration::from_secs(600);
/// How long discovery may take before a cluster's packages render without it.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Renders whose archives are remembered until the daemon says which it published
/// (pull-request plans render between the daemon's own renders).
const RECENT_RENDERS: usize = 16;

impl Default for Packages {
    /// The default tools, from `PATH`, and no cluster to ask.
    fn default() -> Self {
        Packages::offline(&PackagesConfig::default())
    }
}

/// Remote charts fetched for one expansion: by request key, and the requests whose chart
/// could not be fetched, with why.
type Fetched = (
    BTreeMap<String, FetchedChart>,
    Vec<(PackageRequest, PackageError)>,
    Option<Hold>,
);

/// The expander and what each cluster says about itself.
pub struct Packages {
    expander: Arc<Expander>,
    syncers: BTreeMap<ClusterName, Arc<Syncer>>,
    /// `None` where no config says how to reach chart repositories, or it is unusable.
    charts: Option<Arc<ChartFetcher>>,
    capabilities: Mutex<BTreeMap<ClusterName, (Instant, ClusterCapabilities)>>,
    /// The archives (sha256 hex) each recent render's revision used, newest last.
    recent: Mutex<VecDeque<(String, BTreeSet<String>)>>,
}

impl Packages {
    /// Packages expanded with the config's tools, each chart with its cluster's
    /// capabilities as one of `syncers` discovers them, remote charts fetched as `charts`
    /// says.
    pub fn new(
        config: &PackagesConfig,
        charts: &ChartsConfig,
        syncers: &BTreeMap<ClusterName, Arc<Syncer>>,
    ) -> Self {
        let mut packages = Packages::offline(config);
        packages.syncers = syncers.clone();
        packages.charts = ChartFetcher::new(charts)
            .map_err(|e| tracing::error!(error = %e, "remote charts cannot be fetched"))
            .ok()
            .map(Arc::new);
        packages
    }

    /// Packages expanded with no cluster to ask and no remote chart fetched (`render`,
    /// `validate`): helm's defaults stand for the cluster's version and API versions.
    pub fn offline(config: &PackagesConfig) -> Self {
        Packages {
            expander: Arc::new(Expander::new(ExpandConfig {
                helm: config.helm.clone(),
                kustomize: config.kustomize.clone(),
                timeout: config.timeout,
                cache_entries: config.cache_entries,
            })),
            syncers: BTreeMap::new(),
            charts: None,
            capabilities: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Registers the chart fetcher's metrics (none without a fetcher).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        match &self.charts {
            Some(charts) => charts.metrics().register(registry),
            None => Ok(()),
        }
    }

    /// The daemon published its render of `revision`: that render's archives and the
    /// previous published one's are kept, and the chart cache is cleaned up.
    pub async fn published(&self, revision: &str) -> Swept {
        let Some(charts) = &self.charts else {
            return Swept::default();
        };
        let archives = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent
                .iter()
                .rev()
                .find(|(r, _)| r == revision)
                .map(|(_, a)| a.clone())
                .unwrap_or_default()
        };
        charts.publish(archives);
        charts.sweep().await
    }

    fn remember_render(&self, revision: &str, fetched: &BTreeMap<String, FetchedChart>) {
        let archives = fetched.values().map(|f| digest_hex(f).to_owned()).collect();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(r, _)| r != revision);
        recent.push_back((revision.to_owned(), archives));
        while recent.len() > RECENT_RENDERS {
            recent.pop_front();
        }
    }

    /// How many times a tool has run (cache hits not counted).
    pub fn runs(&self) -> u64 {
        self.expander.runs()
    }

    /// Expands what `snapshot` asks for, off the async runtime.
    pub async fn expand(&self, snapshot: &Arc<Snapshot>) -> Expansions {
        let requests = {
            let snapshot = snapshot.clone();
            match tokio::task::spawn_blocking(move || {
                crate::render::package_requests(&snapshot.files)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "listing packages failed");
                    return Expansions::new();
                }
            }
        };
        if requests.is_empty() {
            return Expansions::new();
        }
        let capabilities = self.capabilities(&requests).await;
        // Held until the expansion read them.
        let (fetched, failed, _hold) = self.fetch(&requests).await;
        self.remember_render(&snapshot.revision, &fetched);
        let expander = self.expander.clone();
        let snapshot = snapshot.clone();
        let mut expansions = tokio::task::spawn_blocking(move || {
            expander.expand(&snapshot.files, &requests, &capabilities, &fetched)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "expanding packages failed");
            Expansions::new()
        });
        for (request, error) in failed {
            expansions.insert(&request, Err(error));
        }
        expansions
    }

    /// The remote charts `requests` name, each distinct pin fetched once.
    async fn fetch(&self, requests: &[PackageRequest]) -> Fetched {
        let (mut fetched, mut failed) = (BTreeMap::new(), Vec::new());
        let Some(charts) = &self.charts else {
            return (fetched, failed, None);
        };
        let hold = charts.hold();
        let by_source = charts
            .fetch_all_held(requests.iter().map(|r| &r.source), &hold)
            .await;
        for request in requests {
            match by_source.get(&request.source) {
                Some(Ok(chart)) => {
                    fetched.insert(request.key(), chart.clone());
                }
                Some(Err(e)) => failed.push((request.clone(), PackageError::from(e))),
                None => {}
            }
        }
        (fetched, failed, Some(hold))
    }

    /// Expands what `files` asks for on this thread, with no cluster's capabilities: for
    /// the commands that read a folder and nothing else.
    pub fn expand_blocking(&self, files: &BTreeMap<String, Vec<u8>>) -> Expansions {
        let requests = crate::render::package_requests(files);
        self.expander
            .expand(files, &requests, &BTreeMap::new(), &BTreeMap::new())
    }

    /// The capabilities of every cluster a request targets: kept ones while fresh, else
    /// discovery's answer; a cluster that does not answer renders with the ones it gave
    /// last (or helm's defaults), and says so.
    async fn capabilities(
        &self,
        requests: &[PackageRequest],
    ) -> BTreeMap<ClusterName, ClusterCapabilities> {
        let mut wanted: Vec<&ClusterName> = requests
            .iter()
            .filter(|r| r.source.is_chart())
            .map(|r| &r.cluster)
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut out = BTreeMap::new();
        for cluster in wanted {
            let kept = self
                .lock()
                .get(cluster)
                .filter(|(at, _)| at.elapsed() < CAPABILITIES_TTL)
                .map(|(_, c)| c.clone());
            if let Some(c) = kept {
                out.insert(cluster.clone(), c);
                continue;
            }
            let Some(syncer) = self.syncers.get(cluster) else {
                continue;
            };
            match tokio::time::timeout(DISCOVERY_TIMEOUT, discover(syncer.client())).await {
                Ok(Ok(c)) => {
                    self.lock()
                        .insert(cluster.clone(), (Instant::now(), c.clone()));
                    out.insert(cluster.clone(), c);
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => crate::describe(&e),
                        _ => format!("no answer within {DISCOVERY_TIMEOUT:?}"),
                    };
                    tracing::warn!(%cluster, error = %why, "cannot read the cluster's version and API versions for its charts");
                    if let Some((_, c)) = self.lock().get(cluster) {
                        out.insert(cluster.clone(), c.clone());
                    }
                }
            }
        }
        out
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<ClusterName, (Instant, ClusterCapabilities)>> {
        self.capabilities.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cluster's version and every group/version it serves.
async fn discover(client: &kube::Client) -> Result<ClusterCapabilities, kube::Error> {
    let version = client.apiserver_version().await?;
    let core = client.list_core_api_versions().await?;
    let groups = client.list_api_groups().await?;
    let mut api_versions: Vec<String> = core.versions;
    for group in groups.groups {
        api_versions.extend(group.versions.into_iter().map(|v| v.group_version));
    }
    api_versions.sort();
    api_versions.dedup();
    Ok(ClusterCapabilities {
        kube_version: version.git_version,
        api_versions,
    })
}
