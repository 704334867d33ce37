//! Any byte stream from an NBD server: Strata's client (`strata disk import`) must fail with an
//! error or read, never panic or allocate what a length field claims without checking it.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((mut server, client)) = UnixStream::pair() else {
        return;
    };
    let _ = server.write_all(data);
    let _ = server.shutdown(std::net::Shutdown::Write);
    if let Ok(mut c) = strata_nbd::client::Client::over(client, "") {
        let mut buf = vec![0u8; 4096];
        let _ = c.read_at(&mut buf, 0);
        let _ = c.read_at(&mut buf, 512);
    }
});
