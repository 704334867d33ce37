//! The `dhcp_packet` fuzz target's code (`strata_net::dhcp::fuzz::fuzz_packet`) on its seeds
//! (`fuzz/seeds/dhcp_packet`: real client messages) and on every truncation and every flipped
//! byte of them: nothing may panic. The tests run with debug assertions, as the fuzz target does.
//!
//! The seeds are made here: `STRATA_WRITE_SEEDS=1 cargo test -p strata-net --test
//! dhcp_fuzz_seeds` writes them again.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::Encodable;
use strata_net::dhcp::fuzz::fuzz_packet;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/dhcp_packet")
}

fn message(last: u8, kind: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mac = [0x52, 0x54, 0, 0, 0, last];
    let mut m = Message::new_with_id(0x3903_f326, ciaddr, z, z, z, &mac);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ClientIdentifier(
        [&[1u8][..], &mac[..]].concat(),
    ));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m.to_vec().unwrap()
}

/// The seeds, by file name: what udhcpc and dhclient send, in each state.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use DhcpOption::{
        Hostname, ParameterRequestList, RequestedIpAddress as Req, ServerIdentifier as Sid,
    };
    let z = Ipv4Addr::UNSPECIFIED;
    let server = Ipv4Addr::new(10, 20, 0, 1);
    let addr = Ipv4Addr::new(10, 20, 0, 16);
    let prl = ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::BroadcastAddr,
    ]);
    vec![
        (
            "discover",
            message(1, MessageType::Discover, z, vec![prl.clone()]),
        ),
        (
            "discover_reserved",
            message(0x99, MessageType::Discover, z, vec![prl.clone(), Req(addr)]),
        ),
        (
            "request_selecting",
            message(
                1,
                MessageType::Request,
                z,
                vec![
                    prl.clone(),
                    Req(addr),
                    Sid(server),
                    Hostname("guest".into()),
                ],
            ),
        ),
        (
            "request_init_reboot",
            message(1, MessageType::Request, z, vec![prl.clone(), Req(addr)]),
        ),
        (
            "request_renewing",
            message(1, MessageType::Request, addr, vec![prl]),
        ),
        (
            "release",
            message(1, MessageType::Release, addr, vec![Sid(server)]),
        ),
        (
            "decline",
            message(1, MessageType::Decline, z, vec![Req(addr), Sid(server)]),
        ),
        (
            "inform",
            message(2, MessageType::Inform, Ipv4Addr::new(10, 20, 0, 77), vec![]),
        ),
    ]
}

#[test]
fn the_seeds_are_current() {
    let dir = seeds_dir();
    let write = std::env::var_os("STRATA_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(on_disk, bytes, "{name}: rewrite with STRATA_WRITE_SEEDS=1");
    }
}

#[test]
fn the_packet_handling_survives_the_seeds_and_their_mutations() {
    let mut n = 0;
    // The generated seeds, and the files beside them (inputs that once crashed the target).
    let mut all: Vec<Vec<u8>> = seeds().into_iter().map(|(_, d)| d).collect();
    for e in std::fs::read_dir(seeds_dir()).unwrap() {
        all.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    for data in all {
        fuzz_packet(&data);
        for cut in 0..data.len() {
            fuzz_packet(&data[..cut]);
            let mut flipped = data.clone();
            flipped[cut] ^= 0x5a;
            fuzz_packet(&flipped);
            n += 2;
        }
    }
    assert!(n > 1000, "{n} cases");
}
