//! `${expression}` templating with CEL. A string that is exactly one `${expr}` takes the
//! expression's value with its type (a number stays a number); anything else is
//! interpolated as text. Expressions and results have size limits, so a template can
//! never make the renderer build something without bound.

use serde_json::Value;

use crate::model::type_name;

/// Longest expression accepted.
pub const MAX_EXPR_LEN: usize = 1024;
/// Largest value one expression may produce (as JSON).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Most list macros (`map`, `filter`, …) one expression may use.
pub const MAX_MACROS: usize = 3;
/// Largest string a template may produce by interpolation.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// Why an expression (or a template holding expressions) gives no value. The messages
/// end up in diagnostics users read: they name the expression, never a Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("expression longer than {} characters", MAX_EXPR_LEN)]
    TooLong,
    #[error(
        "`{expr}` uses {macros} list macros; at most {} are allowed in one expression",
        MAX_MACROS
    )]
    TooManyMacros { expr: String, macros: usize },
    #[error("cannot parse `{expr}`: {message}")]
    Parse { expr: String, message: String },
    #[error("`{expr}`: {message}")]
    Evaluation { expr: String, message: String },
    #[error("`{expr}` produced a value with no JSON form: {message}")]
    NoJsonForm { expr: String, message: String },
    #[error(
        "`{expr}` produced {size} bytes, more than the limit of {}",
        MAX_RESULT_BYTES
    )]
    ResultTooLarge { expr: String, size: usize },
    #[error("`{expr}` must be true or false, not {found}")]
    NotABoolean { expr: String, found: &'static str },
    #[error("unclosed `${{` in {text:?}")]
    Unclosed { text: String },
    #[error("interpolation produced more than {} bytes", MAX_STRING_BYTES)]
    InterpolationTooLarge,
}

/// The variables an expression sees.
pub struct Scope {
    context: cel::Context<'static, 'static>,
}

impl Scope {
    pub fn new(vars: &[(&str, &Value)]) -> Scope {
        // Building CEL's standard library takes longer than rendering an instance: build
        // it once per thread and share it between scopes.
        thread_local! {
            static STDLIB: std::sync::Arc<cel::Env> = std::sync::Arc::new(cel::Env::stdlib());
        }
        let mut context = cel::Context::Root {
            functions: Default::default(),
            variables: Default::default(),
            resolver: None,
            env: STDLIB.with(std::sync::Arc::clone),
        };
        for (name, value) in vars {
            context.add_variable_from_value(*name, to_cel(value));
        }
        Scope { context }
    }

    /// Evaluates one expression to JSON.
    pub fn eval(&self, expr: &str) -> Result<Value, ExprError> {
        let program = checked(expr)?;
        let value = program
            .execute(&self.context)
            .map_err(|e| ExprError::Evaluation {
                expr: expr.to_owned(),
                message: e.to_string(),
            })?;
        let json = value.json().map_err(|e| ExprError::NoJsonForm {
            expr: expr.to_owned(),
            message: e.to_string(),
        })?;
        let size = serde_json::to_string(&json)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_RESULT_BYTES {
            return Err(ExprError::ResultTooLarge {
                expr: expr.to_owned(),
                size,
            });
        }
        Ok(json)
    }

