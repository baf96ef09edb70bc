//! Diagnostics for their readers: `file:line:col: error[rule]: message` lines for people
//! and CI logs, and GitHub workflow commands that annotate a pull request.

use crate::desired::{Diagnostic, Severity};

/// Diagnostics as `file:line:col: error[rule]: message` lines.
pub fn format_text(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// Diagnostics as GitHub workflow commands (annotations on the pull request).
pub fn format_github(diags: &[Diagnostic]) -> String {
    let esc = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| esc(s).replace(':', "%3A").replace(',', "%2C");
    diags
        .iter()
        .map(|d| {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let team = d
                .team
                .as_ref()
                .map(|t| format!("team {t}: "))
                .unwrap_or_default();
            format!(
                "::{level} file={},line={},col={},title={}::{team}{}\n",
                prop(&d.file),
                d.line,
                d.column,
                prop(&d.rule),
                esc(&d.message)
            )
        })
        .collect()
}
