//! The host service's parsers on any bytes: a VM's `vm.toml` (and its serialization round trip),
//! the API's request bodies, a worker's control request, the status file and the event log.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/host.rs"]
mod host;

fuzz_target!(|data: &[u8]| {
    host::host_config(data);
});
