//! Finding where a key sits in the TOML text, so errors name a line.

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path: a table key or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key of a table.
    Key(String),
    /// An element of an array or array of tables.
    Index(usize),
}

/// Writes a path as a person reads it: `host[1].wake.mac`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The byte offset where `path` is written: its key when present, else
/// the deepest table on the way (where a missing key belongs).
pub fn offset_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<usize> {
    let mut best = None;
    let mut item: Option<&Item> = None;
    let mut table: Option<&Table> = Some(doc.as_table());
    let mut value: Option<&Value> = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if let Some(t) = table {
                    if let Some((key, it)) = t.get_key_value(k) {
                        best = key.span().map(|s| s.start).or(best);
                        item = Some(it);
                        value = None;
                    } else {
                        return best.or(t.span().map(|s| s.start));
                    }
                } else if let Some(Value::InlineTable(t)) = value {
                    let v = t.get(k)?;
                    best = t
                        .key(k)
                        .and_then(|key| key.span())
                        .map(|s| s.start)
                        .or(best);
                    value = Some(v);
                    item = None;
                } else {
                    return best;
                }
            }
            Seg::Index(i) => match (item, value) {
                (Some(Item::ArrayOfTables(a)), _) => {
                    let t = a.get(*i)?;
                    best = t.span().map(|s| s.start).or(best);
                    table = Some(t);
                    item = None;
                    continue;
                }
                (Some(Item::Value(Value::Array(a))), _) | (None, Some(Value::Array(a))) => {
                    let v = a.get(*i)?;
                    best = v.span().map(|s| s.start).or(best);
                    value = Some(v);
                    item = None;
                    table = None;
                    continue;
                }
                _ => return best,
            },
        }
        table = match item {
            Some(Item::Table(t)) => Some(t),
            _ => None,
        };
        if let Some(Item::Value(v)) = item {
            value = Some(v);
        }
    }
    best
}

/// The path of the deepest key whose text holds byte `offset`.
pub fn path_at(doc: &ImDocument<String>, offset: usize) -> Vec<Seg> {
    let mut path = Vec::new();
    walk_table(doc.as_table(), offset, &mut path);
    path
}

fn holds(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset <= s.end)
}

fn walk_table(t: &Table, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (k, it) in t.iter() {
        let key_span = t.key(k).and_then(|key| key.span());
        path.push(Seg::Key(k.to_string()));
        let inside = match it {
            Item::Table(sub) => walk_table(sub, offset, path) || holds(key_span.clone(), offset),
            Item::ArrayOfTables(a) => {
                let mut found = false;
                for (i, sub) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if walk_table(sub, offset, path) || holds(sub.span(), offset) {
                        found = true;
                        break;
                    }
                    path.pop();
                }
                found
            }
            Item::Value(v) => {
                walk_value(v, offset, path)
                    || holds(key_span.clone(), offset)
                    || holds(v.span(), offset)
            }
            Item::None => false,
        };
        if inside {
            return true;
        }
        path.pop();
    }
    false
}

fn walk_value(v: &Value, offset: usize, path: &mut Vec<Seg>) -> bool {
    match v {
        Value::InlineTable(t) => {
            for (k, sub) in t.iter() {
                path.push(Seg::Key(k.to_string()));
                let key_span = t.key(k).and_then(|key| key.span());
                if walk_value(sub, offset, path)
                    || holds(key_span, offset)
                    || holds(sub.span(), offset)
                {
                    return true;
                }
                path.pop();
            }
            false
        }
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if walk_value(sub, offset, path) || holds(sub.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}
