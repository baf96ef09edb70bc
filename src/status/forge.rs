//! One forge's commit-status API: GitHub, GitLab or Gitea (and Forgejo). Builds each
//! request, sends it, and says what the answer means ([`Outcome`]): posted, retry later
//! (server errors; rate limits from `Retry-After`, or `X-RateLimit-Remaining: 0` with
//! `X-RateLimit-Reset`), or refused for good (401, 404, 422, with the forge's reason).
//! Queueing and retrying belong to [`super::poster`].

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::{State, Status};
use crate::config::{CommitStatusConfig, Provider};
/// Longest pause a forge's rate-limit headers can impose.
const RATE_LIMIT_CAP: Duration = Duration::from_secs(3600);
/// A secondary rate limit without headers: GitHub asks for at least a minute.
const RATE_LIMIT_DEFAULT: Duration = Duration::from_secs(60);

/// What a forge said to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Posted,
    /// Try again later: after the given time, or after backoff when `None`.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// The forge refuses this request for good.
    Rejected(String),
}

/// One forge's API.
#[derive(Debug, Clone)]
pub struct Forge {
    provider: Provider,
    api_url: String,
    repository: String,
    token: crate::config::SecretRef,
    target_url: Option<String>,
    http: reqwest::Client,
}

impl Forge {
    pub fn new(config: &CommitStatusConfig) -> Result<Forge, super::StatusError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("pontoon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Forge {
            provider: config.provider,
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            repository: config.repository.clone(),
            token: config.token.clone(),
            target_url: config.target_url.clone(),
            http,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The target URL for a status: the configured one with `{cluster}`, `{team}` and
    /// `{revision}` filled in.
    pub fn target_url(&self, status: &Status) -> Option<String> {
        self.target_url.as_ref().map(|t| {
            t.replace("{cluster}", status.cluster.as_deref().unwrap_or(""))
                .replace("{team}", status.team.as_deref().unwrap_or(""))
                .replace("{revision}", &status.sha)
        })
    }

    /// The method-less parts of the request: URL and JSON body.
    pub fn request_parts(&self, status: &Status) -> (String, serde_json::Value) {
        let target = self.target_url(status);
        match self.provider {
            Provider::Github | Provider::Gitea => {
                let mut body = serde_json::json!({
                    "state": status.state.as_str(),
                    "context": status.context,
                    "description": status.description,
                });
                if let Some(t) = target {
                    body["target_url"] = t.into();
                }
                let url = format!(
                    "{}/repos/{}/statuses/{}",
                    self.api_url, self.repository, status.sha
                );
                (url, body)
            }
            Provider::Gitlab => {
                let state = match status.state {
                    State::Pending => "pending",
                    State::Success => "success",
                    State::Failure => "failed",
                    // GitLab has a word for a check that was stopped before it finished.
                    State::Error => "canceled",
                };
                let mut body = serde_json::json!({
                    "state": state,
                    "name": status.context,
                    "description": status.description,
                });
                if let Some(t) = target {
                    body["target_url"] = t.into();
                }
                let url = format!(
                    "{}/projects/{}/statuses/{}",
                    self.api_url,
                    encode_path_segment(&self.repository),
                    status.sha
                );
                (url, body)
            }
        }
    }

    /// Posts one status and classifies the answer.
    pub async fn send(&self, status: &Status) -> Outcome {
        let token = match self.token.read() {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    why: format!("commit status token: {e}"),
                };
            }
        };
        let (url, body) = self.request_parts(status);
        let request = self.http.post(&url).json(&body);
        let request = match self.provider {
            Provider::Github => request
                .bearer_auth(token.expose())
                // GitHub's media type, and plain JSON as its API description names the response.
                .header("Accept", "application/vnd.github+json, application/json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            Provider::Gitlab => request.header("PRIVATE-TOKEN", token.expose()),
            Provider::Gitea => request.header("Authorization", format!("token {}", token.expose())),
        };
        match request.send().await {
            Ok(response) => {
                let code = response.status();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                classify(self.provider, code, &headers, &text, now_epoch())
            }
            Err(e) => Outcome::Retry {
                after: None,
                // reqwest's message names the URL, never the headers carrying the token.
                why: format!(
                    "cannot reach the forge: {}",
                    without_query(&crate::describe(&e))
                ),
            },
        }
    }
}

/// GitLab addresses a project by its URL-encoded path (`group%2Fproject`) or its id.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn without_query(s: &str) -> String {
    // Query strings may carry tokens on some forges' URLs; none of ours do, but be sure.
    match s.find('?') {
        Some(i) => {
            let end = s[i..].find([' ', ')']).map(|j| i + j).unwrap_or(s.len());
            format!("{}{}", &s[..i], &s[end..])
        }
        None => s.to_owned(),
    }
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What an answer means, from its code, headers and body. Pure, for tests.
pub fn classify(
    provider: Provider,
    code: StatusCode,
    headers: &HeaderMap,
    body: &str,
    now: u64,
) -> Outcome {
    if code.is_success() {
        return Outcome::Posted;
    }
    let reason = forge_message(body).unwrap_or_else(|| code.to_string());
    if let Some(after) = rate_limited(code, headers, now) {
        return Outcome::Retry {
            after: Some(after),
            why: format!("rate limited ({code}): {reason}"),
        };
    }
    if code == StatusCode::TOO_MANY_REQUESTS {
        return Outcome::Retry {
            after: Some(RATE_LIMIT_DEFAULT),
            why: format!("rate limited ({code}): {reason}"),
        };
    }
    if code.is_server_error() || code == StatusCode::REQUEST_TIMEOUT {
        return Outcome::Retry {
            after: None,
            why: format!("forge error {code}: {reason}"),
        };
    }
    // GitLab refuses to move a status to the state it already has: it is posted.
    if provider == Provider::Gitlab
        && code == StatusCode::BAD_REQUEST
        && reason.contains("Cannot transition status")
    {
        return Outcome::Posted;
    }
    Outcome::Rejected(format!("{code}: {reason}"))
}

