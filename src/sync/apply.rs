//! Applying one object: server-side apply as pontoon's field manager, with the identity
//! the object is applied as; conflicts with other field managers taken over (or refused,
//! when forcing is off); a team's requests retried for the moment new RBAC takes to reach
//! the authorizer.
//!
//! Whether to apply at all is decided from what pontoon knows of its last apply (the last
//! sync, remembered; after a restart, the unit's inventory entry) and the live object:
//! * no live object (new, or deleted since): apply;
//! * a live object whose uid is not the one pontoon's apply created (deleted and created
//!   again by someone else): never applied over, an object error, unless the platform
//!   adopts it;
//! * the same manifest digest and the live object at the resourceVersion pontoon's apply
//!   left: nothing, not a single request;
//! * a changed manifest: apply;
//! * the same manifest (or nothing recorded) and an object that moved: judged locally with
//!   the comparison drift uses ([`crate::ssa`]), from the listed object where the kind is
//!   listed whole, else from one read of it. Holding: nothing written. Differing: applied,
//!   a person's added fields removed first (drift mode `correct`), or left and reported
//!   (mode `report`, same manifest). Only where the object cannot tell — no server-side
//!   apply of pontoon's in its `managedFields`, fields pontoon's apply owns that the
//!   manifest no longer sets, or differences that may be the server's own rewriting (a
//!   quantity or number written its own way, a zero value `omitempty` drops, a Secret's
//!   `stringData`) — does a server-side dry run decide.
//!
//! An apply never panics on a server answer; every failure is an [`ApplyError`] that says
//! whether the server may have applied it anyway.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::Syncer;
use super::health::{self, Health};
use super::live::{Live, to_json};
use super::memory::{Known, Recorded};
use super::plan;
use super::resolve::Planned;
use crate::cluster::{Cluster, retry_transport};
use crate::describe;
use crate::desired::{Applier, DriftMode, Manifest, TeamName, apply_params};
use crate::ssa::managed_fields::{self, Addition};
use crate::ssa::{self, Verdict};

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    /// Refused (by the server, or by a check before asking it); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Refused because another field manager owns a field (409).
    #[error("{0}")]
    Conflict(String),
    /// No answer came (timeout, connection lost): the server may have applied it anyway.
    #[error("{0}")]
    Unanswered(String),
}

impl ApplyError {
    fn refused(message: impl Into<String>) -> Self {
        ApplyError::Refused(message.into())
    }

    /// Whether the server may have applied it though no answer said so.
    pub fn unanswered(&self) -> bool {
        matches!(self, ApplyError::Unanswered(_))
    }

    fn forbidden(&self) -> bool {
        self.to_string().ends_with("(Forbidden)")
    }
}

/// Why a live object could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("{}", describe(.0))]
    Kube(kube::Error),
    #[error("{0}")]
    Decode(serde_json::Error),
}

/// Whether this sync changed RBAC a moment ago: the authorizer may not know it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rbac {
    /// Nothing changed, or the change is old enough: a refusal is final.
    Settled,
    /// This sync changed RBAC: a team's request refused as Forbidden is retried briefly.
    JustChanged,
}

/// What an apply did to the object.
pub(super) enum Change {
    Created,
    Updated,
    Unchanged,
    /// Changed by someone else; drift mode `report` says leave it.
    LeftDrifted,
}

/// What an apply asks the server to send back.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The whole object (its status tells the health).
    Object,
    /// Its metadata only (`as=PartialObjectMetadata`): the resourceVersion and uid are all
    /// we need.
    Metadata,
}

/// A successful apply.
pub(super) struct Applied {
    pub change: Change,
    pub resource_version: String,
    /// The object's uid: what a prune's delete will require it still to have.
    pub uid: String,
    /// Read from the object the server returned; the object itself is not kept, so a
    /// phase of ten thousand applies does not hold ten thousand responses.
    pub health: Health,
    pub conflict: Option<String>,
    pub writes: usize,
}

impl Applied {
    /// Nothing written: the live object already holds what would be applied.
    fn unchanged(live: &Live, health: Health) -> Self {
        Applied {
            change: Change::Unchanged,
            resource_version: live.resource_version.clone(),
            uid: live.uid.clone(),
            health,
            conflict: None,
            writes: 0,
        }
    }

    /// Nothing written: the object drifted and its drift mode says leave it. The version
    /// kept is the one pontoon's apply left, so the drift is still seen as drift.
    fn left_drifted(live: &Live, recorded_version: &str, health: Health) -> Self {
        Applied {
            change: Change::LeftDrifted,
            resource_version: recorded_version.to_owned(),
            uid: live.uid.clone(),
            health,
            conflict: None,
            writes: 0,
        }
    }
}

