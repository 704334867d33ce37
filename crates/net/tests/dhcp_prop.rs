//! Random sequences of client messages (and of the host's `release_mac`, and of time passing)
//! never get one address acknowledged to two MACs at once, and never get an address offered or
//! acknowledged outside the range and the MAC's reservation.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;
use strata_net::dhcp::{AddressRange, Config, Mac, Reservation, Server};
use strata_net::subnet::Subnet;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const LEASE: u64 = 120;
const MACS: u8 = 6;

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, d)
}

fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, n])
}

/// A small range (.16 to .21, so it runs out), mac 0 reserved .5 (outside), mac 1 .18 (inside).
fn config() -> Config {
    let mut c = Config::new(Subnet::parse("10.20.0.0/24").unwrap().0, SERVER);
    c.range = Some(AddressRange {
        first: ip(16),
        last: ip(21),
    });
    c.lease_secs = u32::try_from(LEASE).unwrap();
    c.reservations = vec![
        Reservation {
            mac: mac(0),
            ip: ip(5),
        },
        Reservation {
            mac: mac(1),
            ip: ip(18),
        },
    ];
    c
}

/// Whether the settings let `m` have `a`.
fn allowed(m: u8, a: Ipv4Addr) -> bool {
    match m {
        0 => a == ip(5),
        1 => a == ip(18),
        _ => (16..=21).contains(&a.octets()[3]) && a != ip(18),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Discover(u8),
    /// SELECTING the address last offered to the MAC (or .16).
    Select(u8),
    /// INIT-REBOOT asking for 10.20.0.N.
    Reboot(u8, u8),
    /// RENEWING the MAC's address (ciaddr).
    Renew(u8),
    Release(u8),
    Decline(u8),
    ReleaseMac(u8),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let m = 0..MACS;
    prop_oneof![
        3 => m.clone().prop_map(Op::Discover),
        3 => m.clone().prop_map(Op::Select),
        1 => (m.clone(), 0u8..=255).prop_map(|(m, d)| Op::Reboot(m, d)),
        2 => m.clone().prop_map(Op::Renew),
        1 => m.clone().prop_map(Op::Release),
        1 => m.clone().prop_map(Op::Decline),
        1 => m.prop_map(Op::ReleaseMac),
        2 => (0u64..=150).prop_map(Op::Wait),
    ]
}

fn packet(m: u8, kind: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(7, ciaddr, z, z, z, &mac(m).0);
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        msg.opts_mut().insert(o);
    }
    msg.to_vec().unwrap()
}

/// What the clients were told.
#[derive(Default)]
struct Clients {
    offered: HashMap<u8, Ipv4Addr>,
    /// Acknowledged: address and end of the lease.
    leases: HashMap<u8, (Ipv4Addr, u64)>,
}

fn to_packet(op: &Op, c: &Clients) -> Option<(u8, Vec<u8>)> {
    use DhcpOption::{RequestedIpAddress as Req, ServerIdentifier as Sid};
    let z = Ipv4Addr::UNSPECIFIED;
    let held = |m: &u8| c.leases.get(m).map_or(ip(16), |l| l.0);
    Some(match op {
        Op::Discover(m) => (*m, packet(*m, MessageType::Discover, z, vec![])),
        Op::Select(m) => {
            let a = c.offered.get(m).copied().unwrap_or(ip(16));
            (
                *m,
                packet(*m, MessageType::Request, z, vec![Req(a), Sid(SERVER)]),
            )
        }
        Op::Reboot(m, d) => (*m, packet(*m, MessageType::Request, z, vec![Req(ip(*d))])),
        Op::Renew(m) => (*m, packet(*m, MessageType::Request, held(m), vec![])),
        Op::Release(m) => (
            *m,
            packet(*m, MessageType::Release, held(m), vec![Sid(SERVER)]),
        ),
        Op::Decline(m) => (*m, packet(*m, MessageType::Decline, z, vec![Req(held(m))])),
        Op::ReleaseMac(_) | Op::Wait(_) => return None,
    })
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut server = Server::in_memory(config()).unwrap();
    let mut clients = Clients::default();
    let mut now = 0u64;
    let time = |t: u64| -> SystemTime { UNIX_EPOCH + Duration::from_secs(1_000_000 + t) };
    for op in ops {
        match op {
            Op::Wait(s) => now += s,
            Op::ReleaseMac(m) => {
                server.release_mac(mac(*m));
                clients.leases.remove(m);
            }
            Op::Release(m) | Op::Decline(m) => {
                let (_, p) = to_packet(op, &clients).unwrap();
                prop_assert!(server.handle(&p, time(now)).is_none());
                clients.leases.remove(m);
            }
            _ => {
                let (m, p) = to_packet(op, &clients).unwrap();
                let Some(reply) = server.handle(&p, time(now)) else {
                    continue;
                };
                let msg = Message::from_bytes(&reply.bytes).unwrap();
                let a = msg.yiaddr();
                match msg.opts().msg_type() {
                    Some(MessageType::Offer) => {
                        prop_assert!(allowed(m, a), "{a} offered to mac {m}");
                        clients.offered.insert(m, a);
                    }
                    Some(MessageType::Ack) => {
                        prop_assert!(allowed(m, a), "{a} acknowledged to mac {m}");
                        for (other, (b, end)) in &clients.leases {
                            prop_assert!(
                                *other == m || *b != a || *end <= now,
                                "{a} acknowledged to mac {m} while mac {other} holds it"
                            );
                        }
                        clients.leases.insert(m, (a, now + LEASE));
                    }
                    Some(MessageType::Nak) => prop_assert_eq!(a, Ipv4Addr::UNSPECIFIED),
                    other => prop_assert!(false, "unexpected reply {other:?}"),
                }
            }
        }
        let leases = server.leases(time(now));
        let mut seen = HashMap::new();
        for l in &leases {
            prop_assert!(seen.insert(l.ip, l.mac).is_none(), "{} listed twice", l.ip);
            prop_assert!(allowed(l.mac.0[5], l.ip), "{} listed for {}", l.ip, l.mac);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn no_address_is_ever_given_to_two_macs_or_outside_the_pool(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        run(&ops)?;
    }
}
