//! `pontoon resume --all`: many suspended units resumed in the order a commit rolls out,
//! in waves. Stage by stage (as `platform.yaml` `spec.rollout` orders the clusters; the
//! clusters in no stage, and the teams that skip stages, last), and within a stage each
//! cluster's `platform` unit (the components teams' kinds may require) before its teams.
//! With `--wait` each wave must be Ready before the next one is resumed, and the first
//! unit that is not stops the rest, left suspended.
//!
//! The order comes from the platform repo the daemon's config points at, rendered as a
//! `plan` would (no cluster asked, no package expanded: only the rollout is read); the
//! units from the Units on each cluster, read and written as the caller.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kube::Api;
use kube::api::DynamicObject;

use super::exit;
use crate::config::Config;
use crate::desired::{ClusterName, PLATFORM_UNIT, Rollout, UnitId};
use crate::units::{control, request, status, unit_name};

/// What `pontoon resume --all` is asked.
#[derive(Debug, Clone)]
pub struct Resuming {
    /// The daemon's config: its repo, clusters, namespace and owner.
    pub config: PathBuf,
    /// Only these clusters (none: every cluster of the config).
    pub clusters: Vec<String>,
    /// Only these teams (none: every team).
    pub teams: Vec<String>,
    /// `--wait`, with how long each wave may take.
    pub wait: Option<Duration>,
}

/// Units resumed together: the next wave waits for these (with `--wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// `stage staging, platform`, `no stage, teams`.
    pub label: String,
    pub units: Vec<UnitId>,
}

/// The suspended `units` in the order they are resumed: by the stage of their cluster
/// (clusters in no stage, and teams that skip stages, after every stage), the `platform`
/// unit of a stage before its teams.
pub fn waves(rollout: &Rollout, units: impl IntoIterator<Item = UnitId>) -> Vec<Wave> {
    let last = rollout.stages.len();
    let mut by: BTreeMap<(usize, bool), Vec<UnitId>> = BTreeMap::new();
    for u in units {
        let platform = u.team.0 == PLATFORM_UNIT;
        let stage = match rollout.stage_of(&u.cluster) {
            Some(_) if !platform && rollout.skip_teams.contains(&u.team) => last,
            Some(i) => i,
            None => last,
        };
        by.entry((stage, !platform)).or_default().push(u);
    }
    by.into_iter()
        .map(|((stage, teams), mut units)| {
            units.sort_by(|a, b| (&a.cluster, &a.team).cmp(&(&b.cluster, &b.team)));
            let stage = rollout
                .stages
                .get(stage)
                .map_or("no stage".to_owned(), |s| format!("stage {}", s.name));
            let who = if teams { "teams" } else { "platform" };
            Wave {
                label: format!("{stage}, {who}"),
                units,
            }
        })
        .collect()
}

/// A cluster's Units as the caller reaches them.
struct Reach {
    api: Api<DynamicObject>,
    user: String,
}

