//! Hostile and malformed clients on a raw socket: every one gets an error reply or a closed
//! connection, never a crash, a hang of other clients, or a damaged disk. A well-behaved client
//! (this file's own, and qemu-io) keeps working throughout.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{is_closed, option, option_reply, read_n, reply, request};
use strata_nbd::{Export, VhdBackend};
use strata_vhd::{Disk, NewDisk, OpenOptions};

const SIZE: u64 = 16 << 20;

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    disk_path: PathBuf,
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = dir.path().join("d.vhd");
    strata_vhd::create(&disk_path, SIZE, NewDisk::dynamic()).unwrap();
    let disk = Disk::open(&disk_path, OpenOptions::write()).unwrap();
    let socket = dir.path().join("s.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let export = Export {
        name: String::new(),
        backend: Arc::new(VhdBackend::new(disk)),
    };
    std::thread::spawn(move || strata_nbd::serve_unix(listener, export));
    Server {
        _dir: dir,
        socket,
        disk_path,
    }
}

fn connect(s: &Server) -> UnixStream {
    common::connect(&s.socket)
}

fn greet(s: &Server) -> UnixStream {
    common::greet(&s.socket)
}

fn go(s: &Server) -> UnixStream {
    common::go(&s.socket)
}

/// The well-behaved client: write, read back, flush.
fn good_client_works(s: &Server, byte: u8) {
    let mut c = go(s);
    let data = vec![byte; 8192];
    let mut w = request(1, 0, 77, 4096, 8192);
    w.extend_from_slice(&data);
    c.write_all(&w).unwrap();
    assert_eq!(reply(&mut c), (0, 77));
    c.write_all(&request(0, 0, 78, 4096, 8192)).unwrap();
    assert_eq!(reply(&mut c), (0, 78));
    assert_eq!(read_n(&mut c, 8192), data);
    c.write_all(&request(3, 0, 79, 0, 0)).unwrap();
    assert_eq!(reply(&mut c), (0, 79));
    c.write_all(&request(2, 0, 80, 0, 0)).unwrap();
}

fn check_disk(path: &Path) {
    let report = strata_vhd::ops::check::check(path, false).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn handshake_abuse_closes_or_refuses() {
    let s = start();
    // Unknown client flags: closed.
    let mut c = connect(&s);
    read_n(&mut c, 18);
    c.write_all(&0xFFu32.to_be_bytes()).unwrap();
    assert!(is_closed(&mut c));
    // Bad option magic: closed.
    let mut c = greet(&s);
    c.write_all(b"NOTMAGIC\0\0\0\x07\0\0\0\0").unwrap();
    assert!(is_closed(&mut c));
    // An option longer than 64 KiB: closed without reading it.
    let mut c = greet(&s);
    let mut b = b"IHAVEOPT".to_vec();
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    c.write_all(&b).unwrap();
    assert!(is_closed(&mut c));
    // Malformed GO payload: an error reply, and the connection goes on.
    let mut c = greet(&s);
    c.write_all(&option(7, &[0, 0, 0, 200, 1])).unwrap();
    let (opt, kind, _) = option_reply(&mut c);
    assert_eq!((opt, kind), (7, (1 << 31) + 3));
    // Unknown export: an error reply.
    let mut d = 3u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"foo");
    d.extend_from_slice(&0u16.to_be_bytes());
    c.write_all(&option(7, &d)).unwrap();
    assert_eq!(option_reply(&mut c).1, (1 << 31) + 6);
    // Unknown option (STARTTLS): unsupported.
    c.write_all(&option(5, &[])).unwrap();
    assert_eq!(option_reply(&mut c).1, (1 << 31) + 1);
    // LIST, then ABORT.
    c.write_all(&option(3, &[])).unwrap();
    assert_eq!(option_reply(&mut c).1, 2);
    assert_eq!(option_reply(&mut c).1, 1);
    c.write_all(&option(2, &[])).unwrap();
    assert_eq!(option_reply(&mut c).1, 1);
    assert!(is_closed(&mut c));
    good_client_works(&s, 0x11);
}

