//! Charts in OCI registries, through the distribution API itself (no Helm CLI): the tag
//! resolved to an OCI image manifest, the manifest checked to be a Helm chart (its config
//! and layer media types) and, when the pin names one, to have the pinned digest; then the
//! chart layer downloaded and checked against its digest. Helm writes a version's `+` as
//! `_` in a tag; so does this. A registry on a loopback address, or one marked
//! `insecure: true`, is spoken to over plain HTTP, every other over HTTPS.

use reqwest::Url;
use serde::Deserialize;

use super::http::{Auth, Http, expect_success, read_body};
use super::index::ARCHIVE_LIMIT;
use super::{Downloaded, FetchError, verify};

pub(super) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
pub(super) const HELM_CHART_MEDIA_TYPE: &str =
    "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Largest manifest read.
const MANIFEST_LIMIT: usize = 4 << 20;

/// `oci://host[:port]/path/chart` taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    host: String,
    repository: String,
}

impl Reference {
    fn parse(reference: &str) -> Result<Reference, FetchError> {
        let bad = |why: &str| {
            FetchError::Refused(format!(
                "{reference:?} is not an OCI chart reference (oci://host/path/chart): {why}"
            ))
        };
        let rest = reference
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it must start with oci://"))?;
        let (host, repository) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository path after the host"))?;
        if host.is_empty() || host.contains('@') {
            return Err(bad("no host, or credentials in it"));
        }
        if repository.is_empty() || !repository.split('/').all(is_path_component) {
            return Err(bad(
                "each path part is lowercase letters and digits, joined by '.', '_' or '-'",
            ));
        }
        Ok(Reference {
            host: host.to_owned(),
            repository: repository.to_owned(),
        })
    }
}

/// A path component of a distribution repository name.
fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !part.is_empty()
        && part.starts_with(alnum)
        && part.ends_with(alnum)
        && part
            .chars()
            .all(|c| alnum(c) || matches!(c, '.' | '_' | '-'))
}

