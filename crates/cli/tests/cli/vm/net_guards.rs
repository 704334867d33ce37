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
    assert!(h.guest_runs("a", "mac", "ip link set eth0 address 02:00:00:00:00:99"));
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
        // busybox udhcpd starts its search at a hash of the MAC: any address of its range.
        "ip addr show dev eth0 | grep -qE 'inet 10[.]81[.]0[.]2(0[0-9]|10)/'"
    ));

    // Back on the switch's own VLAN, the VLAN's bridge is not left behind.
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert_eq!(links.matches("stv-").count(), 1, "{links}");
    h.ok(&["vm", "nic", "set", "a", "0", "--vlan", "0"]);
    h.ok(&["vm", "nic", "set", "b", "0", "--vlan", "0"]);
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert!(!links.contains("stv-"), "{links}");

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

#[test]
fn an_external_switch_puts_a_guest_on_the_lan_of_a_host_adapter() {
    let h = Host::in_netns();
    // The "LAN": a namespace at the end of a veth, with its own DHCP server (busybox udhcpd).
    let lan = super::netlab::Netns::new("l");
    lan.link(&h, "stx-nic", None, "stx-lan", "192.0.2.1/24");
    let conf = h.home().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 192.0.2.100\nend 192.0.2.110\ninterface stx-lan\nlease_file {}\nopt router 192.0.2.1\nopt subnet 255.255.255.0\n",
            h.home().join("udhcpd.leases").display()
        ),
    )
    .unwrap();
    std::fs::write(h.home().join("udhcpd.leases"), b"").unwrap();
    lan.sh(&format!("busybox udhcpd {}", conf.display()));

    // Refused: no such adapter, an adapter with the host's address, a subnet on an external.
    let err = h.fails(&[
        "switch",
        "create",
        "x",
        "--type",
        "external",
        "--host-nic",
        "nosuch0",
    ]);
    assert!(err.contains("'nosuch0' does not exist"), "{err}");
    h.ns_sh("ip link add stx-addr type veth peer name stx-addrp && ip addr add 203.0.113.5/24 dev stx-addr");
    let err = h.fails(&[
        "switch",
        "create",
        "x",
        "--type",
        "external",
        "--host-nic",
        "stx-addr",
    ]);
    assert!(
        err.contains("has the host's address 203.0.113.5/24"),
        "{err}"
    );
    let sw = h.json(&[
        "switch",
        "create",
        "ext",
        "--type",
        "external",
        "--host-nic",
        "stx-nic",
        "--json",
    ]);
    assert_eq!(
        (sw["dhcp"].as_bool(), sw["subnet"].as_str()),
        (Some(false), None),
        "{sw}"
    );
    let bridge = sw["bridge"].as_str().unwrap().to_string();
    let shown = h.ns_sh("ip -d link show dev stx-nic");
    assert!(shown.contains(&format!("master {bridge}")), "{shown}");
    let err = h.fails(&[
        "switch",
        "create",
        "y",
        "--type",
        "external",
        "--host-nic",
        "stx-nic",
    ]);
    assert!(err.contains("already belongs to switch 'ext'"), "{err}");

    // The guest's address comes from the LAN's server, not from Strata.
    let g = shell_guest(&h, "g");
    vm_create(&h, "a", &g, &["--nic", "virtio:ext"]);
    h.ok(&["vm", "start", "a"]);
    let ip = h.lease_of("a", "eth0");
    assert!(ip.starts_with("192.0.2.1"), "{}", h.console("a"));
    assert!(h.console("a").contains("router=192.0.2.1"));
    h.wait_console("a", "READY", T);
    assert!(
        h.guest_runs("a", "lan", "ping -c 2 -W 2 192.0.2.1"),
        "{}",
        h.console("a")
    );
    let leases = h.json(&["switch", "leases", "ext", "--json"]);
    assert_eq!(leases.as_array().map(Vec::len), Some(0), "{leases}");

    h.ok(&["vm", "stop", "a"]);
    h.ok(&["vm", "delete", "a"]);
    h.ok(&["switch", "delete", "ext"]);
    // The adapter is the host's again, and the bridge is gone.
    let shown = h.ns_sh("ip -d link show dev stx-nic");
    assert!(!shown.contains("master"), "{shown}");
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert!(!links.contains(&bridge), "{links}");
}
