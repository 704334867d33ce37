//! Serving one opened [`Disk`] on a Unix socket (and optionally TCP): what a VM's worker does for
//! each of its disks and what a plugged disk's server does. The caller opens the disk (read-only
//! or writable, taking its lock); this module only listens and serves.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use strata_vhd::Disk;

use crate::{Export, Stop, VhdBackend};

/// A disk being served: its listeners run on background threads until [`ServedDisk::stop`] or
/// the end of the process.
pub struct ServedDisk {
    /// The engine every connection shares: flush it before the process ends.
    pub backend: Arc<VhdBackend>,
    /// The Unix socket it is served on.
    pub socket: PathBuf,
    /// The TCP address it is also served on (the port chosen when `:0` was asked).
    pub tcp: Option<SocketAddr>,
    stop: Arc<Stop>,
    loops: Vec<JoinHandle<io::Result<()>>>,
}

/// How long [`ServedDisk::stop`] waits for connections busy with a request.
const STOP_LIMIT: Duration = Duration::from_secs(30);

impl ServedDisk {
    /// Stops serving: no new connection, every open one shut down (a request in progress
    /// finishes first), the socket file removed. Returns the engine, then held only by the
    /// caller: flush and drop it to close the disk and release its lock. Fails (naming the
    /// socket) when a connection is still busy after 30 s; the engine is then still shared.
    pub fn stop(self) -> Result<Arc<VhdBackend>, ServeError> {
        self.stop.begin();
        // Wake the accept loops: each returns on its next accept.
        let _ = UnixStream::connect(&self.socket);
        if let Some(addr) = self.tcp {
            let _ = std::net::TcpStream::connect(addr);
        }
        for l in self.loops {
            let _ = l.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        if !self.stop.wait(STOP_LIMIT) {
            return Err(ServeError {
                kind: ServeErrorKind::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "a connection was still busy after {} s",
                        STOP_LIMIT.as_secs()
                    ),
                )),
                address: self.socket.display().to_string(),
                op: "stop serving on",
            });
        }
        Ok(self.backend)
    }
}

/// What went wrong while setting up a served disk.
#[derive(Debug, thiserror::Error)]
pub enum ServeErrorKind {
    /// Another server answers on the socket: it is left alone.
    #[error("another server is already serving on it")]
    InUse,
    /// Listening (or starting a server thread) failed.
    #[error("{0}")]
    Io(#[source] io::Error),
}

/// An error of [`serve_disk`]: its kind, the address concerned and what was being done.
#[derive(Debug)]
pub struct ServeError {
    /// What went wrong.
    pub kind: ServeErrorKind,
    /// The socket path or TCP address.
    pub address: String,
    /// What was being done ("listen on", "start a server thread for").
    pub op: &'static str,
}

impl ServeError {
    fn io(e: io::Error, address: impl fmt::Display, op: &'static str) -> Self {
        Self {
            kind: ServeErrorKind::Io(e),
            address: address.to_string(),
            op,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ServeErrorKind::InUse => {
                write!(f, "another server is already serving on {}", self.address)
            }
            ServeErrorKind::Io(e) => write!(f, "cannot {} {}: {e}", self.op, self.address),
        }
    }
}

// The cause is part of the message (Display), so it is not repeated as a `source()`.
impl std::error::Error for ServeError {}

/// Serves `disk` as the export "" on the Unix socket `socket` and, when `tcp` is given (an
/// address `TcpListener::bind` accepts), on TCP too. Refuses when another server answers on the
/// socket; a stale socket file (nobody listening) is replaced. Nothing is left listening when it
/// fails. The listeners run until [`ServedDisk::stop`] or the end of the process.
pub fn serve_disk(disk: Disk, socket: &Path, tcp: Option<&str>) -> Result<ServedDisk, ServeError> {
    if UnixStream::connect(socket).is_ok() {
        return Err(ServeError {
            kind: ServeErrorKind::InUse,
            address: socket.display().to_string(),
            op: "listen on",
        });
    }
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(socket);
    }
    let unix =
        UnixListener::bind(socket).map_err(|e| ServeError::io(e, socket.display(), "listen on"))?;
    let bound = match tcp.map(bind_tcp).transpose() {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    };
    let backend = Arc::new(VhdBackend::new(disk));
    let export = Export {
        name: String::new(),
        backend: backend.clone(),
    };
    let stop = Arc::new(Stop::default());
    let mut addr = None;
    let mut loops = Vec::new();
    if let Some((listener, a)) = bound {
        let (e, st) = (export.clone(), stop.clone());
        loops.push(spawn("nbd-tcp", socket, move || {
            crate::serve_tcp_until(listener, e, &st)
        })?);
        addr = Some(a);
    }
    let st = stop.clone();
    loops.push(spawn("nbd-unix", socket, move || {
        crate::serve_unix_until(unix, export, &st)
    })?);
    Ok(ServedDisk {
        backend,
        socket: socket.to_path_buf(),
        tcp: addr,
        stop,
        loops,
    })
}

