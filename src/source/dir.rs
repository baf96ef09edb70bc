//! A plain local folder as the platform repo, for developing one: read whole into a
//! snapshot whose revision is a hash of its content; watched with `notify` on its own
//! thread, debounced, and handed to async code as one wake-up per burst of saves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Snapshot, SourceError};

/// Files larger than this are not read (the renderer reports them).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a folder: regular files only; symlinks are listed, never followed; `.git` is skipped.
pub fn read(root: &Path) -> Result<Snapshot, SourceError> {
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SourceError::Directory(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SourceError::Directory(format!("{}: {e}", dir.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                skipped.push(format!("{} (non-UTF-8 name)", rel.join(&name).display()));
                continue;
            };
            if name == ".git" {
                continue;
            }
            let path = rel.join(name);
            let shown = path.to_string_lossy().replace('\\', "/");
            let kind = entry
                .file_type()
                .map_err(|e| SourceError::Directory(format!("{shown}: {e}")))?;
            if kind.is_symlink() {
                skipped.push(format!("{shown} (symlink, not followed)"));
            } else if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let meta = entry
                    .metadata()
                    .map_err(|e| SourceError::Directory(format!("{shown}: {e}")))?;
                if meta.len() > MAX_FILE_BYTES {
                    skipped.push(format!(
                        "{shown} (larger than {} MiB)",
                        MAX_FILE_BYTES / 1024 / 1024
                    ));
                    continue;
                }
                let bytes = std::fs::read(root.join(&path))
                    .map_err(|e| SourceError::Directory(format!("{shown}: {e}")))?;
                files.insert(shown, bytes);
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
    Ok(Snapshot {
        revision: format!("dir-{}", hex::encode(&h.finalize()[..10])),
        files,
        skipped,
        author: String::new(),
        message: format!("local directory {}", root.display()),
    })
}

/// Watches a folder; `notify` fires once per debounced burst of changes. The watcher
/// lives as long as the returned value.
pub fn watch(
    root: &Path,
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> Result<impl Drop + use<>, SourceError> {
    let mut debouncer =
        notify_debouncer_mini::new_debouncer(Duration::from_millis(300), move |res| {
            if let Ok(events) = res
                && !Vec::<notify_debouncer_mini::DebouncedEvent>::is_empty(&events)
            {
                wake.notify_one();
            }
        })
        .map_err(|e| SourceError::Directory(format!("cannot watch {}: {e}", root.display())))?;
    debouncer
        .watcher()
        .watch(
            root,
            notify_debouncer_mini::notify::RecursiveMode::Recursive,
        )
        .map_err(|e| SourceError::Directory(format!("cannot watch {}: {e}", root.display())))?;
    Ok(debouncer)
}
