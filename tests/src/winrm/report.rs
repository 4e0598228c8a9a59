//! A stand-in's record as a block of text, for a stand-in that runs
//! inside a guest (`bed-winrm-guest`) and prints it on the serial
//! console before powering off: the test reads it back from the console
//! log.
//!
//! The block starts with a [`RECORD_BEGIN`] line and ends with `RECORD_END N`, N the
//! number of lines between; each of those is one JSON object (JSON
//! escapes line breaks, so an entry never spans lines): an address
//! clients connected to, the restarts that went down and the requests
//! dropped meanwhile, a command as [`Recorded`] holds it, or a file on
//! the `C:` drive with its size and SHA-256. Reading skips lines that are
//! not JSON objects (a kernel message on the console) and fails when the
//! count does not match, so a block cut short or broken is not taken
//! for a shorter record.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::{Recorded, StandIn};

use RECORD_BEGIN as BEGIN;
use RECORD_END as END;

/// The line that opens a record.
pub const RECORD_BEGIN: &str = "KVMBE-WINRM-RECORD-BEGIN";
/// The word that closes it, followed by the count of lines.
pub const RECORD_END: &str = "KVMBE-WINRM-RECORD-END";

/// A file on the stand-in's `C:` drive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriveFile {
    /// Its Windows path, `C:\dir\name`.
    pub path: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

impl DriveFile {
    /// Whether the file holds exactly `bytes`.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        self.size == bytes.len() as u64 && self.sha256 == hex::encode(Sha256::digest(bytes))
    }
}

/// What a stand-in received and holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// [`StandIn::local_addrs`].
    pub local_addrs: Vec<SocketAddr>,
    /// Restarts that went down ([`StandIn::phase`]).
    pub restarts: u64,
    /// [`StandIn::dropped`].
    pub dropped: u64,
    /// [`StandIn::commands`].
    pub commands: Vec<Recorded>,
    /// Every file on the drive, by path.
    pub files: Vec<DriveFile>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Local(SocketAddr),
    Power { restarts: u64, dropped: u64 },
    Command(Recorded),
    File(DriveFile),
}

impl Report {
    /// The stand-in's record and drive now.
    pub fn of(standin: &StandIn) -> anyhow::Result<Report> {
        let mut files = Vec::new();
        drive_files(standin.drive(), "C:", &mut files)?;
        Ok(Report {
            local_addrs: standin.local_addrs(),
            restarts: standin.phase().1,
            dropped: standin.dropped() as u64,
            commands: standin.commands(),
            files,
        })
    }

    /// The file at Windows path `path` (any case, `\` or `/`).
    pub fn file(&self, path: &str) -> Option<&DriveFile> {
        let norm = |p: &str| p.replace('/', "\\").to_ascii_lowercase();
        self.files.iter().find(|f| norm(&f.path) == norm(path))
    }

    /// The block of text, lines ending in `\n`.
    pub fn framed(&self) -> String {
        let entries = self
            .local_addrs
            .iter()
            .map(|a| Entry::Local(*a))
            .chain([Entry::Power {
                restarts: self.restarts,
                dropped: self.dropped,
            }])
            .chain(self.commands.iter().cloned().map(Entry::Command))
            .chain(self.files.iter().cloned().map(Entry::File));
        let mut out = format!("{BEGIN}\n");
        let mut n = 0;
        for e in entries {
            out.push_str(&serde_json::to_string(&e).expect("a record serializes"));
            out.push('\n');
            n += 1;
        }
        out.push_str(&format!("{END} {n}\n"));
        out
    }

