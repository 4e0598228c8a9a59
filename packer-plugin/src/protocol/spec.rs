//! The HCL2 schema of a component (`hcldec.ObjectSpec` with `cty` types)
//! and its gob encoding, the bytes `ConfigSpec` returns.
//!
//! Packer decodes those bytes into its own Go types, so every type name on
//! the wire must be the name that the running Packer registered.

use std::collections::BTreeMap;

use crate::protocol::gob::{self, StructWriter, TypeDef};

/// A `cty` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtyType {
    /// `string`
    String,
    /// `number`
    Number,
    /// `bool`
    Bool,
    /// `list(T)`
    List(Box<CtyType>),
    /// `set(T)`
    Set(Box<CtyType>),
    /// `map(T)`
    Map(Box<CtyType>),
    /// `object({...})`
    Object(BTreeMap<String, CtyType>),
    /// `tuple([...])`
    Tuple(Vec<CtyType>),
}

/// One entry of an object spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// An attribute.
    Attr {
        /// Its type.
        ty: CtyType,
        /// Whether HCL reports it missing.
        required: bool,
    },
    /// A single nested block.
    Block {
        /// What the block holds.
        nested: ObjectSpec,
        /// Whether HCL reports it missing.
        required: bool,
    },
    /// A repeated nested block, decoded as a list.
    BlockList {
        /// What each block holds.
        nested: ObjectSpec,
        /// Least number of blocks.
        min_items: i64,
        /// Most blocks (0: no limit).
        max_items: i64,
    },
    /// A block whose attributes are free-form, all of one type.
    BlockAttrs {
        /// The type of every attribute.
        element: CtyType,
        /// Whether HCL reports it missing.
        required: bool,
    },
}

/// An ordered object spec: names with what they hold.
pub type ObjectSpec = Vec<(String, Spec)>;

/// Which Packer the spec is encoded for: the registered name of
/// `hcldec.ObjectSpec` differs between Debian's vendored build and
/// module builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Packer 1.6 built with its dependencies vendored in its own tree.
    Vendored,
    /// Packer built as a Go module (1.7 and later).
    Module,
}

impl Flavor {
    fn object_spec_name(self) -> &'static str {
        match self {
            Flavor::Vendored => {
                "github.com/hashicorp/packer/vendor/github.com/hashicorp/hcl/v2/hcldec.ObjectSpec"
            }
            Flavor::Module => "github.com/hashicorp/hcl/v2/hcldec.ObjectSpec",
        }
    }
}

// Ids of the outer stream; fixed so the same spec always gives the same bytes.
const OBJECT_SPEC: i64 = 65;
const ATTR_SPEC: i64 = 66;
const TYPE: i64 = 67;
const BLOCK_SPEC: i64 = 68;
const BLOCK_LIST_SPEC: i64 = 69;
const BLOCK_ATTRS_SPEC: i64 = 70;

fn outer_def(id: i64) -> TypeDef {
    match id {
        OBJECT_SPEC => TypeDef::Map {
            name: "ObjectSpec",
            id,
            key: gob::STRING,
            elem: gob::INTERFACE,
        },
        ATTR_SPEC => TypeDef::Struct {
            name: "AttrSpec",
            id,
            fields: vec![
                ("Name", gob::STRING),
                ("Type", TYPE),
                ("Required", gob::BOOL),
            ],
        },
        TYPE => TypeDef::GobEncoder { name: "Type", id },
        BLOCK_SPEC => TypeDef::Struct {
            name: "BlockSpec",
            id,
            fields: vec![
                ("TypeName", gob::STRING),
                ("Nested", gob::INTERFACE),
                ("Required", gob::BOOL),
            ],
        },
        BLOCK_LIST_SPEC => TypeDef::Struct {
            name: "BlockListSpec",
            id,
            fields: vec![
                ("TypeName", gob::STRING),
                ("Nested", gob::INTERFACE),
                ("MinItems", gob::INT),
                ("MaxItems", gob::INT),
            ],
        },
        BLOCK_ATTRS_SPEC => TypeDef::Struct {
            name: "BlockAttrsSpec",
            id,
            fields: vec![
                ("TypeName", gob::STRING),
                ("ElementType", TYPE),
                ("Required", gob::BOOL),
            ],
        },
        _ => unreachable!("no outer type with id {id}"),
    }
}

