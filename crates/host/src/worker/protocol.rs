//! The typed protocol between the host service and a VM's worker, on the worker's control socket:
//! one JSON [`Request`] per connection, one JSON [`Reply`]. Both sides use these types, so a new
//! verb is a compile error until the worker handles it. The version travels in every message: a
//! worker started by an older Strata refuses what it does not speak, by name.
//!
//! Names are the service's: `TurnOff` ends QEMU at once, `Pause` stops the guest's CPUs (QMP calls
//! that `stop`), `Shutdown` presses the ACPI power button.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_api::{CopyDirection, DiskSpec, NicModel, UndoAction, VmState};

use crate::error::{ErrorKind, HostError};

/// The protocol's version; a worker answers only requests of its own version.
pub const VERSION: u32 = 1;

/// What the service asks a worker to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Verb {
    /// Report the VM's state.
    Ping,
    /// Stop the guest's CPUs; memory is kept.
    Pause,
    /// Resume a paused guest.
    Resume,
    /// Reset the guest (the reset button).
    Reset,
    /// Press the ACPI power button; turn off after `timeout_secs` if the guest ignores it.
    Shutdown {
        /// Seconds to wait for the guest.
        timeout_secs: u32,
    },
    /// End QEMU at once (disks flushed).
    TurnOff,
    /// Save the memory and device state, then end QEMU.
    Save,
    /// Hot-add a network adapter: its backend (a tap, put on `bridge`, or the user-mode
    /// network), then the device at its slot.
    NicAdd {
        /// The adapter's slot (device `nic<slot>`, PCI slot 0x18 + slot).
        slot: u8,
        /// virtio or e1000.
        model: NicModel,
        /// Its MAC.
        mac: String,
        /// The tap QEMU makes (none: the user-mode network).
        tap: Option<String>,
        /// The bridge the tap goes on before the device appears (none: left unconnected).
        bridge: Option<String>,
        /// Its link (false: the cable is unplugged from the start).
        up: bool,
    },
    /// Hot-add a disk (virtio or SCSI, with its slot): served, connected, then its device.
    DiskAdd {
        /// The disk.
        disk: DiskSpec,
    },
    /// Hot-remove a disk (with its slot): the guest lets it go, then it is flushed and closed.
    DiskRemove {
        /// The disk.
        disk: DiskSpec,
    },
    /// This turn-off's or shut-down's undo action (instead of the VM's).
    SetUndo {
        /// Keep, commit or discard.
        action: UndoAction,
    },
    /// Take a checkpoint: freeze (agent), pause, write the memory state to `memory`, switch
    /// each disk from its active layer to a new one, resume, thaw.
    Checkpoint {
        /// (active layer, new layer) per disk.
        switches: Vec<(String, String)>,
        /// Where the memory and device state go (none: disks only).
        memory: Option<String>,
    },
    /// Hot-remove the adapter of `slot` (the guest must let it go), then its backend.
    NicRemove {
        /// The adapter's slot.
        slot: u8,
    },
    /// Copy a file into or out of the guest through its agent.
    CopyFile {
        /// The file read.
        source: String,
        /// The file written.
        destination: String,
        /// Which way.
        direction: CopyDirection,
    },
    /// Insert an ISO in the CD/DVD drive, or (none) eject it.
    MediaChange {
        /// The ISO.
        iso: Option<String>,
    },
    /// Set dynamic memory's target.
    Balloon {
        /// MiB.
        target_mib: u32,
    },
    /// Freeze the guest's file systems through its agent.
    Freeze,
    /// Thaw them.
    Thaw,
    /// Plug or unplug the adapter's virtual cable (the guest sees the link go up or down).
    NicLink {
        /// The adapter's slot.
        slot: u8,
        /// Link up.
        up: bool,
    },
}

