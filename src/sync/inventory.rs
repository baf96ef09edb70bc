//! A unit's inventory: the list of objects pontoon applied for one team on one cluster,
//! kept on that cluster as a ConfigMap in pontoon's namespace: `pontoon-inventory-<team>`
//! for the default owner, `pontoon-inventory-<team>.<owner>` for another (`sync.owner`;
//! neither team nor owner names hold a dot, so no two units of any owners share a name).
//! It carries its owner's label, and a daemon lists, reads and trusts only its own
//! owner's inventories (one without an owner label is the default owner's).
//!
//! Prune is "previous inventory minus new desired state", so the inventory must never miss
//! an object that might exist: before applying, the sync engine records the union of the
//! old inventory and the new desired objects; only after pruning does it shrink the
//! inventory to what is desired. A crash in between leaves extra entries (pruned next
//! time), never orphans.
//!
//! Each entry keeps the uid the apply answered with, so a prune deletes that object and no
//! other one that took its name since. An inventory that does not parse is an error, never
//! read as empty: an empty one would forget what the unit holds.
//!
//! The ConfigMap also carries a platform owner's release of the unit's held deletions
//! (the annotation `pontoon.dev/release: <revision>`): written by `pontoon release` or
//! `kubectl annotate`, read with who wrote it (from `managedFields`), and removed by the
//! sync that used it. pontoon's own writes never set it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PostParams};
use serde::{Deserialize, Serialize};

use super::inventory_pages::{
    self as pages, BINARY_OBJECTS, DATA_OBJECTS, DATA_PAGES, Encoded, LABEL_INVENTORY_PAGE, PageRef,
};
use crate::cluster::retry_transport;
use crate::describe;
pub use crate::desired::LABEL_INVENTORY;
use crate::desired::{
    Applier, Digest, LABEL_MANAGED_BY, LABEL_OWNER, LABEL_TEAM, MANAGED_BY_VALUE, ObjectKey, Owner,
    TeamName, apply_params, selector_inventories,
};
/// The annotation on a unit's inventory that releases its held deletions for one revision.
pub const ANNOTATION_RELEASE: &str = "pontoon.dev/release";
/// The field manager `pontoon release` writes the annotation as.
pub const RELEASE_FIELD_MANAGER: &str = "pontoon-release";
pub(super) const DATA_REVISION: &str = "revision";

/// One object an inventory holds: enough to find and delete it with the right identity,
/// and to know it is still the object pontoon applied.
///
/// Fields added later are optional (`#[serde(default)]`, written only when known), so an
/// inventory written by an earlier version still reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    pub applier: Applier,
    /// The uid the apply answered with; unknown for an entry recorded before its apply,
    /// and in inventories written by versions that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The resourceVersion pontoon's last apply of it left (or the one pontoon last found
    /// it at, still holding that apply): a live object at this version is exactly as
    /// pontoon left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The digest of the manifest and identity pontoon applied it with: the same digest
    /// desired again, and the same resourceVersion live, and there is nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl Entry {
    /// Whether the live object (its uid and resourceVersion) is exactly as pontoon's last
    /// apply of this entry left it, and `digest` is what that apply sent: nothing to do.
    /// False whenever the entry does not know (written before these were recorded).
    pub fn unchanged(&self, digest: &Digest, live_uid: &str, live_resource_version: &str) -> bool {
        self.digest.as_ref() == Some(digest)
            && self.uid.as_deref() == Some(live_uid)
            && self.resource_version.as_deref() == Some(live_resource_version)
    }

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

/// Why a unit's inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read the inventory: {}", describe(.0))]
    Read(#[from] kube::Error),
    /// The ConfigMap exists but does not say what the unit holds.
    #[error(
        "team {team}: inventory ConfigMap {namespace}/{name}: {problem}; nothing was applied or pruned and the inventory is left as it is (`pontoon inventory rebuild --team {team} --cluster <this cluster>` writes it again from the team's labelled objects)"
    )]
    Corrupt {
        team: TeamName,
        namespace: String,
        name: String,
        problem: String,
    },
}

