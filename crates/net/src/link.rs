//! Kernel network objects through netlink (rtnetlink), never by spawning `ip`: a switch's Linux
//! bridge, its host address, and a NIC's tap attached to it.
//!
//! Names are derived from Strata's ids so they never collide with the host's own interfaces:
//! `stb-` + 10 hex digits for a bridge, `stt-` + 8 hex digits + `-` + NIC index for a tap (at most
//! 15 bytes, the kernel's limit). An existing interface of that name that is not a bridge is
//! refused rather than reused.
//!
//! rtnetlink is asynchronous; each call here runs it on a small runtime of its own, so the host
//! service's blocking threads and the worker (which has no runtime) call it alike.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::error::{NetError, NetErrorKind};

/// The bridge of the switch whose id is `switch_id`.
pub fn bridge_name(switch_id: &str) -> String {
    format!("stb-{}", &hex_part(switch_id, 10))
}

/// The tap of NIC `index` of the VM whose id is `vm_id`.
pub fn tap_name(vm_id: &str, index: usize) -> String {
    format!("stt-{}-{index}", &hex_part(vm_id, 8))
}

/// The bridge of VLAN `vlan` of the switch whose id is `switch_id`: this kernel may lack bridge
/// VLAN filtering, so each VLAN in use on a switch is a bridge of its own (`stv-` + 6 hex digits
/// + `-` + the VLAN id), and ports on different VLANs never share a bridge.
pub fn vlan_bridge_name(switch_id: &str, vlan: u16) -> String {
    format!("stv-{}-{vlan}", &hex_part(switch_id, 6))
}

fn hex_part(id: &str, n: usize) -> String {
    id.chars().filter(char::is_ascii_hexdigit).take(n).collect()
}

/// Runs `f` with a netlink handle on a runtime of its own.
fn netlink<T, F>(what: &str, f: impl FnOnce(Handle) -> F) -> Result<T, NetError>
where
    F: std::future::Future<Output = Result<T, NetError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| NetError::new(NetErrorKind::Io, what, e.to_string()))?;
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetError::new(NetErrorKind::Io, what, format!("netlink: {e}")))?;
        let task = tokio::spawn(connection);
        let result = f(handle).await;
        task.abort();
        result
    })
}

fn kernel(what: &str) -> impl Fn(rtnetlink::Error) -> NetError + '_ {
    move |e| NetError::new(NetErrorKind::Kernel, what, e.to_string())
}

async fn find(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(kernel(name)(e)),
    }
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

/// Whether an interface named `name` exists.
pub fn exists(name: &str) -> Result<bool, NetError> {
    netlink(name, |h| async move { Ok(find(&h, name).await?.is_some()) })
}

/// Makes sure the bridge `name` exists, is up, and (when given) has the host address `address`
/// with its prefix. Returns whether it was created now (so a failed caller can undo exactly that).
pub fn ensure_bridge(name: &str, address: Option<(Ipv4Addr, u8)>) -> Result<bool, NetError> {
    netlink(name, |h| async move {
        let created = match find(&h, name).await? {
            Some(link) if is_bridge(&link) => false,
            Some(_) => {
                return Err(NetError::new(
                    NetErrorKind::Conflict,
                    name,
                    "an interface of this name exists and is not a bridge",
                ))
            }
            None => {
                h.link()
                    .add(LinkBridge::new(name).up().build())
                    .execute()
                    .await
                    .map_err(kernel(name))?;
                true
            }
        };
        let link = find(&h, name)
            .await?
            .ok_or_else(|| NetError::new(NetErrorKind::Kernel, name, "vanished after creation"))?;
        let index = link.header.index;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(kernel(name))?;
        if let Some((ip, prefix)) = address {
            if !has_address(&h, index, ip).await? {
                h.address()
                    .add(index, ip.into(), prefix)
                    .execute()
                    .await
                    .map_err(kernel(name))?;
            }
        }
        Ok(created)
    })
}

