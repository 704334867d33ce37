//! `strata disk import SRC DST.vhd`: brings in a disk of another platform (qcow2, VMDK, VDI,
//! VHDX, raw …) by reading it through QEMU's own format drivers: `qemu-nbd --read-only` serves
//! SRC on a private socket, Strata's NBD client reads it, and the VHD engine writes DST (chunks
//! of zeros left unallocated), with progress. DST appears only when complete; qemu-nbd is
//! stopped whatever happens.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use strata_nbd::client::Client;
use strata_vhd::ops::convert::{self, ReadSource, Source};

/// qemu-nbd serving SRC; killed and its folder removed when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// The export read through the client (one request at a time).
struct Export {
    client: Mutex<Client>,
    size: u64,
    path: PathBuf,
}

impl ReadSource for Export {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        for (i, piece) in buf.chunks_mut(strata_nbd::client::MAX_READ).enumerate() {
            let at = off + (i * strata_nbd::client::MAX_READ) as u64;
            c.read_at(piece, at)?;
        }
        Ok(())
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// The format `qemu-img info` finds in `src`.
fn format_of(src: &Path) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(src)
        .output()
        .context("cannot run qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "{}: qemu-img cannot read it: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if let Some(b) = v["backing-filename"].as_str() {
        bail!(
            "{}: it has a backing file ({b}): import a standalone image (e.g. `qemu-img convert` it first), so that no other file is read",
            src.display()
        );
    }
    v["format"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: qemu-img found no format", src.display()))
}

/// Starts qemu-nbd on `src` and waits for its socket.
fn serve(src: &Path, format: &str) -> Result<(Server, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("strata-import").tempdir()?;
    let socket = dir.path().join("nbd.sock");
    let child = Command::new("qemu-nbd")
        .args([
            "--read-only",
            "--persistent",
            "--shared=1",
            "--format",
            format,
        ])
        .arg(format!("--socket={}", socket.display()))
        .arg(src)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run qemu-nbd (install qemu-utils)")?;
    let mut server = Server { child, dir };
    let start = Instant::now();
    while !socket.exists() {
        if let Some(status) = server.child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = server.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!(
                "{}: qemu-nbd could not open it ({status}): {}",
                src.display(),
                err.trim()
            );
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{}: qemu-nbd did not start within 30 s", src.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, socket))
}

/// Imports `src` into a new VHD at `dst`.
pub fn import(src: &Path, dst: &Path, target: convert::Target) -> Result<()> {
    if !src.exists() {
        bail!("{}: no such file", src.display());
    }
    if dst.exists() {
        bail!("{}: already exists", dst.display());
    }
    let format = format_of(src)?;
    let (server, socket) = serve(src, &format)?;
    // qemu-nbd makes its socket file a moment before it listens on it: a refused connection
    // is tried again for a while.
    let start = Instant::now();
    let client = loop {
        match Client::connect(&socket, "") {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && start.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => {
                break other
                    .with_context(|| format!("{}: cannot read qemu-nbd's export", src.display()))?
            }
        }
    };
    let export = Export {
        size: client.size(),
        client: Mutex::new(client),
        path: src.to_path_buf(),
    };
    let source = Source::Other(Box::new(export));
    let bar = crate::progress::Bar::new("importing");
    convert::convert(&source, dst, target, &bar)?;
    drop(server);
    println!(
        "imported {} ({format}) into {}",
        src.display(),
        dst.display()
    );
    Ok(())
}
