//! `helm template`, out of process: a chart folder of the revision (written to a work
//! folder) or a fetched `.tgz`, with the request's release, namespace and values and the
//! cluster's version and API versions; `--include-crds` (the sync applies CRDs first) and
//! `--skip-tests` (a test hook is not part of what runs). Never `--dependency-update`:
//! subcharts come from the chart's own `charts/`, and a missing one fails the render.
//!
//! Refused, with the template named: `lookup` (under `helm template` it reads nothing and
//! would silently render as if the cluster were empty), and hooks (`helm.sh/hook`):
//! pontoon applies a chart's objects as one desired state and cannot run a hook at its
//! step of an install or upgrade, nor honour its delete policy.

use std::sync::LazyLock;

use regex::Regex;

use crate::desired::{
    ClusterCapabilities, ExpandedDocument, Expansion, PackageError, PackageRequest,
};

static LOOKUP: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\{\{[^}]*?\blookup\b").ok());
static HOOK: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*["']?helm\.sh/hook["']?\s*:\s*["']?([A-Za-z0-9,\- ]+)"#).ok()
});
static FILE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*\.(?:yaml|yml|tpl|txt|json))(?::(\d+))?")
        .ok()
});
static LINE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\bline (\d+)").ok());

/// The arguments of `helm template` for `request` of the chart at `chart` (a folder or a
/// `.tgz`), its values in the file `values`.
pub fn args(
    request: &PackageRequest,
    chart: &str,
    values: &str,
    capabilities: &ClusterCapabilities,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "template",
        &request.release,
        chart,
        "--namespace",
        &request.namespace,
        "--values",
        values,
        "--include-crds",
        "--skip-tests",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !capabilities.kube_version.is_empty() {
        args.push("--kube-version".into());
        args.push(capabilities.kube_version.clone());
    }
    for api in &capabilities.api_versions {
        args.push("--api-versions".into());
        args.push(api.clone());
    }
    args
}

/// A template of the chart (path relative to the chart's parent folder, as helm names
/// them: `web/templates/x.yaml`, subcharts' included) that calls `lookup`.
pub fn check_lookup(templates: &[(String, &[u8])]) -> Result<(), PackageError> {
    let Some(lookup) = LOOKUP.as_ref() else {
        return Ok(());
    };
    for (path, bytes) in templates {
        let text = String::from_utf8_lossy(bytes);
        if let Some(m) = lookup.find(&text) {
            let line = text[..m.end()].matches('\n').count() as u32 + 1;
            return Err(PackageError {
                message: "calls lookup, which reads the live cluster: under helm template it finds nothing, so pontoon refuses it rather than render as if the cluster were empty".into(),
                file: Some(path.clone()),
                line: Some(line),
            });
        }
    }
    Ok(())
}

/// A hook's refusal with the line of its template (helm's name, among `templates`) that
/// writes the hook annotation, where one does.
pub fn at_hook_line(mut e: PackageError, templates: &[(String, Vec<u8>)]) -> PackageError {
    let Some(hook) = HOOK.as_ref() else {
        return e;
    };
    if e.line.is_some() || !e.message.starts_with("is a Helm hook") {
        return e;
    }
    let template = templates
        .iter()
        .find(|(name, _)| Some(name.as_str()) == e.file.as_deref());
    if let Some((_, bytes)) = template {
        let text = String::from_utf8_lossy(bytes);
        let at = hook
            .find(&text)
            .and_then(|m| m.as_str().find("helm.sh/hook").map(|i| m.start() + i))
            // Written by a template expression: its first mention.
            .or_else(|| text.find("helm.sh/hook"));
        e.line = at.map(|at| text[..at].matches('\n').count() as u32 + 1);
    }
    e
}

/// Whether `path` (in a chart folder) is a template helm renders or includes.
pub fn is_template(path: &str) -> bool {
    path.split('/').any(|p| p == "templates")
}