fn bind_tcp(addr: &str) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(addr).map_err(|e| ServeError::io(e, addr, "listen on"))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::io(e, addr, "listen on"))?;
    Ok((listener, local))
}

/// Starts an accept loop on its own thread; on failure the socket file is removed (a listener
/// already started on TCP stays, harmlessly, until the process ends).
fn spawn(
    name: &str,
    socket: &Path,
    body: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> Result<JoinHandle<io::Result<()>>, ServeError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .map_err(|e| {
            let _ = std::fs::remove_file(socket);
            ServeError::io(e, socket.display(), "start a server thread for")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_vhd::{NewDisk, OpenOptions};

    /// The test disk of `dir` (created on first use), opened read-only.
    fn disk(dir: &Path) -> Disk {
        let path = dir.join("d.vhd");
        if !path.exists() {
            strata_vhd::create(&path, 4 << 20, NewDisk::dynamic()).unwrap();
        }
        Disk::open(&path, OpenOptions::read()).unwrap()
    }

    #[test]
    fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        // A stale socket: bound, then its listener gone.
        drop(UnixListener::bind(&socket).unwrap());
        let served = serve_disk(disk(dir.path()), &socket, Some("127.0.0.1:0")).unwrap();
        assert!(UnixStream::connect(&socket).is_ok());
        let tcp = served.tcp.unwrap();
        assert!(tcp.port() != 0);
        assert!(std::net::TcpStream::connect(tcp).is_ok());
        let e = serve_disk(disk(dir.path()), &socket, None).err().unwrap();
        assert!(matches!(e.kind, ServeErrorKind::InUse), "{e}");
        assert_eq!(
            e.to_string(),
            format!("another server is already serving on {}", socket.display())
        );
        assert!(
            UnixStream::connect(&socket).is_ok(),
            "the first one still serves"
        );
    }

    #[test]
    fn stop_ends_every_connection_and_releases_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.vhd");
        strata_vhd::create(&path, 4 << 20, NewDisk::dynamic()).unwrap();
        let socket = dir.path().join("s.sock");
        let open = || Disk::open(&path, OpenOptions::write());
        let served = serve_disk(open().unwrap(), &socket, Some("127.0.0.1:0")).unwrap();
        let tcp = served.tcp.unwrap();
        // Two clients past the handshake's greeting: they hold the backend.
        let mut a = UnixStream::connect(&socket).unwrap();
        let mut b = std::net::TcpStream::connect(tcp).unwrap();
        let mut greeting = [0u8; 18];
        std::io::Read::read_exact(&mut a, &mut greeting).unwrap();
        std::io::Read::read_exact(&mut b, &mut greeting).unwrap();
        assert!(open().is_err(), "the served disk is locked");
        let backend = served.stop().unwrap();
        assert_eq!(Arc::strong_count(&backend), 1, "no connection holds it");
        drop(backend);
        assert!(open().is_ok(), "the lock went with the engine");
        assert!(!socket.exists());
        assert!(UnixStream::connect(&socket).is_err());
        assert!(std::net::TcpStream::connect(tcp).is_err());
        // The clients see the end of the stream.
        assert_eq!(std::io::Read::read(&mut a, &mut greeting).unwrap(), 0);
        assert_eq!(std::io::Read::read(&mut b, &mut greeting).unwrap_or(0), 0);
    }

    #[test]
    fn a_tcp_failure_leaves_no_socket_behind() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = serve_disk(disk(dir.path()), &socket, Some(&addr))
            .err()
            .unwrap();
        assert!(matches!(e.kind, ServeErrorKind::Io(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{e}"
        );
        assert!(!socket.exists());
        // A regular file in the way is not deleted: the bind fails instead.
        std::fs::write(&socket, b"not a socket").unwrap();
        assert!(serve_disk(disk(dir.path()), &socket, None).is_err());
        assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
    }
}
