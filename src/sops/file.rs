//! One SOPS file: its documents (YAML files may hold several; each carries the same
//! `sops` metadata, the first one's is read) and its metadata. Which values are encrypted
//! follows the file's own rules (`unencrypted_suffix`, `encrypted_suffix`,
//! `unencrypted_regex`, `encrypted_regex`, matched against every key on a value's path), as
//! SOPS decides them; the MAC covers every value, or only the encrypted ones under
//! `mac_only_encrypted`.

use std::io::Read;

use regex::Regex;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SopsError;
use super::cipher;
use super::keyring::Keyring;
use super::node::{Node, Plain};

/// SOPS's default when a file names no rule: keys ending in `_unencrypted` stay plain.
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The fixed bytes SOPS starts the MAC with under `mac_only_encrypted`: SHA-256 of "sops".
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Where the data key is wrapped for one age recipient.
#[derive(Debug, Clone)]
struct AgeStanza {
    recipient: String,
    enc: String,
}

/// Which keys' values SOPS encrypted.
#[derive(Debug, Clone, Default)]
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<Regex>,
    encrypted_regex: Option<Regex>,
}

impl Rules {
    /// SOPS's `shouldBeEncrypted`, for the rules pontoon reads.
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(s) = &self.unencrypted_suffix
            && path.iter().any(|k| k.ends_with(s.as_str()))
        {
            encrypted = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            encrypted = path.iter().any(|k| k.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|k| r.is_match(k))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|k| r.is_match(k));
        }
        encrypted
    }
}

/// A parsed SOPS file, not yet decrypted.
#[derive(Debug, Clone)]
pub struct SopsFile {
    docs: Vec<Node>,
    last_modified: String,
    mac: String,
    age: Vec<AgeStanza>,
    rules: Rules,
    mac_only_encrypted: bool,
}

/// Whether a parsed document is SOPS-encrypted: a top-level `sops` map with a `mac`.
pub fn is_encrypted(doc: &serde_json::Value) -> bool {
    doc.get("sops")
        .and_then(|s| s.get("mac"))
        .is_some_and(|m| m.is_string())
}

fn structure(msg: impl Into<String>) -> SopsError {
    SopsError::Structure(msg.into())
}

