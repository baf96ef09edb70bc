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

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

/// Names the platform repo shares with the daemon's config.
pub use crate::desired::{DEFAULT_NAMESPACE, is_dns_label};

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

// ---------------------------------------------------------------------------------------
// Raw documents: exactly what the file says.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    source: RawSource,
    clusters: Vec<RawCluster>,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    commit_status: Option<RawCommitStatus>,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    drift: RawDrift,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    leader_election: Option<RawLeaderElection>,
    #[serde(default)]
    shutdown_timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLeaderElection {
    cluster: Spanned<String>,
    lease_name: Option<String>,
    lease_duration: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    url: Option<Spanned<String>>,
    path: Option<Spanned<PathBuf>>,
    #[serde(rename = "ref", default)]
    git_ref: Option<Spanned<RawGitRef>>,
    #[serde(default)]
    poll_interval: Option<HumanDuration>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    auth: RawGitAuth,
    #[serde(default)]
    webhook: Option<RawWebhook>,
    #[serde(default)]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitRef {
    branch: Option<String>,
    tag: Option<String>,
    commit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGitAuth {
    username: Option<String>,
    token: Option<Spanned<SecretRef>>,
    password: Option<Spanned<SecretRef>>,
    ssh_key: Option<Spanned<SecretRef>>,
    known_hosts: Option<Spanned<PathBuf>>,
    #[serde(default)]
    insecure_skip_host_key_check: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    secret: Spanned<SecretRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    name: Spanned<String>,
    kubeconfig: Option<Spanned<PathBuf>>,
    context: Option<String>,
    #[serde(default)]
    in_cluster: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default = "default_http")]
    http: SocketAddr,
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
struct RawCommitStatus {
    provider: Provider,
    api_url: Spanned<String>,
    repository: Spanned<String>,
    token: Spanned<SecretRef>,
    #[serde(default)]
    target_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSync {
    namespace: Option<Spanned<String>>,
    concurrency: Option<Spanned<u32>>,
    force_conflicts: Option<bool>,
    apply_timeout: Option<HumanDuration>,
    health_timeout: Option<HumanDuration>,
    resync_interval: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDrift {
    #[serde(default)]
    human_managers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    level: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Small value types with their own parsing rules.
// ---------------------------------------------------------------------------------------

/// A duration written the way people write it: `30s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match humantime::parse_duration(s.trim()) {
            // Every duration here is an interval, a timeout or a lease: zero would poll
            // without pause, time out at once, or stop the resync timer.
            Ok(d) if d.is_zero() => Err(de::Error::custom(format!(
                "duration {s:?} must be longer than 0s"
            ))),
            Ok(d) => Ok(HumanDuration(d)),
            Err(e) => Err(de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"1h 30m\""
            ))),
        }
    }
}

/// Where a secret comes from. Never the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Env(n) => write!(f, "env:{n}"),
        }
    }
}

impl SecretRef {
    /// Reads the secret now. Trailing newlines of files are dropped.
    /// The error never contains the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display())),
            SecretRef::Env(n) => std::env::var(n)
                .map(Secret)
                .map_err(|_| format!("environment variable {n} is not set")),
        }
    }
}

/// A secret value. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a reference {file: PATH} or {env: NAME}";
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            // Deliberately does not echo the value: it may be a pasted secret.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "secrets are never written inline; use {file: PATH} or {env: NAME}",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!("expected {EXPECTED}")));
                };
                let out = match key.as_str() {
                    "file" => SecretRef::File(map.next_value()?),
                    "env" => SecretRef::Env(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["file", "env"])),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(format!(
                        "expected exactly one of `file` or `env` in {EXPECTED}"
                    )));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
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

// ---------------------------------------------------------------------------------------
// The validated configuration.
// ---------------------------------------------------------------------------------------

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
    pub webhook_secret: Option<SecretRef>,
    /// Where the bare cache repository lives.
    pub cache_dir: PathBuf,
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
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
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
        let raw: RawConfig = serde_saphyr::from_str_with_options(text, crate::yaml::options())
            .map_err(|e| ConfigError::Invalid(vec![yaml_problem(path, &e)]))?;
        Validator::new(path).validate(raw)
    }
}

