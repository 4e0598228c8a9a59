//! Terraform values in Rust types.
//!
//! Terraform sends every value as msgpack (JSON for stored state): objects
//! are maps keyed by attribute name, blocks are lists of objects, and a
//! value that is not known yet is a msgpack extension (type 0; Terraform
//! 1.6+ may send type 12, an unknown with refinements, which we read as
//! plain unknown). [`Value`] says which of the three a value is; any serde
//! struct of `Value` fields is a resource state.

use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::diagnostics::Diagnostics;
use crate::proto;

/// rmp-serde's name for a msgpack extension in serde's data model.
const EXT: &str = "_ExtStruct";
/// Terraform's extension type for an unknown value.
const UNKNOWN_EXT: i8 = 0;

/// A Terraform value: known, null or not known until apply.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub enum Value<T> {
    /// A known value.
    Value(T),
    /// Null: unset in the configuration, or absent.
    #[default]
    Null,
    /// Known only after apply.
    Unknown,
}

/// An empty object, for states that carry nothing.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
pub struct StructEmpty {}

/// A value with nothing in it (private state, provider meta).
pub type ValueEmpty = Value<StructEmpty>;

impl<T> Value<T> {
    /// Known?
    pub const fn is_value(&self) -> bool {
        matches!(self, Self::Value(_))
    }
    /// Null?
    pub const fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
    /// Unknown?
    pub const fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown)
    }
    /// A borrowed view.
    pub const fn as_ref(&self) -> Value<&T> {
        match self {
            Self::Value(v) => Value::Value(v),
            Self::Null => Value::Null,
            Self::Unknown => Value::Unknown,
        }
    }
    /// A mutable view.
    pub fn as_mut(&mut self) -> Value<&mut T> {
        match self {
            Self::Value(v) => Value::Value(v),
            Self::Null => Value::Null,
            Self::Unknown => Value::Unknown,
        }
    }
    /// The known value, else `None`.
    pub fn as_option(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
    /// The known value by reference, else `None`.
    pub fn as_ref_option(&self) -> Option<&T> {
        self.as_ref().as_option()
    }
    /// The known value mutably, else `None`.
    pub fn as_mut_option(&mut self) -> Option<&mut T> {
        self.as_mut().as_option()
    }
    /// The known value dereferenced, else `None` (`&str` for `String`).
    pub fn as_deref_option(&self) -> Option<&T::Target>
    where
        T: std::ops::Deref,
    {
        self.as_ref_option().map(|v| &**v)
    }
    /// Dereferences the known value (`Value<&str>` for `Value<String>`).
    pub fn as_deref(&self) -> Value<&T::Target>
    where
        T: std::ops::Deref,
    {
        self.as_ref().map(|v| &**v)
    }
    /// Maps the known value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Value<U> {
        match self {
            Self::Value(v) => Value::Value(f(v)),
            Self::Null => Value::Null,
            Self::Unknown => Value::Unknown,
        }
    }
    /// The known value, else `default`.
    pub fn unwrap_or(self, default: T) -> T {
        self.as_option().unwrap_or(default)
    }
    /// The known value, else `T::default()`.
    pub fn unwrap_or_default(self) -> T
    where
        T: Default,
    {
        self.as_option().unwrap_or_default()
    }
    /// Iterates over the known value (zero or one item).
    pub fn iter(&self) -> std::option::IntoIter<&T> {
        self.as_ref_option().into_iter()
    }
}

impl<T: Clone> Value<&T> {
    /// Clones the borrowed value.
    pub fn cloned(self) -> Value<T> {
        self.map(T::clone)
    }
}

impl<T: Copy> Value<&T> {
    /// Copies the borrowed value.
    pub fn copied(self) -> Value<T> {
        self.map(|v| *v)
    }
}

impl<T> From<T> for Value<T> {
    fn from(v: T) -> Self {
        Self::Value(v)
    }
}

impl<T> From<Option<T>> for Value<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Self::Value)
    }
}

