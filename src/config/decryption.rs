//! The age keys that decrypt the platform repo's SOPS files, by name: the config says
//! where each identity file is (`{file: …}` or `{env: …}`), never the key. Which key
//! decrypts which team's files is the platform repo's to say (`platform.yaml`,
//! `spec.decryption.teams`); the daemon only holds the keys. Keys are read when the
//! daemon starts (a config reload restarts it), into memory that is wiped afterwards.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::SecretRef;
use crate::sops::{KeyError, Keyring};

/// `decryption.keys` of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecryptionConfig {
    /// Key name → where its age identity file is.
    pub keys: BTreeMap<String, SecretRef>,
}

/// Why the keys cannot be read: names the key and where it was looked for, never a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("decryption.keys.{name}: {source}")]
    Read {
        name: String,
        source: super::SecretError,
    },
    #[error("decryption.keys.{name}: {source}")]
    Parse { name: String, source: KeyError },
}

impl DecryptionConfig {
    /// Reads every key into a keyring. Blocking file reads: call it off the runtime.
    pub fn keyring(&self) -> Result<Keyring, KeyringError> {
        let mut keyring = Keyring::new();
        for (name, at) in &self.keys {
            let text = read(at).map_err(|source| KeyringError::Read {
                name: name.clone(),
                source,
            })?;
            keyring
                .add(name, &text)
                .map_err(|source| KeyringError::Parse {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(keyring)
    }
}

/// The text of an identity, in memory wiped when dropped.
fn read(at: &SecretRef) -> Result<Zeroizing<String>, super::SecretError> {
    match at {
        SecretRef::File(p) => std::fs::read_to_string(p)
            .map(Zeroizing::new)
            .map_err(|source| super::SecretError::File {
                path: p.clone(),
                source,
            }),
        SecretRef::Env(n) => std::env::var(n)
            .map(Zeroizing::new)
            .map_err(|_| super::SecretError::EnvUnset { name: n.clone() }),
    }
}
