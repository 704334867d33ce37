//! The integration services, through the guest agent (`crate::agent`): a heartbeat thread that
//! pings it and keeps what the guest reports about itself in `guest.json`; the guest's clock set
//! from the host's after a restore or a resume; shut-down, file copy and file-system freeze.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use strata_api::{CopyDirection, CopyFile, GuestInfo, GuestInterface, Heartbeat, COPY_LIMIT};

use super::Shared;
use crate::agent::Agent;
use crate::error::{ErrorKind, HostError};
use crate::events::Code;

/// How often the agent is pinged, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(3);
const PING_LIMIT: Duration = Duration::from_secs(3);
/// Consecutive missed pings before the heartbeat is lost.
const MISSES: u32 = 2;
/// How often (in pings) what the guest reports is read again.
const INFO_EVERY: u32 = 10;
/// The size of a file-copy chunk (the agent moves base64 in JSON).
const CHUNK: usize = 48 * 1024;

/// Where the guest's last report is kept, in the VM's folder.
fn info_file(dir: &Path) -> std::path::PathBuf {
    dir.join("guest.json")
}

/// What the guest agent last reported, if anything.
pub fn read_guest_info(dir: &Path) -> Option<GuestInfo> {
    let text = std::fs::read_to_string(info_file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn agent(shared: &Shared) -> Result<&Agent, HostError> {
    shared.agent.as_ref().ok_or_else(|| {
        HostError::unsupported(format!(
            "VM '{}' has no guest agent channel: turn it off and `strata vm set {} --agent on`",
            shared.name, shared.name
        ))
    })
}

/// Starts the heartbeat thread of a VM with an agent channel.
pub(super) fn start_heartbeat(shared: std::sync::Arc<Shared>) {
    if shared.agent.is_none() {
        return;
    }
    let _ = std::fs::remove_file(info_file(&shared.dir));
    std::thread::spawn(move || {
        let (mut misses, mut pings) = (0u32, 0u32);
        while !shared.has_ended() {
            std::thread::sleep(PING_EVERY);
            let Some(a) = shared.agent.as_ref() else {
                return;
            };
            // A paused or saving guest cannot answer: that is no lost heartbeat.
            if shared.state() != strata_api::VmState::Running {
                continue;
            }
            let ok = a.call("guest-ping", None, PING_LIMIT).is_ok();
            misses = if ok { 0 } else { misses + 1 };
            let before = shared.heartbeat();
            let now = match (ok, before) {
                (true, _) => Heartbeat::Ok,
                (false, Heartbeat::Ok) if misses >= MISSES => Heartbeat::Lost,
                (false, b) => b,
            };
            if now != before {
                shared.set_heartbeat(now);
                match now {
                    Heartbeat::Ok => {
                        shared.log(Code::HeartbeatOk, "system", "the guest agent answers")
                    }
                    _ => shared.log(
                        Code::HeartbeatLost,
                        "system",
                        &format!("the guest agent stopped answering ({misses} pings missed)"),
                    ),
                }
            }
            // Cleared only once the clock is set: a failed try is tried again at the next ping.
            let pending = &shared.time_pending;
            if ok && pending.load(std::sync::atomic::Ordering::SeqCst) {
                // A memory state taken by a checkpoint was written with the file systems
                // frozen: thaw them (a no-op when nothing is frozen).
                thaw_restored(&shared, a);
                if sync_time(&shared, "system", "restored") {
                    pending.store(false, std::sync::atomic::Ordering::SeqCst);
                }
            }
            if ok && (now != before || pings % INFO_EVERY == 0) {
                save_guest_info(a, &shared.dir);
            }
            pings = pings.wrapping_add(1);
        }
    });
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Reads what the guest says about itself and keeps it in `guest.json` (best effort: an agent
/// that lacks a command leaves that part empty).
fn save_guest_info(a: &Agent, dir: &Path) {
    let os = a
        .call("guest-get-osinfo", None, PING_LIMIT)
        .unwrap_or(Value::Null);
    let host = a
        .call("guest-get-host-name", None, PING_LIMIT)
        .unwrap_or(Value::Null);
    let nets = a
        .call("guest-network-get-interfaces", None, PING_LIMIT)
        .unwrap_or(Value::Null);
    let interfaces = nets
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| GuestInterface {
                    name: text(i, "name").unwrap_or_default(),
                    mac: text(i, "hardware-address"),
                    addresses: i
                        .get("ip-addresses")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| {
                                    Some(format!("{}/{}", text(x, "ip-address")?, x.get("prefix")?))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let info = GuestInfo {
        os_name: text(&os, "pretty-name").or_else(|| text(&os, "name")),
        os_version: text(&os, "version"),
        kernel: text(&os, "kernel-release"),
        hostname: text(&host, "host-name"),
        interfaces,
        reported: crate::events::now(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&info) {
        let _ = crate::store::write_atomic(&info_file(dir), &bytes);
    }
}

/// Sets the guest's clock from the host's (after a restore or a resume); says so in the log and
/// tells whether it was set. Without an answering agent there is nothing to do.
/// Thaws a restored guest's file systems if its agent says they are frozen.
fn thaw_restored(shared: &Shared, a: &crate::agent::Agent) {
    let frozen = a
        .call("guest-fsfreeze-status", None, Duration::from_secs(10))
        .is_ok_and(|v| v.as_str() == Some("frozen"));
    if frozen {
        let _ = freeze(shared, "system", false);
    }
}

pub(super) fn sync_time(shared: &Shared, user: &str, why: &str) -> bool {
    let Some(a) = shared.agent.as_ref() else {
        return false;
    };
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    match a.call(
        "guest-set-time",
        Some(json!({ "time": ns })),
        Duration::from_secs(10),
    ) {
        Ok(_) => {
            shared.log(
                Code::GuestTimeSet,
                user,
                &format!("guest clock set from the host's ({why})"),
            );
            true
        }
        Err(e) => {
            if shared.heartbeat() == Heartbeat::Ok {
                shared.log(
                    Code::VmRequestFailed,
                    user,
                    &format!("the guest clock could not be set ({why}): {e}"),
                );
            }
            false
        }
    }
}

/// Asks the agent to power the guest off (no answer comes when it obeys); not when the agent
/// is silent or busy (a copy in progress), so a shut-down is never held up by it.
pub(super) fn shutdown(shared: &Shared) -> bool {
    shared.heartbeat() == Heartbeat::Ok
        && shared.agent.as_ref().is_some_and(|a| {
            a.try_send(
                "guest-shutdown",
                Some(json!({ "mode": "powerdown" })),
                PING_LIMIT,
            )
            .unwrap_or(false)
        })
}

/// Freezes (or thaws) the guest's file systems; returns how many.
pub(super) fn freeze(shared: &Shared, user: &str, freeze: bool) -> Result<u64, HostError> {
    let a = agent(shared)?;
    let cmd = if freeze {
        "guest-fsfreeze-freeze"
    } else {
        "guest-fsfreeze-thaw"
    };
    let n = a
        .call(cmd, None, Duration::from_secs(60))?
        .as_u64()
        .unwrap_or(0);
    let what = if freeze { "frozen" } else { "thawed" };
    shared.log(
        Code::GuestFreeze,
        user,
        &format!("{n} guest file system(s) {what}"),
    );
    Ok(n)
}

/// Copies a file into or out of the guest; returns the bytes copied.
pub(super) fn copy_file(shared: &Shared, user: &str, c: &CopyFile) -> Result<u64, HostError> {
    let a = agent(shared)?;
    let n = match c.direction {
        CopyDirection::ToGuest => to_guest(a, Path::new(&c.source), &c.destination)?,
        CopyDirection::FromGuest => from_guest(a, &c.source, Path::new(&c.destination))?,
    };
    let arrow = match c.direction {
        CopyDirection::ToGuest => "host → guest",
        CopyDirection::FromGuest => "guest → host",
    };
    shared.log(
        Code::GuestFileCopied,
        user,
        &format!("{} → {} ({arrow}, {n} bytes)", c.source, c.destination),
    );
    Ok(n)
}

fn too_big(what: &str, size: u64) -> HostError {
    HostError::invalid(format!(
        "{what} is {size} bytes: copy-file moves at most {COPY_LIMIT} bytes"
    ))
}

fn guest_open(a: &Agent, path: &str, mode: &str) -> Result<i64, HostError> {
    a.call(
        "guest-file-open",
        Some(json!({ "path": path, "mode": mode })),
        Duration::from_secs(10),
    )
    .map_err(|e| e.context(format_args!("in the guest, {path}")))?
    .as_i64()
    .ok_or_else(|| HostError::internal("guest-file-open answered no handle"))
}

fn guest_close(a: &Agent, handle: i64) {
    let _ = a.call(
        "guest-file-close",
        Some(json!({ "handle": handle })),
        Duration::from_secs(10),
    );
}

/// Opens a host file to copy: a regular file only (not a device, a FIFO or a symbolic link, whose
/// reading could block or never end), read no further than the limit.
fn open_source(src: &Path) -> Result<std::io::Take<std::fs::File>, HostError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| HostError::io(src, "open", e))?;
    let meta = f.metadata().map_err(|e| HostError::io(src, "read", e))?;
    if !meta.is_file() {
        return Err(HostError::invalid(format!(
            "{}: not a regular file: copy-file copies files only",
            src.display()
        )));
    }
    if meta.len() > COPY_LIMIT {
        return Err(too_big(&src.display().to_string(), meta.len()));
    }
    Ok(f.take(COPY_LIMIT))
}

/// A new temporary file beside `dest` (a random name, created exclusively, never through a
/// symbolic link, readable by root only).
fn create_temp(dest: &Path) -> Result<(std::fs::File, std::path::PathBuf), HostError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = dest.as_os_str().to_os_string();
    name.push(format!(".strata-part-{}", uuid::Uuid::new_v4().simple()));
    let tmp = std::path::PathBuf::from(name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| HostError::io(&tmp, "create", e))?;
    Ok((f, tmp))
}

fn to_guest(a: &Agent, src: &Path, dest: &str) -> Result<u64, HostError> {
    let mut f = open_source(src)?;
    let h = guest_open(a, dest, "w")?;
    let result = (|| {
        let (mut buf, mut total) = (vec![0u8; CHUNK], 0u64);
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| HostError::io(src, "read", e))?;
            if n == 0 {
                return Ok(total);
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
            let args = json!({ "handle": h, "buf-b64": data });
            a.call("guest-file-write", Some(args), Duration::from_secs(30))
                .map_err(|e| e.context(format_args!("in the guest, {dest}")))?;
            total += n as u64;
        }
    })();
    guest_close(a, h);
    result
}

fn from_guest(a: &Agent, src: &str, dest: &Path) -> Result<u64, HostError> {
    let (mut out, tmp) = create_temp(dest)?;
    let h = match guest_open(a, src, "r") {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let result = (|| {
        let (mut total, mut empty) = (0u64, 0u32);
        loop {
            let r = a
                .call(
                    "guest-file-read",
                    Some(json!({ "handle": h, "count": CHUNK })),
                    Duration::from_secs(30),
                )
                .map_err(|e| e.context(format_args!("in the guest, {src}")))?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r.get("buf-b64").and_then(Value::as_str).unwrap_or_default())
                .map_err(|e| {
                    HostError::new(
                        ErrorKind::Internal,
                        format!("the agent sent bad base64: {e}"),
                    )
                })?;
            total += data.len() as u64;
            if total > COPY_LIMIT {
                return Err(too_big(src, total));
            }
            out.write_all(&data)
                .map_err(|e| HostError::io(&tmp, "write", e))?;
            // An agent that keeps answering nothing without saying "end of file" is not waited for.
            empty = if data.is_empty() { empty + 1 } else { 0 };
            if empty > 3 {
                return Err(HostError::new(
                    ErrorKind::Hung,
                    format!("in the guest, {src}: the agent keeps sending nothing"),
                ));
            }
            if r.get("eof")
                .and_then(Value::as_bool)
                .unwrap_or(data.is_empty())
            {
                out.sync_all().map_err(|e| HostError::io(&tmp, "sync", e))?;
                return Ok(total);
            }
        }
    })();
    guest_close(a, h);
    match result {
        Ok(n) => {
            std::fs::rename(&tmp, dest).map_err(|e| HostError::io(dest, "write", e))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