impl<T> IntoIterator for Value<T> {
    type Item = T;
    type IntoIter = std::option::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_option().into_iter()
    }
}

impl<'a, T> IntoIterator for &'a Value<T> {
    type Item = &'a T;
    type IntoIter = std::option::IntoIter<&'a T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Serialize> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(s),
            Self::Null => s.serialize_none(),
            // One zero byte of payload: what Terraform itself writes.
            Self::Unknown => {
                s.serialize_newtype_struct(EXT, &(UNKNOWN_EXT, serde_bytes::Bytes::new(&[0])))
            }
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A missing field reads as null, like an absent attribute in stored
        // state. Present values go through a msgpack tree first so that an
        // extension (unknown) can be told apart before `T` sees it.
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = Value<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Terraform value")
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Value::Null)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                let tree = rmpv::Value::deserialize(d)?;
                from_tree(tree).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_option(V(std::marker::PhantomData))
    }
}

fn from_tree<T: DeserializeOwned>(tree: rmpv::Value) -> Result<Value<T>, rmpv::ext::Error> {
    match tree {
        rmpv::Value::Nil => Ok(Value::Null),
        rmpv::Value::Ext(_, _) => Ok(Value::Unknown),
        other => rmpv::ext::from_value(other).map(Value::Value),
    }
}

/// `#[serde(with = "serde_as_vec")]` on a `Value<T>` field: a block with
/// at most one item, which Terraform sends as a list of zero or one.
pub mod serde_as_vec {
    use super::Value;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `[v]` for a known value, `[]` otherwise.
    pub fn serialize<T: Serialize, S: Serializer>(v: &Value<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Value::Value(x) => [x].serialize(s),
            Value::Null => <[&T; 0]>::default().serialize(s),
            Value::Unknown => v.serialize(s),
        }
    }

    /// Reads `[]`/null as null, `[v]` as `v`, an unknown list as unknown.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Value<T>, D::Error> {
        let list: Value<Vec<Value<T>>> = Value::deserialize(d)?;
        match list {
            Value::Value(items) => {
                let mut it = items.into_iter();
                match (it.next(), it.next()) {
                    (None, _) => Ok(Value::Null),
                    (Some(v), None) => Ok(v),
                    (Some(_), Some(_)) => Err(serde::de::Error::custom(
                        "a block that takes at most one item has several",
                    )),
                }
            }
            Value::Null => Ok(Value::Null),
            Value::Unknown => Ok(Value::Unknown),
        }
    }
}

/// The msgpack for null, also what an empty value means.
pub(crate) const NULL: [u8; 1] = [0xc0];

/// A value as it came over the wire, typed on demand.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    /// msgpack bytes (everything Terraform sends but stored state).
    MessagePack(Vec<u8>),
    /// JSON bytes (stored state, in `UpgradeResourceState`).
    Json(Vec<u8>),
}

impl Default for RawValue {
    fn default() -> Self {
        Self::MessagePack(NULL.to_vec())
    }
}

impl RawValue {
    /// Null or empty?
    pub fn is_null(&self) -> bool {
        match self {
            Self::MessagePack(b) => b.is_empty() || b[..] == NULL,
            Self::Json(b) => {
                let t = String::from_utf8_lossy(b);
                let t = t.trim();
                t.is_empty() || t == "null"
            }
        }
    }

    /// Reads the value as `T`; a failure becomes a diagnostic.
    pub fn deserialize<T: DeserializeOwned>(&self, diags: &mut Diagnostics) -> Option<T> {
        let r = match self {
            Self::MessagePack(b) if b.is_empty() => {
                rmp_serde::from_slice(&NULL).map_err(|e| e.to_string())
            }
            Self::MessagePack(b) => rmp_serde::from_slice(b).map_err(|e| e.to_string()),
            Self::Json(b) if b.is_empty() => {
                serde_json::from_slice(b"null").map_err(|e| e.to_string())
            }
            Self::Json(b) => serde_json::from_slice(b).map_err(|e| e.to_string()),
        };
        r.map_err(|e| diags.root_error("Cannot decode a value from Terraform", e))
            .ok()
    }

