//! The WS-Management messages of a remote cmd shell (MS-WSMV): the
//! envelopes a client sends, and what it reads from the answers.

/// SOAP 1.2.
const NS_S: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing.
const NS_A: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WS-Management.
const NS_W: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
/// Microsoft's WS-Management extensions.
const NS_P: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
/// The remote shell.
const NS_RSP: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// WS-Transfer.
const NS_X: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
/// The WSManFault detail.
const NS_F: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
/// The cmd shell's resource.
const CMD_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";

/// How long the server may hold an operation (a Receive with nothing to
/// report): the WinRM client library's default. Packer's communicator
/// sends `winrm_timeout` there for commands (PT3M for downloads); a short
/// one costs only a poll a minute and lets a lost connection show within
/// [`super::REQUEST_TIMEOUT`] instead of `winrm_timeout`.
pub const OPERATION_TIMEOUT: &str = "PT60S";
/// The largest answer we take, as Packer's client asks.
pub const MAX_ENVELOPE_SIZE: u32 = 153600;
/// The WSManFault code of an operation that outlived OperationTimeout.
pub const TIMED_OUT_CODE: u64 = 2150858793;

/// A request to send.
pub enum Message<'a> {
    /// Open a cmd shell.
    Create,
    /// Run a command line in a shell.
    Command {
        /// The shell.
        shell: &'a str,
        /// The command line.
        line: &'a str,
    },
    /// Collect output.
    Receive {
        /// The shell.
        shell: &'a str,
        /// The command.
        command: &'a str,
    },
    /// End a command.
    Terminate {
        /// The shell.
        shell: &'a str,
        /// The command.
        command: &'a str,
    },
    /// Close a shell.
    Delete {
        /// The shell.
        shell: &'a str,
    },
}

impl Message<'_> {
    /// The operation's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Create => "Create",
            Message::Command { .. } => "Command",
            Message::Receive { .. } => "Receive",
            Message::Terminate { .. } => "Signal",
            Message::Delete { .. } => "Delete",
        }
    }

    fn action(&self) -> String {
        match self {
            Message::Create => format!("{NS_X}/Create"),
            Message::Delete { .. } => format!("{NS_X}/Delete"),
            Message::Command { .. } => format!("{NS_RSP}/Command"),
            Message::Receive { .. } => format!("{NS_RSP}/Receive"),
            Message::Terminate { .. } => format!("{NS_RSP}/Signal"),
        }
    }

    fn shell(&self) -> Option<&str> {
        match self {
            Message::Create => None,
            Message::Command { shell, .. }
            | Message::Receive { shell, .. }
            | Message::Terminate { shell, .. }
            | Message::Delete { shell } => Some(shell),
        }
    }

    /// The envelope, addressed to `url`.
    pub fn envelope(&self, url: &str) -> String {
        let mut x = Xml::default();
        x.open(
            "s:Envelope",
            &[
                ("xmlns:s", NS_S),
                ("xmlns:a", NS_A),
                ("xmlns:w", NS_W),
                ("xmlns:p", NS_P),
                ("xmlns:rsp", NS_RSP),
            ],
        );
        x.open("s:Header", &[]);
        x.leaf("a:To", &[], url);
        x.open("a:ReplyTo", &[]);
        x.leaf(
            "a:Address",
            &[("s:mustUnderstand", "true")],
            "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous",
        );
        x.close("a:ReplyTo");
        x.leaf("a:Action", &[("s:mustUnderstand", "true")], &self.action());
        x.leaf(
            "w:MaxEnvelopeSize",
            &[("s:mustUnderstand", "true")],
            &MAX_ENVELOPE_SIZE.to_string(),
        );
        x.leaf(
            "a:MessageID",
            &[],
            &format!("uuid:{}", uuid::Uuid::new_v4()),
        );
        x.leaf(
            "w:Locale",
            &[("xml:lang", "en-US"), ("s:mustUnderstand", "false")],
            "",
        );
        x.leaf(
            "p:DataLocale",
            &[("xml:lang", "en-US"), ("s:mustUnderstand", "false")],
            "",
        );
        x.leaf("w:OperationTimeout", &[], OPERATION_TIMEOUT);
        x.leaf("w:ResourceURI", &[("s:mustUnderstand", "true")], CMD_SHELL);
        if let Some(shell) = self.shell() {
            x.open("w:SelectorSet", &[]);
            x.leaf("w:Selector", &[("Name", "ShellId")], shell);
            x.close("w:SelectorSet");
        }
        let options: &[(&str, &str)] = match self {
            Message::Create => &[("WINRS_NOPROFILE", "FALSE"), ("WINRS_CODEPAGE", "65001")],
            Message::Command { .. } => &[
                ("WINRS_CONSOLEMODE_STDIN", "TRUE"),
                ("WINRS_SKIP_CMD_SHELL", "FALSE"),
            ],
            _ => &[],
        };
        if !options.is_empty() {
            x.open("w:OptionSet", &[]);
            for (name, value) in options {
                x.leaf("w:Option", &[("Name", name)], value);
            }
            x.close("w:OptionSet");
        }
        x.close("s:Header");
        x.open("s:Body", &[]);
        match self {
            Message::Create => {
                x.open("rsp:Shell", &[]);
                x.leaf("rsp:InputStreams", &[], "stdin");
                x.leaf("rsp:OutputStreams", &[], "stdout stderr");
                x.close("rsp:Shell");
            }
            Message::Command { line, .. } => {
                x.open("rsp:CommandLine", &[]);
                x.leaf("rsp:Command", &[], line);
                x.close("rsp:CommandLine");
            }
            Message::Receive { command, .. } => {
                x.open("rsp:Receive", &[]);
                x.leaf(
                    "rsp:DesiredStream",
                    &[("CommandId", command)],
                    "stdout stderr",
                );
                x.close("rsp:Receive");
            }
            Message::Terminate { command, .. } => {
                x.open("rsp:Signal", &[("CommandId", command)]);
                x.leaf("rsp:Code", &[], &format!("{NS_RSP}/signal/terminate"));
                x.close("rsp:Signal");
            }
            Message::Delete { .. } => {}
        }
        x.close("s:Body");
        x.close("s:Envelope");
        x.0
    }
}

