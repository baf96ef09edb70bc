//! A unit's inventory: the list of objects pontoon applied for one team on one cluster,
//! kept on that cluster as a ConfigMap `pontoon-inventory-<team>` in pontoon's namespace.
//!
//! Prune is "previous inventory minus new desired state", so the inventory must never miss
//! an object that might exist: before applying, the sync engine records the union of the
//! old inventory and the new desired objects; only after pruning does it shrink the
//! inventory to what is desired. A crash in between leaves extra entries (pruned next
//! time), never orphans.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PostParams};
use serde::{Deserialize, Serialize};

use crate::cluster::retry_transport;
pub use crate::desired::LABEL_INVENTORY;
use crate::desired::{
    Applier, LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE, ObjectKey, TeamName, apply_params,
    selector_inventories,
};
const DATA_OBJECTS: &str = "objects";
const DATA_REVISION: &str = "revision";

/// One object an inventory holds: enough to find and delete it with the right identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub applier: Applier,
}

impl Entry {
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self
                .api_version
                .rsplit_once('/')
                .map(|(g, _)| g.to_owned())
                .unwrap_or_default(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The inventory as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub entries: BTreeMap<ObjectKey, Entry>,
    /// The commit last synced.
    pub revision: String,
    /// Whether the ConfigMap exists at all.
    pub exists: bool,
}

pub fn name_for(team: &TeamName) -> String {
    format!("pontoon-inventory-{team}")
}

impl Inventory {
    pub async fn load(api: &Api<ConfigMap>, team: &TeamName) -> Result<Inventory, kube::Error> {
        let name = name_for(team);
        let Some(cm) = retry_transport(|| api.get_opt(&name)).await? else {
            return Ok(Inventory::default());
        };
        let data = cm.data.unwrap_or_default();
        let entries: Vec<Entry> = data
            .get(DATA_OBJECTS)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Ok(Inventory {
            entries: entries.into_iter().map(|e| (e.key(), e)).collect(),
            revision: data.get(DATA_REVISION).cloned().unwrap_or_default(),
            exists: true,
        })
    }

    /// Writes the inventory (server-side apply, as pontoon's own identity).
    pub async fn store(&self, api: &Api<ConfigMap>, team: &TeamName) -> Result<(), kube::Error> {
        let entries: Vec<&Entry> = self.entries.values().collect();
        let objects = serde_json::to_string(&entries).map_err(kube::Error::SerdeError)?;
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name_for(team),
                "labels": {
                    LABEL_MANAGED_BY: MANAGED_BY_VALUE,
                    LABEL_INVENTORY: "true",
                    LABEL_TEAM: team.0,
                },
            },
            "data": {
                DATA_OBJECTS: objects,
                DATA_REVISION: self.revision,
            },
        });
        let (name, params, patch) = (name_for(team), apply_params().force(), Patch::Apply(&cm));
        retry_transport(|| api.patch(&name, &params, &patch)).await?;
        Ok(())
    }

    pub async fn delete(api: &Api<ConfigMap>, team: &TeamName) -> Result<(), kube::Error> {
        let (name, params) = (name_for(team), Default::default());
        match retry_transport(|| api.delete(&name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn keys(&self) -> BTreeSet<ObjectKey> {
        self.entries.keys().cloned().collect()
    }
}

/// Teams that have an inventory on a cluster (to find teams removed from the repo).
pub async fn teams_with_inventory(api: &Api<ConfigMap>) -> Result<Vec<TeamName>, kube::Error> {
    let params = kube::api::ListParams::default().labels(&selector_inventories());
    let list = retry_transport(|| api.list(&params)).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.labels.and_then(|l| l.get(LABEL_TEAM).cloned()))
        .map(TeamName)
        .collect())
}

/// Makes sure pontoon's own namespace exists.
pub async fn ensure_namespace(client: &kube::Client, namespace: &str) -> Result<(), kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if api.get_opt(namespace).await?.is_some() {
        return Ok(());
    }
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(namespace.to_owned()),
            labels: Some([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
