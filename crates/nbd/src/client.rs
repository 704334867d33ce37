//! A small NBD client (fixed newstyle, `NBD_OPT_GO`, READ and DISC): enough to read an export
//! that another server provides, such as `qemu-nbd` opening a qcow2, VMDK, VDI or VHDX with
//! QEMU's own format drivers (`strata disk import`).
//!
//! Written by hand for the same reason as the server (no maintained crate speaks NBD_OPT_GO);
//! every length the server sends is checked before it is used, and a reply that does not match
//! the request closes the client with an error naming the mismatch.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::proto::*;

/// The largest read sent in one request (QEMU's servers accept 32 MiB; 2 MiB keeps memory low).
pub const MAX_READ: usize = 2 << 20;

/// A connection to one export, in the transmission phase.
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    size: u64,
    handle: u64,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn write_option(w: &mut impl Write, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| bad("option too long"))?;
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    w.write_all(&b)
}

impl Client {
    /// Connects to the Unix socket `socket` and opens export `name` ("" for the default).
    pub fn connect(socket: &Path, name: &str) -> io::Result<Self> {
        Self::over(UnixStream::connect(socket)?, name)
    }

    /// Opens export `name` over a connected stream (the handshake; then transmission).
    pub fn over(w: UnixStream, name: &str) -> io::Result<Self> {
        let mut r = BufReader::new(w.try_clone()?);
        let mut w2 = w.try_clone()?;
        if read_u64(&mut r)? != NBDMAGIC || read_u64(&mut r)? != IHAVEOPT {
            return Err(bad("not an NBD server (no fixed-newstyle greeting)"));
        }
        let mut flags = [0u8; 2];
        r.read_exact(&mut flags)?;
        let server_flags = u16::from_be_bytes(flags);
        if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(bad("the server does not speak fixed newstyle"));
        }
        let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
        let mut client_flags = FLAG_C_FIXED_NEWSTYLE;
        if no_zeroes {
            client_flags |= FLAG_C_NO_ZEROES;
        }
        w2.write_all(&client_flags.to_be_bytes())?;
        // NBD_OPT_GO: name length, name, no information requests.
        let name_len = u32::try_from(name.len()).map_err(|_| bad("export name too long"))?;
        let mut data = name_len.to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        write_option(&mut w2, OPT_GO, &data)?;
        let size = read_go_replies(&mut r)?;
        Ok(Self {
            r,
            w: w2,
            size,
            handle: 0,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads `buf.len()` bytes (at most [`MAX_READ`]) at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.len() > MAX_READ {
            return Err(bad("read larger than MAX_READ"));
        }
        let len = u32::try_from(buf.len()).map_err(|_| bad("read too long"))?;
        self.handle += 1;
        let mut req = Vec::with_capacity(28);
        req.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&CMD_READ.to_be_bytes());
        req.extend_from_slice(&self.handle.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&len.to_be_bytes());
        self.w.write_all(&req)?;
        if read_u32(&mut self.r)? != SIMPLE_REPLY_MAGIC {
            return Err(bad("unexpected reply (not a simple reply)"));
        }
        let error = read_u32(&mut self.r)?;
        if read_u64(&mut self.r)? != self.handle {
            // The stream is out of step: nothing read from it can be trusted any more.
            let _ = self.w.shutdown(std::net::Shutdown::Both);
            return Err(bad("a reply for another request"));
        }
        if error != 0 {
            return Err(io::Error::other(format!(
                "the server failed a read of {len} bytes at {offset}: error {error}"
            )));
        }
        self.r.read_exact(buf)
    }

    /// Ends the session politely (NBD_CMD_DISC).
    pub fn close(mut self) -> io::Result<()> {
        let mut req = Vec::with_capacity(28);
        req.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&CMD_DISC.to_be_bytes());
        req.extend_from_slice(&[0u8; 20]);
        self.w.write_all(&req)
    }
}