/// The inventory as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub entries: BTreeMap<ObjectKey, Entry>,
    /// The commit last synced.
    pub revision: String,
    /// Whether the ConfigMap exists at all.
    pub exists: bool,
    /// The ConfigMap's resourceVersion when it was read or last written: a write carries
    /// it, so an inventory changed by anyone else since (another replica that believes it
    /// leads, a person) makes the write fail instead of overwriting it.
    pub resource_version: Option<String>,
    /// A platform owner's release of the deletions the hold would stop, when one is set.
    pub release: Option<Release>,
    /// Whether its entries were stored in pages (which a write must then clean up).
    pub paged: bool,
}

/// A release of a unit's held deletions: for one revision only, and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub revision: String,
    /// The field manager that wrote the annotation and when (`kubectl-annotate at
    /// 2026-01-02T03:04:05Z`), as the ConfigMap's `managedFields` say; the authenticated
    /// user is in the apiserver's audit log.
    pub by: String,
}

/// The release the ConfigMap's metadata carries, if any, with who wrote it.
fn release_of(meta: &kube::api::ObjectMeta) -> Option<Release> {
    let revision = meta.annotations.as_ref()?.get(ANNOTATION_RELEASE)?.trim();
    if revision.is_empty() {
        return None;
    }
    let pointer = format!(
        "/f:metadata/f:annotations/f:{}",
        ANNOTATION_RELEASE.replace('~', "~0").replace('/', "~1")
    );
    let writer = meta.managed_fields.iter().flatten().find(|m| {
        m.fields_v1
            .as_ref()
            .is_some_and(|f| f.0.pointer(&pointer).is_some())
    });
    let by = match writer {
        Some(m) => format!(
            "{}{}",
            m.manager.as_deref().unwrap_or("an unnamed field manager"),
            m.time
                .as_ref()
                .map(|t| format!(" at {}", t.0))
                .unwrap_or_default()
        ),
        None => "an unknown field manager".to_owned(),
    };
    Some(Release {
        revision: revision.to_owned(),
        by,
    })
}

/// Why a release could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot write the release: {}", describe(.0))]
    Write(#[from] kube::Error),
    #[error(
        "team {team} has no inventory ConfigMap {namespace}/{name} on this cluster: pontoon never synced it there, so nothing of it is held"
    )]
    NoInventory {
        team: TeamName,
        namespace: String,
        name: String,
    },
}

/// The name of `owner`'s inventory of `team`: the name pontoon always used for the
/// default owner, the owner after a dot for any other.
pub fn name_for(owner: &Owner, team: &TeamName) -> String {
    if owner.is_default() {
        format!("pontoon-inventory-{team}")
    } else {
        format!("pontoon-inventory-{team}.{owner}")
    }
}

/// Why a ConfigMap under an inventory's name is not `owner`'s, when it is not.
fn foreign_owner(meta: &kube::api::ObjectMeta, owner: &Owner) -> Option<String> {
    (!owner.owns(meta.labels.as_ref())).then(|| {
        format!(
            "is labelled {LABEL_OWNER}: {}, not this daemon's owner {owner}",
            Owner::of_labels(meta.labels.as_ref())
        )
    })
}

