//! Advisory locks: a read-write open takes an exclusive `flock` on the file, a read-only open (and
//! every parent in a chain) a shared one. When a lock is refused, the holder is looked up in
//! `/proc/locks` so the error can name it.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{ErrorKind, Result, VhdError};

/// How a file is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// No lock (inspection only).
    None,
    /// Shared: other readers allowed, no writer.
    Shared,
    /// Exclusive: the only user.
    Exclusive,
}

/// Takes the lock, waiting at most a moment: a process that forks (to run a program) briefly
/// shares every open file, and with it the locks, until the new program starts; a lock held that
/// way is gone within milliseconds, while a real holder still holds it after the wait.
pub(crate) fn lock(file: &File, mode: LockMode, path: &Path, op: &'static str) -> Result<()> {
    const TRIES: u32 = 25;
    for attempt in 0..TRIES {
        let res = match mode {
            LockMode::None => return Ok(()),
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if attempt + 1 < TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(VhdError::new(
                    ErrorKind::Locked {
                        holder: holder(file),
                    },
                    path,
                    op,
                ));
            }
            Err(TryLockError::Error(e)) => return Err(VhdError::io(e, path, op)),
        }
    }
    unreachable!("the loop returns")
}

/// "process 1234 (strata)" for the first other process holding a lock on the file.
fn holder(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let ino = meta.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let me = std::process::id();
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dev_ino) = fields.iter().find(|f| f.matches(':').count() == 2) else {
            continue;
        };
        let Some(found) = dev_ino
            .rsplit(':')
            .next()
            .and_then(|i| i.parse::<u64>().ok())
        else {
            continue;
        };
        if found != ino {
            continue;
        }
        let pos = fields.iter().position(|f| f == dev_ino)?;
        let pid: u32 = fields.get(pos.checked_sub(1)?)?.parse().ok()?;
        if pid == me {
            return Some(format!("this process ({pid})"));
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return Some(format!("process {pid} ({})", comm.trim()));
    }
    None
}
