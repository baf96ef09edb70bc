//! Validation: from the raw document to a [`Config`]. Every path must exist, every
//! environment variable be set, every name be valid; every problem is collected (with
//! its line and column) before any is reported, so a user fixes the file in one round.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::raw::{
    RawCluster, RawCommitStatus, RawConfig, RawDecryption, RawGitAuth, RawGitRef, RawSource,
    RawSync, RawWebhook,
};
use super::{
    ClusterConfig, ClusterConnection, CommitStatusConfig, Config, ConfigError, ConfigProblem,
    DEFAULT_APPLY_TIMEOUT, DEFAULT_CONCURRENCY, DEFAULT_GIT_TIMEOUT, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_LEASE_DURATION, DEFAULT_NAMESPACE, DEFAULT_POLL_INTERVAL, DEFAULT_RESYNC_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT, DecryptionConfig, DriftConfig, GitAuth, GitRef, LeaderElectionConfig,
    ListenConfig, LogConfig, MAX_SHARDS, Owner, Provider, SecretRef, SourceConfig, SourceLocation,
    SyncConfig, WebhookAuth, full_resync_every_default, is_dns_label,
};

pub(super) fn yaml_problem(path: &Path, e: &serde_saphyr::Error) -> ConfigProblem {
    let (line, column) = crate::yaml::error_position(e);
    ConfigProblem {
        file: path.to_owned(),
        line,
        column,
        field: String::new(),
        message: crate::yaml::error_message(e),
    }
}