fn collect_outer(spec: &ObjectSpec, used: &mut Vec<i64>) {
    for (_, s) in spec {
        match s {
            Spec::Attr { .. } => used.extend([ATTR_SPEC, TYPE]),
            Spec::Block { nested, .. } => {
                used.push(BLOCK_SPEC);
                collect_outer(nested, used);
            }
            Spec::BlockList { nested, .. } => {
                used.push(BLOCK_LIST_SPEC);
                collect_outer(nested, used);
            }
            Spec::BlockAttrs { .. } => used.extend([BLOCK_ATTRS_SPEC, TYPE]),
        }
    }
}

/// Encodes `spec` as the `ConfigSpec` bytes for the given Packer flavor.
pub fn encode(spec: &ObjectSpec, flavor: Flavor) -> Vec<u8> {
    let mut used = vec![OBJECT_SPEC];
    collect_outer(spec, &mut used);
    used.sort_unstable();
    used.dedup();
    let defs: Vec<TypeDef> = used.into_iter().map(outer_def).collect();
    let mut body = Vec::new();
    object_body(&mut body, spec, flavor);
    gob::stream(&defs, OBJECT_SPEC, false, &body)
}

fn object_body(out: &mut Vec<u8>, spec: &ObjectSpec, flavor: Flavor) {
    gob::put_uint(out, spec.len() as u64);
    for (name, s) in spec {
        gob::put_bytes(out, name.as_bytes());
        let mut v = Vec::new();
        let mut w = StructWriter::new(&mut v);
        let (iname, id) = match s {
            Spec::Attr { ty, required } => {
                w.string(1, name);
                gob::put_bytes(w.field(2), &cty_type(ty));
                w.bool(3, *required);
                ("*hcldec.AttrSpec", ATTR_SPEC)
            }
            Spec::Block { nested, required } => {
                w.string(1, name);
                nested_object(w.field(2), nested, flavor);
                w.bool(3, *required);
                ("*hcldec.BlockSpec", BLOCK_SPEC)
            }
            Spec::BlockList {
                nested,
                min_items,
                max_items,
            } => {
                w.string(1, name);
                nested_object(w.field(2), nested, flavor);
                w.int(3, *min_items);
                w.int(4, *max_items);
                ("*hcldec.BlockListSpec", BLOCK_LIST_SPEC)
            }
            Spec::BlockAttrs { element, required } => {
                w.string(1, name);
                gob::put_bytes(w.field(2), &cty_type(element));
                w.bool(3, *required);
                ("*hcldec.BlockAttrsSpec", BLOCK_ATTRS_SPEC)
            }
        };
        w.end();
        gob::put_interface(out, iname, id, true, &v);
    }
}

fn nested_object(out: &mut Vec<u8>, spec: &ObjectSpec, flavor: Flavor) {
    let mut body = Vec::new();
    object_body(&mut body, spec, flavor);
    gob::put_interface(out, flavor.object_spec_name(), OBJECT_SPEC, false, &body);
}

// Ids inside each nested `cty.Type` stream.
const GOB_TYPE: i64 = 65;
const PRIMITIVE: i64 = 66;
const LIST: i64 = 67;
const MAP: i64 = 68;
const SET: i64 = 69;
const OBJECT: i64 = 70;
const TUPLE: i64 = 71;
const CTY_TYPE: i64 = 72;
const ATTR_TYPES: i64 = 73;
const ELEM_TYPES: i64 = 74;

