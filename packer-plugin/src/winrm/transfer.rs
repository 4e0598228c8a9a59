//! Files to and from a Windows guest with nothing but cmd and PowerShell,
//! as Packer's WinRM communicator moves them: an upload appends base64
//! lines to a temporary file with `echo ... >> file` (one short command
//! each, within cmd's 8191-character line), then a PowerShell script
//! decodes the lines into the destination; a download prints the file
//! as base64 from PowerShell.

use std::path::Path;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Shell, WinRm, WinRmError};

/// cmd's longest command line.
const CMD_LINE_MAX: usize = 8191;

/// `powershell -EncodedCommand` for `script`: UTF-16LE, base64, so no
/// quoting of cmd or PowerShell can change it.
pub fn powershell(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    format!(
        "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
}

/// Commands per shell in a transfer, as Packer's file copier runs them:
/// the lowest limit among Windows versions' WinRM quotas.
const OPERATIONS_PER_SHELL: usize = 15;

/// Commands run in shells that are replaced after
/// [`OPERATIONS_PER_SHELL`] commands.
struct Shells<'a> {
    winrm: &'a WinRm,
    shell: Option<Shell<'a>>,
    used: usize,
}

impl Shells<'_> {
    /// Runs `line`: (exit code, stdout, stderr).
    async fn run(&mut self, line: &str) -> Result<(u32, Vec<u8>, Vec<u8>), WinRmError> {
        if self.used == OPERATIONS_PER_SHELL {
            self.close().await;
        }
        let shell = match &mut self.shell {
            Some(s) => s,
            None => self.shell.insert(self.winrm.open_shell().await?),
        };
        self.used += 1;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = shell.exec(line, &mut out, &mut err).await?;
        Ok((code, out, err))
    }

    async fn close(&mut self) {
        if let Some(mut s) = self.shell.take() {
            s.close().await;
        }
        self.used = 0;
    }
}

/// `s` inside a PowerShell double-quoted string.
fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '`' | '"' | '$') {
            out.push('`');
        }
        out.push(c);
    }
    out
}

impl WinRm {
    /// Writes everything `data` holds to the guest file `path`.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        mut data: R,
    ) -> Result<(), WinRmError> {
        let name = format!("packer-upload-{}.tmp", uuid::Uuid::new_v4());
        let tmp_cmd = format!(r"%TEMP%\{name}");
        let append = |chunk: &str| format!("echo {chunk} >> \"{tmp_cmd}\"");
        // The base64 of `raw` bytes fills what is left of the line.
        let room = CMD_LINE_MAX - append("").len() - 16;
        let raw = room / 4 * 3;
        let mut shells = Shells {
            winrm: self,
            shell: None,
            used: 0,
        };
        let result = async {
            let mut buf = vec![0u8; raw];
            loop {
                let n = read_full(&mut data, &mut buf).await?;
                if n == 0 {
                    break;
                }
                let chunk = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
                let (code, _, err) = shells.run(&append(&chunk)).await?;
                guest_ok(code, &err, || format!("appending to {tmp_cmd}"))?;
                if n < raw {
                    break;
                }
            }
            let script = restore_script(&format!(r"$env:TEMP\{name}"), path);
            let (code, _, err) = shells.run(&powershell(&script)).await?;
            guest_ok(code, &err, || format!("writing {path}"))
        }
        .await;
        shells.close().await;
        result
    }

    /// Copies the local folder `src` to the guest folder `dst`. As with
    /// Packer, `src` ending in `/` copies its contents into `dst`;
    /// otherwise the folder itself lands inside `dst`.
    pub async fn upload_dir(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
    ) -> Result<(), WinRmError> {
        let contents_only = src.as_os_str().to_string_lossy().ends_with('/');
        let mut base = dst.trim_end_matches(['\\', '/']).to_string();
        if !contents_only {
            if let Some(name) = src.file_name() {
                base = format!(r"{base}\{}", name.to_string_lossy());
            }
        }
        let mut files = Vec::new();
        walk(src, Path::new(""), exclude, &mut files)?;
        for rel in files {
            let local = src.join(&rel);
            let f = tokio::fs::File::open(&local)
                .await
                .map_err(|source| WinRmError::Local {
                    path: local.clone(),
                    source,
                })?;
            let remote = rel.components().fold(base.clone(), |acc, c| {
                format!(r"{acc}\{}", c.as_os_str().to_string_lossy())
            });
            self.upload(&remote, f).await?;
        }
        Ok(())
    }

    /// Copies the guest file `path` into `w`.
    pub async fn download<W: AsyncWrite + Unpin>(
        &self,
        path: &str,
        mut w: W,
    ) -> Result<(), WinRmError> {
        let script = format!(
            "$file_path = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath(\"{}\")\n\
             if (Test-Path -Path $file_path -PathType Leaf) {{\n\
             [System.Convert]::ToBase64String([System.IO.File]::ReadAllBytes($file_path))\n\
             }} else {{\n\
             Write-Error \"no such file: $file_path\"\n\
             exit 1\n\
             }}\n",
            ps_quote(path)
        );
        let (code, out, err) = self.run(&powershell(&script)).await?;
        guest_ok(code, &err, || format!("reading {path}"))?;
        let text: String = String::from_utf8_lossy(&out)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| WinRmError::Protocol {
                operation: "Receive",
                message: format!("the contents of {path} are not base64: {e}"),
            })?;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }
}

