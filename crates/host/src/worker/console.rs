//! COM1 as the VM's console: the worker is the only client of QEMU's serial socket; it appends
//! everything the guest prints to `console.log` in the VM's folder (rotated to `console.log.1`
//! past 4 MiB) and relays it to the clients attached to its own console socket, whose keystrokes
//! it forwards to the guest. A client that stops reading is dropped rather than stalling the guest.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROTATE_AT: u64 = 4 << 20;

/// Starts relaying `serial` (QEMU's COM1) to `log` and to clients of `listener`.
pub fn start(serial: UnixStream, log: PathBuf, listener: UnixListener) -> std::io::Result<()> {
    let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    let to_guest = Arc::new(Mutex::new(serial.try_clone()?));
    let relay_clients = clients.clone();
    std::thread::spawn(move || relay(serial, &log, &relay_clients));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(reader) = client.try_clone() else {
                continue;
            };
            let _ = client.set_write_timeout(Some(Duration::from_secs(2)));
            clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(client);
            let to_guest = to_guest.clone();
            std::thread::spawn(move || forward_keys(reader, &to_guest));
        }
    });
    Ok(())
}

fn relay(mut serial: UnixStream, log: &Path, clients: &Mutex<Vec<UnixStream>>) {
    let mut file = open_log(log);
    let mut buf = [0u8; 4096];
    loop {
        let n = match serial.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf[..n]);
            if f.metadata().is_ok_and(|m| m.len() > ROTATE_AT) {
                let _ = std::fs::rename(log, log.with_extension("log.1"));
                file = open_log(log);
            }
        }
        clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain_mut(|c| c.write_all(&buf[..n]).is_ok());
    }
}

fn open_log(path: &Path) -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| eprintln!("strata worker: {}: {e}", path.display()))
        .ok()
}

fn forward_keys(mut client: UnixStream, to_guest: &Mutex<UnixStream>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            return;
        }
        let mut guest = to_guest.lock().unwrap_or_else(|p| p.into_inner());
        if guest.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
