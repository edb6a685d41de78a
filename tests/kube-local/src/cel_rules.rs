//! A CRD's CEL rules checked at registration, as the API server compiles them: a rule that
//! does not compile makes the CRD invalid (422), so it can never sit there unenforced.
//!
//! Differs from the API server: kube-cel parses without type-checking against the schema, so
//! of the type errors only the one CRD authors hit most is caught here: a field named by a
//! CEL reserved word (`self.namespace`), which the API server only knows escaped
//! (`self.__namespace__`).

use serde_json::{Value, json};

use crate::error::FieldError;

/// CEL's reserved words: as field names the API server exposes them as `__word__` only.
pub(crate) const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Adds an error for each rule of a CRD's `spec` (every version's schema) that does not
/// compile.
pub fn check_crd(spec: &Value, errs: &mut Vec<FieldError>) {
    for (i, version) in spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        check(
            &version["schema"]["openAPIV3Schema"],
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            errs,
        );
    }
}

/// The CEL rules of `crd` that the API server would refuse to compile, as its messages.
pub fn crd_rule_errors(crd: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check_crd(&crd["spec"], &mut errs);
    errs.iter().map(ToString::to_string).collect()
}

/// Adds an error for each rule under `schema` (at `path`) that does not compile.
fn check(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, rule) in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = rule["rule"].as_str().unwrap_or_default();
        let compiled = kube_cel::compile_schema(&json!({ "x-kubernetes-validations": [rule] }));
        let problem = compiled
            .compilation_errors()
            .first()
            .map(|e| e.to_string())
            .or_else(|| reserved_field(text).map(|w| format!("undefined field '{w}'")));
        if let Some(problem) = problem {
            errs.push(FieldError::invalid(
                &format!("{path}.x-kubernetes-validations[{i}].rule"),
                &json!(text),
                format!("compilation failed: {problem}"),
            ));
        }
    }
    for (key, child) in schema["properties"].as_object().into_iter().flatten() {
        check(child, &format!("{path}.properties[{key}]"), errs);
    }
    if schema["items"].is_object() {
        check(&schema["items"], &format!("{path}.items"), errs);
    }
    if schema["additionalProperties"].is_object() {
        check(
            &schema["additionalProperties"],
            &format!("{path}.additionalProperties"),
            errs,
        );
    }
}

/// The first reserved word `rule` selects as a field (`.word`), outside string literals.
fn reserved_field(rule: &str) -> Option<&'static str> {
    let code = without_strings(rule);
    code.match_indices('.').find_map(|(at, _)| {
        let rest = code[at + 1..].trim_start();
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        RESERVED.iter().copied().find(|r| *r == word)
    })
}

/// `rule` with the contents of its quoted strings blanked, so words in them are not code.
fn without_strings(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in rule.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(rule: &str) -> Vec<String> {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "has(self.x)"}, {"rule": rule}]}}});
        let mut errs = Vec::new();
        check(
            &schema,
            "spec.versions[0].schema.openAPIV3Schema",
            &mut errs,
        );
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_rule_that_does_not_compile_is_named_with_its_path() {
        let errs = errors("self.x ==");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1].rule: Invalid value: \"self.x ==\": compilation failed:"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn a_reserved_word_is_a_field_only_escaped() {
        assert_eq!(errors("self.namespace == 'a'").len(), 1);
        assert_eq!(errors("has(self.namespace)").len(), 1);
        assert!(errors("self.__namespace__ == 'a'").is_empty());
        assert!(errors("self.namespaces.size() > 0").is_empty());
        assert!(errors("self.x == 'a.namespace'").is_empty());
        assert!(errors("self.x in ['a', 'b']").is_empty());
    }
}
