//! Cleanup of the chart cache, as Flux's source-controller keeps its artifacts: what is
//! in use stays, what no render has used for `charts.keepUnused` goes.
//!
//! Kept, whatever the time: an archive a render under way holds ([`Hold`]), and one the
//! daemon's current or previous published render uses (so that a rollback to the
//! previous revision fetches nothing). Removed: any other archive whose last use is
//! older than `keepUnused`, with the pins that named it. A last use is known in this
//! process, and written to the archive's modification time at each cleanup so that a
//! restart keeps it. Repository indexes (one per repository) are left alone.
//!
//! A fetch adds its archive to its render's hold before it looks for the file, and a
//! cleanup checks the holds and removes a file under one lock: an archive is never
//! removed between the fetch that finds it and the render that reads it. Holds are this
//! process's: another process sharing the cache directory is not seen.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A last use this much newer than the file's time is written to it.
const PERSIST_AFTER: Duration = Duration::from_secs(60);

/// Which archives (by sha256 hex) are in use, and when each was last used.
#[derive(Default)]
pub(super) struct Uses {
    next_hold: u64,
    held: HashMap<u64, BTreeSet<String>>,
    last_used: HashMap<String, SystemTime>,
    /// The daemon's current and previous published renders' archives.
    published: [BTreeSet<String>; 2],
}

impl Uses {
    fn in_use(&self, hex: &str) -> bool {
        self.published.iter().any(|p| p.contains(hex))
            || self.held.values().any(|h| h.contains(hex))
    }
}

pub(super) type SharedUses = Arc<Mutex<Uses>>;

pub(super) fn lock(uses: &Mutex<Uses>) -> MutexGuard<'_, Uses> {
    uses.lock().unwrap_or_else(|e| e.into_inner())
}

/// The archives one render uses: none of them is removed while this lives.
pub struct Hold {
    id: u64,
    uses: SharedUses,
}

impl Hold {
    pub(super) fn new(uses: &SharedUses) -> Hold {
        let mut u = lock(uses);
        u.next_hold += 1;
        let id = u.next_hold;
        u.held.insert(id, BTreeSet::new());
        Hold {
            id,
            uses: uses.clone(),
        }
    }

    /// Holds the archive `hex` (and counts it used now).
    pub(super) fn add(&self, hex: &str) {
        let mut u = lock(&self.uses);
        u.last_used.insert(hex.to_owned(), SystemTime::now());
        if let Some(h) = u.held.get_mut(&self.id) {
            h.insert(hex.to_owned());
        }
    }

    /// The archives held, by sha256 hex.
    pub fn archives(&self) -> BTreeSet<String> {
        lock(&self.uses)
            .held
            .get(&self.id)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        lock(&self.uses).held.remove(&self.id);
    }
}

/// The archives of the daemon's newest published render: they and the previous
/// render's are kept whatever their age.
pub(super) fn publish(uses: &Mutex<Uses>, archives: BTreeSet<String>) {
    let mut u = lock(uses);
    if u.published[0] != archives {
        u.published[1] = std::mem::replace(&mut u.published[0], archives);
    }
}

/// What one cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// The archives removed, by sha256 hex.
    pub removed: Vec<String>,
    /// Bytes of the archives left.
    pub kept_bytes: u64,
}

/// Removes from `dir` every archive not in use whose last use is older than
/// `keep_unused` at `now`, and the pins that named it. Blocks: call it off the runtime.
pub(super) fn sweep(
    dir: &Path,
    uses: &Mutex<Uses>,
    keep_unused: Duration,
    now: SystemTime,
) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return swept;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name
            .strip_prefix("sha256-")
            .and_then(|n| n.strip_suffix(".tgz"))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let on_disk = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut u = lock(uses);
        let in_memory = u.last_used.get(hex).copied();
        let last = in_memory.map_or(on_disk, |m| m.max(on_disk));
        let fresh = now.duration_since(last).unwrap_or_default() < keep_unused;
        if u.in_use(hex) || fresh {
            swept.kept_bytes += meta.len();
            if in_memory
                .is_some_and(|m| m.duration_since(on_disk).unwrap_or_default() > PERSIST_AFTER)
                && let Ok(file) = std::fs::File::options().write(true).open(entry.path())
            {
                let _ = file.set_modified(last);
            }
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                u.last_used.remove(hex);
                swept.removed.push(hex.to_owned());
            }
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unused chart archive");
                swept.kept_bytes += meta.len();
            }
        }
    }
    if !swept.removed.is_empty() {
        remove_orphan_pins(dir, uses);
    }
    swept.removed.sort();
    swept
}

