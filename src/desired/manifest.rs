//! A desired object's manifest, kept as its compact JSON text.
//!
//! A `serde_json::Value` tree costs a B-tree node of about 630 bytes for every mapping,
//! however few keys it holds: a rendered Deployment is some twenty mappings, near ten
//! times its JSON text. A render of thousands of objects is held for as long as the
//! daemon runs, so the manifest is kept as text and its tree built only when something
//! reads it as one.
//!
//! The text is exactly `serde_json`'s serialization of the tree (keys sorted, as its map
//! keeps them), so a digest of the text is a digest of the tree, equal texts are equal
//! trees, and a manifest serializes to the same bytes whether read as text or as tree.
//! What never needs the tree — the object's key, its apiVersion and kind, a digest, the
//! body of an apply — reads the text; reading it as a `Value` (through `Deref`) builds
//! the tree once and keeps it beside the text; changing it (`DerefMut`) keeps only the
//! tree from then on.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A manifest: compact JSON text, with its `Value` tree built on first read as one.
pub struct Manifest(Form);

enum Form {
    /// As rendered: the text, and the tree once something has read it as one.
    Text {
        json: Box<str>,
        tree: OnceLock<Value>,
    },
    /// Changed through `DerefMut`: the tree alone (its text is serialized on demand).
    Tree(Value),
}

/// The fields that name an object, read from a manifest's text without building its
/// tree. A field that is missing or not a string is `None`; so is every field of a
/// manifest whose `metadata` is no mapping.
#[derive(Debug, Default, Deserialize)]
pub struct Head<'a> {
    #[serde(default, borrow, rename = "apiVersion", deserialize_with = "text")]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub metadata: HeadMetadata<'a>,
}

/// `metadata.name` and `metadata.namespace` of a [`Head`].
#[derive(Debug, Default, Deserialize)]
pub struct HeadMetadata<'a> {
    #[serde(default, borrow, deserialize_with = "text")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub namespace: Option<Cow<'a, str>>,
}

/// A string field, or `None` for any other value (as `Value::as_str` reads it).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNot<'a> {
        Str(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match StrOrNot::deserialize(d)? {
        StrOrNot::Str(s) => Some(s),
        StrOrNot::Other(_) => None,
    })
}

impl Manifest {
    /// The manifest's compact JSON text.
    pub fn json(&self) -> Cow<'_, str> {
        match &self.0 {
            Form::Text { json, .. } => Cow::Borrowed(json),
            Form::Tree(v) => Cow::Owned(v.to_string()),
        }
    }

    /// The manifest as a `Value` of its own, built from the text and not kept: for a
    /// reader that needs the tree once (a comparison, a printout), so that the manifest
    /// stays small.
    pub fn to_value(&self) -> Value {
        match &self.0 {
            Form::Text { json, tree } => match tree.get() {
                Some(v) => v.clone(),
                None => parse(json),
            },
            Form::Tree(v) => v.clone(),
        }
    }

    /// Whether a tree is held (beside the text, or alone): what a reader through `Deref`
    /// leaves behind.
    pub fn holds_tree(&self) -> bool {
        match &self.0 {
            Form::Text { tree, .. } => tree.get().is_some(),
            Form::Tree(_) => true,
        }
    }

    /// apiVersion, kind, name and namespace, read without building the tree.
    pub fn head(&self) -> Head<'_> {
        match &self.0 {
            Form::Text { json, .. } => serde_json::from_str(json).unwrap_or_default(),
            Form::Tree(v) => Head::deserialize(v).unwrap_or_default(),
        }
    }

    /// The manifest's apiVersion (`""` when it has none).
    pub fn api_version(&self) -> &str {
        let head = self.head().api_version;
        self.borrowed(head, "apiVersion")
    }

    /// The manifest's kind (`""` when it has none).
    pub fn kind(&self) -> &str {
        let head = self.head().kind;
        self.borrowed(head, "kind")
    }

    /// A top-level string field read from the head, as a slice of the text; a value the
    /// text escapes (which no apiVersion or kind has) is read from the tree instead.
    fn borrowed<'a>(&'a self, field: Option<Cow<'a, str>>, name: &str) -> &'a str {
        match field {
            Some(Cow::Borrowed(s)) => s,
            None => "",
            Some(Cow::Owned(_)) => self.get(name).and_then(Value::as_str).unwrap_or(""),
        }
    }
}

