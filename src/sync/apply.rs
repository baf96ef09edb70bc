//! Applying one object: server-side apply as pontoon's field manager, with the identity
//! the object is applied as; skipped when nothing changed since the last apply, checked by
//! a dry run when the live object moved; conflicts with other field managers taken over
//! (or refused, when forcing is off); a team's requests retried for the moment new RBAC
//! takes to reach the authorizer.
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
use super::memory::LastApply;
use super::plan;
use super::resolve::{Planned, api_version_of};
use crate::cluster::{Cluster, retry_transport};
use crate::describe;
use crate::desired::{Applier, DriftMode, TeamName, apply_params};

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
}

impl Syncer {
    /// Applies one object as its applier, unless the live object (`live`, absent for a
    /// new one) already holds it. `last` is the unit's last complete apply; without one
    /// (after a restart) a live object is checked by a dry run before anything is written.
    pub(super) async fn apply_one(
        &self,
        p: &Planned<'_>,
        team: &TeamName,
        live: Option<&Live>,
        last: Option<&LastApply>,
        rbac: Rbac,
    ) -> Result<Applied, ApplyError> {
        let api = self.api_for(p, team)?;
        // The same manifest and the same live version as our last apply: nothing to do.
        if let (Some(last), Some(l)) = (last, live)
            && last.unchanged(p, l)
        {
            // Health read from status came with the list; other kinds are healthy.
            let health = l.health.clone().unwrap_or(Health::Healthy);
            return Ok(Applied::unchanged(l, health));
        }
        // After a restart nothing is remembered, and a live object whose version moved
        // since our apply (a controller wrote its status, an HPA its replicas) may still
        // hold everything we applied: ask the server whether an apply would change
        // anything before writing. A changed manifest is applied straight away.
        let same_manifest = last.is_some_and(|m| m.same_manifest(p));
        if (last.is_none() || same_manifest)
            && let Some(l) = live
            && let Some(done) = self
                .dry_run_settles(&api, p, l, last, same_manifest)
                .await?
        {
            return Ok(done);
        }
        self.write(&api, p, live, rbac).await
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

    /// Asks the server what an apply would make of the live object. `Some` when nothing
    /// is to be written: the apply would change nothing, or the object drifted from an
    /// unchanged manifest and its drift mode says leave it.
    async fn dry_run_settles(
        &self,
        api: &Api<DynamicObject>,
        p: &Planned<'_>,
        live: &Live,
        last: Option<&LastApply>,
        same_manifest: bool,
    ) -> Result<Option<Applied>, ApplyError> {
        let dry = self
            .patch(
                api,
                &p.key.name,
                &p.object.object,
                apply_params().force().dry_run(),
                Answer::Object,
            )
            .await?;
        let current = self
            .get(api, &p.key.name)
            .await
            .map_err(|e| ApplyError::refused(e.to_string()))?;
        if plan::comparable(&dry) == plan::comparable(&current) {
            return Ok(Some(Applied::unchanged(live, health::of(&current))));
        }
        // Drift in `report` mode: the desired state did not change since our last
        // apply, but what we applied did. Leave it; the unit reports OutOfSync.
        if same_manifest && p.object.drift == DriftMode::Report {
            return Ok(Some(Applied {
                change: Change::LeftDrifted,
                resource_version: last
                    .and_then(|m| m.resource_version(&p.key))
                    .unwrap_or_default()
                    .to_owned(),
                uid: live.uid.clone(),
                health: health::of(&current),
                conflict: None,
                writes: 0,
            }));
        }
        Ok(None)
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
        // Kinds healthy once applied need only the new resourceVersion back: the server
        // then encodes the metadata alone, not the whole object.
        let answer = if health::has_rule(api_version_of(&p.object.object), &p.key.kind) {
            Answer::Object
        } else {
            Answer::Metadata
        };
        let apply = || self.patch(api, &p.key.name, &p.object.object, apply_params(), answer);
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
                let force = apply_params().force();
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
            health: health::of(&out),
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
        object: &Value,
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
