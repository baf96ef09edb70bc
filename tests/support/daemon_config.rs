//! The daemon's config file as tests and benchmarks write it: one typed builder with the
//! defaults they share (a loopback port of its own, a repo polled every second) and a
//! method for each thing a test varies. It renders through `serde_json` values to YAML,
//! so no test pastes config text together; tests of the config parser itself (line and
//! column of a mistake) keep their literal files instead.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One `pontoon.yaml`. Starts with a source and no cluster; add clusters with
/// [`DaemonConfig::cluster`].
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    source: Map<String, Value>,
    clusters: Vec<Value>,
    /// Default: 127.0.0.1 and a port free when the builder was made.
    listen: SocketAddr,
    sync: Map<String, Value>,
    commit_status: Option<Map<String, Value>>,
    leader_election: Option<Value>,
    log: Map<String, Value>,
    packages: Map<String, Value>,
}

impl DaemonConfig {
    fn with_source(source: Value) -> DaemonConfig {
        DaemonConfig {
            source: fields(source),
            clusters: Vec::new(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            sync: Map::new(),
            commit_status: None,
            leader_election: None,
            log: Map::new(),
            packages: Map::new(),
        }
    }

    /// The platform repo is a folder on disk (`source.path`), polled every second.
    pub fn dir(repo: &Path) -> DaemonConfig {
        Self::with_source(json!({"path": repo, "pollInterval": "1s"}))
    }

    /// The platform repo is a Git remote (`source.url`) cloned into `cache_dir`, polled
    /// every second.
    pub fn git(url: &str, cache_dir: &Path) -> DaemonConfig {
        Self::with_source(json!({"url": url, "pollInterval": "1s", "cacheDir": cache_dir}))
    }

    /// A bare repository on disk, as a `file://` Git remote.
    pub fn git_file(bare: &Path, cache_dir: &Path) -> DaemonConfig {
        Self::git(&format!("file://{}", bare.display()), cache_dir)
    }

    /// `source.pollInterval` (default here `1s`), e.g. `1h` where only webhooks may wake it.
    pub fn poll_interval(mut self, interval: &str) -> DaemonConfig {
        self.source.insert("pollInterval".into(), json!(interval));
        self
    }

    /// `source.auth`: a user and a token read from `token_file` (beside the config file).
    pub fn git_token(mut self, username: &str, token_file: &str) -> DaemonConfig {
        self.source.insert(
            "auth".into(),
            json!({"username": username, "token": {"file": token_file}}),
        );
        self
    }

    /// `source.webhook.secret`, read from `secret_file` (beside the config file).
    pub fn webhook_secret(mut self, secret_file: &str) -> DaemonConfig {
        self.source
            .insert("webhook".into(), json!({"secret": {"file": secret_file}}));
        self
    }

    /// One more entry of `clusters`: the repo's cluster `name`, reached through `kubeconfig`.
    pub fn cluster(mut self, name: &str, kubeconfig: &Path) -> DaemonConfig {
        self.clusters
            .push(json!({"name": name, "kubeconfig": kubeconfig}));
        self
    }

    /// `leaderElection`: replicas elect a leader with the Lease `lease` on `cluster`.
    pub fn leader_election(mut self, cluster: &str, lease: &str, duration: &str) -> DaemonConfig {
        self.leader_election =
            Some(json!({"cluster": cluster, "leaseName": lease, "leaseDuration": duration}));
        self
    }

    /// `sync.resyncInterval` (the daemon's default otherwise).
    pub fn resync_interval(self, interval: &str) -> DaemonConfig {
        self.sync_field("resyncInterval", json!(interval))
    }

    /// `sync.concurrency`: applies in flight per cluster.
    pub fn concurrency(self, n: u32) -> DaemonConfig {
        self.sync_field("concurrency", json!(n))
    }

    /// `sync.applyTimeout`.
    pub fn apply_timeout(self, timeout: &str) -> DaemonConfig {
        self.sync_field("applyTimeout", json!(timeout))
    }

    /// `sync.healthTimeout`: how long a unit may roll out before it is Failed.
    pub fn health_timeout(self, timeout: &str) -> DaemonConfig {
        self.sync_field("healthTimeout", json!(timeout))
    }

    /// `sync.namespace`: where pontoon keeps its inventories. A namespace of its own keeps
    /// one test's removed-team detection away from every other test's teams on a shared
    /// control plane.
    pub fn inventory_namespace(self, namespace: &str) -> DaemonConfig {
        self.sync_field("namespace", json!(namespace))
    }

    /// `sync.shards`: how many shard Leases split the teams across replicas.
    pub fn shards(self, n: u32) -> DaemonConfig {
        self.sync_field("shards", json!(n))
    }

    /// `sync.owner`: the daemon instance this is (the default owner otherwise).
    pub fn owner(self, owner: &str) -> DaemonConfig {
        self.sync_field("owner", json!(owner))
    }

    fn sync_field(mut self, field: &str, value: Value) -> DaemonConfig {
        self.sync.insert(field.into(), value);
        self
    }

    /// `commitStatus` posted to Gitea at `api_url` for `repository` (`owner/name`), with
    /// the token read from `token_file`.
    pub fn gitea_statuses(
        mut self,
        api_url: &str,
        repository: &str,
        token_file: &str,
    ) -> DaemonConfig {
        self.commit_status = Some(fields(json!({
            "provider": "gitea",
            "apiUrl": api_url,
            "repository": repository,
            "token": {"file": token_file},
        })));
        self
    }

    /// `commitStatus.targetUrl` (with `{cluster}` and `{team}` placeholders); needs
    /// [`DaemonConfig::gitea_statuses`] first.
    pub fn status_target_url(mut self, url: &str) -> DaemonConfig {
        self.commit_status
            .as_mut()
            .expect("commit statuses configured before their target URL")
            .insert("targetUrl".into(), json!(url));
        self
    }

    /// `packages.helm` and `packages.kustomize`: the tools that expand charts and
    /// Kustomize folders (the daemon finds them on `PATH` otherwise).
    pub fn packages(mut self, helm: &Path, kustomize: &Path) -> DaemonConfig {
        self.packages.insert("helm".into(), json!(helm));
        self.packages.insert("kustomize".into(), json!(kustomize));
        self
    }

    /// `log.level`.
    pub fn log_level(mut self, level: &str) -> DaemonConfig {
        self.log.insert("level".into(), json!(level));
        self
    }

    /// The port the daemon's HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// `http://127.0.0.1:<port>`: where its status, metrics and webhooks are served.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The document as a serde value.
    pub fn to_value(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("source".into(), Value::Object(self.source.clone()));
        doc.insert("clusters".into(), Value::Array(self.clusters.clone()));
        doc.insert("listen".into(), json!({"http": self.listen.to_string()}));
        for (field, part) in [
            ("sync", &self.sync),
            ("log", &self.log),
            ("packages", &self.packages),
        ] {
            if !part.is_empty() {
                doc.insert(field.into(), Value::Object(part.clone()));
            }
        }
        if let Some(le) = &self.leader_election {
            doc.insert("leaderElection".into(), le.clone());
        }
        if let Some(cs) = &self.commit_status {
            doc.insert("commitStatus".into(), Value::Object(cs.clone()));
        }
        Value::Object(doc)
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.to_value()).expect("config renders as YAML")
    }

