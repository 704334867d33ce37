//! The control protocol of the Strata before [`super::protocol::VERSION`] 1: one JSON line
//! `{"op", "user", "timeout_secs"}`, replies `{"state", "error"}` with the error as text. Spoken
//! only to a worker started by that older Strata and still running after an upgrade, so that the
//! VM can still be shut down, saved, paused or turned off; its next start runs a new worker.
//!
//! Such a worker refuses a versioned request without acting on it ("bad request"), so sending
//! the request again in the old shape is safe.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_api::VmState;

use super::protocol::{exchange, Verb};
use crate::error::{ErrorKind, HostError};

#[derive(Serialize)]
struct LegacyRequest<'a> {
    op: &'static str,
    user: &'a str,
    timeout_secs: u32,
}

#[derive(Deserialize)]
struct LegacyReply {
    state: Option<VmState>,
    error: Option<String>,
}

/// Whether `line` is a reply of the old protocol: an object with a state and no version.
pub(super) fn is_legacy_reply(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
        v.get("version").is_none() && v.get("state").is_some() && v.get("error").is_some()
    })
}

/// The old name of a verb ("stop" meant turn off there) and its timeout; none for verbs the old
/// protocol lacked.
fn op(verb: &Verb) -> Option<(&'static str, u32)> {
    Some(match verb {
        Verb::Ping => ("ping", 0),
        Verb::Pause => ("pause", 0),
        Verb::Resume => ("resume", 0),
        Verb::Reset => ("reset", 0),
        Verb::Shutdown { timeout_secs } => ("shutdown", *timeout_secs),
        Verb::TurnOff => ("stop", 0),
        Verb::Save => ("save", 0),
        Verb::NicAdd { .. }
        | Verb::NicRemove { .. }
        | Verb::NicLink { .. }
        | Verb::CopyFile { .. }
        | Verb::Freeze
        | Verb::Thaw
        | Verb::MediaChange { .. }
        | Verb::DiskAdd { .. }
        | Verb::Checkpoint { .. }
        | Verb::SetUndo { .. }
        | Verb::DiskRemove { .. }
        | Verb::Balloon { .. } => return None,
    })
}

/// Sends `verb` in the old shape; the old worker's refusals are conflicts, as they were.
pub(super) fn request(
    socket: &Path,
    user: &str,
    verb: &Verb,
    limit: Duration,
) -> Result<VmState, HostError> {
    let (op, timeout_secs) = op(verb).ok_or_else(|| {
        HostError::unsupported(format!(
            "the VM's worker was started by an older Strata, which cannot {}: restart the VM (or save and start it) to do that while it runs",
            verb.describe()
        ))
    })?;
    let req = LegacyRequest {
        op,
        user,
        timeout_secs,
    };
    let line = serde_json::to_vec(&req)
        .map_err(|e| HostError::internal(format!("cannot encode a worker request: {e}")))?;
    let reply = exchange(socket, &line, limit)?;
    decode(&reply)
}

fn decode(reply: &str) -> Result<VmState, HostError> {
    let reply: LegacyReply = serde_json::from_str(reply).map_err(|e| {
        HostError::internal(format!(
            "the VM's worker (an older Strata's) sent a bad reply ({e}): {:?}",
            reply.trim()
        ))
    })?;
    match (reply.error, reply.state) {
        (Some(e), _) => Err(HostError::new(ErrorKind::Conflict, e)),
        (None, Some(state)) => Ok(state),
        (None, None) => Err(HostError::internal(
            "the VM's worker (an older Strata's) replied without a state",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A worker of the old protocol, as it was: it refuses what it can't parse, without acting.
    fn old_worker(listener: UnixListener, requests: usize) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..requests {
                let (conn, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(conn.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let reply = match v.get("op").and_then(|o| o.as_str()) {
                    _ if v.get("version").is_some() => {
                        r#"{"state":"running","error":"bad request: unknown field `version`"}"#
                    }
                    Some("stop") => r#"{"state":"off","error":null}"#,
                    Some("pause") => {
                        r#"{"state":"paused","error":"VM 'a' is paused: cannot pause (resume it first, or turn it off)"}"#
                    }
                    _ => r#"{"state":"running","error":"unknown request"}"#,
                };
                (&conn).write_all(format!("{reply}\n").as_bytes()).unwrap();
                seen.push(line.trim().to_string());
            }
            seen
        })
    }

    #[test]
    fn an_old_worker_is_spoken_to_in_its_own_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let worker = old_worker(UnixListener::bind(&path).unwrap(), 4);
        let limit = Duration::from_secs(10);
        let state = super::super::protocol::request(&path, "alice", Verb::TurnOff, limit).unwrap();
        assert_eq!(state, VmState::Off);
        let e = super::super::protocol::request(&path, "alice", Verb::Pause, limit).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("cannot pause"), "{e}");
        let seen = worker.join().unwrap();
        assert!(seen[0].contains(r#""version":1"#), "{seen:?}");
        assert_eq!(seen[1], r#"{"op":"stop","user":"alice","timeout_secs":0}"#);
        assert_eq!(seen[3], r#"{"op":"pause","user":"alice","timeout_secs":0}"#);
    }

    #[test]
    fn only_unversioned_replies_with_a_state_are_old() {
        assert!(is_legacy_reply(
            r#"{"state":"running","error":"bad request: x"}"#
        ));
        assert!(!is_legacy_reply(r#"{"version":1,"state":"running"}"#));
        assert!(!is_legacy_reply("garbage"));
        assert!(decode(r#"{"state":null,"error":null}"#).is_err());
    }
}
