//! Users' XSLT stylesheets for the domain XML (`xslt`): checked so that
//! they can only transform the domain XML, then run with `xsltproc`.
//!
//! A stylesheet comes from configuration (Terraform's `xml { xslt }`, a
//! launcher template, the Packer builder's `domain_xslt`) and runs in the
//! program that applies it, the launcher as root. Whatever it reads ends
//! up in the domain XML, which every local user can read back with
//! `virsh -r dumpxml`, or in an error that reaches logs and job notes.
//!
//! Why a check on the parsed stylesheet: `xsltproc`'s `--nonet --nowrite
//! --nomkdir` map to libxslt's security settings for the network and for
//! writes; none of its options forbids reading files. libxslt's own
//! file-read setting is reachable only through its C API, which would
//! put libxml2's global state into the provider, the launcher and the
//! builder, and it would still not cover entities, which libxml2
//! substitutes while it parses the stylesheet (xsltproc asks it to).
//! Taking file access away from the process instead (a mount namespace,
//! Landlock) needs privileges or kernel features a host may lack. So the
//! stylesheet is parsed here, by the same rules as XML everywhere in the
//! project, and refused unless all it can do is compute from its input:
//!
//! - no DOCTYPE, so no entity can be declared;
//! - no `xsl:include`, `xsl:import` or `<?xml-stylesheet?>` (xsltproc
//!   loads and runs the stylesheet such an instruction names);
//! - no extension elements (`extension-element-prefixes`);
//! - function calls only from a list of those that compute: XPath 1.0's,
//!   XSLT 1.0's without `document()`, and EXSLT's common, math, sets,
//!   strings and dates-and-times. A list of what is allowed rather than
//!   of what is not: `dyn:evaluate()` and `saxon:evaluate()` build a
//!   `document()` call at run time from strings, and a newer libxslt may
//!   register more functions;
//! - no encoding declaration but UTF-8: libxml2 honours it (UTF-7 turns
//!   `+ADw-` into `<`) and would read other markup than the text checked.
//!
//! The transformed XML is parsed too and refused with a DOCTYPE, so what
//! reaches libvirt declares no entities either, whatever its parser does.

use std::io::Write;
use std::process::{Command, Stdio};

use roxmltree::{Node, NodeType, ParsingOptions};

use super::error::{Error, Result};

/// The XSLT namespace.
const XSLT_NS: &str = "http://www.w3.org/1999/XSL/Transform";

/// Functions callable without a prefix: XPath 1.0's and XSLT 1.0's, but
/// not `document()`, which reads files.
const CORE_FUNCTIONS: &[&str] = &[
    // XPath 1.0
    "last",
    "position",
    "count",
    "id",
    "local-name",
    "namespace-uri",
    "name",
    "string",
    "concat",
    "starts-with",
    "contains",
    "substring-before",
    "substring-after",
    "substring",
    "string-length",
    "normalize-space",
    "translate",
    "boolean",
    "not",
    "true",
    "false",
    "lang",
    "number",
    "sum",
    "floor",
    "ceiling",
    "round",
    // XSLT 1.0
    "key",
    "format-number",
    "current",
    "generate-id",
    "system-property",
    "element-available",
    "function-available",
    "unparsed-entity-uri",
];

/// Names that a `(` may follow without being a function call: node type
/// tests, and operators before a parenthesised operand.
const NOT_CALLS: &[&str] = &[
    "node",
    "text",
    "comment",
    "processing-instruction",
    "and",
    "or",
    "div",
    "mod",
];

/// EXSLT modules whose functions only compute.
const EXSLT_MODULES: &[&str] = &[
    "http://exslt.org/common",
    "http://exslt.org/math",
    "http://exslt.org/sets",
    "http://exslt.org/strings",
    "http://exslt.org/dates-and-times",
];

/// Attributes of XSLT elements that hold an expression or a pattern.
const EXPRESSION_ATTRIBUTES: &[&str] =
    &["select", "test", "match", "use", "value", "count", "from"];

/// What every refusal ends with: what a stylesheet may do instead.
const ONLY_TRANSFORM: &str = "a stylesheet here may only transform the domain XML, not read files";

