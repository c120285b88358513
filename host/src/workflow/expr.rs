//! `${{ ... }}` expressions and templates, on minijinja with strict undefined values.
//!
//! A string that is exactly one `${{ expr }}` becomes the expression's value, list or
//! object as it is; any other string with `${{ }}` or `{% %}` is rendered as text.

use std::collections::HashSet;
use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

/// What names an expression may use at its place in the workflow.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub steps: &'a HashSet<&'a str>,
    pub trigger: bool,
    pub item: bool,
}

fn env() -> Result<&'static Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .variable_delimiters("${{", "}}")
            .block_delimiters("{%", "%}")
            .comment_delimiters("{#", "#}")
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        Ok(env)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether `s` holds any expression or block.
pub fn is_template(s: &str) -> bool {
    s.contains("${{") || s.contains("{%")
}

/// The inner expression when `s` is exactly one `${{ expr }}`.
fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("${{")?.strip_suffix("}}")?;
    (!inner.contains("}}") && !inner.contains("${{") && !inner.contains("{%"))
        .then_some(inner.trim())
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Evaluates a bare expression such as an `if` or `for_each` (with or without `${{ }}`).
pub fn eval(text: &str, ctx: &Value) -> Result<Value, String> {
    let inner = sole_expression(text).unwrap_or(text);
    let env = env()?;
    let expr = env
        .compile_expression(inner)
        .map_err(|e| format!("`{inner}`: {}", describe(&e)))?;
    let value = expr
        .eval(ctx)
        .map_err(|e| format!("`{inner}`: {}", describe(&e)))?;
    if value.kind() == minijinja::value::ValueKind::Undefined {
        return Err(format!(
            "`{inner}` is undefined; check the step id and the field name"
        ));
    }
    Ok(value)
}

/// Renders every string inside `value`.
pub fn render(
    value: &serde_json::Value,
    ctx: &Value,
    path: &str,
) -> Result<serde_json::Value, (String, String)> {
    Ok(match value {
        serde_json::Value::String(s) if is_template(s) => match sole_expression(s) {
            Some(_) => {
                let v = eval(s, ctx).map_err(|e| (path.to_owned(), e))?;
                serde_json::to_value(&v).map_err(|e| (path.to_owned(), e.to_string()))?
            }
            None => {
                let text = env()
                    .and_then(|env| env.render_str(s, ctx).map_err(|e| describe(&e)))
                    .map_err(|e| (path.to_owned(), e))?;
                serde_json::Value::String(text)
            }
        },
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render(v, ctx, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok::<_, (String, String)>((k.clone(), render(v, ctx, &format!("{path}.{k}"))?))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn check_names(names: HashSet<String>, scope: &Scope<'_>) -> Result<(), String> {
    for name in names {
        let mut parts = name.split('.');
        match (parts.next(), parts.next()) {
            (Some("steps"), Some(step)) if scope.steps.contains(step) => {}
            (Some("steps"), Some(step)) => {
                return Err(format!(
                    "refers to unknown step `{step}`; a step can use only the steps before it ({})",
                    if scope.steps.is_empty() {
                        "none here".to_owned()
                    } else {
                        scope.steps.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                ));
            }
            (Some("steps"), None) => return Err("use `steps.<id>`, not `steps` alone".into()),
            (Some("trigger"), _) if scope.trigger => {}
            (Some("trigger"), _) => {
                return Err("refers to `trigger`, but this workflow has no mailbox trigger".into());
            }
            (Some("item"), _) if scope.item => {}
            (Some("item"), _) => {
                return Err("refers to `item`, which exists only in a step with `for_each`".into());
            }
            (Some("workflow"), _) => {}
            (Some(other), _) => {
                return Err(format!(
                    "refers to unknown name `{other}`; use steps, trigger, item or workflow"
                ));
            }
            (None, _) => {}
        }
    }
    Ok(())
}

/// Checks an `if` or `for_each` expression.
pub fn check_expression(text: &str, scope: &Scope<'_>) -> Result<(), String> {
    let inner = sole_expression(text).unwrap_or(text);
    let expr = env()?.compile_expression(inner).map_err(|e| describe(&e))?;
    check_names(expr.undeclared_variables(true), scope)
}

/// Checks every string inside `value`.
pub fn check_value(
    value: &serde_json::Value,
    path: &str,
    scope: &Scope<'_>,
) -> Result<(), (String, String)> {
    match value {
        serde_json::Value::String(s) if is_template(s) => {
            let names = match sole_expression(s) {
                Some(inner) => env()
                    .and_then(|env| env.compile_expression(inner).map_err(|e| describe(&e)))
                    .map(|e| e.undeclared_variables(true)),
                None => env()
                    .and_then(|env| env.template_from_str(s).map_err(|e| describe(&e)))
                    .map(|t| t.undeclared_variables(true)),
            };
            names
                .and_then(|n| check_names(n, scope))
                .map_err(|e| (path.to_owned(), e))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_value(v, &format!("{path}[{i}]"), scope)),
        serde_json::Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_value(v, &format!("{path}.{k}"), scope)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sole_expressions_keep_their_type_and_templates_render() {
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"steps": {"a": {"n": [1, 2], "s": "x"}}}),
        ));
        let v = render(&serde_json::json!({"list": "${{ steps.a.n }}", "t": "n=${{ steps.a.n | length }}{% for i in steps.a.n %} ${{ i }}{% endfor %}"}), &ctx, "with").unwrap();
        assert_eq!(v, serde_json::json!({"list": [1, 2], "t": "n=2 1 2"}));
        let (field, err) = render(
            &serde_json::json!({"x": ["${{ steps.a.missing }}"]}),
            &ctx,
            "with",
        )
        .unwrap_err();
        assert_eq!(field, "with.x[0]");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn checks_names_against_the_scope() {
        let steps: HashSet<&str> = ["inbox"].into();
        let scope = Scope {
            steps: &steps,
            trigger: false,
            item: false,
        };
        assert!(
            check_value(
                &serde_json::json!("${{ steps.inbox.messages }}"),
                "w",
                &scope
            )
            .is_ok()
        );
        let (_, e) = check_value(
            &serde_json::json!("${{ steps.nope.messages }}"),
            "w",
            &scope,
        )
        .unwrap_err();
        assert!(e.contains("unknown step `nope`"), "{e}");
        let (_, e) = check_value(
            &serde_json::json!("{% for m in trigger.messages %}x{% endfor %}"),
            "w",
            &scope,
        )
        .unwrap_err();
        assert!(e.contains("no mailbox trigger"), "{e}");
        assert!(check_expression("item.uid", &scope).is_err());
    }
}
