//! NAT with a port forward, other firewalls' tables, and a service restart after the host lost
//! its bridges: a namespace stands in for the outside world (it has no route to the switch's
//! subnet, so only the host's masquerade lets a guest reach it).

use super::netlab::{shell_guest, Netns, T};
use super::*;

/// `line`, tried for up to 10 s (a guest's listener may not be up yet).
fn retry(line: &str) -> String {
    format!("i=0; until {line}; do i=$((i+1)); [ $i -ge 20 ] && exit 1; sleep 0.5; done")
}

#[test]
fn a_nat_switch_reaches_outside_forwards_a_port_and_warns_of_a_foreign_drop_chain() {
    let h = Host::in_netns();
    let outside = Netns::new("o");
    outside.link(
        &h,
        "sto-h",
        Some("198.51.100.1/24"),
        "sto-o",
        "198.51.100.2/24",
    );
    // Another firewall's tables: one accepting, left alone; one dropping, warned of by name.
    h.ns_sh("nft add table inet other && nft 'add chain inet other FORWARD { type filter hook forward priority 0; policy accept; }'");
    h.ns_sh("nft add table inet fw && nft 'add chain inet fw FORWARD { type filter hook forward priority 0; policy drop; }'");
    let other_before = h.ns_sh("nft list table inet other");
    let sw = h.json(&[
        "switch",
        "create",
        "nat",
        "--type",
        "internal",
        "--subnet",
        "10.79.0.0/24",
        "--nat",
        "on",
        "--json",
    ]);
    let warnings = sw["warnings"].to_string();
    assert!(
        warnings.contains("table inet fw, chain FORWARD has policy drop"),
        "{sw}"
    );
    assert!(!warnings.contains("inet other"), "{sw}");
    assert!(h.has_event_named("switch-warning"));
    h.ns_sh("nft delete table inet fw");
    assert_eq!(h.ns_sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert!(h.has_event_named("ip-forwarding-enabled"));

    let g = shell_guest(&h, "web");
    vm_create(&h, "web", &g, &["--nic", "virtio:nat"]);
    h.ok(&["vm", "start", "web"]);
    let ip = h.lease_of("web", "eth0");
    assert_eq!(ip, "10.79.0.16");
    h.wait_console("web", "READY", T);
    assert!(h.console("web").contains("router=10.79.0.1"));

    // Out: the guest reaches a listener outside through the masquerade.
    let listener = std::process::Command::new("ip")
        .args([
            "netns", "exec", &outside.0, "busybox", "nc", "-l", "-p", "9000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(h.guest_runs("web", "out1", "echo HELLO-OUT | nc 198.51.100.2 9000"));
    let out = listener.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("HELLO-OUT"));

    // In: a port forward reaches the guest's listener (its address becomes reserved).
    h.type_line("web", "nc -l -p 80 > /got &");
    let sw = h.json(&[
        "switch",
        "forward",
        "add",
        "nat",
        "--proto",
        "tcp",
        "--host-port",
        "8080",
        "--to",
        "web:80",
        "--json",
    ]);
    assert_eq!(sw["forwards"][0]["to"], "10.79.0.16:80", "{sw}");
    assert_eq!(sw["reservations"][0]["ip"], "10.79.0.16", "{sw}");
    let send = |text: &str, tag: &str| {
        outside.sh(&retry(&format!(
            "echo {text} | busybox nc 198.51.100.1 8080"
        )));
        h.guest_runs("web", tag, &format!("grep -q {text} /got"))
    };
    assert!(send("VIA-FORWARD", "in1"));
    assert!(other_before == h.ns_sh("nft list table inet other"));
    let err = h.fails(&[
        "switch",
        "forward",
        "add",
        "nat",
        "--proto",
        "tcp",
        "--host-port",
        "8080",
        "--to",
        "web:81",
    ]);
    assert!(err.contains("8080/tcp is forwarded already"), "{err}");

    // A host reboot, simulated: the service stops (the VM runs on), the bridge and Strata's
    // tables vanish; the service's next start makes them again and the forward works again.
    let mut h = h;
    h.stop_service();
    let bridge = sw["bridge"].as_str().unwrap().to_string();
    h.ns_sh(&format!(
        "ip link del {bridge} && nft delete table ip strata"
    ));
    h.start_service();
    let rules = h.ns_sh("nft list table ip strata");
    assert!(rules.contains("dnat to 10.79.0.16:80"), "{rules}");
    h.type_line("web", "nc -l -p 80 > /got2 &");
    outside.sh(&retry("echo AFTER-RESTART | busybox nc 198.51.100.1 8080"));
    assert!(h.guest_runs("web", "in2", "grep -q AFTER-RESTART /got2"));

    h.ok(&[
        "switch",
        "forward",
        "remove",
        "nat",
        "--proto",
        "tcp",
        "--host-port",
        "8080",
    ]);
    let rules = h.ns_sh("nft list table ip strata");
    assert!(!rules.contains("dnat"), "{rules}");
    h.ok(&["vm", "stop", "web"]);
    h.ok(&["vm", "delete", "web"]);
    h.ok(&["switch", "delete", "nat"]);
    let (gone, _) = h.in_ns(&["nft", "list", "table", "ip", "strata"]);
    assert!(!gone, "Strata's table outlived its last switch");
}