fn cty_def(id: i64) -> TypeDef {
    let elem = |name| TypeDef::Struct {
        name,
        id,
        fields: vec![("ElementTypeT", CTY_TYPE)],
    };
    match id {
        GOB_TYPE => TypeDef::Struct {
            name: "gobType",
            id,
            fields: vec![("Version", gob::INT), ("Impl", gob::INTERFACE)],
        },
        PRIMITIVE => TypeDef::Struct {
            name: "primitiveType",
            id,
            fields: vec![("Kind", gob::UINT)],
        },
        LIST => elem("typeList"),
        MAP => elem("typeMap"),
        SET => elem("typeSet"),
        OBJECT => TypeDef::Struct {
            name: "typeObject",
            id,
            fields: vec![("AttrTypes", ATTR_TYPES)],
        },
        TUPLE => TypeDef::Struct {
            name: "typeTuple",
            id,
            fields: vec![("ElemTypes", ELEM_TYPES)],
        },
        CTY_TYPE => TypeDef::GobEncoder { name: "Type", id },
        ATTR_TYPES => TypeDef::Map {
            name: "map[string]cty.Type",
            id,
            key: gob::STRING,
            elem: CTY_TYPE,
        },
        ELEM_TYPES => TypeDef::Slice {
            name: "[]cty.Type",
            id,
            elem: CTY_TYPE,
        },
        _ => unreachable!("no cty type with id {id}"),
    }
}

/// Encodes one `cty.Type` as the complete gob stream its `GobEncode` gives.
pub fn cty_type(ty: &CtyType) -> Vec<u8> {
    let (impl_name, impl_id, deps, body) = match ty {
        CtyType::String | CtyType::Number | CtyType::Bool => {
            let kind = match ty {
                CtyType::String => b'S',
                CtyType::Number => b'N',
                _ => b'B',
            };
            let mut b = Vec::new();
            let mut w = StructWriter::new(&mut b);
            w.uint(1, u64::from(kind));
            w.end();
            ("primitiveType", PRIMITIVE, vec![], b)
        }
        CtyType::List(e) | CtyType::Set(e) | CtyType::Map(e) => {
            let (n, id) = match ty {
                CtyType::List(_) => ("typeList", LIST),
                CtyType::Set(_) => ("typeSet", SET),
                _ => ("typeMap", MAP),
            };
            let mut b = Vec::new();
            let mut w = StructWriter::new(&mut b);
            gob::put_bytes(w.field(1), &cty_type(e));
            w.end();
            (n, id, vec![CTY_TYPE], b)
        }
        CtyType::Object(attrs) => {
            let mut b = Vec::new();
            let mut w = StructWriter::new(&mut b);
            if !attrs.is_empty() {
                let out = w.field(1);
                gob::put_uint(out, attrs.len() as u64);
                for (k, t) in attrs {
                    gob::put_bytes(out, k.as_bytes());
                    gob::put_bytes(out, &cty_type(t));
                }
            }
            w.end();
            ("typeObject", OBJECT, vec![CTY_TYPE, ATTR_TYPES], b)
        }
        CtyType::Tuple(elems) => {
            let mut b = Vec::new();
            let mut w = StructWriter::new(&mut b);
            if !elems.is_empty() {
                let out = w.field(1);
                gob::put_uint(out, elems.len() as u64);
                for t in elems {
                    gob::put_bytes(out, &cty_type(t));
                }
            }
            w.end();
            ("typeTuple", TUPLE, vec![CTY_TYPE, ELEM_TYPES], b)
        }
    };
    let mut defs = vec![cty_def(GOB_TYPE)];
    defs.extend(deps.into_iter().map(cty_def));
    defs.push(cty_def(impl_id));
    let mut gt = Vec::new();
    let mut w = StructWriter::new(&mut gt);
    let name = format!("github.com/zclconf/go-cty/cty.{impl_name}");
    gob::put_interface(w.field(2), &name, impl_id, true, &body);
    w.end();
    gob::stream(&defs, GOB_TYPE, true, &gt)
}

