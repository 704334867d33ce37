//! Integration services with Debian's real qemu-guest-agent inside a TCG guest (the initramfs
//! carries the binary and its libraries): heartbeat lost and back, guest information, the clock
//! set after a restore, files copied both ways, freeze, and a shut-down of a guest that ignores
//! ACPI (busybox as PID 1 has no ACPI handling).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_testguest::{build_with, Options, AGENT_BINARY, START_AGENT};

use super::netlab::T;
use super::*;

fn agent_guest(h: &Host) -> Guest {
    let init = format!(
        "mkdir -p /sbin; ln -s /bin/busybox /sbin/hwclock\n{START_AGENT}\nhostname agentguest\nip link set lo up\n\
         i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\necho READY\n\
         while read -r line; do eval \"$line\"; done < /dev/ttyS0\n"
    );
    let dir = h.home().join("guest-agent");
    std::fs::create_dir_all(&dir).unwrap();
    build_with(
        &dir,
        &Options {
            modules: &["virtio_pci", "virtio_console", "virtio_net"],
            binaries: &[Path::new(AGENT_BINARY)],
            init: &init,
        },
    )
}

fn heartbeat(h: &Host) -> String {
    h.json(&["vm", "show", "g", "--json"])["heartbeat"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_heartbeat(h: &Host, want: &str) {
    wait_for(
        &format!("heartbeat {want}"),
        Duration::from_secs(60),
        || heartbeat(h) == want,
    );
}

/// The guest's clock minus the host's, in seconds (the guest prints it on request).
fn clock_skew(h: &Host, tag: &str) -> i64 {
    h.type_line("g", &format!("echo {tag}=$(date +%s)"));
    let want = format!("{tag}=");
    wait_for("the guest's clock", T, || {
        h.console("g")
            .lines()
            .any(|l| l.starts_with(&want) && l[want.len()..].trim().parse::<i64>().is_ok())
    });
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = h.console("g");
    let line = text
        .lines()
        .find(|l| l.starts_with(&want) && l[want.len()..].trim().parse::<i64>().is_ok())
        .unwrap();
    line[want.len()..].trim().parse::<i64>().unwrap() - i64::try_from(host).unwrap()
}

#[test]
fn the_guest_agent_gives_heartbeat_info_time_files_freeze_and_shutdown() {
    let h = Host::new();
    let g = agent_guest(&h);
    vm_create(&h, "g", &g, &["--agent", "on", "--nic", "virtio"]);
    let err = h.fails(&["vm", "copy-file", "g", "/etc/hostname", "/tmp/x"]);
    assert!(err.contains("is off"), "{err}");
    h.ok(&["vm", "start", "g"]);
    h.wait_console("g", "READY", T);
    assert!(
        h.console("g").contains("qga: started"),
        "{}",
        h.console("g")
    );
    wait_heartbeat(&h, "ok");
    assert!(h.has_event("g", "heartbeat-ok"));

    // What the guest says about itself.
    wait_for("the guest's report", T, || {
        let v = h.json(&["vm", "show", "g", "--json"]);
        v["guest"]["interfaces"]
            .to_string()
            .contains("10.0.2.15/24")
    });
    let v = h.json(&["vm", "show", "g", "--json"]);
    assert_eq!(v["guest"]["hostname"], "agentguest", "{v}");
    let mac = v["nics"][0]["mac"].as_str().unwrap();
    assert!(v["guest"]["interfaces"].to_string().contains(mac), "{v}");

    // Files both ways, compared byte for byte; a guest-side failure is named.
    let src = h.home().join("payload.bin");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    std::fs::write(&src, &data).unwrap();
    let r = h.json(&[
        "vm",
        "copy-file",
        "g",
        s(&src).as_str(),
        "/tmp/in.bin",
        "--to-guest",
        "--json",
    ]);
    assert_eq!(r["bytes"], 300_000);
    let back = h.home().join("back.bin");
    h.ok(&[
        "vm",
        "copy-file",
        "g",
        "/tmp/in.bin",
        s(&back).as_str(),
        "--from-guest",
    ]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the file came back different"
    );
    let err = h.fails(&[
        "vm",
        "copy-file",
        "g",
        "/nonexistent/x",
        s(&back).as_str(),
        "--from-guest",
    ]);
    assert!(
        err.contains("guest agent refused guest-file-open") && err.contains("/nonexistent/x"),
        "{err}"
    );
    assert!(h.has_event("g", "guest-file-copied"));

    // Freeze and thaw through the agent.
    h.ok(&["vm", "freeze", "g"]);
    h.ok(&["vm", "thaw", "g"]);
    let frozen: Vec<Value> = h
        .events("g")
        .into_iter()
        .filter(|e| e["name"] == "guest-freeze")
        .collect();
    assert_eq!(frozen.len(), 2, "{frozen:?}");
    // A checkpoint of the running VM freezes its file systems through the agent around the
    // disk switch (and thaws them).
    h.ok(&["checkpoint", "create", "g", "--name", "frozen"]);
    let taken = h.event_message("g", "checkpoint taken (");
    assert!(
        taken.contains("file systems frozen through the guest agent"),
        "{taken}"
    );
    let freezes = h
        .events("g")
        .iter()
        .filter(|e| e["name"] == "guest-freeze")
        .count();
    assert_eq!(freezes, 4);

    // The heartbeat is lost when the agent dies, and back when it runs again.
    h.type_line("g", "kill $(cat /run/qemu-ga.pid)");
    wait_heartbeat(&h, "lost");
    assert!(h.has_event("g", "heartbeat-lost"));
    h.type_line(
        "g",
        "/usr/sbin/qemu-ga -d -m virtio-serial -p $QGA_PORT -t /run -f /run/qemu-ga.pid",
    );
    wait_heartbeat(&h, "ok");

    // Saved for a while, restored: the agent sets the guest's clock from the host's.
    h.ok(&["vm", "save", "g"]);
    std::thread::sleep(Duration::from_secs(8));
    h.ok(&["vm", "start", "g"]);
    wait_for("the clock set", T, || h.has_event("g", "guest-time-set"));
    let skew = clock_skew(&h, "CLOCK");
    assert!(
        skew.abs() <= 2,
        "the guest's clock is {skew} s off the host's"
    );

    // Busybox as PID 1 ignores the ACPI power button; the agent's shut-down works.
    h.ok(&["vm", "shutdown", "g", "--timeout", "60"]);
    h.wait_state("g", "off", T);
    assert!(h.has_event("g", "vm-powered-off"), "{:?}", h.events("g"));
    assert!(!h.has_event("g", "vm-shutdown-timed-out"));
}

#[test]
fn a_vm_without_an_agent_channel_refuses_agent_requests() {
    let h = Host::new();
    let g = guest(h.home(), "plain", &[], COUNTER);
    vm_create(&h, "p", &g, &[]);
    h.ok(&["vm", "start", "p"]);
    let err = h.fails(&["vm", "copy-file", "p", "/etc/hostname", "/tmp/x"]);
    assert!(err.contains("has no guest agent channel"), "{err}");
    let err = h.fails(&["vm", "freeze", "p"]);
    assert!(err.contains("has no guest agent channel"), "{err}");
    assert_eq!(h.json(&["vm", "show", "p", "--json"])["heartbeat"], "none");
    // The VM is unaffected.
    assert_eq!(h.state("p"), "running");
    h.ok(&["vm", "stop", "p"]);
}
