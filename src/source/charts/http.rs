//! The HTTP under chart fetching: one client with the configured time limit, the rule
//! that plain HTTP goes only to a loopback address or a host marked `insecure: true`,
//! per-host credentials read when a request needs them, bodies read up to a limit, and
//! the registry auth challenge (`WWW-Authenticate: Bearer` → token service, or `Basic`).
//! No URL in an error carries credentials, and no error repeats a secret.

use reqwest::header::{ACCEPT, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

use super::FetchError;
use crate::config::{ChartsConfig, Secret};

/// Why plain HTTP was refused, in every message that refuses it.
const PLAIN_HTTP_RULE: &str = "only a loopback address, or a host marked `insecure: true` under charts.hosts, is reached without TLS";
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// Largest token service answer read.
const TOKEN_LIMIT: usize = 1 << 20;

pub(super) struct Http {
    client: reqwest::Client,
    config: ChartsConfig,
}

/// How a request authenticates.
#[derive(Clone, Default)]
pub(super) enum Auth {
    #[default]
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

impl Http {
    pub(super) fn new(config: &ChartsConfig) -> Result<Http, FetchError> {
        // A redirect meets the rule a URL meets: plain HTTP to a host not allowed it would
        // let an index and its archives be swapped together on the way.
        let hosts = config.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if attempt.url().scheme() == "https"
                || (attempt.url().scheme() == "http" && plain_http_allowed(&hosts, attempt.url()))
            {
                attempt.follow()
            } else {
                let refused = format!(
                    "redirected to {}, which is refused: {}",
                    without_query(attempt.url()),
                    PLAIN_HTTP_RULE
                );
                attempt.error(refused)
            }
        });
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(redirects)
            .user_agent(concat!("pontoon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Http {
            client,
            config: config.clone(),
        })
    }

    /// Whether `url`'s host may be reached over plain HTTP.
    pub(super) fn plain_http_allowed(&self, url: &Url) -> bool {
        plain_http_allowed(&self.config, url)
    }

    /// Refuses what pontoon never fetches: plain HTTP to a host not allowed it, other
    /// schemes, and credentials written in the URL.
    pub(super) fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Refused(
                "credentials must not be written in a chart URL; give them to the daemon under charts.hosts".to_owned(),
            ));
        }
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.plain_http_allowed(url) => Ok(()),
            "http" => Err(FetchError::Refused(format!(
                "plain HTTP to {} is refused: {PLAIN_HTTP_RULE}",
                host_port(url)
            ))),
            other => Err(FetchError::Refused(format!(
                "{other}:// is not fetched (https://, or http:// where allowed)"
            ))),
        }
    }

    fn host_config(&self, url: &Url) -> Option<&crate::config::ChartHost> {
        host_config(&self.config, url)
    }

    /// The configured user and password for `url`'s host, read now (off the runtime).
    pub(super) async fn credentials(
        &self,
        url: &Url,
    ) -> Result<Option<(String, Secret)>, FetchError> {
        let Some(host) = self.host_config(url) else {
            return Ok(None);
        };
        let (Some(user), Some(at)) = (host.username.clone(), host.password.clone()) else {
            return Ok(None);
        };
        let secret = tokio::task::spawn_blocking(move || at.read())
            .await
            .map_err(|e| FetchError::Credentials(format!("read task failed: {e}")))?
            .map_err(|e| FetchError::Credentials(e.to_string()))?;
        Ok(Some((user, secret)))
    }

    /// One GET, after [`Http::check`].
    pub(super) async fn get(
        &self,
        url: &Url,
        accept: Option<&str>,
        auth: &Auth,
        headers: HeaderMap,
    ) -> Result<Response, FetchError> {
        self.check(url)?;
        let mut request = self.client.get(url.clone()).headers(headers);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request = match auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        };
        request.send().await.map_err(|e| FetchError::Transport {
            url: url.to_string(),
            message: without_url(&e),
        })
    }

    /// A GET that answers a registry's auth challenge once: `Bearer` fetches a token from
    /// the named service (with the host's credentials if any), `Basic` sends them.
    /// `auth` keeps what worked for the next request of the same fetch.
    pub(super) async fn get_authenticated(
        &self,
        url: &Url,
        accept: &str,
        auth: &mut Auth,
    ) -> Result<Response, FetchError> {
        let response = self.get(url, Some(accept), auth, HeaderMap::new()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse);
        let credentials = self.credentials(url).await?;
        *auth = match (challenge, credentials) {
            (Some(Challenge::Bearer(params)), credentials) => {
                Auth::Bearer(self.token(&params, credentials).await?)
            }
            (_, Some((user, password))) => Auth::Basic(user, password),
            (_, None) => return Err(unauthorized(url, false)),
        };
        let response = self.get(url, Some(accept), auth, HeaderMap::new()).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let had = self.host_config(url).is_some_and(|h| h.username.is_some());
            return Err(unauthorized(url, had));
        }
        Ok(response)
    }

    /// A token from the service a `Bearer` challenge names.
    async fn token(
        &self,
        params: &[(String, String)],
        credentials: Option<(String, Secret)>,
    ) -> Result<Secret, FetchError> {
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = param("realm").ok_or_else(|| {
            FetchError::Auth("the registry asked for a token but named no service (realm)".into())
        })?;
        let mut url = Url::parse(realm)
            .map_err(|e| FetchError::Auth(format!("the token service {realm:?} is no URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            for key in ["service", "scope"] {
                if let Some(v) = param(key) {
                    query.append_pair(key, v);
                }
            }
        }
        let auth = match credentials {
            Some((user, password)) => Auth::Basic(user, password),
            None => Auth::None,
        };
        let response = self.get(&url, None, &auth, HeaderMap::new()).await?;
        if !response.status().is_success() {
            return Err(FetchError::Auth(format!(
                "the token service {} answered {}",
                without_query(&url),
                response.status()
            )));
        }
        let body = read_body(response, &url, TOKEN_LIMIT).await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Auth(format!(
                "the token service {} gave no token: {e}",
                without_query(&url)
            ))
        })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                FetchError::Auth(format!(
                    "the token service {} gave no token",
                    without_query(&url)
                ))
            })
    }
}

