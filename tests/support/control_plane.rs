//! A real Kubernetes control plane (etcd + kube-apiserver, built from the Go module proxy
//! by `go-build.sh`) per test binary, started on first use by `control-plane.sh`; and one
//! "with nodes" (controller manager, scheduler and kwok's fake nodes) for the tests that
//! need real rollouts, or the ClusterRoles the aggregation controller fills.
//!
//! The script runs until its standard input closes. We keep the write end of that pipe
//! in a static for the life of the test binary, so when the binary exits — normally, by
//! a panic, or killed — the kernel closes it and the script stops etcd and the
//! apiserver. No test has to remember to stop anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::script::Script;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct ControlPlane {
    pub name: &'static str,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub api_server: String,
    pub admin_token: String,
    pub kubectl: PathBuf,
    script: Script,
}

static FIRST: OnceLock<ControlPlane> = OnceLock::new();
static SECOND: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane every test of this binary shares (each test uses its own namespaces).
pub fn shared() -> &'static ControlPlane {
    FIRST.get_or_init(|| ControlPlane::start("one"))
}

/// A second, separate control plane for multi-cluster tests.
pub fn second() -> &'static ControlPlane {
    SECOND.get_or_init(|| ControlPlane::start("two"))
}

static NODES: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane with nodes that tests share: Deployments, StatefulSets, DaemonSets
/// and Jobs roll out for real there (kube-controller-manager, kube-scheduler, three kwok
/// nodes; a container image tagged `never-ready` never gets Ready), and the aggregated
/// `admin`/`edit`/`view` ClusterRoles are filled. Its controllers answer every workload
/// with ReplicaSets, Pods and status writes: tests that count the apiserver's requests
/// use [`quiet`] instead.
pub fn with_nodes() -> &'static ControlPlane {
    NODES.get_or_init(|| ControlPlane::start_with_nodes("nodes"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl ControlPlane {
    /// A control plane owned by the caller: [`ControlPlane::stop`] ends it (dropping it
    /// does too, without waiting). The statics above hold the ones tests share.
    pub fn start(name: &'static str) -> ControlPlane {
        ControlPlane::start_script(name, &[])
    }

    /// A control plane with nodes owned by the caller (see [`with_nodes`]).
    pub fn start_with_nodes(name: &'static str) -> ControlPlane {
        ControlPlane::start_script(name, &["--nodes"])
    }

    fn start_script(name: &'static str, args: &[&str]) -> ControlPlane {
        let script = Script::start_with(
            "control-plane.sh",
            name,
            args,
            "PONTOON_CP_CLEANUP",
            "it needs Go to build kube-apiserver, etcd (and with nodes kube-controller-manager, \
             kube-scheduler and kwok), plus openssl, curl and python3",
        );
        eprintln!("control plane {name} at {}", script.get("API_SERVER"));
        ControlPlane {
            name,
            kubeconfig: script.dir.join("kubeconfig"),
            api_server: script.get("API_SERVER"),
            admin_token: script.get("ADMIN_TOKEN"),
            kubectl: PathBuf::from(script.get("KUBECTL")),
            dir: script.dir.clone(),
            script,
        }
    }

    /// Stops etcd and kube-apiserver and waits until they have exited (benchmarks start
    /// a fresh control plane per round and must not leave the last one spending CPU).
    pub fn stop(self) {
        self.script.stop();
    }

    /// Stops kube-apiserver (etcd keeps the data). Only for a [`dedicated`] control plane.
    pub fn stop_apiserver(&self) {
        self.script.ask("stop-apiserver", "stopped");
    }

    /// Starts kube-apiserver again on the same port, and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.script.ask("start-apiserver", "ready");
    }

    /// An admin client (group `system:masters`).
    pub async fn client(&self) -> kube::Client {
        let config = self.config().await;
        kube::Client::try_from(config).expect("kube client")
    }

    pub async fn config(&self) -> kube::Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig")
    }

    /// Runs the harness-built kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// The apiserver's own metrics text (`/metrics`), e.g. to count write requests.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(self.dir.join("certs/apiserver.crt"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.admin_token))
            .arg(format!("{}/metrics", self.api_server))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "GET /metrics failed");
        String::from_utf8(out.stdout).expect("utf-8 metrics")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A namespace name unique to one test, so tests sharing a control plane never meet.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

