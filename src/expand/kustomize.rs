//! `kustomize build`, out of process, of a folder of the revision written with every
//! folder and file its kustomization names (and nothing else) to a work folder. Remote
//! bases were refused before the run (`model::kustomize_inputs`); the run has no network
//! anyway.

use crate::desired::{ExpandedDocument, Expansion, PackageError, PackageSource};

pub fn args(target: &str) -> Vec<String> {
    vec!["build".into(), target.to_owned()]
}

/// The build's documents, each named by its place in the output and its kind and name.
pub fn documents(stdout: &str) -> Expansion {
    Expansion {
        documents: super::helm::split_documents(stdout)
            .into_iter()
            .enumerate()
            .map(|(i, text)| ExpandedDocument {
                origin: describe(i, &text),
                text,
            })
            .collect(),
    }
}

/// `document 3 (ConfigMap web)`: where in kustomize's output an object is.
fn describe(i: usize, text: &str) -> String {
    let top = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    let name = text
        .lines()
        .skip_while(|l| !l.starts_with("metadata:"))
        .find_map(|l| l.strip_prefix("  name:"))
        .map(|v| v.trim().trim_matches('"').to_owned());
    match (top("kind:"), name) {
        (Some(kind), Some(name)) => format!("document {} ({kind} {name})", i + 1),
        _ => format!("document {}", i + 1),
    }
}

/// kustomize's error, naming the kustomization.
pub fn error(source: &PackageSource, stderr: &str) -> PackageError {
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("Error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ");
    let file = match source {
        PackageSource::Kustomize { path } => Some(format!("{path}/kustomization.yaml")),
        _ => None,
    };
    PackageError {
        message: format!("kustomize build: {message}"),
        file,
        line: None,
    }
}
