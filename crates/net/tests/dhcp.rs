//! The DHCP server through its packets, as a client sees it: messages built and read with
//! dhcproto, the time given to each call (no sleeping), leases saved and read back.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use strata_net::dhcp::{Config, LeaseEvent, Mac, Reply, Reservation, Server};
use strata_net::subnet::Subnet;
use strata_net::NetErrorKind;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, d)
}

fn mac(n: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0x12, 0x34, n])
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn config() -> Config {
    let mut c = Config::new(Subnet::parse("10.20.0.0/24").unwrap().0, SERVER);
    c.gateway = Some(SERVER);
    c.dns = vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)];
    c
}

/// A client's message: `kind` from `m`, with `ciaddr` and the options given.
fn packet(m: Mac, kind: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut msg = Message::new_with_id(
        0x1234_5678,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &m.0,
    );
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        msg.opts_mut().insert(o);
    }
    msg.to_vec().unwrap()
}

fn discover(m: Mac) -> Vec<u8> {
    packet(m, MessageType::Discover, Ipv4Addr::UNSPECIFIED, vec![])
}

fn select(m: Mac, addr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let opts = vec![
        DhcpOption::RequestedIpAddress(addr),
        DhcpOption::ServerIdentifier(server),
        DhcpOption::Hostname("guest-1".into()),
    ];
    packet(m, MessageType::Request, Ipv4Addr::UNSPECIFIED, opts)
}

fn read(reply: &Reply) -> Message {
    Message::from_bytes(&reply.bytes).unwrap()
}

fn kind(msg: &Message) -> MessageType {
    msg.opts().msg_type().unwrap()
}

/// DISCOVER, REQUEST: the address acknowledged.
fn lease(s: &mut Server, m: Mac, now: SystemTime) -> Ipv4Addr {
    let offer = read(&s.handle(&discover(m), now).expect("an offer"));
    assert_eq!(kind(&offer), MessageType::Offer);
    let ack = read(
        &s.handle(&select(m, offer.yiaddr(), SERVER), now)
            .expect("an ack"),
    );
    assert_eq!(kind(&ack), MessageType::Ack, "{ack}");
    ack.yiaddr()
}

#[track_caller]
fn check_lease_options(msg: &Message, m: Mac, want: MessageType, addr: Ipv4Addr) {
    use DhcpOption as O;
    assert_eq!(msg.opcode(), Opcode::BootReply);
    assert_eq!(msg.htype(), HType::Eth);
    assert_eq!(msg.xid(), 0x1234_5678);
    assert_eq!(msg.chaddr(), &m.0[..]);
    assert_eq!(msg.yiaddr(), addr);
    assert!(msg.flags().broadcast());
    let o = msg.opts();
    let get = |c| o.get(c).cloned();
    assert_eq!(get(OptionCode::MessageType), Some(O::MessageType(want)));
    assert_eq!(
        get(OptionCode::ServerIdentifier),
        Some(O::ServerIdentifier(SERVER))
    );
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    assert_eq!(get(OptionCode::SubnetMask), Some(O::SubnetMask(mask)));
    assert_eq!(get(OptionCode::Router), Some(O::Router(vec![SERVER])));
    let dns = vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)];
    assert_eq!(
        get(OptionCode::DomainNameServer),
        Some(O::DomainNameServer(dns))
    );
    assert_eq!(
        get(OptionCode::BroadcastAddr),
        Some(O::BroadcastAddr(ip(255)))
    );
    assert_eq!(
        get(OptionCode::AddressLeaseTime),
        Some(O::AddressLeaseTime(3600))
    );
    assert_eq!(get(OptionCode::Renewal), Some(O::Renewal(1800)));
    assert_eq!(get(OptionCode::Rebinding), Some(O::Rebinding(3150)));
    assert_eq!(o.len(), 9, "no other options: {msg}");
}

