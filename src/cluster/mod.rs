//! Connections to the clusters the platform repo names: one admin client per cluster
//! (pontoon's own identity), impersonating clients per team, and a discovery cache that
//! maps a group/version/kind to its REST resource and scope.
//!
//! Every request a caller makes through a [`Cluster`] should take a permit:
//! [`Cluster::write_permit`] for applies (dry runs too) and deletes, the per-cluster
//! concurrency limit, so a thousand objects never become a thousand simultaneous writes;
//! [`Cluster::read_permit`] for lists, gets and discovery, which cost the server little
//! and mostly wait on latency, so they may have [`READS_PER_WRITE`] times as many in
//! flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersion;
use kube::discovery::Scope;
use kube::{Api, Client};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ClusterConfig, ClusterConnection};

/// What pontoon's requests to an apiserver say they come from; every request carries it,
/// followed by the process's identity (see [`user_agent`]).
pub const USER_AGENT: &str = concat!("pontoon/", env!("CARGO_PKG_VERSION"));

/// This process's identity, as Leases and audit logs name it: `$POD_NAME`, else
/// `<hostname>-<pid>`.
pub fn process_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "pontoon".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// The user agent of every request: `pontoon/<version> (<identity>)`, so an apiserver's
/// audit log tells the replicas of one daemon apart.
pub fn user_agent() -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("{USER_AGENT} ({})", process_identity()))
        .unwrap_or_else(|_| http::HeaderValue::from_static(USER_AGENT))
}
use crate::desired::{Applier, ClusterName, TeamName};
/// The team identity names live with the other shared names; kept here for callers.
pub use crate::desired::{TEAM_GROUP, team_user};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster {cluster}: cannot load kubeconfig {path}: {source}")]
    Kubeconfig {
        cluster: String,
        path: String,
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("cluster {cluster}: in-cluster configuration unavailable: {source}")]
    InCluster {
        cluster: String,
        source: Box<kube::config::InClusterError>,
    },
    #[error("cluster {cluster}: cannot build client: {source}")]
    Client {
        cluster: String,
        source: Box<kube::Error>,
    },
    /// Discovery answered: the cluster does not serve this apiVersion, or not this kind in
    /// it (a removed API version such as `extensions/v1beta1`, a CRD version dropped).
    #[error("apiVersion {api_version} kind {kind} is not served by cluster {cluster}")]
    NotServed {
        cluster: String,
        api_version: String,
        kind: String,
    },
    /// Discovery could not be asked or failed otherwise (transport, permissions).
    #[error("cluster {cluster}: cannot look up apiVersion {api_version} kind {kind}: {source}")]
    Discovery {
        cluster: String,
        api_version: String,
        kind: String,
        source: Box<kube::Error>,
    },
}

/// A REST resource with its scope, as discovery found it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Reads allowed in flight per write permit.
pub const READS_PER_WRITE: usize = 4;

