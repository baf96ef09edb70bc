//! `charts`: how the daemon reaches the HTTP chart repositories and OCI registries that
//! remote charts come from — a time limit per request, and per host the credentials
//! (`{file: …}` or `{env: …}`, never inline) and whether plain HTTP is allowed there.
//! Which chart and version to fetch is the platform repo's to say; the daemon only holds
//! the means to reach them. Fetched archives live under `source.cacheDir`;
//! `keepUnused` says how long one that no render uses stays there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validation::Validator;
use super::{HumanDuration, SecretRef};

/// Limit for one request to a chart repository, a registry or its token service.
pub const DEFAULT_CHART_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fetched archive no render has used stays in the cache: a day, so that a
/// pull request's chart planned today is not fetched again when it merges tomorrow.
pub const DEFAULT_KEEP_UNUSED: Duration = Duration::from_secs(24 * 3600);

/// `charts` of the config, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartsConfig {
    /// Archives, pins and repository indexes are kept under `<cache_dir>/charts`.
    pub cache_dir: PathBuf,
    pub timeout: Duration,
    /// Per host (`name` or `name:port`): credentials and the plain-HTTP permission.
    pub hosts: Vec<ChartHost>,
    /// How long an archive no render has used stays in the cache (`keepUnused`). The
    /// archives of the daemon's current and previous revision, and of any render under
    /// way, are kept whatever this says.
    pub keep_unused: Duration,
}

/// One chart repository or registry host the daemon has something to say about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartHost {
    /// `name` or `name:port`, as the chart's URL or `oci://` reference writes it.
    pub host: String,
    /// With `password`: basic auth, or the credentials a registry's token service takes.
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Plain HTTP to this host (always allowed to a loopback address): nothing then
    /// protects a repository index from being swapped on the way.
    pub insecure: bool,
}

impl ChartsConfig {
    /// What the config says about `host` (`name` or `name:port`), if anything.
    pub fn host(&self, host: &str) -> Option<&ChartHost> {
        self.hosts
            .iter()
            .find(|h| h.host.eq_ignore_ascii_case(host))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCharts {
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    hosts: Vec<RawChartHost>,
    #[serde(default, rename = "keepUnused")]
    keep_unused: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChartHost {
    host: Spanned<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Spanned<SecretRef>>,
    #[serde(default)]
    insecure: bool,
}

impl Validator<'_> {
    /// `charts`: hosts written as `name[:port]`, each once; a password needs a user.
    pub(super) fn charts(&mut self, raw: Option<RawCharts>, cache_dir: &Path) -> ChartsConfig {
        let raw = raw.unwrap_or_default();
        let mut seen = BTreeSet::new();
        let mut hosts = Vec::with_capacity(raw.hosts.len());
        for (i, h) in raw.hosts.into_iter().enumerate() {
            let field = format!("charts.hosts[{i}]");
            if let Err(why) = check_host(&h.host.value) {
                self.problem(&h.host, format!("{field}.host"), why);
            } else if !seen.insert(h.host.value.to_ascii_lowercase()) {
                self.problem(
                    &h.host,
                    format!("{field}.host"),
                    format!("host {:?} is listed twice", h.host.value),
                );
            }
            let password = h
                .password
                .map(|p| (self.check_secret(&p, &format!("{field}.password")), p));
            match (&h.username, &password) {
                (Some(_), None) => self.problem(
                    &h.host,
                    format!("{field}.password"),
                    "`username` needs `password` ({file: PATH} or {env: NAME})",
                ),
                (None, Some((_, at))) => self.problem(
                    at,
                    format!("{field}.username"),
                    "`password` needs `username`",
                ),
                _ => {}
            }
            hosts.push(ChartHost {
                host: h.host.value,
                username: h.username,
                password: password.map(|(r, _)| r),
                insecure: h.insecure,
            });
        }
        ChartsConfig {
            cache_dir: cache_dir.to_owned(),
            timeout: raw.timeout.map_or(DEFAULT_CHART_TIMEOUT, |d| d.0),
            hosts,
            keep_unused: raw.keep_unused.map_or(DEFAULT_KEEP_UNUSED, |d| d.0),
        }
    }
}

/// `name` or `name:port`: no scheme, path, user or spaces.
fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host: write `name` or `name:port`, without scheme or path"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn load(extra: &str) -> Result<Config, super::super::ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), "apiVersion: v1\n").expect("write");
        std::fs::write(dir.path().join("registry-password"), "pw\n").expect("write");
        let text = format!(
            "source:\n  path: .\n  cacheDir: cache\nclusters:\n  - name: a\n    kubeconfig: kubeconfig\n{extra}"
        );
        Config::from_str(&text, &dir.path().join("pontoon.yaml"))
    }

    fn problems(extra: &str) -> Vec<String> {
        match load(extra) {
            Ok(_) => panic!("expected problems for {extra}"),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.field, p.message))
                .collect(),
        }
    }

    #[test]
    fn charts_default_to_the_source_cache_and_a_minute() {
        let cfg = load("").expect("valid");
        assert_eq!(cfg.charts.timeout, super::DEFAULT_CHART_TIMEOUT);
        assert!(cfg.charts.cache_dir.ends_with("cache"));
        assert!(cfg.charts.hosts.is_empty());
        assert_eq!(cfg.charts.keep_unused, super::DEFAULT_KEEP_UNUSED);
        let cfg = load("charts:\n  keepUnused: 2h\n").expect("valid");
        assert_eq!(cfg.charts.keep_unused, std::time::Duration::from_secs(7200));
    }

    #[test]
    fn a_host_with_credentials_is_read_with_its_secret_resolved() {
        let cfg = load(
            "charts:\n  timeout: 20s\n  hosts:\n    - host: charts.internal:5000\n      username: robot\n      password: {file: registry-password}\n      insecure: true\n",
        )
        .expect("valid");
        let host = cfg.charts.host("CHARTS.internal:5000").expect("host");
        assert_eq!(host.username.as_deref(), Some("robot"));
        assert!(host.insecure);
        assert_eq!(cfg.charts.timeout, std::time::Duration::from_secs(20));
        let Some(super::SecretRef::File(p)) = &host.password else {
            panic!("a file secret: {host:?}");
        };
        assert!(p.is_absolute() && p.ends_with("registry-password"));
    }

    #[test]
    fn bad_hosts_and_half_credentials_are_all_reported_at_their_lines() {
        let got = problems(
            "charts:\n  hosts:\n    - host: https://charts.internal/x\n    - host: a.internal\n      username: robot\n    - host: b.internal\n      password: {env: PONTOON_TEST_UNSET_CHART_PASSWORD}\n    - host: A.internal\n",
        );
        assert_eq!(
            got,
            [
                "9:charts.hosts[0].host: \"https://charts.internal/x\" is not a host: write `name` or `name:port`, without scheme or path",
                "10:charts.hosts[1].password: `username` needs `password` ({file: PATH} or {env: NAME})",
                "13:charts.hosts[2].password: environment variable PONTOON_TEST_UNSET_CHART_PASSWORD is not set",
                "13:charts.hosts[2].username: `password` needs `username`",
                "14:charts.hosts[3].host: host \"A.internal\" is listed twice",
            ]
        );
    }

    #[test]
    fn an_inline_password_is_refused_without_echoing_it() {
        let got = problems(
            "charts:\n  hosts:\n    - host: a.internal\n      username: robot\n      password: hunter2\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("never written inline"), "{got:?}");
        assert!(!got[0].contains("hunter2"), "{got:?}");
    }
}
