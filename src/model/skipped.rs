//! An entry of the platform repo that the source did not read: a symlink or a submodule
//! (never followed), a name that is not UTF-8, a file too large or unreadable. The
//! source lists them; render turns each into a diagnostic against what the entry belongs
//! to, so that nothing a revision holds vanishes from it without an error.

use std::fmt;

/// One entry of a revision that was not read, at its path (relative, `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub path: String,
    pub reason: SkipReason,
}

/// Why an entry was not read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    Symlink,
    Submodule,
    /// The name is not UTF-8 (the path shows it lossily).
    NonUtf8Name,
    /// Larger than the source reads, in MiB.
    TooLarge {
        limit_mib: u64,
    },
    /// The file or folder could not be read (the I/O error's text).
    Unreadable(String),
}

impl Skipped {
    pub fn new(path: impl Into<String>, reason: SkipReason) -> Skipped {
        Skipped {
            path: path.into(),
            reason,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symlink, not followed"),
            SkipReason::Submodule => f.write_str("submodule, not followed"),
            SkipReason::NonUtf8Name => f.write_str("non-UTF-8 name"),
            SkipReason::TooLarge { limit_mib } => write!(f, "larger than {limit_mib} MiB"),
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.reason)
    }
}
