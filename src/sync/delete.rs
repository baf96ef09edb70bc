//! One delete of a prune, and the rule that guards it: pontoon deletes only what it
//! created. The object under the entry's name must carry pontoon's labels for the unit's
//! team and this daemon's owner (`pontoon.dev/owner`, none for the default owner) and the uid the inventory recorded (any uid, for an entry written before uids
//! were recorded), and the delete request requires that uid, so an object put in its
//! place in the meantime is not deleted either.
//!
//! Never deletes on a guess: an object that cannot be read is an error, one that is not
//! pontoon's is [`Outcome::NotOurs`] for the caller to report and drop.

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use super::Syncer;
use super::inventory::Entry;
use super::live::Live;
use crate::cluster::{Cluster, ClusterError, Resolved, gvk_of, retry_transport};
use crate::describe;
use crate::desired::{LABEL_MANAGED_BY, LABEL_TEAM, MANAGED_BY_VALUE, Owner, TeamName};

/// Why a prune's delete failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeleteError {
    /// The kind cannot be resolved, or the identity to delete as is not available.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{message} ({reason})")]
    Refused { message: String, reason: String },
    #[error("{}", describe(.0))]
    Unanswered(kube::Error),
}

/// What a prune's delete came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Deleted by this request (or gone when it arrived).
    Deleted,
    /// Gone before: no delete was sent.
    Gone,
    /// What lives under the entry's name is not what pontoon created; why.
    NotOurs(String),
}

/// What lives under an inventory entry's name, as far as a prune must know.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    uid: String,
    /// Carries `app.kubernetes.io/managed-by: pontoon`, the unit's team label and the
    /// daemon's owner.
    labelled: bool,
}

impl Holder {
    fn of_meta(meta: &kube::api::ObjectMeta, team: &TeamName, owner: &Owner) -> Holder {
        let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
        Holder {
            uid: meta.uid.clone().unwrap_or_default(),
            labelled: label(LABEL_MANAGED_BY).as_deref() == Some(MANAGED_BY_VALUE)
                && label(LABEL_TEAM).as_deref() == Some(team.0.as_str())
                && owner.owns(meta.labels.as_ref()),
        }
    }

    /// Listed by the sync, whose lists take only pontoon's objects of the team and owner.
    fn listed(live: &Live) -> Holder {
        Holder {
            uid: live.uid.clone(),
            labelled: true,
        }
    }
}

/// The uid a delete of `e` must require, when what holds its name is what pontoon created:
/// pontoon's labels for `team`, and the uid the entry recorded (any, for an entry from
/// before uids were recorded). Otherwise why not.
fn may_delete(
    e: &Entry,
    holder: &Holder,
    team: &TeamName,
    owner: &Owner,
) -> Result<String, String> {
    if !holder.labelled && owner.is_default() {
        return Err(format!(
            "it does not carry pontoon's labels for team {team}"
        ));
    }
    if !holder.labelled {
        return Err(format!(
            "it does not carry pontoon's labels for team {team} and owner {owner}"
        ));
    }
    match &e.uid {
        Some(uid) if *uid != holder.uid => Err(format!(
            "its uid is {} where pontoon applied {uid}",
            holder.uid
        )),
        _ if holder.uid.is_empty() => Err("it has no uid to require".to_owned()),
        _ => Ok(holder.uid.clone()),
    }
}

impl Syncer {
    /// Deletes one object as the identity that applied it, if it is still what pontoon
    /// created (`live`: as the sync listed it; read here when it was not listed); gone
    /// already is done.
    pub(super) async fn delete(
        &self,
        e: &Entry,
        live: Option<&Live>,
        team: &TeamName,
    ) -> Result<Outcome, DeleteError> {
        let res = self
            .cluster
            .resolve(&gvk_of(&e.api_version, &e.kind))
            .await?;
        let holder = match live {
            Some(l) => Holder::listed(l),
            None => match self.holder(&res, e, team).await? {
                Some(h) => h,
                None => return Ok(Outcome::Gone),
            },
        };
        let uid = match may_delete(e, &holder, team, &self.options.owner) {
            Ok(uid) => uid,
            Err(why) => return Ok(Outcome::NotOurs(why)),
        };
        let client = self.cluster.client_for(e.applier, team)?;
        let api = Cluster::api(client, &res, &e.namespace);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let _permit = self.cluster.write_permit().await;
        match retry_transport(|| api.delete(&e.name, &params)).await {
            Ok(_) => Ok(Outcome::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Outcome::Deleted),
            // The uid precondition failed: the object was replaced since it was listed.
            Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("Precondition") => {
                Ok(Outcome::NotOurs(format!(
                    "it was replaced while pontoon deleted it ({})",
                    s.message
                )))
            }
            Err(kube::Error::Api(s)) => Err(DeleteError::Refused {
                message: s.message,
                reason: s.reason,
            }),
            Err(err) => Err(DeleteError::Unanswered(err)),
        }
    }

