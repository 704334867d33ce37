//! Virtual switches with real guests (virtio-net, busybox), the host service in a network
//! namespace of its own: nothing here touches the host's network.

use std::time::Duration;

use super::*;

const T: Duration = Duration::from_secs(180);

/// A guest that brings eth0 up with `address` and says so; then, with `ping`, pings that address
/// until it answers.
fn net_guest(h: &Host, name: &str, address: &str, ping: Option<&str>) -> Guest {
    let pinger = ping.map_or_else(String::new, |target| {
        format!(
            "i=0\nwhile [ $i -lt 60 ]; do if ping -c 1 -W 1 {target} >/dev/null 2>&1; then echo PING-OK {target}; break; fi; i=$((i+1)); done\n"
        )
    });
    let script = format!(
        "i=0\nwhile [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         ip link set eth0 up\nip addr add {address} dev eth0\necho NET-UP $(cat /sys/class/net/eth0/address)\n{pinger}while true; do sleep 1; done\n"
    );
    guest(h.home(), name, &["virtio_pci", "virtio_net"], &script)
}

#[test]
fn guests_on_an_internal_switch_reach_each_other_and_the_host() {
    let h = Host::in_netns();
    let sw = h.json(&[
        "switch",
        "create",
        "lan",
        "--type",
        "internal",
        "--subnet",
        "10.77.0.0/24",
        "--json",
    ]);
    assert_eq!(sw["host_address"], "10.77.0.1");
    let bridge = sw["bridge"].as_str().unwrap().to_string();
    let (ok, shown) = h.in_ns(&["ip", "-br", "addr", "show", "dev", &bridge]);
    assert!(ok && shown.contains("10.77.0.1/24"), "{shown}");
    // The bridge lives in the test's namespace only.
    let root = Command::new("ip").args(["-br", "link"]).output().unwrap();
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(!root.contains(&bridge), "{root}");

    let a = net_guest(&h, "a", "10.77.0.50/24", None);
    let b = net_guest(&h, "b", "10.77.0.51/24", Some("10.77.0.50"));
    vm_create(&h, "a", &a, &["--nic", "virtio:lan"]);
    vm_create(&h, "b", &b, &["--nic", "virtio:lan"]);
    let shown = h.json(&["vm", "show", "a", "--json"]);
    assert_eq!(shown["nics"][0]["switch"], "lan");
    h.ok(&["vm", "start", "a"]);
    h.ok(&["vm", "start", "b"]);
    h.wait_console("a", "NET-UP", T);
    let mac = shown["nics"][0]["mac"].as_str().unwrap();
    assert!(
        h.console("a").contains(&format!("NET-UP {mac}")),
        "{}",
        h.console("a")
    );
    // Guest to guest, across the bridge.
    h.wait_console("b", "PING-OK 10.77.0.50", T);
    // Host to guest, from the host's address on the internal switch.
    let (ok, out) = h.in_ns(&["busybox", "ping", "-c", "2", "-W", "5", "10.77.0.51"]);
    assert!(ok, "{out}");

    // The switch shows its ports and can't be deleted while they exist.
    let sw = h.json(&["switch", "show", "lan", "--json"]);
    assert_eq!(sw["ports"].as_array().unwrap().len(), 2, "{sw}");
    let err = h.fails(&["switch", "delete", "lan"]);
    assert!(
        err.contains("in use by VM 'a' NIC 0, VM 'b' NIC 0"),
        "{err}"
    );
    // A VM's tap goes when QEMU ends.
    h.ok(&["vm", "stop", "b"]);
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert_eq!(links.matches("stt-").count(), 1, "{links}");
    h.ok(&["vm", "stop", "a"]);
    h.ok(&["vm", "delete", "a"]);
    h.ok(&["vm", "delete", "b"]);
    h.ok(&["switch", "delete", "lan"]);
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert!(!links.contains(&bridge), "{links}");
    assert!(h.has_event_named("switch-created") && h.has_event_named("switch-deleted"));
}

/// `strata switch create NAME --type KIND --subnet SUBNET EXTRA…`.
fn create_args<'a>(
    name: &'a str,
    kind: &'a str,
    subnet: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec!["switch", "create", name, "--type", kind, "--subnet", subnet];
    a.extend_from_slice(extra);
    a
}

