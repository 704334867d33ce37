//! The DHCP server's packet handling on any bytes (the `dhcp_packet` fuzz target, and
//! `crates/net/tests/dhcp_fuzz_seeds.rs` on the seeds). Not part of the API.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, Opcode};
use dhcproto::Decodable;

use super::{unix, Config, Mac, Reservation, Server};
use crate::subnet::Subnet;

/// The settings the fuzzed server runs with: 10.20.0.0/24, default range, a gateway, DNS, and a
/// reservation for 52:54:00:00:00:99 (10.20.0.5).
pub fn config() -> Config {
    let subnet = Subnet {
        network: Ipv4Addr::new(10, 20, 0, 0),
        prefix: 24,
    };
    let mut c = Config::new(subnet, Ipv4Addr::new(10, 20, 0, 1));
    c.gateway = Some(Ipv4Addr::new(10, 20, 0, 1));
    c.dns = vec![Ipv4Addr::new(10, 20, 0, 1), Ipv4Addr::new(9, 9, 9, 9)];
    c.reservations = vec![Reservation {
        mac: Mac([0x52, 0x54, 0, 0, 0, 0x99]),
        ip: Ipv4Addr::new(10, 20, 0, 5),
    }];
    c
}

/// Runs `data` through [`Server::handle`] of a fresh in-memory server, twice (the second time
/// with state from the first); panics only on a bug: a reply that does not decode as a
/// BOOTREPLY, an address handed out that the settings do not allow, a broken pool invariant.
pub fn fuzz_packet(data: &[u8]) {
    let Ok(mut server) = Server::in_memory(config()) else {
        panic!("the fuzzing settings are valid");
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for step in 0..2u64 {
        let at = now + Duration::from_secs(step);
        if let Some(reply) = server.handle(data, at) {
            check_reply(&server, &reply.bytes, at);
        }
        if let Err(e) = server.pool.verify(&server.rules, unix(at)) {
            panic!("pool invariant broken: {e}");
        }
    }
}

fn check_reply(server: &Server, bytes: &[u8], at: SystemTime) {
    let msg = match Message::from_bytes(bytes) {
        Ok(m) => m,
        Err(e) => panic!("our reply does not decode: {e}"),
    };
    assert_eq!(msg.opcode(), Opcode::BootReply);
    assert!(bytes.len() >= 300, "short reply");
    let yiaddr = msg.yiaddr();
    if !yiaddr.is_unspecified() {
        let Ok(mac) = <[u8; 6]>::try_from(msg.chaddr()) else {
            panic!("reply chaddr is not 6 bytes");
        };
        assert!(
            server.rules.allows(Mac(mac), yiaddr),
            "{yiaddr} handed to {} against the settings",
            Mac(mac)
        );
    }
    let _ = server.leases(at);
}