pub(super) struct Validator<'a> {
    file: &'a Path,
    base: PathBuf,
    problems: Vec<ConfigProblem>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
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

    pub(super) fn problem<T>(
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
    pub(super) fn problem_at_top(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            file: self.file.to_owned(),
            line: 1,
            column: 1,
            field: field.into(),
            message: message.into(),
        });
    }

    /// `packages`, each field defaulted; a tool named by a path (not a bare name looked
    /// up on `PATH`) is resolved like every path of the file.
    fn packages(&self, raw: super::raw::RawPackages) -> super::PackagesConfig {
        let default = super::PackagesConfig::default();
        let tool = |p: Option<PathBuf>, default: PathBuf| match p {
            Some(p) if p.components().count() > 1 || p.starts_with("~") => self.resolve(&p),
            Some(p) => p,
            None => default,
        };
        super::PackagesConfig {
            helm: tool(raw.helm, default.helm),
            kustomize: tool(raw.kustomize, default.kustomize),
            timeout: raw.timeout.map_or(default.timeout, |d| d.0),
            cache_entries: raw.cache_entries.unwrap_or(default.cache_entries).max(1),
        }
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

    pub(super) fn check_secret(&mut self, at: &Spanned<SecretRef>, field: &str) -> SecretRef {
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

    pub(super) fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let source = self.source(raw.source);
        let clusters = self.clusters(raw.clusters);
        let commit_status = raw.commit_status.map(|c| self.commit_status(c));
        let shards_at = raw.sync.shards.clone();
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
                lease_name: l.lease_name.unwrap_or_else(|| sync.owner.lease_name()),
                lease_duration: l.lease_duration.map_or(DEFAULT_LEASE_DURATION, |d| d.0),
            }
        });
        if let Some(at) = shards_at.filter(|_| sync.shards > 1 && leader_election.is_none()) {
            self.problem(
                &at,
                "sync.shards",
                "more than one shard needs `leaderElection`: each shard is a Lease on its cluster",
            );
        }
        let decryption = self.decryption(raw.decryption);
        let charts = self.charts(raw.charts, &source.cache_dir);
        let notifications = self.notifications(raw.notifications);
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
                decryption,
                packages: self.packages(raw.packages),
                charts,
                notifications,
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
        let plan_forks = raw.webhook.as_ref().is_some_and(|w| w.value.plan_forks);
        let webhook = self.webhook(raw.webhook);
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
            webhook,
            plan_forks,
            cache_dir,
        }
    }

    /// `source.webhook`: a secret that is there and not empty, or an explicit
    /// `insecure: true`; no section at all turns the endpoints off.
    fn webhook(&mut self, raw: Option<Spanned<RawWebhook>>) -> WebhookAuth {
        const FIELD: &str = "source.webhook";
        let Some(w) = raw else {
            return WebhookAuth::Off;
        };
        let insecure = w.value.insecure.as_ref().is_some_and(|b| b.value);
        match (&w.value.secret, insecure) {
            (Some(secret), false) => {
                let before = self.problems.len();
                let r = self.check_secret(secret, "source.webhook.secret");
                if self.problems.len() == before {
                    self.check_not_empty(secret, &r, "source.webhook.secret");
                }
                WebhookAuth::Secret(r)
            }
            (None, true) => WebhookAuth::Insecure,
            (Some(secret), true) => {
                self.problem(
                    secret,
                    FIELD,
                    "set either `secret` or `insecure: true`, not both",
                );
                WebhookAuth::Insecure
            }
            (None, false) => {
                self.problem(
                    &w,
                    FIELD,
                    "set `secret` ({file: PATH} or {env: NAME}) to check each request's signature, or `insecure: true` to accept unsigned requests from anyone who can reach /webhooks/*",
                );
                WebhookAuth::Off
            }
        }
    }

    /// A secret that holds nothing (or only whitespace) is refused: an HMAC with an empty
    /// key, or an empty GitLab token header, would pass for anyone.
    fn check_not_empty(&mut self, at: &Spanned<SecretRef>, r: &SecretRef, field: &str) {
        let what = match r {
            SecretRef::File(p) => format!("secret file {}", p.display()),
            SecretRef::Env(name) => format!("environment variable {name}"),
        };
        match r.read() {
            Ok(s) if s.expose().trim().is_empty() => self.problem(
                at,
                field,
                format!("{what} is empty; an empty secret would let any request through"),
            ),
            Ok(_) => {}
            Err(e) => self.problem(at, field, e.to_string()),
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

    /// Each key's file (or variable) exists and holds age identities: a bad key is a
    /// problem of the config, found by `config check`, not at the first encrypted file.
    fn decryption(&mut self, raw: Option<RawDecryption>) -> DecryptionConfig {
        let mut keys = std::collections::BTreeMap::new();
        for (name, at) in raw.map(|r| r.keys).unwrap_or_default() {
            let field = format!("decryption.keys.{name}");
            let problems = self.problems.len();
            let r = self.check_secret(&at, &field);
            let one = DecryptionConfig {
                keys: [(name.clone(), r.clone())].into(),
            };
            if self.problems.len() == problems
                && let Err(e) = one.keyring()
            {
                self.problem(&at, &field, e.to_string());
            }
            keys.insert(name, r);
        }
        DecryptionConfig { keys }
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
        let owner = match raw.owner {
            Some(o) => Owner::new(&o.value).unwrap_or_else(|problem| {
                self.problem(&o, "sync.owner", problem);
                Owner::default()
            }),
            None => Owner::default(),
        };
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
        let shards = match raw.shards {
            Some(n) if n.value == 0 || n.value > MAX_SHARDS => {
                self.problem(
                    &n,
                    "sync.shards",
                    format!("must be between 1 and {MAX_SHARDS}"),
                );
                1
            }
            Some(n) => n.value,
            None => 1,
        };
        let resync_interval = raw.resync_interval.map_or(DEFAULT_RESYNC_INTERVAL, |d| d.0);
        let full_resync_every = match raw.full_resync_every {
            Some(n) if n.value == 0 => {
                self.problem(&n, "sync.fullResyncEvery", "must be at least 1");
                1
            }
            Some(n) => n.value,
            None => full_resync_every_default(resync_interval),
        };
        SyncConfig {
            owner,
            namespace,
            concurrency: concurrency as usize,
            force_conflicts: raw.force_conflicts.unwrap_or(true),
            apply_timeout: raw.apply_timeout.map_or(DEFAULT_APPLY_TIMEOUT, |d| d.0),
            health_timeout: raw.health_timeout.map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0),
            resync_interval,
            full_resync_every,
            shards,
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
