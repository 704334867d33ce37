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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::proto::*;
use crate::stop::Stop;
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
    /// Shuts both directions down: the connection's blocked read returns end of stream.
    fn close(&self);
}

impl Conn for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
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
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_nodelay(true)?;
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// Accepts connections on a Unix socket forever, a thread each.
pub fn serve_unix(listener: UnixListener, export: Export) -> io::Result<()> {
    serve_unix_until(listener, export, &Arc::new(Stop::default()))
}

/// Accepts connections on a TCP socket forever, a thread each.
pub fn serve_tcp(listener: TcpListener, export: Export) -> io::Result<()> {
    serve_tcp_until(listener, export, &Arc::new(Stop::default()))
}

/// Accepts connections on a Unix socket until `stop` begins (the stopper then connects once
/// to wake the loop).
pub fn serve_unix_until(
    listener: UnixListener,
    export: Export,
    stop: &Arc<Stop>,
) -> io::Result<()> {
    accept_loop(|| listener.accept().map(|(s, _)| s), &export, stop)
}

/// Accepts connections on a TCP socket until `stop` begins.
pub fn serve_tcp_until(listener: TcpListener, export: Export, stop: &Arc<Stop>) -> io::Result<()> {
    accept_loop(|| listener.accept().map(|(s, _)| s), &export, stop)
}

