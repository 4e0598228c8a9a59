//! Packer's template engine for option values: the subset of Go's
//! `text/template` that Packer templates use (`{{user `x`}}`,
//! `{{timestamp}}`, `{{ .HTTPIP }}`, pipelines, parentheses), with
//! Packer's functions. Packer leaves this work to the plugin: a JSON
//! template's options arrive here uninterpolated, and `boot_command`
//! keeps `{{ .HTTPIP }}` until the build knows the address.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// What is wrong with a template, in words that point at the mistake.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// `{{` with no `}}` after it.
    #[error("unclosed action: `{0}`")]
    Unclosed(String),
    /// More after a complete pipeline.
    #[error("unexpected `{token}` in `{{{{{action}}}}}`")]
    Trailing {
        /// What came after.
        token: String,
        /// The action.
        action: String,
    },
    /// A raw string with no closing backquote.
    #[error("unterminated raw string in `{0}`")]
    UnterminatedRaw(String),
    /// A backslash escape Go's templates have, but this engine not.
    #[error("unsupported escape in `{0}`")]
    Escape(String),
    /// A quoted string with no closing quote.
    #[error("unterminated string in `{0}`")]
    Unterminated(String),
    /// A word that is no field, number or function name.
    #[error("cannot read `{word}` in `{action}`")]
    Unreadable {
        /// The word.
        word: String,
        /// The action.
        action: String,
    },
    /// `{{}}` or `( )`.
    #[error("empty command")]
    EmptyCommand,
    /// A value piped into a value.
    #[error("cannot pipe into `{0}`: it is not a function")]
    PipeIntoValue(String),
    /// Arguments after a value.
    #[error("`{0}` follows a value that is not a function")]
    NotAFunction(String),
    /// A field (`.HTTPIP`) the build does not know at this point.
    #[error("`.{field}` has no value here{}", known_fields(known))]
    NoField {
        /// The field, without its dot.
        field: String,
        /// The fields that have a value here.
        known: Vec<String>,
    },
    /// `(` without `)`.
    #[error("missing `)`")]
    MissingClose,
    /// A token where an operand belongs.
    #[error("unexpected `{0}`")]
    Unexpected(String),
    /// A number where a function wants a string.
    #[error("{function}: argument {position} is {value}, not a string")]
    NotAString {
        /// The function.
        function: String,
        /// The argument's position, from 1.
        position: usize,
        /// The number given.
        value: i64,
    },
    /// A string where a function wants a number.
    #[error("{function}: argument {position} is {value:?}, not a number")]
    NotANumber {
        /// The function.
        function: String,
        /// The argument's position, from 1.
        position: usize,
        /// The string given.
        value: String,
    },
    /// Fewer arguments than the function reads.
    #[error("{function}: missing argument {position}")]
    MissingArgument {
        /// The function.
        function: String,
        /// The argument's position, from 1.
        position: usize,
    },
    /// Not the number of arguments the function takes.
    #[error("{function} takes {wants} argument(s), got {got}")]
    Arity {
        /// The function.
        function: String,
        /// How many it takes.
        wants: usize,
        /// How many it got.
        got: usize,
    },
    /// `env` outside the `variables` section, where Packer refuses it too.
    #[error("env is only allowed in the template's `variables` section: declare a variable with {{{{env `NAME`}}}} as its default and use {{{{user `name`}}}} here")]
    EnvOutsideVariables,
    /// `isotime` with more than a layout.
    #[error("isotime takes at most 1 argument, got {0}")]
    IsotimeArity(usize),
    /// `build_name`, `build_type` or `packer_version` where Packer did not
    /// say it.
    #[error("{0} is not available here")]
    Unavailable(String),
    /// `template_dir` where the template's path is not known.
    #[error("template_dir: the template's path is not known here")]
    NoTemplatePath,
    /// The template's folder could not be made absolute.
    #[error("template_dir: {0}")]
    TemplateDir(std::io::Error),
    /// The working folder could not be read.
    #[error("pwd: {0}")]
    Pwd(std::io::Error),
    /// `split` asked for a part that is not there.
    #[error(
        "split: part {index} of {text:?} split by {separator:?} does not exist (there are {parts})"
    )]
    NoSuchPart {
        /// The part asked for.
        index: i64,
        /// The text split.
        text: String,
        /// The separator.
        separator: String,
        /// How many parts there are.
        parts: usize,
    },
    /// A function Packer's templates do not have.
    #[error("function `{0}` is not defined")]
    Undefined(String),
}

