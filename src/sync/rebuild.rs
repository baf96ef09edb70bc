//! Rebuilding a unit's inventory from what is live, for an operator whose inventory was
//! lost or does not parse (`pontoon inventory rebuild`). It is an operator's act, never
//! automatic: labels are set by whoever may write an object, so an inventory rebuilt from
//! them names what the operator then reviews (the command prints every entry).
//!
//! What it takes: every object of every served, listable kind that carries pontoon's
//! labels for the team and the daemon's owner, in a namespace that itself carries them (a team's namespaces), and
//! the team's cluster-scoped objects (its Namespaces). A labelled object in any other
//! namespace (kube-system, another team's) is left out and reported: labels alone never
//! make something pontoon may prune. Each entry keeps the live uid, so a prune still
//! deletes only that object; with no resourceVersion or digest recorded, the next sync
//! judges each object against the repo before it trusts it. The identity an entry is
//! deleted with follows where the object came from: the base pontoon renders from
//! `teams/<team>/team.yaml` is pontoon's own, anything else the team's.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};
use kube::{Api, Client};

use super::inventory::{Entry, Inventory, LABEL_INVENTORY};
use super::inventory_pages::LABEL_INVENTORY_PAGE;
use crate::cluster::retry_transport;
use crate::describe;
use crate::desired::{ANNOTATION_SOURCE, Applier, LABEL_TEAM, Owner, TeamName};

/// Why an inventory could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot discover the cluster's kinds: {}", describe(.0))]
    Discovery(kube::Error),
    #[error("cannot list {kind}: {}", describe(.source))]
    List { kind: String, source: kube::Error },
    #[error("cannot write the inventory: {}", describe(.0))]
    Write(kube::Error),
}

/// What a rebuild found.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// The entries the inventory now holds.
    pub entries: Vec<Entry>,
    /// Objects labelled for the team outside its namespaces, left out.
    pub left_out: Vec<String>,
}

fn selector(owner: &Owner, team: &TeamName) -> String {
    format!("{},{LABEL_TEAM}={team}", owner.selector_managed())
}

/// The unit's inventory and its pages carry the team's labels too.
fn is_inventory(o: &DynamicObject) -> bool {
    o.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_INVENTORY) || l.contains_key(LABEL_INVENTORY_PAGE))
}

/// The identity an object found live was applied with, from the file it came from.
fn applier_of(o: &DynamicObject, team: &TeamName) -> Applier {
    let base = format!("teams/{team}/team.yaml");
    let source = o
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SOURCE));
    match source {
        Some(s) if s.split(':').next() == Some(base.as_str()) => Applier::Platform,
        _ => Applier::Team,
    }
}

/// Lists every object labelled for `team` and writes the unit's inventory from those in
/// the team's namespaces (unless `dry_run`), over whatever the inventory held.
pub async fn rebuild(
    client: &Client,
    inventory_namespace: &str,
    owner: &Owner,
    team: &TeamName,
    dry_run: bool,
) -> Result<Rebuilt, RebuildError> {
    let mut found = labelled(client, owner, team).await?;
    // The default owner's selector also finds other owners' objects: theirs are not ours.
    found.retain(|(_, o)| owner.owns(o.metadata.labels.as_ref()));
    let namespaces: BTreeSet<String> = found
        .iter()
        .filter(|(res, _)| res.kind == "Namespace" && res.group.is_empty())
        .filter_map(|(_, o)| o.metadata.name.clone())
        .collect();
    let mut out = Rebuilt::default();
    for (res, o) in found {
        if is_inventory(&o) {
            continue;
        }
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone().unwrap_or_default();
        if !namespace.is_empty() && !namespaces.contains(&namespace) {
            out.left_out
                .push(format!("{} {namespace}/{name}", res.kind));
            continue;
        }
        out.entries.push(Entry {
            api_version: res.api_version.clone(),
            kind: res.kind.clone(),
            namespace,
            name,
            applier: applier_of(&o, team),
            uid: o.metadata.uid.clone(),
            resource_version: None,
            digest: None,
        });
    }
    out.entries.sort();
    out.left_out.sort();
    if !dry_run {
        write(client, inventory_namespace, owner, team, &out.entries).await?;
    }
    Ok(out)
}

/// Every object of a served, listable kind labelled for `team`, with its kind.
async fn labelled(
    client: &Client,
    owner: &Owner,
    team: &TeamName,
) -> Result<Vec<(ApiResource, DynamicObject)>, RebuildError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(RebuildError::Discovery)?;
    let params = ListParams::default().labels(&selector(owner, team));
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (res, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &res);
            let list = retry_transport(|| api.list(&params)).await;
            let list = list.map_err(|source| RebuildError::List {
                kind: res.kind.clone(),
                source,
            })?;
            out.extend(list.items.into_iter().map(|o| (res.clone(), o)));
        }
    }
    Ok(out)
}

/// Writes `entries` as the unit's inventory, fenced on the ConfigMap as it is now (read
/// raw: the one there may not parse).
async fn write(
    client: &Client,
    namespace: &str,
    owner: &Owner,
    team: &TeamName,
    entries: &[Entry],
) -> Result<(), RebuildError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = super::inventory::name_for(owner, team);
    let current = retry_transport(|| api.get_opt(&name))
        .await
        .map_err(RebuildError::Write)?;
    let mut inventory = Inventory {
        entries: entries.iter().map(|e| (e.key(), e.clone())).collect(),
        revision: current
            .as_ref()
            .and_then(|c| {
                c.data
                    .as_ref()?
                    .get(super::inventory::DATA_REVISION)
                    .cloned()
            })
            .unwrap_or_default(),
        exists: current.is_some(),
        resource_version: current.and_then(|c| c.metadata.resource_version),
        release: None,
        // Pages of the inventory replaced are removed after the write either way.
        paged: true,
    };
    inventory
        .store(&api, owner, team)
        .await
        .map_err(RebuildError::Write)
}
