//! The daemon's config file exactly as written: every field it may hold, unknown fields
//! refused, and the line and column kept for each value that can be wrong for reasons
//! YAML cannot see. Nothing here is checked; `validation` does that.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{HumanDuration, LogFormat, Provider, SecretRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig {
    pub(super) source: RawSource,
    pub(super) clusters: Vec<RawCluster>,
    #[serde(default)]
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) commit_status: Option<RawCommitStatus>,
    #[serde(default)]
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) drift: RawDrift,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) leader_election: Option<RawLeaderElection>,
    #[serde(default)]
    pub(super) shutdown_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) decryption: Option<RawDecryption>,
    /// `notifications`: receivers of state changes, and those told about every unit.
    #[serde(default)]
    pub(super) notifications: Option<super::notifications::RawNotifications>,
    /// `charts`: reaching chart repositories and registries.
    #[serde(default)]
    pub(super) charts: Option<super::charts::RawCharts>,

    #[serde(default)]
    pub(super) packages: RawPackages,
}

/// `packages`: the tools charts and Kustomize folders are expanded with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPackages {
    pub(super) helm: Option<PathBuf>,
    pub(super) kustomize: Option<PathBuf>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) cache_entries: Option<usize>,
}

/// `decryption`: the age keys, each `{file: PATH}` or `{env: NAME}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecryption {
    pub(super) keys: std::collections::BTreeMap<String, Spanned<SecretRef>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawLeaderElection {
    pub(super) cluster: Spanned<String>,
    pub(super) lease_name: Option<String>,
    pub(super) lease_duration: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSource {
    pub(super) url: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<PathBuf>>,
    #[serde(rename = "ref", default)]
    pub(super) git_ref: Option<Spanned<RawGitRef>>,
    #[serde(default)]
    pub(super) poll_interval: Option<HumanDuration>,
    #[serde(default)]
    pub(super) timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) auth: RawGitAuth,
    #[serde(default)]
    pub(super) webhook: Option<Spanned<RawWebhook>>,
    #[serde(default)]
    pub(super) cache_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitRef {
    pub(super) branch: Option<String>,
    pub(super) tag: Option<String>,
    pub(super) commit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawGitAuth {
    pub(super) username: Option<String>,
    pub(super) token: Option<Spanned<SecretRef>>,
    pub(super) password: Option<Spanned<SecretRef>>,
    pub(super) ssh_key: Option<Spanned<SecretRef>>,
    pub(super) known_hosts: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) insecure_skip_host_key_check: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    #[serde(default)]
    pub(super) secret: Option<Spanned<SecretRef>>,
    #[serde(default)]
    pub(super) insecure: Option<Spanned<bool>>,
    #[serde(default, rename = "planForks")]
    pub(super) plan_forks: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCluster {
    pub(super) name: Spanned<String>,
    pub(super) kubeconfig: Option<Spanned<PathBuf>>,
    pub(super) context: Option<String>,
    #[serde(default)]
    pub(super) in_cluster: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    #[serde(default = "default_http")]
    pub(super) http: SocketAddr,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            http: default_http(),
        }
    }
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCommitStatus {
    pub(super) provider: Provider,
    pub(super) api_url: Spanned<String>,
    pub(super) repository: Spanned<String>,
    pub(super) token: Spanned<SecretRef>,
    #[serde(default)]
    pub(super) target_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSync {
    pub(super) owner: Option<Spanned<String>>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) force_conflicts: Option<bool>,
    pub(super) apply_timeout: Option<HumanDuration>,
    pub(super) health_timeout: Option<HumanDuration>,
    pub(super) resync_interval: Option<HumanDuration>,
    /// `sync.fullResyncEvery`: of an unchanged unit's resyncs, every this-many-th lists.
    pub(super) full_resync_every: Option<Spanned<u32>>,
    /// `sync.shards`: how many shard Leases split the teams across replicas.
    pub(super) shards: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawDrift {
    #[serde(default)]
    pub(super) human_managers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    pub(super) format: LogFormat,
    pub(super) level: Option<String>,
}