#[test]
fn discover_offer_request_ack_hands_out_16_then_17_with_every_option() {
    let mut s = Server::in_memory(config()).unwrap();
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
    let offer = s.handle(&discover(mac(1)), at(0)).unwrap();
    assert_eq!(offer.to, broadcast);
    assert!(offer.is_broadcast() && offer.bytes.len() >= 300);
    check_lease_options(&read(&offer), mac(1), MessageType::Offer, ip(16));
    assert!(s.leases(at(0)).is_empty(), "an offer is not a lease");
    let ack = s.handle(&select(mac(1), ip(16), SERVER), at(1)).unwrap();
    assert_eq!(ack.to, broadcast);
    check_lease_options(&read(&ack), mac(1), MessageType::Ack, ip(16));
    assert_eq!(lease(&mut s, mac(2), at(2)), ip(17));
    let leases = s.leases(at(3));
    assert_eq!(leases.len(), 2);
    assert_eq!((leases[0].mac, leases[0].ip), (mac(1), ip(16)));
    assert_eq!(leases[0].hostname.as_deref(), Some("guest-1"));
    assert_eq!(leases[0].expires_unix, 1_700_000_000 + 1 + 3600);
    assert_eq!(leases[0].expires, "2023-11-14T23:13:21Z");
    assert_eq!(
        s.take_events(),
        vec![
            LeaseEvent::Granted {
                mac: mac(1),
                ip: ip(16)
            },
            LeaseEvent::Granted {
                mac: mac(2),
                ip: ip(17)
            }
        ]
    );
}

