//! The platform repo's documents, parsed with their locations.
//!
//! A file may hold several YAML documents. Each is parsed on its own, so a broken
//! document names its own line and never hides the others. pontoon's documents
//! (`apiVersion: pontoon.dev/v1alpha1`) are parsed into typed structs that refuse unknown
//! fields; everything else is a plain Kubernetes manifest kept as JSON.

mod locate;
mod skipped;

pub use locate::Fields;
pub use skipped::{SkipReason, Skipped};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desired::{Diagnostic, DriftMode, Severity, TeamName};

pub const API_VERSION: &str = "pontoon.dev/v1alpha1";
/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// One YAML document of a file, or one item of a `List` document.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    /// 1-based line where the document's content starts (for a `List` item: the item's).
    pub line: u64,
    /// The document's text, read again to locate a field; a `List`'s items share it.
    pub text: Arc<str>,
    /// 1-based line of the file where `text` starts.
    pub text_line: u64,
    /// Where in `text` this document is: empty for a whole document, `items[2]` for an
    /// item of a `List` (`items[2].items[0]` for a `List` in a `List`).
    pub within: String,
    pub value: Value,
}

impl Document {
    /// A whole document of a file, its text starting at `line`.
    pub fn new(file: &str, line: u64, text: impl Into<Arc<str>>, value: Value) -> Document {
        Document {
            file: file.to_owned(),
            line,
            text: text.into(),
            text_line: line,
            within: String::new(),
            value,
        }
    }

    /// The items of a `List` document (`kind: List`, or any kind ending in `List`, with
    /// an `items` list, as kubectl expands them), each a document of its own located in
    /// the List's text; `None` when the document is no List.
    pub fn list_items(&self) -> Option<Vec<Document>> {
        let kind = self.value.get("kind").and_then(Value::as_str)?;
        let items = self.value.get("items").and_then(Value::as_array)?;
        if !kind.ends_with("List")
            || self.value.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        {
            return None;
        }
        let fields = self.fields();
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let within = if self.within.is_empty() {
                        format!("items[{i}]")
                    } else {
                        format!("{}.items[{i}]", self.within)
                    };
                    let (line, _) = fields.position_of(&format!("items[{i}]"));
                    Document {
                        file: self.file.clone(),
                        line,
                        text: self.text.clone(),
                        text_line: self.text_line,
                        within,
                        value: item.clone(),
                    }
                })
                .collect(),
        )
    }
}

/// The known name a mistyped `word` most likely meant, if one is close enough to say so:
/// ` (did you mean image?)`, or nothing.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, _)| *d <= if word.chars().count() <= 4 { 1 } else { 2 })
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// How a diagnostic names a JSON value's type: "a string", "an integer", "a list".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Builds a diagnostic.
pub fn diag(
    file: &str,
    line: u64,
    column: u64,
    team: Option<&TeamName>,
    rule: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        team: team.cloned(),
        cluster: None,
        severity: Severity::Error,
        rule: rule.to_owned(),
        message: message.into(),
    }
}

/// Splits a file into documents and parses each into JSON. Problems become diagnostics;
/// the documents that parse are returned all the same.
pub fn documents(
    file: &str,
    bytes: &[u8],
    team: Option<&TeamName>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    if bytes.len() > MAX_FILE_BYTES {
        out.push(diag(
            file,
            1,
            1,
            team,
            "file-too-large",
            format!(
                "{} bytes; files over {} MiB are not read",
                bytes.len(),
                MAX_FILE_BYTES / 1024 / 1024
            ),
        ));
        return Vec::new();
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            out.push(diag(
                file,
                line,
                1,
                team,
                "not-utf8",
                "the file is not UTF-8 text",
            ));
            return Vec::new();
        }
    };
    if file.ends_with(".json") {
        return json_documents(file, text, team, out);
    }
    let mut docs = Vec::new();
    for (start_line, chunk) in split_documents(text) {
        if chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        match serde_saphyr::from_str_with_options::<Value>(&chunk, crate::yaml::options()) {
            Ok(Value::Null) => {}
            Ok(value @ Value::Object(_)) => {
                docs.push(Document::new(file, start_line, chunk, value))
            }
            Ok(other) => out.push(diag(
                file,
                start_line,
                1,
                team,
                "parse",
                format!("a document must be a mapping, not {}", type_name(&other)),
            )),
            Err(e) => {
                let (l, c) = crate::yaml::error_position(&e);
                out.push(diag(
                    file,
                    start_line + l - 1,
                    c,
                    team,
                    "parse",
                    crate::yaml::error_message(&e),
                ));
            }
        }
    }
    docs
}

/// The documents of a JSON file: one object, or several one after another (as kubectl
/// reads a `.json` file), each parsed as JSON, as kubectl does (so `0400` is no number).
fn json_documents(
    file: &str,
    text: &str,
    team: Option<&TeamName>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    let line_at = |offset: usize| 1 + text[..offset].matches('\n').count() as u64;
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let before = stream.byte_offset();
        let Some(next) = stream.next() else {
            break;
        };
        let end = stream.byte_offset();
        let start = end - text[before..end].trim_start().len();
        match next {
            Ok(value @ Value::Object(_)) => docs.push(Document::new(
                file,
                line_at(start),
                &text[start..end],
                value,
            )),
            Ok(other) => out.push(diag(
                file,
                line_at(start),
                1,
                team,
                "parse",
                format!("a document must be an object, not {}", type_name(&other)),
            )),
            Err(e) => {
                let message = e.to_string();
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_owned(),
                    None => message,
                };
                out.push(diag(
                    file,
                    e.line().max(1) as u64,
                    e.column().max(1) as u64,
                    team,
                    "parse",
                    message,
                ));
                break;
            }
        }
    }
    docs
}