/// The PowerShell that turns the base64 lines in `tmp` (ours, and written
/// with `$env:TEMP` to expand) into `dest`, and removes `tmp`.
fn restore_script(tmp: &str, dest: &str) -> String {
    format!(
        r#"$tmp_file_path = [System.IO.Path]::GetFullPath("{tmp}")
$dest_file_path = [System.IO.Path]::GetFullPath("{dest}")
if (Test-Path -Path $dest_file_path -PathType Container) {{
  Write-Error "$dest_file_path is a folder"
  exit 1
}}
New-Item -ItemType Directory -Force -Path ([System.IO.Path]::GetDirectoryName($dest_file_path)) | Out-Null
$writer = [System.IO.File]::Create($dest_file_path)
try {{
  if (Test-Path $tmp_file_path) {{
    foreach ($line in [System.IO.File]::ReadLines($tmp_file_path)) {{
      if ($line.Trim()) {{
        $bytes = [System.Convert]::FromBase64String($line.Trim())
        $writer.Write($bytes, 0, $bytes.Length)
      }}
    }}
  }}
}} finally {{
  $writer.Close()
}}
Remove-Item -Force -ErrorAction SilentlyContinue $tmp_file_path
"#,
        dest = ps_quote(dest)
    )
}

fn guest_ok(code: u32, stderr: &[u8], what: impl FnOnce() -> String) -> Result<(), WinRmError> {
    if code == 0 {
        return Ok(());
    }
    Err(WinRmError::Guest {
        what: what(),
        code,
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    })
}

/// Reads until `buf` is full or the input ends.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let m = r.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    Ok(n)
}

/// The files under `dir`, as paths relative to the walk's start, sorted.
fn walk(
    root: &Path,
    rel: &Path,
    exclude: &[String],
    out: &mut Vec<std::path::PathBuf>,
) -> Result<(), WinRmError> {
    let dir = root.join(rel);
    let local = |source| WinRmError::Local {
        path: dir.clone(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(local)?
        .collect::<Result<_, _>>()
        .map_err(local)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        if crate::ssh::excluded(&r, exclude) {
            continue;
        }
        if e.path().is_dir() {
            walk(root, &r, exclude, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_commands_are_utf16le_base64_and_paths_are_quoted_for_powershell() {
        let line = powershell("echo hi");
        let b64 = line.rsplit(' ').next().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"e\0c\0h\0o\0 \0h\0i\0");
        assert_eq!(ps_quote(r#"C:\a "$b`"#), r#"C:\a `"`$b``"#);
    }
}