/// A data source's result: an object whose attributes are all strings,
/// as the complete gob stream `cty.Value`'s `GobEncode` gives wrapped in
/// the stream Packer's `Datasource.Execute` client decodes (Packer 1.7 to
/// 1.11, and later ones without `--protobuf`).
pub fn cty_string_object_gob(attrs: &BTreeMap<String, String>) -> Vec<u8> {
    const GOB_VALUE: i64 = 65;
    const TY: i64 = 66;
    const MAP: i64 = 67;
    let ty = CtyType::Object(attrs.keys().map(|k| (k.clone(), CtyType::String)).collect());
    let defs = [
        TypeDef::Struct {
            name: "gobValue",
            id: GOB_VALUE,
            fields: vec![("Version", gob::INT), ("Ty", TY), ("V", gob::INTERFACE)],
        },
        TypeDef::GobEncoder {
            name: "Type",
            id: TY,
        },
        TypeDef::Map {
            name: "map[string]interface {}",
            id: MAP,
            key: gob::STRING,
            elem: gob::INTERFACE,
        },
    ];
    // The object's attributes: a map of interface values holding strings.
    let mut map = Vec::new();
    gob::put_uint(&mut map, attrs.len() as u64);
    for (k, v) in attrs {
        gob::put_bytes(&mut map, k.as_bytes());
        let mut s = Vec::new();
        gob::put_bytes(&mut s, v.as_bytes());
        gob::put_interface(&mut map, "string", gob::STRING, false, &s);
    }
    let mut body = Vec::new();
    let mut w = StructWriter::new(&mut body);
    // Version 0 is the zero value: left out.
    gob::put_bytes(w.field(2), &cty_type(&ty));
    gob::put_interface(w.field(3), "map[string]interface {}", MAP, false, &map);
    w.end();
    let inner = gob::stream(&defs, GOB_VALUE, true, &body);
    let mut outer_body = Vec::new();
    gob::put_bytes(&mut outer_body, &inner);
    gob::stream(
        &[TypeDef::GobEncoder {
            name: "Value",
            id: 65,
        }],
        65,
        false,
        &outer_body,
    )
}

/// The same result as `cty`'s msgpack encoding for a dynamic type (the
/// type as JSON, then the value), which Packer started with `--protobuf`
/// decodes.
pub fn cty_string_object_msgpack(attrs: &BTreeMap<String, String>) -> Vec<u8> {
    let types: serde_json::Map<String, serde_json::Value> = attrs
        .keys()
        .map(|k| (k.clone(), serde_json::Value::from("string")))
        .collect();
    let type_json = serde_json::json!(["object", types]).to_string();
    let value = rmpv::Value::Map(
        attrs
            .iter()
            .map(|(k, v)| (rmpv::Value::from(k.as_str()), rmpv::Value::from(v.as_str())))
            .collect(),
    );
    let doc = rmpv::Value::Array(vec![rmpv::Value::Binary(type_json.into_bytes()), value]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &doc).expect("writing to a Vec cannot fail");
    out
}

/// Appends a protobuf varint.
fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited protobuf field.
fn pb_bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    pb_varint(out, (field << 3) | 2);
    pb_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A spec the protobuf form cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufSpecError {
    /// A cty type with no protobuf form (sets, objects, ...).
    #[error("the protobuf spec has no form for {0:?}")]
    Type(CtyType),
    /// A block of attributes, by the option's name.
    #[error("{0}: the protobuf spec has no block-attributes form")]
    BlockAttrs(String),
}

fn pb_cty(ty: &CtyType) -> Result<Vec<u8>, ProtobufSpecError> {
    let mut out = Vec::new();
    match ty {
        CtyType::String | CtyType::Number | CtyType::Bool => {
            let name = match ty {
                CtyType::String => "cty.String",
                CtyType::Number => "cty.Number",
                _ => "cty.Bool",
            };
            let mut prim = Vec::new();
            pb_bytes(&mut prim, 1, name.as_bytes());
            pb_bytes(&mut out, 1, &prim);
        }
        CtyType::List(e) | CtyType::Map(e) => {
            let mut inner = Vec::new();
            pb_bytes(&mut inner, 1, &pb_cty(e)?);
            pb_bytes(
                &mut out,
                if matches!(ty, CtyType::List(_)) { 2 } else { 3 },
                &inner,
            );
        }
        other => return Err(ProtobufSpecError::Type(other.clone())),
    }
    Ok(out)
}

