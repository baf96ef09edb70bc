//! The daemon's own configuration file: where the platform repo is, which clusters the
//! repo's cluster names map to, where to listen, where to post commit statuses.
//!
//! Loading has two stages, as in Vector: the raw document exactly as written (with the
//! line and column of every value that can be wrong for reasons YAML cannot see), then a
//! validated [`Config`] where every path, variable and name has been checked. Validation
//! collects *all* problems before it reports, so a user fixes the file in one round.
//!
//! Secrets are never written inline: the file names a file or an environment variable,
//! and no error message ever repeats a secret's value.
//!
//! Files: `raw` the document as written, `validation` the checks that turn it into a
//! [`Config`], `charts` reaching chart repositories and registries, `secrets` references
//! to secrets and their reading, `durations` the way durations are written,
//! `notifications` the receivers of state changes.

mod charts;
mod decryption;
mod durations;
mod notifications;
mod raw;
mod secrets;
mod validation;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Names the platform repo shares with the daemon's config.
pub use crate::desired::{DEFAULT_NAMESPACE, DEFAULT_OWNER, Owner, is_dns_label};
pub use charts::{ChartHost, ChartsConfig, DEFAULT_CHART_TIMEOUT, DEFAULT_KEEP_UNUSED};
pub use decryption::{DecryptionConfig, KeyringError};
pub use durations::HumanDuration;
pub use notifications::{NotificationsConfig, ReceiverConfig, ReceiverKind, ReceiverUrl};
pub use secrets::{Secret, SecretError, SecretRef};

/// One problem in a config file, located by file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the field, e.g. `clusters[1].kubeconfig`; empty when the YAML itself is broken.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with one config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// The located problems (empty when the file could not be read at all).
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(p) => p,
        }
    }
}

fn display_problems(problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string());
    }
    out
}

/// Which forge receives commit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A checked configuration: every path exists, every variable is set, every name is valid.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from; relative paths in it were resolved against its folder.
    pub path: PathBuf,
    pub source: SourceConfig,
    pub clusters: Vec<ClusterConfig>,
    pub listen: ListenConfig,
    pub commit_status: Option<CommitStatusConfig>,
    pub sync: SyncConfig,
    pub drift: DriftConfig,
    pub log: LogConfig,
    /// When set, only the replica holding the Lease syncs.
    pub leader_election: Option<LeaderElectionConfig>,
    /// How long shutdown waits for in-flight syncs and owed statuses.
    pub shutdown_timeout: Duration,
    /// The age keys that decrypt SOPS files (none: an encrypted file fails its team).
    pub decryption: DecryptionConfig,
    /// Who is told about units' state changes (none by default).
    pub notifications: NotificationsConfig,
    /// How remote charts are reached: time limit, per-host credentials and plain HTTP.
    pub charts: ChartsConfig,
    pub packages: PackagesConfig,
}

/// `packages`: how charts and Kustomize folders are expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagesConfig {
    /// The `helm` binary; default `helm` on `PATH`.
    pub helm: PathBuf,
    /// The `kustomize` binary; default `kustomize` on `PATH`.
    pub kustomize: PathBuf,
    /// How long one `helm template` or `kustomize build` may run; default 60s.
    pub timeout: Duration,
    /// How many expansions are kept to be reused while their inputs do not change;
    /// default 4096.
    pub cache_entries: usize,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        PackagesConfig {
            helm: PathBuf::from("helm"),
            kustomize: PathBuf::from("kustomize"),
            timeout: Duration::from_secs(60),
            cache_entries: 4096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// The cluster (by name) that holds the Lease, in `sync.namespace`.
    pub cluster: String,
    pub lease_name: String,
    pub lease_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub location: SourceLocation,
    pub poll_interval: Duration,
    /// Limit for one remote operation (ref listing or fetch).
    pub timeout: Duration,
    /// How webhook requests are authenticated (`source.webhook`).
    pub webhook: WebhookAuth,
    /// Whether pull requests from forks are planned (`source.webhook.planForks`, default
    /// false).
    pub plan_forks: bool,
    /// Where the bare cache repository lives.
    pub cache_dir: PathBuf,
}

