//! `strata disk plug|unplug|query|mount`: the storage server with real NBD clients (qemu-io,
//! qemu-img, nbdcopy) and a real file system mounted through FUSE and a loop device.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{s, same_as_raw, sh};

/// A private run folder, so that tests running at once do not see each other's disks.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_RUN_DIR", self.path("run"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "strata {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Plugs and returns the NBD URI.
    fn plug(&self, disk: &Path, extra: &[&str]) -> String {
        let mut args = vec!["disk", "plug", s(disk)];
        args.extend_from_slice(extra);
        self.ok(&args).lines().next().unwrap().to_string()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.run(&["disk", "unplug", "--all", "--discard"]);
    }
}

fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = sh(c.arg(uri));
    assert!(
        !out.contains("Pattern verification failed") && !out.contains("failed"),
        "{out}"
    );
    out
}

fn new_disk(h: &Host, name: &str, size: &str) -> PathBuf {
    let p = h.path(name);
    h.ok(&["disk", "create", s(&p), "--size", size]);
    p
}

#[test]
fn undo_mode_keeps_the_base_until_commit() {
    let h = Host::new();
    let d = new_disk(&h, "u.vhd", "64M");
    let before = std::fs::read(&d).unwrap();
    let uri = h.plug(&d, &[]);
    assert!(uri.starts_with("nbd+unix:///?socket="), "{uri}");
    qemu_io(
        &uri,
        &[
            "write -P 0x42 1M 3M",
            "write -P 0x17 40M 4k",
            "flush",
            "read -P 0x42 1M 3M",
        ],
    );
    qemu_io(
        &uri,
        &[
            "write -P 0x99 8M 4M",
            "discard 8M 2M",
            "write -z 10M 2M",
            "read -P 0 10M 2M",
            "flush",
        ],
    );
    let list: Value = serde_json::from_str(&h.ok(&["disk", "query", s(&d), "--json"])).unwrap();
    let rec = &list[0];
    for key in ["path", "uri", "mode", "undo_path", "mount_point"] {
        assert!(rec.get(key).is_some(), "query lacks {key}: {rec}");
    }
    assert_eq!(rec["mode"], "undo");
    assert_eq!(rec["uri"], uri.as_str());
    let undo_disk = PathBuf::from(rec["undo_path"].as_str().unwrap());
    assert!(undo_disk.exists());
    assert_eq!(
        std::fs::read(&d).unwrap(),
        before,
        "the VHD itself is untouched in undo mode"
    );
    let said = h.ok(&["disk", "unplug", s(&d), "--commit"]);
    assert!(said.contains("committed"), "{said}");
    assert!(!undo_disk.exists());
    h.ok(&["disk", "check", s(&d)]);
    let out = sh(Command::new("qemu-io").args([
        "-f",
        "vpc",
        "-c",
        "read -P 0x42 1M 3M",
        "-c",
        "read -P 0x17 40M 4k",
        "-c",
        "read -P 0 10M 2M",
        s(&d),
    ]));
    assert!(!out.contains("failed"), "{out}");
    // In a script, an unplug without --commit discards, and says so.
    let uri = h.plug(&d, &[]);
    qemu_io(&uri, &["write -P 0x66 1M 4k"]);
    let said = h.ok(&["disk", "unplug", s(&d)]);
    assert!(said.contains("discarding"), "{said}");
    let out = sh(Command::new("qemu-io").args(["-f", "vpc", "-c", "read -P 0x42 1M 4k", s(&d)]));
    assert!(!out.contains("failed"), "{out}");
}

#[test]
fn direct_and_read_only_modes_and_locks() {
    let h = Host::new();
    let d = new_disk(&h, "d.vhd", "32M");
    let uri = h.plug(&d, &["--direct"]);
    qemu_io(&uri, &["write -P 0x5c 2M 1M", "flush"]);
    assert!(h
        .fails(&["disk", "plug", s(&d)])
        .contains("already plugged"));
    let e = h.fails(&["disk", "compact", s(&d)]);
    assert!(
        e.contains("in use by process") && e.contains("strata"),
        "{e}"
    );
    let q: Value = serde_json::from_str(&h.ok(&["disk", "query", "--all", "--json"])).unwrap();
    assert_eq!(q[0]["mode"], "direct");
    assert_eq!(q[0]["undo_path"], Value::Null);
    h.ok(&["disk", "unplug", s(&d)]);
    let out = sh(Command::new("qemu-io").args(["-f", "vpc", "-c", "read -P 0x5c 2M 1M", s(&d)]));
    assert!(!out.contains("failed"), "--direct changes the file: {out}");
    h.ok(&["disk", "check", s(&d)]);
    // Read-only: reads work, writes are refused.
    let uri = h.plug(&d, &["--read-only"]);
    let out =
        sh(Command::new("qemu-io").args(["-r", "-f", "raw", "-c", "read -P 0x5c 2M 1M", &uri]));
    assert!(!out.contains("failed"), "{out}");
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 0 4k", &uri])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("read-only")
            || text.contains("Operation not permitted")
            || !out.status.success(),
        "{text}"
    );
    // A second reader of a read-only plugged disk is fine; a writer is not.
    assert!(h
        .fails(&["disk", "resize", s(&d), "--size", "64M"])
        .contains("in use"));
    h.ok(&["disk", "unplug", "--all"]);
    assert!(h
        .ok(&["disk", "query", "--all"])
        .contains("no disk is plugged in"));
    assert!(h
        .fails(&["disk", "unplug", s(&d)])
        .contains("not plugged in"));
}

