//! Schemas: the attributes and blocks of a provider, resource or data
//! source, and their version (which state upgrades go by).

use std::collections::HashMap;

use crate::proto;

/// Plain text or Markdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StringKind {
    /// Plain text.
    #[default]
    Plain,
    /// Markdown.
    Markdown,
}

/// A description shown in docs and by language servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// How `content` is written.
    pub kind: StringKind,
    /// The text.
    pub content: String,
}

impl Description {
    /// Plain text.
    pub fn plain(content: impl ToString) -> Self {
        Self {
            kind: StringKind::Plain,
            content: content.to_string(),
        }
    }
    /// Markdown.
    pub fn markdown(content: impl ToString) -> Self {
        Self {
            kind: StringKind::Markdown,
            content: content.to_string(),
        }
    }
    fn kind(&self) -> i32 {
        match self.kind {
            StringKind::Plain => proto::string_kind::PLAIN,
            StringKind::Markdown => proto::string_kind::MARKDOWN,
        }
    }
}

/// The type of an attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeType {
    /// string
    String,
    /// number
    Number,
    /// bool
    Bool,
    /// list(T)
    List(Box<AttributeType>),
    /// set(T)
    Set(Box<AttributeType>),
    /// map(T)
    Map(Box<AttributeType>),
    /// object({...})
    Object(HashMap<String, AttributeType>),
    /// any value
    Any,
}

impl AttributeType {
    /// The type in cty's JSON form, e.g. `["list","string"]`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::String => json!("string"),
            Self::Number => json!("number"),
            Self::Bool => json!("bool"),
            Self::List(t) => json!(["list", t.to_json()]),
            Self::Set(t) => json!(["set", t.to_json()]),
            Self::Map(t) => json!(["map", t.to_json()]),
            Self::Object(attrs) => {
                let fields: serde_json::Map<_, _> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                json!(["object", fields])
            }
            Self::Any => json!("dynamic"),
        }
    }
}

/// Who sets an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttributeConstraint {
    /// The provider alone.
    Computed,
    /// The configuration, or nobody.
    Optional,
    /// The configuration, else the provider.
    OptionalComputed,
    /// The configuration, always.
    Required,
}

/// One attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Its type.
    pub attr_type: AttributeType,
    /// What it is.
    pub description: Description,
    /// Who sets it.
    pub constraint: AttributeConstraint,
    /// Hidden in plans and output.
    pub sensitive: bool,
    /// Warn when used.
    pub deprecated: bool,
}

impl Default for Attribute {
    fn default() -> Self {
        Self {
            attr_type: AttributeType::Any,
            description: Description::default(),
            constraint: AttributeConstraint::OptionalComputed,
            sensitive: false,
            deprecated: false,
        }
    }
}

/// A nested block and how many of it a configuration may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NestedBlock {
    /// Exactly one.
    Single(Block),
    /// Any number, in order.
    List(Block),
    /// Any number, unordered.
    Set(Block),
    /// Labelled blocks.
    Map(Block),
    /// One, always present (attributes may be unset).
    Group(Block),
    /// Zero or one, sent as a list (use `serde_as_vec` on the field).
    Optional(Block),
}

/// A block: attributes and nested blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's own version (informational; the schema's counts).
    pub version: i64,
    /// Attributes by name.
    pub attributes: HashMap<String, Attribute>,
    /// Nested blocks by type name.
    pub blocks: HashMap<String, NestedBlock>,
    /// What it is.
    pub description: Description,
    /// Warn when used.
    pub deprecated: bool,
}

impl Default for Block {
    fn default() -> Self {
        Self {
            version: 0,
            attributes: HashMap::new(),
            blocks: HashMap::new(),
            description: Description::plain("empty"),
            deprecated: false,
        }
    }
}

/// A versioned schema.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Schema {
    /// Raised when stored state must be upgraded.
    pub version: i64,
    /// The top-level block.
    pub block: Block,
}