    /// Why a prune of `e` would leave what is under its name (what a plan shows): `None`
    /// when the delete would go ahead, or nothing is there. Reads only, as [`Self::delete`]
    /// decides before it deletes.
    pub(super) async fn would_leave(
        &self,
        e: &Entry,
        live: Option<&Live>,
        team: &TeamName,
    ) -> Result<Option<String>, DeleteError> {
        let holder = match live {
            Some(l) => Holder::listed(l),
            None => {
                let res = self
                    .cluster
                    .resolve(&gvk_of(&e.api_version, &e.kind))
                    .await?;
                match self.holder(&res, e, team).await? {
                    Some(h) => h,
                    None => return Ok(None),
                }
            }
        };
        Ok(may_delete(e, &holder, team, &self.options.owner).err())
    }

    /// What lives under `e`'s name, read as pontoon itself; `None` when nothing does.
    async fn holder(
        &self,
        res: &Resolved,
        e: &Entry,
        team: &TeamName,
    ) -> Result<Option<Holder>, DeleteError> {
        let api = Cluster::api(self.cluster.client().clone(), res, &e.namespace);
        let _permit = self.cluster.read_permit().await;
        match retry_transport(|| api.get_metadata_opt(&e.name)).await {
            Ok(found) => Ok(found.map(|o| Holder::of_meta(&o.metadata, team, &self.options.owner))),
            Err(kube::Error::Api(s)) => Err(DeleteError::Refused {
                message: s.message,
                reason: s.reason,
            }),
            Err(err) => Err(DeleteError::Unanswered(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Applier;

    fn entry() -> Entry {
        Entry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "shop".into(),
            name: "c0".into(),
            applier: Applier::Team,
            uid: Some("u0".into()),
            resource_version: None,
            digest: None,
        }
    }

    #[test]
    fn only_what_pontoon_created_for_the_team_may_be_deleted() {
        let team = TeamName("shop".into());
        let e = entry();
        let ours = Holder {
            uid: "u0".into(),
            labelled: true,
        };
        assert_eq!(
            may_delete(&e, &ours, &team, &Owner::default()),
            Ok("u0".into())
        );
        // Same name, another object: a new uid, with or without pontoon's labels.
        let replaced = Holder {
            uid: "u9".into(),
            ..ours.clone()
        };
        assert_eq!(
            may_delete(&e, &replaced, &team, &Owner::default()),
            Err("its uid is u9 where pontoon applied u0".into())
        );
        let stranger = Holder {
            labelled: false,
            ..ours.clone()
        };
        assert_eq!(
            may_delete(&e, &stranger, &team, &Owner::default()),
            Err("it does not carry pontoon's labels for team shop".into())
        );
        // An entry from before uids were recorded: the labels decide, the live uid is
        // required.
        let old = Entry { uid: None, ..e };
        assert_eq!(
            may_delete(&old, &replaced, &team, &Owner::default()),
            Ok("u9".into())
        );
        assert!(may_delete(&old, &stranger, &team, &Owner::default()).is_err());
    }

    #[test]
    fn the_labels_must_name_pontoon_the_team_and_the_owner() {
        let (team, default) = (TeamName("shop".into()), Owner::default());
        let meta = |labels: &[(&str, &str)]| kube::api::ObjectMeta {
            uid: Some("u".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        let both = meta(&[(LABEL_MANAGED_BY, MANAGED_BY_VALUE), (LABEL_TEAM, "shop")]);
        assert!(Holder::of_meta(&both, &team, &default).labelled);
        let other_team = meta(&[(LABEL_MANAGED_BY, MANAGED_BY_VALUE), (LABEL_TEAM, "ops")]);
        assert!(!Holder::of_meta(&other_team, &team, &default).labelled);
        let no_manager = meta(&[(LABEL_TEAM, "shop")]);
        assert!(!Holder::of_meta(&no_manager, &team, &default).labelled);
        assert!(!Holder::of_meta(&kube::api::ObjectMeta::default(), &team, &default).labelled);
        // Another daemon instance's object, or one from before owners to another owner.
        let blue = Owner::new("blue").expect("owner");
        let blues = meta(&[
            (LABEL_MANAGED_BY, MANAGED_BY_VALUE),
            (LABEL_TEAM, "shop"),
            (crate::desired::LABEL_OWNER, "blue"),
        ]);
        assert!(!Holder::of_meta(&blues, &team, &default).labelled);
        assert!(Holder::of_meta(&blues, &team, &blue).labelled);
        assert!(!Holder::of_meta(&both, &team, &blue).labelled);
        let holder = Holder::of_meta(&both, &team, &blue);
        assert_eq!(
            may_delete(&entry(), &holder, &team, &blue),
            Err("it does not carry pontoon's labels for team shop and owner blue".into())
        );
    }
}
