//! The commands the stand-in runs, against a folder that stands for `C:\`.
//! See the module docs of [`super`] for the set it recognises.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use tokio::sync::mpsc::UnboundedSender;

use super::power::Power;
use super::soap::Output;

/// What a running command reports, in order; `Exit` comes last.
#[derive(Debug)]
pub enum Event {
    /// Output.
    Out(Output),
    /// The command ended with this exit code.
    Exit(i32),
}

/// The exit code cmd gives a command it does not know.
pub const NOT_RECOGNISED: i32 = 9009;

/// The machine the commands run on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The folder that stands for `C:\`.
    pub drive: PathBuf,
    /// The user's profile folder, relative paths' base, as a Windows path.
    pub home: String,
    /// What `[System.Net.Dns]::GetHostName()` gives.
    pub hostname: String,
    /// Restarts (`shutdown /r`, `shutdown /a`).
    pub power: std::sync::Arc<Power>,
    /// The one account, for scheduled tasks registered with a password.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl Machine {
    /// The host path of a Windows path: `C:\a\b`, `c:/a/b`, `%TEMP%\x`,
    /// `$env:TEMP\x`, or relative to the user's profile. `None` for a
    /// path on another drive or one that climbs out with `..`.
    pub fn host_path(&self, windows: &str) -> Option<PathBuf> {
        let p = windows.trim().trim_matches('"').trim_matches('\'');
        let expanded = expand_env(p);
        let p = expanded.replace('\\', "/");
        let rest = match p.as_bytes() {
            [d, b':', rest @ ..] if d.eq_ignore_ascii_case(&b'c') => {
                String::from_utf8_lossy(rest).into_owned()
            }
            [_, b':', ..] => return None,
            _ => format!(
                "{}/{p}",
                self.home.replace('\\', "/").trim_start_matches("C:")
            ),
        };
        let mut out = self.drive.clone();
        for c in Path::new(&rest).components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        Some(out)
    }
}

/// `%TEMP%`, `%TMP%` and `$env:TEMP` as Windows sets them for a service
/// session, and `%SYSTEMROOT%` and `%WINDIR%`.
fn expand_env(p: &str) -> String {
    let mut s = p.to_string();
    for (var, value) in [
        ("%TEMP%", r"C:\Windows\Temp"),
        ("%TMP%", r"C:\Windows\Temp"),
        ("$env:TEMP", r"C:\Windows\Temp"),
        ("$env:TMP", r"C:\Windows\Temp"),
        ("%SYSTEMROOT%", r"C:\Windows"),
        ("%WINDIR%", r"C:\Windows"),
    ] {
        while let Some(i) = s.to_ascii_lowercase().find(&var.to_ascii_lowercase()) {
            s.replace_range(i..i + var.len(), value);
        }
    }
    s
}

/// A command's output side.
struct Io<'a> {
    tx: &'a UnboundedSender<Event>,
    /// The file cmd redirected stdout to, and whether stderr goes there
    /// too (`2>&1`).
    to_file: Option<(PathBuf, bool)>,
}

impl<'a> Io<'a> {
    fn new(tx: &'a UnboundedSender<Event>) -> Io<'a> {
        Io { tx, to_file: None }
    }
    fn stdout(&self, bytes: Vec<u8>) {
        match &self.to_file {
            Some((path, _)) => append(path, &bytes),
            None => {
                let _ = self.tx.send(Event::Out(Output::Stdout(bytes)));
            }
        }
    }
    fn out(&self, text: &str) {
        self.stdout(text.as_bytes().to_vec());
    }
    fn line(&self, text: &str) {
        self.out(&format!("{text}\r\n"));
    }
    fn err(&self, text: &str) {
        let bytes = format!("{text}\r\n").into_bytes();
        match &self.to_file {
            Some((path, true)) => append(path, &bytes),
            _ => {
                let _ = self.tx.send(Event::Out(Output::Stderr(bytes)));
            }
        }
    }
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(bytes);
    }
}

/// Runs one command line under cmd and reports its output and exit code.
pub async fn run(machine: &Machine, line: &str, tx: UnboundedSender<Event>) {
    let io = Io::new(&tx);
    let code = cmd(machine, line, &io).await;
    let _ = tx.send(Event::Exit(code));
}

/// The PowerShell script a `powershell -EncodedCommand` line carries, if
/// the line is one.
pub fn encoded_script(line: &str) -> Option<String> {
    let words = words(line);
    if !is_powershell(words.first()?) {
        return None;
    }
    let at = words
        .iter()
        .position(|w| is_encoded_flag(w))
        .and_then(|i| words.get(i + 1))?;
    decode_utf16le(at)
}

fn is_powershell(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    let name = w.rsplit(['\\', '/']).next().unwrap_or(&w);
    name == "powershell" || name == "powershell.exe"
}

/// `-EncodedCommand` and the prefixes PowerShell accepts for it.
fn is_encoded_flag(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    let w = w.trim_start_matches('-');
    w == "e" || w == "ec" || (w.len() >= 3 && "encodedcommand".starts_with(w))
}