/// Why an element of a stylesheet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    /// `xsl:include` or `xsl:import` (the element's local name).
    #[error("xsl:{0} reads another stylesheet file, and {ONLY_TRANSFORM}: copy what it holds into this stylesheet", ONLY_TRANSFORM = ONLY_TRANSFORM)]
    ReadsStylesheet(String),
    /// `extension-element-prefixes` declared.
    #[error("extension elements (extension-element-prefixes) are not supported, as {ONLY_TRANSFORM}: use XSLT 1.0 elements", ONLY_TRANSFORM = ONLY_TRANSFORM)]
    ExtensionElements,
    /// A `document()` call.
    #[error("document() reads files, and {ONLY_TRANSFORM}", ONLY_TRANSFORM = ONLY_TRANSFORM)]
    Document,
    /// A call of a function not on the list (its name as written).
    #[error("{0}() is not a function a stylesheet may call here, as {ONLY_TRANSFORM}: use those of XPath 1.0 and XSLT 1.0 but document(), and EXSLT's common, math, sets, strings and dates-and-times", ONLY_TRANSFORM = ONLY_TRANSFORM)]
    Function(String),
}

/// A stylesheet that can only transform its input (see the module
/// documentation for what that rules out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stylesheet {
    text: String,
}

impl Stylesheet {
    /// Parses and checks a stylesheet given as `xslt`.
    pub fn parse(text: &str) -> Result<Stylesheet> {
        check_encoding(text)?;
        let opts = ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
            roxmltree::Error::DtdDetected => refused(format!(
                "it has a DOCTYPE; entities declared there could copy host files into the domain XML, and {ONLY_TRANSFORM}: remove the DOCTYPE and write the text out"
            )),
            e => refused(format!("it is not well-formed XML: {e}")),
        })?;
        for node in doc.descendants() {
            let at = |message: String| {
                let pos = doc.text_pos_at(node.range().start);
                refused(format!("line {}: {message}", pos.row))
            };
            match node.node_type() {
                NodeType::PI
                    if node
                        .pi()
                        .is_some_and(|pi| pi.target.eq_ignore_ascii_case("xml-stylesheet")) =>
                {
                    return Err(at(format!(
                        "<?xml-stylesheet?> makes xsltproc load the stylesheet it names, and {ONLY_TRANSFORM}: remove it"
                    )));
                }
                NodeType::Element => check_element(node).map_err(|r| at(r.to_string()))?,
                _ => {}
            }
        }
        Ok(Stylesheet {
            text: text.to_string(),
        })
    }

    /// Runs the stylesheet over `xml` with `xsltproc`.
    ///
    /// Besides the checks, it runs with no network and no file writes
    /// (`--nonet --nowrite --nomkdir`), from a private folder (mode 0700,
    /// a random name) removed afterwards.
    pub fn apply(&self, xml: &str) -> Result<String> {
        let out = self.run_xsltproc(xml)?;
        check_encoding(&out).map_err(|_| refused_output("an encoding other than UTF-8"))?;
        let opts = ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        };
        match roxmltree::Document::parse_with_options(&out, opts) {
            Err(roxmltree::Error::DtdDetected) => Err(refused_output(
                "a DOCTYPE (from xsl:output doctype-system or doctype-public, or disable-output-escaping)",
            )),
            Err(e) => Err(Error::Invalid {
                field: "xslt",
                message: format!("the transformed XML is not well-formed: {e}"),
            }),
            Ok(_) => Ok(out),
        }
    }

    fn run_xsltproc(&self, xml: &str) -> Result<String> {
        let dir = tempfile::Builder::new()
            .prefix("kvmhost-xslt-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let sheet = dir.path().join("style.xsl");
        let result = (|| {
            std::fs::write(&sheet, &self.text).map_err(|source| Error::Io {
                path: sheet.clone(),
                source,
            })?;
            let mut child = Command::new("xsltproc")
                .args(["--nonet", "--nowrite", "--nomkdir"])
                .arg(&sheet)
                .arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| Error::Io {
                    path: "xsltproc".into(),
                    source,
                })?;
            let mut stdin = child.stdin.take().expect("stdin was piped");
            let input = xml.to_string();
            let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
            let out = child.wait_with_output().map_err(|source| Error::Io {
                path: "xsltproc".into(),
                source,
            })?;
            let _ = writer.join();
            if !out.status.success() {
                return Err(Error::Invalid {
                    field: "xslt",
                    message: format!(
                        "xsltproc rejected the stylesheet: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            String::from_utf8(out.stdout).map_err(|_| Error::Invalid {
                field: "xslt",
                message: "the transformed XML is not UTF-8".into(),
            })
        })();
        drop(dir);
        result
    }
}

fn refused(message: String) -> Error {
    Error::Invalid {
        field: "xslt",
        message,
    }
}

fn refused_output(what: &str) -> Error {
    refused(format!(
        "the stylesheet wrote {what} into the domain XML, which libvirt would read with it; write plain XML"
    ))
}

/// Refuses an XML declaration naming an encoding other than UTF-8: the
/// text is handed on as UTF-8, and one read otherwise is not what was
/// checked.
fn check_encoding(text: &str) -> Result<()> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text.strip_prefix("<?xml") else {
        return Ok(());
    };
    if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return Ok(());
    }
    let decl = &rest[..rest.find("?>").unwrap_or(rest.len())];
    let Some(at) = decl.find("encoding") else {
        return Ok(());
    };
    let value = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')
        .map(str::trim_start)
        .and_then(|v| {
            let quote = v.chars().next().filter(|q| *q == '"' || *q == '\'')?;
            let v = &v[1..];
            Some(&v[..v.find(quote)?])
        });
    match value {
        Some(v) if v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8") => Ok(()),
        Some(v) => Err(refused(format!(
            "its XML declaration names the encoding '{v}'; it is read as UTF-8: write encoding=\"UTF-8\" or leave the encoding out"
        ))),
        None => Err(refused(
            "its XML declaration has an encoding that cannot be read: write encoding=\"UTF-8\" or leave the encoding out".into(),
        )),
    }
}