#[test]
fn requests_that_cannot_be_granted_get_a_nak() {
    let mut s = Server::in_memory(config()).unwrap();
    lease(&mut s, mac(1), at(0));
    s.handle(&discover(mac(2)), at(0)).unwrap();
    let nak = |s: &mut Server, p: Vec<u8>| {
        let r = s.handle(&p, at(1)).expect("a reply");
        assert!(r.is_broadcast());
        let msg = read(&r);
        assert_eq!(kind(&msg), MessageType::Nak, "{msg}");
        assert_eq!(msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(msg.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert!(msg.opts().get(OptionCode::Message).is_some());
    };
    // Selecting an address that was not offered (mac 2 was offered .17).
    nak(&mut s, select(mac(2), ip(40), SERVER));
    // Selecting an address taken by another client.
    nak(&mut s, select(mac(2), ip(16), SERVER));
    // Init-reboot with an address of another network, or someone else's.
    let reboot = |a| vec![DhcpOption::RequestedIpAddress(a)];
    let other_net = Ipv4Addr::new(192, 168, 1, 50);
    nak(
        &mut s,
        packet(
            mac(3),
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            reboot(other_net),
        ),
    );
    nak(
        &mut s,
        packet(
            mac(3),
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            reboot(ip(16)),
        ),
    );
    // Renewing someone else's address.
    nak(&mut s, packet(mac(3), MessageType::Request, ip(16), vec![]));
    // An address outside the range.
    nak(
        &mut s,
        packet(
            mac(3),
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            reboot(ip(3)),
        ),
    );
    // A REQUEST naming another server: no answer, and the offer to mac 2 is dropped.
    let other_server = Ipv4Addr::new(10, 20, 0, 2);
    assert_eq!(s.handle(&select(mac(2), ip(17), other_server), at(2)), None);
    assert_eq!(
        lease(&mut s, mac(4), at(3)),
        ip(17),
        "mac 2's offer was dropped"
    );
    assert_eq!(s.leases(at(3)).len(), 2);
}

#[test]
fn a_renewal_is_acknowledged_to_the_client_and_extends_the_lease() {
    let mut s = Server::in_memory(config()).unwrap();
    let a = lease(&mut s, mac(1), at(0));
    let renew = packet(mac(1), MessageType::Request, a, vec![]);
    let r = s.handle(&renew, at(1800)).unwrap();
    assert_eq!(r.to, SocketAddrV4::new(a, 68), "unicast to the client");
    let msg = read(&r);
    assert_eq!(
        (kind(&msg), msg.yiaddr(), msg.ciaddr()),
        (MessageType::Ack, a, a)
    );
    assert_eq!(
        s.leases(at(1800))[0].expires_unix,
        1_700_000_000 + 1800 + 3600
    );
    assert_eq!(
        s.leases(at(1800))[0].hostname.as_deref(),
        Some("guest-1"),
        "kept"
    );
    // Still there after the first lease would have ended.
    assert_eq!(s.leases(at(4000)).len(), 1);
    assert_eq!(s.take_events().len(), 1, "a renewal is not a new grant");
}

#[test]
fn expired_leases_free_their_address() {
    let mut s = Server::in_memory(config()).unwrap();
    assert_eq!(lease(&mut s, mac(1), at(0)), ip(16));
    assert_eq!(s.leases(at(3600)).len(), 0, "ended");
    assert_eq!(lease(&mut s, mac(2), at(3601)), ip(16), "reused");
    // Mac 1 comes back: its address is gone, it gets the next one.
    assert_eq!(lease(&mut s, mac(1), at(3602)), ip(17));
    // A renewal of an expired lease whose address nobody took is granted again.
    let renew = packet(mac(1), MessageType::Request, ip(17), vec![]);
    let msg = read(&s.handle(&renew, at(3602 + 4000)).unwrap());
    assert_eq!(kind(&msg), MessageType::Ack);
}

#[test]
fn release_decline_and_inform() {
    let mut s = Server::in_memory(config()).unwrap();
    let a = lease(&mut s, mac(1), at(0));
    s.take_events();
    let release = packet(
        mac(1),
        MessageType::Release,
        a,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    assert_eq!(s.handle(&release, at(10)), None);
    assert!(s.leases(at(10)).is_empty());
    assert_eq!(
        s.take_events(),
        vec![LeaseEvent::Released { mac: mac(1), ip: a }]
    );
    // The same MAC gets its address back.
    assert_eq!(lease(&mut s, mac(1), at(11)), a);
    // Declined: quarantined, the next client gets the next address.
    let decline = packet(
        mac(1),
        MessageType::Decline,
        Ipv4Addr::UNSPECIFIED,
        vec![
            DhcpOption::RequestedIpAddress(a),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    assert_eq!(s.handle(&decline, at(12)), None);
    assert!(s
        .take_events()
        .contains(&LeaseEvent::Declined { mac: mac(1), ip: a }));
    assert_eq!(lease(&mut s, mac(2), at(13)), ip(17));
    assert_eq!(
        lease(&mut s, mac(1), at(14)),
        ip(18),
        "not the declined one"
    );
    // INFORM: the network's options, no address, no lease time, unicast to the client.
    let inform = packet(mac(7), MessageType::Inform, ip(100), vec![]);
    let r = s.handle(&inform, at(15)).unwrap();
    assert_eq!(r.to, SocketAddrV4::new(ip(100), 68));
    let msg = read(&r);
    assert_eq!(
        (kind(&msg), msg.yiaddr()),
        (MessageType::Ack, Ipv4Addr::UNSPECIFIED)
    );
    assert!(msg.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(msg.opts().get(OptionCode::Router).is_some());
    assert_eq!(s.leases(at(15)).len(), 2);
}

#[test]
fn what_is_not_a_request_for_us_is_ignored() {
    let mut s = Server::in_memory(config()).unwrap();
    let good = discover(mac(1));
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    let mut relayed = good.clone();
    relayed[24..28].copy_from_slice(&[10, 9, 9, 9]);
    let mut long_hlen = good.clone();
    long_hlen[2] = 20;
    let mut no_cookie = good.clone();
    no_cookie[236] = 0;
    let no_type = {
        let mut m = Message::new_with_id(1, ip(0), ip(0), ip(0), ip(0), &mac(1).0);
        m.opts_mut().insert(DhcpOption::Hostname("x".into()));
        m.to_vec().unwrap()
    };
    let offer = packet(mac(1), MessageType::Offer, Ipv4Addr::UNSPECIFIED, vec![]);
    let multicast = discover(Mac([1, 0, 0x5e, 0, 0, 1]));
    let zero = discover(Mac([0; 6]));
    let foreign_inform = packet(
        mac(1),
        MessageType::Inform,
        Ipv4Addr::new(192, 168, 1, 5),
        vec![],
    );
    for (name, p) in [
        ("empty", vec![]),
        ("short", good[..100].to_vec()),
        ("bootreply", reply_op),
        ("relayed", relayed),
        ("hlen 20", long_hlen),
        ("no cookie", no_cookie),
        ("no type", no_type),
        ("offer", offer),
        ("multicast mac", multicast),
        ("zero mac", zero),
        ("inform from another network", foreign_inform),
    ] {
        assert_eq!(s.handle(&p, at(0)), None, "{name}");
    }
    assert!(s.handle(&good, at(0)).is_some());
}

#[test]
fn reservations_release_mac_and_owners() {
    let mut c = config();
    c.reservations = vec![Reservation {
        mac: mac(9),
        ip: ip(16),
    }];
    let mut s = Server::in_memory(c).unwrap();
    assert_eq!(lease(&mut s, mac(1), at(0)), ip(17));
    assert_eq!(lease(&mut s, mac(9), at(0)), ip(16));
    // Reserving an address another MAC holds is refused, naming it.
    let e = s.reserve(mac(5), ip(17), at(1)).unwrap_err();
    assert_eq!(e.kind, NetErrorKind::Conflict);
    assert!(e.to_string().contains(&mac(1).to_string()), "{e}");
    // The VM is deleted: its lease goes at once, and a new VM with the reserved MAC gets it.
    s.set_owner(mac(9), Some("vm-a/nic0"));
    let leases = s.leases(at(1));
    let l9 = leases.iter().find(|l| l.mac == mac(9)).unwrap();
    assert_eq!(
        (l9.owner.as_deref(), l9.reserved),
        (Some("vm-a/nic0"), true)
    );
    let l1 = leases.iter().find(|l| l.mac == mac(1)).unwrap();
    assert_eq!((l1.owner.as_deref(), l1.reserved), (None, false));
    assert_eq!(s.release_mac(mac(9)), Some(ip(16)));
    assert_eq!(s.release_mac(mac(9)), None);
    assert_eq!(lease(&mut s, mac(2), at(2)), ip(18), ".16 stays reserved");
    assert_eq!(lease(&mut s, mac(9), at(3)), ip(16));
    // A new reservation takes effect for its MAC at once.
    s.reserve(mac(3), ip(200), at(4)).unwrap();
    assert_eq!(lease(&mut s, mac(3), at(5)), ip(200));
    assert!(s.unreserve(mac(3)).unwrap());
    assert!(!s.unreserve(mac(3)).unwrap());
}

#[test]
fn leases_survive_a_restart_and_a_damaged_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.json");
    {
        let mut s = Server::open(config(), &path, at(0)).unwrap();
        assert_eq!(lease(&mut s, mac(1), at(0)), ip(16));
        assert_eq!(lease(&mut s, mac(2), at(0)), ip(17));
        s.set_owner(mac(1), Some("vm/nic0"));
        // An offer is not saved.
        s.handle(&discover(mac(3)), at(0)).unwrap();
        assert!(s
            .take_events()
            .iter()
            .all(|e| !matches!(e, LeaseEvent::SaveFailed(_))));
    }
    let mut s = Server::open(config(), &path, at(10)).unwrap();
    let leases = s.leases(at(10));
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].owner.as_deref(), Some("vm/nic0"));
    assert_eq!(
        lease(&mut s, mac(3), at(10)),
        ip(18),
        "the others' addresses are kept"
    );
    // release_mac is saved too.
    s.release_mac(mac(2));
    drop(s);
    let s = Server::open(config(), &path, at(20)).unwrap();
    assert_eq!(s.leases(at(20)).len(), 2);
    // Expired leases are dropped at load.
    let s = Server::open(config(), &path, at(5000)).unwrap();
    assert!(s.leases(at(5000)).is_empty());
    // A damaged file is an error naming it (no panic).
    std::fs::write(&path, b"{\"version\":1,\"leases\":[{\"mac\":").unwrap();
    let e = Server::open(config(), &path, at(0)).unwrap_err();
    assert_eq!(e.kind, NetErrorKind::Corrupt);
    assert!(e.to_string().contains("leases.json"), "{e}");
}

#[test]
fn a_save_failure_is_reported_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone/leases.json");
    let mut s = Server::open(config(), &path, at(0)).unwrap();
    assert_eq!(lease(&mut s, mac(1), at(0)), ip(16));
    let events = s.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, LeaseEvent::SaveFailed(_))),
        "{events:?}"
    );
}