/// Documents of a stream with the 1-based line each starts on.
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1u64;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line == "---" || line.starts_with("--- ") || line == "..." {
            if !current.is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            start = n + 1;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

/// Parses a pontoon document into its typed form; errors are located in the file.
pub fn typed<T: for<'de> Deserialize<'de>>(
    doc: &Document,
    team: Option<&TeamName>,
) -> Result<T, Box<Diagnostic>> {
    // The document is parsed already; reading the typed form from that value is several
    // times cheaper than parsing the YAML again. Only when it fails is the text parsed
    // again, for the error's line and column (and for YAML's looser scalars).
    let rule = |message: &str| {
        if message.contains("unknown field") {
            "unknown-field"
        } else {
            "schema"
        }
    };
    let e = match T::deserialize(&doc.value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    if !doc.within.is_empty() {
        // An item of a List: its text is the List's; place the error at the item.
        let message = e.to_string();
        return Err(Box::new(doc.diag_at("", team, rule(&message), message)));
    }
    serde_saphyr::from_str_with_options::<T>(&doc.text, crate::yaml::options()).map_err(|e| {
        let (l, c) = crate::yaml::error_position(&e);
        let message = crate::yaml::error_message(&e);
        Box::new(diag(
            &doc.file,
            doc.text_line + l - 1,
            c,
            team,
            rule(&message),
            message,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn a_near_miss_gets_a_suggestion_and_a_stranger_does_not() {
        let known = ["image", "replicas", "port"];
        assert_eq!(did_you_mean("imag", known), " (did you mean image?)");
        assert_eq!(did_you_mean("replicsa", known), " (did you mean replicas?)");
        assert_eq!(did_you_mean("colour", known), "");
        assert_eq!(did_you_mean("pt", known), "");
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `platform.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Platform {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PlatformSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformSpec {
    /// The clusters teams may target, by name, with labels to select them by.
    pub clusters: Vec<ClusterDef>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub policy: Policy,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterDef {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// `correct` (default) or `report`.
    #[serde(default)]
    pub drift_mode: Option<DriftMode>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Kinds teams may write as plain manifests, e.g. `{group: "", kind: ConfigMap}`.
    #[serde(default)]
    pub allowed_kinds: Vec<GroupKind>,
    #[serde(default)]
    pub prune: PruneSpec,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneSpec {
    #[serde(default)]
    pub namespaces: bool,
    #[serde(default)]
    pub crds: bool,
    /// A sync deleting more than this share (0–1) of a unit's objects is held.
    #[serde(default = "default_max_share")]
    pub max_share: f64,
}

fn default_max_share() -> f64 {
    0.5
}

impl Default for PruneSpec {
    fn default() -> Self {
        PruneSpec {
            namespaces: false,
            crds: false,
            max_share: default_max_share(),
        }
    }
}

/// `teams/<team>/team.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Team {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TeamSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TeamSpec {
    /// People (users) who administer the team's namespaces.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Namespaces the team owns on each of its clusters; the first is the default.
    pub namespaces: Vec<String>,
    pub clusters: ClusterSelector,
    /// ResourceQuota `hard` limits per namespace, e.g. `{cpu: "8", memory: 16Gi}`.
    #[serde(default)]
    pub quota: BTreeMap<String, String>,
    #[serde(default)]
    pub drift_mode: Option<DriftMode>,
}

/// Clusters by name or by label.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSelector {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `kinds/<name>.yaml`: a platform abstraction.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: KindSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindSpec {
    /// The parameters an instance's `spec` may set.
    #[serde(default)]
    pub parameters: BTreeMap<String, Param>,
    pub resources: Vec<ResourceTemplate>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceTemplate {
    pub id: String,
    /// CEL condition; the resource is rendered only when it is true.
    #[serde(default)]
    pub include_when: Option<String>,
    /// A Kubernetes object whose strings may hold `${expression}`.
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub template: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    List,
}

/// One parameter of a kind.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Param {
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<Value>,
    #[serde(default, rename = "enum")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    /// Longest string or list accepted.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Fields of an object parameter.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, Param>>,
    /// The element of a list parameter.
    #[serde(default)]
    pub items: Option<Box<Param>>,
}

/// An instance of a kind, in a team's folder.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Instance {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub spec: Value,
    /// Per-cluster changes to `spec`, merged over it: `{prod: {replicas: 6}}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    pub overrides: BTreeMap<String, Value>,
    /// Limits the instance to some of the team's clusters.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    #[serde(default)]
    pub drift: Option<InstanceDrift>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceDrift {
    #[serde(default)]
    pub mode: Option<DriftMode>,
    /// JSON pointers pontoon leaves alone, e.g. `/spec/replicas`.
    #[serde(default)]
    pub ignore_fields: Vec<String>,
}

/// JSON Schemas of the pontoon documents, for editors.
pub fn schemas() -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    let mut put = |name, schema: schemars::Schema| {
        out.insert(name, schema.to_value());
    };
    put("platform.schema.json", schemars::schema_for!(Platform));
    put("team.schema.json", schemars::schema_for!(Team));
    put("kind.schema.json", schemars::schema_for!(Kind));
    put("instance.schema.json", schemars::schema_for!(Instance));
    out
}
