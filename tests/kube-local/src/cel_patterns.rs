//! CEL rules whose `matches` patterns are all constants, run with the patterns compiled once
//! when the CRD is stored.
//!
//! The API server's CEL environment compiles a `matches` whose pattern is a constant when it
//! compiles the rule (cel-go's regex optimization); kube-cel compiles the pattern on every
//! evaluation, which cost this server more CPU than anything else in a write of an
//! InferenceAccess (a `{0,251}` repetition is about 170 µs to compile; the token's duration
//! pattern, `(..{1,5}..{1,9}..){1,4}`, was an eighth of this server's CPU in a burst of
//! accesses). Taken out of what kube-cel sees:
//! - the two plain forms (`self.matches('^[a-z]+$')`, `self.all(p, p.matches('...'))`) without
//!   `fieldPath`, on a string (or list of strings): matched here directly;
//! - any other rule whose every `matches` has a literal pattern, without `oldSelf` or
//!   `messageExpression`, on a node whose values kube-cel converts as plain JSON (no `format`,
//!   maps, embedded resources or names it escapes): run by the same CEL interpreter, with
//!   kube-cel's functions, but a `matches` that finds its pattern compiled.
//!
//! Every pattern is a literal free of escapes, so it means the same here as in kube-cel (both
//! use the `regex` crate). A null value is not checked, as the API server runs no rule on null.
//! Every other rule stays with kube-cel.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use kube_cel::KubeCelExt;
use kube_cel::cel::extractors::This;
use kube_cel::cel::{self, Context, FunctionContext, Program};
use regex::Regex;
use serde_json::Value;

/// One taken rule, where it applies and what it reports.
struct PatternRule {
    /// From the top-level property down: property names, `None` for "each item".
    below: Vec<Option<String>>,
    check: Check,
    message: String,
}

enum Check {
    /// `self.matches(..)`, or with `every_item` `self.all(p, p.matches(..))`.
    Matches { pattern: Regex, every_item: bool },
    /// Any other rule whose patterns are all constants, run by cel.
    Program {
        program: Program,
        rule: String,
        field_path: Option<String>,
    },
}

/// The constant patterns of taken rules, compiled: what [`constant_matches`] looks up.
static COMPILED: LazyLock<RwLock<HashMap<String, Regex>>> = LazyLock::new(Default::default);

thread_local! {
    /// kube-cel's environment, with a `matches` that finds constant patterns compiled.
    static CONTEXT: Context<'static> = {
        let mut context = Context::default();
        context.register_all();
        context.add_function("matches", constant_matches);
        context
    };
}

/// cel's `matches`, but with the pattern compiled once when it is a taken rule's constant.
fn constant_matches(
    ftx: &FunctionContext,
    This(this): This<Arc<String>>,
    pattern: Arc<String>,
) -> cel::ResolveResult {
    let compiled = COMPILED.read().unwrap_or_else(|p| p.into_inner());
    let matched = match compiled.get(pattern.as_str()) {
        Some(regex) => regex.is_match(&this),
        None => Regex::new(&pattern)
            .map_err(|e| ftx.error(format!("'{pattern}' not a valid regex:\n{e}")))?
            .is_match(&this),
    };
    Ok(cel::Value::Bool(matched))
}

/// The taken rules of one schema, by top-level property.
#[derive(Default)]
pub struct ConstantPatterns {
    by_property: Vec<(String, Vec<PatternRule>)>,
}

/// A failed rule: the field's path from the root, and the rule's message.
pub struct Failure {
    pub field_path: String,
    pub message: String,
}

impl ConstantPatterns {
    /// Takes the rules it can run out of `schema` (below its top-level properties but
    /// `metadata`, whose rules see only part of it).
    pub fn take_from(schema: &mut Value) -> Self {
        let mut by_property = Vec::new();
        let properties = schema.get_mut("properties").and_then(Value::as_object_mut);
        for (key, child) in properties.into_iter().flatten() {
            if key == "metadata" {
                continue;
            }
            let mut rules = Vec::new();
            take(child, &mut Vec::new(), &mut rules);
            if !rules.is_empty() {
                by_property.push((key.clone(), rules));
            }
        }
        Self { by_property }
    }

    /// Top-level properties with a taken rule.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.by_property.iter().map(|(k, _)| k.as_str())
    }

    /// The failures of the rules under top-level property `key`, whose value is `value`.
    pub fn check(&self, key: &str, value: &Value, failures: &mut Vec<Failure>) {
        for (_, rules) in self.by_property.iter().filter(|(k, _)| k == key) {
            for rule in rules {
                rule.check(value, key.to_string(), &rule.below, failures);
            }
        }
    }
}

