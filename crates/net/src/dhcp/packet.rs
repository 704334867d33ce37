//! One packet in, at most one packet out: [`Server::handle`] (RFC 2131, server side).
//!
//! Only BOOTREQUESTs from an Ethernet client, with the DHCP magic cookie, a message type, no relay
//! (`giaddr` zero) and a unicast MAC are answered; anything else, malformed or not for this
//! server, is ignored without a word.
//!
//! dhcproto's option decoder is not safe on hostile input: it `debug_assert!`s some option
//! lengths and subtracts from others unchecked, so a guest's packet would panic a debug build
//! (found by the `dhcp_packet` fuzz target). Before dhcproto sees a packet, [`sanitize`] keeps
//! only the options this server reads, with their lengths checked, in a packet of its own.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::SystemTime;

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, MAGIC,
    MIN_PACKET_SIZE,
};
use dhcproto::{Decodable, Encodable};

use super::mac::Mac;
use super::{unix, LeaseEvent, Server};

/// Where the magic cookie sits in a BOOTP packet.
const MAGIC_AT: usize = 236;

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The encoded DHCP message (at least 300 bytes, as BOOTP clients expect).
    pub bytes: Vec<u8>,
    /// Where to send it: 255.255.255.255:68 (clients without an address yet, and every NAK), or
    /// the client's address for a renewal or an INFORM.
    pub to: SocketAddrV4,
}

impl Reply {
    /// Whether the reply goes to the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        self.to.ip().is_broadcast()
    }
}

/// The options the server reads, with the lengths it accepts.
fn option_fits(code: u8, data: &[u8]) -> bool {
    match code {
        // Message type.
        53 => data.len() == 1,
        // Requested address, server identifier.
        50 | 54 => data.len() == 4,
        // Host name (dhcproto refuses the whole packet when it is not UTF-8).
        12 => std::str::from_utf8(data).is_ok(),
        _ => false,
    }
}

/// The packet's fixed part (up to and with the magic cookie, which dhcproto does not check)
/// followed by only the options [`option_fits`] keeps and an End option. `None` when the fixed
/// part is short or the cookie wrong; a truncated option ends the walk (what came before it is
/// kept).
fn sanitize(packet: &[u8]) -> Option<Vec<u8>> {
    let fixed = packet.get(..MAGIC_AT + 4)?;
    if fixed[MAGIC_AT..] != MAGIC {
        return None;
    }
    let mut out = fixed.to_vec();
    let mut rest = &packet[MAGIC_AT + 4..];
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            0 => rest = tail,
            255 => break,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    break;
                };
                let Some(data) = tail.get(..usize::from(len)) else {
                    break;
                };
                if option_fits(code, data) {
                    out.extend_from_slice(&[code, len]);
                    out.extend_from_slice(data);
                }
                rest = &tail[usize::from(len)..];
            }
        }
    }
    out.push(255);
    Some(out)
}

/// A request worth looking at, and its client.
fn decode(packet: &[u8]) -> Option<(Message, Mac, MessageType)> {
    let msg = Message::from_bytes(&sanitize(packet)?).ok()?;
    // hlen first: dhcproto's chaddr() slices by hlen and would panic past 16.
    if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth || msg.hlen() != 6 {
        return None;
    }
    if !msg.giaddr().is_unspecified() {
        return None;
    }
    let mac = Mac(<[u8; 6]>::try_from(msg.chaddr()).ok()?);
    if !mac.is_unicast() {
        return None;
    }
    let kind = msg.opts().msg_type()?;
    Some((msg, mac, kind))
}

fn requested_ip(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The client's host name, if it is a plausible one (letters, digits, `-`, `.`, `_`; 1 to 63).
fn hostname(msg: &Message) -> Option<String> {
    match msg.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h))
            if (1..=63).contains(&h.len())
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
        {
            Some(h.clone())
        }
        _ => None,
    }
}

impl Server {
    /// Answers one packet received on the switch, at time `now`: an OFFER, an ACK or a NAK, or
    /// nothing (malformed, not for us, a RELEASE or DECLINE, no address free). Lease changes are
    /// saved before it returns.
    pub fn handle(&mut self, packet: &[u8], now: SystemTime) -> Option<Reply> {
        let (msg, mac, kind) = decode(packet)?;
        let now = unix(now);
        self.pool.prune(now);
        match kind {
            MessageType::Discover => self.discover(&msg, mac, now),
            MessageType::Request => self.request(&msg, mac, now),
            MessageType::Release => {
                self.release(&msg, mac, now);
                None
            }
            MessageType::Decline => {
                self.decline(&msg, mac, now);
                None
            }
            // A client configured by hand asks for the network's options (no lease).
            MessageType::Inform if self.rules.subnet.contains_host(msg.ciaddr()) => {
                self.reply(&msg, MessageType::Ack, None, None)
            }
            _ => None,
        }
    }

