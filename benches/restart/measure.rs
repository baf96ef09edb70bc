//! What a child process and the apiserver report about a run: the requests the apiserver
//! counted, split by verb and resource with this benchmark's own apart, and a child's own
//! CPU and peak RSS.

use std::collections::BTreeMap;

use crate::control_plane::ControlPlane;

/// Requests the apiserver counted, from `apiserver_request_total`.
#[derive(Default, Clone)]
pub struct Requests {
    /// By verb, dry runs as `<VERB> (dry run)`.
    pub by_verb: BTreeMap<String, u64>,
    /// By verb and resource (`resource/subresource`).
    pub by_resource: BTreeMap<String, u64>,
    /// What this program sent as the Deployment controller (its watch and status writes),
    /// by verb and resource; in neither map above.
    pub ours: BTreeMap<String, u64>,
}

/// The value of `name="..."` in a metric's label text.
fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(&format!(",{name}=\""))
        .nth(1)
        .or_else(|| labels.strip_prefix(&format!("{name}=\"")))
        .and_then(|v| v.split('"').next())
        .unwrap_or("")
}

impl Requests {
    /// Reads the apiserver's counters now, leaving out its own lease renewals and this
    /// program's reading of `/metrics`.
    pub fn read(cp: &ControlPlane) -> Requests {
        let mut out = Requests::default();
        for l in cp.metrics().lines() {
            let Some(rest) = l.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, n)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(n) = n.parse::<f64>() else { continue };
            let (verb, resource) = (label(labels, "verb"), label(labels, "resource"));
            let sub = label(labels, "subresource");
            if resource == "leases" || sub == "/metrics" {
                continue;
            }
            let dry = if label(labels, "dry_run") == "All" {
                " (dry run)"
            } else {
                ""
            };
            let what = match (resource, sub) {
                ("", path) => format!("{verb} {path}{dry}"),
                (r, "") => format!("{verb} {r}{dry}"),
                (r, s) => format!("{verb} {r}/{s}{dry}"),
            };
            let bench_own = resource == "deployments"
                && (sub == "status" || label(labels, "scope") == "cluster");
            if bench_own {
                *out.ours.entry(what).or_default() += n as u64;
                continue;
            }
            *out.by_verb.entry(format!("{verb}{dry}")).or_default() += n as u64;
            *out.by_resource.entry(what).or_default() += n as u64;
        }
        out
    }

    /// What was counted between `before` and `self`.
    pub fn since(&self, before: &Requests) -> Requests {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        Requests {
            by_verb: diff(&self.by_verb, &before.by_verb),
            by_resource: diff(&self.by_resource, &before.by_resource),
            ours: diff(&self.ours, &before.ours),
        }
    }

    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }
}

pub fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A finished child's exit code and what it used, as `wait4` reports it.
pub struct Reaped {
    pub code: Option<i32>,
    pub cpu: f64,
    pub peak_rss_mib: f64,
}

/// Waits for `child` to end: its own CPU and peak RSS, not those of this process or of
/// other children.
pub fn reap(child: std::process::Child) -> Reaped {
    let pid = child.id();
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills; zeroed is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "wait4({pid}): {e}"
        );
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Reaped {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        // Linux gives ru_maxrss in KiB.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// A `/proc/<pid>/status` field given in kB, in MiB.
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per key, the median of the rounds' counts (0 in a round without the key), leaving out
/// the keys whose median is 0.
pub fn median_counts(maps: &[&BTreeMap<String, u64>]) -> BTreeMap<String, u64> {
    let keys: std::collections::BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let v = maps
                .iter()
                .map(|m| m.get(k).copied().unwrap_or(0) as f64)
                .collect();
            (k.clone(), median(v) as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}
