//! One place that decides how pontoon reads YAML: the parser's limits (alias expansion,
//! nesting, document size) and how its errors become `line:column: message`.
//!
//! The default limits of `serde-saphyr` already refuse alias bombs ("billion laughs");
//! everything pontoon reads from users goes through [`options`] so the limits are the same
//! for the daemon config and the platform repo.

/// Parser options for every document pontoon reads.
///
/// Plain (unquoted) integers are read as Kubernetes reads them: `kubectl` and the API
/// machinery convert YAML with `sigs.k8s.io/yaml`, which follows YAML 1.1 (go-yaml v2),
/// so `0400` is octal (256), like `0o400`; `0x1F` is hex and `0b101` binary. YAML 1.2
/// alone would read `0400` as decimal 400 — a `defaultMode` of 0620 instead of 0400.
/// Quoted scalars stay strings. Booleans already follow YAML 1.1 (`yes`, `on`).
pub fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options
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
    // The rendered form may end with " at line X, column Y"; callers already print that.
    // Only a location that ends the text goes: "(used at line 6, column 14)" stays whole.
    let text = match text.rfind(" at line ") {
        Some(i) if is_location(&text[i + " at line ".len()..]) => text[..i].to_owned(),
        _ => text,
    };
    // An alias bomb: say what it means before the parser's own words.
    let text = match text.strip_prefix("budget breached: ") {
        Some(rest) => format!(
            "the document is too large once its aliases are expanded (parser limit reached: {rest})"
        ),
        None if text == "recursion limit exceeded" => {
            "the document is nested too deeply (recursion limit exceeded)".to_owned()
        }
        None => text,
    };
    // Advice aimed at programs using the parser ("set … in Options") means nothing to
    // the person editing the file.
    let text = match text.find(", set ") {
        Some(i) if text[i..].contains("Options") => text[..i].to_owned(),
        _ => text,
    };
    text.trim().to_owned()
}

/// `12, column 3` or `12 column 3`: a line and column and nothing after them.
fn is_location(rest: &str) -> bool {
    let Some((line, column)) = rest.split_once("column ") else {
        return false;
    };
    let line = line.trim_end().trim_end_matches(',');
    !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
        && !column.is_empty()
        && column.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(text: &str) -> String {
        match serde_saphyr::from_str_with_options::<serde_json::Value>(text, options()) {
            Ok(v) => panic!("parsed: {v}"),
            Err(e) => error_message(&e),
        }
    }

    #[test]
    fn an_alias_bomb_is_refused_with_a_message_a_person_understands() {
        let mut text = "a: &a [x, x, x, x, x, x, x, x, x]\n".to_owned();
        for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(", ")
            ));
        }
        let m = message_of(&text);
        assert!(
            m.starts_with("the document is too large once its aliases are expanded"),
            "{m}"
        );
        assert!(m.ends_with(')'), "nothing cut off: {m}");
    }

    #[test]
    fn too_deep_a_document_says_so() {
        let text = format!("x: {}{}\n", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            message_of(&text),
            "the document is nested too deeply (recursion limit exceeded)"
        );
    }

    fn value_of(text: &str) -> serde_json::Value {
        serde_saphyr::from_str_with_options::<serde_json::Value>(text, options())
            .expect("parses")["v"]
            .clone()
    }

    #[test]
    fn plain_integers_mean_what_they_mean_to_kubectl() {
        // What sigs.k8s.io/yaml (go-yaml v2, YAML 1.1) gives for each spelling.
        for (text, want) in [
            ("0400", serde_json::json!(256)),
            ("0444", serde_json::json!(292)),
            ("0755", serde_json::json!(493)),
            ("0644", serde_json::json!(420)),
            ("0", serde_json::json!(0)),
            ("-010", serde_json::json!(-8)),
            ("0o17", serde_json::json!(15)),
            ("0x1F", serde_json::json!(31)),
            ("0b101", serde_json::json!(5)),
            ("400", serde_json::json!(400)),
            ("'0400'", serde_json::json!("0400")),
            ("\"0755\"", serde_json::json!("0755")),
        ] {
            assert_eq!(value_of(&format!("v: {text}\n")), want, "{text}");
        }
    }

    #[test]
    fn a_trailing_location_is_dropped_and_nothing_else() {
        assert!(is_location("6, column 14"));
        assert!(is_location("6 column 14"));
        assert!(!is_location("6, column 14)"));
        assert!(!is_location("1, column 32 (defined at line 5, column 7)"));
    }
}
