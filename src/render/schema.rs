//! A kind's parameter schema: checking a kind's own definition, and validating an
//! instance's `spec` against it (types, required, enums, bounds, nested objects and
//! lists), with defaults filled in. Every problem is reported, with the field's path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::desired::Diagnostic;
use crate::model::{Document, Kind, Param, ParamType, did_you_mean, type_name};

/// Problems in a kind's definition.
pub fn check_kind(doc: &Document, k: &Kind) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut problem = |field: &str, m: String| {
        out.push(doc.diag_at(
            field,
            None,
            "invalid-kind",
            format!("kind {}: {m}", k.metadata.name),
        ))
    };
    if !k
        .metadata
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase())
    {
        problem(
            "metadata.name",
            "a kind's name starts with an uppercase letter, like WebService".to_owned(),
        );
    }
    for (name, p) in &k.spec.parameters {
        if let Some(d) = &p.default {
            for m in default_problems(p, d, name) {
                problem(
                    &format!("spec.parameters.{name}.default"),
                    format!("default of {m}"),
                );
            }
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for (i, r) in k.spec.resources.iter().enumerate() {
        let at = format!("spec.resources[{i}]");
        if !ids.insert(&r.id) {
            problem(
                &format!("{at}.id"),
                format!("resource id {} is used twice", r.id),
            );
        }
        for field in ["apiVersion", "kind"] {
            if r.template.get(field).and_then(Value::as_str).is_none() {
                problem(
                    &format!("{at}.template.{field}"),
                    format!("resource {} has no {field}", r.id),
                );
            }
        }
        if r.template.pointer("/metadata/name").is_none() {
            problem(
                &format!("{at}.template.metadata.name"),
                format!("resource {} has no metadata.name", r.id),
            );
        }
        if let Some(cond) = &r.include_when {
            let expr = super::expr::strip(cond).unwrap_or(cond);
            if let Err(err) = cel::Program::compile(expr) {
                problem(
                    &format!("{at}.includeWhen"),
                    format!(
                        "resource {}: includeWhen does not parse: {}",
                        r.id,
                        err.to_string().lines().next().unwrap_or("")
                    ),
                );
            }
        }
    }
    out.extend(super::dependencies::check_kind(doc, k));
    out
}

/// One problem of an instance's `spec`: the field it is about (`spec.ports[1]`), for
/// finding where the file writes it, and a sentence that names the field.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecProblem {
    pub field: String,
    pub message: String,
}