/// ` (known: .A, .B)`, or nothing when no field is known.
fn known_fields(known: &[String]) -> String {
    if known.is_empty() {
        return String::new();
    }
    let list: Vec<String> = known.iter().map(|k| format!(".{k}")).collect();
    format!(" (known: {})", list.join(", "))
}

/// What templates can refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `{{user `name`}}` values (Packer's `packer_user_variables`).
    pub user: BTreeMap<String, String>,
    /// `{{build_name}}`.
    pub build_name: String,
    /// `{{build_type}}`.
    pub build_type: String,
    /// The template file, for `{{template_dir}}`.
    pub template_path: String,
    /// `{{packer_version}}`.
    pub packer_version: String,
    /// `{{ .Field }}` values; only what the build knows at this point.
    pub fields: BTreeMap<String, String>,
    /// The time `{{timestamp}}` and `{{isotime}}` show, Unix seconds.
    pub init_time: u64,
}

impl Context {
    /// A context whose clock is now.
    pub fn now() -> Context {
        Context {
            init_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ..Default::default()
        }
    }
}

/// Renders `text`, or says what is wrong with it.
pub fn render(text: &str, ctx: &Context) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let mut literal = &rest[..start];
        let mut inner = &rest[start + 2..];
        if let Some(s) = inner.strip_prefix("- ") {
            literal = literal.trim_end();
            inner = s;
        }
        out.push_str(literal);
        let end = find_close(inner).ok_or_else(|| TemplateError::Unclosed(clip(&rest[start..])))?;
        let mut action = &inner[..end];
        rest = &inner[end + 2..];
        if let Some(a) = action.strip_suffix(" -") {
            action = a;
            rest = rest.trim_start();
        }
        let action = action.trim();
        if action.starts_with("/*") && action.ends_with("*/") {
            continue;
        }
        let mut p = Parser {
            toks: lex(action)?,
            pos: 0,
        };
        let v = p.pipeline(ctx)?;
        if p.pos != p.toks.len() {
            return Err(TemplateError::Trailing {
                token: p.toks[p.pos].to_string(),
                action: action.to_string(),
            });
        }
        out.push_str(&v.to_string());
    }
    out.push_str(rest);
    Ok(out)
}

/// Where `}}` closes an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Field(s) => write!(f, ".{s}"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Int(n) => write!(f, "{n}"),
            Tok::Pipe => write!(f, "|"),
            Tok::Open => write!(f, "("),
            Tok::Close => write!(f, ")"),
        }
    }
}