    /// Writes `dir/pontoon.yaml` and returns its path. Secret files the config names are
    /// read from `dir` too.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pontoon.yaml");
        std::fs::write(&path, self.to_yaml()).expect("write pontoon.yaml");
        path
    }
}

/// The fields of a `json!` object literal.
fn fields(object: Value) -> Map<String, Value> {
    match object {
        Value::Object(fields) => fields,
        other => unreachable!("an object literal, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_setting_reaches_the_daemons_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["kc-a", "kc-b", "token", "hook-secret"] {
            std::fs::write(dir.path().join(file), "apiVersion: v1\nkind: Config\n").expect("write");
        }
        let built = DaemonConfig::git("https://example.com/p.git", &dir.path().join("cache"))
            .poll_interval("1h")
            .git_token("me", "token")
            .webhook_secret("hook-secret")
            .cluster("a", &dir.path().join("kc-a"))
            .cluster("b", &dir.path().join("kc-b"))
            .resync_interval("2s")
            .concurrency(3)
            .apply_timeout("5s")
            .inventory_namespace("elsewhere")
            .gitea_statuses("https://forge.example.com/api/v1", "me/p", "token")
            .status_target_url("https://pontoon.example.com/#{cluster}/{team}")
            .leader_election("b", "lead", "7s")
            .packages(&dir.path().join("helm"), &dir.path().join("kustomize"))
            .log_level("warn");
        let config = pontoon::config::Config::load(&built.write(dir.path()))
            .unwrap_or_else(|e| panic!("{e}\n{}", built.to_yaml()));
        assert_eq!(config.listen.http.port(), built.port());
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(config.source.poll_interval, Duration::from_secs(3600));
        assert_eq!(
            (
                config.sync.resync_interval,
                config.sync.concurrency,
                config.sync.apply_timeout,
                config.sync.namespace.as_str()
            ),
            (
                Duration::from_secs(2),
                3,
                Duration::from_secs(5),
                "elsewhere"
            )
        );
        let le = config.leader_election.as_ref().expect("leader election");
        assert_eq!(
            (
                le.cluster.as_str(),
                le.lease_name.as_str(),
                le.lease_duration
            ),
            ("b", "lead", Duration::from_secs(7))
        );
        assert_eq!(
            (config.packages.helm, config.packages.kustomize),
            (dir.path().join("helm"), dir.path().join("kustomize"))
        );
        let statuses = config.commit_status.expect("commit statuses");
        assert_eq!(
            statuses.target_url.as_deref(),
            Some("https://pontoon.example.com/#{cluster}/{team}")
        );
    }
}
