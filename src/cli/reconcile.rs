//! `pontoon reconcile`: asks for a sync now on each of a team's Units, as the caller, and
//! with `--wait` follows each Unit until the daemon answered it.

use std::process::ExitCode;
use std::time::Duration;

use super::{Units, exit};
use crate::desired::TeamName;
use crate::units::{control, request, status, unit_name};

/// What `pontoon reconcile` asks and whether it follows the answer.
#[derive(Debug, Clone, Copy)]
pub struct Asking {
    /// Have the daemon poll the platform repo first.
    pub with_source: bool,
    /// `--wait`, with its timeout.
    pub wait: Option<Duration>,
}

/// Asks each of the team's units (one cluster, or every cluster of the daemon config) for
/// a sync now, as the caller; with `--wait`, follows each until the daemon answered.
pub async fn reconcile(units: Units, asking: Asking) -> anyhow::Result<ExitCode> {
    let (clusters, namespace, owner) = units.resolve()?;
    let team = TeamName(units.team.clone());
    let name = unit_name(&owner, &team);
    let value = jiff::Timestamp::now().to_string();
    let mut ok = true;
    for cluster in clusters {
        let target = units.on(&cluster, &namespace, &owner);
        let api = control::api(target.client().await?, &namespace);
        let asked = request::request_reconcile(
            &api,
            &name,
            &value,
            asking.with_source,
            "pontoon-reconcile",
        )
        .await;
        if let Err(e) = asked {
            eprintln!("{cluster}/{team}: {e}");
            ok = false;
            continue;
        }
        let Some(timeout) = asking.wait else {
            println!("{cluster}/{team}: reconcile requested ({value})");
            continue;
        };
        match request::follow(&api, &name, &value, timeout).await {
            Ok(s) => {
                println!("{cluster}/{team}: {}", answer(&s));
                ok &= s.is(status::READY);
            }
            Err(e) => {
                eprintln!("{cluster}/{team}: {e}");
                ok = false;
            }
        }
    }
    Ok(exit(ok))
}

/// How a Unit's answer reads: `Synced at 1a2b3c4: applied 3 (+1 ~2), pruned 0`, or the
/// error when it is not Ready.
pub fn answer(s: &status::UnitStatus) -> String {
    let ready = s.is(status::READY);
    let reason = s
        .condition(status::READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let said = match (&s.last_error, ready) {
        (Some(e), false) => e.clone(),
        _ => s.summary.text.clone(),
    };
    format!("{reason} at {}: {said}", s.short_revision)
}