/// Checks one element: what it is and what its attributes compute.
fn check_element(e: Node) -> std::result::Result<(), Refusal> {
    let tag = e.tag_name();
    let xslt = tag.namespace() == Some(XSLT_NS);
    if xslt && matches!(tag.name(), "include" | "import") {
        return Err(Refusal::ReadsStylesheet(tag.name().to_string()));
    }
    // The attribute is unprefixed on xsl:stylesheet and in the XSLT
    // namespace elsewhere. libxslt counts a namespace declared so
    // anywhere as extension elements' everywhere, so none is allowed.
    let declares_extensions = if xslt {
        matches!(tag.name(), "stylesheet" | "transform")
            && e.has_attribute("extension-element-prefixes")
    } else {
        e.has_attribute((XSLT_NS, "extension-element-prefixes"))
    };
    if declares_extensions {
        return Err(Refusal::ExtensionElements);
    }
    for a in e.attributes() {
        // Attributes in a namespace are never evaluated: XSLT's own on
        // literal result elements (xsl:use-attribute-sets) name things.
        if a.namespace().is_some() {
            continue;
        }
        let value = a.value();
        if xslt {
            // Every attribute of an XSLT element is read as an expression,
            // those that are not one as an attribute value template too:
            // a quote in the text around `{...}` must not hide a call.
            check_expression(e, value)?;
            if !EXPRESSION_ATTRIBUTES.contains(&a.name()) {
                check_template(e, value)?;
            }
        } else {
            check_template(e, value)?;
        }
    }
    Ok(())
}

/// Checks the expressions inside an attribute value template: the parts
/// in `{...}`, with `{{` and `}}` standing for braces, and a `}` inside a
/// string literal not ending the expression (as libxslt reads them).
fn check_template(e: Node, value: &str) -> std::result::Result<(), Refusal> {
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(literal) = after.strip_prefix('{') {
            rest = literal;
            continue;
        }
        let mut quote = None;
        let end = after
            .char_indices()
            .find(|&(_, c)| match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                    false
                }
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    false
                }
                None => c == '}',
            })
            .map_or(after.len(), |(i, _)| i);
        check_expression(e, &after[..end])?;
        rest = after.get(end + 1..).unwrap_or("");
    }
    Ok(())
}

