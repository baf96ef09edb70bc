//! What the source did not read (symlinks, submodules, names that are not UTF-8, files
//! too large or unreadable), as errors against what each entry belongs to, so that
//! nothing vanishes from a render without one:
//!
//! * `platform.yaml` or `teams` itself: the platform; nothing renders, nothing is pruned;
//! * in `kinds/`: the kind its file's name stands for is broken (teams using it fail);
//! * in a team folder (or a team folder itself): that team fails, so it prunes nothing;
//! * anywhere else, a warning: render reads nothing there, so nothing can vanish.
//!
//! Every diagnostic has the rule `skipped-file`.

use std::collections::BTreeMap;

use crate::desired::{Diagnostic, Severity, TeamName, is_dns_label};
use crate::model::{Skipped, diag};

pub(super) const RULE: &str = "skipped-file";

/// The skipped entries of a revision, sorted by what they belong to.
#[derive(Default)]
pub(super) struct SkippedByOwner {
    /// Entries that stop the whole render.
    pub platform: Vec<Diagnostic>,
    /// Entries under `kinds/`, by the file's stem (lowercased, as broken kinds are kept).
    pub kinds: Vec<(String, Diagnostic)>,
    /// Entries in a team folder, by team.
    pub teams: BTreeMap<String, Vec<Diagnostic>>,
    /// Entries render would not read anyway.
    pub warnings: Vec<Diagnostic>,
}

/// Sorts every skipped entry to what it belongs to, each as its diagnostic.
pub(super) fn by_owner(skipped: &[Skipped]) -> SkippedByOwner {
    let mut out = SkippedByOwner::default();
    for s in skipped {
        let path = s.path.as_str();
        let why = &s.reason;
        if path == "platform.yaml" || path == "teams" {
            out.platform.push(diag(
                path,
                1,
                1,
                None,
                RULE,
                format!("{path} is not read ({why}); nothing renders without it"),
            ));
        } else if let Some(rest) = path
            .strip_prefix("kinds/")
            .or(Some(path).filter(|p| *p == "kinds"))
        {
            let stem = rest.rsplit('/').next().unwrap_or(rest);
            let stem = stem.split_once('.').map_or(stem, |(s, _)| s);
            out.kinds.push((
                stem.to_ascii_lowercase(),
                diag(
                    path,
                    1,
                    1,
                    None,
                    RULE,
                    format!("{path} is not read ({why}); the kinds it defines cannot be used"),
                ),
            ));
        } else if let Some(team) = team_folder(path) {
            let team_name = TeamName(team.to_owned());
            out.teams.entry(team.to_owned()).or_default().push(diag(
                path,
                1,
                1,
                Some(&team_name),
                RULE,
                format!(
                    "{path} is not read ({why}); team {team} does not render rather than lose what it holds"
                ),
            ));
        } else {
            let mut d = diag(
                path,
                1,
                1,
                None,
                RULE,
                format!("{path} is not read ({why}); pontoon reads nothing there"),
            );
            d.severity = Severity::Warning;
            out.warnings.push(d);
        }
    }
    out
}

/// The team whose folder holds `path`: `teams/<team>/…`, or `teams/<team>` itself when
/// `<team>` can name a team (a symlinked or unreadable team folder).
fn team_folder(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("teams/")?;
    match rest.split_once('/') {
        Some((team, _)) => Some(team),
        None => is_dns_label(rest).then_some(rest),
    }
}

/// A team's render with the errors of its skipped entries added: any makes it fail.
pub(super) fn fail_team<T>(
    rendered: Result<T, Vec<Diagnostic>>,
    skipped: Option<Vec<Diagnostic>>,
) -> Result<T, Vec<Diagnostic>> {
    match (rendered, skipped) {
        (rendered, None) => rendered,
        (Ok(_), Some(errs)) => Err(errs),
        (Err(mut errs), Some(more)) => {
            errs.extend(more);
            Err(errs)
        }
    }
}
