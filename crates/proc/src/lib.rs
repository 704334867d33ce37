//! # strata-proc
//!
//! Strata's long-lived helper processes — a VM's worker (started by the host service) and a
//! plugged disk's server (started by `strata disk plug`) — are started the same way and recognised
//! the same way:
//!
//! - [`spawn_daemon`] starts one in its own process group (so it outlives its starter), waits for
//!   its first stdout line, a typed [`Readiness`] that the daemon writes with [`Readiness::report`],
//!   kills it if it says nothing within the limit, and reaps it whenever it ends;
//! - a process is identified by its pid *and* its start time ([`ProcessId`]): a pid reused by an
//!   unrelated process is never taken for the daemon, and after a reboot ([`boot_id`]) no recorded
//!   process counts as alive.
//!
//! It knows nothing of VMs or disks.

mod daemon;

pub use daemon::{spawn_daemon, DaemonError, Readiness};

use std::process::Command;

/// A process as (pid, start time in clock ticks since boot): the pair a pid alone can't fake.
pub type ProcessId = (u32, u64);

/// A process's start time (field 22 of `/proc/PID/stat`), or `None` if it is gone or a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// The start time in a `/proc/PID/stat` line; `None` for a zombie or a malformed line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process recorded as (pid, start time) is still the same live process.
pub fn alive(process: Option<ProcessId>) -> bool {
    process.is_some_and(|(pid, start)| start_time(pid) == Some(start))
}

/// This process's identity.
pub fn me() -> ProcessId {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// Sends SIGKILL to `pid` (errors ignored: it may be gone already).
pub fn kill(pid: u32) {
    signal(pid, rustix::process::Signal::KILL);
}

/// Sends SIGTERM to `pid` (errors ignored: it may be gone already).
pub fn terminate(pid: u32) {
    signal(pid, rustix::process::Signal::TERM);
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Makes the child `cmd` starts receive SIGKILL when its parent dies (for QEMU under its worker:
/// without the worker its disks are gone).
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only makes the prctl
    // system call, which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_counted_after_the_command_name() {
        let stat = "42 (a) (b c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_start_time(zombie), None);
        assert_eq!(parse_start_time("42 (x"), None);
        assert_eq!(parse_start_time("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let (pid, start) = me();
        assert!(start > 0);
        assert!(alive(Some((pid, start))));
        assert!(!alive(Some((pid, start + 1))));
        assert!(!alive(None));
        assert_eq!(boot_id().len(), 36);
    }
}