/// One cluster: clients, discovery cache and the concurrency limits.
pub struct Cluster {
    pub name: ClusterName,
    client: Client,
    resources: RwLock<HashMap<GroupVersionKind, Resolved>>,
    /// Held while asking the server about a kind not cached yet: units that start
    /// together and need the same kinds wait for one answer instead of each asking.
    discovering: tokio::sync::Mutex<()>,
    /// Discovery requests sent so far.
    discovery_requests: std::sync::atomic::AtomicUsize,
    team_clients: Mutex<HashMap<TeamName, Client>>,
    writes: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    /// How long the server keeps one watch open (`timeoutSeconds`): shorter than the
    /// client's read timeout, so a quiet watch is closed by the server and resumed from
    /// its resourceVersion, never cut by the client as a timed-out read.
    watch_timeout: u32,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as the daemon config says. Nothing is requested from the server yet.
    pub async fn connect(cfg: &ClusterConfig, concurrency: usize) -> Result<Cluster, ClusterError> {
        let config = match &cfg.connection {
            ClusterConnection::Kubeconfig { path, context } => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ClusterError::Kubeconfig {
                        cluster: cfg.name.clone(),
                        path: path.display().to_string(),
                        source: Box::new(source),
                    })?;
                let options = KubeConfigOptions {
                    context: context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| ClusterError::Kubeconfig {
                        cluster: cfg.name.clone(),
                        path: path.display().to_string(),
                        source: Box::new(source),
                    })?
            }
            ClusterConnection::InCluster => {
                kube::Config::incluster().map_err(|source| ClusterError::InCluster {
                    cluster: cfg.name.clone(),
                    source: Box::new(source),
                })?
            }
        };
        Cluster::from_config(ClusterName(cfg.name.clone()), config, concurrency)
    }

    pub fn from_config(
        name: ClusterName,
        mut config: kube::Config,
        concurrency: usize,
    ) -> Result<Cluster, ClusterError> {
        // Every call to the API server has a limit; a hung connection must not hang a unit.
        config
            .connect_timeout
            .get_or_insert(std::time::Duration::from_secs(10));
        config
            .read_timeout
            .get_or_insert(std::time::Duration::from_secs(60));
        config
            .write_timeout
            .get_or_insert(std::time::Duration::from_secs(60));
        // The apiserver's audit log and request metrics name pontoon by this.
        if !config
            .headers
            .iter()
            .any(|(h, _)| *h == http::header::USER_AGENT)
        {
            config
                .headers
                .push((http::header::USER_AGENT, user_agent()));
        }
        let watch_timeout = watch_timeout(config.read_timeout);
        let client = Client::try_from(config).map_err(|source| ClusterError::Client {
            cluster: name.0.clone(),
            source: Box::new(source),
        })?;
        Ok(Cluster {
            name,
            client,
            resources: RwLock::new(HashMap::new()),
            discovering: tokio::sync::Mutex::new(()),
            discovery_requests: std::sync::atomic::AtomicUsize::new(0),
            team_clients: Mutex::new(HashMap::new()),
            writes: Arc::new(Semaphore::new(concurrency.max(1))),
            reads: Arc::new(Semaphore::new(concurrency.max(1) * READS_PER_WRITE)),
            watch_timeout,
        })
    }

    /// The `timeoutSeconds` of every watch on this cluster: see [`watch_timeout`].
    pub fn watch_timeout(&self) -> u32 {
        self.watch_timeout
    }

    /// pontoon's own client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client an object is applied with: pontoon's own, or the team's impersonated one.
    pub fn client_for(&self, applier: Applier, team: &TeamName) -> Result<Client, ClusterError> {
        match applier {
            Applier::Platform => Ok(self.client.clone()),
            Applier::Team => self.team_client(team),
        }
    }

    /// A client that acts as the team (the ServiceAccount name [`team_user`] gives), so
    /// the API server's RBAC enforces the team's boundary whatever the renderer allowed.
    /// It names no group: for a service account the API server adds the account's own
    /// groups ([`TEAM_GROUP`] among them), and an `impersonate-group` header would need
    /// a grant on groups as well.
    ///
    /// It sends through pontoon's own client with the impersonation headers added, so every
    /// team shares one pool of connections to the API server: a hundred teams do not open
    /// a hundred sets of TLS connections, nor keep them.
    pub fn team_client(&self, team: &TeamName) -> Result<Client, ClusterError> {
        let mut clients = self.team_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(team) {
            return Ok(c.clone());
        }
        let user =
            http::HeaderValue::from_str(&team_user(team)).map_err(|e| ClusterError::Client {
                cluster: self.name.0.clone(),
                source: Box::new(kube::Error::HttpError(e.into())),
            })?;
        let admin = self.client.clone();
        let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
            let headers = request.headers_mut();
            headers.insert("impersonate-user", user.clone());
            let admin = admin.clone();
            async move { admin.send(request).await }
        });
        let client = Client::new(service, self.client.default_namespace());
        clients.insert(team.clone(), client.clone());
        Ok(client)
    }

    /// A permit of the per-cluster write limit; hold it for the duration of one apply
    /// (or dry run) or delete.
    pub async fn write_permit(&self) -> OwnedSemaphorePermit {
        acquire(&self.writes).await
    }

    /// A permit of the per-cluster read limit; hold it for one list page, get or
    /// discovery request.
    pub async fn read_permit(&self) -> OwnedSemaphorePermit {
        acquire(&self.reads).await
    }

    /// Resource and scope of a kind; asks the server on a cache miss (a CRD applied a
    /// moment ago becomes resolvable without a restart). One request answers for every
    /// kind of the kind's group and version, and misses wait for each other: a hundred
    /// units starting at once ask once per group version, not once each per kind.
    pub async fn resolve(&self, gvk: &GroupVersionKind) -> Result<Resolved, ClusterError> {
        if let Some(r) = self.cached(gvk) {
            return Ok(r);
        }
        let _discovering = self.discovering.lock().await;
        if let Some(r) = self.cached(gvk) {
            return Ok(r);
        }
        let not_served = || ClusterError::NotServed {
            cluster: self.name.0.clone(),
            api_version: gvk.api_version(),
            kind: gvk.kind.clone(),
        };
        let gv = GroupVersion::gv(&gvk.group, &gvk.version);
        let group = {
            let _permit = self.read_permit().await;
            self.discovery_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            kube::discovery::pinned_group(&self.client, &gv).await
        }
        .map_err(|source| match source {
            // The apiserver answers 404 for a group version it does not serve.
            kube::Error::Api(s) if s.code == 404 => not_served(),
            source => ClusterError::Discovery {
                cluster: self.name.0.clone(),
                api_version: gvk.api_version(),
                kind: gvk.kind.clone(),
                source: Box::new(source),
            },
        })?;
        {
            let mut cache = self.resources.write().unwrap_or_else(|e| e.into_inner());
            for (resource, caps) in group.versioned_resources(&gv.version) {
                let key = GroupVersionKind::gvk(&gv.group, &gv.version, &resource.kind);
                let resolved = Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                };
                cache.insert(key, resolved);
            }
        }
        self.cached(gvk).ok_or_else(not_served)
    }

    /// How many discovery requests this cluster's resolves have sent.
    pub fn discovery_requests(&self) -> usize {
        self.discovery_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, gvk: &GroupVersionKind) -> Option<Resolved> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(gvk)
            .cloned()
    }

    /// An API handle for one resource, in a namespace or cluster-wide.
    pub fn api(client: Client, r: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced && !namespace.is_empty() {
            Api::namespaced_with(client, namespace, &r.resource)
        } else {
            Api::all_with(client, &r.resource)
        }
    }
}

