//! A team's SOPS-encrypted files, decrypted with the one key `platform.yaml` gives the
//! team (`spec.decryption.teams`), whatever other keys the daemon holds: a file encrypted
//! for another team's key fails this team's render, naming the file and the reason,
//! never a value or key material. The decrypted documents then render like any other;
//! their `text` (what a diagnostic locates fields in) stays the encrypted text.
//!
//! Without keys ([`Decryption::StructureOnly`]: `pontoon validate`, `pontoon render`
//! without a config) a file's structure is checked, the key it needs is reported as a
//! warning, and its encrypted values render as empty placeholders of their types (a
//! document whose apiVersion or kind is encrypted is left out).

use crate::desired::{Diagnostic, Severity, TeamName};
use crate::model::{Document, Platform, diag};
use crate::sops::{Keyring, Plain, SopsFile};

/// What render may do with the teams' SOPS files.
#[derive(Debug, Clone, Copy)]
pub enum Decryption<'a> {
    /// Decrypt with these keys: the daemon's (none when it has no `decryption` config, so
    /// that an encrypted file fails its team rather than rendering without its values).
    Keys(&'a Keyring),
    /// Check each file's structure and say which key it needs; render its encrypted
    /// values as placeholders. Never for anything that is applied.
    StructureOnly,
}

/// No keys at all: what a render that was given none decrypts with.
pub static NO_KEYS: Keyring = Keyring::empty();

/// The team's key and what it reads the files with, for one team's render.
pub(super) struct TeamSecrets<'a> {
    pub decryption: Decryption<'a>,
    pub platform: &'a Platform,
    pub team: &'a TeamName,
}

impl TeamSecrets<'_> {
    /// The documents of one encrypted file, decrypted (or with placeholders); nothing and
    /// an error when it cannot be read.
    pub fn decrypt(
        &self,
        path: &str,
        docs: Vec<Document>,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
        secrets: &mut Vec<Plain>,
    ) -> Vec<Document> {
        let line = docs.first().map_or(1, |d| d.line);
        let fail = |errors: &mut Vec<Diagnostic>, message: String| {
            errors.push(diag(path, line, 1, Some(self.team), "sops", message));
            Vec::new()
        };
        let parsed = if path.ends_with(".json") {
            match docs.as_slice() {
                [one] => SopsFile::from_json(&one.text),
                _ => return fail(errors, "a SOPS JSON file holds one object".into()),
            }
        } else {
            let texts: Vec<&str> = docs.iter().map(|d| &*d.text).collect();
            SopsFile::from_yaml_documents(&texts)
        };
        let file = match parsed {
            Ok(f) => f,
            Err(e) => return fail(errors, format!("SOPS file: {e}")),
        };
        let key = self
            .platform
            .spec
            .decryption
            .teams
            .get(&self.team.0)
            .map(String::as_str);
        let nodes = match (self.decryption, key) {
            (_, None) => {
                return fail(
                    errors,
                    format!(
                        "SOPS file, but platform.yaml gives team {} no key: add it to spec.decryption.teams",
                        self.team
                    ),
                );
            }
            (Decryption::StructureOnly, Some(key)) => {
                warnings.push(Diagnostic {
                    severity: Severity::Warning,
                    ..diag(
                        path,
                        line,
                        1,
                        Some(self.team),
                        "sops-key",
                        format!(
                            "SOPS file for age recipient {}: decrypted with the key `{key}`; not decrypted here, its values not checked",
                            file.recipients().join(", ")
                        ),
                    )
                });
                file.placeholders()
            }
            (Decryption::Keys(keys), Some(key)) => match file.decrypt_noting(keys, key, secrets) {
                Ok(nodes) => nodes,
                Err(e) => return fail(errors, format!("SOPS file: {e}")),
            },
        };
        let placeholders = matches!(self.decryption, Decryption::StructureOnly);
        let mut out = Vec::with_capacity(docs.len());
        for (doc, node) in docs.into_iter().zip(nodes) {
            match node.to_json("") {
                // Its apiVersion or kind encrypted too: nothing to check it as.
                Ok(value) if placeholders && !has_type(&value) => {}
                Ok(value) => out.push(Document {
                    value,
                    decrypted: true,
                    ..doc
                }),
                Err(why) => {
                    errors.push(diag(path, doc.line, 1, Some(self.team), "sops", why));
                }
            }
        }
        out
    }
}

/// Shortest decrypted text replaced in messages: a shorter one would blot out common
/// words (and says little about the value).
const MIN_REDACTED_LEN: usize = 4;

/// Replaces every decrypted text of `secrets` in the diagnostics' messages with
/// [`REDACTED`]: a message that quotes a value (a namespace, a name) read from an
/// encrypted field never shows it.
pub(super) fn redact(diags: &mut [Diagnostic], secrets: &[Plain]) {
    let texts: Vec<&str> = secrets
        .iter()
        .filter_map(|p| std::str::from_utf8(p.expose()).ok())
        .filter(|t| t.len() >= MIN_REDACTED_LEN)
        .collect();
    if texts.is_empty() {
        return;
    }
    for d in diags {
        for t in &texts {
            if d.message.contains(t) {
                d.message = d.message.replace(t, REDACTED);
            }
        }
    }
}

/// Whether a document says its apiVersion and kind (a placeholder of an encrypted one
/// is empty).
fn has_type(value: &serde_json::Value) -> bool {
    ["apiVersion", "kind"].iter().all(|f| {
        value
            .get(f)
            .and_then(|v| v.as_str())
            .is_some_and(|t| !t.is_empty())
    })
}

/// What is shown in place of a Secret's value.
pub const REDACTED: &str = "(secret)";

/// Whether a manifest is a core Secret, whose `data` and `stringData` values are never
/// shown.
pub fn is_secret(object: &serde_json::Value) -> bool {
    object.get("kind").and_then(serde_json::Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(serde_json::Value::as_str) == Some("v1")
}

/// A manifest as it may be shown: a Secret's `data` and `stringData` values replaced by
/// [`REDACTED`], their keys kept. Any other object is returned as it is.
pub fn redacted(object: &serde_json::Value) -> serde_json::Value {
    let mut object = object.clone();
    if is_secret(&object) {
        for field in ["data", "stringData"] {
            if let Some(map) = object.get_mut(field).and_then(|v| v.as_object_mut()) {
                for v in map.values_mut() {
                    *v = serde_json::Value::String(REDACTED.to_owned());
                }
            }
        }
    }
    object
}

/// A Secret's `stringData` written into `data`, base64-encoded, as the API server stores
/// it (`stringData` wins over `data` for the same key, and is never stored itself).
/// Applied as written, `stringData` would be missing from every live Secret: drift on
/// every watch event and a write on every sync.
pub(super) fn string_data_into_data(object: &mut serde_json::Value) {
    use base64::Engine;
    if !is_secret(object) {
        return;
    }
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let all_strings = match map.get("stringData") {
        Some(serde_json::Value::Object(m)) => m.values().all(serde_json::Value::is_string),
        _ => false,
    };
    // Anything else is left for the API server to refuse, with its own message.
    if !all_strings {
        return;
    }
    let Some(serde_json::Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            let text = v.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(k, serde_json::Value::String(encoded));
        }
    }
}