/// What judging a moved object came to.
enum Judged {
    /// Nothing to write.
    Settled(Applied),
    /// Apply it; `removals` writes were made first (removing a person's added fields).
    Write { removals: usize },
}

/// Why an object whose uid is not the one pontoon's apply created is left alone.
fn stranger(created: &str, found: &str) -> String {
    format!(
        "was deleted and created again by someone else since pontoon applied it (uid {found}, \
         pontoon's apply created uid {created}); pontoon leaves it untouched and never deletes \
         it: delete it to have pontoon create it again, or adopt it (platform.yaml spec.adopt) \
         to have pontoon apply over it"
    )
}

impl Syncer {
    /// Applies one object as its applier, unless the live object (`live`, absent for a
    /// new one) already holds it. `known` is what the unit's last apply left (remembered,
    /// or recorded in its inventory after a restart); without it everything is written.
    pub(super) async fn apply_one(
        &self,
        p: &Planned<'_>,
        team: &TeamName,
        live: Option<&Live>,
        known: Option<&Known<'_>>,
        rbac: Rbac,
    ) -> Result<Applied, ApplyError> {
        let api = self.api_for(p, team)?;
        let (Some(l), Some(known)) = (live, known) else {
            // New, deleted since (recreated), or an apply that must be made as it is.
            return self.write(&api, p, live, rbac).await;
        };
        let recorded = known.of(&p.key);
        if let Some(created) = recorded.as_ref().and_then(Recorded::uid)
            && created != l.uid
            && !known.unit.adopts(&p.key)
        {
            return Err(ApplyError::refused(stranger(created, &l.uid)));
        }
        // The same manifest as our last apply and the live object at the version it
        // left: nothing to do, not even a request.
        if recorded.as_ref().is_some_and(|r| r.unchanged(&p.digest, l)) {
            // Health came with the list for kinds read whole; the others are healthy.
            let health = l.health.clone().unwrap_or(Health::Healthy);
            return Ok(Applied::unchanged(l, health));
        }
        // A changed manifest is applied straight away. Otherwise the object moved since
        // our apply (a controller wrote its status, an HPA its replicas, a person edited
        // it), or nothing says what was applied: judge it from the live object.
        let same_manifest = recorded.as_ref().and_then(Recorded::digest) == Some(&p.digest);
        if recorded.as_ref().and_then(Recorded::digest).is_some() && !same_manifest {
            return self.write(&api, p, live, rbac).await;
        }
        let recorded_version = recorded
            .as_ref()
            .and_then(Recorded::resource_version)
            .unwrap_or_default();
        match self
            .judge_moved(&api, p, l, recorded_version, same_manifest)
            .await?
        {
            Judged::Settled(done) => Ok(done),
            Judged::Write { removals } => {
                let mut applied = self.write(&api, p, live, rbac).await?;
                applied.writes += removals;
                Ok(applied)
            }
        }
    }

    /// The API to apply `p` with, as its applier; refuses an object whose scope does not
    /// match its kind's.
    fn api_for(&self, p: &Planned<'_>, team: &TeamName) -> Result<Api<DynamicObject>, ApplyError> {
        let Some(res) = &p.resolved else {
            return Err(ApplyError::refused("kind could not be resolved"));
        };
        let client = self
            .cluster
            .client_for(p.object.applier, team)
            .map_err(|e| ApplyError::refused(e.to_string()))?;
        let api = Cluster::api(client, res, &p.key.namespace);
        if res.namespaced && p.key.namespace.is_empty() {
            return Err(ApplyError::refused(format!(
                "{} is namespaced but the object has no metadata.namespace",
                p.key.kind
            )));
        }
        if !res.namespaced && !p.key.namespace.is_empty() {
            return Err(ApplyError::refused(format!(
                "{} is cluster-scoped but the object has metadata.namespace",
                p.key.kind
            )));
        }
        Ok(api)
    }

