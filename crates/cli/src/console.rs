//! `strata vm console NAME`: attaches the terminal to the worker's console socket. On a terminal
//! the input is raw (keys go to the guest as typed) and Ctrl-] detaches.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};

const DETACH: u8 = 0x1d; // Ctrl-]

/// Relays the terminal and the console until Ctrl-], end of input or the VM stopping.
pub fn attach(socket: &Path, name: &str) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("VM '{name}': cannot attach to its console"))?;
    let stdin = std::io::stdin();
    let raw = stdin.is_terminal().then(|| {
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut t = saved.clone();
        t.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t).ok()?;
        Some(saved)
    });
    if raw.is_some() {
        eprint!("Connected to VM '{name}' console; Ctrl-] detaches.\r\n");
    }
    let mut to_vm = stream.try_clone()?;
    let interactive = raw.is_some();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut input = std::io::stdin();
        while let Ok(n) = input.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if interactive {
                if let Some(i) = chunk.iter().position(|&b| b == DETACH) {
                    let _ = to_vm.write_all(&chunk[..i]);
                    let _ = to_vm.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            if to_vm.write_all(chunk).is_err() {
                return;
            }
        }
        if interactive {
            let _ = to_vm.shutdown(std::net::Shutdown::Both);
        }
    });
    let mut from_vm = stream;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    while let Ok(n) = from_vm.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    if let Some(Some(saved)) = raw {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        eprintln!("\r\nDetached from VM '{name}'.");
    }
    Ok(())
}
