//! The NBD server: fixed-newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`, `NBD_OPT_LIST`,
//! `NBD_OPT_ABORT`, `NBD_OPT_EXPORT_NAME`), then READ, WRITE, FLUSH, TRIM, WRITE_ZEROES and DISC
//! with FUA, simple replies. One thread per connection; every connection shares one backend,
//! whose flush makes every completed write durable, so multi-conn is advertised.
//!
//! Hostile input never reaches the backend unchecked: a bad magic, an oversized option or write
//! payload, or unknown client flags close that connection; a request outside the export gets
//! EINVAL; a vanished client ends its own thread only.

use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proto::*;
use crate::{Backend, BackendError};

/// One named export.
#[derive(Clone)]
pub struct Export {
    /// The export name clients ask for ("" also selects it).
    pub name: String,
    /// What is served.
    pub backend: Arc<dyn Backend>,
}

impl Export {
    fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
        if self.backend.read_only() {
            f |= TFLAG_READ_ONLY;
        } else {
            f |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
        }
        f
    }

    fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// Most connections served at once; more are closed at once (each may hold a request buffer).
pub const MAX_CONNECTIONS: usize = 32;
/// A client must finish the handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A reply that a client does not read within this time ends its connection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What both socket kinds offer.
trait Conn: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> io::Result<Self>;
    fn timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

impl Conn for TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_nodelay(true)?;
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// Accepts connections on a Unix socket forever, a thread each.
pub fn serve_unix(listener: UnixListener, export: Export) -> io::Result<()> {
    accept_loop(|| listener.accept().map(|(s, _)| s), &export)
}

/// Accepts connections on a TCP socket forever, a thread each.
pub fn serve_tcp(listener: TcpListener, export: Export) -> io::Result<()> {
    accept_loop(|| listener.accept().map(|(s, _)| s), &export)
}

/// Never returns: accept errors (a full file table, an aborted connection) are logged and the
/// loop goes on after a pause, so one bad moment never takes the disk offline.
fn accept_loop<C: Conn>(
    mut accept: impl FnMut() -> io::Result<C>,
    export: &Export,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match accept() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("strata-nbd: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            eprintln!("strata-nbd: more than {MAX_CONNECTIONS} connections: one refused");
            continue; // dropped: closed
        }
        active.fetch_add(1, Ordering::SeqCst);
        let export = export.clone();
        let counter = active.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || {
                if let Ok(reader) = stream.duplicate() {
                    let _ = serve_conn(reader, stream, &export);
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            eprintln!("strata-nbd: cannot start a connection thread: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_conn<C: Conn>(reader: C, writer: C, export: &Export) -> io::Result<()> {
    writer.timeouts(Some(HANDSHAKE_TIMEOUT), Some(REPLY_TIMEOUT))?;
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let mut w = writer;
    if handshake(&mut r, &mut w, export)? {
        // Idle clients are fine once connected: no read timeout in transmission.
        w.timeouts(None, Some(REPLY_TIMEOUT))?;
        transmission(&mut r, &mut w, export)?;
    }
    Ok(())
}

/// Serves one connection until the client disconnects or misbehaves.
pub fn handle(reader: impl Read, mut w: impl Write, export: &Export) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    if handshake(&mut r, &mut w, export)? {
        transmission(&mut r, &mut w, export)?;
    }
    Ok(())
}

fn closed(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Option haggling. `Ok(true)`: go on to transmission.
fn handshake(r: &mut impl Read, w: &mut impl Write, export: &Export) -> io::Result<bool> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello)?;
    let client_flags = read_u32(r)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(closed("unknown client flags"));
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    loop {
        if read_u64(r)? != IHAVEOPT {
            return Err(closed("bad option magic"));
        }
        let option = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION {
            return Err(closed("option too long"));
        }
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        r.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                if !export.matches(&data) {
                    return Err(closed("unknown export"));
                }
                let mut b = Vec::with_capacity(134);
                b.extend_from_slice(&export.backend.size().to_be_bytes());
                b.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&b)?;
                return Ok(true);
            }
            OPT_ABORT => {
                write_option_reply(w, option, REP_ACK, &[])?;
                return Ok(false);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    write_option_reply(w, option, REP_ERR_INVALID, &[])?;
                    continue;
                }
                let name = export.name.as_bytes();
                let mut d = Vec::with_capacity(4 + name.len());
                d.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
                d.extend_from_slice(name);
                write_option_reply(w, option, REP_SERVER, &d)?;
                write_option_reply(w, option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let Some(name) = parse_info_request(&data) else {
                    write_option_reply(w, option, REP_ERR_INVALID, &[])?;
                    continue;
                };
                if !export.matches(name) {
                    write_option_reply(w, option, REP_ERR_UNKNOWN, b"no such export")?;
                    continue;
                }
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&export.backend.size().to_be_bytes());
                info.extend_from_slice(&export.transmission_flags().to_be_bytes());
                write_option_reply(w, option, REP_INFO, &info)?;
                let mut bs = Vec::with_capacity(14);
                bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(&4096u32.to_be_bytes());
                bs.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                write_option_reply(w, option, REP_INFO, &bs)?;
                write_option_reply(w, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    return Ok(true);
                }
            }
            _ => write_option_reply(w, option, REP_ERR_UNSUP, &[])?,
        }
    }
}

