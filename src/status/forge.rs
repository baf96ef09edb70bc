//! Posting commit statuses to GitHub, GitLab or Gitea (and Forgejo), in the background.
//!
//! [`Poster::post`] only queues: syncing never waits for a forge. The queue keeps the
//! newest wanted status per (commit, context), so a forge that is down for an hour gets
//! the final word on each context when it is back, not an hour of history. A status equal
//! to the one last posted for its context is not sent again. Failures retry with capped
//! exponential backoff; rate limits (`Retry-After`, `X-RateLimit-Remaining: 0` with
//! `X-RateLimit-Reset`) pause the queue until the forge allows requests again. A request
//! the forge refuses for good (401, 404, 422) is logged with the forge's reason and dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::sync::Notify;

use super::{State, Status};
use crate::config::{CommitStatusConfig, Provider};

/// Wanted statuses beyond this are dropped, oldest first.
const MAX_QUEUE: usize = 10_000;
/// Remembered posted statuses (for "not twice"), oldest forgotten first.
const MAX_REMEMBERED: usize = 50_000;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
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
    pub fn new(config: &CommitStatusConfig) -> anyhow::Result<Forge> {
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

type Key = (String, String);

#[derive(Default)]
struct Queue {
    /// Newest wanted status per (commit, context), with the order it was queued in.
    wanted: BTreeMap<Key, (u64, Status)>,
    /// What each context last showed on the forge.
    posted: HashMap<Key, (State, String)>,
    posted_order: VecDeque<Key>,
    seq: u64,
    busy: bool,
}

impl Queue {
    fn next(&self) -> Option<(Key, u64, Status)> {
        self.wanted
            .iter()
            .min_by_key(|(_, (seq, _))| *seq)
            .map(|(k, (seq, s))| (k.clone(), *seq, s.clone()))
    }

    fn remember(&mut self, key: Key, status: &Status) {
        if self
            .posted
            .insert(key.clone(), (status.state, status.description.clone()))
            .is_none()
        {
            self.posted_order.push_back(key);
            while self.posted_order.len() > MAX_REMEMBERED {
                if let Some(old) = self.posted_order.pop_front() {
                    self.posted.remove(&old);
                }
            }
        }
    }
}

struct PosterMetrics {
    requests: IntCounterVec,
    queued: IntGauge,
}

/// The background queue of statuses owed to the forge.
#[derive(Clone)]
pub struct Poster {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    idle: Arc<Notify>,
    metrics: Arc<PosterMetrics>,
}

impl Poster {
    pub fn new(registry: &Registry) -> prometheus::Result<Poster> {
        let requests = IntCounterVec::new(
            Opts::new(
                "pontoon_commit_status_requests_total",
                "Commit status requests by result: posted, retried (forge down or rate \
                 limited), rejected (refused for good), dropped (queue full)",
            ),
            &["result"],
        )?;
        let queued = IntGauge::new(
            "pontoon_commit_status_queued",
            "Commit statuses waiting to be posted",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        for r in ["posted", "retried", "rejected", "dropped"] {
            requests.with_label_values(&[r]);
        }
        Ok(Poster {
            queue: Arc::new(Mutex::new(Queue::default())),
            wake: Arc::new(Notify::new()),
            idle: Arc::new(Notify::new()),
            metrics: Arc::new(PosterMetrics { requests, queued }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues statuses; never waits for the forge.
    pub fn post(&self, statuses: impl IntoIterator<Item = Status>) {
        let mut q = self.lock();
        for s in statuses {
            let key = (s.sha.clone(), s.context.clone());
            if q.posted.get(&key) == Some(&(s.state, s.description.clone())) {
                q.wanted.remove(&key);
                continue;
            }
            q.seq += 1;
            let seq = q.seq;
            q.wanted.insert(key, (seq, s));
        }
        while q.wanted.len() > MAX_QUEUE {
            if let Some((key, _, _)) = q.next() {
                q.wanted.remove(&key);
                self.metrics.requests.with_label_values(&["dropped"]).inc();
            }
        }
        self.metrics.queued.set(q.wanted.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// How many statuses wait to be posted.
    pub fn pending(&self) -> usize {
        self.lock().wanted.len()
    }

    /// Posts until the task is dropped or aborted.
    pub async fn run(self, forge: Forge) {
        let mut failures: u32 = 0;
        loop {
            let next = {
                let mut q = self.lock();
                let next = q.next();
                q.busy = next.is_some();
                next
            };
            let Some((key, seq, status)) = next else {
                self.idle.notify_waiters();
                self.wake.notified().await;
                continue;
            };
            let outcome = forge.send(&status).await;
            let wait = {
                let mut q = self.lock();
                let wait = match &outcome {
                    Outcome::Posted => {
                        failures = 0;
                        q.remember(key.clone(), &status);
                        self.metrics.requests.with_label_values(&["posted"]).inc();
                        tracing::debug!(sha = %status.sha, context = %status.context, state = status.state.as_str(), "commit status posted");
                        None
                    }
                    Outcome::Rejected(why) => {
                        self.metrics.requests.with_label_values(&["rejected"]).inc();
                        tracing::error!(sha = %status.sha, context = %status.context, reason = %why, "the forge refused a commit status");
                        None
                    }
                    Outcome::Retry { after, why } => {
                        failures += 1;
                        self.metrics.requests.with_label_values(&["retried"]).inc();
                        let wait = after.unwrap_or_else(|| {
                            crate::daemon::scheduler::backoff(BACKOFF_BASE, BACKOFF_CAP, failures)
                        });
                        tracing::warn!(sha = %status.sha, context = %status.context, reason = %why, retry_in = ?wait, "commit status not posted yet");
                        Some(wait)
                    }
                };
                // Done with this entry, unless a newer status replaced it meanwhile.
                if wait.is_none() && q.wanted.get(&key).is_some_and(|(s, _)| *s == seq) {
                    q.wanted.remove(&key);
                }
                q.busy = false;
                self.metrics.queued.set(q.wanted.len() as i64);
                wait
            };
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Waits until everything queued was posted (or refused), at most `deadline`. Returns
    /// how many statuses were still owed.
    pub async fn flush(&self, deadline: Duration) -> usize {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let idle = self.idle.notified();
            {
                let q = self.lock();
                if q.wanted.is_empty() && !q.busy {
                    return 0;
                }
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(until, idle).await.is_err() {
                return self.pending();
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn status() -> Status {
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

    #[test]
    fn identical_statuses_are_not_queued_twice_and_newest_wins() {
        let poster = Poster::new(&Registry::new()).expect("poster");
        let mut s = status();
        poster.post([s.clone()]);
        s.state = State::Success;
        s.description = "applied 3".into();
        poster.post([s.clone()]);
        assert_eq!(poster.pending(), 1);
        {
            let mut q = poster.lock();
            let next = q.next().expect("one wanted");
            assert_eq!(next.2.state, State::Success);
            let key = next.0.clone();
            q.remember(key.clone(), &next.2);
            q.wanted.remove(&key);
        }
        poster.post([s]);
        assert_eq!(poster.pending(), 0, "equal to what the forge shows already");
    }
}
