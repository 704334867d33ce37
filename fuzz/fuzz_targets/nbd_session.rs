//! Any byte stream from an NBD client: the server must answer or close, never panic, and never
//! touch the backend outside its size.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use strata_nbd::{Backend, BackendError, Export};

const SIZE: u64 = 1 << 20;

struct Ram(Mutex<Vec<u8>>);

impl Ram {
    fn range(&self, off: u64, len: usize) -> std::ops::Range<usize> {
        let start = usize::try_from(off).expect("offset");
        assert!(off + len as u64 <= SIZE, "the server passed an out-of-range request to the backend");
        start..start + len
    }
}

impl Backend for Ram {
    fn size(&self) -> u64 {
        SIZE
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), BackendError> {
        let r = self.range(off, buf.len());
        buf.copy_from_slice(&self.0.lock().unwrap()[r]);
        Ok(())
    }
    fn write_at(&self, data: &[u8], off: u64) -> Result<(), BackendError> {
        let r = self.range(off, data.len());
        self.0.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), BackendError> {
        self.range(off, usize::try_from(len).expect("len"));
        Ok(())
    }
    fn write_zeroes(&self, off: u64, len: u64, _unmap: bool) -> Result<(), BackendError> {
        let r = self.range(off, usize::try_from(len).expect("len"));
        self.0.lock().unwrap()[r].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let export = Export { name: "disk".into(), backend: Arc::new(Ram(Mutex::new(vec![0; SIZE as usize]))) };
    let mut out = Vec::new();
    let _ = strata_nbd::handle(data, &mut out, &export);
});