fn lex(s: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut toks = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '|' => {
                it.next();
                toks.push(Tok::Pipe);
            }
            '(' => {
                it.next();
                toks.push(Tok::Open);
            }
            ')' => {
                it.next();
                toks.push(Tok::Close);
            }
            '`' => {
                it.next();
                let mut v = String::new();
                loop {
                    match it.next() {
                        Some((_, '`')) => break,
                        Some((_, c)) => v.push(c),
                        None => return Err(TemplateError::UnterminatedRaw(s.to_string())),
                    }
                }
                toks.push(Tok::Str(v));
            }
            '"' => {
                it.next();
                let mut v = String::new();
                loop {
                    match it.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match it.next() {
                            Some((_, 'n')) => v.push('\n'),
                            Some((_, 't')) => v.push('\t'),
                            Some((_, 'r')) => v.push('\r'),
                            Some((_, c @ ('\\' | '"' | '\''))) => v.push(c),
                            _ => return Err(TemplateError::Escape(s.to_string())),
                        },
                        Some((_, c)) => v.push(c),
                        None => return Err(TemplateError::Unterminated(s.to_string())),
                    }
                }
                toks.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                let mut end = s.len();
                while let Some(&(j, c)) = it.peek() {
                    if c.is_whitespace() || matches!(c, '|' | '(' | ')' | '"' | '`') {
                        end = j;
                        break;
                    }
                    it.next();
                }
                let word = &s[start..end];
                if let Some(f) = word.strip_prefix('.') {
                    toks.push(Tok::Field(f.to_string()));
                } else if let Ok(n) = word.parse::<i64>() {
                    toks.push(Tok::Int(n));
                } else if word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    toks.push(Tok::Ident(word.to_string()));
                } else {
                    return Err(TemplateError::Unreadable {
                        word: word.to_string(),
                        action: s.to_string(),
                    });
                }
            }
        }
    }
    Ok(toks)
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Str(s) => write!(f, "{s}"),
            Val::Int(n) => write!(f, "{n}"),
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn pipeline(&mut self, ctx: &Context) -> Result<Val, TemplateError> {
        let mut v = self.command(ctx, None)?;
        while self.toks.get(self.pos) == Some(&Tok::Pipe) {
            self.pos += 1;
            v = self.command(ctx, Some(v))?;
        }
        Ok(v)
    }

    fn command(&mut self, ctx: &Context, piped: Option<Val>) -> Result<Val, TemplateError> {
        let Some(first) = self.toks.get(self.pos).cloned() else {
            return Err(TemplateError::EmptyCommand);
        };
        if let Tok::Ident(name) = first {
            self.pos += 1;
            let mut args = Vec::new();
            while let Some(t) = self.toks.get(self.pos) {
                if matches!(t, Tok::Pipe | Tok::Close) {
                    break;
                }
                args.push(self.operand(ctx)?);
            }
            args.extend(piped);
            return call(&name, &args, ctx);
        }
        let v = self.operand(ctx)?;
        if piped.is_some() {
            return Err(TemplateError::PipeIntoValue(v.to_string()));
        }
        if let Some(t) = self.toks.get(self.pos) {
            if !matches!(t, Tok::Pipe | Tok::Close) {
                return Err(TemplateError::NotAFunction(t.to_string()));
            }
        }
        Ok(v)
    }

    fn operand(&mut self, ctx: &Context) -> Result<Val, TemplateError> {
        let t = self.toks[self.pos].clone();
        self.pos += 1;
        match t {
            Tok::Str(s) => Ok(Val::Str(s)),
            Tok::Int(n) => Ok(Val::Int(n)),
            Tok::Field(f) => ctx
                .fields
                .get(&f)
                .map(|v| Val::Str(v.clone()))
                .ok_or_else(|| TemplateError::NoField {
                    known: ctx.fields.keys().cloned().collect(),
                    field: f,
                }),
            Tok::Ident(name) => call(&name, &[], ctx),
            Tok::Open => {
                let v = self.pipeline(ctx)?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(TemplateError::MissingClose);
                }
                self.pos += 1;
                Ok(v)
            }
            t => Err(TemplateError::Unexpected(t.to_string())),
        }
    }
}

fn str_arg<'a>(f: &str, args: &'a [Val], i: usize) -> Result<&'a str, TemplateError> {
    match args.get(i) {
        Some(Val::Str(s)) => Ok(s),
        Some(Val::Int(n)) => Err(TemplateError::NotAString {
            function: f.to_string(),
            position: i + 1,
            value: *n,
        }),
        None => Err(missing(f, i)),
    }
}

fn int_arg(f: &str, args: &[Val], i: usize) -> Result<i64, TemplateError> {
    match args.get(i) {
        Some(Val::Int(n)) => Ok(*n),
        Some(Val::Str(s)) => Err(TemplateError::NotANumber {
            function: f.to_string(),
            position: i + 1,
            value: s.clone(),
        }),
        None => Err(missing(f, i)),
    }
}

fn missing(f: &str, i: usize) -> TemplateError {
    TemplateError::MissingArgument {
        function: f.to_string(),
        position: i + 1,
    }
}

fn arity(f: &str, args: &[Val], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(TemplateError::Arity {
            function: f.to_string(),
            wants: n,
            got: args.len(),
        });
    }
    Ok(())
}