/// The labels of a unit's inventory ConfigMap.
fn labels(owner: &Owner, team: &TeamName) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY, MANAGED_BY_VALUE),
        (LABEL_INVENTORY, "true"),
        (LABEL_TEAM, team.0.as_str()),
        (LABEL_OWNER, owner.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Removes the plain list an inventory written before compression kept, which the write
/// upgrading it leaves when someone else also owns the field (an edit by hand). Sent only
/// if the ConfigMap is still the one just written.
async fn remove_plain_list(
    api: &Api<ConfigMap>,
    name: &str,
    written: &ConfigMap,
) -> Result<ConfigMap, kube::Error> {
    let ops = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": written.metadata.resource_version},
        {"op": "remove", "path": format!("/data/{DATA_OBJECTS}")},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    let params = kube::api::PatchParams::default();
    api.patch(name, &params, &Patch::<()>::Json(patch)).await
}

/// Selects the pages of a unit's inventory.
fn page_selector(owner: &Owner, team: &TeamName) -> String {
    format!("{LABEL_INVENTORY_PAGE}=true,{LABEL_TEAM}={team},{LABEL_OWNER}={owner}")
}

impl Inventory {
    /// The unit's inventory; an empty one when there is none. One that exists but does
    /// not parse is an error naming the ConfigMap and what is wrong with it.
    /// One labelled for another owner is not trusted either.
    pub async fn load(
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
    ) -> Result<Inventory, InventoryError> {
        let name = name_for(owner, team);
        let Some(cm) = retry_transport(|| api.get_opt(&name)).await? else {
            return Ok(Inventory::default());
        };
        if let Some(problem) = foreign_owner(&cm.metadata, owner) {
            return Err(InventoryError::Corrupt {
                team: team.clone(),
                namespace: cm.metadata.namespace.clone().unwrap_or_default(),
                name: name.clone(),
                problem,
            });
        }
        let corrupt = |problem: String| InventoryError::Corrupt {
            team: team.clone(),
            namespace: cm.metadata.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            problem,
        };
        let entries = match pages::decode(api, &cm).await {
            Ok(Some(entries)) => entries,
            Ok(None) => {
                return Err(corrupt(format!(
                    "has no data.{DATA_OBJECTS}, binaryData.{BINARY_OBJECTS} or data.{DATA_PAGES}"
                )));
            }
            Err(pages::ReadError::Page { source, .. }) => return Err(source.into()),
            Err(pages::ReadError::Corrupt(problem)) => return Err(corrupt(problem)),
        };
        let data = cm.data.unwrap_or_default();
        Ok(Inventory {
            entries: entries.into_iter().map(|e| (e.key(), e)).collect(),
            revision: data.get(DATA_REVISION).cloned().unwrap_or_default(),
            exists: true,
            resource_version: cm.metadata.resource_version.clone(),
            release: release_of(&cm.metadata),
            paged: data.contains_key(DATA_PAGES),
        })
    }

    /// Releases the unit's held deletions for `revision`: sets the release annotation on
    /// its inventory, as the field manager `pontoon-release`. The caller's own
    /// Kubernetes identity writes it, so RBAC decides who may and the audit log says who
    /// did. Replaces any earlier release.
    pub async fn release(
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
        revision: &str,
    ) -> Result<(), ReleaseError> {
        let name = name_for(owner, team);
        let patch =
            serde_json::json!({"metadata": {"annotations": {ANNOTATION_RELEASE: revision}}});
        let params = kube::api::PatchParams {
            field_manager: Some(RELEASE_FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(ReleaseError::NoInventory {
                team: team.clone(),
                namespace: api.namespace().unwrap_or_default().to_owned(),
                name,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a release once a sync used it, only if it still releases `revision` (a
    /// release written since for another revision stays). False when it was not there.
    pub async fn clear_release(
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
        revision: &str,
    ) -> Result<bool, kube::Error> {
        let path = format!(
            "/metadata/annotations/{}",
            ANNOTATION_RELEASE.replace('~', "~0").replace('/', "~1")
        );
        let ops = serde_json::json!([
            {"op": "test", "path": path, "value": revision},
            {"op": "remove", "path": path},
        ]);
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
        let (name, params) = (name_for(owner, team), kube::api::PatchParams::default());
        match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => Ok(true),
            // The test failed (another release, or none) or the ConfigMap is gone.
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 404 | 409 | 422) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the unit has an inventory at all, whatever it holds.
    pub async fn exists(
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
    ) -> Result<bool, kube::Error> {
        let name = name_for(owner, team);
        Ok(retry_transport(|| api.get_opt(&name)).await?.is_some())
    }

    /// Writes the inventory (server-side apply, as pontoon's own identity), on the
    /// condition that it is still at the resourceVersion this one was read or written at;
    /// a ConfigMap changed since answers 409 Conflict and is left as it is. Keeps the new
    /// resourceVersion for the next write. Entries too many for one ConfigMap go to pages
    /// written first; pages no longer listed are removed after.
    pub async fn store(
        &mut self,
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
    ) -> Result<(), kube::Error> {
        let name = name_for(owner, team);
        let entries: Vec<&Entry> = self.entries.values().collect();
        let encoded = pages::encode(&entries, &name).map_err(kube::Error::SerdeError)?;
        let mut cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels(owner, team)},
            "data": {DATA_REVISION: self.revision},
        });
        let listed = match encoded {
            Encoded::Inline(gz) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(gz);
                cm["binaryData"] = serde_json::json!({BINARY_OBJECTS: b64});
                Vec::new()
            }
            Encoded::Paged(written) => {
                let mut page_labels = labels(owner, team);
                page_labels.remove(LABEL_INVENTORY);
                page_labels.insert(LABEL_INVENTORY_PAGE.to_owned(), "true".to_owned());
                pages::write_pages(api, &written, &page_labels).await?;
                let listed: Vec<PageRef> = written.into_iter().map(|(r, _)| r).collect();
                let json = serde_json::to_string(&listed).map_err(kube::Error::SerdeError)?;
                cm["data"][DATA_PAGES] = serde_json::Value::String(json);
                listed
            }
        };
        if let Some(rv) = &self.resource_version {
            cm["metadata"]["resourceVersion"] = serde_json::Value::String(rv.clone());
        }
        let (params, patch) = (apply_params(owner).force(), Patch::Apply(&cm));
        let mut stored = retry_transport(|| api.patch(&name, &params, &patch)).await?;
        if stored
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(DATA_OBJECTS))
        {
            stored = remove_plain_list(api, &name, &stored).await?;
        }
        self.resource_version = stored.metadata.resource_version;
        self.exists = true;
        if !listed.is_empty() || self.paged {
            pages::remove_pages_but(api, &page_selector(owner, team), &listed).await?;
        }
        self.paged = !listed.is_empty();
        Ok(())
    }

    /// Deletes the inventory, then its pages.
    pub async fn delete(
        api: &Api<ConfigMap>,
        owner: &Owner,
        team: &TeamName,
    ) -> Result<(), kube::Error> {
        let (name, params) = (name_for(owner, team), Default::default());
        match retry_transport(|| api.delete(&name, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        pages::remove_pages_but(api, &page_selector(owner, team), &[]).await
    }

    pub fn keys(&self) -> BTreeSet<ObjectKey> {
        self.entries.keys().cloned().collect()
    }
}

/// Teams that have an inventory of `owner`'s on a cluster (to find teams removed from the
/// repo); another owner's inventories are not listed.
pub async fn teams_with_inventory(
    api: &Api<ConfigMap>,
    owner: &Owner,
) -> Result<Vec<TeamName>, kube::Error> {
    let mut selector = selector_inventories();
    if !owner.is_default() {
        selector = format!("{selector},{LABEL_OWNER}={owner}");
    }
    let params = kube::api::ListParams::default().labels(&selector);
    let list = retry_transport(|| api.list(&params)).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|cm| owner.owns(cm.metadata.labels.as_ref()))
        .filter_map(|cm| cm.metadata.labels.and_then(|l| l.get(LABEL_TEAM).cloned()))
        .map(TeamName)
        .collect())
}

/// Makes sure pontoon's own namespace exists (created labelled with the owner of the
/// daemon that made it first; several owners may share it).
pub async fn ensure_namespace(
    client: &kube::Client,
    namespace: &str,
    owner: &Owner,
) -> Result<(), kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if api.get_opt(namespace).await?.is_some() {
        return Ok(());
    }
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(namespace.to_owned()),
            labels: Some(
                [
                    (LABEL_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (LABEL_OWNER.to_owned(), owner.to_string()),
                ]
                .into(),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_written_before_uids_were_recorded_still_reads() {
        let old = r#"[{"apiVersion":"v1","kind":"ConfigMap","namespace":"shop","name":"a","applier":"team"}]"#;
        let entries: Vec<Entry> = serde_json::from_str(old).expect("parses");
        assert_eq!(entries[0].uid, None);
        // Without a uid the entry is written as before; with one, the uid is kept.
        assert_eq!(serde_json::to_string(&entries).expect("json"), old);
        let mut e = entries[0].clone();
        e.uid = Some("u-1".into());
        e.resource_version = Some("42".into());
        e.digest = Some(Digest([7; 16]));
        let json = serde_json::to_string(&e).expect("json");
        assert!(
            json.ends_with(
                r#""uid":"u-1","resourceVersion":"42","digest":"07070707070707070707070707070707"}"#
            ),
            "{json}"
        );
        let back: Entry = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, e);
        assert!(e.unchanged(&Digest([7; 16]), "u-1", "42"));
        assert!(
            !e.unchanged(&Digest([8; 16]), "u-1", "42"),
            "another manifest"
        );
        assert!(
            !e.unchanged(&Digest([7; 16]), "u-2", "42"),
            "another object"
        );
        assert!(!e.unchanged(&Digest([7; 16]), "u-1", "43"), "changed since");
        assert!(
            !entries[0].unchanged(&Digest([7; 16]), "u-1", "42"),
            "an old entry knows nothing"
        );
    }

    #[test]
    fn a_release_is_read_with_who_wrote_it() {
        let meta: kube::api::ObjectMeta = serde_json::from_value(serde_json::json!({
            "annotations": {"pontoon.dev/release": " abc123 ", "other": "x"},
            "managedFields": [
                {"manager": "pontoon", "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:objects": {}}}},
                {"manager": "kubectl-annotate", "operation": "Update",
                 "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:pontoon.dev/release": {}}}}}
            ]
        }))
        .expect("metadata");
        assert_eq!(
            release_of(&meta),
            Some(Release {
                revision: "abc123".into(),
                by: "kubectl-annotate at 2026-01-02T03:04:05Z".into(),
            })
        );
        let mut none = meta.clone();
        none.annotations = Some([(ANNOTATION_RELEASE.to_owned(), " ".to_owned())].into());
        assert_eq!(release_of(&none), None, "an empty release releases nothing");
        none.annotations = None;
        assert_eq!(release_of(&none), None);
    }

    #[test]
    fn each_owner_has_its_own_inventory_names() {
        let (shop, default, blue) = (
            TeamName("shop".into()),
            Owner::default(),
            Owner::new("blue").expect("owner"),
        );
        assert_eq!(name_for(&default, &shop), "pontoon-inventory-shop");
        assert_eq!(name_for(&blue, &shop), "pontoon-inventory-shop.blue");
        // A team and an owner can never make another pair's name.
        let blue_shop = Owner::new("blue-shop").expect("owner");
        assert_ne!(
            name_for(&blue_shop, &TeamName("x".into())),
            name_for(
                &Owner::new("blue").expect("owner"),
                &TeamName("shop-x".into())
            )
        );
        let meta = |owner: Option<&str>| kube::api::ObjectMeta {
            labels: owner.map(|o| [(LABEL_OWNER.to_owned(), o.to_owned())].into()),
            ..Default::default()
        };
        assert_eq!(foreign_owner(&meta(None), &default), None);
        assert_eq!(foreign_owner(&meta(Some("blue")), &blue), None);
        assert_eq!(
            foreign_owner(&meta(None), &blue).as_deref(),
            Some("is labelled pontoon.dev/owner: pontoon, not this daemon's owner blue")
        );
    }
}
