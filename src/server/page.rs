//! The status page at `/`: a team × cluster grid a person reads at a glance. Server-side
//! HTML, no JavaScript and no build step: the page refreshes itself with a meta tag and a
//! unit's detail opens with `<details>`. Everything that comes from users (team names,
//! error text, object names) is escaped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

/// One unit as the page and `/api/status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct UnitView {
    pub team: String,
    pub cluster: String,
    /// `Synced`, `OutOfSync`, `Progressing`, `Failed`, or `Pending` before the first sync.
    pub state: String,
    pub revision: String,
    /// Seconds since the last sync attempt finished, if any.
    pub seconds_since_sync: Option<u64>,
    pub summary: String,
    pub last_error: Option<String>,
    pub drifted: Vec<DriftView>,
    /// Why drift on the unit's objects is not watched or corrected right now, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_error: Option<String>,
    /// Objects healthy only in that they were applied: no health rule applies to them and
    /// they have no status (`Kind namespace/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub no_health_rule: Vec<String>,
    /// The unit's suspension in force: `suspended by alice: INC-1234 (until …)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended: Option<String>,
}

/// Who holds a shard (with `sync.shards` > 1), as the replica showing it last read the
/// shard's Lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardView {
    pub shard: u32,
    pub lease: String,
    /// None: nobody (free, or released).
    pub holder: Option<String>,
    /// The holder's page (the Lease's `pontoon.dev/url` annotation).
    pub url: Option<String>,
    /// Whether the holder is the replica showing it.
    pub this_replica: bool,
}