/// Resumes the suspended units the config's clusters hold, wave by wave; exit 1 at the
/// first unit that could not be resumed (or, with `--wait`, is not Ready), the rest left
/// suspended.
pub async fn resume_all(req: Resuming) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&req.config)?;
    for c in &req.clusters {
        anyhow::ensure!(
            cfg.clusters.iter().any(|k| &k.name == c),
            "--cluster {c}: {} has no cluster of that name",
            req.config.display()
        );
    }
    let rollout = read_rollout(&cfg).await?;
    let (reach, suspended) = find_suspended(&cfg, &req).await?;
    let waves = waves(&rollout, suspended);
    if waves.is_empty() {
        println!("no suspended unit to resume");
        return Ok(ExitCode::SUCCESS);
    }
    let mut line = String::from("resume order:");
    for (i, w) in waves.iter().enumerate() {
        let _ = write!(line, " {}. {} ({})", i + 1, w.label, names(&w.units));
        if i + 1 < waves.len() {
            line.push(';');
        }
    }
    println!("{line}");
    let name = |u: &UnitId| unit_name(&cfg.sync.owner, &u.team);
    for (i, wave) in waves.iter().enumerate() {
        println!("wave {} ({}): {}", i + 1, wave.label, names(&wave.units));
        let value = jiff::Timestamp::now().to_string();
        let mut failed = Vec::new();
        for u in &wave.units {
            let Some(r) = reach.get(&u.cluster) else {
                continue;
            };
            let done = match req.wait {
                Some(_) => request::resume_and_request(&r.api, &name(u), &r.user, &value).await,
                None => request::set_suspend(&r.api, &name(u), None, &r.user).await,
            };
            match done {
                Ok(()) => println!("{u}: resumed by {}", r.user),
                Err(e) => {
                    eprintln!("{u}: {e}");
                    failed.push(u.clone());
                }
            }
        }
        if let Some(timeout) = req.wait {
            let (reach, value, name) = (&reach, &value, &name);
            // A unit whose resume was refused is not waited for: it already stops this.
            let resumed = wave.units.iter().filter(|u| !failed.contains(*u));
            let answers = futures::future::join_all(resumed.map(|u| async move {
                let r = reach.get(&u.cluster)?;
                Some((u, request::follow(&r.api, &name(u), value, timeout).await))
            }))
            .await;
            for (u, answer) in answers.into_iter().flatten() {
                match answer {
                    Ok(s) if s.is(status::READY) => {
                        println!("{u}: {}", super::reconcile::answer(&s))
                    }
                    Ok(s) => {
                        eprintln!("{u}: {}", super::reconcile::answer(&s));
                        failed.push(u.clone());
                    }
                    Err(e) => {
                        eprintln!("{u}: {e}");
                        failed.push(u.clone());
                    }
                }
            }
        }
        if !failed.is_empty() {
            let left: Vec<UnitId> = waves[i + 1..]
                .iter()
                .flat_map(|w| w.units.iter().cloned())
                .collect();
            eprintln!(
                "stopped at wave {}: {} not resumed Ready; left suspended: {}",
                i + 1,
                names(&failed),
                if left.is_empty() {
                    "none".to_owned()
                } else {
                    names(&left)
                }
            );
            return Ok(exit(false));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `staging/platform, staging/shop`.
fn names(units: &[UnitId]) -> String {
    units
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rollout stages of the platform repo's newest revision.
async fn read_rollout(cfg: &Config) -> anyhow::Result<Rollout> {
    let snapshot = super::snapshot(cfg).await?;
    let state = crate::render::render_revision(
        &snapshot.files,
        &snapshot.skipped,
        &snapshot.revision,
        &Default::default(),
        None,
    );
    if state.platform_failed {
        let first = state
            .diagnostics
            .iter()
            .find(|d| d.severity == crate::desired::Severity::Error)
            .map(ToString::to_string)
            .unwrap_or_default();
        anyhow::bail!(
            "platform.yaml does not render at {}, so the rollout order is unknown: {first}",
            snapshot.revision
        );
    }
    Ok(state.rollout)
}

/// Each cluster's Units as the caller, and the suspended units among them (an expired
/// suspension no longer holds its unit). Says which units it leaves as they are.
async fn find_suspended(
    cfg: &Config,
    req: &Resuming,
) -> anyhow::Result<(BTreeMap<ClusterName, Reach>, Vec<UnitId>)> {
    let mut reach = BTreeMap::new();
    let mut suspended = Vec::new();
    let now = jiff::Timestamp::now();
    for c in &cfg.clusters {
        if !req.clusters.is_empty() && !req.clusters.contains(&c.name) {
            continue;
        }
        let cluster = ClusterName(c.name.clone());
        let client = super::client_for(&c.name, None).await?;
        let user = request::whoami(&client)
            .await
            .with_context(|| format!("cluster {cluster}"))?;
        let api = control::api(client, &cfg.sync.namespace);
        let asked = control::list_asked(&api, &cfg.sync.owner)
            .await
            .with_context(|| format!("cluster {cluster}"))?;
        for a in asked {
            if !req.teams.is_empty() && !req.teams.contains(&a.team.0) {
                continue;
            }
            let unit = UnitId {
                team: a.team,
                cluster: cluster.clone(),
            };
            match a.suspend {
                Some(s) if !s.expired(now) => suspended.push(unit),
                _ => println!("{unit}: not suspended, skipped"),
            }
        }
        reach.insert(cluster, Reach { api, user });
    }
    Ok((reach, suspended))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Stage, TeamName};

    fn unit(cluster: &str, team: &str) -> UnitId {
        UnitId {
            team: TeamName(team.into()),
            cluster: ClusterName(cluster.into()),
        }
    }

    fn rollout() -> Rollout {
        let stage = |name: &str, clusters: &[&str]| Stage {
            name: name.into(),
            clusters: clusters.iter().map(|c| ClusterName((*c).into())).collect(),
            soak: Duration::ZERO,
        };
        Rollout {
            stages: vec![
                stage("staging", &["staging"]),
                stage("prod", &["prod-eu", "prod-us"]),
            ],
            skip_teams: [TeamName("tools".into())].into(),
        }
    }

    #[test]
    fn units_resume_stage_by_stage_the_platform_unit_before_the_teams() {
        let units = [
            unit("prod-us", "shop"),
            unit("dev", "shop"),
            unit("prod-eu", "platform"),
            unit("staging", "tools"),
            unit("prod-eu", "shop"),
            unit("staging", "shop"),
            unit("staging", "platform"),
            unit("dev", "platform"),
        ];
        let got: Vec<(String, Vec<String>)> = waves(&rollout(), units)
            .into_iter()
            .map(|w| (w.label, w.units.iter().map(ToString::to_string).collect()))
            .collect();
        let want = [
            ("stage staging, platform", vec!["staging/platform"]),
            ("stage staging, teams", vec!["staging/shop"]),
            ("stage prod, platform", vec!["prod-eu/platform"]),
            ("stage prod, teams", vec!["prod-eu/shop", "prod-us/shop"]),
            ("no stage, platform", vec!["dev/platform"]),
            ("no stage, teams", vec!["dev/shop", "staging/tools"]),
        ];
        let want: Vec<(String, Vec<String>)> = want
            .into_iter()
            .map(|(l, u)| (l.to_owned(), u.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn without_stages_every_platform_unit_goes_before_every_team() {
        let got = waves(
            &Rollout::default(),
            [
                unit("b", "shop"),
                unit("a", "platform"),
                unit("b", "platform"),
            ],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].label, "no stage, platform");
        assert_eq!(
            got[0].units,
            vec![unit("a", "platform"), unit("b", "platform")]
        );
        assert_eq!(got[1].units, vec![unit("b", "shop")]);
        assert!(waves(&Rollout::default(), []).is_empty());
    }
}
