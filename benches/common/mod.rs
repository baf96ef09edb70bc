//! Process figures the benchmarks print, read from /proc.

/// User + system CPU of this process in seconds (clock ticks of 1/100 s).
pub fn cpu_seconds() -> f64 {
    stat_cpu("/proc/self/stat").unwrap_or(f64::NAN)
}

/// CPU of this process's finished children (such as kubectl) in seconds.
pub fn children_cpu_seconds() -> f64 {
    stat_fields("/proc/self/stat", 13).unwrap_or(f64::NAN)
}

fn stat_cpu(path: &str) -> Option<f64> {
    stat_fields(path, 11)
}

/// The sum of the two /proc stat fields at `at` and `at + 1` (after the command name), in
/// seconds.
fn stat_fields(path: &str, at: usize) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(at)?.parse::<f64>().ok()? + f.get(at + 1)?.parse::<f64>().ok()?) / 100.0)
}

/// CPU seconds, by program name, of the processes whose command line contains `needle`
/// (a server's data directory): where the time of a benchmark went besides this process.
pub fn servers_cpu(needle: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let dir = p.path();
        let Ok(cmd) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let mut args = cmd.split('\0');
        let program = args.next().unwrap_or("").rsplit('/').next().unwrap_or("");
        if program.is_empty() || program == "bash" || !cmd.contains(needle) {
            continue;
        }
        if let Some(cpu) = stat_cpu(&dir.join("stat").to_string_lossy()) {
            *out.entry(program.to_owned()).or_default() += cpu;
        }
    }
    out
}

/// CPU seconds each program spent between two readings of `servers_cpu`.
pub fn cpu_spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// `name 1.23 s, ...`
pub fn cpu_line(spent: &std::collections::BTreeMap<String, f64>) -> String {
    spent
        .iter()
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How close a run came to the machine's limit: the CPU seconds the client and the
/// servers spent together, divided by the cores, is the shortest the run could have been.
pub fn floor_line(cpu_seconds: f64, wall_seconds: f64) -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let floor = cpu_seconds / cores;
    format!(
        "{cpu_seconds:.1} CPU-seconds on {cores} cores: no faster than {floor:.1} s; took {wall_seconds:.1} s ({:.0}% of the cores busy)",
        100.0 * floor / wall_seconds
    )
}

/// Requests per verb between two readings of the apiserver's request counters.
pub fn requests_delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Peak resident set size of this process in MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident set size of this process now, in MiB.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// A `/proc/self/status` field given in kB, in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
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

/// Adds `teams` teams to a platform repo's `files`, each with ten instances of the
/// example platform's kinds (web services, workers and topics): the render benchmarks'
/// load.
pub fn add_teams(files: &mut std::collections::BTreeMap<String, Vec<u8>>, teams: usize) {
    for t in 0..teams {
        let team = format!("team-{t:04}");
        files.insert(
            format!("teams/{team}/team.yaml"),
            format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  owners: [owner@example.com]\n  namespaces: [{team}]\n  clusters: {{names: [prod]}}\n  quota: {{pods: \"50\"}}\n"
            )
            .into_bytes(),
        );
        let mut apps = String::new();
        for i in 0..10 {
            let doc = match i % 3 {
                0 => format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: WebService\nmetadata: {{name: web-{i}}}\nspec:\n  image: registry.example.com/{team}/web:{i}.0\n  replicas: 2\n"
                ),
                1 => format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: Worker\nmetadata: {{name: worker-{i}}}\nspec:\n  image: registry.example.com/{team}/worker:{i}.0\n  replicas: 2\n  args: [\"--shard\", \"{i}\"]\n"
                ),
                _ => format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: Topic\nmetadata: {{name: topic-{i}}}\nspec:\n  partitions: 6\n"
                ),
            };
            apps.push_str("---\n");
            apps.push_str(&doc);
        }
        files.insert(format!("teams/{team}/apps.yaml"), apps.into_bytes());
    }
}