impl PatternRule {
    fn check(&self, value: &Value, path: String, below: &[Option<String>], out: &mut Vec<Failure>) {
        match below.split_first() {
            Some((Some(property), rest)) => {
                if let Some(child) = value.get(property) {
                    self.check(child, format!("{path}.{property}"), rest, out);
                }
            }
            Some((None, rest)) => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    self.check(item, format!("{path}[{i}]"), rest, out);
                }
            }
            None if value.is_null() => {}
            None => {
                if let Some((field_path, message)) = self.failure(value, path) {
                    out.push(Failure {
                        field_path,
                        message,
                    });
                }
            }
        }
    }

    /// Where the rule fails on `value` (at `path`) and why, as kube-cel reports it.
    fn failure(&self, value: &Value, path: String) -> Option<(String, String)> {
        match &self.check {
            Check::Matches {
                pattern,
                every_item,
            } => {
                let matches = |v: &Value| v.as_str().is_some_and(|s| pattern.is_match(s));
                let ok = if *every_item {
                    value
                        .as_array()
                        .is_some_and(|items| items.iter().all(matches))
                } else {
                    matches(value)
                };
                (!ok).then(|| (path, self.message.clone()))
            }
            Check::Program {
                program,
                rule,
                field_path,
            } => {
                let outcome = CONTEXT.with(|base| {
                    let mut context = base.new_inner_scope();
                    context.add_variable_from_value("self", plain_cel(value));
                    program.execute(&context)
                });
                let message = match outcome {
                    Ok(cel::Value::Bool(true)) => return None,
                    Ok(cel::Value::Bool(false)) => self.message.clone(),
                    Ok(_) => format!("rule \"{rule}\" did not evaluate to bool"),
                    Err(e) => format!("rule evaluation error: {e}"),
                };
                let at = match field_path.as_deref() {
                    Some(f) if f.starts_with('.') => format!("{path}{f}"),
                    Some(f) => format!("{path}.{f}"),
                    None => path,
                };
                Some((at, message))
            }
        }
    }
}

/// `value` as kube-cel converts it where the schema asks for nothing special.
fn plain_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(plain_cel).collect())),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), plain_cel(v)))
            .collect::<HashMap<_, _>>()
            .into(),
    }
}

/// Takes the rules it can run from `node` (at `below`) and the nodes under it.
fn take(node: &mut Value, below: &mut Vec<Option<String>>, out: &mut Vec<PatternRule>) {
    let items = &node["items"];
    let plain_form = match node["type"].as_str() {
        Some("string") => Some(false),
        // A null item would be an evaluation error, not a mismatch: left to cel.
        Some("array") if items["type"] == "string" && items["nullable"] != true => Some(true),
        _ => None,
    };
    let plain = converts_plainly(node);
    if let Some(rules) = node
        .get_mut("x-kubernetes-validations")
        .and_then(Value::as_array_mut)
    {
        rules.retain(|rule| match runnable(rule, plain_form, plain, below) {
            Some(taken) => {
                out.push(taken);
                false
            }
            None => true,
        });
    }
    for (key, child) in node
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flatten()
    {
        below.push(Some(key.clone()));
        take(child, below, out);
        below.pop();
    }
    if let Some(items) = node.get_mut("items").filter(|i| i.is_object()) {
        below.push(None);
        take(items, below, out);
        below.pop();
    }
}

/// `rule`, at `below`, as a taken rule: matched directly in one of the two plain forms
/// (`plain_form`: whether the node is a list of strings, `None` when neither a string nor
/// one), else run by cel when every pattern is a constant and the node `converts_plainly`.
fn runnable(
    rule: &Value,
    plain_form: Option<bool>,
    converts_plainly: bool,
    below: &[Option<String>],
) -> Option<PatternRule> {
    if ["messageExpression", "optionalOldSelf"]
        .iter()
        .any(|k| rule.get(k).is_some())
    {
        return None;
    }
    let text = rule["rule"].as_str()?;
    let field_path = match rule.get("fieldPath") {
        Some(f) => Some(f.as_str()?.to_string()),
        None => None,
    };
    let message = rule["message"]
        .as_str()
        .map_or_else(|| format!("failed rule: {text}"), str::to_string);
    let literal = match plain_form {
        Some(true) => every_item_literal(text),
        Some(false) => call_literal(text.trim(), "self"),
        None => None,
    };
    let check = match (literal, plain_form, &field_path) {
        (Some(literal), Some(every_item), None) => Check::Matches {
            pattern: Regex::new(literal).ok()?,
            every_item,
        },
        _ if converts_plainly && !text.contains("oldSelf") => {
            let patterns = constant_patterns(text)?;
            let program = Program::compile(text).ok()?;
            let mut compiled = COMPILED.write().unwrap_or_else(|p| p.into_inner());
            for pattern in patterns {
                if !compiled.contains_key(pattern) {
                    compiled.insert(pattern.to_string(), Regex::new(pattern).ok()?);
                }
            }
            Check::Program {
                program,
                rule: text.to_string(),
                field_path,
            }
        }
        _ => return None,
    };
    Some(PatternRule {
        below: below.to_vec(),
        check,
        message,
    })
}