static QUIET: OnceLock<ControlPlane> = OnceLock::new();

/// A control plane that only one test writes to, for tests that count the apiserver's
/// own request metrics and must not see other tests' traffic.
pub fn quiet() -> &'static ControlPlane {
    QUIET.get_or_init(|| ControlPlane::start("quiet"))
}

impl ControlPlane {
    /// Sum of `apiserver_request_total` for write verbs (dry runs excluded).
    pub fn write_requests(&self) -> u64 {
        const WRITES: [&str; 6] = [
            "POST",
            "PUT",
            "PATCH",
            "APPLY",
            "DELETE",
            "DELETECOLLECTION",
        ];
        self.requests_by_verb()
            .iter()
            .filter(|(verb, _)| WRITES.contains(&verb.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// `apiserver_request_total` summed per verb (dry runs as `<VERB> (dry run)`), without
    /// the apiserver's own lease renewals.
    pub fn requests_by_verb(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for l in self.metrics().lines() {
            let Some(labels) = l.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            if labels.contains("resource=\"leases\"") {
                continue;
            }
            let Some(verb) = labels
                .split("verb=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
            else {
                continue;
            };
            let Some(n) = l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) else {
                continue;
            };
            let key = if labels.contains("dry_run=\"All\"") {
                format!("{verb} (dry run)")
            } else {
                verb.to_string()
            };
            *out.entry(key).or_insert(0) += n as u64;
        }
        out
    }
}

/// The apiserver's own loops read some objects every few seconds (the `kubernetes`
/// Service, its endpoints, the `default` Namespace): a count of a client's requests
/// leaves these out.
pub const THE_APISERVERS_OWN: [&str; 4] = ["services", "endpoints", "endpointslices", "namespaces"];

/// What `apiserver_request_total` counts requests by, as far as tests look.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    pub verb: String,
    pub resource: String,
    pub scope: String,
    pub dry_run: bool,
}

impl RequestKey {
    /// What was counted between `before` and `after`, without what was not.
    pub fn delta(
        before: &std::collections::BTreeMap<RequestKey, u64>,
        after: std::collections::BTreeMap<RequestKey, u64>,
    ) -> std::collections::BTreeMap<RequestKey, u64> {
        after
            .into_iter()
            .map(|(k, n)| {
                let was = before.get(&k).copied().unwrap_or(0);
                (k, n - was)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl ControlPlane {
    /// `apiserver_request_total` by verb, resource, scope and dry run, without the
    /// apiserver's own leases.
    pub fn requests_by_resource(&self) -> std::collections::BTreeMap<RequestKey, u64> {
        let mut out = std::collections::BTreeMap::new();
        for l in self.metrics().lines() {
            let Some(rest) = l.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let labels = format!(",{labels}");
            let label = |name: &str| {
                labels
                    .split(&format!(",{name}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or_default()
                    .to_owned()
            };
            if label("resource") == "leases" {
                continue;
            }
            let Ok(n) = value.trim().parse::<f64>() else {
                continue;
            };
            let key = RequestKey {
                verb: label("verb"),
                resource: label("resource"),
                scope: label("scope"),
                dry_run: label("dry_run") == "All",
            };
            *out.entry(key).or_insert(0) += n as u64;
        }
        out
    }
}

/// A control plane of its own for one test (started on first use, shared by name), for
/// tests whose daemon owns every inventory on its cluster.
pub fn dedicated(name: &'static str) -> &'static ControlPlane {
    static PLANES: std::sync::Mutex<Vec<&'static ControlPlane>> = std::sync::Mutex::new(Vec::new());
    let mut planes = PLANES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cp) = planes.iter().find(|c| c.name == name) {
        return cp;
    }
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start(name)));
    planes.push(cp);
    cp
}

/// The names of the ConfigMaps in one namespace, without the one Kubernetes puts in each.
pub async fn configmap_names(
    cms: &kube::Api<k8s_openapi::api::core::v1::ConfigMap>,
) -> Vec<String> {
    cms.list(&Default::default())
        .await
        .expect("list ConfigMaps")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != "kube-root-ca.crt")
        .collect()
}
