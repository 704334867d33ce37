//! The DHCP server's packet handling on any bytes: a fresh server (10.20.0.0/24, a reservation)
//! handles them twice; its replies must decode and stay within the settings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strata_net::dhcp::fuzz::fuzz_packet(data);
});