impl Verb {
    /// What the verb does, as the object of "cannot …" in messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Ping => "report its state",
            Self::Pause => "pause it",
            Self::Resume => "resume it",
            Self::Reset => "reset it",
            Self::Shutdown { .. } => "shut it down",
            Self::TurnOff => "turn it off",
            Self::Save => "save its state",
            Self::NicAdd { .. } => "add a network adapter",
            Self::NicRemove { .. } => "remove a network adapter",
            Self::DiskAdd { .. } => "add a disk",
            Self::Checkpoint { .. } => "take a checkpoint",
            Self::SetUndo { .. } => "set its undo action",
            Self::DiskRemove { .. } => "remove a disk",
            Self::NicLink { .. } => "change a network adapter's link",
            Self::CopyFile { .. } => "copy a file through its guest agent",
            Self::Freeze => "freeze its file systems",
            Self::MediaChange { .. } => "change its CD/DVD",
            Self::Balloon { .. } => "change its memory",
            Self::Thaw => "thaw its file systems",
        }
    }

    /// Whether the request ends QEMU (its reply comes once the outcome is recorded).
    pub fn ends_qemu(&self) -> bool {
        matches!(self, Self::Shutdown { .. } | Self::TurnOff | Self::Save)
    }
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// Who asked (for the event log).
    pub user: String,
    /// What to do.
    pub verb: Verb,
}

/// A worker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The worker's [`VERSION`].
    pub version: u32,
    /// The VM's state after the request.
    pub state: VmState,
    /// Why the request was refused or failed, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HostError>,
}

impl Reply {
    /// The outcome: the state, or the error (its kind as the worker gave it).
    pub fn into_result(self) -> Result<VmState, HostError> {
        match self.error {
            None => Ok(self.state),
            Some(e) => Err(e),
        }
    }
}

/// Sends `verb` on behalf of `user` to the worker listening on `socket` and waits up to `limit`
/// for the reply. A missing socket is [`ErrorKind::Gone`], silence [`ErrorKind::Hung`]. A worker
/// started by a Strata from before this protocol (still running after an upgrade) answers in its
/// own shape; the request is then sent again in that shape ([`super::legacy`]).
pub fn request(
    socket: &Path,
    user: &str,
    verb: Verb,
    limit: Duration,
) -> Result<VmState, HostError> {
    let req = Request {
        version: VERSION,
        user: user.to_string(),
        verb,
    };
    let line = serde_json::to_vec(&req)
        .map_err(|e| HostError::internal(format!("cannot encode a worker request: {e}")))?;
    let reply = exchange(socket, &line, limit)?;
    if super::legacy::is_legacy_reply(&reply) {
        return super::legacy::request(socket, user, &req.verb, limit);
    }
    let reply = decode_reply(&reply).map_err(|e| e.context(worker(socket)))?;
    let verb = req.verb.describe();
    reply.into_result().map_err(|e| match e.kind {
        // A worker of an older Strata (same protocol version, fewer verbs) cannot do this.
        ErrorKind::Invalid if e.message.contains("unknown variant") => HostError::unsupported(
            format!("the VM's worker was started by an older Strata, which cannot {verb}: restart the VM to do that while it runs"),
        ),
        // The service sent something its worker does not understand: a bug, not the user's.
        ErrorKind::Invalid => e.as_kind(ErrorKind::Internal),
        _ => e,
    })
}

fn worker(socket: &Path) -> String {
    format!("the VM's worker ({})", socket.display())
}

/// Sends one request line on a new connection and reads the reply line.
pub(super) fn exchange(socket: &Path, line: &[u8], limit: Duration) -> Result<String, HostError> {
    let advice = "`strata vm show` tells the VM's state now";
    let gone = |e: std::io::Error| {
        HostError::new(
            ErrorKind::Gone,
            format!("{}: {e} ({advice})", worker(socket)),
        )
    };
    let mut s = UnixStream::connect(socket).map_err(gone)?;
    s.set_read_timeout(Some(limit)).map_err(gone)?;
    let mut line = line.to_vec();
    line.push(b'\n');
    s.write_all(&line).map_err(gone)?;
    let mut reply = String::new();
    match BufReader::new(s).read_line(&mut reply) {
        Ok(0) => Err(HostError::new(
            ErrorKind::Gone,
            format!(
                "{} closed the connection without a reply ({advice})",
                worker(socket)
            ),
        )),
        Ok(_) => Ok(reply),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(HostError::new(
                ErrorKind::Hung,
                format!(
                    "{} did not answer within {} s ({advice})",
                    worker(socket),
                    limit.as_secs()
                ),
            ))
        }
        Err(e) => Err(gone(e)),
    }
}

