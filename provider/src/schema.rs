//! Schema shorthands: attributes by type and constraint, and the schema
//! of a block that has only attributes.

use tfplugin::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description, Schema};

/// Attribute shorthand.
pub fn attr(t: AttributeType, c: AttributeConstraint, desc: &str) -> Attribute {
    Attribute {
        attr_type: t,
        description: Description::markdown(desc),
        constraint: c,
        sensitive: false,
        deprecated: false,
    }
}

/// Required string.
pub fn req_str(desc: &str) -> Attribute {
    attr(AttributeType::String, AttributeConstraint::Required, desc)
}
/// Optional string.
pub fn opt_str(desc: &str) -> Attribute {
    attr(AttributeType::String, AttributeConstraint::Optional, desc)
}
/// Optional string the provider fills when unset.
pub fn oc_str(desc: &str) -> Attribute {
    attr(
        AttributeType::String,
        AttributeConstraint::OptionalComputed,
        desc,
    )
}
/// Computed string.
pub fn comp_str(desc: &str) -> Attribute {
    attr(AttributeType::String, AttributeConstraint::Computed, desc)
}
/// Optional number the provider fills when unset.
pub fn oc_num(desc: &str) -> Attribute {
    attr(
        AttributeType::Number,
        AttributeConstraint::OptionalComputed,
        desc,
    )
}
/// Computed number.
pub fn comp_num(desc: &str) -> Attribute {
    attr(AttributeType::Number, AttributeConstraint::Computed, desc)
}
/// Optional bool the provider fills when unset.
pub fn oc_bool(desc: &str) -> Attribute {
    attr(
        AttributeType::Bool,
        AttributeConstraint::OptionalComputed,
        desc,
    )
}
/// Optional bool.
pub fn opt_bool(desc: &str) -> Attribute {
    attr(AttributeType::Bool, AttributeConstraint::Optional, desc)
}

/// The schema (version 0) of a block that has only attributes.
pub fn flat_schema(
    description: &str,
    attributes: std::collections::HashMap<String, Attribute>,
) -> Option<Schema> {
    Some(Schema {
        version: 0,
        block: Block {
            version: 0,
            description: Description::markdown(description),
            attributes,
            ..Default::default()
        },
    })
}