/// Removes the pins whose archive is gone and not being fetched again (held).
fn remove_orphan_pins(dir: &Path, uses: &Mutex<Uses>) {
    let Ok(pins) = std::fs::read_dir(dir.join("pins")) else {
        return;
    };
    for pin in pins.filter_map(Result::ok) {
        let digest = std::fs::read(pin.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("digest")?.as_str().map(str::to_owned));
        let Some(hex) = digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) else {
            continue;
        };
        let u = lock(uses);
        if !u.in_use(hex) && !super::archive_path(dir, hex).exists() {
            let _ = std::fs::remove_file(pin.path());
        }
        drop(u);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{archive_path, pin_path, read_pin, sha256_hex, write_whole};
    use super::*;

    /// An archive holding `name`, fetched `age` before `now` for the pin `pin-<name>`;
    /// its sha256 hex.
    fn archive(dir: &Path, name: &str, age: Duration, now: SystemTime) -> String {
        let hex = sha256_hex(name.as_bytes());
        let path = archive_path(dir, &hex);
        write_whole(&path, name.as_bytes()).expect("archive");
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(now - age).expect("mtime");
        let record =
            serde_json::json!({"pin": format!("pin-{name}"), "digest": format!("sha256:{hex}")});
        write_whole(
            &pin_path(dir, &format!("pin-{name}")),
            record.to_string().as_bytes(),
        )
        .expect("pin");
        hex
    }

    fn names(removed: &[String], hexes: &HashMap<String, &str>) -> BTreeSet<String> {
        removed.iter().map(|h| hexes[h].to_owned()).collect()
    }

    #[test]
    fn only_archives_unused_for_longer_than_the_grace_and_not_in_use_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let now = SystemTime::now();
        let (day, hour) = (Duration::from_secs(86_400), Duration::from_secs(3600));
        // a: old, the current render's; b: old, the previous render's; c: old, held by a
        // render under way; e: fetched an hour ago; f: old, used by nothing.
        let mut hexes = HashMap::new();
        for (name, age) in [
            ("a", 3 * day),
            ("b", 3 * day),
            ("c", 3 * day),
            ("e", hour),
            ("f", 3 * day),
        ] {
            hexes.insert(archive(d, name, age, now), name);
        }
        let hex = |name: &str| sha256_hex(name.as_bytes());
        let uses: SharedUses = Arc::default();
        publish(&uses, BTreeSet::from([hex("b")]));
        publish(&uses, BTreeSet::from([hex("a")]));
        let hold = Hold::new(&uses);
        hold.add(&hex("c"));
        let swept = sweep(d, &uses, day, now);
        assert_eq!(
            names(&swept.removed, &hexes),
            BTreeSet::from(["f".to_owned()])
        );
        assert_eq!(swept.kept_bytes, 4);
        assert!(read_pin(d, "pin-f").is_none());
        assert!(!pin_path(d, "pin-f").exists(), "its pin went too");
        assert!(read_pin(d, "pin-a").is_some());

        // c's use was written to its file: a restart (no memory) still keeps it a day.
        drop(hold);
        let restarted: SharedUses = Arc::default();
        let swept = sweep(d, &restarted, day, now + hour);
        assert_eq!(
            names(&swept.removed, &hexes),
            BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            "nothing published since the restart"
        );
        // Published after the restart: kept with no grace; what is not goes at once.
        publish(&restarted, BTreeSet::from([hex("e")]));
        let swept = sweep(d, &restarted, Duration::ZERO, now + 2 * hour);
        assert_eq!(
            names(&swept.removed, &hexes),
            BTreeSet::from(["c".to_owned()])
        );
        assert_eq!(swept.kept_bytes, 1);
        assert!(read_pin(d, "pin-e").is_some());
    }
}
