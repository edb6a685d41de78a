//! Errors as the API server reports them: a `metav1.Status` body with reason, code and details.

use serde_json::{Value, json};

/// One failed API call, rendered as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for the `Retry-After` header (429 and 503 faults).
    pub retry_after: Option<u32>,
}

/// `plural.group` (or `plural` for the core group), as the API server names resources in messages.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = json!({ "kind": kind });
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with_details(details(group, plural, name))
    }

    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one cause per field error, as `Kind.group "name" is invalid: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[FieldError]) -> Self {
        let subject = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let text: Vec<String> = causes.iter().map(FieldError::to_string).collect();
        let list = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let mut d = details(group, kind, name);
        d["causes"] = Value::Array(causes.iter().map(FieldError::cause).collect());
        Self::new(
            422,
            "Invalid",
            format!("{subject} \"{name}\" is invalid: {list}"),
        )
        .with_details(d)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_supported(group: &str, plural: &str, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "{verb} is not supported on resources of kind \"{}\"",
                qualified(group, plural)
            ),
        )
        .with_details(details(group, plural, ""))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object sent as the response body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        if let Some(secs) = self.retry_after {
            let d = s["details"].as_object().is_some();
            if !d {
                s["details"] = json!({});
            }
            s["details"]["retryAfterSeconds"] = json!(secs);
        }
        s
    }
}

/// One field-level validation failure, formatted like apimachinery's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    pub reason: &'static str,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.to_string(),
            value: None,
            detail: detail.to_string(),
        }
    }

    pub fn invalid(field: &str, value: &Value, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            value: Some(value.clone()),
            detail: detail.into(),
        }
    }

    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            value: Some(value.clone()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    pub fn type_invalid(field: &str, value: &Value, detail: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueTypeInvalid",
            field: field.to_string(),
            value: Some(value.clone()),
            detail: detail.into(),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.to_string(),
            value: None,
            detail: detail.to_string(),
        }
    }

    fn headline(&self) -> &'static str {
        match self.reason {
            "FieldValueRequired" => "Required value",
            "FieldValueNotSupported" => "Unsupported value",
            "FieldValueTypeInvalid" => "Invalid value",
            "FieldValueForbidden" => "Forbidden",
            "FieldValueDuplicate" => "Duplicate value",
            "FieldValueTooLong" => "Too long",
            _ => "Invalid value",
        }
    }

    fn cause(&self) -> Value {
        json!({ "reason": self.reason, "message": self.message_without_field(), "field": self.field })
    }

    fn message_without_field(&self) -> String {
        let mut m = self.headline().to_string();
        if let Some(v) = &self.value {
            m.push_str(": ");
            m.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            m.push_str(": ");
            m.push_str(&self.detail);
        }
        m
    }
}

/// Values in field errors print as Go's `%#v`-ish rendering does: strings quoted, objects as "object".
fn render_value(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        Value::Null => "\"null\"".to_string(),
        other => other.to_string(),
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message_without_field())
    }
}
