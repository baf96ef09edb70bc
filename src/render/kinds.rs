//! The platform's kinds, from `kinds/*.yaml`: each Kind document checked on its own
//! (see [`super::schema`], and [`super::kind_charts`] for a kind's chart). A broken kind is remembered by name, so only the teams that
//! use it fail, each with a pointer to the kind's own error.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Files, health, is_yaml, kind_charts, schema};
use crate::desired::{Diagnostic, HealthRule, TeamName};
use crate::model::{self, API_VERSION, Document, Platform, diag};

/// The kinds of a revision.
pub(super) struct Kinds {
    /// Kinds that read and check clean, by name, with the document defining each.
    pub defined: BTreeMap<String, (Document, model::Kind)>,
    /// The first problem of each broken kind, by its name, and by its file's stem
    /// (lowercased) when the file could not be read far enough to know the name.
    pub broken: BTreeMap<String, Diagnostic>,
    /// The health rule of each resource of each defined kind (by index), if it has one.
    pub health: BTreeMap<String, Vec<Option<Arc<HealthRule>>>>,
}

/// Reads every kind file; problems go to `diags`.
pub(super) fn read(files: &Files, platform: &Platform, diags: &mut Vec<Diagnostic>) -> Kinds {
    let mut kinds = Kinds {
        defined: BTreeMap::new(),
        broken: BTreeMap::new(),
        health: BTreeMap::new(),
    };
    for (path, bytes) in files.range("kinds/".to_owned()..) {
        if !path.starts_with("kinds/") {
            break;
        }
        if !is_yaml(path) {
            continue;
        }
        let problems = kinds.read_file(path, bytes, files, platform);
        // A kind file we could not read at all still marks its name as broken when the
        // name is the file's stem, so teams using it fail with a pointer here.
        if let (Some(first), Some(stem)) = (
            problems.first(),
            path.strip_prefix("kinds/")
                .and_then(|p| p.rsplit_once('.'))
                .map(|(s, _)| s),
        ) {
            kinds
                .broken
                .entry(stem.to_ascii_lowercase())
                .or_insert_with(|| first.clone());
        }
        diags.extend(problems);
    }
    kinds
}

impl Kinds {
    /// Adds the kinds one file defines; returns the file's problems.
    fn read_file(
        &mut self,
        path: &str,
        bytes: &[u8],
        files: &Files,
        platform: &Platform,
    ) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for doc in model::documents(path, bytes, None, &mut problems) {
            match model::typed::<model::Kind>(&doc, None) {
                Ok(k) if k.kind != "Kind" || k.api_version != API_VERSION => {
                    problems.push(doc.diag_at(
                        "kind",
                        None,
                        "schema",
                        format!(
                            "files under kinds/ hold `apiVersion: {API_VERSION}`, `kind: Kind` documents"
                        ),
                    ))
                }
                Ok(k) => {
                    let mut errs = schema::check_kind(&doc, &k);
                    errs.extend(health::check_kind(&doc, &k));
                    errs.extend(kind_charts::check_kind(&doc, &k, files, platform));
                    if let Some(first) = errs.first() {
                        self.broken.insert(k.metadata.name.clone(), first.clone());
                        problems.extend(errs);
                    } else if let Some((other, _)) = self.defined.get(&k.metadata.name) {
                        problems.push(doc.diag_at(
                            "metadata.name",
                            None,
                            "duplicate-kind",
                            format!(
                                "kind {} is also defined in {}:{}",
                                k.metadata.name, other.file, other.line
                            ),
                        ));
                    } else {
                        self.health
                            .insert(k.metadata.name.clone(), health::kind_rules(&doc, &k));
                        self.defined.insert(k.metadata.name.clone(), (doc, k));
                    }
                }
                Err(d) => problems.push(*d),
            }
        }
        problems
    }

    /// The health rule of resource `index` of kind `kind`, if it has one.
    pub fn health_rule(&self, kind: &str, index: usize) -> Option<Arc<HealthRule>> {
        self.health.get(kind)?.get(index)?.clone()
    }

    /// The definition of the kind an instance names, or the error that tells its team
    /// why there is none: the kind is broken, or not defined at all.
    pub fn definition_for(
        &self,
        kind: &str,
        path: &str,
        doc: &Document,
        team: &TeamName,
    ) -> Result<&model::Kind, Box<Diagnostic>> {
        let broken = self
            .broken
            .get(kind)
            .or_else(|| self.broken.get(&kind.to_ascii_lowercase()));
        if let Some(d) = broken {
            return Err(Box::new(diag(
                path,
                doc.line,
                1,
                Some(team),
                "broken-kind",
                format!("kind {kind} is broken: {d}"),
            )));
        }
        match self.defined.get(kind) {
            Some((_, definition)) => Ok(definition),
            None => {
                let known: Vec<&str> = self.defined.keys().map(String::as_str).collect();
                Err(Box::new(doc.diag_at(
                    "kind",
                    Some(team),
                    "unknown-kind",
                    format!(
                        "kind {kind} is not defined under kinds/{} (known: {})",
                        model::did_you_mean(kind, known.iter().copied()),
                        known.join(", ")
                    ),
                )))
            }
        }
    }
}