fn yaml_problem(path: &Path, e: &serde_saphyr::Error) -> ConfigProblem {
    let (line, column) = crate::yaml::error_position(e);
    ConfigProblem {
        file: path.to_owned(),
        line,
        column,
        field: String::new(),
        message: crate::yaml::error_message(e),
    }
}

struct Validator<'a> {
    file: &'a Path,
    base: PathBuf,
    problems: Vec<ConfigProblem>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a Path) -> Self {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Validator {
            file,
            base,
            problems: Vec::new(),
        }
    }

    fn problem<T>(
        &mut self,
        at: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(ConfigProblem {
            file: self.file.to_owned(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            field: field.into(),
            message: message.into(),
        });
    }

    /// A problem with no single value to point at (a missing field): points at line 1.
    fn problem_at_top(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            file: self.file.to_owned(),
            line: 1,
            column: 1,
            field: field.into(),
            message: message.into(),
        });
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        let expanded = match p.strip_prefix("~") {
            Ok(rest) => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(rest),
                None => p.to_owned(),
            },
            Err(_) => p.to_owned(),
        };
        if expanded.is_absolute() {
            expanded
        } else {
            self.base.join(expanded)
        }
    }

    fn check_file(&mut self, at: &Spanned<PathBuf>, field: &str, what: &str) -> PathBuf {
        let resolved = self.resolve(&at.value);
        if !resolved.is_file() {
            self.problem(
                at,
                field,
                format!(
                    "{what} {} does not exist or is not a file",
                    resolved.display()
                ),
            );
        }
        resolved
    }

    fn check_secret(&mut self, at: &Spanned<SecretRef>, field: &str) -> SecretRef {
        match &at.value {
            SecretRef::File(p) => {
                let resolved = self.resolve(p);
                if !resolved.is_file() {
                    self.problem(
                        at,
                        field,
                        format!(
                            "secret file {} does not exist or is not a file",
                            resolved.display()
                        ),
                    );
                }
                SecretRef::File(resolved)
            }
            SecretRef::Env(name) => {
                if std::env::var_os(name).is_none() {
                    self.problem(at, field, format!("environment variable {name} is not set"));
                }
                SecretRef::Env(name.clone())
            }
        }
    }

    fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let source = self.source(raw.source);
        let clusters = self.clusters(raw.clusters);
        let commit_status = raw.commit_status.map(|c| self.commit_status(c));
        let sync = self.sync(raw.sync);
        let leader_election = raw.leader_election.map(|l| {
            if !clusters.iter().any(|c| c.name == l.cluster.value) {
                self.problem(
                    &l.cluster,
                    "leaderElection.cluster",
                    format!("no cluster named {:?} in `clusters`", l.cluster.value),
                );
            }
            LeaderElectionConfig {
                cluster: l.cluster.value,
                lease_name: l.lease_name.unwrap_or_else(|| "pontoon".to_owned()),
                lease_duration: l.lease_duration.map_or(DEFAULT_LEASE_DURATION, |d| d.0),
            }
        });
        let log = LogConfig {
            format: raw.log.format,
            level: raw.log.level.unwrap_or_else(|| "info".to_owned()),
        };
        if self.problems.is_empty() {
            Ok(Config {
                path: self.file.to_owned(),
                source,
                clusters,
                listen: ListenConfig {
                    http: raw.listen.http,
                },
                commit_status,
                sync,
                drift: DriftConfig {
                    human_managers: raw.drift.human_managers,
                },
                log,
                leader_election,
                shutdown_timeout: raw
                    .shutdown_timeout
                    .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |d| d.0),
            })
        } else {
            self.problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError::Invalid(self.problems))
        }
    }

    fn source(&mut self, raw: RawSource) -> SourceConfig {
        let cache_dir = raw
            .cache_dir
            .map(|p| self.resolve(&p))
            .unwrap_or_else(|| std::env::temp_dir().join("pontoon-cache"));
        let webhook_secret = raw
            .webhook
            .map(|w| self.check_secret(&w.secret, "source.webhook.secret"));
        let location = match (raw.url, raw.path) {
            (Some(url), None) => {
                let git_ref = match raw.git_ref {
                    None => GitRef::Branch("main".to_owned()),
                    Some(r) => self.git_ref(&r),
                };
                if url.value.trim().is_empty() {
                    self.problem(&url, "source.url", "must not be empty");
                }
                if has_inline_credentials(&url.value) {
                    self.problem(
                        &url,
                        "source.url",
                        "credentials must not be written in the URL; use source.auth with {file: PATH} or {env: NAME}",
                    );
                }
                let auth = self.git_auth(raw.auth);
                SourceLocation::Git {
                    url: url.value,
                    git_ref,
                    auth,
                }
            }
            (None, Some(path)) => {
                let resolved = self.resolve(&path.value);
                if !resolved.is_dir() {
                    self.problem(
                        &path,
                        "source.path",
                        format!("directory {} does not exist", resolved.display()),
                    );
                }
                if let Some(r) = raw.git_ref {
                    self.problem(
                        &r,
                        "source.ref",
                        "a directory source has no ref; remove it or use source.url",
                    );
                }
                SourceLocation::Directory(resolved)
            }
            (Some(url), Some(_)) => {
                self.problem(
                    &url,
                    "source",
                    "set either `url` (a Git repository) or `path` (a local directory), not both",
                );
                SourceLocation::Directory(PathBuf::new())
            }
            (None, None) => {
                self.problem_at_top(
                    "source",
                    "missing `url` (a Git repository) or `path` (a local directory)",
                );
                SourceLocation::Directory(PathBuf::new())
            }
        };
        SourceConfig {
            location,
            poll_interval: raw.poll_interval.map_or(DEFAULT_POLL_INTERVAL, |d| d.0),
            timeout: raw.timeout.map_or(DEFAULT_GIT_TIMEOUT, |d| d.0),
            webhook_secret,
            cache_dir,
        }
    }

    fn git_ref(&mut self, r: &Spanned<RawGitRef>) -> GitRef {
        let v = &r.value;
        match (&v.branch, &v.tag, &v.commit) {
            (Some(b), None, None) => GitRef::Branch(b.clone()),
            (None, Some(t), None) => GitRef::Tag(t.clone()),
            (None, None, Some(c)) => {
                if c.len() != 40 || !c.chars().all(|ch| ch.is_ascii_hexdigit()) {
                    self.problem(
                        r,
                        "source.ref.commit",
                        "a commit must be a full 40-character hex id",
                    );
                }
                GitRef::Commit(c.to_ascii_lowercase())
            }
            _ => {
                self.problem(
                    r,
                    "source.ref",
                    "set exactly one of `branch`, `tag` or `commit`",
                );
                GitRef::Branch("main".to_owned())
            }
        }
    }

    fn git_auth(&mut self, raw: RawGitAuth) -> GitAuth {
        let token = raw
            .token
            .map(|t| self.check_secret(&t, "source.auth.token"));
        let password = raw
            .password
            .map(|t| self.check_secret(&t, "source.auth.password"));
        let ssh_key = raw
            .ssh_key
            .map(|t| self.check_secret(&t, "source.auth.sshKey"));
        let known_hosts = raw
            .known_hosts
            .map(|p| self.check_file(&p, "source.auth.knownHosts", "known_hosts file"));
        GitAuth {
            username: raw.username,
            token,
            password,
            ssh_key,
            known_hosts,
            insecure_skip_host_key_check: raw.insecure_skip_host_key_check,
        }
    }

    fn clusters(&mut self, raw: Vec<RawCluster>) -> Vec<ClusterConfig> {
        if raw.is_empty() {
            self.problem_at_top("clusters", "at least one cluster is needed");
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, c) in raw.into_iter().enumerate() {
            let field = format!("clusters[{i}]");
            if !is_dns_label(&c.name.value) {
                self.problem(
                    &c.name,
                    format!("{field}.name"),
                    format!(
                        "{:?} is not a valid cluster name (lowercase letters, digits and '-', at most 63)",
                        c.name.value
                    ),
                );
            }
            if !seen.insert(c.name.value.clone()) {
                self.problem(
                    &c.name,
                    format!("{field}.name"),
                    format!("cluster {:?} is listed twice", c.name.value),
                );
            }
            let in_cluster = c.in_cluster.as_ref().is_some_and(|b| b.value);
            let connection = match (c.kubeconfig, in_cluster) {
                (Some(k), false) => ClusterConnection::Kubeconfig {
                    path: self.check_file(&k, &format!("{field}.kubeconfig"), "kubeconfig file"),
                    context: c.context,
                },
                (None, true) => {
                    if c.context.is_some() {
                        self.problem(
                            &c.name,
                            format!("{field}.context"),
                            "`context` needs `kubeconfig`",
                        );
                    }
                    ClusterConnection::InCluster
                }
                (Some(k), true) => {
                    self.problem(
                        &k,
                        field.clone(),
                        "set either `kubeconfig` or `inCluster: true`, not both",
                    );
                    ClusterConnection::InCluster
                }
                (None, false) => {
                    self.problem(
                        &c.name,
                        field,
                        "missing `kubeconfig` (with optional `context`) or `inCluster: true`",
                    );
                    ClusterConnection::InCluster
                }
            };
            out.push(ClusterConfig {
                name: c.name.value,
                connection,
            });
        }
        out
    }

    fn commit_status(&mut self, raw: RawCommitStatus) -> CommitStatusConfig {
        let token = self.check_secret(&raw.token, "commitStatus.token");
        if !(raw.api_url.value.starts_with("http://") || raw.api_url.value.starts_with("https://"))
        {
            self.problem(
                &raw.api_url,
                "commitStatus.apiUrl",
                "must be an http:// or https:// URL",
            );
        }
        if raw.repository.value.trim().is_empty() {
            self.problem(
                &raw.repository,
                "commitStatus.repository",
                "must not be empty",
            );
        } else if raw.provider != Provider::Gitlab && raw.repository.value.split('/').count() != 2 {
            self.problem(
                &raw.repository,
                "commitStatus.repository",
                "must be OWNER/NAME",
            );
        }
        CommitStatusConfig {
            provider: raw.provider,
            api_url: raw.api_url.value.trim_end_matches('/').to_owned(),
            repository: raw.repository.value,
            token,
            target_url: raw.target_url,
        }
    }

    fn sync(&mut self, raw: RawSync) -> SyncConfig {
        let namespace = match raw.namespace {
            Some(ns) => {
                if !is_dns_label(&ns.value) {
                    self.problem(
                        &ns,
                        "sync.namespace",
                        format!("{:?} is not a valid namespace name", ns.value),
                    );
                }
                ns.value
            }
            None => DEFAULT_NAMESPACE.to_owned(),
        };
        let concurrency = match raw.concurrency {
            Some(c) if c.value == 0 => {
                self.problem(&c, "sync.concurrency", "must be at least 1");
                1
            }
            Some(c) => c.value,
            None => DEFAULT_CONCURRENCY,
        };
        SyncConfig {
            namespace,
            concurrency: concurrency as usize,
            force_conflicts: raw.force_conflicts.unwrap_or(true),
            apply_timeout: raw.apply_timeout.map_or(DEFAULT_APPLY_TIMEOUT, |d| d.0),
            health_timeout: raw.health_timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0),
            resync_interval: raw.resync_interval.map_or(DEFAULT_RESYNC_INTERVAL, |d| d.0),
        }
    }
}

fn has_inline_credentials(url: &str) -> bool {
    // scheme://user:secret@host — a user alone (ssh://git@host) is fine.
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests;
