//! npm packages the tests read (installed by `tests/support/install-deps.sh` from
//! `tests/support/deps/*.txt` into the cache, never into the work tree).

use std::path::PathBuf;

/// The folder of an installed npm package; panics with how to install it when missing.
pub fn package(name: &str) -> PathBuf {
    let cache = std::env::var_os("PONTOON_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("pontoon")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pontoon")))
        .expect("no cache folder: set PONTOON_CACHE");
    let dir = cache.join("npm/node_modules").join(name);
    assert!(
        dir.is_dir(),
        "npm package {name} is not installed in {}: run tests/support/install-deps.sh (make test does)",
        dir.display()
    );
    dir
}
