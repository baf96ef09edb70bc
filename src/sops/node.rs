//! A SOPS document as a tree that keeps the order its keys are written in: the MAC is a
//! hash over the values in that order, so a map that sorts its keys could not check it.
//! Decrypted text lives in [`Plain`], which is wiped when dropped and never printed by
//! `Debug`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use zeroize::Zeroizing;

/// Decrypted (or never encrypted) bytes of one string value. Wiped on drop; its `Debug`
/// says how long it is, never what it holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain(Zeroizing<Vec<u8>>);

impl Plain {
    pub fn new(bytes: Vec<u8>) -> Self {
        Plain(Zeroizing::new(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plain({} bytes)", self.0.len())
    }
}

/// One value of a SOPS document, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer past `i64` (YAML allows them; SOPS's Go ints do not, so such a value is
    /// only ever left unencrypted).
    UInt(u64),
    Float(f64),
    Str(Plain),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The JSON value render reads. A string that is not UTF-8 (a binary value) cannot be
    /// one: the path says which.
    pub fn to_json(&self, path: &str) -> Result<Value, String> {
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| format!("{path}: {f} is not a JSON number"))?,
            Node::Str(s) => Value::String(
                std::str::from_utf8(s.expose())
                    .map_err(|_| format!("{path}: the decrypted value is not UTF-8 text"))?
                    .to_owned(),
            ),
            Node::List(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n.to_json(&format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    map.insert(k.clone(), v.to_json(&p)?);
                }
                Value::Object(map)
            }
        })
    }

    /// The entry `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string value, when it is one and is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => std::str::from_utf8(s.expose()).ok(),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::UInt(v), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(Plain::new(v.as_bytes().to_vec())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(Plain::new(v.into_bytes())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Node::Map(entries))
    }
}
