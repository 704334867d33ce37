//! A client of qemu-guest-agent on the VM's virtio-serial channel (QEMU serves the channel's host
//! end on a Unix socket; the worker is its only client). The protocol is QMP-like JSON, one
//! request at a time, with no request ids: after a timeout a late reply could be taken for the
//! next one's, so every new connection starts with `guest-sync-delimited` (the agent answers
//! after a 0xFF byte that resets its parser and marks where fresh output starts), and a timed-out
//! call drops the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{ErrorKind, HostError};

/// The longest reply line read (a guest could otherwise make the worker buffer without end).
const MAX_LINE: u64 = 4 << 20;

/// The agent's channel.
pub struct Agent {
    path: PathBuf,
    conn: Mutex<Option<BufReader<UnixStream>>>,
}

fn gone(what: &str, e: &std::io::Error) -> HostError {
    let kind = match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ErrorKind::Hung,
        _ => ErrorKind::Gone,
    };
    let why = if kind == ErrorKind::Hung {
        "the guest agent did not answer in time (is qemu-guest-agent running in the guest?)"
            .to_string()
    } else {
        format!("the guest agent's channel: {e}")
    };
    HostError::new(kind, format!("{what}: {why}"))
}

impl Agent {
    /// The agent behind QEMU's socket `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        }
    }

    /// Runs `command` with `arguments` and returns its `return` value; waits `limit` for the
    /// answer. The agent's own refusals are `Refused` errors carrying its description.
    pub fn call(
        &self,
        command: &str,
        arguments: Option<Value>,
        limit: Duration,
    ) -> Result<Value, HostError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.exchange(&mut conn, command, arguments, limit, true);
        if result
            .as_ref()
            .is_err_and(|e| matches!(e.kind, ErrorKind::Hung | ErrorKind::Gone))
        {
            *conn = None;
        }
        result
    }

    /// Sends `command`, which answers nothing when it succeeds (`guest-shutdown`), unless another
    /// call holds the channel (then nothing is sent: `Ok(false)`).
    pub fn try_send(
        &self,
        command: &str,
        arguments: Option<Value>,
        limit: Duration,
    ) -> Result<bool, HostError> {
        let Ok(mut conn) = self.conn.try_lock() else {
            return Ok(false);
        };
        let result = self
            .exchange(&mut conn, command, arguments, limit, false)
            .map(|_| true);
        *conn = None;
        result
    }

    fn exchange(
        &self,
        conn: &mut Option<BufReader<UnixStream>>,
        command: &str,
        arguments: Option<Value>,
        limit: Duration,
        reply: bool,
    ) -> Result<Value, HostError> {
        if conn.is_none() {
            *conn = Some(self.connect(limit)?);
        }
        let c = conn
            .as_mut()
            .ok_or_else(|| HostError::internal("no agent connection"))?;
        let deadline = Instant::now() + limit;
        c.get_ref()
            .set_read_timeout(Some(limit))
            .map_err(|e| gone(command, &e))?;
        c.get_ref()
            .set_write_timeout(Some(limit))
            .map_err(|e| gone(command, &e))?;
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        c.get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| gone(command, &e))?;
        if !reply {
            return Ok(Value::Null);
        }
        let v = read_json(c, command, deadline)?;
        if let Some(e) = v.get("error") {
            let desc = e
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(HostError::new(
                ErrorKind::Refused,
                format!("the guest agent refused {command}: {desc}"),
            ));
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Connects and synchronizes: whatever an earlier client left unread is skipped.
    fn connect(&self, limit: Duration) -> Result<BufReader<UnixStream>, HostError> {
        let s = UnixStream::connect(&self.path).map_err(|e| gone("connect", &e))?;
        s.set_read_timeout(Some(limit))
            .map_err(|e| gone("connect", &e))?;
        s.set_write_timeout(Some(limit))
            .map_err(|e| gone("connect", &e))?;
        let deadline = Instant::now() + limit;
        let mut c = BufReader::new(s);
        let id = u64::from(std::process::id()) << 20 | u64::from(rand_u16());
        let sync = json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } });
        // A 0xFF first resets the agent's parser (a request half-sent on a dropped connection).
        let mut line = vec![0xFF];
        line.extend_from_slice(sync.to_string().as_bytes());
        line.push(b'\n');
        c.get_mut()
            .write_all(&line)
            .map_err(|e| gone("guest-sync-delimited", &e))?;
        // Everything up to the 0xFF marker is stale.
        let mut byte = [0u8; 1];
        let mut skipped = 0u64;
        loop {
            past(deadline, "guest-sync-delimited")?;
            c.read_exact(&mut byte)
                .map_err(|e| gone("guest-sync-delimited", &e))?;
            skipped += 1;
            if byte[0] == 0xFF {
                break;
            }
            if skipped > MAX_LINE {
                return Err(HostError::new(
                    ErrorKind::Hung,
                    "guest-sync-delimited: the guest agent sent too much without answering",
                ));
            }
        }
        loop {
            let v = read_json(&mut c, "guest-sync-delimited", deadline)?;
            if v.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(c);
            }
        }
    }
}

fn rand_u16() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // The low bits of the clock are as good an id as any: it only tells replies apart.
    u16::try_from(n & 0xFFFF).unwrap_or(0)
}

/// A call's overall deadline: past it, a trickling agent no longer keeps the caller waiting.
fn past(deadline: Instant, command: &str) -> Result<(), HostError> {
    if Instant::now() > deadline {
        Err(HostError::new(
            ErrorKind::Hung,
            format!("{command}: the guest agent did not answer in time"),
        ))
    } else {
        Ok(())
    }
}

/// Reads one JSON object before `deadline` (a line of at most [`MAX_LINE`] bytes; a 0xFF byte of
/// a late sync is skipped).
fn read_json(
    c: &mut BufReader<UnixStream>,
    command: &str,
    deadline: Instant,
) -> Result<Value, HostError> {
    loop {
        past(deadline, command)?;
        let mut buf = Vec::new();
        let n = c
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .map_err(|e| gone(command, &e))?;
        if !buf.ends_with(b"\n") && u64::try_from(n).unwrap_or(u64::MAX) >= MAX_LINE {
            return Err(HostError::new(
                ErrorKind::Internal,
                format!("{command}: the guest agent sent a reply longer than {MAX_LINE} bytes"),
            ));
        }
        if n == 0 {
            return Err(HostError::new(
                ErrorKind::Gone,
                format!("{command}: the guest agent's channel closed"),
            ));
        }
        let text: Vec<u8> = buf.into_iter().filter(|b| *b != 0xFF).collect();
        let text = String::from_utf8_lossy(&text);
        if text.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(text.trim()).map_err(|e| {
            HostError::new(
                ErrorKind::Internal,
                format!(
                    "{command}: the guest agent sent something unreadable ({e}): {}",
                    text.trim()
                ),
            )
        });
    }
}
