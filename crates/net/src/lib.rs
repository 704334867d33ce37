//! # strata-net
//!
//! Strata's virtual networks. It knows nothing of QEMU or of a VM's lifecycle: the host service
//! asks it for switches and their DHCP servers, and tells it when a NIC comes or goes.
//!
//! - [`dhcp`]: the built-in DHCP server of a switch: its pool (the first 16 addresses of the
//!   subnet reserved, as Virtual Server did, unless a range is given), leases and reservations,
//!   persisted, and the packet handling (dhcproto);
//! - [`link`]: the kernel's side: a switch's bridge, its host address, a NIC's tap on it
//!   (netlink);
//! - [`subnet`]: IPv4 subnets as switches use them (parsing, overlap, the host's address).

pub mod dhcp;
mod error;
pub mod link;
pub mod subnet;

pub use error::{NetError, NetErrorKind};