#[test]
fn settings_are_validated_when_the_server_is_made() {
    let mut c = config();
    c.gateway = Some(Ipv4Addr::new(10, 21, 0, 1));
    let e = Server::in_memory(c).unwrap_err();
    assert_eq!(e.kind, NetErrorKind::Invalid);
    assert!(e.to_string().contains("gateway"), "{e}");
}

#[test]
fn options_the_server_does_not_read_are_skipped_whatever_their_length() {
    let mut s = Server::in_memory(config()).unwrap();
    // A DISCOVER whose options start with a bulk-lease-query base time (91) of length 2 (dhcproto
    // asserts 4) and a client FQDN (81) of length 0: skipped, the message still answered.
    let mut p = discover(mac(1));
    let at_opts = 240;
    p.splice(at_opts..at_opts, [91, 2, 0, 0, 81, 0, 12, 2, 0xff, 0xfe]);
    let msg = read(&s.handle(&p, at(0)).expect("an offer"));
    assert_eq!(kind(&msg), MessageType::Offer);
    // A truncated option ends the options: no message type after it, no answer.
    let mut cut = discover(mac(2));
    cut.truncate(at_opts);
    cut.extend_from_slice(&[50, 4, 10, 20]);
    assert_eq!(s.handle(&cut, at(0)), None);
}