fn decode_utf16le(b64: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// Splits on spaces outside double quotes, dropping the quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Splits `s` at `sep` where it is outside quotes and brackets, as
/// PowerShell quotes (single and double quotes).
fn split_top(s: &str, seps: &[&str]) -> Vec<String> {
    split_quoted(s, seps, &['"', '\''])
}

/// Splits `s` at `sep` where it is outside quotes and brackets, as cmd
/// quotes (a single quote is an ordinary character).
fn split_cmd(s: &str, seps: &[&str]) -> Vec<String> {
    split_quoted(s, seps, &['"'])
}

fn split_quoted(s: &str, seps: &[&str], quotes: &[char]) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut i = 0;
    let b = s.as_bytes();
    // PowerShell's escape character, outside single quotes.
    let escapes = quotes.contains(&'\'');
    while i < b.len() {
        let c = b[i] as char;
        if escapes && c == '`' && quote != Some('\'') {
            i += 2;
            continue;
        }
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c) if quotes.contains(&c) => quote = Some(c),
            (None, '{' | '(') => depth += 1,
            (None, '}' | ')') => depth -= 1,
            (None, _) if depth == 0 => {
                if let Some(sep) = seps.iter().find(|sep| s[i..].starts_with(**sep)) {
                    out.push(s[start..i].to_string());
                    i += sep.len();
                    start = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push(s[start..].to_string());
    out
}

/// One cmd line: `cmd /c` prefixes, `&&` chains, then each command.
async fn cmd(machine: &Machine, line: &str, io: &Io<'_>) -> i32 {
    let mut line = line.trim();
    let lower = line.to_ascii_lowercase();
    for prefix in ["cmd /c ", "cmd.exe /c "] {
        if lower.starts_with(prefix) {
            line = line[prefix.len()..].trim();
        }
    }
    let mut code = 0;
    for part in split_cmd(line, &["&&"]) {
        code = match redirection(part.trim()) {
            Some((command, target, add, err_too)) => {
                let opened = machine.host_path(target).and_then(|p| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(add)
                        .write(true)
                        .truncate(!add)
                        .open(&p)
                        .ok()
                        .map(|_| p)
                });
                match opened {
                    Some(p) => {
                        let to = Io {
                            tx: io.tx,
                            to_file: Some((p, err_too)),
                        };
                        simple(machine, command.trim(), &to).await
                    }
                    None => {
                        io.err("The system cannot find the path specified.");
                        1
                    }
                }
            }
            None => simple(machine, part.trim(), io).await,
        };
        if code != 0 {
            break;
        }
    }
    code
}

/// `COMMAND > FILE` or `>> FILE`, maybe with `1>` and a trailing `2>&1`:
/// the command, the file, whether it appends, whether stderr goes too.
/// Other redirections are not recognised.
fn redirection(part: &str) -> Option<(&str, &str, bool, bool)> {
    let mut quoted = false;
    let at = part.char_indices().find_map(|(i, c)| match c {
        '"' => {
            quoted = !quoted;
            None
        }
        '>' if !quoted => Some(i),
        _ => None,
    })?;
    let mut command = &part[..at];
    if let Some(c) = command.strip_suffix('1').filter(|c| c.ends_with(' ')) {
        command = c;
    } else if command.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let rest = &part[at..];
    let add = rest.starts_with(">>");
    let w = words(rest.trim_start_matches('>'));
    match w.as_slice() {
        [_] => {}
        [_, merge] if merge == "2>&1" => {}
        _ => return None,
    }
    // The target as written (quotes and all), for `host_path`.
    let target = rest.trim_start_matches('>').trim();
    let target = target.strip_suffix("2>&1").unwrap_or(target).trim();
    Some((command, target, add, w.len() == 2))
}

/// One cmd command.
async fn simple(machine: &Machine, line: &str, io: &Io<'_>) -> i32 {
    let w = words(line);
    let Some(first) = w.first() else { return 0 };
    let verb = first.to_ascii_lowercase();
    if is_powershell(first) {
        return powershell(machine, &w[1..], io).await;
    }
    if is_batch_file(&verb) {
        return match machine.host_path(first).map(std::fs::read_to_string) {
            Some(Ok(text)) => Box::pin(batch(machine, &text, io)).await,
            _ => {
                io.err("The system cannot find the path specified.");
                1
            }
        };
    }
    match verb.as_str() {
        // The environment is not modelled: `set` changes nothing.
        "set" => 0,
        "shutdown" => shutdown(machine, &w[1..], io),
        "echo" => {
            let text = line[4..].trim_start();
            match split_cmd(text, &[">>", ">"]).as_slice() {
                [text] => {
                    io.line(text.trim_end());
                    0
                }
                [text, target] => {
                    let append = line.contains(">>");
                    match machine.host_path(target.trim()) {
                        Some(p) => write_line(&p, text.trim_end(), append, io),
                        None => {
                            io.err("The system cannot find the path specified.");
                            1
                        }
                    }
                }
                _ => {
                    io.err("The syntax of the command is incorrect.");
                    1
                }
            }
        }
        "exit" => {
            let n = w
                .iter()
                .skip(1)
                .find(|a| !a.eq_ignore_ascii_case("/b"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            n
        }
        "timeout" => {
            let secs = w
                .iter()
                .position(|a| a.eq_ignore_ascii_case("/t"))
                .and_then(|i| w.get(i + 1))
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            0
        }
        "type" => match w.get(1).and_then(|p| machine.host_path(p)) {
            Some(p) => match std::fs::read(&p) {
                Ok(b) => {
                    io.stdout(b);
                    0
                }
                Err(_) => {
                    io.err("The system cannot find the file specified.");
                    1
                }
            },
            None => {
                io.err("The system cannot find the path specified.");
                1
            }
        },
        _ => {
            io.err(&format!(
                "'{first}' is not recognized as an internal or external command,\r\noperable program or batch file."
            ));
            NOT_RECOGNISED
        }
    }
}

/// `shutdown /r /t N` schedules a restart, `shutdown /a` aborts it (the
/// codes and messages are Windows'); powering off (`/s`) answers 0 and is
/// the test's to do (see `Config::on_command`).
fn shutdown(machine: &Machine, args: &[String], io: &Io<'_>) -> i32 {
    let flag = |f: &str| {
        args.iter()
            .any(|a| a.len() == 2 && a[1..].eq_ignore_ascii_case(f) && a.starts_with(['/', '-']))
    };
    let done = if flag("a") {
        machine.power.abort()
    } else if flag("r") {
        // Windows waits 30 s when no `/t` is given.
        let secs = args
            .iter()
            .position(|a| a.eq_ignore_ascii_case("/t") || a.eq_ignore_ascii_case("-t"))
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(30);
        machine.power.schedule_restart(Duration::from_secs(secs))
    } else {
        Ok(())
    };
    match done {
        Ok(()) => 0,
        Err(code) => {
            io.err(match code {
                super::power::SHUTDOWN_IN_PROGRESS => "A system shutdown is in progress.(1115)",
                super::power::SHUTDOWN_IS_SCHEDULED => {
                    "A system shutdown has already been scheduled.(1190)"
                }
                _ => {
                    "Unable to abort the system shutdown because no shutdown was in progress.(1116)"
                }
            });
            code
        }
    }
}

fn is_batch_file(word: &str) -> bool {
    word.ends_with(".bat") || word.ends_with(".cmd")
}

/// A batch file, line by line: `@echo off`, `rem` and `::` lines are
/// skipped; it stops at the first failing line, like a script run with
/// `exit /b` on errors.
async fn batch(machine: &Machine, text: &str, io: &Io<'_>) -> i32 {
    let mut code = 0;
    for line in text.lines().map(str::trim) {
        let lower = line.to_ascii_lowercase();
        if line.is_empty()
            || lower == "@echo off"
            || lower.starts_with("rem ")
            || line.starts_with("::")
        {
            continue;
        }
        code = cmd(machine, line.trim_start_matches('@'), io).await;
        if code != 0 {
            break;
        }
    }
    code
}

fn write_line(p: &Path, text: &str, append: bool, io: &Io<'_>) -> i32 {
    use std::io::Write;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(p);
    match f.and_then(|mut f| f.write_all(format!("{text}\r\n").as_bytes())) {
        Ok(()) => 0,
        Err(_) => {
            io.err("The system cannot find the path specified.");
            1
        }
    }
}

/// `powershell [flags] -EncodedCommand B64` or `powershell [flags] SCRIPT`.
async fn powershell(machine: &Machine, args: &[String], io: &Io<'_>) -> i32 {
    let mut i = 0;
    let mut script = None;
    while i < args.len() {
        let a = args[i].to_ascii_lowercase();
        if is_encoded_flag(&a) {
            script = args.get(i + 1).and_then(|b| decode_utf16le(b));
            if script.is_none() {
                io.err("Cannot process the command because the value specified with -EncodedCommand is not properly encoded.");
                return 1;
            }
            break;
        }
        match a.as_str() {
            "-file" | "-f" => {
                let path = args.get(i + 1).map(String::as_str).unwrap_or_default();
                return match machine.host_path(path).map(std::fs::read_to_string) {
                    Some(Ok(text)) => Box::pin(ps_script(machine, &text, io)).await,
                    _ => {
                        io.err(&format!("The argument '{path}' to the -File parameter does not exist. Provide the path to an existing '.ps1' file as an argument to the -File parameter."));
                        -196608
                    }
                };
            }
            "-executionpolicy" | "-inputformat" | "-outputformat" | "-windowstyle" => i += 2,
            "-command" | "-c" => {
                script = Some(args[i + 1..].join(" "));
                break;
            }
            a if a.starts_with('-') => i += 1,
            _ => {
                script = Some(args[i..].join(" "));
                break;
            }
        }
    }
    match script {
        Some(s) => ps_script(machine, &s, io).await,
        None => {
            io.err("an interactive PowerShell is not available in the WinRM stand-in");
            1
        }
    }
}

/// The first double-quoted literal after `marker` in `script`.
fn literal_after<'s>(script: &'s str, marker: &str) -> Option<&'s str> {
    let at = script.find(marker)? + marker.len();
    let rest = &script[at..];
    let open = rest.find('"')? + 1;
    let close = rest[open..].find('"')? + open;
    Some(&rest[open..close])
}

/// A PowerShell script: the whole-script forms first (file restore,
/// file read-back), then statement by statement.
async fn ps_script(machine: &Machine, script: &str, io: &Io<'_>) -> i32 {
    if script.contains("FromBase64String") {
        if let (Some(tmp), Some(dest)) = (
            literal_after(script, "$tmp_file_path"),
            literal_after(script, "$dest_file_path"),
        ) {
            let code = restore(machine, tmp, dest, io);
            if script.contains("Remove-Item") {
                if let Some(p) = machine.host_path(tmp) {
                    let _ = std::fs::remove_file(p);
                }
            }
            return code;
        }
    }
    if script.contains("ToBase64String") && script.contains("ReadAllBytes") {
        // Ours sets `$file_path`; Packer's SDK reads the literal in place.
        let path =
            literal_after(script, "$file_path").or_else(|| literal_after(script, "ReadAllBytes("));
        if let Some(path) = path {
            return read_back(machine, path, io);
        }
    }
    if script.contains("New-Object -ComObject \"Schedule.Service\"")
        && script.contains("RegisterTaskDefinition")
    {
        if let Some(code) = scheduled_task(machine, script, io).await {
            return code;
        }
    }
    let mut st = PsState::new();
    match ps_block(machine, script, io, &mut st).await {
        Flow::Exit(code) => code,
        Flow::Next => i32::from(st.failed),
    }
}

/// The double-quoted literal after `marker`, as PowerShell reads it
/// (backtick escapes undone; `$env:` expanded).
fn ps_literal_after(script: &str, marker: &str) -> Option<String> {
    let at = script.find(marker)? + marker.len();
    let rest = &script[at..];
    let open = rest.find('"')?;
    let mut escaped = false;
    let close = rest[open + 1..].char_indices().find_map(|(i, c)| {
        let end = c == '"' && !escaped;
        escaped = c == '`' && !escaped;
        end.then_some(open + 1 + i)
    })?;
    Some(PsState::new().value(&rest[open..=close]))
}

/// The text of the first `<tag>` element in `xml`, unescaped.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let at = xml.find(&open)? + open.len();
    let end = xml[at..].find(&format!("</{tag}>"))? + at;
    let mut out = String::new();
    let mut rest = &xml[at..end];
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let semi = rest[i..].find(';')? + i;
        let entity = &rest[i + 1..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            e => {
                let n = match e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => e.strip_prefix('#')?.parse().ok()?,
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The accounts a task may run as without a password.
fn is_service_account(user: &str) -> bool {
    let u = user.to_ascii_lowercase();
    let u = u.strip_prefix(r"nt authority\").unwrap_or(&u);
    matches!(u, "system" | "local service" | "network service")
}

/// Packer's elevated wrapper, recognised by its shape: it registers a
/// task with the Task Scheduler (`Schedule.Service`) from an XML
/// definition whose action is `cmd /c COMMAND > LOG 2>&1`, runs it, prints
/// the log's lines as they come until the task is done, removes the log
/// and itself, deletes the task and exits with the task's result (the
/// command's exit code). The task runs as the definition's user, checked
/// against the account (or a service account, with no password), in
/// `C:\Windows\system32`. `None` when the script lacks a part of that
/// shape (it then fails statement by statement).
async fn scheduled_task(machine: &Machine, script: &str, io: &Io<'_>) -> Option<i32> {
    let log = machine.host_path(&ps_literal_after(script, "$log =")?)?;
    let script_file = ps_literal_after(script, "$script =")?;
    let password = ps_literal_after(script, "$password =")?;
    let (_, xml) = script.split_once("[xml]@'")?;
    let (xml, _) = xml.split_once("'@")?;
    let user = xml_text(xml, "UserId")?;
    let command = format!(
        "{} {}",
        xml_text(xml, "Command")?,
        xml_text(xml, "Arguments")?
    );
    let name = user.rsplit('\\').next().unwrap_or(&user);
    let domain = user.rsplit_once('\\').map(|(d, _)| d);
    let ours = name.eq_ignore_ascii_case(&machine.username)
        && domain.is_none_or(|d| d == "." || d.eq_ignore_ascii_case(&machine.hostname))
        && password == machine.password;
    if !(ours || (password.is_empty() && is_service_account(&user))) {
        // Windows refuses the registration; its wrapper would then wait
        // for a task that never runs. The stand-in stops here instead.
        io.err("Exception calling \"RegisterTaskDefinition\" with \"7\" argument(s): \"The user name or password is incorrect. (Exception from HRESULT: 0x8007052E)\"");
        return Some(1);
    }
    let task_machine = Machine {
        home: r"C:\Windows\system32".into(),
        ..machine.clone()
    };
    // A task's own console goes nowhere.
    let (nowhere, _) = tokio::sync::mpsc::unbounded_channel();
    let done = std::sync::atomic::AtomicBool::new(false);
    let task = async {
        let code = Box::pin(cmd(&task_machine, &command, &Io::new(&nowhere))).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        code
    };
    let tail = async {
        let mut shown = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = std::fs::read(&log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            // Whole lines while it runs; the rest when it is done.
            let upto = if finished {
                text.len()
            } else {
                text.rfind('\n').map_or(0, |i| i + 1)
            };
            for line in text[..upto].lines().skip(shown) {
                io.line(line);
                shown += 1;
            }
            if finished {
                break;
            }
        }
    };
    let (code, ()) = tokio::join!(task, tail);
    let _ = std::fs::remove_file(&log);
    if let Some(p) = machine.host_path(&script_file) {
        let _ = std::fs::remove_file(p);
    }
    Some(code)
}

/// What a PowerShell session carries between statements.
struct PsState {
    /// A statement failed (`Write-Error`, an unknown term).
    failed: bool,
    /// `$LastExitCode`.
    last_exit: i32,
    /// Variables set to a path: `$x = "P"` or
    /// `$x = [System.IO.Path]::GetFullPath("P")` (names in lower case).
    paths: std::collections::HashMap<String, String>,
    /// The process's environment (`$env:NAME`; names in lower case, as
    /// Windows compares them without case).
    env: std::collections::HashMap<String, String>,
}

impl PsState {
    /// A new PowerShell process: the environment a service session gives
    /// it (`TEMP` and `TMP`).
    fn new() -> PsState {
        let env = [
            ("temp", r"C:\Windows\Temp"),
            ("tmp", r"C:\Windows\Temp"),
            ("systemroot", r"C:\Windows"),
            ("windir", r"C:\Windows"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        PsState {
            failed: false,
            last_exit: 0,
            paths: Default::default(),
            env,
        }
    }

    /// A script run with `&`: its own variables, the process's environment.
    fn child(&self) -> PsState {
        PsState {
            env: self.env.clone(),
            ..PsState::new()
        }
    }

    /// An argument's value: a double-quoted string with `$env:NAME` and
    /// `${env:NAME}` expanded (an unset one is empty) and backtick escapes
    /// undone, a single-quoted one as it is, a bare `$env:NAME`; anything
    /// else unquoted, as before.
    fn value(&self, arg: &str) -> String {
        let arg = arg.trim();
        if let Some(name) = env_name(arg).filter(|(_, len)| *len == arg.len()) {
            return self.env_var(name.0);
        }
        match arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
            Some(inner) if arg.len() >= 2 => self.expand(inner),
            _ => unquote(arg),
        }
    }

    fn env_var(&self, name: &str) -> String {
        self.env
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The inside of a double-quoted string.
    fn expand(&self, inner: &str) -> String {
        let mut out = String::new();
        let mut chars = inner.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '`' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, '0')) => out.push('\0'),
                    Some((_, e)) => out.push(e),
                    None => out.push('`'),
                },
                '$' => match env_name(&inner[i..]) {
                    Some((name, len)) => {
                        out.push_str(&self.env_var(name));
                        while chars.peek().is_some_and(|(j, _)| *j < i + len) {
                            chars.next();
                        }
                    }
                    None => out.push('$'),
                },
                c => out.push(c),
            }
        }
        out
    }

    /// The path an argument names: a variable's value, or the argument.
    fn path<'a>(&'a self, arg: &'a str) -> &'a str {
        arg.strip_prefix('$')
            .and_then(|name| self.paths.get(&name.to_ascii_lowercase()))
            .map_or(arg, String::as_str)
    }

    /// Remembers `$name = "P"` and `$name = [System.IO.Path]::GetFullPath("P")`.
    fn assign(&mut self, stmt: &str) {
        let Some((name, value)) = stmt[1..].split_once('=') else {
            return;
        };
        let value = value.trim();
        let name = name.trim();
        if let Some(var) = name
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("env:"))
            .map(|_| &name[4..])
        {
            let value = self.value(value);
            if value.is_empty() {
                self.env.remove(&var.to_ascii_lowercase());
            } else {
                self.env.insert(var.to_ascii_lowercase(), value);
            }
            return;
        }
        let value = value
            .strip_prefix("[System.IO.Path]::GetFullPath(")
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or(value);
        if value.starts_with(['"', '\'']) {
            self.paths
                .insert(name.trim().to_ascii_lowercase(), unquote(value));
        }
    }
}

