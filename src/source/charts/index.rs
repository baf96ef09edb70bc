//! HTTP chart repositories: `<url>/index.yaml` (kept per URL with its ETag, so an
//! unchanged index is answered `304` and not sent again), the entry for a chart and
//! version, and its archive (`urls[0]`, relative to the repository) checked against the
//! entry's `digest`. An entry with no digest is refused: pontoon fetches nothing it
//! cannot verify.

use std::path::{Path, PathBuf};

use reqwest::header::{ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::http::{Auth, Http, expect_success, host_port, read_body};
use super::{Downloaded, FetchError, hashed_name, verify, write_whole};

/// Largest index read (public repositories' indexes run to tens of megabytes).
const INDEX_LIMIT: usize = 64 << 20;
/// Largest chart archive read.
pub(super) const ARCHIVE_LIMIT: usize = 32 << 20;

/// The part of `index.yaml` pontoon reads; everything else in it is ignored.
#[derive(Debug, Deserialize)]
struct IndexFile {
    #[serde(default)]
    entries: std::collections::BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

/// Fetches `chart` at `version` from the repository at `url`, verified.
pub(super) async fn fetch(
    http: &Http,
    cache: &Path,
    url: &str,
    chart: &str,
    version: &str,
) -> Result<Downloaded, FetchError> {
    let base = repository_base(url)?;
    http.check(&base)?;
    let index_url = base
        .join("index.yaml")
        .map_err(|e| FetchError::Refused(format!("{url:?} is not a repository URL: {e}")))?;
    let auth = match http.credentials(&base).await? {
        Some((user, password)) => Auth::Basic(user, password),
        None => Auth::None,
    };
    let text = index_text(http, cache, &index_url, &auth).await?;
    let (chart_owned, version_owned) = (chart.to_owned(), version.to_owned());
    let (archive, digest) =
        tokio::task::spawn_blocking(move || find_entry(&text, &chart_owned, &version_owned))
            .await
            .map_err(|e| FetchError::Index(format!("index task failed: {e}")))??;
    let archive_url = base.join(&archive).map_err(|e| {
        FetchError::Index(format!(
            "the index gives {chart} {version} the URL {archive:?}, which is no URL: {e}"
        ))
    })?;
    // Credentials go only to the repository's own host, as Helm does by default.
    let auth = if host_port(&archive_url) == host_port(&base) {
        auth
    } else {
        Auth::None
    };
    let response = http
        .get(&archive_url, None, &auth, HeaderMap::new())
        .await?;
    let bytes = read_body(
        expect_success(response, &archive_url)?,
        &archive_url,
        ARCHIVE_LIMIT,
    )
    .await?;
    let sha256_hex = verify(&format!("archive {archive_url}"), &bytes, &digest)?;
    Ok(Downloaded { bytes, sha256_hex })
}

/// The repository URL as a base that relative URLs join onto (a trailing slash).
fn repository_base(url: &str) -> Result<Url, FetchError> {
    let with_slash = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    Url::parse(&with_slash)
        .map_err(|e| FetchError::Refused(format!("{url:?} is not a repository URL: {e}")))
}

/// The index's text: sent again only when it changed since the copy kept (ETag).
async fn index_text(
    http: &Http,
    cache: &Path,
    index_url: &Url,
    auth: &Auth,
) -> Result<String, FetchError> {
    let (body_path, etag_path) = index_paths(cache, index_url);
    let (b, e) = (body_path.clone(), etag_path.clone());
    let kept = tokio::task::spawn_blocking(move || {
        let body = std::fs::read_to_string(&b).ok()?;
        let etag = std::fs::read_to_string(&e).ok()?;
        Some((body, etag))
    })
    .await
    .ok()
    .flatten();
    let mut headers = HeaderMap::new();
    if let Some((_, etag)) = &kept
        && let Ok(value) = HeaderValue::from_str(etag)
    {
        headers.insert(IF_NONE_MATCH, value);
    }
    let response = http.get(index_url, None, auth, headers).await?;
    if response.status() == StatusCode::NOT_MODIFIED
        && let Some((body, _)) = kept
    {
        return Ok(body);
    }
    let response = expect_success(response, index_url)?;
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(response, index_url, INDEX_LIMIT).await?;
    let text = String::from_utf8(body)
        .map_err(|_| FetchError::Index(format!("the index at {index_url} is not UTF-8 text")))?;
    let kept_text = text.clone();
    tokio::task::spawn_blocking(move || {
        // The ETag goes first: a body without one is never sent as a condition.
        let _ = std::fs::remove_file(&etag_path);
        if let Some(etag) = etag {
            write_whole(&body_path, kept_text.as_bytes())?;
            write_whole(&etag_path, etag.as_bytes())?;
        }
        Ok::<_, FetchError>(())
    })
    .await
    .map_err(|e| FetchError::Index(format!("index task failed: {e}")))??;
    Ok(text)
}

fn index_paths(cache: &Path, index_url: &Url) -> (PathBuf, PathBuf) {
    let name = hashed_name(index_url.as_str());
    let dir = cache.join("index");
    (
        dir.join(format!("{name}.yaml")),
        dir.join(format!("{name}.etag")),
    )
}

/// The parser's limits for an index: pontoon's own, but room for the nodes of a public
/// repository's index (tens of thousands of entries), which the body limit bounds anyway.
fn index_options() -> serde_saphyr::Options {
    let mut options = crate::yaml::options();
    let mut budget = options.budget.take().unwrap_or_default();
    budget.max_nodes = budget.max_nodes.max(INDEX_LIMIT / 2);
    budget.max_events = budget.max_events.max(INDEX_LIMIT);
    options.budget = Some(budget);
    options
}

/// The archive URL (as written, maybe relative) and digest of `chart` at `version`.
fn find_entry(text: &str, chart: &str, version: &str) -> Result<(String, String), FetchError> {
    let index: IndexFile =
        serde_saphyr::from_str_with_options(text, index_options()).map_err(|e| {
            let (line, _) = crate::yaml::error_position(&e);
            FetchError::Index(format!(
                "the repository's index.yaml cannot be read (line {line}): {}",
                crate::yaml::error_message(&e)
            ))
        })?;
    let Some(entries) = index.entries.get(chart) else {
        return Err(FetchError::Index(format!(
            "the repository's index has no chart {chart:?}"
        )));
    };
    let wanted = version.trim_start_matches('v');
    let Some(entry) = entries
        .iter()
        .find(|e| e.version == version || e.version.trim_start_matches('v') == wanted)
    else {
        let mut known: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
        known.truncate(10);
        return Err(FetchError::Index(format!(
            "the repository's index has no version {version} of {chart} (it has {})",
            known.join(", ")
        )));
    };
    let Some(archive) = entry.urls.first() else {
        return Err(FetchError::Index(format!(
            "the index gives {chart} {version} no URL"
        )));
    };
    let Some(digest) = entry.digest.as_ref().filter(|d| !d.is_empty()) else {
        return Err(FetchError::Index(format!(
            "the index gives {chart} {version} no digest, and pontoon fetches only what it can verify"
        )));
    };
    Ok((archive.clone(), digest.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  app:
  - apiVersion: v2
    name: app
    version: 1.2.0
    digest: 0f3e
    urls:
    - app-1.2.0.tgz
    created: "2026-01-01T00:00:00Z"
  - name: app
    version: 1.1.0
    urls:
    - https://other.internal/app-1.1.0.tgz
generated: "2026-01-01T00:00:00Z"
"#;

    #[test]
    fn an_entry_is_found_by_chart_and_version_ignoring_the_rest() {
        assert_eq!(
            find_entry(INDEX, "app", "1.2.0").expect("found"),
            ("app-1.2.0.tgz".to_owned(), "0f3e".to_owned())
        );
        assert_eq!(
            find_entry(INDEX, "app", "v1.2.0").expect("found").0,
            "app-1.2.0.tgz"
        );
    }

    #[test]
    fn what_is_missing_from_the_index_is_named() {
        let e = find_entry(INDEX, "web", "1.0.0").expect_err("no chart");
        assert_eq!(e.to_string(), "the repository's index has no chart \"web\"");
        let e = find_entry(INDEX, "app", "2.0.0").expect_err("no version");
        assert_eq!(
            e.to_string(),
            "the repository's index has no version 2.0.0 of app (it has 1.2.0, 1.1.0)"
        );
        let e = find_entry(INDEX, "app", "1.1.0").expect_err("no digest");
        assert!(e.to_string().contains("no digest"), "{e}");
    }

    #[test]
    fn a_large_public_index_is_read() {
        // 10,000 versions, about 290,000 nodes: more than the parser allows a document
        // of the platform repo.
        let mut text = String::from("apiVersion: v1\nentries:\n  app:\n");
        for i in 0..10_000 {
            text.push_str(&format!(
                "  - name: app\n    version: 1.0.{i}\n    digest: d{i}\n    urls: [app-1.0.{i}.tgz]\n    annotations: {{a: b, c: d}}\n    maintainers: [{{name: m, email: e}}]\n    keywords: [x, y, z]\n"
            ));
        }
        assert_eq!(
            find_entry(&text, "app", "1.0.9999").expect("found"),
            ("app-1.0.9999.tgz".to_owned(), "d9999".to_owned())
        );
    }

    #[test]
    fn relative_archive_urls_join_onto_the_repository() {
        let base = repository_base("http://127.0.0.1:8000/charts").expect("url");
        assert_eq!(
            base.join("app-1.2.0.tgz").expect("join").as_str(),
            "http://127.0.0.1:8000/charts/app-1.2.0.tgz"
        );
    }
}