fn pb_object(spec: &ObjectSpec) -> Result<Vec<u8>, ProtobufSpecError> {
    let mut obj = Vec::new();
    for (name, s) in spec {
        let mut entry = Vec::new();
        pb_bytes(&mut entry, 1, name.as_bytes());
        pb_bytes(&mut entry, 2, &pb_spec(name, s)?);
        pb_bytes(&mut obj, 1, &entry);
    }
    Ok(obj)
}

fn pb_object_spec(spec: &ObjectSpec) -> Result<Vec<u8>, ProtobufSpecError> {
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, &pb_object(spec)?);
    Ok(out)
}

fn pb_spec(name: &str, s: &Spec) -> Result<Vec<u8>, ProtobufSpecError> {
    let mut out = Vec::new();
    match s {
        Spec::Attr { ty, required } => {
            let mut a = Vec::new();
            pb_bytes(&mut a, 1, name.as_bytes());
            pb_bytes(&mut a, 2, &pb_cty(ty)?);
            if *required {
                a.extend_from_slice(&[0x18, 1]);
            }
            pb_bytes(&mut out, 2, &a);
        }
        Spec::Block { nested, required } => {
            let mut b = Vec::new();
            pb_bytes(&mut b, 1, name.as_bytes());
            if *required {
                b.extend_from_slice(&[0x10, 1]);
            }
            pb_bytes(&mut b, 3, &pb_object_spec(nested)?);
            pb_bytes(&mut out, 3, &b);
        }
        Spec::BlockList { nested, .. } => {
            let mut b = Vec::new();
            pb_bytes(&mut b, 1, name.as_bytes());
            pb_bytes(&mut b, 2, &pb_object_spec(nested)?);
            pb_bytes(&mut out, 4, &b);
        }
        Spec::BlockAttrs { .. } => return Err(ProtobufSpecError::BlockAttrs(name.to_string())),
    }
    Ok(out)
}