impl SopsFile {
    /// Reads the documents of a YAML file, each given as its own text.
    pub fn from_yaml_documents(texts: &[&str]) -> Result<SopsFile, SopsError> {
        let docs = texts
            .iter()
            .map(|t| {
                serde_saphyr::from_str::<Node>(t)
                    .map_err(|e| structure(format!("YAML: {}", crate::yaml::error_message(&e))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        SopsFile::from_documents(docs)
    }

    /// Reads a JSON file (SOPS writes one object per JSON file).
    pub fn from_json(text: &str) -> Result<SopsFile, SopsError> {
        let doc =
            serde_json::from_str::<Node>(text).map_err(|e| structure(format!("JSON: {e}")))?;
        SopsFile::from_documents(vec![doc])
    }

    fn from_documents(mut docs: Vec<Node>) -> Result<SopsFile, SopsError> {
        docs.retain(|d| *d != Node::Null);
        let mut meta = None;
        for doc in &mut docs {
            let Node::Map(entries) = doc else {
                return Err(structure("a document is not a map"));
            };
            if let Some(i) = entries.iter().position(|(k, _)| k == "sops") {
                let (_, m) = entries.remove(i);
                meta.get_or_insert(m);
            }
        }
        let meta = meta.ok_or_else(|| structure("no `sops` metadata"))?;
        let text = |key: &str| meta.get(key).and_then(Node::as_str).map(str::to_owned);
        let listed = |key: &str| matches!(meta.get(key), Some(Node::List(l)) if !l.is_empty());
        if listed("key_groups") {
            return Err(SopsError::Feature(
                "key_groups (Shamir secret sharing)".into(),
            ));
        }
        for key in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if text(key).is_some_and(|t| !t.is_empty()) {
                return Err(SopsError::Feature(key.into()));
            }
        }
        let mut age = Vec::new();
        if let Some(Node::List(items)) = meta.get("age") {
            for item in items {
                let field = |k: &str| item.get(k).and_then(Node::as_str).map(str::to_owned);
                match (field("recipient"), field("enc")) {
                    (Some(recipient), Some(enc)) => age.push(AgeStanza { recipient, enc }),
                    _ => return Err(structure("an entry of sops.age without recipient or enc")),
                }
            }
        }
        if age.is_empty() {
            let others: Vec<&str> = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"]
                .into_iter()
                .filter(|k| listed(k))
                .collect();
            return Err(if others.is_empty() {
                structure("sops.age names no recipient")
            } else {
                SopsError::Unsupported(others.join(", "))
            });
        }
        let regex = |key: &str| -> Result<Option<Regex>, SopsError> {
            text(key)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    Regex::new(&t).map_err(|_| structure(format!("sops.{key} is not a regex")))
                })
                .transpose()
        };
        let mut rules = Rules {
            unencrypted_suffix: text("unencrypted_suffix").filter(|t| !t.is_empty()),
            encrypted_suffix: text("encrypted_suffix").filter(|t| !t.is_empty()),
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
        };
        if rules.unencrypted_suffix.is_none()
            && rules.encrypted_suffix.is_none()
            && rules.unencrypted_regex.is_none()
            && rules.encrypted_regex.is_none()
        {
            rules.unencrypted_suffix = Some(DEFAULT_UNENCRYPTED_SUFFIX.to_owned());
        }
        let file = SopsFile {
            docs,
            last_modified: text("lastmodified").ok_or_else(|| structure("no sops.lastmodified"))?,
            mac: text("mac").ok_or_else(|| structure("no sops.mac"))?,
            age,
            rules,
            mac_only_encrypted: matches!(meta.get("mac_only_encrypted"), Some(Node::Bool(true))),
        };
        file.check_structure()?;
        Ok(file)
    }

    /// The age recipients the data key is wrapped for (public keys: no secret).
    pub fn recipients(&self) -> Vec<&str> {
        self.age.iter().map(|a| a.recipient.as_str()).collect()
    }

    /// Every value the rules say is encrypted has the form of one, and so has the MAC:
    /// what can be known without a key.
    fn check_structure(&self) -> Result<(), SopsError> {
        cipher::parse(&self.mac).map_err(|e| structure(format!("sops.mac: {e}")))?;
        let mut path = Vec::new();
        for doc in &self.docs {
            self.walk_check(doc, &mut path)?;
        }
        Ok(())
    }

    fn walk_check(&self, node: &Node, path: &mut Vec<String>) -> Result<(), SopsError> {
        match node {
            Node::Map(entries) => {
                for (k, v) in entries {
                    path.push(k.clone());
                    self.walk_check(v, path)?;
                    path.pop();
                }
            }
            Node::List(items) => {
                for v in items {
                    self.walk_check(v, path)?;
                }
            }
            Node::Null => {}
            Node::Str(s) if s.expose().is_empty() => {}
            leaf if self.rules.encrypts(path) => {
                let at = || path.join(".");
                let text = leaf.as_str().ok_or_else(|| SopsError::Value {
                    path: at(),
                    reason: "it should be encrypted but is not a string".into(),
                })?;
                cipher::parse(text).map_err(|reason| SopsError::Value { path: at(), reason })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The documents with each encrypted value replaced by the empty value of its type
    /// (`""`, 0, 0.0, false): what is checked without a key.
    pub fn placeholders(&self) -> Vec<Node> {
        let mut path = Vec::new();
        self.docs
            .iter()
            .map(|d| self.walk_placeholders(d, &mut path))
            .collect()
    }

    fn walk_placeholders(&self, node: &Node, path: &mut Vec<String>) -> Node {
        match node {
            Node::Map(entries) => Node::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        path.push(k.clone());
                        let v = self.walk_placeholders(v, path);
                        path.pop();
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Node::List(items) => Node::List(
                items
                    .iter()
                    .map(|v| self.walk_placeholders(v, path))
                    .collect(),
            ),
            Node::Str(_) if self.rules.encrypts(path) => {
                let kind = node
                    .as_str()
                    .and_then(|t| cipher::parse(t).ok())
                    .map(|s| s.kind);
                match kind.as_deref() {
                    Some("int") => Node::Int(0),
                    Some("float") => Node::Float(0.0),
                    Some("bool") => Node::Bool(false),
                    _ => Node::Str(super::Plain::new(Vec::new())),
                }
            }
            other => other.clone(),
        }
    }

    /// Decrypts every document with the identities of `key` in `keyring`, and checks the
    /// MAC. The documents come back without their `sops` metadata.
    pub fn decrypt(&self, keyring: &Keyring, key: &str) -> Result<Vec<Node>, SopsError> {
        self.decrypt_noting(keyring, key, &mut Vec::new())
    }

    /// As [`SopsFile::decrypt`], adding to `secrets` the text of every value that was
    /// encrypted (booleans aside): what must never be shown (a caller replaces it in its
    /// messages).
    pub fn decrypt_noting(
        &self,
        keyring: &Keyring,
        key: &str,
        secrets: &mut Vec<Plain>,
    ) -> Result<Vec<Node>, SopsError> {
        let data_key = self.data_key(keyring, key)?;
        let mut hash = Sha512::new();
        if self.mac_only_encrypted {
            hash.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        let mut path = Vec::new();
        let docs = self
            .docs
            .iter()
            .map(|d| self.walk_decrypt(d, &mut path, &data_key, &mut hash, secrets))
            .collect::<Result<Vec<_>, _>>()?;
        let computed = Zeroizing::new(hex::encode_upper(hash.finalize()));
        let sealed = cipher::parse(&self.mac).map_err(|e| structure(format!("sops.mac: {e}")))?;
        let stored =
            cipher::open(&sealed, &data_key, &self.last_modified).map_err(|_| SopsError::Mac)?;
        if !bool::from(stored.expose().ct_eq(computed.as_bytes())) {
            return Err(SopsError::Mac);
        }
        Ok(docs)
    }

    fn walk_decrypt(
        &self,
        node: &Node,
        path: &mut Vec<String>,
        key: &[u8; 32],
        hash: &mut Sha512,
        secrets: &mut Vec<Plain>,
    ) -> Result<Node, SopsError> {
        let leaf = match node {
            Node::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    path.push(k.clone());
                    out.push((k.clone(), self.walk_decrypt(v, path, key, hash, secrets)?));
                    path.pop();
                }
                return Ok(Node::Map(out));
            }
            Node::List(items) => {
                let out = items
                    .iter()
                    .map(|v| self.walk_decrypt(v, path, key, hash, secrets))
                    .collect::<Result<_, _>>()?;
                return Ok(Node::List(out));
            }
            Node::Null => return Ok(Node::Null),
            leaf => leaf,
        };
        let encrypted = self.rules.encrypts(path);
        let value = match leaf {
            Node::Str(s) if encrypted && !s.expose().is_empty() => {
                let at = || path.join(".");
                let text = leaf.as_str().unwrap_or_default();
                let sealed = cipher::parse(text)
                    .map_err(|reason| SopsError::Value { path: at(), reason })?;
                // SOPS seals each value with its key path, each key followed by `:`.
                let aad: String = path.iter().map(|k| format!("{k}:")).collect();
                let plain = cipher::open(&sealed, key, &aad)
                    .map_err(|reason| SopsError::Value { path: at(), reason })?;
                // A boolean's text (True) is no secret worth blotting out of a message.
                if sealed.kind != "bool" {
                    secrets.push(plain.clone());
                }
                cipher::typed(&sealed.kind, plain)
                    .map_err(|reason| SopsError::Value { path: at(), reason })?
            }
            other => other.clone(),
        };
        if !self.mac_only_encrypted || encrypted {
            cipher::feed_mac(&value, hash);
        }
        Ok(value)
    }

    /// The data key, unwrapped by the first age stanza one of `key`'s identities opens.
    fn data_key(&self, keyring: &Keyring, key: &str) -> Result<Zeroizing<[u8; 32]>, SopsError> {
        let identities = keyring
            .identities(key)
            .ok_or_else(|| SopsError::NoKey(format!("the daemon holds no key named `{key}`")))?;
        for stanza in &self.age {
            let armored = age::armor::ArmoredReader::new(stanza.enc.as_bytes());
            let decryptor = age::Decryptor::new(armored)
                .map_err(|_| structure("an entry of sops.age is not an armored age file"))?;
            let ids = identities.iter().map(|i| i as &dyn age::Identity);
            let Ok(mut reader) = decryptor.decrypt(ids) else {
                continue;
            };
            let mut bytes = Zeroizing::new(Vec::with_capacity(32));
            reader
                .read_to_end(&mut bytes)
                .map_err(|_| structure("a wrapped data key does not decrypt whole"))?;
            let mut out = Zeroizing::new([0u8; 32]);
            if bytes.len() != 32 {
                return Err(structure("the data key is not 32 bytes"));
            }
            out.copy_from_slice(&bytes);
            return Ok(out);
        }
        let others: Vec<&str> = self
            .age
            .iter()
            .filter_map(|s| keyring.name_of(&s.recipient))
            .filter(|n| *n != key)
            .collect();
        Err(SopsError::WrongKey(if others.is_empty() {
            format!("it is not encrypted for the key `{key}`, nor for any key this daemon holds")
        } else {
            format!(
                "it is encrypted for the key `{}`, not for `{key}`, the key that decrypts this team's files",
                others.join("`, `")
            )
        }))
    }
}