/// Whether kube-cel converts the values `node` describes as plain JSON: no `format` (it
/// parses dates and durations), no maps, embedded resources or int-or-strings, and no
/// property name it escapes (reserved words, `_`, `.`, `-`, `/`).
fn converts_plainly(node: &Value) -> bool {
    let special = [
        "format",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    ];
    if special.iter().any(|k| node.get(k).is_some())
        || node
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        return false;
    }
    let properties = node.get("properties").and_then(Value::as_object);
    properties.into_iter().flatten().all(|(name, child)| {
        name.chars().all(|c| c.is_ascii_alphanumeric())
            && !crate::cel_rules::RESERVED.contains(&name.as_str())
            && converts_plainly(child)
    }) && node.get("items").is_none_or(converts_plainly)
}

/// The pattern of every `.matches('...')` in `text`; `None` when there is none, or when one
/// is not a literal free of escapes.
fn constant_patterns(text: &str) -> Option<Vec<&str>> {
    let mut patterns = Vec::new();
    for (at, call) in text.match_indices("matches(") {
        if !text[..at].ends_with('.') {
            return None;
        }
        let argument = &text[at + call.len()..];
        let quote = argument
            .chars()
            .next()
            .filter(|q| *q == '\'' || *q == '"')?;
        let (literal, rest) = argument[1..].split_once(quote)?;
        if literal.contains('\\') || !rest.starts_with(')') {
            return None;
        }
        patterns.push(literal);
    }
    (!patterns.is_empty()).then_some(patterns)
}

/// The literal of `self.all(x, x.matches('...'))`.
fn every_item_literal(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("self.all(")?.strip_suffix(')')?;
    let (variable, call) = inner.split_once(',')?;
    let variable = variable.trim();
    if variable.is_empty()
        || !variable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    call_literal(call.trim(), variable)
}

/// The literal of `target.matches('...')` (or with double quotes), when free of escapes.
fn call_literal<'a>(text: &'a str, target: &str) -> Option<&'a str> {
    let argument = text
        .strip_prefix(target)?
        .strip_prefix(".matches(")?
        .strip_suffix(')')?;
    let quote = argument
        .chars()
        .next()
        .filter(|q| *q == '\'' || *q == '"')?;
    let literal = argument.strip_prefix(quote)?.strip_suffix(quote)?;
    (!literal.contains(['\\', '\'', '"'])).then_some(literal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_whose_patterns_are_all_constants_are_taken() {
        let taken = |rule: Value, node: Value| {
            let mut node = node;
            node["x-kubernetes-validations"] = json!([rule]);
            let mut schema = json!({"properties": {"spec": node}});
            let patterns = ConstantPatterns::take_from(&mut schema);
            let left = schema["properties"]["spec"]["x-kubernetes-validations"]
                .as_array()
                .map_or(0, Vec::len);
            let taken = patterns.properties().any(|k| k == "spec");
            assert_eq!(taken, left == 0, "a rule is either taken or left");
            taken
        };
        let string = json!({"type": "string"});
        let strings = json!({"type": "array", "items": {"type": "string"}});
        let nullable = json!({"type": "string", "nullable": true});
        let object = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let dated = json!({"type": "object", "properties": {"a": {"type": "string", "format": "date-time"}}});
        let reserved = json!({"type": "object", "properties": {"namespace": {"type": "string"}}});
        let map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        for (rule, node, expected) in [
            (json!({"rule": "self.matches('^[a-z]+$')"}), &string, true),
            (json!({"rule": " self.matches(\"^a$\") "}), &string, true),
            (
                json!({"rule": "self.all(p, p.matches('^/x$'))"}),
                &strings,
                true,
            ),
            (json!({"rule": "self.matches('^a$')"}), &nullable, true),
            // Compound, with fieldPath, or on a value cel cannot match: run by cel.
            (
                json!({"rule": "self.matches('^a$') && self != 'b'"}),
                &string,
                true,
            ),
            (
                json!({"rule": "self.matches('^a$')", "fieldPath": ".x"}),
                &string,
                true,
            ),
            (json!({"rule": "self.matches('^a$')"}), &strings, true),
            (
                json!({"rule": "!has(self.a) || self.a.matches('^a$')"}),
                &object,
                true,
            ),
            // Escaped or invalid patterns, one that is not a constant, no pattern at all,
            // what a taken rule cannot do, and values kube-cel converts its own way.
            (json!({"rule": "self.matches('^a\\\\.b$')"}), &string, false),
            (json!({"rule": "self.matches('(')"}), &string, false),
            (json!({"rule": "self.matches(self)"}), &string, false),
            (json!({"rule": "size(self) > 1"}), &string, false),
            (
                json!({"rule": "self.matches('^a$')", "messageExpression": "'no'"}),
                &string,
                false,
            ),
            (
                json!({"rule": "self.matches('^a$') || oldSelf == self"}),
                &string,
                false,
            ),
            (json!({"rule": "self.a.matches('^a$')"}), &dated, false),
            (
                json!({"rule": "self.namespace.matches('^a$')"}),
                &reserved,
                false,
            ),
            (
                json!({"rule": "self.all(k, k.matches('^a$'))"}),
                &map,
                false,
            ),
        ] {
            assert_eq!(taken(rule.clone(), node.clone()), expected, "{rule}");
        }
    }
}
