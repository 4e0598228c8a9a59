//! The launcher's state file (`[launcher] state_file`): what a restarted
//! launcher needs to pick up the jobs it had reserved and not yet seen
//! taken. Buildkite keeps a reserved job out of every listing until its
//! reservation lapses (wake and boot timeouts plus a minute), and only the
//! stack that reserved it can reserve it again; so the file keeps this
//! process's part of its stack keys and each such job, and the next
//! launcher reuses the one and places the others again at once, instead
//! of the jobs waiting out their reservations.
//!
//! The file is written whole to a temporary file beside it, synced and
//! renamed over it, so a launcher killed at any moment leaves the old
//! state or the new one. A lock (`flock` on `<state_file>.lock`, held
//! for the process's life) keeps a second launcher from sharing it: two
//! processes on one stack would both be told they reserved the same job.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::schedule::Job;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The process's part of its stack keys.
    pub id: String,
    /// Jobs reserved and not yet seen taken, with their queue.
    pub jobs: Vec<SavedJob>,
}

/// One reserved job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedJob {
    /// The queue it was listed in.
    pub queue: String,
    /// Its UUID.
    pub id: String,
    /// `agent_query_rules`.
    pub rules: Vec<String>,
    /// Its priority.
    pub priority: i64,
    /// When it was scheduled (RFC 3339).
    pub scheduled_at: String,
}

impl SavedJob {
    /// The job and queue as the scheduler takes them.
    pub fn into_job(self) -> (Job, String) {
        let job = Job {
            id: self.id,
            rules: self.rules,
            priority: self.priority,
            scheduled_at: self.scheduled_at,
        };
        (job, self.queue)
    }

    fn of(job: &Job, queue: &str) -> SavedJob {
        SavedJob {
            queue: queue.to_string(),
            id: job.id.clone(),
            rules: job.rules.clone(),
            priority: job.priority,
            scheduled_at: job.scheduled_at.clone(),
        }
    }
}

/// Why the state file could not be taken; each names the setting.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The lock file beside it cannot be opened (or made).
    #[error(
        "launcher.state_file: cannot open {}: {source}; give a path in a folder \
         the launcher may write",
        lock_path.display()
    )]
    OpenLock {
        /// The lock file.
        lock_path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "launcher.state_file: another launcher is running with {}; give each \
         launcher its own state_file",
        .0.display()
    )]
    Taken(PathBuf),
    /// Locking failed otherwise.
    #[error("launcher.state_file: cannot lock {}: {source}", lock_path.display())]
    Lock {
        /// The lock file.
        lock_path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file holds something else.
    #[error(
        "launcher.state_file: {} is not a state this launcher wrote ({source}); \
         move it away to start without it",
        path.display()
    )]
    NotAState {
        /// The state file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The file exists and cannot be read.
    #[error("launcher.state_file: cannot read {}: {source}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// The open state file, locked for this process.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    // Held for the lock; closed (and so unlocked) when dropped.
    _lock: File,
    last: Vec<u8>,
}

impl StateFile {
    /// Locks and reads the state file at `path` (none yet is no state).
    pub fn open(path: &Path) -> Result<(StateFile, Option<Saved>), StateFileError> {
        let lock_path = lock_path(path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateFileError::OpenLock {
                lock_path: lock_path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => StateFileError::Taken(path.to_path_buf()),
                _ => StateFileError::Lock {
                    lock_path,
                    source: e,
                },
            });
        }
        let (saved, last) = match std::fs::read(path) {
            Ok(bytes) => {
                let saved: Saved =
                    serde_json::from_slice(&bytes).map_err(|source| StateFileError::NotAState {
                        path: path.to_path_buf(),
                        source,
                    })?;
                (Some(saved), bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Vec::new()),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let file = StateFile {
            path: path.to_path_buf(),
            _lock: lock,
            last,
        };
        Ok((file, saved))
    }

    /// Writes the state if it changed since the last write.
    pub fn save<'a>(
        &mut self,
        id: &str,
        jobs: impl IntoIterator<Item = (&'a Job, &'a str)>,
    ) -> std::io::Result<()> {
        let mut jobs: Vec<SavedJob> = jobs.into_iter().map(|(j, q)| SavedJob::of(j, q)).collect();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        let saved = Saved {
            id: id.to_string(),
            jobs,
        };
        let mut bytes = serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if bytes == self.last {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.last = bytes;
        Ok(())
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.to_string(),
            rules: vec!["queue=linux".to_string()],
            priority: 3,
            scheduled_at: "2026-12-07T10:00:00Z".to_string(),
        }
    }

    #[test]
    fn what_is_saved_reads_back_in_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (mut f, saved) = StateFile::open(&path).unwrap();
        assert_eq!(saved, None);
        let (a, b) = (job("b-job"), job("a-job"));
        f.save("abc123", [(&a, "linux"), (&b, "default")]).unwrap();
        drop(f);

        let (_f, saved) = StateFile::open(&path).unwrap();

        let saved = saved.unwrap();
        assert_eq!(saved.id, "abc123");
        let jobs: Vec<(Job, String)> = saved.jobs.into_iter().map(SavedJob::into_job).collect();
        assert_eq!(jobs, [(b, "default".to_string()), (a, "linux".to_string())]);
    }

    #[test]
    fn a_second_launcher_on_the_same_file_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (_held, _) = StateFile::open(&path).unwrap();

        let e = StateFile::open(&path).unwrap_err().to_string();

        assert_eq!(
            e,
            format!(
                "launcher.state_file: another launcher is running with {}; give each \
                 launcher its own state_file",
                path.display()
            )
        );
    }

    #[test]
    fn a_file_that_is_not_a_state_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "not json").unwrap();

        let e = StateFile::open(&path).unwrap_err().to_string();

        assert!(e.contains("is not a state this launcher wrote"), "{e}");
        assert!(e.contains("move it away"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json");
    }

    #[test]
    fn an_unchanged_state_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let (mut f, _) = StateFile::open(&path).unwrap();
        let j = job("a");
        f.save("id", [(&j, "q")]).unwrap();
        std::fs::remove_file(&path).unwrap();

        f.save("id", [(&j, "q")]).unwrap();
        assert!(!path.exists(), "written again although unchanged");
        f.save("id", []).unwrap();
        assert!(path.exists());
    }
}
