//! File watching that wakes only on changes. Linux's inotify backend of `notify` also
//! reports files being opened and read; a watcher that wakes on those and then reads the
//! files it watches wakes itself again, for ever. Here only what changes content or
//! names counts (creations, writes, removals, renames, metadata), debounced into one
//! call per burst, on a thread of its own.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher as _};

/// A running watch; it stops when dropped.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

/// Whether an event says something changed: any event but a file being opened, read or
/// closed without writing.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `path` (with `mode`), calling `on_change` with the paths that changed once no
/// further change came for `quiet`. Errors of the watch itself are ignored: a missed
/// event only delays a change until the next poll.
pub fn watch(
    path: &Path,
    mode: RecursiveMode,
    quiet: Duration,
    mut on_change: impl FnMut(Vec<PathBuf>) + Send + 'static,
) -> notify::Result<Watch> {
    let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && is_change(&event.kind)
        {
            let _ = tx.send(event.paths);
        }
    })?;
    watcher.watch(path, mode)?;
    // The debounce thread ends when the watcher (and with it the sender) is dropped.
    std::thread::Builder::new()
        .name("pontoon-watch".into())
        .spawn(move || {
            while let Ok(mut paths) = rx.recv() {
                loop {
                    match rx.recv_timeout(quiet) {
                        Ok(more) => paths.extend(more),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                paths.sort();
                paths.dedup();
                on_change(paths);
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Watch { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_the_watched_files_is_no_change_and_writing_them_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        let (tx, rx) = mpsc::channel();
        let _watch = watch(
            dir.path(),
            RecursiveMode::Recursive,
            Duration::from_millis(100),
            move |paths| {
                let _ = tx.send(paths);
            },
        )
        .expect("watch");
        for _ in 0..5 {
            std::fs::read(&file).expect("read");
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(800)).is_err(),
            "reads woke the watch"
        );
        std::fs::write(&file, "a: 2\n").expect("write");
        let changed = rx.recv_timeout(Duration::from_secs(10)).expect("a change");
        assert!(changed.iter().any(|p| p.ends_with("a.yaml")), "{changed:?}");
    }
}
