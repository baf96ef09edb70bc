//! One `pontoon run` process of the benchmark: started with its own `POD_NAME` (which its
//! user agent carries into the apiservers' audit logs), read from outside as an operator
//! would (`/api/status`, `/metrics`, and the kernel's `/proc/<pid>` counters), and ended
//! with SIGTERM or SIGKILL.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::measure::{Reaped, proc_mib, reap};

/// A running replica.
pub struct Replica {
    pub identity: String,
    pub base: String,
    pub pid: u32,
    child: Option<Child>,
}

/// A unit as one replica's `/api/status` shows it.
#[derive(Debug, Clone)]
pub struct UnitView {
    pub team: String,
    pub cluster: String,
    pub state: String,
    /// Whether this replica has synced it since it took it (`seconds_since_sync` set).
    pub synced_here: bool,
}

impl Replica {
    /// `pontoon run --config CONFIG` as `identity`, its output in `dir/<identity>.log`.
    pub fn start(identity: &str, config: &Path, base: String, dir: &Path) -> Replica {
        let log = std::fs::File::create(dir.join(format!("{identity}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pontoon"))
            .args(["run", "--config"])
            .arg(config)
            .env("POD_NAME", identity)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pontoon run");
        Replica {
            identity: identity.to_owned(),
            base,
            pid: child.id(),
            child: Some(child),
        }
    }

    /// User + system CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return f64::NAN;
        };
        // Fields after the command name, which is in parentheses: utime and stime are the
        // 12th and 13th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return f64::NAN;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // SAFETY: sysconf only reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        match (ticks(11), ticks(12)) {
            (Some(u), Some(s)) if hz > 0.0 => (u + s) / hz,
            _ => f64::NAN,
        }
    }

    /// Peak resident set size so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        proc_mib(self.pid, "VmHWM:")
    }

    /// Resident set size now (VmRSS), MiB.
    pub fn rss_mib(&self) -> f64 {
        proc_mib(self.pid, "VmRSS:")
    }

    /// Every unit its `/api/status` shows, or None while it does not answer.
    pub async fn units(&self, http: &reqwest::Client) -> Option<Vec<UnitView>> {
        let status: serde_json::Value = http
            .get(format!("{}/api/status", self.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let units = status["units"].as_array()?;
        Some(
            units
                .iter()
                .map(|u| UnitView {
                    team: u["team"].as_str().unwrap_or_default().to_owned(),
                    cluster: u["cluster"].as_str().unwrap_or_default().to_owned(),
                    state: u["state"].as_str().unwrap_or_default().to_owned(),
                    synced_here: !u["seconds_since_sync"].is_null(),
                })
                .collect(),
        )
    }

    /// Its `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGKILL, as a node lost or an OOM kill would end it.
    pub fn kill(&mut self) -> Option<Reaped> {
        let child = self.child.take()?;
        // SAFETY: signalling our own child, whose pid we have not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        Some(reap(child))
    }

    /// SIGTERM, then waits for it to exit: its whole life's CPU and peak RSS.
    pub fn terminate(&mut self) -> Option<Reaped> {
        let child = self.child.take()?;
        // SAFETY: signalling our own child, whose pid we have not reaped yet.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        Some(reap(child))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of every sample of the metric `name` (all its label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text, name).sum()
}

/// Every sample's value of the metric `name`.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(move |l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}
