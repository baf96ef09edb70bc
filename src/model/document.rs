//! A file of the platform repo as documents: a file may hold several YAML documents,
//! each parsed on its own so a broken one names its own line and never hides the others;
//! a `.json` file is read as JSON, as kubectl reads it; a `List`'s items are documents of
//! their own. Each document keeps its text, to locate a field again for a diagnostic.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{API_VERSION, diag, type_name};
use crate::desired::{Diagnostic, TeamName};

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
    /// The value was decrypted from a SOPS file and `text` is the encrypted text: good
    /// for locating a field, never parsed again for a value.
    pub decrypted: bool,
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
            decrypted: false,
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
                        decrypted: self.decrypted,
                    }
                })
                .collect(),
        )
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
    if !doc.within.is_empty() || doc.decrypted {
        // An item of a List: its text is the List's; place the error at the item. (A
        // decrypted document's text holds its values encrypted.)
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