#[test]
fn bad_switches_are_refused_and_leave_nothing() {
    let h = Host::in_netns();
    h.ok(&create_args("a", "private", "10.60.0.0/16", &[]));
    let refused = [
        (
            create_args("b", "internal", "10.60.3.0/24", &[]),
            "overlaps switch 'a'",
        ),
        (
            create_args("a", "private", "10.61.0.0/24", &[]),
            "already exists",
        ),
        (create_args("c", "private", "10.62.0.1/24", &[]), "private"),
        (
            create_args(
                "c",
                "internal",
                "10.62.0.0/24",
                &["--dhcp-range", "10.62.0.200-10.62.1.10"],
            ),
            "outside the subnet",
        ),
        (
            create_args("c", "external", "10.62.0.0/24", &[]),
            "external",
        ),
    ];
    for (args, words) in refused {
        let err = h.fails(&args);
        assert!(err.contains(words), "{args:?}: {err}");
    }
    let err = h.fails(&["vm", "create", "x", "--nic", "virtio:nowhere"]);
    assert!(err.contains("no switch named 'nowhere'"), "{err}");
    // Only switch a's bridge exists; no file of a refused switch was left.
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert_eq!(links.matches("stb-").count(), 1, "{links}");
    let files: Vec<_> = std::fs::read_dir(h.home().join("switches"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["a.toml"], "{files:?}");
    let err = h.fails(&["switch", "delete", "nowhere"]);
    assert!(err.contains("no switch named 'nowhere'"), "{err}");
}

/// A guest that asks Strata's DHCP server for an address (busybox udhcpc) and prints the lease.
fn dhcp_guest(h: &Host, name: &str) -> Guest {
    let script = r#"i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo '#!/bin/sh' > /lease.sh
echo 'if [ "$1" = bound ]; then ip addr add $ip/$mask dev $interface; echo "LEASE $ip/$mask router=$router dns=$dns"; fi' >> /lease.sh
chmod +x /lease.sh
ip link set eth0 up
udhcpc -i eth0 -s /lease.sh -t 20 -T 2 -n -q || echo DHCP-FAILED
while true; do sleep 1; done
"#;
    guest(h.home(), name, &["virtio_pci", "virtio_net"], script)
}

#[test]
fn guests_get_leases_in_order_and_a_deleted_vm_frees_its_lease() {
    let h = Host::in_netns();
    h.ok(&[
        "switch",
        "create",
        "office",
        "--type",
        "internal",
        "--subnet",
        "10.78.0.0/24",
        "--dns",
        "10.78.0.1",
    ]);
    let a = dhcp_guest(&h, "a");
    vm_create(&h, "a", &a, &["--nic", "virtio:office"]);
    vm_create(&h, "b", &a, &["--nic", "virtio:office"]);
    h.ok(&["vm", "start", "a"]);
    h.wait_console("a", "LEASE", T);
    assert!(
        h.console("a")
            .contains("LEASE 10.78.0.16/24 router=10.78.0.1 dns=10.78.0.1"),
        "{}",
        h.console("a")
    );
    h.ok(&["vm", "start", "b"]);
    h.wait_console("b", "LEASE", T);
    assert!(
        h.console("b").contains("LEASE 10.78.0.17/24"),
        "{}",
        h.console("b")
    );
    // The host reaches the guest at the address the leases report.
    let leases = h.json(&["switch", "leases", "office", "--json"]);
    let list = leases.as_array().unwrap();
    assert_eq!(list.len(), 2, "{leases}");
    let b_mac = h.json(&["vm", "show", "b", "--json"])["nics"][0]["mac"].clone();
    let b_lease = list.iter().find(|l| l["mac"] == b_mac).unwrap();
    assert_eq!(
        (b_lease["vm"].as_str(), b_lease["nic"].as_u64()),
        (Some("b"), Some(0))
    );
    let ip = b_lease["ip"].as_str().unwrap();
    let (ok, out) = h.in_ns(&["busybox", "ping", "-c", "2", "-W", "5", ip]);
    assert!(ok, "{out}");
    // Deleting a VM frees its lease at once.
    h.ok(&["vm", "stop", "b"]);
    h.ok(&["vm", "delete", "b"]);
    assert!(h.has_event("b", "lease-released"));
    let leases = h.json(&["switch", "leases", "office", "--json"]);
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    // Leases survive a service restart.
    let mut h = h;
    h.stop_service();
    h.start_service();
    let leases = h.json(&["switch", "leases", "office", "--json"]);
    assert_eq!(leases[0]["ip"], "10.78.0.16", "{leases}");
    h.ok(&["vm", "stop", "a"]);
}
