//! A VM's adapters one at a time: reservations, MACs refused, a bandwidth limit measured, and an
//! adapter hot-added and hot-removed while the guest runs.

use std::time::Instant;

use super::netlab::{shell_guest, T};
use super::*;

/// Seconds until guest `vm`'s listener on port 5001 has received `kib` KiB from the host (the
/// guest says `<tag>-yes` when its side of the connection closed).
fn receive_secs(h: &Host, vm: &str, ip: &str, kib: u32, tag: &str) -> f64 {
    h.type_line(
        vm,
        &format!("R={tag}; nc -l -p 5001 > /dev/null; echo \"$R\"-yes"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let start = Instant::now();
    h.ns_sh(&format!(
        "busybox dd if=/dev/zero bs=1024 count={kib} 2>/dev/null | busybox nc {ip} 5001"
    ));
    h.wait_console(vm, &format!("{tag}-yes"), T);
    start.elapsed().as_secs_f64()
}

#[test]
fn reservations_macs_bandwidth_and_hot_added_adapters() {
    let h = Host::in_netns();
    h.ok(&[
        "switch",
        "create",
        "lan",
        "--type",
        "internal",
        "--subnet",
        "10.80.0.0/24",
    ]);
    let mac = "02:53:54:aa:00:01";
    let sw = h.json(&["switch", "reserve", "lan", mac, "10.80.0.77", "--json"]);
    assert_eq!(sw["reservations"][0]["ip"], "10.80.0.77", "{sw}");
    let err = h.fails(&[
        "switch",
        "reserve",
        "lan",
        "02:53:54:aa:00:02",
        "10.80.0.77",
    ]);
    assert!(err.contains("reserved for 02:53:54:aa:00:01"), "{err}");
    let err = h.fails(&["switch", "reserve", "lan", "02:53:54:aa:00:02", "10.81.0.5"]);
    assert!(err.contains("not a host address of the subnet"), "{err}");

    let g = shell_guest(&h, "a");
    vm_create(&h, "a", &g, &["--nic", &format!("virtio:lan={mac}")]);
    // MACs: a duplicate, an all-zero and a multicast one are refused before anything exists.
    for (bad, words) in [
        (mac, "already used by VM 'a'"),
        ("00:00:00:00:00:00", "all zeros"),
        ("01:00:5e:00:00:01", "multicast"),
    ] {
        let err = h.fails(&["vm", "create", "b", "--nic", &format!("virtio:lan={bad}")]);
        assert!(err.contains(words), "{bad}: {err}");
        let err = h.fails(&["vm", "nic", "add", "a", &format!("virtio:lan={bad}")]);
        let words = if bad == mac {
            "used twice in this VM"
        } else {
            words
        };
        assert!(err.contains(words), "{bad}: {err}");
    }
    h.ok(&["vm", "start", "a"]);
    assert_eq!(h.lease_of("a", "eth0"), "10.80.0.77");
    h.wait_console("a", "READY", T);

    // A bandwidth limit on the adapter slows what the guest receives; removing it restores it.
    let free = receive_secs(&h, "a", "10.80.0.77", 1024, "rx1");
    let shown = h.json(&[
        "vm",
        "nic",
        "set",
        "a",
        "0",
        "--bandwidth-limit",
        "1M",
        "--json",
    ]);
    assert_eq!(shown[0]["bandwidth_limit"], 1_000_000, "{shown}");
    let tap = shown[0]["tap"].as_str().unwrap().to_string();
    let qdisc = h.ns_sh(&format!("tc qdisc show dev {tap}"));
    assert!(
        qdisc.contains("tbf") && qdisc.contains("rate 1Mbit"),
        "{qdisc}"
    );
    let limited = receive_secs(&h, "a", "10.80.0.77", 1024, "rx2");
    // 1 MiB at 1 Mbit/s takes at least 8 s.
    assert!(
        limited > 7.0 && limited > 2.0 * free,
        "free {free:.1} s, limited {limited:.1} s"
    );
    h.ok(&["vm", "nic", "set", "a", "0", "--bandwidth-limit", "0"]);
    assert!(!h.ns_sh(&format!("tc qdisc show dev {tap}")).contains("tbf"));
    assert!(h.has_event("a", "nic-changed"));

    // Hot add: the guest sees eth1 and leases on it; hot remove: it goes, its lease with it.
    let shown = h.json(&["vm", "nic", "add", "a", "virtio:lan", "--json"]);
    assert_eq!(shown.as_array().unwrap().len(), 2, "{shown}");
    let mac1 = shown[1]["mac"].as_str().unwrap().to_string();
    let has_eth1 = "i=0; while [ ! -e /sys/class/net/eth1 ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done; [ -e /sys/class/net/eth1 ]";
    assert!(h.guest_runs("a", "eth1", has_eth1), "{}", h.console("a"));
    h.type_line(
        "a",
        "ip link set eth1 up; udhcpc -i eth1 -s /lease.sh -t 20 -T 2 -n -q",
    );
    assert_eq!(h.lease_of("a", "eth1"), "10.80.0.16");
    let leases = h.json(&["switch", "leases", "lan", "--json"]);
    let l = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == mac1.as_str())
        .unwrap();
    assert_eq!(
        (l["vm"].as_str(), l["nic"].as_u64()),
        (Some("a"), Some(1)),
        "{leases}"
    );
    assert!(h.has_event("a", "nic-connected"));
    h.ok(&["vm", "nic", "remove", "a", &mac1]);
    let gone = "i=0; while [ -e /sys/class/net/eth1 ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done; [ ! -e /sys/class/net/eth1 ]";
    assert!(h.guest_runs("a", "eth1gone", gone));
    let leases = h.json(&["switch", "leases", "lan", "--json"]);
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    assert!(h.has_event("a", "lease-released") && h.has_event("a", "nic-disconnected"));
    let (_, links) = h.in_ns(&["ip", "-br", "link"]);
    assert_eq!(links.matches("stt-").count(), 1, "{links}");
    h.ok(&["vm", "stop", "a"]);
    h.ok(&["vm", "delete", "a"]);
    h.ok(&["switch", "delete", "lan"]);
}