    /// Evaluates a condition that must be a boolean.
    pub fn condition(&self, expr: &str) -> Result<bool, ExprError> {
        match self.eval(strip(expr).unwrap_or(expr))? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError::NotABoolean {
                expr: expr.to_owned(),
                found: type_name(&other),
            }),
        }
    }

    /// Renders a template value: every string holding `${...}` is evaluated.
    pub fn render(&self, template: &Value) -> Result<Value, ExprError> {
        Ok(match template {
            Value::String(s) => self.render_string(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.render(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    fn render_string(&self, s: &str) -> Result<Value, ExprError> {
        if let Some(expr) = strip(s) {
            return self.eval(expr);
        }
        if !s.contains("${") {
            return Ok(Value::String(s.to_owned()));
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end =
                find_close(after).ok_or_else(|| ExprError::Unclosed { text: s.to_owned() })?;
            let v = self.eval(&after[..end])?;
            match v {
                Value::String(t) => out.push_str(&t),
                Value::Null => {}
                other => out.push_str(&other.to_string()),
            }
            if out.len() > MAX_STRING_BYTES {
                return Err(ExprError::InterpolationTooLarge);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

/// Checks an expression without evaluating it: within the limits, and it parses. What a
/// renderer does for an expression that is evaluated later, against a live object.
pub fn check(expr: &str) -> Result<(), ExprError> {
    checked(strip(expr).unwrap_or(expr)).map(|_| ())
}

/// Checks every `${expression}` of a text, as [`check`] does.
pub fn check_template(text: &str) -> Result<(), ExprError> {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = find_close(after).ok_or_else(|| ExprError::Unclosed {
            text: text.to_owned(),
        })?;
        checked(&after[..end])?;
        rest = &after[end + 1..];
    }
    Ok(())
}

/// The compiled program of an expression within the limits.
fn checked(expr: &str) -> Result<std::rc::Rc<cel::Program>, ExprError> {
    if expr.len() > MAX_EXPR_LEN {
        return Err(ExprError::TooLong);
    }
    // CEL has no loops, but list macros nest: ten elements mapped inside ten mapped
    // inside ten grows as 10^n before any result limit can see it. Bound the nesting.
    let macros = ["map(", "filter(", "all(", "exists(", "exists_one("]
        .iter()
        .map(|m| expr.matches(m).count())
        .sum::<usize>();
    if macros > MAX_MACROS {
        return Err(ExprError::TooManyMacros {
            expr: expr.to_owned(),
            macros,
        });
    }
    compiled(expr)
}

thread_local! {
    /// Compiled expressions. Only kinds' templates and the platform's health rules and
    /// policies hold expressions, so the set is small; it is cleared if it ever grows
    /// past a bound.
    static PROGRAMS: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<cel::Program>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

const MAX_CACHED_PROGRAMS: usize = 10_000;

fn compiled(expr: &str) -> Result<std::rc::Rc<cel::Program>, ExprError> {
    if let Some(p) = PROGRAMS.with(|c| c.borrow().get(expr).cloned()) {
        return Ok(p);
    }
    let program = std::rc::Rc::new(cel::Program::compile(expr).map_err(|e| ExprError::Parse {
        expr: expr.to_owned(),
        message: first_line(&e.to_string()).to_owned(),
    })?);
    PROGRAMS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_CACHED_PROGRAMS {
            c.clear();
        }
        c.insert(expr.to_owned(), program.clone());
    });
    Ok(program)
}

/// JSON to CEL. Whole numbers become `int` (CEL's default integer type) so `spec.n * 2`
/// works; only integers beyond i64 become `uint`.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::from(s.as_str()),
        Value::Array(a) => cel::Value::from(a.iter().map(to_cel).collect::<Vec<_>>()),
        Value::Object(m) => cel::Value::from(
            m.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<std::collections::HashMap<String, cel::Value>>(),
        ),
    }
}

/// The expression of a string that is exactly `${expr}`.
pub fn strip(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("${")?.strip_suffix('}')?;
    // `${a} and ${b}` is two expressions, not one.
    (find_close(inner).is_none()).then_some(inner)
}

/// Index of the `}` closing an expression, skipping braces inside it and in quotes.
fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let spec = json!({"replicas": 3, "image": "shop:1.2", "ingress": {"host": "shop.example.com"}, "tags": ["a", "b"]});
        let name = json!("checkout");
        Scope::new(&[("spec", &spec), ("name", &name)])
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        assert_eq!(
            scope().render(&json!("${spec.replicas}")).expect("render"),
            json!(3)
        );
        assert_eq!(
            scope()
                .render(&json!("${spec.replicas > 2}"))
                .expect("render"),
            json!(true)
        );
        assert_eq!(
            scope().render(&json!("${spec.tags}")).expect("render"),
            json!(["a", "b"])
        );
    }

    #[test]
    fn interpolation_makes_text() {
        let v = scope()
            .render(&json!({"host": "${name}.${spec.ingress.host}", "n": "x${spec.replicas}"}))
            .expect("render");
        assert_eq!(v, json!({"host": "checkout.shop.example.com", "n": "x3"}));
    }

    #[test]
    fn missing_fields_and_wrong_types_are_clear() {
        let e = scope()
            .render(&json!("${spec.nope}"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("spec.nope"), "{e}");
        let e = scope()
            .condition("${spec.image}")
            .expect_err("not a bool")
            .to_string();
        assert!(e.contains("must be true or false, not a string"), "{e}");
        let e = scope()
            .render(&json!("${spec.replicas + 'x'}"))
            .expect_err("type")
            .to_string();
        assert!(e.contains("spec.replicas + 'x'"), "{e}");
        let e = scope()
            .render(&json!("${unclosed"))
            .expect_err("unclosed")
            .to_string();
        assert!(e.contains("cannot parse") || e.contains("unclosed"), "{e}");
    }

    #[test]
    fn growth_is_bounded() {
        let long = format!("${{'{}'}}", "a".repeat(2000));
        assert!(
            scope()
                .render(&json!(long))
                .expect_err("too long")
                .to_string()
                .contains("longer than")
        );
        // A list that multiplies itself: refused by the result limit, not built forever.
        let big = "${[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, 'xxxxxxxx'))))}";
        let e = scope()
            .render(&json!(big))
            .expect_err("too big")
            .to_string();
        assert!(e.contains("list macros; at most 3"), "{e}");
        let wide = "${[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, 'x'.repeat(1))))}";
        assert!(scope().render(&json!(wide)).is_err());
        let e = scope()
            .render(&json!("${[1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')))}"))
            .expect_err("big result")
            .to_string();
        assert!(e.contains("more than the limit"), "{e}");
    }
}