    /// The last whole block in `text` (a console log: `\r\n` line ends
    /// are fine).
    pub fn from_console(text: &str) -> anyhow::Result<Report> {
        let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        let Some(start) = lines.iter().rposition(|l| l.trim() == BEGIN) else {
            bail!("no {BEGIN} line");
        };
        let Some(len) = lines[start + 1..].iter().position(|l| l.starts_with(END)) else {
            bail!("{BEGIN} without {END}: cut short");
        };
        let body = &lines[start + 1..start + 1 + len];
        let count: usize = lines[start + 1 + len][END.len()..]
            .trim()
            .parse()
            .context("the END line's count")?;
        let mut report = Report::default();
        let mut read = 0;
        for line in body.iter().filter(|l| l.starts_with('{')) {
            let entry: Entry = serde_json::from_str(line)
                .with_context(|| format!("a record line that is not an entry: {line}"))?;
            match entry {
                Entry::Local(a) => report.local_addrs.push(a),
                Entry::Power { restarts, dropped } => {
                    report.restarts = restarts;
                    report.dropped = dropped;
                }
                Entry::Command(c) => report.commands.push(c),
                Entry::File(f) => report.files.push(f),
            }
            read += 1;
        }
        if read != count {
            bail!("the record says {count} lines, {read} were read");
        }
        Ok(report)
    }
}

/// Appends every file under `dir` (Windows path `windows`), sorted.
fn drive_files(dir: &Path, windows: &str, out: &mut Vec<DriveFile>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{windows}\\{name}");
        if e.file_type()?.is_dir() {
            drive_files(&e.path(), &path, out)?;
        } else {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            out.push(DriveFile {
                path,
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            local_addrs: vec!["10.78.0.5:5986".parse().unwrap()],
            restarts: 1,
            dropped: 2,
            commands: vec![Recorded {
                shell_id: "S".into(),
                line: "powershell -EncodedCommand QQA=".into(),
                script: Some("Write-Output \"a\"\r\nexit 0".into()),
                exit_code: Some(0),
                signalled: false,
            }],
            files: vec![DriveFile {
                path: r"C:\Windows\Temp\x.bin".into(),
                size: 3,
                sha256: hex::encode(Sha256::digest(b"abc")),
            }],
        }
    }

    #[test]
    fn a_block_reads_back_from_a_console_with_crlf_and_kernel_lines() {
        let r = sample();
        let console = format!(
            "boot\r\n{}KVMBE-POWEROFF\r\n",
            r.framed().replace('\n', "\r\n").replacen(
                "\r\n{",
                "\r\n[   12.3] random: crng\r\n{",
                1
            )
        );
        let back = Report::from_console(&console).unwrap();
        assert_eq!(back, r);
        assert!(back.file("c:/windows/temp/X.BIN").unwrap().holds(b"abc"));
        assert!(!back.file(r"C:\Windows\Temp\x.bin").unwrap().holds(b"abd"));
    }

    #[test]
    fn a_stand_in_reports_its_drive_and_the_address_a_client_used() {
        let dir = tempfile::tempdir().unwrap();
        let drive = dir.path().join("c");
        let standin = StandIn::start(super::super::Config {
            drive: Some(drive.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(standin.drive(), drive);
        std::fs::write(drive.join("Windows/Temp/a.txt"), "abc").unwrap();
        let _client = std::net::TcpStream::connect(standin.addr()).unwrap();
        let seen = crate::util::poll_until(std::time::Duration::from_secs(5), || {
            Some(standin.local_addrs()).filter(|a| !a.is_empty())
        });
        assert_eq!(seen, Some(vec![standin.addr()]));
        let r = Report::of(&standin).unwrap();
        assert_eq!(r.local_addrs, vec![standin.addr()]);
        assert_eq!(r.files.len(), 1, "{r:?}");
        assert!(r.file(r"C:\Windows\Temp\a.txt").unwrap().holds(b"abc"));
        drop(standin);
        assert!(
            drive.join("Users/vagrant").is_dir(),
            "a given drive is kept"
        );
    }

    #[test]
    fn a_block_cut_short_or_broken_is_refused() {
        let text = sample().framed();
        let lines: Vec<&str> = text.lines().collect();
        let short = format!("{}\n{}\n", lines[0], lines[1]);
        let e = Report::from_console(&short).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
        let dropped = [lines[0], lines[1], lines[2], lines[4], lines[5]].join("\n");
        let e = Report::from_console(&dropped).unwrap_err().to_string();
        assert!(e.contains("says 4 lines, 3 were read"), "{e}");
        let broken = text.replacen("{\"command\":{", "{\"command\":", 1);
        assert!(Report::from_console(&broken).is_err());
        assert!(Report::from_console("nothing").is_err());
    }
}
