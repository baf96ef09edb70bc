//! `pontoon suspend` and `pontoon resume` of one team: `spec.suspend` set (or removed) on
//! each of the team's Units, as the caller (field manager `pontoon-cli:<user>`).

use std::process::ExitCode;

use super::{Units, exit};
use crate::desired::TeamName;
use crate::units::suspend::SuspendSpec;
use crate::units::{control, request, unit_name};

/// What `pontoon suspend` sets, as its flags say it.
#[derive(Debug, Clone)]
pub struct Suspending {
    pub reason: String,
    /// `--for`: resume by itself after this long.
    pub for_: Option<std::time::Duration>,
    pub keep_correcting: bool,
}

impl Suspending {
    /// The `spec.suspend` it stands for, its `until` counted from now.
    pub fn spec(&self) -> anyhow::Result<SuspendSpec> {
        anyhow::ensure!(!self.reason.trim().is_empty(), "--reason may not be empty");
        let until = match self.for_ {
            Some(d) => Some(
                jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::try_from(d)?)?
                    .round(jiff::Unit::Second)?
                    .to_string(),
            ),
            None => None,
        };
        Ok(SuspendSpec {
            reason: self.reason.trim().to_owned(),
            until,
            keep_correcting: self.keep_correcting,
        })
    }
}

/// Sets (`Some`) or removes (`None`) `spec.suspend` on the team's Units, as the caller.
pub async fn suspend(units: Units, spec: Option<SuspendSpec>) -> anyhow::Result<ExitCode> {
    let (clusters, namespace, owner) = units.resolve()?;
    let team = TeamName(units.team.clone());
    let name = unit_name(&owner, &team);
    let mut ok = true;
    for cluster in clusters {
        let client = units.on(&cluster, &namespace, &owner).client().await?;
        let user = request::whoami(&client).await?;
        let api = control::api(client, &namespace);
        match request::set_suspend(&api, &name, spec.as_ref(), &user).await {
            Ok(()) => match &spec {
                Some(s) => println!(
                    "{cluster}/{team}: suspended by {user}: {}{}",
                    s.reason,
                    s.until
                        .as_deref()
                        .map(|u| format!(" (until {u})"))
                        .unwrap_or_default()
                ),
                None => println!("{cluster}/{team}: resumed by {user}"),
            },
            Err(e) => {
                eprintln!("{cluster}/{team}: {e}");
                ok = false;
            }
        }
    }
    Ok(exit(ok))
}
