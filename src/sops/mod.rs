//! SOPS files decrypted with age keys, as the `sops` CLI writes them: a random data key
//! wrapped for each age recipient (`sops.age[].enc`, an armored age file), every value
//! sealed on its own with AES-256-GCM and its key path as additional data, and a MAC (a
//! SHA-512 over the plaintext values in file order) itself sealed with `lastmodified` as
//! additional data. A file decrypts only when its MAC checks: a value changed, removed,
//! moved or added after encryption is an error, not a silently different Secret.
//!
//! Pure: the caller hands in the text and the identities (render passes its team's), no
//! file, environment or clock is read. Only age is read: a file whose data key is wrapped
//! for PGP or a cloud KMS alone, or split into key groups, is refused with a message that
//! says so. No error here ever holds a decrypted value or a key.

mod cipher;
mod file;
mod keyring;
mod node;

pub use file::{SopsFile, is_encrypted};
pub use keyring::{KeyError, Keyring};
pub use node::{Node, Plain};

/// Why a SOPS file cannot be read. Names what is wrong and where (a key path), never a
/// value and never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    #[error("not a valid SOPS file: {0}")]
    Structure(String),
    #[error(
        "its data key is wrapped only for {0}; pontoon decrypts SOPS files with age keys only: re-encrypt it for the team's age recipient"
    )]
    Unsupported(String),
    #[error("SOPS {0} is not supported: re-encrypt it with age recipients only")]
    Feature(String),
    #[error("no key given to decrypt it: {0}")]
    NoKey(String),
    #[error("{0}")]
    WrongKey(String),
    #[error("the value at `{path}` cannot be decrypted: {reason}")]
    Value { path: String, reason: String },
    #[error(
        "MAC mismatch: the file was changed after it was encrypted (or its MAC was): decrypt and re-encrypt it with sops"
    )]
    Mac,
}

#[cfg(test)]
mod tests;
