//! Two guests on a private switch: Strata's DHCP server serves it without the host having an
//! address there; MAC-spoofing protection, VLANs and the DHCP guard, each shown to be what
//! blocks by switching it off again.

use super::netlab::{shell_guest, T};
use super::*;

/// Whether guest `from` can ping `to` now (its neighbour cache flushed first).
fn pings(h: &Host, from: &str, to: &str, tag: &str) -> bool {
    h.guest_runs(
        from,
        tag,
        &format!("ip neigh flush dev eth0; ping -c 2 -W 2 {to}"),
    )
}

#[test]
fn a_private_switch_with_guards_and_vlans() {
    let h = Host::in_netns();
    h.ok(&[
        "switch",
        "create",
        "priv",
        "--type",
        "private",
        "--subnet",
        "10.81.0.0/24",
    ]);
    let g = shell_guest(&h, "g");
    vm_create(&h, "a", &g, &["--nic", "virtio:priv"]);
    vm_create(&h, "b", &g, &["--nic", "virtio:priv"]);
    h.ok(&["vm", "start", "a"]);
    assert_eq!(h.lease_of("a", "eth0"), "10.81.0.16");
    h.ok(&["vm", "start", "b"]);
    assert_eq!(h.lease_of("b", "eth0"), "10.81.0.17");
    h.wait_console("a", "READY", T);
    h.wait_console("b", "READY", T);
    assert!(pings(&h, "b", "10.81.0.16", "p1"), "{}", h.console("b"));
    // The host has no address on a private switch: it cannot reach the guests.
    let (ok, _) = h.in_ns(&["busybox", "ping", "-c", "1", "-W", "2", "10.81.0.16"]);
    assert!(!ok, "the host reached a guest on a private switch");

    // MAC spoofing: a guest that takes another MAC is cut off, until spoofing is allowed.
    h.type_line("a", "ip link set eth0 address 02:00:00:00:00:99");
    assert!(!pings(&h, "b", "10.81.0.16", "p2"));
    let shown = h.json(&[
        "vm",
        "nic",
        "set",
        "a",
        "0",
        "--mac-spoofing",
        "on",
        "--json",
    ]);
    assert_eq!(shown[0]["mac_spoofing"], true);
    assert!(pings(&h, "b", "10.81.0.16", "p3"), "{}", h.console("b"));

    // VLANs: different ids on one switch cannot talk; the same id can.
    h.ok(&["vm", "nic", "set", "b", "0", "--vlan", "5"]);
    assert!(!pings(&h, "b", "10.81.0.16", "p4"));
    h.ok(&["vm", "nic", "set", "a", "0", "--vlan", "5"]);
    assert!(pings(&h, "b", "10.81.0.16", "p5"), "{}", h.console("b"));
    let err = h.fails(&["vm", "nic", "set", "a", "0", "--vlan", "4095"]);
    assert!(err.contains("VLAN id 4095 is out of range"), "{err}");

    // DHCP guard: with Strata's server off, guest a runs a DHCP server; b gets nothing from it
    // while a's adapter has the guard, and a lease once the guard is off.
    h.ok(&["switch", "set", "priv", "--dhcp", "off"]);
    h.ok(&["vm", "nic", "set", "a", "0", "--dhcp-guard", "on"]);
    h.type_line(
        "a",
        "printf 'start 10.81.0.200\\nend 10.81.0.210\\ninterface eth0\\nlease_file /leases\\n' > /u.conf; touch /leases; udhcpd /u.conf",
    );
    let ask = "udhcpc -i eth0 -s /lease.sh -t 3 -T 1 -n -q";
    assert!(!h.guest_runs("b", "d1", ask), "{}", h.console("b"));
    h.ok(&["vm", "nic", "set", "a", "0", "--dhcp-guard", "off"]);
    assert!(h.guest_runs("b", "d2", ask), "{}", h.console("b"));
    assert!(h.guest_runs(
        "b",
        "d3",
        "ip addr show dev eth0 | grep -q 'inet 10.81.0.20'"
    ));

    for vm in ["a", "b"] {
        h.ok(&["vm", "stop", vm]);
        h.ok(&["vm", "delete", vm]);
    }
    h.ok(&["switch", "delete", "priv"]);
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert!(
        !links.contains("stb-") && !links.contains("stv-"),
        "{links}"
    );
}
