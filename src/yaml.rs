//! One place that decides how pontoon reads YAML: the parser's limits (alias expansion,
//! nesting, document size) and how its errors become `line:column: message`.
//!
//! The default limits of `serde-saphyr` already refuse alias bombs ("billion laughs");
//! everything pontoon reads from users goes through [`options`] so the limits are the same
//! for the daemon config and the platform repo.

/// Parser options for every document pontoon reads.
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::Options::default()
}

/// 1-based line and column of a parse error; `(1, 1)` when the parser did not say.
pub fn error_position(e: &serde_saphyr::Error) -> (u64, u64) {
    match e.location() {
        Some(l) if l.line() > 0 => (l.line(), l.column().max(1)),
        _ => (1, 1),
    }
}

/// The error's message alone: no location prefix (callers print their own), no snippet.
pub fn error_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    // The rendered form may end with " at line X column Y"; callers already print that.
    let text = match text.rfind(" at line ") {
        Some(i) if text[i..].contains("column") => text[..i].to_owned(),
        _ => text,
    };
    // Advice aimed at programs using the parser ("set … in Options") means nothing to
    // the person editing the file.
    let text = match text.find(", set ") {
        Some(i) if text[i..].contains("Options") => text[..i].to_owned(),
        _ => text,
    };
    text.trim().to_owned()
}