/// Reads a reply line, refusing one of another protocol version.
pub fn decode_reply(line: &str) -> Result<Reply, HostError> {
    let reply: Reply = serde_json::from_str(line)
        .map_err(|e| HostError::internal(format!("a bad reply ({e}): {:?}", line.trim())))?;
    if reply.version != VERSION {
        return Err(version_mismatch(reply.version));
    }
    Ok(reply)
}

/// Reads a request line; a request of another version or shape is refused with the reason.
pub fn decode_request(line: &str) -> Result<Request, HostError> {
    // The version is read first, so that a request of another version is named as such rather
    // than reported as malformed.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let versioned: Versioned = serde_json::from_str(line)
        .map_err(|e| HostError::invalid(format!("bad request ({e}): {:?}", line.trim())))?;
    if versioned.version != VERSION {
        return Err(version_mismatch(versioned.version));
    }
    serde_json::from_str(line)
        .map_err(|e| HostError::invalid(format!("bad request ({e}): {:?}", line.trim())))
}

fn version_mismatch(theirs: u32) -> HostError {
    HostError::unsupported(format!(
        "control protocol version {theirs} is not this Strata's ({VERSION}): the VM's worker and the host service come from different Strata versions; shut the VM down and start it again to run it under one Strata"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_their_shape_is_stable() {
        let req = Request {
            version: VERSION,
            user: "alice".into(),
            verb: Verb::Shutdown { timeout_secs: 30 },
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"user":"alice","verb":{"op":"shutdown","timeout_secs":30}}"#
        );
        assert_eq!(decode_request(&line).unwrap(), req);
        let off = r#"{"version":1,"user":"a","verb":{"op":"turn-off"}}"#;
        assert_eq!(decode_request(off).unwrap().verb, Verb::TurnOff);
    }

    #[test]
    fn unknown_verbs_fields_and_versions_are_refused_by_name() {
        let e = decode_request(r#"{"version":1,"user":"a","verb":{"op":"stop"}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("stop"), "{e}");
        let e =
            decode_request(r#"{"version":1,"user":"a","verb":{"op":"save"},"x":1}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        let e = decode_request(r#"{"version":2,"user":"a","verb":{"op":"warp"}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("version 2"), "{e}");
        let e = decode_request("not json").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
    }

    #[test]
    fn replies_carry_the_error_kind_across() {
        let reply = Reply {
            version: VERSION,
            state: VmState::Running,
            error: Some(HostError::new(
                ErrorKind::Hung,
                "QMP stop: QEMU did not answer",
            )),
        };
        let line = serde_json::to_string(&reply).unwrap();
        let back = decode_reply(&line).unwrap();
        assert_eq!(back, reply);
        let e = back.into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Hung);
        let ok = decode_reply(r#"{"version":1,"state":"paused"}"#).unwrap();
        assert_eq!(ok.into_result().unwrap(), VmState::Paused);
        assert_eq!(
            decode_reply(r#"{"version":9,"state":"paused"}"#)
                .unwrap_err()
                .kind,
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn a_missing_worker_socket_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let e = request(
            &dir.path().join("control.sock"),
            "a",
            Verb::Ping,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Gone);
    }

    #[test]
    fn a_silent_worker_is_hung() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(conn);
        });
        let e = request(&path, "a", Verb::Pause, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Hung, "{e}");
        t.join().unwrap();
    }
}