/// `$env:NAME` or `${env:NAME}` at the start of `s`: the name and the
/// length of the reference.
fn env_name(s: &str) -> Option<(&str, usize)> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let prefix = s.get(..6)?;
    if prefix.eq_ignore_ascii_case("${env:") {
        let end = s.find('}')?;
        return Some((&s[6..end], end + 1));
    }
    if !prefix[..5].eq_ignore_ascii_case("$env:") {
        return None;
    }
    let len = s[5..].find(|c: char| !is_name(c)).unwrap_or(s.len() - 5);
    (len > 0).then(|| (&s[5..5 + len], 5 + len))
}

/// Whether a block ran to its end or hit `exit`.
enum Flow {
    Next,
    Exit(i32),
}

/// The text between the bracket at `open` and its partner.
fn bracketed(s: &str, open: usize) -> Option<(&str, &str)> {
    let (o, c) = match s.as_bytes().get(open)? {
        b'(' => ('(', ')'),
        b'{' => ('{', '}'),
        _ => return None,
    };
    let mut depth = 0;
    for (i, ch) in s[open..].char_indices() {
        if ch == o {
            depth += 1;
        } else if ch == c {
            depth -= 1;
            if depth == 0 {
                return Some((&s[open + 1..open + i], &s[open + i + 1..]));
            }
        }
    }
    None
}