/// The export name of an INFO/GO request, if the payload is well formed.
fn parse_info_request(d: &[u8]) -> Option<&[u8]> {
    let name_len = usize::try_from(u32::from_be_bytes(d.get(0..4)?.try_into().ok()?)).ok()?;
    let name = d.get(4..4usize.checked_add(name_len)?)?;
    let rest = &d[4 + name_len..];
    let n = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
    (rest.len() == 2 + 2 * n).then_some(name)
}

fn errno(e: &BackendError) -> u32 {
    e.errno
}

fn transmission(r: &mut impl Read, w: &mut impl Write, export: &Export) -> io::Result<()> {
    let backend = &export.backend;
    let size = backend.size();
    let read_only = backend.read_only();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(req) = read_request(r)? else {
            return Err(closed("bad request magic"));
        };
        let len = u64::from(req.length);
        let in_range = req.offset.checked_add(len).is_some_and(|e| e <= size);
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let result: Result<Option<usize>, u32> = match req.kind {
            CMD_READ => {
                if req.length > MAX_REQUEST || !in_range {
                    Err(EINVAL)
                } else {
                    let n = usize::try_from(req.length).unwrap_or(0);
                    buf.resize(n, 0);
                    backend
                        .read_at(&mut buf[..n], req.offset)
                        .map(|()| Some(n))
                        .map_err(|e| errno(&e))
                }
            }
            CMD_WRITE => {
                if req.length > MAX_REQUEST {
                    return Err(closed("write payload too large"));
                }
                let n = usize::try_from(req.length).unwrap_or(0);
                buf.resize(n, 0);
                r.read_exact(&mut buf[..n])?;
                if read_only {
                    Err(EPERM)
                } else if !in_range {
                    Err(ENOSPC)
                } else {
                    backend
                        .write_at(&buf[..n], req.offset)
                        .and_then(|()| if fua { backend.flush() } else { Ok(()) })
                        .map(|()| None)
                        .map_err(|e| errno(&e))
                }
            }
            CMD_FLUSH => backend.flush().map(|()| None).map_err(|e| errno(&e)),
            CMD_TRIM | CMD_WRITE_ZEROES => {
                if read_only {
                    Err(EPERM)
                } else if !in_range {
                    Err(EINVAL)
                } else {
                    let res = if req.kind == CMD_TRIM {
                        backend.discard(req.offset, len)
                    } else {
                        backend.write_zeroes(req.offset, len, req.flags & CMD_FLAG_NO_HOLE == 0)
                    };
                    res.and_then(|()| if fua { backend.flush() } else { Ok(()) })
                        .map(|()| None)
                        .map_err(|e| errno(&e))
                }
            }
            CMD_DISC => {
                let _ = backend.flush();
                return Ok(());
            }
            _ => Err(EINVAL),
        };
        match result {
            Ok(Some(n)) => write_simple_reply(w, 0, req.handle, &buf[..n])?,
            Ok(None) => write_simple_reply(w, 0, req.handle, &[])?,
            Err(code) => write_simple_reply(w, code, req.handle, &[])?,
        }
        if buf.capacity() > 4 << 20 && buf.len() <= 1 << 20 {
            buf = Vec::new(); // do not keep a 32 MiB buffer for every idle connection
        }
    }
}