/// How the webhook endpoints authenticate requests. There is no way to accept unsigned
/// requests by leaving something out: that takes `insecure: true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    /// No `source.webhook`: the endpoints refuse every request.
    Off,
    /// `source.webhook.secret`: each request must carry a signature (GitLab: the token)
    /// made with this secret, which is never empty.
    Secret(SecretRef),
    /// `source.webhook.insecure: true`: requests are accepted unsigned, from anyone who can
    /// reach the endpoints; the daemon warns at start.
    Insecure,
}

#[derive(Debug, Clone)]
pub enum SourceLocation {
    Git {
        url: String,
        git_ref: GitRef,
        auth: GitAuth,
    },
    /// A plain folder, watched for changes: for developing a platform repo.
    Directory(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
    Commit(String),
}

#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    pub username: Option<String>,
    pub token: Option<SecretRef>,
    pub password: Option<SecretRef>,
    pub ssh_key: Option<SecretRef>,
    pub known_hosts: Option<PathBuf>,
    pub insecure_skip_host_key_check: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub connection: ClusterConnection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterConnection {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub http: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct CommitStatusConfig {
    pub provider: Provider,
    pub api_url: String,
    pub repository: String,
    pub token: SecretRef,
    pub target_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The daemon instance this is (`sync.owner`): what it applies and writes carries it,
    /// and it touches nothing of another owner's.
    pub owner: Owner,
    /// Namespace on every cluster for pontoon's own objects (inventories, leases).
    pub namespace: String,
    /// Concurrent API requests per cluster.
    pub concurrency: usize,
    /// Take ownership of fields another manager holds (reported either way).
    pub force_conflicts: bool,
    pub apply_timeout: Duration,
    pub health_timeout: Duration,
    /// Full resync of every unit, the safety net under watches and webhooks.
    pub resync_interval: Duration,
    /// Of the resyncs of an unchanged unit, every this-many-th lists the unit's objects
    /// even when the drift watches could answer it (`sync.fullResyncEvery`; default
    /// [`full_resync_every_default`]).
    pub full_resync_every: u32,
    /// How many shards split the teams across replicas (`sync.shards`, default 1: one
    /// leader syncs every team). Each shard has a Lease of its own; a team's units belong
    /// to shard `stable_hash(team) mod shards`.
    pub shards: u32,
}

#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// Field managers that stand for people, on top of the built-in kubectl ones.
    pub human_managers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CONCURRENCY: u32 = 16;
pub const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(600);
/// Without `sync.fullResyncEvery`, an unchanged unit is listed at least this often.
pub const FULL_CHECK_AT_LEAST_EVERY: Duration = Duration::from_secs(600);

/// `sync.fullResyncEvery` when it is not set: as many resyncs as fit in
/// [`FULL_CHECK_AT_LEAST_EVERY`], at least one (every resync lists, as with the default
/// `resyncInterval` of 10 minutes).
pub fn full_resync_every_default(resync_interval: Duration) -> u32 {
    let fit = FULL_CHECK_AT_LEAST_EVERY.as_secs_f64() / resync_interval.as_secs_f64().max(1e-3);
    (fit.floor() as u32).max(1)
}

pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// The most shards `sync.shards` may ask for: each is a Lease renewed every few seconds.
pub const MAX_SHARDS: u32 = 64;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// Reads, parses and validates one config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_str(&text, path)
    }

    /// Parses and validates config text; `path` names it in errors and anchors relative paths.
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = serde_saphyr::from_str_with_options(text, crate::yaml::options())
            .map_err(|e| ConfigError::Invalid(vec![validation::yaml_problem(path, &e)]))?;
        validation::Validator::new(path).validate(raw)
    }
}

#[cfg(test)]
mod tests;