/// Statements of a block, in order (newlines and `;` outside quotes and
/// brackets separate them).
fn ps_block<'a>(
    machine: &'a Machine,
    text: &'a str,
    io: &'a Io<'a>,
    st: &'a mut PsState,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + Send + 'a>> {
    Box::pin(async move {
        for stmt in split_top(text, &["\n", ";"]) {
            if let Flow::Exit(code) = ps_statement(machine, stmt.trim(), io, st).await {
                return Flow::Exit(code);
            }
        }
        Flow::Next
    })
}

/// A PowerShell script file, run with `&`: its `exit` ends only it.
async fn ps_file(machine: &Machine, path: &str, io: &Io<'_>, st: &mut PsState) -> Option<i32> {
    let text = std::fs::read_to_string(machine.host_path(path)?).ok()?;
    let mut inner = st.child();
    let code = match ps_block(machine, &text, io, &mut inner).await {
        Flow::Exit(code) => code,
        Flow::Next => i32::from(inner.failed),
    };
    st.env = inner.env;
    Some(code)
}

async fn ps_statement(machine: &Machine, stmt: &str, io: &Io<'_>, st: &mut PsState) -> Flow {
    if stmt.is_empty() || stmt.starts_with('#') {
        return Flow::Next;
    }
    // `& { ... }`: a script block, run in place.
    if let Some(rest) = stmt.strip_prefix('&') {
        let rest = rest.trim_start();
        let at = stmt.len() - rest.len();
        if rest.starts_with('{') {
            return match bracketed(stmt, at) {
                Some((body, _)) => ps_block(machine, body, io, st).await,
                None => unknown(stmt, io, st),
            };
        }
        // `&'C:/x.ps1'`: a script file.
        return match ps_file(machine, &unquote(rest), io, st).await {
            Some(code) => {
                st.last_exit = code;
                Flow::Next
            }
            None => unknown(rest, io, st),
        };
    }
    // `. C:/x.ps1`: dot-sourced, run in this session.
    if let Some(path) = stmt.strip_prefix(". ") {
        let text = machine
            .host_path(path.trim())
            .and_then(|p| std::fs::read_to_string(p).ok());
        return match text {
            Some(text) => ps_block(machine, &text, io, st).await,
            None => unknown(path, io, st),
        };
    }
    let w = words(stmt);
    let verb = w[0].to_ascii_lowercase();
    if verb == "if" || verb.starts_with("if(") {
        return ps_if(machine, stmt, io, st).await;
    }
    let rest = || st.value(&stmt[w[0].len()..]);
    match verb.as_str() {
        v if v.starts_with('$') && stmt.contains('=') => st.assign(stmt),
        "write-output" | "write-host" | "echo" => match host_name_format(machine, &rest()) {
            Some(text) => io.line(&text),
            None if rest().starts_with('(') => return unknown(&rest(), io, st),
            None => io.line(&rest()),
        },
        "write-error" => {
            io.err(&rest());
            st.failed = true;
        }
        "exit" => {
            return Flow::Exit(match w.get(1).map(String::as_str) {
                Some(n) if n.eq_ignore_ascii_case("$lastexitcode") => st.last_exit,
                Some(n) => n.parse().unwrap_or(0),
                None => 0,
            })
        }
        "start-sleep" => {
            let (unit, n) = match w.get(1).map(|s| s.to_ascii_lowercase()) {
                Some(f) if f.starts_with("-m") => (0.001, w.get(2)),
                Some(f) if f.starts_with('-') => (1.0, w.get(2)),
                _ => (1.0, w.get(1)),
            };
            let n: f64 = n.and_then(|n| n.parse().ok()).unwrap_or(0.0);
            tokio::time::sleep(Duration::from_secs_f64(n * unit)).await;
        }
        "test-path" => io.line(if test_path(machine, &w[1..], st) {
            "True"
        } else {
            "False"
        }),
        "remove-item" | "rm" | "del" => {
            if let Some(p) = w
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .and_then(|p| machine.host_path(st.path(p)))
            {
                let _ = std::fs::remove_file(&p);
            }
        }
        "cmd" | "cmd.exe" => st.last_exit = Box::pin(cmd(machine, stmt, io)).await,
        _ => return unknown(&w[0], io, st),
    }
    Flow::Next
}

