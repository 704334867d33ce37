//! # strata-net
//!
//! Strata's virtual networks. It knows nothing of QEMU or of a VM's lifecycle: the host service
//! asks it for switches and their DHCP servers, and tells it when a NIC comes or goes.
//!
//! - [`dhcp`]: the built-in DHCP server of a switch: its pool (the first 16 addresses of the
//!   subnet reserved, as Virtual Server did, unless a range is given), leases and reservations,
//!   persisted, and the packet handling (dhcproto);
//! - [`firewall`]: Strata's own nftables tables (a switch's NAT and port forwards, a NIC's
//!   guards against MAC spoofing and rogue DHCP servers and routers), replaced whole and
//!   atomically; other tables are only read, to warn about ones that drop forwarded traffic;
//! - [`link`]: the kernel's side: a switch's bridge, its host address, a NIC's tap on it
//!   (netlink);
//! - [`shape`]: a NIC's bandwidth limit (tc);
//! - [`subnet`]: IPv4 subnets as switches use them (parsing, overlap, the host's address).

mod command;
pub mod dhcp;
mod error;
pub mod firewall;
pub mod link;
pub mod shape;
pub mod subnet;

pub use error::{NetError, NetErrorKind};
