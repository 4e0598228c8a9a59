//! Helpers to read and build the msgpack shapes of Go values: structs are
//! maps keyed by field name, `[]byte` is bin, nil is nil.

use rmpv::Value;

/// A Go struct value from field names and values.
pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A field of a Go struct (a msgpack map), if present.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find_map(|(k, v)| (key_str(k) == Some(name)).then_some(v)),
        _ => None,
    }
}

/// A string, whether msgpack sent it as str or bin.
pub fn key_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => s.as_str(),
        Value::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A string field, empty when missing or nil.
pub fn str_field(v: &Value, name: &str) -> String {
    field(v, name)
        .and_then(key_str)
        .unwrap_or_default()
        .to_string()
}

/// An unsigned integer field, 0 when missing.
pub fn u32_field(v: &Value, name: &str) -> u32 {
    field(v, name).and_then(as_u32).unwrap_or(0)
}

/// An unsigned integer value.
pub fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// A list of strings (nil gives an empty list).
pub fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(key_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// A list of strings as Go sends `[]string` (nil when empty).
pub fn strings(list: &[String]) -> Value {
    if list.is_empty() {
        Value::Nil
    } else {
        Value::Array(list.iter().map(|s| Value::from(s.as_str())).collect())
    }
}

/// Converts a decoded msgpack value to JSON, the form config parsing reads.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => {
            if let Some(n) = i.as_i64() {
                J::from(n)
            } else {
                J::from(i.as_u64().unwrap_or(0))
            }
        }
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().unwrap_or_default().to_string()),
        Value::Binary(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = key_str(k).map_or_else(|| k.to_string(), str::to_string);
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, _) => J::Null,
    }
}

/// Converts JSON to the msgpack shape Go decodes into `interface{}`.
pub fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        J::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}