/// What the config says about `url`'s host: `name:port` first, then `name`.
fn host_config<'a>(config: &'a ChartsConfig, url: &Url) -> Option<&'a crate::config::ChartHost> {
    config
        .host(&host_port(url))
        .or_else(|| url.host_str().and_then(|h| config.host(h)))
}

/// Plain HTTP goes to a loopback address, or to a host marked `insecure: true`.
fn plain_http_allowed(config: &ChartsConfig, url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    };
    loopback || host_config(config, url).is_some_and(|h| h.insecure)
}

fn unauthorized(url: &Url, had_credentials: bool) -> FetchError {
    let host = host_port(url);
    FetchError::Auth(if had_credentials {
        format!("{host} refused the credentials charts.hosts gives it")
    } else {
        format!("{host} needs credentials: give them under charts.hosts")
    })
}

/// Reads a body of at most `limit` bytes.
pub(super) async fn read_body(
    mut response: Response,
    url: &Url,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge {
            url: without_query(url),
            limit,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::Transport {
        url: without_query(url),
        message: without_url(&e),
    })? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge {
                url: without_query(url),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fails an answer that is not a success, naming the URL and status.
pub(super) fn expect_success(response: Response, url: &Url) -> Result<Response, FetchError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(FetchError::Status {
            url: without_query(url),
            status: response.status().as_u16(),
        })
    }
}

/// `name:port`, or `name` for the scheme's own port.
pub(super) fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    }
}

/// A URL as errors show it: no query (a token service's may carry a scope or more).
pub(super) fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// reqwest's error without the URL it carries (errors name the URL themselves), with
/// the causes that say what went wrong.
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_redirect() {
        String::new()
    } else {
        "transfer failed".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What a `WWW-Authenticate` header asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Bearer(Vec<(String, String)>),
    Basic,
    Other,
}

impl Challenge {
    /// `Bearer realm="…",service="…",scope="…"`: the parameters, quoted values whole
    /// (a scope may hold commas).
    pub(super) fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Challenge::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Challenge::Other;
        }
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = chars.by_ref().take_while(|c| *c != ',').collect();
            }
            params.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        Challenge::Bearer(params)
    }
}

#[cfg(test)]
mod tests {
    use super::{Challenge, plain_http_allowed};
    use crate::config::{ChartHost, ChartsConfig};
    use reqwest::Url;

    #[test]
    fn plain_http_goes_to_loopback_and_to_hosts_marked_insecure_only() {
        let config = ChartsConfig {
            cache_dir: "/nonexistent".into(),
            timeout: std::time::Duration::from_secs(1),
            keep_unused: std::time::Duration::ZERO,
            hosts: vec![
                ChartHost {
                    host: "mirror.internal:8080".into(),
                    username: None,
                    password: None,
                    insecure: true,
                },
                ChartHost {
                    host: "charts.internal".into(),
                    username: None,
                    password: None,
                    insecure: false,
                },
            ],
        };
        let allowed = |u: &str| plain_http_allowed(&config, &Url::parse(u).expect("url"));
        for yes in [
            "http://127.0.0.1:5000/x",
            "http://127.0.0.2/x",
            "http://[::1]:5000/x",
            "http://localhost/x",
            "http://mirror.internal:8080/x",
        ] {
            assert!(allowed(yes), "{yes}");
        }
        for no in [
            "http://charts.internal/x",
            "http://mirror.internal/x",
            "http://mirror.internal:8081/x",
            "http://10.0.0.1/x",
        ] {
            assert!(!allowed(no), "{no}");
        }
    }

    #[test]
    fn a_bearer_challenge_keeps_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.internal/token",service="registry",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            c,
            Challenge::Bearer(vec![
                ("realm".into(), "https://auth.internal/token".into()),
                ("service".into(), "registry".into()),
                ("scope".into(), "repository:team/app:pull,push".into()),
            ])
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Challenge::Basic
        );
        assert_eq!(Challenge::parse("Negotiate"), Challenge::Other);
    }
}