/// How long a rate-limited answer asks to wait, if it is one.
fn rate_limited(code: StatusCode, headers: &HeaderMap, now: u64) -> Option<Duration> {
    if code != StatusCode::FORBIDDEN && code != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs).min(RATE_LIMIT_CAP));
    }
    let exhausted = header("x-ratelimit-remaining").or(header("ratelimit-remaining")) == Some("0");
    if exhausted {
        let reset = header("x-ratelimit-reset")
            .or(header("ratelimit-reset"))
            .and_then(|v| v.parse::<u64>().ok());
        let wait = match reset {
            Some(at) if at > now => Duration::from_secs(at - now + 1),
            Some(_) => Duration::from_secs(1),
            None => RATE_LIMIT_DEFAULT,
        };
        return Some(wait.min(RATE_LIMIT_CAP));
    }
    None
}

/// The forge's own words from an error body (`message` on all three forges).
fn forge_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let m = v.get("message")?;
    let text = match m {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(super::truncate(&text, 300))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn success_and_permanent_refusals() {
        let h = HeaderMap::new();
        assert_eq!(
            classify(Provider::Github, StatusCode::CREATED, &h, "{}", 0),
            Outcome::Posted
        );
        let out = classify(
            Provider::Github,
            StatusCode::UNPROCESSABLE_ENTITY,
            &h,
            r#"{"message":"Validation Failed"}"#,
            0,
        );
        assert_eq!(
            out,
            Outcome::Rejected("422 Unprocessable Entity: Validation Failed".into())
        );
        // A 403 without rate-limit headers is a permission problem, not a pause.
        assert!(matches!(
            classify(Provider::Github, StatusCode::FORBIDDEN, &h, "{}", 0),
            Outcome::Rejected(_)
        ));
    }

    #[test]
    fn rate_limits_pause_for_as_long_as_the_forge_says() {
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(
            classify(Provider::Github, StatusCode::FORBIDDEN, &h, "{}", 0),
            Outcome::Retry {
                after: Some(Duration::from_secs(30)),
                why: "rate limited (403 Forbidden): 403 Forbidden".into()
            }
        );
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1100"),
        ]);
        match classify(Provider::Github, StatusCode::FORBIDDEN, &h, "{}", 1000) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(101))),
            other => panic!("{other:?}"),
        }
        // GitLab's header names.
        let h = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1010")]);
        match classify(
            Provider::Gitlab,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            "",
            1000,
        ) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(11))),
            other => panic!("{other:?}"),
        }
        // Never longer than an hour, whatever a header says.
        let h = headers(&[("retry-after", "999999")]);
        match classify(Provider::Gitea, StatusCode::TOO_MANY_REQUESTS, &h, "", 0) {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(RATE_LIMIT_CAP)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_errors_back_off() {
        let h = HeaderMap::new();
        assert!(matches!(
            classify(Provider::Gitea, StatusCode::BAD_GATEWAY, &h, "", 0),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn gitlab_same_state_twice_counts_as_posted() {
        let body =
            r#"{"message":"Cannot transition status via :enqueue from :pending (Reasons: )"}"#;
        assert_eq!(
            classify(
                Provider::Gitlab,
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                body,
                0
            ),
            Outcome::Posted
        );
    }

    fn forge(provider: Provider, api: &str, repo: &str, target: Option<&str>) -> Forge {
        Forge::new(&CommitStatusConfig {
            provider,
            api_url: api.into(),
            repository: repo.into(),
            token: crate::config::SecretRef::Env("PONTOON_TEST_UNSET".into()),
            target_url: target.map(Into::into),
        })
        .expect("forge")
    }

    /// A failed status of `payments` on `prod`, for the status module's tests.
    pub(in crate::status) fn status() -> Status {
        Status {
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            context: "pontoon/prod/payments".into(),
            state: State::Failure,
            description: "Failed: 1 error".into(),
            cluster: Some("prod".into()),
            team: Some("payments".into()),
        }
    }

    #[test]
    fn request_shapes_per_provider() {
        let f = forge(
            Provider::Github,
            "https://ghe.example.com/api/v3/",
            "platform/repo",
            Some("https://pontoon.example.com/#{cluster}/{team}@{revision}"),
        );
        let (url, body) = f.request_parts(&status());
        assert_eq!(
            url,
            "https://ghe.example.com/api/v3/repos/platform/repo/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "pontoon/prod/payments");
        assert_eq!(
            body["target_url"],
            "https://pontoon.example.com/#prod/payments@0123456789abcdef0123456789abcdef01234567"
        );

        let f = forge(
            Provider::Gitlab,
            "https://gitlab.example.com/api/v4",
            "group/sub/platform",
            None,
        );
        let (url, body) = f.request_parts(&status());
        assert_eq!(
            url,
            "https://gitlab.example.com/api/v4/projects/group%2Fsub%2Fplatform/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(body["state"], "failed");
        assert_eq!(body["name"], "pontoon/prod/payments");
        assert!(body.get("target_url").is_none());

        let f = forge(
            Provider::Gitea,
            "http://127.0.0.1:3000/api/v1",
            "org/platform",
            None,
        );
        let (url, body) = f.request_parts(&status());
        assert_eq!(
            url,
            "http://127.0.0.1:3000/api/v1/repos/org/platform/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(body["state"], "failure");
    }
}
