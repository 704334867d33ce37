//! The `strata` binary as a user runs it: exit codes, messages, JSON, and files checked with real
//! peers (qemu-img, qemu-io, nbdcopy, the kernel's loop driver and ext4). One test target, one
//! module per command family.

mod disk;
mod docs;
mod plug;
mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn strata(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "strata {args:?} panicked: {stderr}"
    );
    out
}

pub fn ok(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command expected to fail; returns its stderr (and stdout) text.
pub fn fails(args: &[&str]) -> String {
    let out = strata(args);
    assert!(!out.status.success(), "strata {args:?} should have failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

pub fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A raw image with data in places and zeros elsewhere.
pub fn raw_image(path: &Path, mib: usize) -> Vec<u8> {
    let mut data = vec![0u8; mib << 20];
    for (i, b) in data[..(1 << 20) + 3000].iter_mut().enumerate() {
        *b = u8::try_from(i % 253).unwrap() | 1;
    }
    let at = (mib - 2) << 20;
    data[at..at + 4096].fill(0x77);
    std::fs::write(path, &data).unwrap();
    data
}

/// A decompressed copy of an interop file (they live in `crates/testdata/interop/`).
pub fn interop(name: &str) -> PathBuf {
    strata_testdata::interop(name)
}

/// qemu-img finds the VHD identical to the raw image.
pub fn same_as_raw(raw: &Path, vhd: &Path) {
    sh(Command::new("qemu-img").args(["compare", "-q", "-f", "raw", "-F", "vpc", s(raw), s(vhd)]));
}