/// `("FORMAT" -f [System.Net.Dns]::GetHostName())`, the one expression
/// the stand-in evaluates (Packer's restart check prints it).
fn host_name_format(machine: &Machine, expr: &str) -> Option<String> {
    let inner = expr.strip_prefix('(')?.strip_suffix(')')?;
    let (format, arg) = inner.split_once(" -f ")?;
    if !arg
        .trim()
        .eq_ignore_ascii_case("[System.Net.Dns]::GetHostName()")
    {
        return None;
    }
    Some(unquote(format).replace("{0}", &machine.hostname))
}

/// `Test-Path [-Path] P`: whether P is on the drive.
fn test_path(machine: &Machine, args: &[String], st: &PsState) -> bool {
    args.iter()
        .find(|a| !a.starts_with('-'))
        .and_then(|p| machine.host_path(st.path(p)))
        .is_some_and(|p| p.exists())
}

/// `if (Test-Path P) { ... }`, the only condition the stand-in knows.
async fn ps_if(machine: &Machine, stmt: &str, io: &Io<'_>, st: &mut PsState) -> Flow {
    let Some(open) = stmt.find('(') else {
        return unknown(stmt, io, st);
    };
    let Some((cond, rest)) = bracketed(stmt, open) else {
        return unknown(stmt, io, st);
    };
    let cw = words(cond);
    if !cw
        .first()
        .is_some_and(|v| v.eq_ignore_ascii_case("test-path"))
    {
        return unknown(stmt, io, st);
    }
    let body_at = stmt.len() - rest.trim_start().len();
    let Some((body, _)) = bracketed(stmt, body_at) else {
        return unknown(stmt, io, st);
    };
    if test_path(machine, &cw[1..], st) {
        return ps_block(machine, body, io, st).await;
    }
    Flow::Next
}