/// Encodes `spec` as the protobuf `Spec` message (packer-plugin-sdk's
/// `hcl_spec.proto`) that Packer 1.12+ reads when it starts plugins with
/// `--protobuf`.
pub fn encode_protobuf(spec: &ObjectSpec) -> Result<Vec<u8>, ProtobufSpecError> {
    pb_object_spec(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        // The running checkout's folder (cargo sets it when it runs the
        // test), not the one the binary was built in.
        let crate_dir =
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let path = format!("{crate_dir}/testdata/packer-gob/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn attr(ty: CtyType, required: bool) -> Spec {
        Spec::Attr { ty, required }
    }

    fn s() -> CtyType {
        CtyType::String
    }

    #[test]
    fn one_required_string_matches_the_accepted_vector() {
        let spec = vec![("name".to_string(), attr(s(), true))];
        assert_eq!(encode(&spec, Flavor::Vendored), fixture("min_one.gob"));
    }

    #[test]
    fn attrs_of_every_simple_type_and_a_block_match_the_accepted_vector() {
        let spec = vec![
            ("name".to_string(), attr(s(), false)),
            ("memory".to_string(), attr(CtyType::Number, false)),
            ("headless".to_string(), attr(CtyType::Bool, false)),
            (
                "tags".to_string(),
                attr(CtyType::List(Box::new(s())), false),
            ),
            (
                "labels".to_string(),
                attr(CtyType::Map(Box::new(s())), false),
            ),
            (
                "disk".to_string(),
                Spec::Block {
                    nested: vec![
                        ("size".to_string(), attr(CtyType::Number, true)),
                        ("format".to_string(), attr(s(), false)),
                    ],
                    required: false,
                },
            ),
        ];
        assert_eq!(encode(&spec, Flavor::Vendored), fixture("min_full.gob"));
    }

    #[test]
    fn composite_types_and_block_kinds_match_the_accepted_vector() {
        let obj = BTreeMap::from([("a".to_string(), s()), ("b".to_string(), CtyType::Number)]);
        let spec = vec![
            ("s".to_string(), attr(s(), false)),
            ("ls".to_string(), attr(CtyType::Set(Box::new(s())), false)),
            ("o".to_string(), attr(CtyType::Object(obj), false)),
            (
                "eo".to_string(),
                attr(CtyType::Object(BTreeMap::new()), false),
            ),
            (
                "t".to_string(),
                attr(CtyType::Tuple(vec![s(), CtyType::Bool]), false),
            ),
            (
                "lm".to_string(),
                attr(CtyType::List(Box::new(CtyType::Map(Box::new(s())))), false),
            ),
            (
                "bl".to_string(),
                Spec::BlockList {
                    nested: vec![("x".to_string(), attr(s(), false))],
                    min_items: 0,
                    max_items: 2,
                },
            ),
            (
                "ba".to_string(),
                Spec::BlockAttrs {
                    element: s(),
                    required: false,
                },
            ),
            (
                "req".to_string(),
                Spec::Block {
                    nested: vec![("y".to_string(), attr(CtyType::Number, false))],
                    required: true,
                },
            ),
        ];
        assert_eq!(encode(&spec, Flavor::Vendored), fixture("min_types.gob"));
    }

    #[test]
    fn the_protobuf_spec_nests_object_attr_and_cty_type_messages() {
        let spec = vec![("name".to_string(), attr(s(), true))];
        let mut want = vec![0x0a, 0x24, 0x0a, 0x22, 0x0a, 0x04];
        want.extend_from_slice(b"name");
        want.extend_from_slice(&[0x12, 0x1a, 0x12, 0x18, 0x0a, 0x04]);
        want.extend_from_slice(b"name");
        want.extend_from_slice(&[0x12, 0x0e, 0x0a, 0x0c, 0x0a, 0x0a]);
        want.extend_from_slice(b"cty.String");
        want.extend_from_slice(&[0x18, 0x01]);
        assert_eq!(encode_protobuf(&spec).unwrap(), want);
        let list = vec![("l".to_string(), attr(CtyType::List(Box::new(s())), false))];
        let bytes = encode_protobuf(&list).unwrap();
        // Attr.type -> CtyType.list -> CtyList.elementType -> the primitive.
        assert!(
            bytes.windows(4).any(|w| w == [0x12, 0x10, 0x0a, 0x0e]),
            "{bytes:02x?}"
        );
        let set = vec![("x".to_string(), attr(CtyType::Set(Box::new(s())), false))];
        assert!(encode_protobuf(&set).is_err());
    }

    #[test]
    fn a_string_object_in_msgpack_is_the_type_json_then_the_value() {
        let attrs = BTreeMap::from([
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ]);
        let bytes = cty_string_object_msgpack(&attrs);
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let parts = v.as_array().unwrap();
        assert_eq!(parts.len(), 2);
        let ty: serde_json::Value = serde_json::from_slice(parts[0].as_slice().unwrap()).unwrap();
        assert_eq!(
            ty,
            serde_json::json!(["object", {"a": "string", "b": "string"}])
        );
        let map = parts[1].as_map().unwrap();
        assert_eq!(map[0].0.as_str(), Some("a"));
        assert_eq!(map[0].1.as_str(), Some("1"));
        assert_eq!(map[1].1.as_str(), Some("2"));
    }

    #[test]
    fn module_builds_get_the_upstream_object_spec_name() {
        let spec = vec![(
            "b".to_string(),
            Spec::Block {
                nested: vec![],
                required: false,
            },
        )];
        let bytes = encode(&spec, Flavor::Module);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("github.com/hashicorp/hcl/v2/hcldec.ObjectSpec"));
        assert!(!text.contains("vendor/"));
    }
}
