//! The parts of Go's `encoding/gob` wire format that Packer decodes from a
//! plugin: type definitions, structs, maps, slices, interfaces and
//! `GobEncoder` payloads.
//!
//! Streams are written in one canonical layout: every type definition in
//! its own message first, then one value message. Go's decoder accepts any
//! order in which a type is defined before it is used.

/// Type id of Go's `bool`.
pub const BOOL: i64 = 1;
/// Type id of Go's `int` (all signed integers).
pub const INT: i64 = 2;
/// Type id of Go's `uint` (all unsigned integers, bytes included).
pub const UINT: i64 = 3;
/// Type id of Go's `string`.
pub const STRING: i64 = 6;
/// Type id of an interface value.
pub const INTERFACE: i64 = 8;

/// Appends a gob unsigned integer.
pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let n = bytes.len() - skip;
    out.push((0x100 - n) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a gob signed integer (zig-zag with the sign in the low bit).
pub fn put_int(out: &mut Vec<u8>, v: i64) {
    let u = if v < 0 {
        ((!v as u64) << 1) | 1
    } else {
        (v as u64) << 1
    };
    put_uint(out, u);
}

/// Appends a gob string or byte slice: length, then the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Writes the fields of one struct value, skipping zero values as Go does.
pub struct StructWriter<'a> {
    out: &'a mut Vec<u8>,
    last: u64,
}

impl<'a> StructWriter<'a> {
    /// Starts a struct value in `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        StructWriter { out, last: 0 }
    }

    /// Starts field number `field` (1-based) and returns the buffer to
    /// write its value into.
    pub fn field(&mut self, field: u64) -> &mut Vec<u8> {
        put_uint(self.out, field - self.last);
        self.last = field;
        self.out
    }

    /// A string field, omitted when empty.
    pub fn string(&mut self, field: u64, v: &str) {
        if !v.is_empty() {
            put_bytes(self.field(field), v.as_bytes());
        }
    }

    /// An int field, omitted when zero.
    pub fn int(&mut self, field: u64, v: i64) {
        if v != 0 {
            put_int(self.field(field), v);
        }
    }

    /// A uint field, omitted when zero.
    pub fn uint(&mut self, field: u64, v: u64) {
        if v != 0 {
            put_uint(self.field(field), v);
        }
    }

    /// A bool field, omitted when false.
    pub fn bool(&mut self, field: u64, v: bool) {
        if v {
            put_uint(self.field(field), 1);
        }
    }

    /// Ends the struct.
    pub fn end(self) {
        self.out.push(0);
    }
}

/// One type definition as sent on the wire (`wireType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDef {
    /// A struct with named fields, each of a type id.
    Struct {
        /// Go's type name.
        name: &'static str,
        /// Our id for it (>= 65).
        id: i64,
        /// Field names and type ids, in declaration order.
        fields: Vec<(&'static str, i64)>,
    },
    /// A map type.
    Map {
        /// Go's type name.
        name: &'static str,
        /// Our id for it.
        id: i64,
        /// Key type id.
        key: i64,
        /// Element type id.
        elem: i64,
    },
    /// A slice type.
    Slice {
        /// Go's type name.
        name: &'static str,
        /// Our id for it.
        id: i64,
        /// Element type id.
        elem: i64,
    },
    /// A type that encodes itself (`GobEncoder`): its values are byte strings.
    GobEncoder {
        /// Go's type name.
        name: &'static str,
        /// Our id for it.
        id: i64,
    },
}

impl TypeDef {
    /// The id this definition introduces.
    pub fn id(&self) -> i64 {
        match self {
            TypeDef::Struct { id, .. }
            | TypeDef::Map { id, .. }
            | TypeDef::Slice { id, .. }
            | TypeDef::GobEncoder { id, .. } => *id,
        }
    }

    /// Whether values of this type are structs (which go without the
    /// leading zero byte of other top-level values).
    pub fn is_struct(&self) -> bool {
        matches!(self, TypeDef::Struct { .. })
    }

    fn common(out: &mut Vec<u8>, name: &str, id: i64) {
        let mut c = StructWriter::new(out);
        c.string(1, name);
        c.int(2, id);
        c.end();
    }