/// A writer of well-formed XML: every text and attribute escaped.
#[derive(Default)]
struct Xml(String);

impl Xml {
    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.0.push('<');
        self.0.push_str(name);
        for (k, v) in attrs {
            self.0.push(' ');
            self.0.push_str(k);
            self.0.push_str("=\"");
            self.0.push_str(&kvmhost::libvirt::xml::esc(v));
            self.0.push('"');
        }
    }
    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.0.push('>');
    }
    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
    fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        if text.is_empty() {
            self.start(name, attrs);
            self.0.push_str("/>");
            return;
        }
        self.open(name, attrs);
        self.0.push_str(&kvmhost::libvirt::xml::esc(text));
        self.close(name);
    }
}

/// A SOAP fault the server answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The subcode (`w:TimedOut`, ...), or the code when there is none.
    pub subcode: String,
    /// The WSManFault code, if given.
    pub code: Option<u64>,
    /// The reason or message text.
    pub reason: String,
}

/// Whether a fault says the server held a Receive for OperationTimeout
/// with nothing to report: the client asks again.
pub fn is_timed_out(code: Option<u64>, subcode: &str) -> bool {
    code == Some(TIMED_OUT_CODE) || subcode.ends_with(":TimedOut")
}

/// Output and state from one Receive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// stdout bytes, in order.
    pub stdout: Vec<u8>,
    /// stderr bytes, in order.
    pub stderr: Vec<u8>,
    /// The exit code, once the command is done.
    pub exit_code: Option<u32>,
}

/// Why an answer cannot be read (said after the operation's name).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The body does not parse.
    #[error("not XML: {0}")]
    NotXml(roxmltree::Error),
    /// A Create answer names no shell.
    #[error("no ShellId")]
    NoShellId,
    /// A Command answer names no command.
    #[error("no CommandId")]
    NoCommandId,
    /// A Receive answer's stream does not decode.
    #[error("a stream is not base64: {0}")]
    NotBase64(base64::DecodeError),
    /// A Receive answer's exit code, as written, is no number.
    #[error("exit code `{0}` is not a number")]
    ExitCode(String),
}

fn parse(body: &str) -> Result<roxmltree::Document<'_>, AnswerError> {
    roxmltree::Document::parse(body).map_err(AnswerError::NotXml)
}

fn text_of<'a>(doc: &'a roxmltree::Document, ns: &str, name: &str) -> Option<&'a str> {
    doc.descendants()
        .find(|n| n.has_tag_name((ns, name)))
        .and_then(|n| n.text())
        .map(str::trim)
}