/// An unknown term, reported as PowerShell reports it.
fn unknown(term: &str, io: &Io<'_>, st: &mut PsState) -> Flow {
    io.err(&format!(
        "{term} : The term '{term}' is not recognized as the name of a cmdlet, function, script file, or operable program."
    ));
    st.failed = true;
    Flow::Next
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// The upload's second half: the base64 lines in `tmp`, decoded into `dest`.
fn restore(machine: &Machine, tmp: &str, dest: &str, io: &Io<'_>) -> i32 {
    let (Some(tmp), Some(dest)) = (machine.host_path(tmp), machine.host_path(dest)) else {
        io.err("The given path's format is not supported.");
        return 1;
    };
    if dest.is_dir() {
        return 1;
    }
    if let Some(parent) = dest.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = std::fs::read_to_string(&tmp).unwrap_or_default();
    let mut bytes = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(b) => bytes.extend(b),
            Err(e) => {
                io.err(&format!("Exception calling \"FromBase64String\": {e}"));
                return 1;
            }
        }
    }
    match std::fs::write(&dest, bytes) {
        Ok(()) => 0,
        Err(e) => {
            io.err(&format!("{}: {e}", dest.display()));
            1
        }
    }
}

/// A download: the file's bytes as one base64 line.
fn read_back(machine: &Machine, path: &str, io: &Io<'_>) -> i32 {
    match machine.host_path(path).map(std::fs::read) {
        Some(Ok(b)) => {
            io.line(&base64::engine::general_purpose::STANDARD.encode(b));
            0
        }
        _ => {
            io.err(&format!(
                "Cannot find path '{path}' because it does not exist."
            ));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(drive: PathBuf, home: &str) -> Machine {
        Machine {
            drive,
            home: home.into(),
            hostname: "WIN-TEST".into(),
            power: std::sync::Arc::new(Power::new(super::super::power::Reboot::default())),
            username: "u".into(),
            password: "p$\"w".into(),
        }
    }

    #[test]
    fn windows_paths_map_into_the_drive_folder_and_never_out_of_it() {
        let m = machine(PathBuf::from("/d"), r"C:\Users\vagrant");
        assert_eq!(m.host_path(r"C:\a\b.txt"), Some("/d/a/b.txt".into()));
        assert_eq!(m.host_path("c:/a/b.txt"), Some("/d/a/b.txt".into()));
        assert_eq!(
            m.host_path(r#""%TEMP%\x.tmp""#),
            Some("/d/Windows/Temp/x.tmp".into())
        );
        assert_eq!(m.host_path("f"), Some("/d/Users/vagrant/f".into()));
        assert_eq!(m.host_path(r"C:\..\etc"), None);
        assert_eq!(m.host_path(r"D:\x"), None);
    }

    /// Runs `line` on a drive holding `files`; (exit code, stdout, stderr).
    fn run_on(files: &[(&str, &str)], line: &str) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path().to_path_buf(), r"C:\Users\u");
        for (p, text) in files {
            let p = m.host_path(p).unwrap();
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        run_with(&m, line)
    }

    /// Runs `line` on `m`; (exit code, stdout, stderr).
    fn run_with(m: &Machine, line: &str) -> (i32, String, String) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(m, line, tx));
        let (mut out, mut err, mut code) = (String::new(), String::new(), None);
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Out(Output::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
                Event::Out(Output::Stderr(b)) => err.push_str(&String::from_utf8_lossy(&b)),
                Event::Exit(c) => code = Some(c),
            }
        }
        (code.unwrap(), out, err)
    }

    #[test]
    fn packers_restart_commands_schedule_abort_and_check_a_restart() {
        let m = machine(PathBuf::from("/d"), r"C:\Users\u");
        let test = r#"shutdown /r /f /t 60 /c "packer restart test""#;
        assert_eq!(run_with(&m, test).0, 0);
        let (code, _, err) = run_with(&m, test);
        assert_eq!(code, 1190, "{err}");
        assert_eq!(run_with(&m, "shutdown /a").0, 0);
        let (code, _, err) = run_with(&m, "shutdown /a");
        assert_eq!(code, 1116, "{err}");
        assert_eq!(
            run_with(&m, r#"shutdown /r /f /t 0 /c "packer restart""#).0,
            0
        );
        let (code, _, err) = run_with(&m, test);
        assert_eq!(code, 1115, "{err}");
        assert!(err.contains("in progress"), "{err}");
        let check =
            r#"powershell -Command echo ("{0} restarted." -f [System.Net.Dns]::GetHostName())"#;
        assert_eq!(
            run_with(&m, check),
            (0, "WIN-TEST restarted.\r\n".into(), String::new())
        );
    }

    #[test]
    fn packers_powershell_and_windows_shell_command_shapes_run() {
        let files = [
            ("c:/Windows/Temp/vars.ps1", "$env:A=\"1\"; $env:B=\"2\"; "),
            (
                "c:/Windows/Temp/script.ps1",
                "Write-Output \"hi\"\nexit 3\n",
            ),
            (
                "c:/Windows/Temp/script.bat",
                "@echo off\r\nrem note\r\necho from bat\r\n",
            ),
        ];
        let ps = "powershell -executionpolicy bypass \"& { if (Test-Path variable:global:ProgressPreference){set-variable -name x -value 'y'};. c:/Windows/Temp/vars.ps1; &'c:/Windows/Temp/script.ps1'; exit $LastExitCode }\"";
        assert_eq!(run_on(&files, ps), (3, "hi\r\n".into(), String::new()));
        let bat = r#"set "PACKER_BUILDER_TYPE=libvirt" && "c:/Windows/Temp/script.bat""#;
        assert_eq!(
            run_on(&files, bat),
            (0, "from bat\r\n".into(), String::new())
        );
        let (code, _, err) = run_on(&files, "Get-Thing");
        assert_eq!(code, NOT_RECOGNISED);
        assert!(err.contains("'Get-Thing' is not recognized"), "{err}");
        let (code, _, err) = run_on(&files, "powershell -Command \"Get-Thing\"");
        assert_eq!(code, 1);
        assert!(
            err.contains("The term 'Get-Thing' is not recognized"),
            "{err}"
        );
    }

    /// `powershell -EncodedCommand` for `script`.
    fn encoded(script: &str) -> String {
        let enc: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
        format!(
            "powershell -executionpolicy bypass -encodedCommand {}",
            base64::engine::general_purpose::STANDARD.encode(enc)
        )
    }

    #[test]
    fn environment_variables_are_set_and_read_as_powershell_does() {
        // The shape of Packer's env-vars file, a value escaped as it
        // escapes them (`"` and `$` with a backtick).
        let files = [
            (
                "c:/Windows/Temp/vars.ps1",
                "$env:FOO=\"bar baz\"; $env:N=\"1\"; $env:Q=\"a`\"b`$c\"; ",
            ),
            (
                "c:/Windows/Temp/s.ps1",
                "Write-Output \"FOO=$env:FOO\"\nWrite-Output \"N=${env:N};Q=$env:Q;U=[$env:UNSET]\"\n\
                 Write-Output 'FOO=$env:FOO'\necho $env:n\n$env:FOO=\"changed\"\nexit 3\n",
            ),
        ];
        let script = ". c:/Windows/Temp/vars.ps1; &'c:/Windows/Temp/s.ps1'; \
                      Write-Output \"after: $env:FOO in $env:TEMP\"";
        let (code, out, err) = run_on(&files, &encoded(script));
        assert_eq!(
            out,
            "FOO=bar baz\r\nN=1;Q=a\"b$c;U=[]\r\nFOO=$env:FOO\r\n1\r\n\
             after: changed in C:\\Windows\\Temp\r\n"
        );
        assert_eq!((code, err.as_str()), (0, ""));
        // Each PowerShell is its own process: nothing carries over.
        let (_, out, _) = run_on(&files, &encoded("Write-Output \"[$env:FOO]\""));
        assert_eq!(out, "[]\r\n");
    }

    /// A wrapper of the shape Packer's `elevated_user` option uploads:
    /// a task registered through `Schedule.Service` from an XML
    /// definition running `cmd /c COMMAND > LOG 2>&1`, its log printed.
    fn elevated_wrapper(user: &str, password: &str) -> String {
        let inner = "powershell -executionpolicy bypass &#34;&amp; { . c:/Windows/Temp/vars.ps1; \
                     &amp;&#39;c:/Windows/Temp/s.ps1&#39;; exit $LastExitCode }&#34; \
                     &gt; %SYSTEMROOT%/Temp/packer-t.out 2&gt;&amp;1";
        format!(
            "$name = \"packer-t\"\n\
             $log = [System.Environment]::ExpandEnvironmentVariables(\"%SYSTEMROOT%/Temp/packer-t.out\")\n\
             $s = New-Object -ComObject \"Schedule.Service\"\n$s.Connect()\n$t = $s.NewTask($null)\n\
             $xml = [xml]@'\n<Task><Principals><Principal id=\"Author\"><UserId>{user}</UserId>\
             </Principal></Principals><Actions Context=\"Author\"><Exec><Command>cmd</Command>\
             <Arguments>/c {inner}</Arguments></Exec></Actions></Task>\n'@\n\
             $password = \"{password}\"\n\
             $f = $s.GetFolder(\"\\\")\n\
             $f.RegisterTaskDefinition($name, $t, 6, \"{user}\", $password, 1, $null) | Out-Null\n\
             $script = [System.Environment]::ExpandEnvironmentVariables(\"C:/Windows/Temp/w.ps1\")\n\
             exit $result\n"
        )
    }

    #[test]
    fn an_elevated_wrapper_runs_its_task_as_the_account_and_prints_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path().to_path_buf(), r"C:\Users\u");
        let put = |p: &str, text: &str| {
            let p = m.host_path(p).unwrap();
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let run = r#"powershell -executionpolicy bypass -file "C:/Windows/Temp/w.ps1""#;
        put("c:/Windows/Temp/vars.ps1", "$env:FOO=\"x y\"; ");
        put(
            "c:/Windows/Temp/s.ps1",
            "Write-Output \"elevated FOO=$env:FOO\"\nWrite-Error oops\nexit 4\n",
        );
        put(
            "c:/Windows/Temp/w.ps1",
            &elevated_wrapper(r".\u", "p`$`\"w"),
        );
        assert_eq!(
            run_with(&m, run),
            (4, "elevated FOO=x y\r\noops\r\n".into(), String::new())
        );
        assert!(!m.host_path("c:/Windows/Temp/w.ps1").unwrap().exists());
        assert!(!m
            .host_path("c:/Windows/Temp/packer-t.out")
            .unwrap()
            .exists());
        // SYSTEM needs no password; a wrong one is refused.
        put("c:/Windows/Temp/w.ps1", &elevated_wrapper("SYSTEM", ""));
        assert_eq!(run_with(&m, run).0, 4);
        put("c:/Windows/Temp/w.ps1", &elevated_wrapper("u", "wrong"));
        let (code, out, err) = run_with(&m, run);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.contains("The user name or password is incorrect"),
            "{err}"
        );
        let (code, _, err) = run_with(&m, r#"powershell -file "C:/none.ps1""#);
        assert_eq!(code, -196608);
        assert!(err.contains("-File parameter does not exist"), "{err}");
    }

    #[test]
    fn cmd_redirects_output_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = machine(dir.path().to_path_buf(), r"C:\Users\u");
        let read = |p: &str| std::fs::read_to_string(m.host_path(p).unwrap()).unwrap();
        assert_eq!(
            run_with(&m, "echo one > c:/a.txt"),
            (0, String::new(), String::new())
        );
        assert_eq!(run_with(&m, "echo two >> c:/a.txt").0, 0);
        assert_eq!(read("c:/a.txt"), "one\r\ntwo\r\n");
        let line = "powershell -Command \"Write-Output out; Write-Error bad\" > c:/b.txt";
        assert_eq!(run_with(&m, line), (1, String::new(), "bad\r\n".into()));
        assert_eq!(read("c:/b.txt"), "out\r\n");
        assert_eq!(run_with(&m, &format!("{line} 2>&1")).1, "");
        assert_eq!(read("c:/b.txt"), "out\r\nbad\r\n");
        assert_eq!(run_with(&m, "echo x > D:/x.txt").0, 1);
    }

    #[test]
    fn encoded_commands_decode_from_utf16le() {
        let enc: Vec<u8> = "echo hi"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let line = format!(
            "powershell -executionpolicy bypass -encodedCommand {}",
            base64::engine::general_purpose::STANDARD.encode(enc)
        );
        assert_eq!(encoded_script(&line).as_deref(), Some("echo hi"));
    }
}
