//! `strata disk serve`: the background server of one plugged disk (started by `plug`). It opens
//! the disk (taking its lock), serves it over NBD (and FUSE for `mount`), says "ready" on stdout,
//! and on SIGTERM or SIGINT flushes, records how it ended in `<socket>.exit`, and exits.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// The file where a server records how it ended: "ok", or what went wrong.
pub fn exit_file(socket: &Path) -> std::path::PathBuf {
    socket.with_extension("exit")
}

/// The body of `strata disk serve`: serves until SIGTERM or SIGINT, then flushes and exits.
pub fn serve(
    path: &Path,
    socket: &Path,
    read_only: bool,
    tcp: Option<&str>,
    fuse: Option<&Path>,
) -> Result<()> {
    let opened = if read_only {
        strata_vhd::Disk::open(path, strata_vhd::OpenOptions::read())
    } else {
        strata_vhd::Disk::open(path, strata_vhd::OpenOptions::write())
    };
    let disk = match opened {
        Ok(d) => d,
        Err(e) => {
            println!("error: {e}");
            return Err(e.into());
        }
    };
    let backend = Arc::new(strata_nbd::VhdBackend(disk));
    let export = strata_nbd::Export {
        name: String::new(),
        backend: backend.clone(),
    };
    if UnixStream::connect(socket).is_ok() {
        println!(
            "error: another server is already serving on {}",
            socket.display()
        );
        bail!("another server is already serving on {}", socket.display());
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(exit_file(socket));
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    if let Some(addr) = tcp {
        let tl = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}"))?;
        let e = export.clone();
        std::thread::spawn(move || strata_nbd::serve_tcp(tl, e));
    }
    let session = match fuse {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let b: Arc<dyn strata_nbd::Backend> = backend.clone();
            match strata_nbd::file::mount_file(b, dir) {
                Ok(s) => Some(s),
                Err(e) => {
                    println!(
                        "error: cannot expose the disk through FUSE at {}: {e}",
                        dir.display()
                    );
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    let session = std::sync::Mutex::new(session);
    let fuse_dir = fuse.map(Path::to_path_buf);
    // The server outlives the terminal that plugged the disk: a hang-up is noted, not obeyed.
    signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let sock = socket.to_path_buf();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            use strata_nbd::Backend as _;
            let (code, said) = match backend.flush() {
                Ok(()) => (0, "ok".to_string()),
                Err(e) => {
                    eprintln!("strata disk serve: final flush failed: {e}");
                    (1, format!("the final flush failed: {e}"))
                }
            };
            let _ = std::fs::write(exit_file(&sock), said);
            let _ = std::fs::remove_file(&sock);
            drop(session.lock().map(|mut s| s.take()));
            if let Some(d) = &fuse_dir {
                let _ = std::fs::remove_dir(d);
            }
            std::process::exit(code);
        }
    });
    println!("ready");
    std::io::stdout().flush()?;
    strata_nbd::serve_unix(listener, export)?;
    Ok(())
}