/// Returns only once `stop` has begun: accept errors (a full file table, an aborted
/// connection) are logged and the loop goes on after a pause, so one bad moment never takes
/// the disk offline.
fn accept_loop<C: Conn>(
    mut accept: impl FnMut() -> io::Result<C>,
    export: &Export,
    stop: &Arc<Stop>,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match accept() {
            Ok(s) => s,
            Err(e) => {
                if stop.is_stopped() {
                    return Ok(());
                }
                eprintln!("strata-nbd: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stop.is_stopped() {
            return Ok(()); // the stopper's wake-up call, or a client too late: closed
        }
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            eprintln!("strata-nbd: more than {MAX_CONNECTIONS} connections: one refused");
            continue; // dropped: closed
        }
        // Registered before its thread exists, so `Stop::wait` never misses it; the thread
        // drops its share of the backend before it unregisters.
        let Ok(closer) = stream.duplicate() else {
            continue;
        };
        let Some(id) = stop.register(Box::new(move || closer.close())) else {
            return Ok(()); // stopping: closed
        };
        active.fetch_add(1, Ordering::SeqCst);
        let export = export.clone();
        let counter = active.clone();
        let stop_conn = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .spawn(move || {
                if let Ok(reader) = stream.duplicate() {
                    let _ = serve_conn(reader, stream, &export);
                }
                drop(export);
                counter.fetch_sub(1, Ordering::SeqCst);
                stop_conn.unregister(id);
            });
        if let Err(e) = spawned {
            eprintln!("strata-nbd: cannot start a connection thread: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
            stop.unregister(id);
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
pub fn handle(reader: impl Read, mut w: impl Write + Send, export: &Export) -> io::Result<()> {
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

/// Requests of one connection run on this many threads, so that a client with several requests
/// in flight (a queue depth above 1) has them served in parallel. Replies go out as each request
/// completes; NBD matches them to requests by handle.
const WORKERS: usize = 4;

/// Bytes of request data all connections together may hold at once (payloads being received,
/// read data waiting to be sent). A request that would pass the budget waits for room.
const INFLIGHT_BUDGET: usize = 256 << 20;

/// The shared budget of in-flight request bytes.
static INFLIGHT: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Takes `n` bytes of the in-flight budget, waiting for room; the guard gives them back.
fn reserve(n: usize) -> Reservation {
    let (lock, cv) = &INFLIGHT;
    let mut used = lock.lock().expect("budget");
    while *used > 0 && *used + n > INFLIGHT_BUDGET {
        used = cv.wait(used).expect("budget");
    }
    *used += n;
    Reservation(n)
}

struct Reservation(usize);

impl Drop for Reservation {
    fn drop(&mut self) {
        let (lock, cv) = &INFLIGHT;
        *lock.lock().expect("budget") -= self.0;
        cv.notify_all();
    }
}

/// One request handed from the connection's reader to its workers.
struct Job {
    req: Request,
    payload: Vec<u8>,
    _budget: Reservation,
}

fn transmission<R: Read, W: Write + Send>(
    r: &mut BufReader<R>,
    w: &mut W,
    export: &Export,
) -> io::Result<()> {
    let writer = Mutex::new(w);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WORKERS);
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    let in_flight = AtomicUsize::new(0);
    let reply = |job: &Job| {
        let (code, data) = execute(export, job);
        let mut w = writer.lock().expect("reply writer");
        if write_simple_reply(&mut **w, code, job.req.handle, &data).is_err() {
            failed.store(true, Ordering::SeqCst);
        }
    };
    let result = std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| loop {
                let job = match rx.lock().expect("job queue").recv() {
                    Ok(job) => job,
                    Err(_) => return, // the reader is done and the queue is empty
                };
                reply(&job);
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let result = read_requests(r, &tx, &failed, &in_flight, &reply);
        drop(tx);
        result
    });
    // Every request received has been answered (the workers are joined): a disconnect flushes.
    let _ = export.backend.flush();
    result
}

/// Reads requests (and write payloads, which must be consumed in stream order) and queues them.
/// Returns on DISC, end of stream, or a request that makes the stream unusable.
/// A request that arrives alone (nothing else buffered from the client, nothing in flight) runs
/// on the reader's own thread: no hand-off, the lowest latency for a client that waits for each
/// reply; requests that arrive together go to the workers.
fn read_requests<R: Read>(
    r: &mut BufReader<R>,
    tx: &SyncSender<Job>,
    failed: &AtomicBool,
    in_flight: &AtomicUsize,
    reply: &(dyn Fn(&Job) + Sync),
) -> io::Result<()> {
    loop {
        if failed.load(Ordering::SeqCst) {
            return Err(closed("a reply could not be sent"));
        }
        let Some(req) = read_request(r)? else {
            return Err(closed("bad request magic"));
        };
        if req.kind == CMD_DISC {
            return Ok(());
        }
        let len = usize::try_from(req.length).unwrap_or(usize::MAX);
        let mut payload = Vec::new();
        let budget = match req.kind {
            CMD_WRITE => {
                if req.length > MAX_REQUEST {
                    return Err(closed("write payload too large"));
                }
                let b = reserve(len);
                payload.resize(len, 0);
                r.read_exact(&mut payload)?;
                b
            }
            CMD_READ if req.length <= MAX_REQUEST => reserve(len),
            _ => reserve(0),
        };
        let job = Job {
            req,
            payload,
            _budget: budget,
        };
        if r.buffer().is_empty() && in_flight.load(Ordering::SeqCst) == 0 {
            reply(&job);
            continue;
        }
        in_flight.fetch_add(1, Ordering::SeqCst);
        if tx.send(job).is_err() {
            return Err(closed("the workers stopped"));
        }
    }
}

/// Runs one request; returns the NBD error (0 for success) and the data of a read.
fn execute(export: &Export, job: &Job) -> (u32, Vec<u8>) {
    let backend = &export.backend;
    let req = job.req;
    let len = u64::from(req.length);
    let in_range = req
        .offset
        .checked_add(len)
        .is_some_and(|e| e <= backend.size());
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let then_fua =
        |r: Result<(), BackendError>| r.and_then(|()| if fua { backend.flush() } else { Ok(()) });
    let outcome: Result<Vec<u8>, u32> = match req.kind {
        CMD_READ if req.length > MAX_REQUEST || !in_range => Err(EINVAL),
        CMD_READ => {
            let mut buf = vec![0u8; usize::try_from(req.length).unwrap_or(0)];
            backend
                .read_at(&mut buf, req.offset)
                .map(|()| buf)
                .map_err(|e| errno(&e))
        }
        CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES if backend.read_only() => Err(EPERM),
        CMD_WRITE if !in_range => Err(ENOSPC),
        CMD_WRITE => then_fua(backend.write_at(&job.payload, req.offset))
            .map(|()| vec![])
            .map_err(|e| errno(&e)),
        CMD_TRIM | CMD_WRITE_ZEROES if !in_range => Err(EINVAL),
        CMD_TRIM => then_fua(backend.discard(req.offset, len))
            .map(|()| vec![])
            .map_err(|e| errno(&e)),
        CMD_WRITE_ZEROES => {
            let unmap = req.flags & CMD_FLAG_NO_HOLE == 0;
            then_fua(backend.write_zeroes(req.offset, len, unmap))
                .map(|()| vec![])
                .map_err(|e| errno(&e))
        }
        CMD_FLUSH => backend.flush().map(|()| vec![]).map_err(|e| errno(&e)),
        _ => Err(EINVAL),
    };
    match outcome {
        Ok(data) => (0, data),
        Err(code) => (code, vec![]),
    }
}
