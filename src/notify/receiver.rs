//! One receiver's endpoint: builds the request for an event (the body its kind takes; a
//! webhook's signature over a fresh timestamp on each attempt), sends it, and says what
//! the answer means: delivered, try again later (no answer, a server error, 408 or 429
//! with its `Retry-After`), or refused for good (any other 4xx). Queueing and retrying
//! belong to [`super::outbox`].

use std::time::Duration;

use reqwest::StatusCode;

use super::event::Event;
use super::payload;
use crate::config::{ReceiverConfig, ReceiverKind, ReceiverUrl};

/// Longest pause a receiver's `Retry-After` can impose.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// What a receiver said to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Try again later: after the given time, or after backoff when `None`.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good: sending it again would be refused again.
    Rejected(String),
}

/// A request's body and headers.
pub type Request = (Vec<u8>, Vec<(&'static str, String)>);

/// One configured receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    config: ReceiverConfig,
    http: reqwest::Client,
}

impl Receiver {
    pub fn new(config: ReceiverConfig, http: reqwest::Client) -> Receiver {
        Receiver { config, http }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The body and headers of the request for `event`, signed at `timestamp` (Unix
    /// seconds) for a webhook. Errors name the secret that could not be read, never a
    /// value.
    pub fn request(&self, event: &Event, timestamp: u64) -> Result<Request, String> {
        let body = match self.config.kind {
            ReceiverKind::Slack => payload::slack(event),
            ReceiverKind::Teams => payload::teams(event),
            ReceiverKind::Webhook => payload::webhook(event),
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if self.config.kind == ReceiverKind::Webhook {
            let ts = timestamp.to_string();
            let secret = match &self.config.secret {
                Some(s) => s.read().map_err(|e| e.to_string())?,
                None => return Err("a webhook receiver has no secret".to_owned()),
            };
            headers.push((
                payload::SIGNATURE_HEADER,
                payload::signature(secret.expose(), &ts, &body),
            ));
            headers.push((payload::TIMESTAMP_HEADER, ts));
            headers.push((payload::EVENT_HEADER, event.kind.name().to_owned()));
            headers.push((payload::DELIVERY_HEADER, payload::delivery_id(event)));
        }
        Ok((body, headers))
    }

    fn url(&self) -> Result<String, String> {
        match &self.config.url {
            ReceiverUrl::Inline(u) => Ok(u.clone()),
            ReceiverUrl::From(r) => r
                .read()
                .map(|s| s.expose().trim().to_owned())
                .map_err(|e| e.to_string()),
        }
    }

    /// Sends `event` once.
    pub async fn send(&self, event: &Event) -> Outcome {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A secret or URL that cannot be read now may be readable later (a mounted
        // Secret being rotated): retried, not dropped.
        let (body, headers) = match self.request(event, now) {
            Ok(r) => r,
            Err(why) => return Outcome::Retry { after: None, why },
        };
        let url = match self.url() {
            Ok(u) => u,
            Err(why) => return Outcome::Retry { after: None, why },
        };
        let mut req = self.http.post(&url).body(body);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        match req.send().await {
            Ok(resp) => judge(resp.status(), resp.headers()),
            // The error names the URL, which may be a credential (Slack's): leave it out.
            Err(e) => Outcome::Retry {
                after: None,
                why: describe(e),
            },
        }
    }
}

fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What an answer means.
fn judge(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Outcome {
    if status.is_success() {
        return Outcome::Sent;
    }
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_CAP));
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Outcome::Retry {
            after: retry_after,
            why: format!("the receiver answered {status}"),
        };
    }
    Outcome::Rejected(format!("the receiver answered {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn server_errors_and_rate_limits_are_retried_other_refusals_are_not() {
        let none = HeaderMap::new();
        assert_eq!(judge(StatusCode::NO_CONTENT, &none), Outcome::Sent);
        assert!(matches!(
            judge(StatusCode::BAD_GATEWAY, &none),
            Outcome::Retry { after: None, .. }
        ));
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            judge(StatusCode::TOO_MANY_REQUESTS, &h),
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                why: "the receiver answered 429 Too Many Requests".into()
            }
        );
        assert!(matches!(
            judge(StatusCode::NOT_FOUND, &none),
            Outcome::Rejected(_)
        ));
    }
}