    /// Judges a live object that moved since pontoon's apply (or that nothing recorded)
    /// from the object itself: listed whole, or read once. Settled when nothing is to be
    /// written (it still holds the apply, or it drifted from an unchanged manifest whose
    /// drift mode says leave it). A person's added fields are removed before the apply
    /// (drift mode `correct`). Where the object cannot tell, a dry run decides.
    async fn judge_moved(
        &self,
        api: &Api<DynamicObject>,
        p: &Planned<'_>,
        live: &Live,
        recorded_version: &str,
        same_manifest: bool,
    ) -> Result<Judged, ApplyError> {
        let read;
        let current = match &live.object {
            Some(o) => o,
            None => {
                read = self
                    .get(api, &p.key.name)
                    .await
                    .map_err(|e| ApplyError::refused(e.to_string()))?;
                &read
            }
        };
        let left_drifted = same_manifest && p.object.drift == DriftMode::Report;
        let verdict = ssa::judge(
            &p.object.object,
            current,
            &self.options.human_managers,
            &p.object.ignore_fields,
            &self.options.owner.field_manager(),
        );
        match verdict {
            Verdict::Holds => Ok(Judged::Settled(Applied::unchanged(
                &Live::found(current),
                health::of(current, p.object.health.as_deref()),
            ))),
            // Drift in `report` mode: the desired state did not change since our last
            // apply, but what we applied did. Leave it; the unit reports OutOfSync.
            Verdict::Differs { .. } if left_drifted => Ok(Judged::Settled(Applied::left_drifted(
                live,
                recorded_version,
                health::of(current, p.object.health.as_deref()),
            ))),
            Verdict::Differs { additions, .. } => {
                let removals = if p.object.drift == DriftMode::Correct && !additions.is_empty() {
                    self.remove_additions(api, p, current, &additions).await?
                } else {
                    0
                };
                Ok(Judged::Write { removals })
            }
            Verdict::Undecided(why) => {
                tracing::debug!(object = %p.key, why, "the live object cannot tell; asking the server with a dry run");
                self.dry_run_settles(api, p, current, recorded_version, left_drifted)
                    .await
            }
        }
    }

    /// Removes the fields people added to `current` (found as the drift engine finds
    /// them) with a JSON patch that applies only to the version judged. Returns the
    /// writes made; an object changed since (the drift engine removed them first, or
    /// someone wrote again) is left to the apply and to the next judgement.
    async fn remove_additions(
        &self,
        api: &Api<DynamicObject>,
        p: &Planned<'_>,
        current: &Value,
        additions: &[Addition],
    ) -> Result<usize, ApplyError> {
        let version = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let patch: json_patch::Patch =
            serde_json::from_value(managed_fields::removal_patch(additions, version))
                .map_err(|e| ApplyError::refused(format!("cannot build the removal patch: {e}")))?;
        let params = PatchParams {
            field_manager: Some(self.options.owner.field_manager()),
            ..Default::default()
        };
        let paths: Vec<&str> = additions.iter().map(|a| a.path.as_str()).collect();
        let _permit = self.cluster.write_permit().await;
        let patch = Patch::<()>::Json(patch);
        let request = api.patch_metadata(&p.key.name, &params, &patch);
        match tokio::time::timeout(self.options.apply_timeout, request).await {
            Ok(Ok(_)) => {
                tracing::info!(object = %p.key, fields = %paths.join(", "), "removed fields added by hand");
                Ok(1)
            }
            // The object changed since it was read: whatever changed it is judged again.
            Ok(Err(kube::Error::Api(s))) if s.code == 422 || s.code == 409 => {
                tracing::debug!(object = %p.key, "not removing fields added by hand: the object changed since it was read");
                Ok(1)
            }
            Ok(Err(e)) => Err(ApplyError::refused(format!(
                "cannot remove fields added by hand ({}): {}",
                paths.join(", "),
                describe(&e)
            ))),
            Err(_) => Err(ApplyError::Unanswered(format!(
                "removing fields added by hand timed out after {:?}",
                self.options.apply_timeout
            ))),
        }
    }

    /// Asks the server what an apply would make of the live object (`current`), where
    /// the object alone cannot tell. Settled when nothing is to be written: the apply would
    /// change nothing, or the object drifted from an unchanged manifest and its drift mode
    /// says leave it (`left_drifted`).
    async fn dry_run_settles(
        &self,
        api: &Api<DynamicObject>,
        p: &Planned<'_>,
        current: &Value,
        recorded_version: &str,
        left_drifted: bool,
    ) -> Result<Judged, ApplyError> {
        let dry = self
            .patch(
                api,
                &p.key.name,
                &p.object.object,
                apply_params(&self.options.owner).force().dry_run(),
                Answer::Object,
            )
            .await?;
        let found = Live::found(current);
        if plan::comparable(&dry) == plan::comparable(current) {
            return Ok(Judged::Settled(Applied::unchanged(
                &found,
                health::of(current, p.object.health.as_deref()),
            )));
        }
        if left_drifted {
            return Ok(Judged::Settled(Applied::left_drifted(
                &found,
                recorded_version,
                health::of(current, p.object.health.as_deref()),
            )));
        }
        Ok(Judged::Write { removals: 0 })
    }