/// Parses text this module serialized; it cannot fail, and would read as `null` if it did.
fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

impl From<Value> for Manifest {
    fn from(v: Value) -> Manifest {
        Manifest(Form::Text {
            // Serializing a Value cannot fail: its map keys are strings.
            json: serde_json::to_string(&v)
                .unwrap_or_default()
                .into_boxed_str(),
            tree: OnceLock::new(),
        })
    }
}

impl std::ops::Deref for Manifest {
    type Target = Value;
    fn deref(&self) -> &Value {
        match &self.0 {
            Form::Text { json, tree } => tree.get_or_init(|| parse(json)),
            Form::Tree(v) => v,
        }
    }
}

impl std::ops::DerefMut for Manifest {
    fn deref_mut(&mut self) -> &mut Value {
        if let Form::Text { json, tree } = &mut self.0 {
            let v = tree.take().unwrap_or_else(|| parse(json));
            self.0 = Form::Tree(v);
        }
        match &mut self.0 {
            Form::Tree(v) => v,
            Form::Text { .. } => unreachable!("the text form was replaced by the tree above"),
        }
    }
}

impl Clone for Manifest {
    fn clone(&self) -> Manifest {
        Manifest(match &self.0 {
            // A copy keeps the text alone: whoever clones a manifest means to change it.
            Form::Text { json, .. } => Form::Text {
                json: json.clone(),
                tree: OnceLock::new(),
            },
            Form::Tree(v) => Form::Tree(v.clone()),
        })
    }
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Manifest) -> bool {
        // Texts are serializations with sorted keys: equal texts, equal trees.
        self.json() == other.json()
    }
}

// Equal texts are equal trees, and a text equals itself (JSON has no NaN). Being `Eq`
// also lets `Arc<Manifest>` compare a shared manifest with itself by pointer alone.
impl Eq for Manifest {}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json())
    }
}

impl Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Form::Text { json, tree } => match tree.get() {
                Some(v) => v.serialize(s),
                // Any serializer (YAML too) needs the tree; built for this call, not kept.
                None => parse(json).serialize(s),
            },
            Form::Tree(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Manifest, D::Error> {
        Value::deserialize(d).map(Manifest::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app"}]}}}})
    }

    #[test]
    fn the_text_is_serde_jsons_and_reads_back_as_the_same_tree() {
        let m = Manifest::from(deployment());
        assert!(!m.holds_tree());
        assert_eq!(m.json(), deployment().to_string());
        assert_eq!(
            serde_json::to_string(&m).expect("json"),
            deployment().to_string()
        );
        assert_eq!(m.to_value(), deployment());
        assert!(!m.holds_tree(), "to_value keeps no tree");
        assert_eq!(*m, deployment());
        assert!(m.holds_tree(), "Deref keeps the tree it built");
        assert_eq!(m.get("kind").and_then(Value::as_str), Some("Deployment"));
    }

    #[test]
    fn the_head_is_read_from_the_text() {
        let m = Manifest::from(deployment());
        let h = m.head();
        assert_eq!(h.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(h.kind.as_deref(), Some("Deployment"));
        assert_eq!(h.metadata.name.as_deref(), Some("web"));
        assert_eq!(h.metadata.namespace.as_deref(), Some("shop"));
        // Escaped text is read right; a field that is no string is no field.
        let odd = Manifest::from(json!({"kind": "A\"b", "apiVersion": 1, "metadata": {"name": 2}}));
        let h = odd.head();
        assert_eq!(h.kind.as_deref(), Some("A\"b"));
        assert_eq!(h.api_version, None);
        assert_eq!(h.metadata.name, None);
        assert_eq!(odd.kind(), "A\"b");
        assert_eq!(odd.api_version(), "");
        assert_eq!(m.api_version(), "apps/v1");
        assert_eq!(Manifest::from(json!([1])).kind(), "");
    }

    #[test]
    fn a_change_is_seen_by_every_reader() {
        let mut m = Manifest::from(deployment());
        let before = m.clone();
        m["spec"]["replicas"] = json!(3);
        assert_eq!(m.to_value()["spec"]["replicas"], json!(3));
        assert!(m.json().contains("\"replicas\":3"));
        assert_ne!(m, before);
        assert_eq!(before.to_value(), deployment());
        let back: Manifest = serde_json::from_str(&m.json()).expect("reads");
        assert_eq!(back, m);
    }
}
