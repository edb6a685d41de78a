//! CEL rules that only match a string against a constant pattern (`self.matches('^[a-z]+$')`,
//! `self.all(p, p.matches('...'))`), run with the pattern compiled once when the CRD is stored.
//!
//! The API server's CEL environment compiles a `matches` whose pattern is a constant when it
//! compiles the rule (cel-go's regex optimization); kube-cel compiles the pattern on every
//! evaluation, which cost this server more CPU than anything else in a write of an
//! InferenceAccess (a `{0,251}` repetition is about 170 µs to compile). Only the two exact
//! forms above, with a literal free of escapes, on a string (or list of strings) and with
//! neither `messageExpression` nor `fieldPath`, are taken out of what kube-cel sees; a null
//! value is not checked, as the API server runs no rule on null;
//! every other rule, compound ones that call `matches` included, stays with kube-cel. Both
//! use the `regex` crate, so a pattern means the same in either.

use regex::Regex;
use serde_json::Value;

/// One taken rule, where it applies and what it reports.
struct PatternRule {
    /// From the top-level property down: property names, `None` for "each item".
    below: Vec<Option<String>>,
    pattern: Regex,
    /// `self.all(p, p.matches(..))`: every item of the list must match.
    every_item: bool,
    message: String,
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
                let matches = |v: &Value| v.as_str().is_some_and(|s| self.pattern.is_match(s));
                let ok = if self.every_item {
                    value
                        .as_array()
                        .is_some_and(|items| items.iter().all(matches))
                } else {
                    matches(value)
                };
                if !ok {
                    out.push(Failure {
                        field_path: path,
                        message: self.message.clone(),
                    });
                }
            }
        }
    }
}

/// Takes the rules it can run from `node` (at `below`) and the nodes under it.
fn take(node: &mut Value, below: &mut Vec<Option<String>>, out: &mut Vec<PatternRule>) {
    let items = &node["items"];
    let every_item = match node["type"].as_str() {
        Some("string") => Some(false),
        // A null item would be an evaluation error, not a mismatch: left to kube-cel.
        Some("array") if items["type"] == "string" && items["nullable"] != true => Some(true),
        _ => None,
    };
    if let (Some(every_item), Some(rules)) = (
        every_item,
        node.get_mut("x-kubernetes-validations")
            .and_then(Value::as_array_mut),
    ) {
        rules.retain(|rule| match runnable(rule, every_item, below) {
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

/// `rule`, at `below`, as a taken rule when it has one of the two forms.
fn runnable(rule: &Value, every_item: bool, below: &[Option<String>]) -> Option<PatternRule> {
    if ["messageExpression", "fieldPath", "optionalOldSelf"]
        .iter()
        .any(|k| rule.get(k).is_some())
    {
        return None;
    }
    let text = rule["rule"].as_str()?;
    let literal = if every_item {
        every_item_literal(text)?
    } else {
        call_literal(text.trim(), "self")?
    };
    let message = rule["message"]
        .as_str()
        .map_or_else(|| format!("failed rule: {text}"), str::to_string);
    Some(PatternRule {
        below: below.to_vec(),
        pattern: Regex::new(literal).ok()?,
        every_item,
        message,
    })
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
    fn only_the_two_plain_forms_are_taken() {
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
        for (rule, node, expected) in [
            (json!({"rule": "self.matches('^[a-z]+$')"}), &string, true),
            (json!({"rule": " self.matches(\"^a$\") "}), &string, true),
            (
                json!({"rule": "self.all(p, p.matches('^/x$'))"}),
                &strings,
                true,
            ),
            (json!({"rule": "self.matches('^a$')"}), &nullable, true),
            // Compound, escaped, on the wrong type, or with what a taken rule cannot do.
            (
                json!({"rule": "self.matches('^a$') && self != 'b'"}),
                &string,
                false,
            ),
            (json!({"rule": "self.matches('^a\\\\.b$')"}), &string, false),
            (json!({"rule": "self.matches('^a$')"}), &strings, false),
            (
                json!({"rule": "self.all(p, p.matches('^a$'))"}),
                &string,
                false,
            ),
            (
                json!({"rule": "self.matches('^a$')", "fieldPath": ".x"}),
                &string,
                false,
            ),
            (
                json!({"rule": "self.matches('^a$')", "messageExpression": "'no'"}),
                &string,
                false,
            ),
            (json!({"rule": "self.matches('(')"}), &string, false),
        ] {
            assert_eq!(taken(rule.clone(), node.clone()), expected, "{rule}");
        }
    }
}
