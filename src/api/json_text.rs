//! A free-form JSON value kept as its text.
//!
//! Every access is kept in the operator's cache for as long as it exists, and a parsed JSON
//! object takes a B-tree node of about 600 bytes per map, however small: the four maps of a
//! plain InferenceService spec took half of an access's memory. The text is parsed on the rare
//! reads (once per reconcile that plans a template).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// JSON text, in one canonical form (keys sorted, no spaces): equal values, equal texts.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonText(Box<str>);

impl JsonText {
    pub fn value(&self) -> Value {
        // Only ever made from a Value, so it parses; null is the Default's value anyway.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    pub fn is_object(&self) -> bool {
        self.0.starts_with('{')
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

impl Default for JsonText {
    fn default() -> Self {
        Self::from(&Value::Null)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Self::from(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_compares_as_the_value_would() {
        let value = json!({"predictor": {"model": {"storageUri": "gs://m", "modelFormat": {"name": "sklearn"}}}});
        let text: JsonText = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(text.value(), value);
        assert_eq!(serde_json::to_value(&text).unwrap(), value);
        assert!(text.is_object() && !JsonText::default().is_object());
        // Another key order is the same value.
        let reordered: JsonText = serde_json::from_str(
            r#"{"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://m"}}}"#,
        )
        .unwrap();
        assert_eq!(reordered, text);
        assert_ne!(JsonText::from(&json!({"a": 1})), text);
    }
}