    /// The JSON tree of this value (for upgrades that rename or move
    /// attributes before typing them).
    pub fn json(&self, diags: &mut Diagnostics) -> Option<serde_json::Value> {
        self.deserialize(diags)
    }

    /// Encodes `v` as msgpack with attribute names.
    pub fn serialize<T: Serialize>(diags: &mut Diagnostics, v: &T) -> Option<Self> {
        encode(diags, v).map(Self::MessagePack)
    }

    /// Wraps what a request carried.
    pub fn from_proto(v: Option<proto::DynamicValue>) -> Self {
        match v {
            None => Self::default(),
            Some(v) if v.msgpack.is_empty() && !v.json.is_empty() => Self::Json(v.json),
            Some(v) => Self::MessagePack(v.msgpack),
        }
    }

    /// For a response.
    pub fn into_proto(self) -> proto::DynamicValue {
        match self {
            Self::MessagePack(msgpack) => proto::DynamicValue {
                msgpack,
                json: vec![],
            },
            Self::Json(json) => proto::DynamicValue {
                msgpack: vec![],
                json,
            },
        }
    }
}

/// msgpack with attribute names, as Terraform reads it.
pub(crate) fn encode<T: Serialize>(diags: &mut Diagnostics, v: &T) -> Option<Vec<u8>> {
    rmp_serde::to_vec_named(v)
        .map_err(|e| diags.root_error("Cannot encode a value for Terraform", e.to_string()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct S {
        name: Value<String>,
        size: Value<i64>,
        tags: Value<Vec<Value<String>>>,
        #[serde(with = "serde_as_vec")]
        block: Value<Inner>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Inner {
        on: Value<bool>,
    }

    fn roundtrip(s: &S) -> S {
        let mut d = Diagnostics::default();
        let raw = RawValue::serialize(&mut d, s).unwrap();
        raw.deserialize(&mut d).unwrap()
    }

    #[test]
    fn known_null_and_unknown_survive_msgpack() {
        let s = S {
            name: Value::Value("a".into()),
            size: Value::Unknown,
            tags: Value::Value(vec![Value::Unknown, Value::Null, Value::Value("t".into())]),
            block: Value::Value(Inner { on: Value::Unknown }),
        };
        assert_eq!(roundtrip(&s), s);
        assert_eq!(roundtrip(&S::default()), S::default());
    }

    #[test]
    fn unknown_is_the_extension_terraform_writes() {
        let mut d = Diagnostics::default();
        let b = encode(&mut d, &Value::<String>::Unknown).unwrap();
        assert_eq!(b, [0xd4, 0x00, 0x00]);
        // Terraform 1.6+ refined unknown (extension 12) reads as unknown.
        let v: Value<String> = RawValue::MessagePack(vec![0xd4, 0x0c, 0x00])
            .deserialize(&mut d)
            .unwrap();
        assert!(v.is_unknown());
    }

    #[test]
    fn stored_json_state_reads_with_missing_and_extra_attributes() {
        let mut d = Diagnostics::default();
        let raw = RawValue::Json(
            br#"{"name":"x","size":3,"extra":[1,2],"block":[{"on":true}]}"#.to_vec(),
        );
        let s: S = raw.deserialize(&mut d).unwrap();
        assert_eq!(s.name, Value::Value("x".into()));
        assert_eq!(s.size, Value::Value(3));
        assert!(s.tags.is_null());
        assert_eq!(
            s.block,
            Value::Value(Inner {
                on: Value::Value(true)
            })
        );
    }

    #[test]
    fn a_type_mismatch_is_a_diagnostic_not_a_panic() {
        let mut d = Diagnostics::default();
        let raw = RawValue::Json(br#"{"name":5}"#.to_vec());
        assert!(raw.deserialize::<S>(&mut d).is_none());
        assert_eq!(d.errors.len(), 1);
    }
}
