//! Starting a daemon and waiting for its word.
//!
//! The daemon's first line on stdout is one JSON [`Readiness`]; everything it says later goes to
//! its log (stderr). The starter gives up after a limit and kills a silent daemon, so a stuck
//! start never leaves a half-started process behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a daemon says once it is serving, or why it can't.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Readiness {
    /// It serves.
    Ready,
    /// It could not start; the message names the thing and the problem.
    Failed {
        /// Why.
        error: String,
        /// A stable name for what went wrong, when the daemon has one (the host's error kinds,
        /// `strata_api::ErrorKind`: `conflict`, `unsupported` …), so the starter can answer right.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
    },
}

impl Readiness {
    /// Writes this as the daemon's readiness line on stdout.
    pub fn report(&self) {
        let mut out = std::io::stdout();
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Why a daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The program could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It said it can't start.
    #[error("{error}")]
    Failed {
        /// Why.
        error: String,
        /// Its kind, as the daemon named it.
        kind: Option<String>,
    },
    /// It ended, or said something that is not a readiness line, before being ready.
    #[error("{what} ended without reporting ready{}", said(.line))]
    Ended {
        /// What it is (for the message).
        what: String,
        /// What it printed instead, if anything.
        line: String,
    },
    /// It said nothing within the limit and was killed.
    #[error("{what} did not report within {} s and was killed", .limit.as_secs())]
    Silent {
        /// What it is.
        what: String,
        /// The limit.
        limit: Duration,
    },
}

fn said(line: &str) -> String {
    if line.trim().is_empty() {
        String::new()
    } else {
        format!(" (it printed {:?})", line.trim())
    }
}

/// Starts `cmd` as a daemon named `what` (for messages): its own process group, stdin closed,
/// stdout read for the [`Readiness`] line (stderr is left as `cmd` sets it: the daemon's log).
/// Returns its pid once it reports ready; kills it if it stays silent for `limit`. The daemon is
/// reaped by a background thread whenever it ends.
pub fn spawn_daemon(cmd: &mut Command, what: &str, limit: Duration) -> Result<u32, DaemonError> {
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| DaemonError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
    }
    let pid = child.id();
    let started = crate::start_time(pid);
    // Reap it whenever it ends (a restarted starter is not its parent any more).
    std::thread::spawn(move || child.wait());
    let Ok(line) = rx.recv_timeout(limit) else {
        if crate::start_time(pid) == started {
            crate::kill(pid);
        }
        return Err(DaemonError::Silent {
            what: what.to_string(),
            limit,
        });
    };
    match serde_json::from_str::<Readiness>(line.trim()) {
        Ok(Readiness::Ready) => Ok(pid),
        Ok(Readiness::Failed { error, kind }) => Err(DaemonError::Failed { error, kind }),
        Err(_) => {
            // It printed something else, or closed its stdout: end it if it is still the process
            // started (it may have exited and its pid been reused already).
            if crate::start_time(pid) == started {
                crate::kill(pid);
            }
            Err(DaemonError::Ended {
                what: what.to_string(),
                line,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_ready_daemon_is_returned_alive() {
        let pid = spawn_daemon(
            &mut sh(r#"echo '{"status":"ready"}'; sleep 30"#),
            "test daemon",
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(crate::start_time(pid).is_some());
        crate::kill(pid);
    }

    #[test]
    fn a_failed_daemon_gives_its_reason() {
        let e = spawn_daemon(
            &mut sh(r#"echo '{"status":"failed","error":"disk x: locked","kind":"conflict"}'"#),
            "test daemon",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(&e, DaemonError::Failed { error, kind }
                if error == "disk x: locked" && kind.as_deref() == Some("conflict")),
            "{e}"
        );
    }

    #[test]
    fn a_silent_daemon_is_killed_and_a_mute_one_reported() {
        let e = spawn_daemon(
            &mut sh("sleep 30"),
            "test daemon",
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, DaemonError::Silent { .. }), "{e}");
        let e = spawn_daemon(
            &mut sh("echo hello"),
            "test daemon",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "test daemon ended without reporting ready (it printed \"hello\")"
        );
        let e =
            spawn_daemon(&mut sh("exit 3"), "test daemon", Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.to_string(), "test daemon ended without reporting ready");
        let e = spawn_daemon(
            &mut Command::new("/nonexistent/strata"),
            "test daemon",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, DaemonError::Spawn { .. }), "{e}");
    }
}