fn call(f: &str, args: &[Val], ctx: &Context) -> Result<Val, TemplateError> {
    let s = |v: String| Ok(Val::Str(v));
    match f {
        "user" => {
            arity(f, args, 1)?;
            let k = str_arg(f, args, 0)?;
            // Packer gives an undeclared variable as empty outside `variables`.
            s(ctx.user.get(k).cloned().unwrap_or_default())
        }
        "env" => Err(TemplateError::EnvOutsideVariables),
        "timestamp" => {
            arity(f, args, 0)?;
            s(ctx.init_time.to_string())
        }
        "isotime" => match args.len() {
            0 => s(go_time_format("2006-01-02T15:04:05Z07:00", ctx.init_time)),
            1 => s(go_time_format(str_arg(f, args, 0)?, ctx.init_time)),
            n => Err(TemplateError::IsotimeArity(n)),
        },
        "uuid" => {
            arity(f, args, 0)?;
            s(uuid::Uuid::new_v4().to_string())
        }
        "build_name" | "build_type" | "packer_version" => {
            arity(f, args, 0)?;
            let v = match f {
                "build_name" => &ctx.build_name,
                "build_type" => &ctx.build_type,
                _ => &ctx.packer_version,
            };
            if v.is_empty() {
                return Err(TemplateError::Unavailable(f.to_string()));
            }
            s(v.clone())
        }
        "template_dir" => {
            arity(f, args, 0)?;
            if ctx.template_path.is_empty() {
                return Err(TemplateError::NoTemplatePath);
            }
            let p = std::path::Path::new(&ctx.template_path);
            let dir = p.parent().unwrap_or(std::path::Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            let abs = std::path::absolute(dir).map_err(TemplateError::TemplateDir)?;
            s(abs.display().to_string())
        }
        "pwd" => {
            arity(f, args, 0)?;
            std::env::current_dir()
                .map(|d| Val::Str(d.display().to_string()))
                .map_err(TemplateError::Pwd)
        }
        "split" => {
            arity(f, args, 3)?;
            let (text, sep, i) = (
                str_arg(f, args, 0)?,
                str_arg(f, args, 1)?,
                int_arg(f, args, 2)?,
            );
            let parts: Vec<&str> = text.split(sep).collect();
            usize::try_from(i)
                .ok()
                .and_then(|i| parts.get(i))
                .map(|p| Val::Str(p.to_string()))
                .ok_or_else(|| TemplateError::NoSuchPart {
                    index: i,
                    text: text.to_string(),
                    separator: sep.to_string(),
                    parts: parts.len(),
                })
        }
        "replace" => {
            arity(f, args, 4)?;
            let (old, new, n, src) = (
                str_arg(f, args, 0)?,
                str_arg(f, args, 1)?,
                int_arg(f, args, 2)?,
                str_arg(f, args, 3)?,
            );
            if n < 0 {
                s(src.replace(old, new))
            } else {
                s(src.replacen(old, new, n as usize))
            }
        }
        "replace_all" => {
            arity(f, args, 3)?;
            s(str_arg(f, args, 2)?.replace(str_arg(f, args, 0)?, str_arg(f, args, 1)?))
        }
        "lower" => {
            arity(f, args, 1)?;
            s(str_arg(f, args, 0)?.to_lowercase())
        }
        "upper" => {
            arity(f, args, 1)?;
            s(str_arg(f, args, 0)?.to_uppercase())
        }
        "clean_resource_name" => {
            arity(f, args, 1)?;
            s(str_arg(f, args, 0)?
                .to_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect())
        }
        other => Err(TemplateError::Undefined(other.to_string())),
    }
}

/// Formats Unix time `t` (UTC) with a Go reference-time layout
/// (`2006-01-02T15:04:05Z07:00`).
pub fn go_time_format(layout: &str, t: u64) -> String {
    let days = (t / 86400) as i64;
    let secs = t % 86400;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, se) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = ((days + 4).rem_euclid(7)) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let month = MONTHS[(mo - 1) as usize];
    let day = DAYS[weekday];
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    // Longest tokens first, as Go matches them.
    let tokens: [(&str, String); 27] = [
        ("January", month.to_string()),
        ("Monday", day.to_string()),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
        ("Z0700", "Z".into()),
        ("-0700", "+0000".into()),
        ("2006", format!("{y:04}")),
        ("Jan", month[..3].to_string()),
        ("Mon", day[..3].to_string()),
        ("MST", "UTC".into()),
        ("Z07", "Z".into()),
        ("-07", "+00".into()),
        ("002", format!("{yday:03}")),
        (".000", ".000".into()),
        ("01", format!("{mo:02}")),
        ("02", format!("{d:02}")),
        ("_2", format!("{d:>2}")),
        ("15", format!("{h:02}")),
        ("03", format!("{h12:02}")),
        ("04", format!("{mi:02}")),
        ("05", format!("{se:02}")),
        ("06", format!("{:02}", y % 100)),
        ("PM", if h >= 12 { "PM" } else { "AM" }.into()),
        ("pm", if h >= 12 { "pm" } else { "am" }.into()),
        ("1", mo.to_string()),
        ("2", d.to_string()),
        ("3", h12.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        // Single-digit minute and second tokens.
        let c = rest.chars().next().expect("not empty");
        match c {
            '4' => out.push_str(&mi.to_string()),
            '5' => out.push_str(&se.to_string()),
            _ => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        let mut c = Context {
            build_name: "agent".into(),
            build_type: "libvirt".into(),
            template_path: "/srv/t/agent.json".into(),
            packer_version: "1.6.6".into(),
            init_time: 1_700_000_000, // 2023-11-14T22:13:20Z, a Tuesday
            ..Default::default()
        };
        c.user.insert("image_sha256".into(), "ab12".into());
        c.user.insert("name".into(), "Debian Agent 12".into());
        c
    }

    #[test]
    fn user_variables_and_packer_functions_render_like_packer() {
        let c = ctx();
        let cases = [
            ("sha256:{{user `image_sha256`}}", "sha256:ab12"),
            ("{{ user \"name\" | lower }}", "debian agent 12"),
            ("{{upper (user `name`)}}", "DEBIAN AGENT 12"),
            ("{{user `undeclared`}}", ""),
            ("{{timestamp}}", "1700000000"),
            ("{{isotime}}", "2023-11-14T22:13:20Z"),
            (
                "{{isotime \"2006-01-02 15:04 Mon Jan _2 002\"}}",
                "2023-11-14 22:13 Tue Nov 14 318",
            ),
            ("{{build_name}}-{{build_type}}", "agent-libvirt"),
            ("{{template_dir}}", "/srv/t"),
            ("{{packer_version}}", "1.6.6"),
            ("{{split \"a,b,c\" \",\" 1}}", "b"),
            ("{{replace \"a\" \"o\" 1 \"banana\"}}", "bonana"),
            ("{{replace \"a\" \"o\" -1 \"banana\"}}", "bonono"),
            ("{{replace_all \"a\" \"o\" \"banana\"}}", "bonono"),
            (
                "{{clean_resource_name \"Debian Agent.12\"}}",
                "debian-agent-12",
            ),
            ("a  {{- /* note */ -}}  b", "ab"),
            ("plain text", "plain text"),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &c).unwrap(), want, "{t}");
        }
        let u = render("{{uuid}}", &c).unwrap();
        assert_eq!(u.len(), 36);
        assert!(render("{{pwd}}", &c).unwrap().starts_with('/'));
    }

    #[test]
    fn fields_render_only_where_the_build_knows_them() {
        let mut c = ctx();
        let e = render("http://{{ .HTTPIP }}/preseed", &c).unwrap_err();
        assert_eq!(e.to_string(), "`.HTTPIP` has no value here");
        c.fields.insert("HTTPIP".into(), "10.0.2.2".into());
        c.fields.insert("HTTPPort".into(), "8123".into());
        assert_eq!(
            render("http://{{ .HTTPIP }}:{{ .HTTPPort }}/p", &c).unwrap(),
            "http://10.0.2.2:8123/p"
        );
        let e = render("{{ .Name }}", &c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`.Name` has no value here (known: .HTTPIP, .HTTPPort)"
        );
    }

    #[test]
    fn broken_templates_say_what_is_wrong() {
        let c = ctx();
        for (t, says) in [
            ("{{user `x`", "unclosed action: `{{user `x``"),
            ("{{nosuch}}", "function `nosuch` is not defined"),
            (
                "{{env `HOME`}}",
                "env is only allowed in the template's `variables` section: declare a variable with {{env `NAME`}} as its default and use {{user `name`}} here",
            ),
            (
                "{{split \"a\" \",\" 3}}",
                "split: part 3 of \"a\" split by \",\" does not exist (there are 1)",
            ),
            ("{{user}}", "user takes 1 argument(s), got 0"),
            ("{{\"a\" \"b\"}}", "`\"b\"` follows a value that is not a function"),
            ("{{upper 3}}", "upper: argument 1 is 3, not a string"),
            ("{{lower}}", "lower takes 1 argument(s), got 0"),
            ("{{split \"a\" \",\" \"x\"}}", "split: argument 3 is \"x\", not a number"),
            ("{{timestamp}} {{ ) }}", "unexpected `)`"),
            ("{{timestamp )}}", "unexpected `)` in `{{timestamp )}}`"),
            ("{{\"a\\q\"}}", "unsupported escape in `\"a\\q\"`"),
            ("{{ @ }}", "cannot read `@` in `@`"),
        ] {
            let e = render(t, &c).unwrap_err().to_string();
            assert_eq!(e, says, "{t}");
        }
    }

    #[test]
    fn go_layouts_cover_dates_across_years() {
        // 2000-02-29 12:00:00 UTC, a Tuesday.
        assert_eq!(
            go_time_format("2006-01-02T15:04:05 Monday January 3PM", 951_825_600),
            "2000-02-29T12:00:00 Tuesday February 12PM"
        );
        assert_eq!(go_time_format("06/1/2", 0), "70/1/1");
    }
}