    /// Appends this definition as one complete message.
    pub fn write_message(&self, stream: &mut Vec<u8>) {
        let mut m = Vec::new();
        put_int(&mut m, -self.id());
        let mut wire = StructWriter::new(&mut m);
        match self {
            TypeDef::Struct { name, id, fields } => {
                let out = wire.field(3);
                let mut st = StructWriter::new(out);
                Self::common(st.field(1), name, *id);
                let list = st.field(2);
                put_uint(list, fields.len() as u64);
                for (fname, fid) in fields {
                    let mut f = StructWriter::new(list);
                    f.string(1, fname);
                    f.int(2, *fid);
                    f.end();
                }
                st.end();
            }
            TypeDef::Map {
                name,
                id,
                key,
                elem,
            } => {
                let out = wire.field(4);
                let mut mt = StructWriter::new(out);
                Self::common(mt.field(1), name, *id);
                mt.int(2, *key);
                mt.int(3, *elem);
                mt.end();
            }
            TypeDef::Slice { name, id, elem } => {
                let out = wire.field(2);
                let mut sl = StructWriter::new(out);
                Self::common(sl.field(1), name, *id);
                sl.int(2, *elem);
                sl.end();
            }
            TypeDef::GobEncoder { name, id } => {
                let out = wire.field(5);
                let mut ge = StructWriter::new(out);
                Self::common(ge.field(1), name, *id);
                ge.end();
            }
        }
        wire.end();
        put_bytes(stream, &m);
    }
}

/// Builds a complete stream: the definitions, then one value of the type
/// `value_type` whose encoded body is `body`.
pub fn stream(defs: &[TypeDef], value_type: i64, value_is_struct: bool, body: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    for d in defs {
        d.write_message(&mut s);
    }
    let mut m = Vec::new();
    put_int(&mut m, value_type);
    if !value_is_struct {
        m.push(0);
    }
    m.extend_from_slice(body);
    put_bytes(&mut s, &m);
    s
}

/// Appends an interface value holding a concrete value registered as
/// `name` with type id `type_id`.
pub fn put_interface(out: &mut Vec<u8>, name: &str, type_id: i64, is_struct: bool, body: &[u8]) {
    put_bytes(out, name.as_bytes());
    put_int(out, type_id);
    let len = body.len() + usize::from(!is_struct);
    put_uint(out, len as u64);
    if !is_struct {
        out.push(0);
    }
    out.extend_from_slice(body);
}

/// The stream Packer's communicator client reads from a command's response
/// stream: `CommandFinished{ExitStatus int}`.
pub fn command_finished(exit_status: i64) -> Vec<u8> {
    let def = TypeDef::Struct {
        name: "CommandFinished",
        id: 65,
        fields: vec![("ExitStatus", INT)],
    };
    let mut body = Vec::new();
    let mut w = StructWriter::new(&mut body);
    w.int(1, exit_status);
    w.end();
    stream(&[def], 65, true, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uints_use_one_byte_below_128_and_a_negated_count_above() {
        let mut v = Vec::new();
        put_uint(&mut v, 127);
        put_uint(&mut v, 128);
        put_uint(&mut v, 0x1234);
        assert_eq!(v, [0x7f, 0xff, 0x80, 0xfe, 0x12, 0x34]);
    }

    #[test]
    fn ints_zigzag_with_the_sign_in_the_low_bit() {
        let mut v = Vec::new();
        put_int(&mut v, -65);
        put_int(&mut v, 65);
        put_int(&mut v, 2);
        assert_eq!(v, [0xff, 0x81, 0xff, 0x82, 0x04]);
    }

    #[test]
    fn command_finished_matches_go_for_zero_and_nonzero_status() {
        // What Go's encoder writes for CommandFinished{0} and {3}, ids aside.
        let zero = command_finished(0);
        assert_eq!(
            zero,
            [
                0x2c, 0xff, 0x81, 0x03, 0x01, 0x01, 0x0f, b'C', b'o', b'm', b'm', b'a', b'n', b'd',
                b'F', b'i', b'n', b'i', b's', b'h', b'e', b'd', 0x01, 0xff, 0x82, 0x00, 0x01, 0x01,
                0x01, 0x0a, b'E', b'x', b'i', b't', b'S', b't', b'a', b't', b'u', b's', 0x01, 0x04,
                0x00, 0x00, 0x00, 0x03, 0xff, 0x82, 0x00
            ]
        );
        let three = command_finished(3);
        assert!(three.ends_with(&[0x05, 0xff, 0x82, 0x01, 0x06, 0x00]));
    }
}