/// A tag as Helm writes a chart version: `+` is not allowed in tags, `_` stands for it.
fn tag(version: &str) -> Result<String, FetchError> {
    let tag = version.replace('+', "_");
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(tag)
    } else {
        Err(FetchError::Refused(format!(
            "version {version:?} cannot be an OCI tag"
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: ConfigDescriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDescriptor {
    media_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// Fetches the chart `reference` at `version`, its manifest checked against `pinned`.
pub(super) async fn fetch(
    http: &Http,
    reference: &str,
    version: &str,
    pinned: Option<&str>,
) -> Result<Downloaded, FetchError> {
    let r = Reference::parse(reference)?;
    let https = Url::parse(&format!("https://{}/", r.host))
        .map_err(|e| FetchError::Refused(format!("{reference:?}: {e}")))?;
    let base = if http.plain_http_allowed(&https) {
        Url::parse(&format!("http://{}/", r.host))
            .map_err(|e| FetchError::Refused(format!("{reference:?}: {e}")))?
    } else {
        https
    };
    let at = |path: String| {
        base.join(&path)
            .map_err(|e| FetchError::Refused(format!("{reference:?}: {e}")))
    };
    let manifest_url = at(format!("v2/{}/manifests/{}", r.repository, tag(version)?))?;
    let mut auth = Auth::None;
    let response = http
        .get_authenticated(&manifest_url, MANIFEST_MEDIA_TYPE, &mut auth)
        .await?;
    let header_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(
        expect_success(response, &manifest_url)?,
        &manifest_url,
        MANIFEST_LIMIT,
    )
    .await?;
    let manifest_digest = format!("sha256:{}", super::sha256_hex(&body));
    if let Some(header) = header_digest.filter(|h| h.starts_with("sha256:")) {
        verify(&format!("manifest {reference}:{version}"), &body, &header)?;
    }
    if let Some(pinned) = pinned {
        verify(&format!("manifest {reference}:{version}"), &body, pinned)?;
    }
    let layer = chart_layer(&body, reference, version, &manifest_digest)?;
    if layer.size > ARCHIVE_LIMIT as u64 {
        return Err(FetchError::TooLarge {
            url: format!("{reference}:{version}"),
            limit: ARCHIVE_LIMIT,
        });
    }
    let blob_url = at(format!("v2/{}/blobs/{}", r.repository, layer.digest))?;
    let response = http
        .get_authenticated(&blob_url, "application/octet-stream", &mut auth)
        .await?;
    let bytes = read_body(
        expect_success(response, &blob_url)?,
        &blob_url,
        ARCHIVE_LIMIT,
    )
    .await?;
    let sha256_hex = verify(
        &format!("chart layer of {reference}:{version}"),
        &bytes,
        &layer.digest,
    )?;
    Ok(Downloaded { bytes, sha256_hex })
}

/// The manifest's one Helm chart layer, after checking it is a Helm chart at all.
fn chart_layer(
    body: &[u8],
    reference: &str,
    version: &str,
    digest: &str,
) -> Result<Descriptor, FetchError> {
    let what = format!("{reference}:{version} ({digest})");
    let manifest: Manifest = serde_json::from_slice(body).map_err(|e| {
        FetchError::NotHelm(format!(
            "{what} is not an OCI image manifest (an image index or another artifact?): {e}"
        ))
    })?;
    if let Some(t) = manifest
        .media_type
        .as_deref()
        .filter(|t| *t != MANIFEST_MEDIA_TYPE)
    {
        return Err(FetchError::NotHelm(format!(
            "{what} is a {t}, not an OCI image manifest"
        )));
    }
    if manifest.config.media_type != HELM_CONFIG_MEDIA_TYPE {
        return Err(FetchError::NotHelm(format!(
            "{what} is not a Helm chart: its config is {}, not {HELM_CONFIG_MEDIA_TYPE}",
            manifest.config.media_type
        )));
    }
    let mut charts = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == HELM_CHART_MEDIA_TYPE);
    match (charts.next(), charts.next()) {
        (Some(layer), None) => Ok(layer),
        (None, _) => Err(FetchError::NotHelm(format!(
            "{what} has no layer of type {HELM_CHART_MEDIA_TYPE}"
        ))),
        (Some(_), Some(_)) => Err(FetchError::NotHelm(format!(
            "{what} has more than one chart layer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_taken_apart_and_bad_ones_named() {
        assert_eq!(
            Reference::parse("oci://127.0.0.1:5000/charts/app").expect("ok"),
            Reference {
                host: "127.0.0.1:5000".into(),
                repository: "charts/app".into()
            }
        );
        for bad in [
            "https://r.internal/app",
            "oci://r.internal",
            "oci://r.internal/Charts/app",
            "oci://u:p@r.internal/app",
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert!(
                e.to_string().contains("is not an OCI chart reference"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_version_becomes_a_tag_as_helm_writes_it() {
        assert_eq!(tag("1.2.3+build.4").expect("tag"), "1.2.3_build.4");
        assert!(tag("1.0 beta").is_err());
    }

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|t| serde_json::json!({"mediaType": t, "digest": "sha256:aa", "size": 10}))
            .collect();
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": "sha256:bb", "size": 2},
            "layers": layers,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_a_helm_chart_manifest_gives_a_layer() {
        let ok = manifest(
            HELM_CONFIG_MEDIA_TYPE,
            &[
                HELM_CHART_MEDIA_TYPE,
                "application/vnd.cncf.helm.chart.provenance.v1.prov",
            ],
        );
        assert_eq!(
            chart_layer(&ok, "oci://r/app", "1", "d")
                .expect("chart")
                .size,
            10
        );
        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        );
        let e = chart_layer(&image, "oci://r/app", "1", "d").expect_err("an image");
        assert_eq!(
            e.to_string(),
            "oci://r/app:1 (d) is not a Helm chart: its config is application/vnd.oci.image.config.v1+json, not application/vnd.cncf.helm.config.v1+json"
        );
        let empty = manifest(HELM_CONFIG_MEDIA_TYPE, &[]);
        assert!(chart_layer(&empty, "oci://r/app", "1", "d").is_err());
    }
}
