//! The SOAP side of WS-Management: reading the requests a WinRM client
//! sends (MS-WSMV's shell operations) and writing the answers, built as
//! element trees and escaped on output.

use std::fmt::Write as _;

/// SOAP 1.2 envelope.
pub const NS_S: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing.
pub const NS_A: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Management (DMTF).
pub const NS_W: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
/// Microsoft's remote shell.
pub const NS_RSP: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// WS-Transfer.
pub const NS_X: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
/// The WS-Management fault detail.
pub const NS_F: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";

/// The resource URI of the cmd shell.
pub const CMD_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Open a shell.
    Create,
    /// Start a command in a shell.
    Command {
        /// The command and its arguments, joined by spaces.
        line: String,
    },
    /// Collect a command's output.
    Receive {
        /// The command.
        command_id: String,
    },
    /// Send a signal to a command.
    Signal {
        /// The command.
        command_id: String,
        /// The signal's URI.
        code: String,
    },
    /// Close a shell.
    Delete,
    /// Anything else, by its action URI.
    Other(String),
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `a:MessageID`, echoed as `a:RelatesTo`.
    pub message_id: String,
    /// `w:ResourceURI`.
    pub resource_uri: String,
    /// The `ShellId` selector, if any.
    pub shell_id: Option<String>,
    /// What is asked.
    pub operation: Operation,
}

/// Why a body is not a request this server reads.
#[derive(Debug, thiserror::Error)]
#[error("malformed WS-Management request: {0}")]
pub struct BadRequest(pub String);

/// Reads one envelope.
pub fn parse(body: &str) -> Result<Request, BadRequest> {
    let doc = roxmltree::Document::parse(body).map_err(|e| BadRequest(e.to_string()))?;
    let find = |ns: &str, name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .map(|n| n.text().unwrap_or("").trim().to_string())
    };
    let action = find(NS_A, "Action").ok_or_else(|| BadRequest("no a:Action".into()))?;
    let message_id = find(NS_A, "MessageID").unwrap_or_default();
    let resource_uri = find(NS_W, "ResourceURI").unwrap_or_default();
    let shell_id = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_W, "Selector")) && n.attribute("Name") == Some("ShellId"))
        .map(|n| n.text().unwrap_or("").trim().to_string());
    let attr_of = |ns: &str, name: &str, attr: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .and_then(|n| n.attribute(attr))
            .map(str::to_string)
    };
    let shell_action = action.strip_prefix(NS_RSP).unwrap_or("");
    let operation = match (action.as_str(), shell_action) {
        (a, _) if a == format!("{NS_X}/Create") => Operation::Create,
        (a, _) if a == format!("{NS_X}/Delete") => Operation::Delete,
        (_, "/Command") => {
            let command = find(NS_RSP, "Command").unwrap_or_default();
            let args: Vec<String> = doc
                .descendants()
                .filter(|n| n.has_tag_name((NS_RSP, "Arguments")))
                .map(|n| n.text().unwrap_or("").to_string())
                .collect();
            let mut line = command;
            for a in args {
                line.push(' ');
                line.push_str(&a);
            }
            Operation::Command { line }
        }
        (_, "/Receive") => Operation::Receive {
            command_id: attr_of(NS_RSP, "DesiredStream", "CommandId")
                .ok_or_else(|| BadRequest("Receive without rsp:DesiredStream CommandId".into()))?,
        },
        (_, "/Signal") => Operation::Signal {
            command_id: attr_of(NS_RSP, "Signal", "CommandId")
                .ok_or_else(|| BadRequest("Signal without CommandId".into()))?,
            code: find(NS_RSP, "Code").unwrap_or_default(),
        },
        _ => Operation::Other(action.clone()),
    };
    Ok(Request {
        message_id,
        resource_uri,
        shell_id,
        operation,
    })
}

/// An XML element: a prefixed name, attributes, text and children.
#[derive(Debug, Clone, Default)]
pub struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: Option<String>,
    children: Vec<Element>,
}

impl Element {
    /// An empty element named `name` (`prefix:local`).
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_string(),
            ..Element::default()
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &str, value: &str) -> Element {
        self.attrs.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the text content.
    pub fn text(mut self, text: &str) -> Element {
        self.text = Some(text.to_string());
        self
    }

    /// Adds a child.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// Adds children.
    pub fn children(mut self, children: impl IntoIterator<Item = Element>) -> Element {
        self.children.extend(children);
        self
    }

    fn write(&self, out: &mut String) {
        let _ = write!(out, "<{}", self.name);
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}=\"{}\"", escape(v));
        }
        if self.text.is_none() && self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(t) = &self.text {
            out.push_str(&escape(t));
        }
        for c in &self.children {
            c.write(out);
        }
        let _ = write!(out, "</{}>", self.name);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A whole envelope answering `request` with `action` and `body`.
pub fn envelope(request: &Request, action: &str, body: Option<Element>) -> String {
    let header = Element::new("s:Header")
        .child(Element::new("a:Action").text(action))
        .child(Element::new("a:MessageID").text(&format!("uuid:{}", uuid::Uuid::new_v4())))
        .child(
            Element::new("a:To")
                .text("http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"),
        )
        .child(Element::new("a:RelatesTo").text(&request.message_id));
    let env = Element::new("s:Envelope")
        .attr("xml:lang", "en-US")
        .attr("xmlns:s", NS_S)
        .attr("xmlns:a", NS_A)
        .attr("xmlns:w", NS_W)
        .attr("xmlns:rsp", NS_RSP)
        .attr("xmlns:x", NS_X)
        .child(header)
        .child(Element::new("s:Body").children(body));
    let mut out = String::new();
    env.write(&mut out);
    out
}

