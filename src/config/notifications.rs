//! `notifications`: the receivers the daemon may notify (Slack, Microsoft Teams, a signed
//! generic webhook), each by name, with its URL written inline or read like any other
//! secret (`urlFrom`), and the names notified for every unit (`platform`). Teams pick
//! further receivers by name in their team.yaml, so no URL or secret lives in the repo.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::validation::Validator;
use super::{HumanDuration, SecretRef, is_dns_label};

/// The first wait before a failed notification is sent again, doubling up to the most.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);

/// Which kind of receiver: what body it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams workflow webhook (an Adaptive Card).
    Teams,
    /// pontoon's own JSON, signed with HMAC-SHA256.
    Webhook,
}

/// Where a receiver's URL comes from. Slack's and Teams' webhook URLs are credentials:
/// `urlFrom` keeps them out of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverUrl {
    Inline(String),
    From(SecretRef),
}

/// One receiver, checked.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: ReceiverUrl,
    /// The HMAC key of a `webhook` receiver.
    pub secret: Option<SecretRef>,
}

/// `notifications`, checked: every name unique and every name `platform` lists defined.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub receivers: Vec<ReceiverConfig>,
    /// Receivers told about every unit.
    pub platform: Vec<String>,
    /// Backoff between attempts at a receiver that fails: starts at `initial`, doubles,
    /// at most `max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            receivers: Vec::new(),
            platform: Vec::new(),
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNotifications {
    #[serde(default)]
    receivers: Vec<Spanned<RawReceiver>>,
    #[serde(default)]
    platform: Vec<Spanned<String>>,
    #[serde(default)]
    retry: RawRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<HumanDuration>,
    max: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawReceiver {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: ReceiverKind,
    url: Option<Spanned<String>>,
    url_from: Option<Spanned<SecretRef>>,
    secret: Option<Spanned<SecretRef>>,
}

impl Validator<'_> {
    pub(super) fn notifications(&mut self, raw: Option<RawNotifications>) -> NotificationsConfig {
        let Some(raw) = raw else {
            return NotificationsConfig::default();
        };
        let mut names = BTreeSet::new();
        let mut receivers = Vec::new();
        for (i, at) in raw.receivers.iter().enumerate() {
            let field = format!("notifications.receivers[{i}]");
            let name = &at.value.name;
            if !is_dns_label(&name.value) {
                self.problem(
                    name,
                    format!("{field}.name"),
                    format!(
                        "{:?} is not a valid receiver name (lowercase letters, digits and '-')",
                        name.value
                    ),
                );
            } else if !names.insert(name.value.clone()) {
                self.problem(
                    name,
                    format!("{field}.name"),
                    format!("receiver {:?} is defined twice", name.value),
                );
            }
            if let Some(r) = self.receiver(at, &field) {
                receivers.push(r);
            }
        }
        let mut platform = Vec::new();
        for (i, n) in raw.platform.iter().enumerate() {
            if !names.contains(&n.value) {
                self.problem(
                    n,
                    format!("notifications.platform[{i}]"),
                    format!("no receiver named {:?} in notifications.receivers", n.value),
                );
            }
            platform.push(n.value.clone());
        }
        let retry_initial = raw.retry.initial.map_or(DEFAULT_RETRY_INITIAL, |d| d.0);
        let retry_max = raw.retry.max.map_or(DEFAULT_RETRY_MAX, |d| d.0);
        if retry_max < retry_initial {
            self.problem_at_top("notifications.retry", "`max` must be at least `initial`");
        }
        NotificationsConfig {
            receivers,
            platform,
            retry_initial,
            retry_max,
        }
    }

    /// A receiver: exactly one of `url` and `urlFrom`, an http(s) URL, and a `secret` for
    /// a webhook (and only for one).
    fn receiver(&mut self, at: &Spanned<RawReceiver>, field: &str) -> Option<ReceiverConfig> {
        let raw = &at.value;
        let url = match (&raw.url, &raw.url_from) {
            (Some(url), None) => {
                if !(url.value.starts_with("https://") || url.value.starts_with("http://")) {
                    self.problem(
                        url,
                        format!("{field}.url"),
                        "must be an http:// or https:// URL",
                    );
                }
                ReceiverUrl::Inline(url.value.clone())
            }
            (None, Some(from)) => {
                ReceiverUrl::From(self.check_secret(from, &format!("{field}.urlFrom")))
            }
            (Some(url), Some(_)) => {
                self.problem(
                    url,
                    format!("{field}.url"),
                    "set either `url` or `urlFrom`, not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    at,
                    field.to_owned(),
                    "needs `url` or `urlFrom` (a file or environment variable holding the URL)",
                );
                return None;
            }
        };
        let secret = match (&raw.secret, raw.kind) {
            (Some(s), ReceiverKind::Webhook) => {
                Some(self.check_secret(s, &format!("{field}.secret")))
            }
            (None, ReceiverKind::Webhook) => {
                self.problem(
                    at,
                    format!("{field}.secret"),
                    "a webhook receiver needs `secret` ({file: PATH} or {env: NAME}): its requests are signed with it",
                );
                None
            }
            (Some(s), _) => {
                self.problem(
                    s,
                    format!("{field}.secret"),
                    "only a `webhook` receiver is signed; Slack and Teams take no secret",
                );
                None
            }
            (None, _) => None,
        };
        Some(ReceiverConfig {
            name: raw.name.value.clone(),
            kind: raw.kind,
            url,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError};
    use super::*;

    fn load(dir: &Path, notifications: &str) -> Result<Config, ConfigError> {
        std::fs::write(dir.join("kubeconfig"), "apiVersion: v1\nkind: Config\n").expect("write");
        let text = format!(
            "source:\n  path: .\nclusters:\n  - name: prod\n    kubeconfig: kubeconfig\n{notifications}"
        );
        Config::from_str(&text, &dir.join("pontoon.yaml"))
    }

    #[test]
    fn receivers_read_with_their_urls_and_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("slack-url"),
            "https://hooks.example.com/x\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("hmac"), "k\n").expect("write");
        let c = load(
            dir.path(),
            "notifications:\n  receivers:\n    - {name: ops, type: slack, urlFrom: {file: slack-url}}\n    - {name: audit, type: webhook, url: \"https://audit.example.com/in\", secret: {file: hmac}}\n    - {name: shop, type: teams, url: \"https://teams.example.com/wf\"}\n  platform: [ops]\n  retry: {initial: 100ms, max: 2s}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let n = &c.notifications;
        let names: Vec<&str> = n.receivers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ops", "audit", "shop"]);
        assert_eq!(
            n.receivers[0].url,
            ReceiverUrl::From(SecretRef::File(dir.path().join("slack-url")))
        );
        assert_eq!(n.receivers[1].kind, ReceiverKind::Webhook);
        assert!(n.receivers[1].secret.is_some());
        assert_eq!(n.platform, ["ops"]);
        assert_eq!(
            (n.retry_initial, n.retry_max),
            (Duration::from_millis(100), Duration::from_secs(2))
        );
    }

    #[test]
    fn every_receiver_mistake_is_reported_at_its_line_in_one_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(
            dir.path(),
            "notifications:\n  receivers:\n    - {name: ops, type: slack, url: \"ftp://x\"}\n    - {name: ops, type: teams, url: \"https://t.example.com\"}\n    - {name: signed, type: webhook, url: \"https://w.example.com\"}\n    - {name: Bad_Name, type: slack, url: \"https://s.example.com\", secret: {env: PONTOON_TEST_UNSET_SECRET}}\n    - {name: nourl, type: slack}\n  platform: [ops, missing]\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        for expected in [
            ":8:37: notifications.receivers[0].url: must be an http:// or https:// URL",
            ":9:14: notifications.receivers[1].name: receiver \"ops\" is defined twice",
            ":10:7: notifications.receivers[2].secret: a webhook receiver needs `secret`",
            ":11:14: notifications.receivers[3].name: \"Bad_Name\" is not a valid receiver name",
            ":11:75: notifications.receivers[3].secret: only a `webhook` receiver is signed",
            ":12:7: notifications.receivers[4]: needs `url` or `urlFrom`",
            ":13:19: notifications.platform[1]: no receiver named \"missing\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
