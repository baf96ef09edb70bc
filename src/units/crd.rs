//! The Unit's CustomResourceDefinition: the one in `deploy/base/unit-crd.yaml`, compiled
//! in, installed by pontoon (server-side apply as its field manager) when a cluster lacks
//! it or holds another version of it, and waited for until Established. A definition
//! already as this pontoon ships it costs one read and no write.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Patch;
use kube::{Api, Client};
use sha2::Digest;

use super::UnitError;
use crate::desired::Owner;

/// The definition's name.
pub const NAME: &str = "units.pontoon.dev";
/// How long a new definition may take to be Established.
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// The definition as shipped in `deploy/`.
pub const YAML: &str = include_str!("../../deploy/base/unit-crd.yaml");
/// Annotation holding the digest of the definition pontoon applied, so an unchanged one
/// is recognised from a read.
const ANNOTATION_DIGEST: &str = "pontoon.dev/definition-digest";

/// The definition to apply, with its digest annotation.
pub fn definition() -> Result<serde_json::Value, UnitError> {
    let mut crd: serde_json::Value =
        serde_saphyr::from_str_with_options(YAML, crate::yaml::options())
            .map_err(|e| UnitError::Embedded(e.to_string()))?;
    let meta = crd
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .ok_or_else(|| UnitError::Embedded("no metadata".into()))?;
    meta.insert(
        "annotations".into(),
        serde_json::json!({ ANNOTATION_DIGEST: digest() }),
    );
    Ok(crd)
}

fn digest() -> String {
    hex::encode(sha2::Sha256::digest(YAML.as_bytes()))[..16].to_owned()
}

/// Installs the definition when it is missing or another version of it, then waits until
/// it is Established.
pub async fn ensure(client: &Client, owner: &Owner) -> Result<(), UnitError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let live = api
        .get_opt(NAME)
        .await
        .map_err(|source| UnitError::Definition { source })?;
    let current = live.as_ref().is_some_and(|crd| {
        crd.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_DIGEST))
            == Some(&digest())
    });
    if current && live.as_ref().is_some_and(established) {
        return Ok(());
    }
    if !current {
        tracing::info!(crd = NAME, "installing the Unit definition");
        api.patch(
            NAME,
            &crate::desired::apply_params(owner).force(),
            &Patch::Apply(definition()?),
        )
        .await
        .map_err(|source| UnitError::Definition { source })?;
    }
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        let crd = api
            .get(NAME)
            .await
            .map_err(|source| UnitError::Definition { source })?;
        if established(&crd) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(UnitError::NotEstablished);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_definition_parses_and_names_the_unit() {
        let crd = definition().expect("definition");
        assert_eq!(crd["metadata"]["name"], NAME);
        assert_eq!(crd["spec"]["names"]["kind"], super::super::KIND);
        assert_eq!(crd["spec"]["group"], super::super::GROUP);
        assert_eq!(crd["spec"]["versions"][0]["name"], super::super::VERSION);
        assert!(crd["metadata"]["annotations"][ANNOTATION_DIGEST].is_string());
    }
}