/// Validates `spec` and returns it with defaults filled in.
pub fn validate(params: &BTreeMap<String, Param>, spec: &Value) -> Result<Value, Vec<SpecProblem>> {
    let empty = Map::new();
    let obj = match spec {
        Value::Null => &empty,
        Value::Object(m) => m,
        other => {
            return Err(vec![SpecProblem {
                field: "spec".to_owned(),
                message: format!("spec must be an object, not {}", type_name(other)),
            }]);
        }
    };
    let mut problems = Vec::new();
    let out = validate_object(params, obj, "spec", &mut problems);
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

/// Validates an object against its parameters: unknown keys, required ones, defaults.
fn validate_object(
    params: &BTreeMap<String, Param>,
    obj: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for key in obj.keys() {
        if !params.contains_key(key) {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            problems.push(SpecProblem {
                field: format!("{path}.{key}"),
                message: format!(
                    "{path}.{key} is not a parameter of this kind{} (known: {})",
                    did_you_mean(key, known.iter().copied()),
                    known.join(", ")
                ),
            });
        }
    }
    for (name, p) in params {
        let field = format!("{path}.{name}");
        match obj
            .get(name)
            .filter(|v| !v.is_null())
            .or(p.default.as_ref())
        {
            None if p.required => problems.push(SpecProblem {
                message: format!("{field} is required"),
                field,
            }),
            None => {}
            Some(v) => {
                if let Some(v) = validate_value(p, v, &field, problems) {
                    out.insert(name.clone(), v);
                }
            }
        }
    }
    out
}

/// Validates one value against its parameter; `None` when it has problems.
fn validate_value(
    p: &Param,
    v: &Value,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) -> Option<Value> {
    let before = problems.len();
    let mut problem = |message: String| {
        problems.push(SpecProblem {
            field: path.to_owned(),
            message,
        })
    };
    let type_ok = match (p.ty, v) {
        (ParamType::String, Value::String(_))
        | (ParamType::Boolean, Value::Bool(_))
        | (ParamType::Object, Value::Object(_))
        | (ParamType::List, Value::Array(_)) => true,
        (ParamType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (ParamType::Number, Value::Number(_)) => true,
        _ => false,
    };
    if !type_ok {
        let want = match p.ty {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::Object => "an object",
            ParamType::List => "a list",
        };
        problem(format!("{path} must be {want}, not {}", type_name(v)));
        return None;
    }
    if let Some(allowed) = &p.one_of
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        problem(format!("{path} is {v}, not one of {}", list.join(", ")));
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = p.minimum
            && x < min
        {
            problem(format!("{path} is {v}, less than the minimum {min}"));
        }
        if let Some(max) = p.maximum
            && x > max
        {
            problem(format!("{path} is {v}, more than the maximum {max}"));
        }
    }
    let len = match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        _ => None,
    };
    if let (Some(len), Some(max)) = (len, p.max_length)
        && len > max
    {
        problem(format!(
            "{path} has length {len}, more than the maximum {max}"
        ));
    }
    let out = match v {
        Value::Object(m) => match &p.properties {
            Some(props) => Value::Object(validate_object(props, m, path, problems)),
            None => v.clone(),
        },
        Value::Array(items) => match &p.items {
            Some(item) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| validate_value(item, x, &format!("{path}[{i}]"), problems))
                    .collect(),
            ),
            None => v.clone(),
        },
        other => other.clone(),
    };
    (problems.len() == before).then_some(out)
}

/// What is wrong with a parameter's default, as sentences (none when it fits the
/// parameter).
fn default_problems(p: &Param, default: &Value, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    validate_value(p, default, name, &mut problems);
    problems.into_iter().map(|p| p.message).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> BTreeMap<String, Param> {
        serde_json::from_value(json!({
            "image": {"type": "string", "required": true},
            "replicas": {"type": "integer", "default": 2, "minimum": 1, "maximum": 10},
            "tier": {"type": "string", "enum": ["web", "batch"], "default": "web"},
            "ingress": {"type": "object", "properties": {"host": {"type": "string", "required": true}}},
            "ports": {"type": "list", "items": {"type": "integer"}, "maxLength": 3}
        }))
        .expect("params")
    }

    #[test]
    fn defaults_are_filled() {
        let v = validate(&params(), &json!({"image": "a:1"})).expect("valid");
        assert_eq!(v, json!({"image": "a:1", "replicas": 2, "tier": "web"}));
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let e = validate(
            &params(),
            &json!({"replicas": "three", "tier": "gpu", "ingress": {}, "ports": [1, "x", 3, 4], "colour": "red"}),
        )
        .expect_err("invalid");
        let all: Vec<String> = e
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        let all = all.join("\n");
        for want in [
            "spec.colour: spec.colour is not a parameter of this kind",
            "spec.image: spec.image is required",
            "spec.replicas: spec.replicas must be an integer, not a string",
            "spec.tier: spec.tier is \"gpu\", not one of \"web\", \"batch\"",
            "spec.ingress.host: spec.ingress.host is required",
            "spec.ports: spec.ports has length 4, more than the maximum 3",
            "spec.ports[1]: spec.ports[1] must be an integer, not a string",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let e = validate(&params(), &json!({"image": "a", "replicas": 11})).expect_err("bound");
        assert_eq!(
            e,
            [SpecProblem {
                field: "spec.replicas".into(),
                message: "spec.replicas is 11, more than the maximum 10".into()
            }]
        );
    }
}
