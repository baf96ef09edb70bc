//! Reading a unit's inventory ConfigMap the way a person with kubectl would, in whichever
//! form pontoon stored it (compressed, or plain JSON as earlier versions wrote it).

use std::io::Read as _;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use pontoon::sync::SyncOptions;

/// The unit's inventory ConfigMap, if any.
pub async fn inventory_configmap(client: &kube::Client, team: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), &SyncOptions::default().namespace)
        .get_opt(&format!("pontoon-inventory-{team}"))
        .await
        .expect("get inventory")
}

/// The inventory's list of entries as JSON text (pages are not followed).
pub async fn inventory_objects(client: &kube::Client, team: &str) -> Option<String> {
    let cm = inventory_configmap(client, team).await?;
    if let Some(gz) = cm.binary_data.and_then(|mut b| b.remove("objects.gz")) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz.0[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        return Some(text);
    }
    cm.data?.remove("objects")
}

/// The inventory's entries.
pub async fn inventory_entries(client: &kube::Client, team: &str) -> Vec<serde_json::Value> {
    let text = inventory_objects(client, team).await.expect("inventory");
    serde_json::from_str(&text).expect("inventory parses")
}
