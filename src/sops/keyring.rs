//! The age identities the daemon holds, by the name its config gives each key. Built from
//! the text of identity files (as `age-keygen` writes them) by whoever read the files;
//! render only borrows it. Identities are wiped when dropped (the age crate's secret types
//! do), and neither the keyring's `Debug` nor any error here shows one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use age::x25519::Identity;

/// Why an identity file cannot be used. Names the key and the line, never its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key `{name}`: line {line} is not an age identity (AGE-SECRET-KEY-1…)")]
    NotAnIdentity { name: String, line: usize },
    #[error("key `{name}`: the file holds no age identity")]
    Empty { name: String },
}

/// Named age keys. A name may hold several identities (an identity file may list more
/// than one, e.g. while a key is being rotated).
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<String, Vec<Identity>>,
    /// Each identity's public recipient, to the key name it belongs to: lets an error say
    /// which other key a file is encrypted for, by name.
    recipients: BTreeMap<String, String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    pub fn new() -> Self {
        Keyring::default()
    }

    /// A keyring without keys, usable as a `static`.
    pub const fn empty() -> Self {
        Keyring {
            keys: BTreeMap::new(),
            recipients: BTreeMap::new(),
        }
    }

    /// Adds the identities of an identity file's text under `name`: one
    /// `AGE-SECRET-KEY-1…` a line, `#` comments and blank lines skipped.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), KeyError> {
        let mut ids = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = Identity::from_str(line).map_err(|_| KeyError::NotAnIdentity {
                name: name.to_owned(),
                line: i + 1,
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(KeyError::Empty {
                name: name.to_owned(),
            });
        }
        for id in &ids {
            self.recipients
                .insert(id.to_public().to_string(), name.to_owned());
        }
        self.keys.entry(name.to_owned()).or_default().extend(ids);
        Ok(())
    }

    /// The identities of the key `name`.
    pub fn identities(&self, name: &str) -> Option<&[Identity]> {
        self.keys.get(name).map(Vec::as_slice)
    }

    /// The name of the key an age recipient (a public key) belongs to, if this keyring
    /// holds it.
    pub fn name_of(&self, recipient: &str) -> Option<&str> {
        self.recipients.get(recipient).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}