fn sorted<V>(m: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

impl Block {
    pub(crate) fn to_proto(&self) -> proto::Block {
        let attributes = sorted(&self.attributes)
            .into_iter()
            .map(|(name, a)| {
                use AttributeConstraint as C;
                proto::Attribute {
                    name: name.clone(),
                    r#type: a.attr_type.to_json().to_string().into_bytes(),
                    description: a.description.content.clone(),
                    required: a.constraint == C::Required,
                    optional: matches!(a.constraint, C::Optional | C::OptionalComputed),
                    computed: matches!(a.constraint, C::Computed | C::OptionalComputed),
                    sensitive: a.sensitive,
                    description_kind: a.description.kind(),
                    deprecated: a.deprecated,
                }
            })
            .collect();
        let block_types = sorted(&self.blocks)
            .into_iter()
            .map(|(name, nb)| {
                use proto::nesting;
                let (nesting, min, max, b) = match nb {
                    NestedBlock::Single(b) => (nesting::SINGLE, 1, 1, b),
                    NestedBlock::List(b) => (nesting::LIST, 0, 0, b),
                    NestedBlock::Set(b) => (nesting::SET, 0, 0, b),
                    NestedBlock::Map(b) => (nesting::MAP, 0, 0, b),
                    NestedBlock::Group(b) => (nesting::GROUP, 0, 0, b),
                    NestedBlock::Optional(b) => (nesting::LIST, 0, 1, b),
                };
                proto::NestedBlock {
                    type_name: name.clone(),
                    block: Some(b.to_proto()),
                    nesting,
                    min_items: min,
                    max_items: max,
                }
            })
            .collect();
        proto::Block {
            version: self.version,
            attributes,
            block_types,
            description: self.description.content.clone(),
            description_kind: self.description.kind(),
            deprecated: self.deprecated,
        }
    }

    /// Whether some attribute, at any depth, is sensitive.
    pub fn has_sensitive(&self) -> bool {
        self.attributes.values().any(|a| a.sensitive)
            || self.blocks.values().any(|b| match b {
                NestedBlock::Single(b)
                | NestedBlock::List(b)
                | NestedBlock::Set(b)
                | NestedBlock::Map(b)
                | NestedBlock::Group(b)
                | NestedBlock::Optional(b) => b.has_sensitive(),
            })
    }
}

impl Block {
    /// Stored JSON state shaped to this block: attributes the block does
    /// not have (state another provider wrote) are dropped, missing ones
    /// become null, missing list, set and optional blocks empty, missing
    /// map blocks `{}`; nested blocks likewise. Anything but an object is
    /// left alone (null state stays null).
    pub fn normalize_json(&self, v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        let J::Object(mut obj) = v else { return v };
        let mut out = serde_json::Map::new();
        for name in self.attributes.keys() {
            out.insert(name.clone(), obj.remove(name).unwrap_or(J::Null));
        }
        for (name, nb) in &self.blocks {
            let got = obj.remove(name).unwrap_or(J::Null);
            let shaped = match nb {
                NestedBlock::List(b) | NestedBlock::Set(b) | NestedBlock::Optional(b) => {
                    match got {
                        J::Array(items) => {
                            J::Array(items.into_iter().map(|i| b.normalize_json(i)).collect())
                        }
                        J::Null => J::Array(vec![]),
                        other => other,
                    }
                }
                NestedBlock::Map(b) => match got {
                    J::Object(m) => J::Object(
                        m.into_iter()
                            .map(|(k, i)| (k, b.normalize_json(i)))
                            .collect(),
                    ),
                    J::Null => J::Object(serde_json::Map::new()),
                    other => other,
                },
                NestedBlock::Group(b) => b.normalize_json(match got {
                    J::Null => J::Object(serde_json::Map::new()),
                    other => other,
                }),
                NestedBlock::Single(b) => b.normalize_json(got),
            };
            out.insert(name.clone(), shaped);
        }
        J::Object(out)
    }
}

impl Schema {
    pub(crate) fn to_proto(&self) -> proto::Schema {
        proto::Schema {
            version: self.version,
            block: Some(self.block.to_proto()),
        }
    }
}

/// `map! { "a" => x, "b" => y }`: a `HashMap<String, _>` whose values are
/// converted with `Into`.
#[macro_export]
macro_rules! map {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = ::std::collections::HashMap::new();
        $( m.insert(::std::string::ToString::to_string(&$k), ::std::convert::Into::into($v)); )*
        m
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_written_in_cty_json() {
        let t = AttributeType::List(AttributeType::Map(AttributeType::String.into()).into());
        assert_eq!(t.to_json().to_string(), r#"["list",["map","string"]]"#);
    }

    #[test]
    fn foreign_state_is_shaped_to_the_schema() {
        let b = Block {
            attributes: map! { "name" => Attribute::default(), "size" => Attribute::default() },
            blocks: map! {
                "disk" => NestedBlock::List(Block {
                    attributes: map! { "file" => Attribute::default() },
                    ..Default::default()
                }),
                "cpu" => NestedBlock::Optional(Block::default()),
            },
            ..Default::default()
        };
        let v = serde_json::json!({"name": "a", "xml": [], "disk": [{"file": "f", "scsi": true}]});
        assert_eq!(
            b.normalize_json(v),
            serde_json::json!({"name": "a", "size": null, "disk": [{"file": "f"}], "cpu": []})
        );
        assert_eq!(
            b.normalize_json(serde_json::Value::Null),
            serde_json::Value::Null
        );
    }

    #[test]
    fn an_optional_block_is_a_list_of_at_most_one() {
        let b = Block {
            blocks: map! { "cpu" => NestedBlock::Optional(Block::default()) },
            ..Default::default()
        };
        let p = b.to_proto();
        assert_eq!(p.block_types[0].nesting, proto::nesting::LIST);
        assert_eq!(
            (p.block_types[0].min_items, p.block_types[0].max_items),
            (0, 1)
        );
    }
}