/// Checks every function an XPath expression calls against the allowed
/// ones; prefixes resolve on `e`, as libxslt resolves them.
fn check_expression(e: Node, expr: &str) -> std::result::Result<(), Refusal> {
    for call in function_calls(expr) {
        let allowed = match call.split_once(':') {
            None => CORE_FUNCTIONS.contains(&call) || NOT_CALLS.contains(&call),
            Some((prefix, _)) => e
                .lookup_namespace_uri(Some(prefix))
                .is_some_and(|uri| EXSLT_MODULES.contains(&uri)),
        };
        if allowed {
            continue;
        }
        return Err(if call == "document" {
            Refusal::Document
        } else {
            Refusal::Function(call.to_string())
        });
    }
    Ok(())
}

/// The names in `expr` that a `(` follows, outside string literals: every
/// function call, and node type tests and operators besides. A name is a
/// run of name characters, two of them joined by one `:`; anything before
/// its first letter (`1.5`, `.`) is dropped. Any character outside ASCII
/// counts as a name character, so a run read differently here than by
/// libxml2 is only ever longer, a name on no list.
fn function_calls(expr: &str) -> Vec<&str> {
    fn name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || !c.is_ascii()
    }
    let mut calls = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '\'' || c == '"' {
            for (_, d) in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            continue;
        }
        if !name_char(c) {
            continue;
        }
        let mut end = start + c.len_utf8();
        let mut joined = false;
        while let Some(&(i, d)) = chars.peek() {
            let next_is_name = expr[i + d.len_utf8()..]
                .chars()
                .next()
                .is_some_and(name_char);
            if name_char(d) || (d == ':' && !joined && next_is_name) {
                joined |= d == ':';
                end = i + d.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let word = &expr[start..end];
        let name = word.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
        let before_paren = expr[end..]
            .trim_start_matches([' ', '\t', '\r', '\n'])
            .starts_with('(');
        if before_paren && !name.is_empty() {
            calls.push(name);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(body: &str) -> String {
        format!(
            r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:exsl="http://exslt.org/common" xmlns:str="http://exslt.org/strings"
    xmlns:dyn="http://exslt.org/dynamic" xmlns:saxon="http://icl.com/saxon">
  <xsl:output omit-xml-declaration="yes"/>
  {body}
</xsl:stylesheet>"#
        )
    }

    fn refusal(text: &str) -> String {
        match Stylesheet::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn calls_are_found_outside_strings_and_across_whitespace() {
        assert_eq!(
            function_calls("concat('document(x)', \"a(b)\") and not (x) or (count(a:b/c))"),
            ["concat", "not", "or", "count"]
        );
        assert_eq!(function_calls("exsl:node-set($v)/x"), ["exsl:node-set"]);
        assert_eq!(function_calls("child::node()|@x|text()"), ["node", "text"]);
        assert_eq!(function_calls("1.5*(2)+ 3-document ('x')"), ["document"]);
        assert_eq!(function_calls("a::document('x')"), ["document"]);
        assert_eq!(
            function_calls("'unterminated document("),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_stylesheet_that_only_computes_is_accepted() {
        let text = sheet(
            r#"<xsl:key name="k" match="disk" use="@device"/>
  <xsl:template match="node()|@*"><xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy></xsl:template>
  <xsl:template match="/domain/devices[count(key('k', 'disk')) &gt; 0 and not(interface)]">
    <xsl:variable name="t"><a>x</a></xsl:variable>
    <devices n="{count(exsl:node-set($t)/a)}" s="{{literal}}" q="it's {str:padding(2, '}')}">
      <xsl:attribute name="{concat('x', 'y')}">1</xsl:attribute>
      <xsl:copy-of select="node()"/>
    </devices>
  </xsl:template>"#,
        );
        Stylesheet::parse(&text).unwrap();
        let with_decl = format!("<?xml version='1.0' encoding='utf-8'?>\n{}", sheet(""));
        Stylesheet::parse(&with_decl).unwrap();
    }

    #[test]
    fn a_function_that_evaluates_strings_is_refused() {
        for call in [
            "dyn:evaluate(concat('docu', 'ment(\"/etc/hostname\")'))",
            "saxon:evaluate('1')",
        ] {
            let err = refusal(&sheet(&format!(
                r#"<xsl:template match="/"><xsl:copy-of select="{}"/></xsl:template>"#,
                call.replace('"', "&quot;")
            )));
            let name = call.split('(').next().unwrap();
            assert!(
                err.starts_with("invalid xslt: line 5: ") && err.contains(&format!("{name}()")),
                "{err}"
            );
        }
    }

    #[test]
    fn document_is_refused_wherever_an_expression_is_evaluated() {
        for body in [
            r#"<xsl:template match="/"><d a="it's {document('/x')}"/></xsl:template>"#,
            r#"<xsl:template match="/"><xsl:element name="a{'}'}{document('/x')}"/></xsl:template>"#,
            r#"<xsl:variable name="v" select="document('/x')"/>"#,
            r#"<xsl:template match="/"><xsl:if test="document('/x')"/></xsl:template>"#,
            r#"<xsl:template match="/"><xsl:for-each select="/"><xsl:sort select="document('/x')"/></xsl:for-each></xsl:template>"#,
        ] {
            let err = refusal(&sheet(body));
            assert!(err.contains("document() reads files"), "{body}: {err}");
        }
    }

    #[test]
    fn what_makes_xsltproc_load_another_file_is_refused() {
        let include = refusal(&sheet(r#"<xsl:include href="/etc/other.xsl"/>"#));
        assert!(
            include.contains("xsl:include reads another stylesheet file"),
            "{include}"
        );
        let import = refusal(&sheet(r#"<xsl:import href="other.xsl"/>"#));
        assert!(import.contains("xsl:import"), "{import}");
        let pi = refusal(&format!(
            "<?xml-stylesheet type=\"text/xsl\" href=\"/etc/other.xsl\"?>\n{}",
            sheet("")
        ));
        assert!(pi.contains("<?xml-stylesheet?>"), "{pi}");
    }

    #[test]
    fn extension_elements_are_refused() {
        let text = r#"<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">
  <xsl:template match="/"><exsl:document href="/tmp/x"><x/></exsl:document></xsl:template>
</xsl:stylesheet>"#;
        assert!(refusal(text).contains("extension-element-prefixes"));
        let literal = sheet(
            r#"<xsl:template match="/"><d xsl:extension-element-prefixes="exsl"/></xsl:template>"#,
        );
        assert!(refusal(&literal).contains("extension-element-prefixes"));
    }

    #[test]
    fn an_encoding_other_than_utf8_is_refused() {
        // In UTF-7, libxml2 reads `+ADw-` as `<`: markup this check would
        // see as text.
        let text = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-7\"?>\n{}",
            sheet("<xsl:template match=\"/\"><d>+ADw-xsl:copy-of select=+ACI-document('/x')+ACI-/+AD4-</d></xsl:template>")
        );
        let err = refusal(&text);
        assert!(err.contains("names the encoding 'UTF-7'"), "{err}");
    }

    #[test]
    fn text_that_is_not_xml_is_refused_as_such() {
        let err = refusal("not a stylesheet");
        assert!(
            err.starts_with("invalid xslt: it is not well-formed XML: "),
            "{err}"
        );
    }

    #[test]
    fn a_doctype_in_the_result_is_refused() {
        let text = sheet(
            r#"<xsl:template match="/"><xsl:text disable-output-escaping="yes">&lt;!DOCTYPE domain [&lt;!ENTITY t SYSTEM "file:///etc/hostname"&gt;]&gt;</xsl:text><domain/></xsl:template>"#,
        );
        let err = Stylesheet::parse(&text)
            .unwrap()
            .apply("<domain/>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrote a DOCTYPE"), "{err}");
        let system = sheet(
            r#"<xsl:output doctype-system="file:///etc/x.dtd"/><xsl:template match="/"><domain/></xsl:template>"#,
        );
        let err = Stylesheet::parse(&system)
            .unwrap()
            .apply("<domain/>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrote a DOCTYPE"), "{err}");
    }
}