async fn has_address(h: &Handle, index: u32, ip: Ipv4Addr) -> Result<bool, NetError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addrs.try_next().await.map_err(kernel("address"))? {
        if a.header.family != AddressFamily::Inet {
            continue;
        }
        let found = a.attributes.iter().any(
            |attr| matches!(attr, AddressAttribute::Address(std::net::IpAddr::V4(x)) if *x == ip),
        );
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes the interface `name`; a missing one is not an error.
pub fn delete(name: &str) -> Result<(), NetError> {
    netlink(name, |h| async move {
        let Some(link) = find(&h, name).await? else {
            return Ok(());
        };
        h.link()
            .del(link.header.index)
            .execute()
            .await
            .map_err(kernel(name))
    })
}

/// Puts the interface `port` (a VM's tap) on the bridge `bridge` and brings it up.
pub fn attach(port: &str, bridge: &str) -> Result<(), NetError> {
    netlink(port, |h| async move {
        let b = find(&h, bridge)
            .await?
            .ok_or_else(|| NetError::new(NetErrorKind::NotFound, bridge, "no such bridge"))?;
        let p = find(&h, port)
            .await?
            .ok_or_else(|| NetError::new(NetErrorKind::NotFound, port, "no such interface"))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(p.header.index)
                    .controller(b.header.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(port))
    })
}

/// What a host interface is attached to and the IPv4 addresses it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortState {
    /// The bridge it is a port of, if any.
    pub controller: Option<String>,
    /// Its IPv4 addresses, `a.b.c.d/len`.
    pub ipv4: Vec<String>,
}

/// The state of interface `name`, or `None` when there is no such interface.
pub fn port_state(name: &str) -> Result<Option<PortState>, NetError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    netlink(name, |h| async move {
        let Some(link) = find(&h, name).await? else {
            return Ok(None);
        };
        let controller = match link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            _ => None,
        }) {
            Some(i) => name_of(&h, i).await?,
            None => None,
        };
        let mut ipv4 = Vec::new();
        let mut addrs = h
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute();
        while let Some(a) = addrs.try_next().await.map_err(kernel(name))? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                    ipv4.push(format!("{ip}/{}", a.header.prefix_len));
                }
            }
        }
        Ok(Some(PortState { controller, ipv4 }))
    })
}

async fn name_of(h: &Handle, index: u32) -> Result<Option<String>, NetError> {
    let mut links = h.link().get().match_index(index).execute();
    let link = links.try_next().await.map_err(kernel("link"))?;
    Ok(link.and_then(|l| {
        l.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n),
            _ => None,
        })
    }))
}

/// Takes the interface `port` off its bridge (a missing interface is not an error).
pub fn detach(port: &str) -> Result<(), NetError> {
    netlink(port, |h| async move {
        let Some(p) = find(&h, port).await? else {
            return Ok(());
        };
        h.link()
            .set(
                LinkUnspec::new_with_index(p.header.index)
                    .nocontroller()
                    .build(),
            )
            .execute()
            .await
            .map_err(kernel(port))
    })
}

/// How many interfaces are ports of the bridge `bridge` (0 when it does not exist).
pub fn port_count(bridge: &str) -> Result<usize, NetError> {
    netlink(bridge, |h| async move {
        let Some(b) = find(&h, bridge).await? else {
            return Ok(0);
        };
        let index = b.header.index;
        let mut count = 0;
        let mut links = h.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(kernel("links"))? {
            let is_port = l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == index));
            count += usize::from(is_port);
        }
        Ok(count)
    })
}

/// The VLAN bridges of the switch whose id is `switch_id` that exist now.
pub fn vlan_bridges(switch_id: &str) -> Result<Vec<String>, NetError> {
    let prefix = format!("stv-{}-", &hex_part(switch_id, 6));
    netlink("links", |h| async move {
        let mut names = Vec::new();
        let mut links = h.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(kernel("links"))? {
            for a in l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    if n.starts_with(&prefix) {
                        names.push(n);
                    }
                }
            }
        }
        Ok(names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_keep_to_strata_prefixes() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(bridge_name(id), "stb-0123456789");
        assert_eq!(tap_name(id, 7), "stt-01234567-7");
        assert!(bridge_name(id).len() <= 15 && tap_name(id, 15).len() <= 15);
    }
}
