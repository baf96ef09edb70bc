//! Where a field of a document is written, for a diagnostic that names the field.
//!
//! Documents are parsed into plain JSON values, which keep no positions: that is the fast
//! path every render takes. Only when a diagnostic names a field is the document's text
//! read again, here, into a tree that remembers where each key and item starts.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::{Document, diag};
use crate::desired::{Diagnostic, TeamName};

impl Document {
    /// The document's text read again with positions, for locating several fields.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            doc: self,
            root: serde_saphyr::from_str_with_options(&self.text, crate::yaml::options()).ok(),
        }
    }

    /// An error placed at the field at `path`, as [`Fields::position_of`] finds it. An
    /// item of a `List` names itself first: `items[1]: …`.
    pub fn diag_at(
        &self,
        path: &str,
        team: Option<&TeamName>,
        rule: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.fields().position_of(path);
        let message = message.into();
        let message = if self.within.is_empty() {
            message
        } else {
            format!("{}: {message}", self.within)
        };
        diag(&self.file, line, column, team, rule, message)
    }

    /// `path` from the start of the text: the same path for a whole document, inside
    /// the item for an item of a `List`.
    fn in_text<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        match (self.within.is_empty(), path.is_empty()) {
            (true, _) => path.into(),
            (false, true) => self.within.clone().into(),
            (false, false) => format!("{}.{path}", self.within).into(),
        }
    }
}

/// A document's fields with where each is written.
pub struct Fields<'a> {
    doc: &'a Document,
    /// `None` when the text does not parse (then every field is at the document's start).
    root: Option<Node>,
}

impl Fields<'_> {
    /// Line and column (1-based, in the file) of the field at `path`, such as
    /// `spec.ingress.host` or `spec.ports[1]`; `None` when the document does not write it.
    pub fn find(&self, path: &str) -> Option<(u64, u64)> {
        match self.walk(path)? {
            (pos, true) => Some(pos),
            (_, false) => None,
        }
    }

    /// Like [`Fields::find`], but a field the document does not write is placed at its
    /// nearest parent that it does (where a missing field would go), and a document that
    /// writes none of the path at its first line.
    pub fn position_of(&self, path: &str) -> (u64, u64) {
        self.walk(path).map_or((self.doc.line, 1), |(pos, _)| pos)
    }

    /// The position of the deepest part of `path` present, and whether that is all of it.
    fn walk(&self, path: &str) -> Option<((u64, u64), bool)> {
        let mut node = self.root.as_ref()?;
        let mut at = None;
        let path = self.doc.in_text(path);
        for seg in segments(&path) {
            let next = match (node, seg) {
                (Node::Map(entries), Segment::Key(k)) => entries
                    .iter()
                    .find(|(key, _)| key.value.0 == k)
                    .map(|(key, value)| (&key.referenced, &value.value)),
                (Node::Seq(items), Segment::Index(i)) => {
                    items.get(i).map(|item| (&item.referenced, &item.value))
                }
                _ => None,
            };
            let Some((loc, child)) = next else {
                return at.map(|pos| (pos, false));
            };
            if loc.line() == 0 {
                return at.map(|pos| (pos, false));
            }
            at = Some((self.doc.text_line + loc.line() - 1, loc.column().max(1)));
            node = child;
        }
        at.map(|pos| (pos, true))
    }
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.ports[1].name` as `spec`, `ports`, `1`, `name`.
fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').flat_map(|part| {
        let mut pieces = part.split('[');
        let key = pieces.next().filter(|k| !k.is_empty()).map(Segment::Key);
        let indices = pieces.filter_map(|p| p.strip_suffix(']')?.parse().ok().map(Segment::Index));
        key.into_iter().chain(indices)
    })
}

/// A YAML node and, for mappings and sequences, where each key and item starts.
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key in its text form.
struct Key(String);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Node, E> {
            Ok(Node::Scalar)
        })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        // As text, the way keys of the documents' JSON values are read (`n` stays `n`).
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, line: u64) -> Document {
        Document::new("teams/a/app.yaml", line, text, serde_json::Value::Null)
    }

    const TEXT: &str = "\
# the app
kind: WebService
metadata:
  name: app
spec:
  image: a:1
  ingress: {host: a.example.com}
  ports:
    - 80
    - \"x\"
overrides:
  prod:
    replicas: 4
";

    #[test]
    fn a_field_is_found_where_it_is_written() {
        let d = doc(TEXT, 10);
        let d = d.fields();
        assert_eq!(d.find("spec.image"), Some((15, 3)));
        assert_eq!(d.find("spec.ingress.host"), Some((16, 13)));
        assert_eq!(d.find("spec.ports[1]"), Some((19, 7)));
        assert_eq!(d.find("overrides.prod.replicas"), Some((22, 5)));
        assert_eq!(d.find("spec.replicas"), None);
        assert_eq!(d.find("spec.ports[2]"), None);
        // Keys are matched as text, as the documents' values hold them.
        assert_eq!(doc("n:\n  1: x\n", 1).fields().find("n.1"), Some((2, 3)));
    }

    #[test]
    fn a_missing_field_is_placed_at_its_nearest_parent() {
        let d = doc(TEXT, 10);
        let d = d.fields();
        assert_eq!(d.position_of("spec.ingress.tls"), (16, 3));
        assert_eq!(d.position_of("spec.replicas"), (14, 1));
        assert_eq!(d.position_of("status.phase"), (10, 1));
        assert_eq!(doc("a: [\n", 3).fields().position_of("a"), (3, 1));
    }

    #[test]
    fn paths_split_into_keys_and_indices() {
        let s: Vec<_> = segments("spec.ports[1][2].name").collect();
        assert_eq!(
            s,
            [
                Segment::Key("spec"),
                Segment::Key("ports"),
                Segment::Index(1),
                Segment::Index(2),
                Segment::Key("name")
            ]
        );
    }
}
