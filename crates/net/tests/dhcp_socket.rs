//! The server on a real socket: `Server::run`'s socket (port 67, bound to a device, broadcast
//! replies to port 68) on the loopback device of a network namespace made for the test's thread
//! (unshare(CLONE_NEWNET): nothing is touched on the host, and the namespace goes with the thread
//! even on failure). A client socket sends DISCOVER and REQUEST and reads OFFER and ACK.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Encodable};
use socket2::{Domain, Protocol, Socket, Type};
use strata_net::dhcp::{self, Config, LeaseEvent, Mac, Server};
use strata_net::subnet::Subnet;

/// Runs `f` on a thread inside a new network namespace whose loopback device is up.
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run the tests as root");
        let tid = nix::unistd::gettid();
        let ns = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
        let up = Command::new("nsenter")
            .args([&ns, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success(), "ip link set lo up in the test's namespace");
        f()
    })
    .join()
    .unwrap()
}

fn client_socket() -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind_device(Some(b"lo")).unwrap();
    s.set_broadcast(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .unwrap();
    s.into()
}

fn ask(client: &UdpSocket, msg: &Message) -> Message {
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    client.send_to(&msg.to_vec().unwrap(), to).unwrap();
    let mut buf = [0u8; 1500];
    loop {
        let (n, _) = client.recv_from(&mut buf).expect("a reply within 5 s");
        let reply = Message::from_bytes(&buf[..n]).unwrap();
        if reply.xid() == msg.xid() {
            return reply;
        }
    }
}

#[test]
fn run_answers_discover_and_request_on_a_device() {
    in_new_netns(|| {
        let subnet = Subnet::parse("10.20.0.0/24").unwrap().0;
        let config = Config::new(subnet, Ipv4Addr::new(10, 20, 0, 1));
        let server = Mutex::new(Server::in_memory(config).unwrap());
        let stop = AtomicBool::new(false);
        let socket = dhcp::bind("lo").unwrap();
        let client = client_socket();
        let events = std::thread::scope(|scope| {
            let serving = scope.spawn(|| {
                let mut events = Vec::new();
                Server::serve(&server, &socket, &stop, |e| events.push(e)).map(|()| events)
            });
            let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
            let z = Ipv4Addr::UNSPECIFIED;
            let mut discover = Message::new_with_id(42, z, z, z, z, &mac.0);
            discover
                .opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Discover));
            let offer = ask(&client, &discover);
            assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
            assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 20, 0, 16));
            let mut request = Message::new_with_id(43, z, z, z, z, &mac.0);
            let opts = request.opts_mut();
            opts.insert(DhcpOption::MessageType(MessageType::Request));
            opts.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
            opts.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 20, 0, 1)));
            let ack = ask(&client, &request);
            assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
            assert_eq!(ack.yiaddr(), Ipv4Addr::new(10, 20, 0, 16));
            stop.store(true, Ordering::Relaxed);
            serving.join().unwrap().unwrap()
        });
        let ip = Ipv4Addr::new(10, 20, 0, 16);
        let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(events, vec![LeaseEvent::Granted { mac, ip }]);
        // `run` binds a socket of its own and returns when the stop flag is set; a missing
        // device is an error naming it.
        drop(socket);
        let stop = AtomicBool::new(true);
        Server::run(&server, "lo", &stop, |_| {}).unwrap();
        let e = Server::run(&server, "no-such-dev", &stop, |_| {}).unwrap_err();
        assert!(e.to_string().contains("no-such-dev"), "{e}");
    });
}