/// An object that drifted: what, who changed it and when.
#[derive(Debug, Clone, Serialize)]
pub struct DriftView {
    pub object: String,
    pub manager: String,
    pub at: String,
    /// Back to the desired state: corrected by pontoon (mode `correct`), or reverted by a
    /// person or adopted by the repo (mode `report`).
    pub corrected: bool,
    pub mode: crate::desired::DriftMode,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(seconds: Option<u64>) -> String {
    match seconds {
        None => "never".to_owned(),
        Some(s) if s < 60 => format!("{s}s ago"),
        Some(s) if s < 3600 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
    }
}

fn short(rev: &str) -> &str {
    rev.get(..rev.len().min(10)).unwrap_or(rev)
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24}
h1{font-size:1.3rem;margin:0 0 .3rem} p.meta{color:#57606a;margin:0 0 1rem}
table{border-collapse:collapse} th,td{border:1px solid #d0d7de;padding:.4rem .6rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}
td.Synced{background:#dafbe1} td.Progressing{background:#ddf4ff} td.OutOfSync{background:#fff8c5}
td.Failed{background:#ffebe9} td.Pending{background:#f6f8fa} td.none{background:#fff;color:#8c959f}
.state{font-weight:600} .small{font-size:.8rem;color:#57606a} .err{color:#a40e26;font-size:.85rem;white-space:pre-wrap}
details summary{cursor:pointer} ul{margin:.2rem 0;padding-left:1.1rem}
";

/// Renders the whole page.
pub fn render(units: &[UnitView], revision: &str, leading: bool, shards: &[ShardView]) -> String {
    let clusters: BTreeSet<&str> = units.iter().map(|u| u.cluster.as_str()).collect();
    let mut by_team: BTreeMap<&str, BTreeMap<&str, &UnitView>> = BTreeMap::new();
    for u in units {
        by_team.entry(&u.team).or_default().insert(&u.cluster, u);
    }
    let count = |state: &str| units.iter().filter(|u| u.state == state).count();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>pontoon</title><style>{STYLE}</style></head><body>\
         <h1>pontoon</h1><p class=\"meta\">revision <code>{}</code> · {} units: {} Synced, {} Progressing, {} OutOfSync, {} Failed{}</p>",
        escape(short(revision)),
        units.len(),
        count("Synced"),
        count("Progressing"),
        count("OutOfSync"),
        count("Failed"),
        if leading {
            ""
        } else {
            " · <strong>standby</strong> (not leading)"
        }
    );
    shard_table(&mut h, shards);
    h.push_str("<table><thead><tr><th>team</th>");
    for c in &clusters {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead><tbody>");
    for (team, row) in &by_team {
        let _ = write!(h, "<tr><th>{}</th>", escape(team));
        for c in &clusters {
            match row.get(c) {
                None => h.push_str("<td class=\"none\">—</td>"),
                Some(u) => cell(&mut h, u),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></body></html>");
    h
}

/// Which replica holds which shard, each holder linked to its own page: every replica
/// shows its own units, and from here the others'.
fn shard_table(h: &mut String, shards: &[ShardView]) {
    if shards.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"shards\"><thead><tr><th>shard</th><th>held by</th></tr></thead><tbody>",
    );
    for s in shards {
        let holder = match (&s.holder, &s.url) {
            (None, _) => "<span class=\"small\">nobody</span>".to_owned(),
            (Some(who), _) if s.this_replica => format!("{} (this replica)", escape(who)),
            (Some(who), Some(url)) => {
                format!("<a href=\"{}\">{}</a>", escape(url), escape(who))
            }
            (Some(who), None) => escape(who),
        };
        let _ = write!(h, "<tr><td>{}</td><td>{holder}</td></tr>", s.shard);
    }
    h.push_str("</tbody></table><p></p>");
}

fn cell(h: &mut String, u: &UnitView) {
    let state = match u.state.as_str() {
        s @ ("Synced" | "Progressing" | "OutOfSync" | "Failed" | "Pending") => s,
        _ => "Pending",
    };
    let _ = write!(
        h,
        "<td class=\"{state}\" data-team=\"{}\" data-cluster=\"{}\" id=\"{}/{}\"><details><summary><span class=\"state\">{state}</span> \
         <span class=\"small\">{} · {}</span>",
        escape(&u.team),
        escape(&u.cluster),
        escape(&u.cluster),
        escape(&u.team),
        escape(short(&u.revision)),
        ago(u.seconds_since_sync)
    );
    let open_drift = u.drifted.iter().filter(|d| !d.corrected).count();
    if !u.drifted.is_empty() {
        let _ = write!(
            h,
            " <span class=\"small\">· drift {} ({} open)</span>",
            u.drifted.len(),
            open_drift
        );
    }
    h.push_str("</summary>");
    let _ = write!(h, "<div class=\"small\">{}</div>", escape(&u.summary));
    if let Some(e) = &u.last_error {
        let _ = write!(h, "<div class=\"err\">{}</div>", escape(e));
    }
    if let Some(e) = &u.drift_error {
        let _ = write!(h, "<div class=\"err\">drift: {}</div>", escape(e));
    }
    if !u.no_health_rule.is_empty() {
        let names: Vec<String> = u.no_health_rule.iter().map(|o| escape(o)).collect();
        let _ = write!(
            h,
            "<div class=\"small\">{}: {}</div>",
            crate::sync::health::NO_HEALTH_RULE,
            names.join(", ")
        );
    }
    if !u.drifted.is_empty() {
        h.push_str("<ul>");
        for d in &u.drifted {
            let _ = write!(
                h,
                "<li>{} changed by <code>{}</code> at {}{}</li>",
                escape(&d.object),
                escape(&d.manager),
                escape(&d.at),
                match (d.corrected, d.mode) {
                    (false, _) => "",
                    (true, crate::desired::DriftMode::Correct) => " (corrected)",
                    (true, crate::desired::DriftMode::Report) => " (resolved)",
                }
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</details>");
    if let Some(s) = &u.suspended {
        let _ = write!(h, "<div class=\"err\">{}</div>", escape(s));
    }
    // The last error is shown without opening the cell too: on-call reads it at a glance.
    if let (false, Some(e)) = (state == "Synced", &u.last_error) {
        let first_line = e.lines().next().unwrap_or("");
        let shown: String = first_line.chars().take(120).collect();
        let _ = write!(h, "<div class=\"err\">{}</div>", escape(&shown));
    }
    h.push_str("</td>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(team: &str, cluster: &str, state: &str) -> UnitView {
        UnitView {
            team: team.into(),
            cluster: cluster.into(),
            state: state.into(),
            revision: "0123456789abcdef".into(),
            seconds_since_sync: Some(75),
            summary: "applied 3 (+0 ~0), pruned 0".into(),
            last_error: None,
            drifted: vec![],
            drift_error: None,
            no_health_rule: vec![],
            suspended: None,
        }
    }

    #[test]
    fn user_text_is_escaped() {
        let mut u = unit("<img src=x onerror=alert(1)>", "prod", "Failed");
        u.last_error = Some("bad \"quote\" & <script>".into());
        let page = render(&[u], "rev", true, &[]);
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("bad &quot;quote&quot; &amp; &lt;script&gt;"));
    }

    #[test]
    fn grid_has_a_cell_per_team_and_cluster() {
        let units = vec![
            unit("a", "prod", "Synced"),
            unit("a", "staging", "Failed"),
            unit("b", "prod", "OutOfSync"),
        ];
        let page = render(&units, "0123456789abcdef", false, &[]);
        assert!(page.contains("<th>prod</th><th>staging</th>"));
        assert!(
            page.contains("td class=\"none\""),
            "team b has no staging unit"
        );
        assert!(page.contains("1 Synced, 0 Progressing, 1 OutOfSync, 1 Failed"));
        assert!(page.contains("standby"));
        assert!(page.contains("1m ago"));
        assert!(page.contains("<code>0123456789</code>"));
    }

    #[test]
    fn objects_without_a_health_rule_are_named() {
        let mut u = unit("a", "prod", "Synced");
        u.no_health_rule = vec!["PrometheusRule.monitoring.coreos.com a/alerts".into()];
        let page = render(&[u], "rev", true, &[]);
        assert!(
            page.contains("no health rule: PrometheusRule.monitoring.coreos.com a/alerts"),
            "{page}"
        );
    }

    #[test]
    fn the_shard_holders_link_the_other_replicas_pages() {
        let shard = |n: u32, holder: Option<&str>, url: Option<&str>, this_replica| ShardView {
            shard: n,
            lease: format!("pontoon-shard-{n}"),
            holder: holder.map(Into::into),
            url: url.map(Into::into),
            this_replica,
        };
        let shards = [
            shard(0, Some("pontoon-a"), Some("http://10.0.0.1:8080"), true),
            shard(
                1,
                Some("pontoon-<b>"),
                Some("http://10.0.0.2:8080/\"x"),
                false,
            ),
            shard(2, None, None, false),
        ];
        let page = render(&[], "rev", true, &shards);
        assert!(
            page.contains("<td>0</td><td>pontoon-a (this replica)</td>"),
            "{page}"
        );
        assert!(
            page.contains("<a href=\"http://10.0.0.2:8080/&quot;x\">pontoon-&lt;b&gt;</a>"),
            "{page}"
        );
        assert!(
            page.contains("<td>2</td><td><span class=\"small\">nobody</span>"),
            "{page}"
        );
        assert!(!render(&[], "rev", true, &[]).contains("shard"));
    }
}