/// The fault in `body`, if it holds one.
pub fn fault(body: &str) -> Option<Fault> {
    let doc = parse(body).ok()?;
    let f = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_S, "Fault")))?;
    let value = |parent: &str| {
        f.descendants()
            .find(|n| n.has_tag_name((NS_S, parent)))
            .and_then(|c| c.children().find(|n| n.has_tag_name((NS_S, "Value"))))
            .and_then(|n| n.text())
            .map(|s| s.trim().to_string())
    };
    let subcode = value("Subcode")
        .or_else(|| value("Code"))
        .unwrap_or_default();
    let detail = f
        .descendants()
        .find(|n| n.has_tag_name((NS_F, "WSManFault")));
    let code = detail
        .and_then(|d| d.attribute("Code"))
        .and_then(|c| c.parse().ok());
    let reason = text_of(&doc, NS_S, "Text")
        .or_else(|| text_of(&doc, NS_F, "Message"))
        .unwrap_or("")
        .to_string();
    Some(Fault {
        subcode,
        code,
        reason,
    })
}

/// The new shell's id from a Create answer.
pub fn shell_id(body: &str) -> Result<String, AnswerError> {
    let doc = parse(body)?;
    doc.descendants()
        .find(|n| n.has_tag_name((NS_W, "Selector")) && n.attribute("Name") == Some("ShellId"))
        .and_then(|n| n.text())
        .or_else(|| text_of(&doc, NS_RSP, "ShellId"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or(AnswerError::NoShellId)
}

/// The new command's id from a Command answer.
pub fn command_id(body: &str) -> Result<String, AnswerError> {
    let doc = parse(body)?;
    text_of(&doc, NS_RSP, "CommandId")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(AnswerError::NoCommandId)
}

/// The streams and state of a Receive answer.
pub fn received(body: &str) -> Result<Received, AnswerError> {
    use base64::Engine;
    let doc = parse(body)?;
    let mut out = Received::default();
    for s in doc
        .descendants()
        .filter(|n| n.has_tag_name((NS_RSP, "Stream")))
    {
        let Some(text) = s.text().map(str::trim).filter(|t| !t.is_empty()) else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(AnswerError::NotBase64)?;
        match s.attribute("Name") {
            Some("stderr") => out.stderr.extend(bytes),
            _ => out.stdout.extend(bytes),
        }
    }
    let state = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_RSP, "CommandState")));
    if let Some(state) = state {
        if state
            .attribute("State")
            .is_some_and(|s| s.ends_with("/Done"))
        {
            let code = state
                .descendants()
                .find(|n| n.has_tag_name((NS_RSP, "ExitCode")))
                .and_then(|n| n.text())
                .map(str::trim)
                .unwrap_or("0");
            // Windows exit codes are 32-bit; some servers print them signed.
            let code = code
                .parse::<u32>()
                .or_else(|_| code.parse::<i32>().map(|c| c as u32))
                .map_err(|_| AnswerError::ExitCode(code.to_string()))?;
            out.exit_code = Some(code);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_packers_timeout_and_envelope_size_and_escape_text() {
        let e = Message::Command {
            shell: "S1",
            line: "echo a<b & \"c\"",
        }
        .envelope("http://h:5985/wsman");
        let doc = roxmltree::Document::parse(&e).unwrap();
        assert_eq!(text_of(&doc, NS_W, "OperationTimeout"), Some("PT60S"));
        assert_eq!(text_of(&doc, NS_W, "MaxEnvelopeSize"), Some("153600"));
        assert_eq!(text_of(&doc, NS_RSP, "Command"), Some("echo a<b & \"c\""));
        assert_eq!(text_of(&doc, NS_W, "Selector"), Some("S1"));
    }

    #[test]
    fn a_timed_out_receive_is_recognised_by_its_wsman_code() {
        let body = format!(
            r#"<s:Envelope xmlns:s="{NS_S}" xmlns:w="{NS_W}"><s:Body><s:Fault>
            <s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>
            <s:Reason><s:Text xml:lang="en-US">late</s:Text></s:Reason>
            <s:Detail><f:WSManFault xmlns:f="{NS_F}" Code="2150858793"/></s:Detail>
            </s:Fault></s:Body></s:Envelope>"#
        );
        let f = fault(&body).unwrap();
        assert!(is_timed_out(f.code, &f.subcode), "{f:?}");
        assert_eq!(f.reason, "late");
    }
}