#[test]
fn several_clients_at_once_and_a_client_killed_mid_write() {
    let h = Host::new();
    let d = new_disk(&h, "m.vhd", "128M");
    let uri = h.plug(&d, &["--direct"]);
    let children: Vec<_> = (0..4u32)
        .map(|i| {
            let cmd = format!("write -P {} {}M 8M", 0x10 + i, i * 16);
            Command::new("qemu-io")
                .args(["-f", "raw", "-c", &cmd, "-c", "flush", &uri])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let reads: Vec<String> = (0..4u32)
        .map(|i| format!("read -P {} {}M 8M", 0x10 + i, i * 16))
        .collect();
    qemu_io(&uri, &reads.iter().map(String::as_str).collect::<Vec<_>>());
    // A client killed in the middle of a long stream of writes.
    // (512-byte writes, one at a time, from 64 MiB on: about 3 s of work, killed after 0.4 s.)
    let mut victim = Command::new("qemu-img")
        .args([
            "bench", "-w", "-f", "raw", "-d", "1", "-c", "100000", "-s", "512", "-S", "512", "-o",
            "67108864", &uri,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    victim.kill().unwrap();
    victim.wait().unwrap();
    // The others' data is intact and the server still serves.
    qemu_io(&uri, &reads.iter().map(String::as_str).collect::<Vec<_>>());
    h.ok(&["disk", "unplug", s(&d)]);
    h.ok(&["disk", "check", s(&d)]);
}

#[test]
fn half_zero_copy_with_nbdcopy_leaves_a_half_size_file() {
    let h = Host::new();
    let raw = h.path("half.raw");
    // 2 MiB of data then 2 MiB of zeros (written, not holes), repeated: half the disk's blocks.
    let mut data = vec![0u8; 256 << 20];
    for chunk in 0..64usize {
        let at = chunk * (4 << 20);
        for (i, b) in data[at..at + (2 << 20)].iter_mut().enumerate() {
            *b = u8::try_from((i * 31 + chunk) % 251).unwrap() | 1;
        }
    }
    std::fs::write(&raw, &data).unwrap();
    drop(data);
    let d = new_disk(&h, "copy.vhd", "256M");
    let uri = h.plug(&d, &["--direct"]);
    sh(Command::new("nbdcopy").arg(&raw).arg(&uri));
    h.ok(&["disk", "unplug", s(&d)]);
    let len = std::fs::metadata(&d).unwrap().len();
    assert!(
        len < 150 << 20,
        "a half-zero copy must leave about half the size, not {len}"
    );
    same_as_raw(&raw, &d);
}

#[test]
fn mount_an_ext4_disk_read_and_write_a_file() {
    let h = Host::new();
    let raw = h.path("fs.raw");
    std::fs::write(&raw, vec![0u8; 64 << 20]).unwrap();
    sh(Command::new("mkfs.ext4").args(["-q", "-F", s(&raw)]));
    let d = h.path("fs.vhd");
    h.ok(&["disk", "convert", s(&raw), s(&d), "--type", "dynamic"]);
    let mnt = h.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let said = h.ok(&["disk", "mount", s(&d), s(&mnt), "--direct"]);
    assert!(said.contains("mounted"), "{said}");
    let q: Value = serde_json::from_str(&h.ok(&["disk", "query", s(&d), "--json"])).unwrap();
    assert_eq!(
        q[0]["mount_point"].as_str().unwrap(),
        std::fs::canonicalize(&mnt).unwrap().to_str().unwrap()
    );
    std::fs::write(mnt.join("hello.txt"), b"written through Strata\n").unwrap();
    assert!(mnt.join("lost+found").is_dir());
    h.ok(&["disk", "unplug", s(&d)]);
    assert!(!mnt.join("hello.txt").exists(), "unplug unmounts");
    h.ok(&["disk", "check", s(&d)]);
    // Mount again read-only: the file is there.
    h.ok(&["disk", "mount", s(&d), s(&mnt), "--read-only"]);
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"written through Strata\n"
    );
    assert!(
        std::fs::write(mnt.join("other.txt"), b"x").is_err(),
        "read-only mount"
    );
    h.ok(&["disk", "unplug", s(&d)]);
    // Errors: no such partition.
    let e = h.fails(&[
        "disk",
        "mount",
        s(&d),
        s(&mnt),
        "--read-only",
        "--partition",
        "3",
    ]);
    assert!(e.contains("no partition 3"), "{e}");
    assert!(h
        .ok(&["disk", "query", "--all"])
        .contains("no disk is plugged in"));
}

#[test]
fn tcp_export_on_loopback() {
    let h = Host::new();
    let d = new_disk(&h, "t.vhd", "16M");
    // A free port: bind to 0, read it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = h.ok(&[
        "disk",
        "plug",
        s(&d),
        "--direct",
        "--tcp",
        &port.to_string(),
    ]);
    let tcp_uri = format!("nbd://127.0.0.1:{port}/");
    assert!(out.contains(&tcp_uri), "{out}");
    qemu_io(
        &tcp_uri,
        &["write -P 0x7a 1M 64k", "flush", "read -P 0x7a 1M 64k"],
    );
    let q: Value = serde_json::from_str(&h.ok(&["disk", "query", s(&d), "--json"])).unwrap();
    assert_eq!(q[0]["tcp_uri"], tcp_uri.as_str());
    h.ok(&["disk", "unplug", s(&d)]);
    let out = sh(Command::new("qemu-io").args(["-f", "vpc", "-c", "read -P 0x7a 1M 64k", s(&d)]));
    assert!(!out.contains("failed"), "{out}");
}
