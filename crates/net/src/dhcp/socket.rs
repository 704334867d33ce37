//! The server on the wire: a UDP socket on port 67 bound to the switch's bridge
//! (`SO_BINDTODEVICE`, so that each switch's server hears only its own switch and several servers
//! share port 67), `SO_BROADCAST` for the replies to 255.255.255.255:68 sent through it.
//!
//! Limitation: this is a plain UDP socket, so the kernel picks the replies' source address. On an
//! internal switch (the bridge has the host's address) that is the server identifier, as it
//! should be. On a private switch (no host address on the bridge) broadcasts still go out on the
//! bridge and busybox udhcpc, ISC dhclient and systemd-networkd look at the server identifier
//! option rather than the source, but the source is whatever address the kernel chooses (possibly
//! one of another interface), and a renewal's unicast ACK has no route: it falls back to
//! broadcast. A packet socket (AF_PACKET) writing whole frames would fix both; it is not built.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{CLIENT_PORT, SERVER_PORT};
use socket2::{Domain, Protocol, Socket, Type};

use super::{LeaseEvent, Server};
use crate::error::{NetError, NetErrorKind};

/// How often the loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);

/// The largest packet read (a DHCP message on an Ethernet without jumbo frames fits).
const MAX_PACKET: usize = 1500;

/// A UDP socket on 0.0.0.0:67 bound to `interface` (the switch's bridge), with `SO_BROADCAST`,
/// `SO_REUSEADDR` and a short read timeout (for [`Server::run`]'s stop flag). Needs root (or
/// CAP_NET_BIND_SERVICE and CAP_NET_RAW).
pub fn bind(interface: &str) -> Result<UdpSocket, NetError> {
    let err = |what: &str, e: std::io::Error| {
        NetError::new(
            NetErrorKind::Io,
            &format!("DHCP socket on {interface}"),
            format!("{what}: {e}"),
        )
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| err("socket", e))?;
    s.set_reuse_address(true)
        .map_err(|e| err("SO_REUSEADDR", e))?;
    // Before bind: two sockets on port 67 bound to different devices do not clash.
    s.bind_device(Some(interface.as_bytes()))
        .map_err(|e| err("SO_BINDTODEVICE", e))?;
    s.set_broadcast(true).map_err(|e| err("SO_BROADCAST", e))?;
    s.set_read_timeout(Some(POLL))
        .map_err(|e| err("SO_RCVTIMEO", e))?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT);
    s.bind(&addr.into())
        .map_err(|e| err("bind 0.0.0.0:67", e))?;
    Ok(s.into())
}

/// Wakes a thread blocked receiving on `socket` (a clone of the one [`Server::serve`] reads) so
/// that it sees its stop flag at once rather than at the next read timeout: shutting the socket
/// down for reading makes a pending and every later receive return at once.
pub fn interrupt(socket: &UdpSocket) {
    // A socket already shut down or closed has nothing left to wake.
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
}

impl Server {
    /// Serves the switch whose bridge is `interface` until `stop` is set (looked at every 200 ms):
    /// binds with [`bind`], then [`Server::serve`]. For a thread of its own.
    pub fn run(
        server: &Mutex<Server>,
        interface: &str,
        stop: &AtomicBool,
        on_event: impl FnMut(LeaseEvent),
    ) -> Result<(), NetError> {
        let socket = bind(interface)?;
        Self::serve(server, &socket, stop, on_event)
    }

    /// Serves on a socket made by [`bind`] (or any UDP socket with a read timeout) until `stop`
    /// is set: each packet goes through [`Server::handle`] (the lock held only for that), the
    /// reply out through the same socket, and the events to `on_event`. A unicast reply that
    /// cannot be sent goes to the broadcast address instead; a receive error other than a timeout
    /// or an interruption ends the loop with that error.
    pub fn serve(
        server: &Mutex<Server>,
        socket: &UdpSocket,
        stop: &AtomicBool,
        mut on_event: impl FnMut(LeaseEvent),
    ) -> Result<(), NetError> {
        let mut buf = vec![0u8; MAX_PACKET];
        while !stop.load(Ordering::Relaxed) {
            let n = match socket.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    return Err(NetError::new(
                        NetErrorKind::Io,
                        "DHCP socket",
                        format!("receive: {e}"),
                    ))
                }
            };
            let (reply, events) = {
                let mut s = server.lock().unwrap_or_else(PoisonError::into_inner);
                let reply = s.handle(&buf[..n], SystemTime::now());
                (reply, s.take_events())
            };
            if let Some(r) = reply {
                let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
                if socket.send_to(&r.bytes, r.to).is_err() && r.to != broadcast {
                    // A lost reply is a retry for the client; nothing else to do.
                    let _ = socket.send_to(&r.bytes, broadcast);
                }
            }
            events.into_iter().for_each(&mut on_event);
        }
        Ok(())
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}