    /// Writes the apply: retried while new RBAC is not yet seen, forced over a conflict
    /// when the options allow it.
    async fn write(
        &self,
        api: &Api<DynamicObject>,
        p: &Planned<'_>,
        live: Option<&Live>,
        rbac: Rbac,
    ) -> Result<Applied, ApplyError> {
        let mut conflict = None;
        let mut writes = 1;
        // Kinds healthy by nature need only the new resourceVersion back: the server
        // then encodes the metadata alone, not the whole object.
        let answer = if health::read_whole(&p.key.group, &p.key.kind, p.object.health.is_some()) {
            Answer::Object
        } else {
            Answer::Metadata
        };
        let params = apply_params(&self.options.owner);
        let apply = || self.patch(api, &p.key.name, &p.object.object, params.clone(), answer);
        let mut first = apply().await;
        // RBAC granted a moment ago in this sync reaches the authorizer's cache a little
        // later: a team's request may be refused for that moment, so retry briefly.
        if rbac == Rbac::JustChanged && p.object.applier == Applier::Team {
            let mut delay = Duration::from_millis(50);
            while matches!(&first, Err(e) if e.forbidden()) && delay < Duration::from_secs(3) {
                tokio::time::sleep(delay).await;
                delay *= 2;
                writes += 1;
                first = apply().await;
            }
        }
        let out = match first {
            Ok(o) => o,
            Err(ApplyError::Conflict(detail)) => {
                if !self.options.force_conflicts {
                    return Err(ApplyError::refused(format!(
                        "conflict with another field manager: {detail}"
                    )));
                }
                conflict = Some(format!("took ownership: {detail}"));
                writes += 1;
                let force = apply_params(&self.options.owner).force();
                self.patch(api, &p.key.name, &p.object.object, force, answer)
                    .await?
            }
            Err(e) => return Err(e),
        };
        let field = |path| {
            out.pointer(path)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (rv, uid) = (field("/metadata/resourceVersion"), field("/metadata/uid"));
        let change = match live {
            None => Change::Created,
            Some(l) if l.resource_version == rv => Change::Unchanged,
            Some(_) => Change::Updated,
        };
        Ok(Applied {
            change,
            resource_version: rv,
            uid,
            health: match answer {
                Answer::Object => health::of(&out, p.object.health.as_deref()),
                Answer::Metadata => Health::Healthy,
            },
            conflict,
            writes,
        })
    }

    /// One server-side apply request, under the cluster's write limit and the apply
    /// timeout.
    async fn patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        object: &Manifest,
        params: PatchParams,
        answer: Answer,
    ) -> Result<Value, ApplyError> {
        let _permit = self.cluster.write_permit().await;
        let patch = Patch::Apply(object);
        let request = async {
            match answer {
                Answer::Object => retry_transport(|| api.patch(name, &params, &patch))
                    .await
                    .and_then(to_json),
                // Only the new resourceVersion and the uid are read: turning the rest of the
                // metadata (managed fields included) into a JSON value would be wasted work.
                Answer::Metadata => retry_transport(|| api.patch_metadata(name, &params, &patch))
                    .await
                    .map(|m| {
                        serde_json::json!({"metadata": {
                            "resourceVersion": m.metadata.resource_version,
                            "uid": m.metadata.uid,
                        }})
                    }),
            }
        };
        match tokio::time::timeout(self.options.apply_timeout, request).await {
            Err(_) => Err(ApplyError::Unanswered(format!(
                "apply timed out after {:?}",
                self.options.apply_timeout
            ))),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(ApplyError::Conflict(s.message)),
            Ok(Err(kube::Error::Api(s))) => {
                Err(ApplyError::refused(format!("{} ({})", s.message, s.reason)))
            }
            Ok(Err(e)) => Err(ApplyError::Unanswered(describe(&e))),
            Ok(Ok(o)) => Ok(o),
        }
    }

    /// Reads one live object whole, under the cluster's read limit.
    pub(super) async fn get(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
    ) -> Result<Value, ReadError> {
        let _permit = self.cluster.read_permit().await;
        match retry_transport(|| api.get(name)).await {
            Ok(o) => serde_json::to_value(o).map_err(ReadError::Decode),
            Err(e) => Err(ReadError::Kube(e)),
        }
    }
}