/// A permit of one of the cluster's limits.
async fn acquire(limit: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    // The semaphores are never closed, so acquiring cannot fail.
    match limit.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => unreachable!("the cluster's semaphores are never closed"),
    }
}

/// Runs a request once more when it failed in transport, before any answer came: a
/// pooled connection the server had just closed, a reset. Only for requests that are safe
/// to repeat (server-side apply, get, list, delete); an answer from the server, even an
/// error, is returned as it is.
pub async fn retry_transport<T, F, Fut>(mut request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match request().await {
        Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => {
            tracing::debug!(error = %e, "request failed in transport; sending it again");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            request().await
        }
        other => other,
    }
}

/// The group/version/kind of an apiVersion and kind (`v1` is the core group).
pub fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.rsplit_once('/') {
        Some((g, v)) => GroupVersionKind::gvk(g, v, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

/// The longest a watch may stay open: three quarters of the client's read timeout (a
/// watch with no event sends no byte, and the client would cut it as a failed read), at
/// most the 290 seconds a watch is usually kept, at least one.
fn watch_timeout(read_timeout: Option<std::time::Duration>) -> u32 {
    let read = read_timeout.map_or(u64::MAX, |d| d.as_secs());
    u32::try_from((read.saturating_mul(3) / 4).clamp(1, 290)).unwrap_or(290)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_watch_is_closed_by_the_server_before_the_client_would_cut_it() {
        assert_eq!(watch_timeout(Some(Duration::from_secs(60))), 45);
        assert_eq!(watch_timeout(Some(Duration::from_secs(4))), 3);
        assert_eq!(watch_timeout(Some(Duration::from_secs(1))), 1);
        assert_eq!(watch_timeout(None), 290);
        assert_eq!(watch_timeout(Some(Duration::from_secs(3600))), 290);
    }

    #[tokio::test]
    async fn a_transport_failure_is_sent_once_more() {
        let calls = AtomicUsize::new(0);
        let out = retry_transport(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(kube::Error::Service("connection reset".into())),
                _ => Ok("applied"),
            }
        })
        .await;
        assert_eq!(out.ok(), Some("applied"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_from_the_server_is_not_repeated_nor_is_a_second_failure() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = retry_transport(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(kube::Error::Api(Box::new(
                kube::core::Status::failure("refused", "Forbidden").with_code(403),
            )))
        })
        .await;
        assert!(matches!(out, Err(kube::Error::Api(s)) if s.code == 403));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let out: Result<(), _> = retry_transport(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(kube::Error::Service("connection refused".into()))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn reads_are_not_held_up_by_writes_and_have_their_own_bound() {
        let url = "https://127.0.0.1:1".parse().expect("url");
        let c = Cluster::from_config(ClusterName("c".into()), kube::Config::new(url), 2)
            .expect("cluster");
        let writes = [c.write_permit().await, c.write_permit().await];
        assert!(
            tokio::time::timeout(Duration::from_millis(20), c.write_permit())
                .await
                .is_err(),
            "a third write waits"
        );
        let mut reads = Vec::new();
        for _ in 0..2 * READS_PER_WRITE {
            reads.push(
                tokio::time::timeout(Duration::from_millis(20), c.read_permit())
                    .await
                    .expect("reads go while every write permit is taken"),
            );
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(20), c.read_permit())
                .await
                .is_err(),
            "reads have a bound too"
        );
        drop(writes);
        drop(reads);
    }
}
