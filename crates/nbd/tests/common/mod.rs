//! A raw NBD client for the tests: builds requests and options byte by byte, reads replies.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Connects with a read timeout, so a test fails instead of hanging.
pub fn connect(socket: &Path) -> UnixStream {
    let c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

pub fn read_n(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    c.read_exact(&mut b).unwrap();
    b
}

/// True when the server closed the connection (EOF, or a reset).
pub fn is_closed(c: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0) | Err(_))
}

pub fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = b"IHAVEOPT".to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Greeting and client flags; returns the stream ready for options.
pub fn greet(socket: &Path) -> UnixStream {
    let mut c = connect(socket);
    let hello = read_n(&mut c, 18);
    assert_eq!(&hello[..8], b"NBDMAGIC");
    assert_eq!(&hello[8..16], b"IHAVEOPT");
    c.write_all(&3u32.to_be_bytes()).unwrap();
    c
}

/// Reads one option reply: (option, type, data).
pub fn option_reply(c: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let h = read_n(c, 20);
    assert_eq!(
        u64::from_be_bytes(h[..8].try_into().unwrap()),
        0x0003_e889_0455_65a9
    );
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let data = read_n(c, usize::try_from(len).unwrap());
    (
        u32::from_be_bytes(h[8..12].try_into().unwrap()),
        u32::from_be_bytes(h[12..16].try_into().unwrap()),
        data,
    )
}

/// A client in transmission after NBD_OPT_GO.
pub fn go(socket: &Path) -> UnixStream {
    let mut c = greet(socket);
    let mut d = 0u32.to_be_bytes().to_vec();
    d.extend_from_slice(&0u16.to_be_bytes());
    c.write_all(&option(7, &d)).unwrap();
    loop {
        let (_, kind, _) = option_reply(&mut c);
        if kind == 1 {
            return c;
        }
        assert_eq!(kind, 3, "INFO replies, then ACK");
    }
}

pub fn request(kind: u16, flags: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&handle.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// Reads a simple reply; returns (error, handle).
pub fn reply(c: &mut UnixStream) -> (u32, u64) {
    let r = read_n(c, 16);
    assert_eq!(u32::from_be_bytes(r[..4].try_into().unwrap()), 0x6744_6698);
    (
        u32::from_be_bytes(r[4..8].try_into().unwrap()),
        u64::from_be_bytes(r[8..16].try_into().unwrap()),
    )
}
