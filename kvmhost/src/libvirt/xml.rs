//! Small helpers to write and read libvirt XML.

use super::error::Error;

/// Escapes text for use inside an XML attribute or element.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Parses a document, naming `context` in the error.
pub(crate) fn parse<'a>(context: &str, text: &'a str) -> Result<roxmltree::Document<'a>, Error> {
    roxmltree::Document::parse(text).map_err(|e| Error::Xml {
        context: context.to_string(),
        message: e.to_string(),
    })
}

/// The first child element called `name`.
pub(crate) fn child<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// All child elements called `name`.
pub(crate) fn children<'a, 'i: 'a>(
    node: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// Text of the first child element called `name`, trimmed.
pub(crate) fn child_text(node: roxmltree::Node, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}

/// Attribute `attr` of the first child element called `name`.
pub(crate) fn child_attr(node: roxmltree::Node, name: &str, attr: &str) -> Option<String> {
    child(node, name)
        .and_then(|c| c.attribute(attr))
        .map(str::to_string)
}

/// Converts a libvirt size (`<memory unit='KiB'>`) to bytes.
pub(crate) fn to_bytes(value: u64, unit: Option<&str>) -> Option<u64> {
    let mult: u64 = match unit.unwrap_or("B") {
        "b" | "B" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1000u64.pow(4),
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(mult)
}

/// Reads an element holding a size with an optional `unit` attribute.
pub(crate) fn size_of(node: roxmltree::Node, name: &str, default_unit: &str) -> Option<u64> {
    let n = child(node, name)?;
    let v: u64 = n.text()?.trim().parse().ok()?;
    to_bytes(v, Some(n.attribute("unit").unwrap_or(default_unit)))
}