#[test]
fn bad_requests_get_errors_and_the_stream_stays_in_step() {
    let s = start();
    let mut c = go(&s);
    // Out of range read and write (the write's payload is consumed, so the stream stays in step).
    c.write_all(&request(0, 0, 1, SIZE - 512, 1024)).unwrap();
    assert_eq!(reply(&mut c), (22, 1));
    let mut w = request(1, 0, 2, SIZE, 512);
    w.extend_from_slice(&[9u8; 512]);
    c.write_all(&w).unwrap();
    assert_eq!(reply(&mut c), (28, 2)); // ENOSPC for a write past the end
                                        // Offset overflow.
    c.write_all(&request(0, 0, 3, u64::MAX - 10, 100)).unwrap();
    assert_eq!(reply(&mut c), (22, 3));
    // Oversized read: refused without allocating it.
    c.write_all(&request(0, 0, 4, 0, u32::MAX)).unwrap();
    assert_eq!(reply(&mut c), (22, 4));
    // Unknown command.
    c.write_all(&request(42, 0, 5, 0, 0)).unwrap();
    assert_eq!(reply(&mut c), (22, 5));
    // TRIM and WRITE_ZEROES out of range.
    c.write_all(&request(4, 0, 6, SIZE, 4096)).unwrap();
    assert_eq!(reply(&mut c), (22, 6));
    c.write_all(&request(6, 0, 7, 0, 4096)).unwrap();
    assert_eq!(reply(&mut c), (0, 7));
    // Still in step: a normal read works.
    c.write_all(&request(0, 0, 8, 0, 4096)).unwrap();
    assert_eq!(reply(&mut c), (0, 8));
    assert_eq!(read_n(&mut c, 4096), vec![0u8; 4096]);
    // An oversized write payload: the connection is closed.
    c.write_all(&request(1, 0, 9, 0, u32::MAX)).unwrap();
    assert!(is_closed(&mut c));
    // Bad request magic: closed.
    let mut c = go(&s);
    let mut bad = request(0, 0, 10, 0, 512);
    bad[0] = 0;
    c.write_all(&bad).unwrap();
    assert!(is_closed(&mut c));
    good_client_works(&s, 0x22);
}

#[test]
fn vanishing_and_stalled_clients_hurt_nobody() {
    let s = start();
    // A client that stalls half-way through a request header, and one that sends half a write
    // payload and then vanishes.
    let mut stalled = go(&s);
    stalled
        .write_all(&request(1, 0, 1, 0, 65536)[..10])
        .unwrap();
    let mut vanishing = go(&s);
    let mut w = request(1, 0, 2, 1 << 20, 65536);
    w.extend_from_slice(&[0xAB; 30000]);
    vanishing.write_all(&w).unwrap();
    drop(vanishing);
    // Garbage from many connections at once.
    let junk: Vec<_> = (0..20u8)
        .map(|i| {
            let mut c = connect(&s);
            let _ = c.write_all(&vec![i; 5000]);
            c
        })
        .collect();
    // Others are served meanwhile, by us and by qemu-io.
    good_client_works(&s, 0x33);
    let uri = format!("nbd+unix:///?socket={}", s.socket.display());
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0x44 2M 1M",
            "-c",
            "read -P 0x44 2M 1M",
            "-c",
            "read -P 0x33 4096 8192",
            &uri,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(junk);
    drop(stalled);
    // The half-sent write never reached the disk.
    std::thread::sleep(Duration::from_millis(100));
    let d = Disk::open(
        &s.disk_path,
        OpenOptions {
            lock: false,
            ..OpenOptions::read()
        },
    )
    .unwrap();
    let mut b = vec![0u8; 65536];
    d.read_at(&mut b, 1 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    drop(d);
    check_disk(&s.disk_path);
}

#[test]
fn trim_and_write_zeroes_free_whole_blocks() {
    let s = start();
    let mut c = go(&s);
    let mut w = request(1, 0, 1, 0, 8 << 20);
    w.extend_from_slice(&vec![0x5Au8; 8 << 20]);
    c.write_all(&w).unwrap();
    assert_eq!(reply(&mut c), (0, 1));
    c.write_all(&request(3, 0, 2, 0, 0)).unwrap();
    assert_eq!(reply(&mut c), (0, 2));
    let blocks = |p: &Path| {
        Disk::open(
            p,
            OpenOptions {
                lock: false,
                ..OpenOptions::read()
            },
        )
        .unwrap()
        .allocated_blocks()
    };
    assert_eq!(blocks(&s.disk_path), 4);
    // TRIM the first two blocks, WRITE_ZEROES (may unmap) over the next one and a half.
    c.write_all(&request(4, 0, 3, 0, 4 << 20)).unwrap();
    assert_eq!(reply(&mut c), (0, 3));
    c.write_all(&request(6, 1, 4, 4 << 20, 3 << 20)).unwrap(); // FUA
    assert_eq!(reply(&mut c), (0, 4));
    assert_eq!(
        blocks(&s.disk_path),
        1,
        "three whole blocks were freed and flushed"
    );
    c.write_all(&request(0, 0, 5, 4 << 20, 4 << 20)).unwrap();
    assert_eq!(reply(&mut c), (0, 5));
    let back = read_n(&mut c, 4 << 20);
    assert!(back[..3 << 20].iter().all(|&b| b == 0));
    assert!(back[3 << 20..].iter().all(|&b| b == 0x5A));
}
