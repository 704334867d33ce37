//! Whether KVM can run a guest on this host.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::binary;

/// Whether KVM can run a guest on this host: `Ok` or the reason it can't. `/dev/kvm` existing is
/// not enough (nested or sandboxed hosts expose a KVM that can't run Linux), so QEMU boots a
/// 512-byte boot sector under KVM with the baseline x86-64 CPU model enforced; it writes to the
/// `isa-debug-exit` port, which makes QEMU exit with code 131.
pub fn probe_kvm(scratch: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    // mov al, 0x41; out 0xf4, al; hlt; jmp $-1 — then the boot signature.
    let mut sector = vec![0xB0, 0x41, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xAA]);
    let image = scratch.join("kvm-probe.img");
    std::fs::write(&image, &sector).map_err(|e| format!("{}: {e}", image.display()))?;
    let drive = format!("file={},format=raw,if=ide", image.display());
    let mut child = Command::new(binary())
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "qemu64,enforce",
            "-machine",
            "pc",
            "-nodefaults",
        ])
        .args([
            "-display",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=1",
        ])
        .args(["-drive", &drive])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary().display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&image);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(s) if s.code() == Some(131) => Ok(()),
        Some(_) => Err(format!(
            "a test guest failed under KVM: {}",
            err.lines().last().unwrap_or("no message").trim()
        )),
        None => Err("a test guest hung under KVM".to_string()),
    }
}