    fn discover(&mut self, msg: &Message, mac: Mac, now: u64) -> Option<Reply> {
        match self.pool.offer(&self.rules, mac, requested_ip(msg), now) {
            Some(ip) => self.reply(msg, MessageType::Offer, Some(ip), None),
            None => {
                self.events.push(LeaseEvent::Exhausted { mac });
                None
            }
        }
    }

    /// REQUEST in its four states (RFC 2131 4.3.2): SELECTING (server identifier and requested
    /// address: ours must have been offered), RENEWING and REBINDING (`ciaddr`), INIT-REBOOT
    /// (requested address only). A REQUEST naming another server means the client took that
    /// server's offer: ours is dropped, silently.
    fn request(&mut self, msg: &Message, mac: Mac, now: u64) -> Option<Reply> {
        let server = server_id(msg);
        if server.is_some_and(|s| s != self.rules.server_id) {
            self.pool.forget_offer(mac);
            return None;
        }
        let ciaddr = msg.ciaddr();
        let (ip, selecting) = if !ciaddr.is_unspecified() {
            (ciaddr, false)
        } else {
            (requested_ip(msg)?, server.is_some())
        };
        match self
            .pool
            .request(&self.rules, mac, ip, selecting, hostname(msg), now)
        {
            Ok(new) => {
                if new {
                    self.events.push(LeaseEvent::Granted { mac, ip });
                }
                self.persist();
                self.reply(msg, MessageType::Ack, Some(ip), None)
            }
            Err(why) => self.reply(msg, MessageType::Nak, None, Some(why)),
        }
    }

    fn release(&mut self, msg: &Message, mac: Mac, now: u64) {
        if server_id(msg).is_some_and(|s| s != self.rules.server_id) {
            return;
        }
        let ip = msg.ciaddr();
        if self.pool.release(mac, ip, now) {
            self.events.push(LeaseEvent::Released { mac, ip });
            self.persist();
        }
    }

    fn decline(&mut self, msg: &Message, mac: Mac, now: u64) {
        if server_id(msg).is_some_and(|s| s != self.rules.server_id) {
            return;
        }
        let Some(ip) = requested_ip(msg) else { return };
        let was_bound = self.pool.get(mac).is_some_and(|l| l.bound);
        if self.pool.decline(mac, ip, now) {
            self.events.push(LeaseEvent::Declined { mac, ip });
            if was_bound {
                self.persist();
            }
        }
    }

    /// The common part of a reply: header fields from the request, message type, server
    /// identifier and, unless it is a NAK, the network's options; with `lease`, the address given
    /// and the lease times; with `text`, a message option (a NAK's reason).
    fn reply(
        &self,
        req: &Message,
        kind: MessageType,
        lease: Option<Ipv4Addr>,
        text: Option<&str>,
    ) -> Option<Reply> {
        let mut m = Message::default();
        let ciaddr = if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            req.ciaddr()
        };
        let to = if ciaddr.is_unspecified() || req.flags().broadcast() {
            Ipv4Addr::BROADCAST
        } else {
            ciaddr
        };
        let flags = if to.is_broadcast() {
            Flags::default().set_broadcast()
        } else {
            req.flags()
        };
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_xid(req.xid())
            .set_flags(flags)
            .set_ciaddr(ciaddr)
            .set_yiaddr(lease.unwrap_or(Ipv4Addr::UNSPECIFIED))
            .set_chaddr(req.chaddr());
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.rules.server_id));
        if kind != MessageType::Nak {
            opts.insert(DhcpOption::SubnetMask(self.rules.subnet.netmask()));
            opts.insert(DhcpOption::BroadcastAddr(self.rules.subnet.broadcast()));
            if let Some(g) = self.config.gateway {
                opts.insert(DhcpOption::Router(vec![g]));
            }
            if !self.config.dns.is_empty() {
                opts.insert(DhcpOption::DomainNameServer(self.config.dns.clone()));
            }
        }
        if lease.is_some() {
            opts.insert(DhcpOption::AddressLeaseTime(self.config.lease_secs));
            opts.insert(DhcpOption::Renewal(self.config.renew_secs()));
            opts.insert(DhcpOption::Rebinding(self.config.rebind_secs()));
        }
        if let Some(t) = text {
            opts.insert(DhcpOption::Message(t.to_string()));
        }
        Some(Reply {
            bytes: encode(&m)?,
            to: SocketAddrV4::new(to, CLIENT_PORT),
        })
    }
}

/// Encodes a reply, padded to the BOOTP minimum of 300 bytes.
fn encode(m: &Message) -> Option<Vec<u8>> {
    // Encoding fails only on option data too long for its length byte, which none of ours is
    // (at most MAX_DNS addresses, short texts).
    let mut bytes = m.to_vec().ok()?;
    if bytes.len() < MIN_PACKET_SIZE {
        bytes.resize(MIN_PACKET_SIZE, 0);
    }
    Some(bytes)
}
