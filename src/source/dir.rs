//! A plain local folder as the platform repo, for developing one: read whole into a
//! snapshot whose revision is a hash of its content; watched with `notify` on its own
//! thread, debounced, and handed to async code as one wake-up per burst of saves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Snapshot, SourceError};
use crate::model::{SkipReason, Skipped};

/// Files larger than this are not read (the renderer reports them).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a folder: regular files only; `.git` is left out. Symlinks are listed, never
/// followed; so are names that are not UTF-8, files over [`MAX_FILE_BYTES`] and files or
/// folders that cannot be read (render fails what they belong to). Only a root that
/// cannot be read fails the whole read.
pub fn read(root: &Path) -> Result<Snapshot, SourceError> {
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if rel.as_os_str().is_empty() => {
                return Err(SourceError::Directory(format!("{}: {e}", dir.display())));
            }
            Err(e) => {
                skipped.push(Skipped::new(
                    shown(&rel),
                    SkipReason::Unreadable(e.to_string()),
                ));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    // The rest of this folder cannot be listed: the folder is not read.
                    skipped.push(Skipped::new(
                        shown(&rel),
                        SkipReason::Unreadable(e.to_string()),
                    ));
                    break;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                skipped.push(Skipped::new(
                    shown(&rel.join(&name)),
                    SkipReason::NonUtf8Name,
                ));
                continue;
            };
            if name == ".git" {
                continue;
            }
            let path = rel.join(name);
            if let Some(why) = read_entry(root, &path, &entry, &mut files, &mut stack) {
                skipped.push(Skipped::new(shown(&path), why));
            }
        }
    }
    let mut h = Sha256::new();
    for (path, bytes) in &files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    skipped.sort();
    // What was not read is part of the revision too: a file that turns into a symlink
    // is a new revision.
    for s in &skipped {
        h.update(s.to_string().as_bytes());
        h.update([0]);
    }
    Ok(Snapshot {
        revision: format!("dir-{}", hex::encode(&h.finalize()[..10])),
        files,
        skipped,
        author: String::new(),
        message: format!("local directory {}", root.display()),
    })
}

/// `rel` as the snapshot names it: `/`-separated.
fn shown(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "/")
}

/// Reads one entry: a file into `files`, a folder onto `stack`; why it was not read.
fn read_entry(
    root: &Path,
    path: &Path,
    entry: &std::fs::DirEntry,
    files: &mut BTreeMap<String, Vec<u8>>,
    stack: &mut Vec<PathBuf>,
) -> Option<SkipReason> {
    let unreadable = |e: std::io::Error| Some(SkipReason::Unreadable(e.to_string()));
    let kind = match entry.file_type() {
        Ok(kind) => kind,
        Err(e) => return unreadable(e),
    };
    if kind.is_symlink() {
        return Some(SkipReason::Symlink);
    }
    if kind.is_dir() {
        stack.push(path.to_owned());
        return None;
    }
    if !kind.is_file() {
        return None;
    }
    match entry.metadata() {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return Some(SkipReason::TooLarge {
                limit_mib: MAX_FILE_BYTES / 1024 / 1024,
            });
        }
        Ok(_) => {}
        Err(e) => return unreadable(e),
    }
    match std::fs::read(root.join(path)) {
        Ok(bytes) => {
            files.insert(shown(path), bytes);
            None
        }
        Err(e) => unreadable(e),
    }
}

/// Watches a folder; `wake` is notified once per debounced burst of changes (reading the
/// folder, as a poll does, is none). The watcher lives as long as the returned value.
pub fn watch(
    root: &Path,
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> Result<impl Drop + use<>, SourceError> {
    super::watch::watch(
        root,
        notify::RecursiveMode::Recursive,
        Duration::from_millis(300),
        move |_| wake.notify_one(),
    )
    .map(Box::new)
    .map_err(|e| SourceError::Directory(format!("cannot watch {}: {e}", root.display())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn what_is_not_read_is_listed_with_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("teams/a")).expect("mkdir");
        std::fs::write(root.join("teams/a/team.yaml"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", root.join("teams/a/app.yaml")).expect("link");
        std::os::unix::fs::symlink(root.join("teams/a"), root.join("teams/b")).expect("link");
        let odd = std::ffi::OsStr::from_bytes(b"teams/a/\xff.yaml");
        std::fs::write(root.join(odd), "x").expect("write");

        let snapshot = read(root).expect("read");
        assert_eq!(
            snapshot.files.keys().collect::<Vec<_>>(),
            ["teams/a/team.yaml"]
        );
        let skipped: Vec<String> = snapshot.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "teams/a/app.yaml (symlink, not followed)",
                "teams/a/\u{fffd}.yaml (non-UTF-8 name)",
                "teams/b (symlink, not followed)",
            ]
        );

        // What was not read is part of the revision: a symlink removed is a new one.
        std::fs::remove_file(root.join("teams/a/app.yaml")).expect("rm");
        assert_ne!(read(root).expect("read").revision, snapshot.revision);
    }
}