/// Splits `helm template`'s output into its documents, each with the template it came
/// from (`# Source:`); a hook is refused naming its template.
pub fn documents(stdout: &str) -> Result<Expansion, PackageError> {
    let mut documents = Vec::new();
    for text in split_documents(stdout) {
        let source = text
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .unwrap_or("")
            .trim()
            .to_owned();
        if let Some(hook) = HOOK.as_ref().and_then(|h| h.captures(&text)) {
            let kind = hook.get(1).map_or("", |m| m.as_str()).trim().to_owned();
            return Err(PackageError {
                message: format!(
                    "is a Helm hook ({kind}): pontoon applies a chart's objects as one desired state and cannot run a hook at its step of an install or upgrade; remove the hook annotation or turn the hook off in the values"
                ),
                file: Some(source.clone()),
                line: None,
            });
        }
        documents.push(ExpandedDocument {
            origin: source,
            text,
        });
    }
    Ok(Expansion { documents })
}

/// The documents of a multi-document YAML stream that hold more than comments.
pub fn split_documents(stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        if current
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for line in stream.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    out
}

/// helm's error, with the template and line it names where it names them.
pub fn error(stderr: &str) -> PackageError {
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Use --debug"))
        .map(|l| l.strip_prefix("Error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ");
    let found = FILE.as_ref().and_then(|f| f.captures(&message));
    let file = found
        .as_ref()
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_owned());
    let line = found
        .as_ref()
        .and_then(|c| c.get(2))
        .or_else(|| {
            LINE.as_ref()
                .and_then(|l| l.captures(&message))
                .and_then(|c| c.get(1))
        })
        .and_then(|m| m.as_str().parse().ok());
    PackageError {
        message: if message.is_empty() {
            "helm template failed and said nothing".into()
        } else {
            format!("helm template: {message}")
        },
        file,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helms_errors_name_template_and_line() {
        let e = error(
            "Error: parse error at (web/templates/bad.yaml:3): function \"nope\" not defined\n\nUse --debug flag to render out invalid YAML\n",
        );
        assert_eq!(e.file.as_deref(), Some("web/templates/bad.yaml"));
        assert_eq!(e.line, Some(3));
        assert!(
            e.message.contains("function \"nope\" not defined"),
            "{}",
            e.message
        );
        let e = error(
            "Error: YAML parse error on web/templates/cm.yaml: error converting YAML to JSON: yaml: line 5: mapping values are not allowed in this context\n",
        );
        assert_eq!(e.file.as_deref(), Some("web/templates/cm.yaml"));
        assert_eq!(e.line, Some(5));
        let e = error(
            "Error: template: web/templates/cm.yaml:7:3: executing \"web/templates/cm.yaml\" at <include \"x\" .>: error calling include\n",
        );
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some("web/templates/cm.yaml"), Some(7))
        );
    }

    #[test]
    fn lookup_and_hooks_are_refused_naming_the_template() {
        let tpl = b"a: 1\n{{- $s := (lookup \"v1\" \"Secret\" .Release.Namespace \"x\") }}\n";
        let e =
            check_lookup(&[("web/templates/s.yaml".into(), tpl.as_slice())]).expect_err("lookup");
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some("web/templates/s.yaml"), Some(2))
        );
        assert!(
            check_lookup(&[(
                "web/templates/s.yaml".into(),
                b"lookups: {{ .Values.x }}".as_slice()
            )])
            .is_ok()
        );
        let out = "---\n# Source: web/templates/job.yaml\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n  annotations:\n    \"helm.sh/hook\": pre-install,pre-upgrade\n";
        let e = documents(out).expect_err("hook");
        assert_eq!(e.file.as_deref(), Some("web/templates/job.yaml"));
        assert!(
            e.message.contains("pre-install,pre-upgrade"),
            "{}",
            e.message
        );
        let ok = documents("---\n# Source: web/templates/a.yaml\nkind: A\n---\n# Source: web/templates/b.yaml\nkind: B\n").expect("plain");
        assert_eq!(ok.documents.len(), 2);
        assert_eq!(ok.documents[1].origin, "web/templates/b.yaml");
    }
}