/// Reads NBD_OPT_GO's replies up to the final ACK; returns the export's size (NBD_INFO_EXPORT).
fn read_go_replies(r: &mut impl Read) -> io::Result<u64> {
    let mut size = None;
    loop {
        if read_u64(r)? != REPLY_MAGIC {
            return Err(bad("bad option reply magic"));
        }
        let option = read_u32(r)?;
        let kind = read_u32(r)?;
        let len = read_u32(r)?;
        if option != OPT_GO || len > MAX_OPTION {
            return Err(bad("an option reply that does not answer NBD_OPT_GO"));
        }
        let mut data = vec![0u8; usize::try_from(len).map_err(|_| bad("reply too long"))?];
        r.read_exact(&mut data)?;
        match kind {
            REP_ACK => return size.ok_or_else(|| bad("the server sent no export size")),
            REP_INFO if data.len() >= 12 && data[..2] == INFO_EXPORT.to_be_bytes() => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                size = Some(u64::from_be_bytes(b));
            }
            REP_INFO => {}
            k if k & (1 << 31) != 0 => {
                let msg = String::from_utf8_lossy(&data).to_string();
                return Err(bad(format!(
                    "the server refused the export: {msg} (error {k:#x})"
                )));
            }
            _ => return Err(bad("an unknown option reply")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reads_what_strata_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.vhd");
        strata_vhd::create(&path, 4 << 20, strata_vhd::NewDisk::dynamic()).unwrap();
        let disk = strata_vhd::Disk::open(&path, strata_vhd::OpenOptions::write()).unwrap();
        disk.write_at(&[7u8; 512], 1 << 20).unwrap();
        let socket = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let export = crate::Export {
            name: String::new(),
            backend: Arc::new(crate::VhdBackend::new(disk)),
        };
        std::thread::spawn(move || crate::serve_unix(listener, export));
        let mut c = Client::connect(&socket, "").unwrap();
        assert_eq!(c.size(), 4 << 20);
        let mut buf = vec![0u8; 1024];
        c.read_at(&mut buf, (1 << 20) - 512).unwrap();
        assert!(buf[..512].iter().all(|b| *b == 0));
        assert!(buf[512..].iter().all(|b| *b == 7));
        assert!(
            c.read_at(&mut buf, 4 << 20).is_err(),
            "past the end: an error"
        );
        c.close().unwrap();
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// A well-formed server side: greeting, GO's INFO_EXPORT and ACK, one read's reply.
    fn good() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&NBDMAGIC.to_be_bytes());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        let mut info = INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&(1u64 << 20).to_be_bytes());
        info.extend_from_slice(&0u16.to_be_bytes());
        for (kind, data) in [(REP_INFO, info), (REP_ACK, Vec::new())] {
            b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
            b.extend_from_slice(&OPT_GO.to_be_bytes());
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
            b.extend_from_slice(&data);
        }
        b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&[0xab; 512]);
        b
    }

    fn run(data: &[u8]) -> io::Result<Vec<u8>> {
        let (mut server, client) = UnixStream::pair()?;
        server.write_all(data)?;
        server.shutdown(std::net::Shutdown::Write)?;
        let mut c = Client::over(client, "")?;
        let mut buf = vec![0u8; 512];
        c.read_at(&mut buf, 0)?;
        Ok(buf)
    }

    #[test]
    fn a_hostile_server_gets_errors_never_a_panic() {
        let good = good();
        assert_eq!(run(&good).unwrap(), vec![0xab; 512]);
        // Every truncation fails cleanly.
        for n in 0..good.len() {
            assert!(run(&good[..n]).is_err(), "truncated at {n}");
        }
        // Every single flipped byte either still works or fails cleanly.
        for i in 0..good.len() - 512 {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = run(&bad);
        }
        // A reply claiming a huge option payload is refused before allocating it.
        let mut huge = good.clone();
        let len_at = 18 + 8 + 4 + 4;
        huge[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = run(&huge).unwrap_err();
        assert!(e.to_string().contains("NBD_OPT_GO"), "{e}");
    }
}
