//! Unplugging: unmount, stop the server, then commit or discard the undo disk.

use std::io;
use std::path::{Path, PathBuf};

use strata_vhd::ops::progress::Progress;
use strata_vhd::ops::undo;

use crate::error::{Context, ErrorKind, PlugError, Result};
use crate::plug::Plugs;
use crate::record::{fuse_dir, key, Plugged};
use crate::server::stop_server;

/// What to do with an undo disk's changes, decided by the caller (asking someone, or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UndoChoice {
    /// Merge them into the VHD.
    Commit,
    /// Throw them away.
    Discard,
}

/// What became of an undo disk at unplug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UndoOutcome {
    /// Merged into the VHD and removed.
    Committed,
    /// Deleted.
    Discarded,
    /// A commit was asked for but the server did not end cleanly (see
    /// [`Unplugged::problem`]): the undo disk is kept, for someone to commit or discard.
    Kept(PathBuf),
}

/// One disk unplugged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplugged {
    /// The disk.
    pub path: PathBuf,
    /// Its undo disk's fate (mode undo only).
    pub undo: Option<UndoOutcome>,
    /// What went wrong at its server's end, if anything (a crash, a failed final flush: its
    /// last writes may be missing).
    pub problem: Option<String>,
}

impl Plugs {
    /// Unplugs one disk (or all): unmounts, stops the server, then commits or discards its undo
    /// disk as `decide` says (asked only for disks with an undo disk; a commit reports to
    /// `progress`). A commit is never made over a server that did not end cleanly.
    pub fn unplug(
        &self,
        path: Option<&Path>,
        decide: &mut dyn FnMut(&Plugged) -> io::Result<UndoChoice>,
        progress: &dyn Progress,
    ) -> Result<Vec<Unplugged>> {
        let files = self.files();
        let targets: Vec<Plugged> = match path {
            Some(p) => {
                let (canon, _) = key(p)?;
                let found: Vec<Plugged> = files
                    .records()
                    .into_iter()
                    .filter(|r| r.path == canon)
                    .collect();
                if found.is_empty() {
                    return Err(PlugError::new(ErrorKind::NotPlugged(canon)));
                }
                found
            }
            None => files.records(),
        };
        let mut done = vec![];
        for rec in targets {
            let k = rec.key();
            let _guard = files.lock(&k)?;
            // Under the lock, the record must still be the one listed (not a new plug's).
            let current = files.load(&k);
            if current.as_ref().map(|c| (c.pid, c.pid_start)) != Some((rec.pid, rec.pid_start)) {
                continue;
            }
            if let Some(mnt) = &rec.mount_point {
                crate::mount::unmount(mnt, rec.loop_device.as_deref(), &fuse_dir(&rec.socket))?;
            }
            let problem = stop_server(&rec)?;
            let undo = match &rec.undo_path {
                Some(u) => Some(finish_undo(&rec, u, decide, progress, problem.is_some())?),
                None => None,
            };
            files.cleanup(&k, &rec);
            done.push(Unplugged {
                path: rec.path,
                undo,
                problem,
            });
        }
        Ok(done)
    }
}

/// Commits or discards the undo disk of a stopped server. A server that did not end cleanly
/// leaves its undo disk in place instead of a commit.
fn finish_undo(
    rec: &Plugged,
    undo_disk: &Path,
    decide: &mut dyn FnMut(&Plugged) -> io::Result<UndoChoice>,
    progress: &dyn Progress,
    troubled: bool,
) -> Result<UndoOutcome> {
    let choice = decide(rec).ctx(|| {
        format!(
            "{}: cannot decide what to do with the undo disk",
            rec.path.display()
        )
    })?;
    Ok(match choice {
        UndoChoice::Commit if troubled => UndoOutcome::Kept(undo_disk.to_path_buf()),
        UndoChoice::Commit => {
            undo::commit(&rec.path, progress)?;
            UndoOutcome::Committed
        }
        UndoChoice::Discard => {
            undo::discard(&rec.path)?;
            UndoOutcome::Discarded
        }
    })
}