/// A WS-Management fault, sent with HTTP 500.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// `s:Sender` or `s:Receiver`.
    pub code: &'static str,
    /// The `w:` subcode (`w:TimedOut`, `w:InvalidSelectors`, ...).
    pub subcode: &'static str,
    /// The WSManFault code number.
    pub wsman_code: u32,
    /// The reason text.
    pub reason: &'static str,
}

/// The fault a Receive gets when its command produced nothing within the
/// operation timeout: clients poll again.
pub const TIMED_OUT: Fault = Fault {
    code: "s:Receiver",
    subcode: "w:TimedOut",
    wsman_code: 2150858793,
    reason: "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
};

/// A request naming a shell or command that does not exist.
pub const INVALID_SELECTORS: Fault = Fault {
    code: "s:Sender",
    subcode: "w:InvalidSelectors",
    wsman_code: 2150858843,
    reason: "The request for the Windows Remote Shell with ShellId failed because the shell was not found on the server.",
};

/// An action this server does not implement.
pub const ACTION_NOT_SUPPORTED: Fault = Fault {
    code: "s:Sender",
    subcode: "a:ActionNotSupported",
    wsman_code: 2150858771,
    reason: "The action is not supported by the service.",
};

/// The fault envelope.
pub fn fault(request: &Request, fault: Fault) -> String {
    let body = Element::new("s:Fault")
        .child(
            Element::new("s:Code")
                .child(Element::new("s:Value").text(fault.code))
                .child(
                    Element::new("s:Subcode").child(Element::new("s:Value").text(fault.subcode)),
                ),
        )
        .child(
            Element::new("s:Reason").child(
                Element::new("s:Text")
                    .attr("xml:lang", "en-US")
                    .text(fault.reason),
            ),
        )
        .child(
            Element::new("s:Detail").child(
                Element::new("f:WSManFault")
                    .attr("xmlns:f", NS_F)
                    .attr("Code", &fault.wsman_code.to_string())
                    .attr("Machine", "winrm-standin")
                    .child(Element::new("f:Message").text(fault.reason)),
            ),
        );
    envelope(
        request,
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
        Some(body),
    )
}

/// The answer to Create: the new shell's id, as a selector (what clients
/// read) and as the shell resource.
pub fn created(request: &Request, address: &str, shell_id: &str) -> String {
    let body = Element::new("x:ResourceCreated")
        .child(Element::new("a:Address").text(address))
        .child(
            Element::new("a:ReferenceParameters")
                .child(Element::new("w:ResourceURI").text(CMD_SHELL))
                .child(
                    Element::new("w:SelectorSet").child(
                        Element::new("w:Selector")
                            .attr("Name", "ShellId")
                            .text(shell_id),
                    ),
                ),
        );
    envelope(request, &format!("{NS_X}/CreateResponse"), Some(body))
}

/// The answer to Command.
pub fn command_started(request: &Request, command_id: &str) -> String {
    let body =
        Element::new("rsp:CommandResponse").child(Element::new("rsp:CommandId").text(command_id));
    envelope(request, &format!("{NS_RSP}/CommandResponse"), Some(body))
}

/// One piece of output of a Receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes on stdout.
    Stdout(Vec<u8>),
    /// Bytes on stderr.
    Stderr(Vec<u8>),
}

/// The answer to Receive: output so far, and the exit code once done.
pub fn received(
    request: &Request,
    command_id: &str,
    output: &[Output],
    exit_code: Option<i32>,
) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let stream = |name: &str| {
        Element::new("rsp:Stream")
            .attr("Name", name)
            .attr("CommandId", command_id)
    };
    let mut streams: Vec<Element> = output
        .iter()
        .map(|o| match o {
            Output::Stdout(b) => stream("stdout").text(&b64(b)),
            Output::Stderr(b) => stream("stderr").text(&b64(b)),
        })
        .collect();
    let state = match exit_code {
        Some(code) => {
            streams.push(stream("stdout").attr("End", "true"));
            streams.push(stream("stderr").attr("End", "true"));
            Element::new("rsp:CommandState")
                .attr("CommandId", command_id)
                .attr("State", &format!("{NS_RSP}/CommandState/Done"))
                .child(Element::new("rsp:ExitCode").text(&code.to_string()))
        }
        None => Element::new("rsp:CommandState")
            .attr("CommandId", command_id)
            .attr("State", &format!("{NS_RSP}/CommandState/Running")),
    };
    let body = Element::new("rsp:ReceiveResponse")
        .children(streams)
        .child(state);
    envelope(request, &format!("{NS_RSP}/ReceiveResponse"), Some(body))
}

/// The answer to Signal.
pub fn signalled(request: &Request) -> String {
    envelope(
        request,
        &format!("{NS_RSP}/SignalResponse"),
        Some(Element::new("rsp:SignalResponse")),
    )
}

/// The answer to Delete.
pub fn deleted(request: &Request) -> String {
    envelope(request, &format!("{NS_X}/DeleteResponse"), None)
}
