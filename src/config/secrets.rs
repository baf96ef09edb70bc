//! Secrets: the config names where a secret is (a file or an environment variable),
//! never the secret itself. Reading one happens when it is needed; neither a reference's
//! parsing errors nor a read error ever repeats a secret's value, and a [`Secret`]'s
//! `Debug` never prints it.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Where a secret comes from. Never the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Env(n) => write!(f, "env:{n}"),
        }
    }
}

impl SecretRef {
    /// Reads the secret now. Trailing newlines of files are dropped.
    /// The error never contains the value.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|source| SecretError::File {
                    path: p.clone(),
                    source,
                }),
            SecretRef::Env(n) => std::env::var(n)
                .map(Secret)
                .map_err(|_| SecretError::EnvUnset { name: n.clone() }),
        }
    }
}

/// Why a secret could not be read. Names where it was looked for, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {name} is not set")]
    EnvUnset { name: String },
}

/// A secret value. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a reference {file: PATH} or {env: NAME}";
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            // Deliberately does not echo the value: it may be a pasted secret.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "secrets are never written inline; use {file: PATH} or {env: NAME}",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!("expected {EXPECTED}")));
                };
                let out = match key.as_str() {
                    "file" => SecretRef::File(map.next_value()?),
                    "env" => SecretRef::Env(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["file", "env"])),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(format!(
                        "expected exactly one of `file` or `env` in {EXPECTED}"
                    )));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}
