//! VM lifecycles with real guests.

use std::time::Duration;

use strata_vhd::{Disk, NewDisk, OpenOptions};

use std::process::Command;

use super::*;

const T: Duration = Duration::from_secs(180);

fn read(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let d = Disk::open(
        path,
        OpenOptions {
            lock: false,
            ..OpenOptions::read()
        },
    )
    .unwrap();
    let mut b = vec![0u8; len];
    d.read_at(&mut b, off).unwrap();
    b
}

#[test]
fn a_guest_writes_markers_to_a_virtio_and_an_ide_disk_then_powers_off() {
    let h = Host::new();
    let base = h.home().join("base.vhd");
    strata_vhd::create(&base, 64 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    d.write_at(b"BASE-DATA-FROM-THE-HOST", 100 * 512).unwrap();
    d.close().unwrap();
    let child = h.home().join("child.vhd");
    h.ok(&["disk", "create", &s(&child), "--parent", &s(&base)]);
    let ide = h.home().join("ide.vhd");
    h.ok(&["disk", "create", &s(&ide), "--size", "32M"]);
    let g = guest(
        h.home(),
        "markers",
        &["virtio_pci", "virtio_blk", "ata_piix", "sd_mod"],
        r#"
for i in $(seq 1 60); do [ -b /dev/vda ] && [ -b /dev/sda ] && break; sleep 1; done
echo "guest: base says $(dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -c 23)"
printf STRATA-VIRTIO-MARKER | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null
printf STRATA-IDE-MARKER | dd of=/dev/sda bs=512 seek=4096 conv=notrunc 2>/dev/null
sync
echo "guest: done"
poweroff -f
"#,
    );
    let vm = vm_create(
        &h,
        "markers",
        &g,
        &[
            "--disk",
            &s(&child),
            "--disk",
            &format!("{}:ide", s(&ide)),
            "--nic",
            "virtio",
            "--nic",
            "e1000",
        ],
    );
    assert_eq!(vm["state"], "off");
    let macs: Vec<&str> = vm["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs.len(), 2);
    assert_ne!(macs[0], macs[1]);
    let list = h.json(&["vm", "list", "--json"]);
    assert_eq!(list[0]["name"], "markers");
    assert_eq!(list[0]["memory_mib"], 256);
    assert_eq!(list[0]["cpus"], 1);

    let started = h.json(&["vm", "start", "markers", "--json"]);
    assert_eq!(started["accelerator"], "tcg");
    assert!(started["pid"].as_u64().is_some(), "{started}");
    h.wait_state("markers", "off", T);
    let console = h.console("markers");
    assert!(console.contains("guest: done"), "{console}");
    assert!(
        console.contains("base says BASE-DATA-FROM-THE-HOST"),
        "{console}"
    );
    assert_eq!(read(&child, 2048 * 512, 20), b"STRATA-VIRTIO-MARKER");
    assert_eq!(read(&ide, 4096 * 512, 17), b"STRATA-IDE-MARKER");
    assert_eq!(
        read(&base, 2048 * 512, 20),
        vec![0u8; 20],
        "the base is never written"
    );
    for p in [&base, &child, &ide] {
        h.ok(&["disk", "check", &s(p)]);
    }
    assert!(h.has_event("markers", "vm-started"));
    assert!(h.has_event("markers", "vm-powered-off"));
    // Events name who caused them: the API caller (from the socket's credentials), or the guest.
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let ev = h.events("markers");
    assert!(
        ev.iter()
            .any(|e| e["name"] == "vm-starting" && e["user"] == me.trim()),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e["name"] == "vm-powered-off" && e["user"] == "guest"),
        "{ev:?}"
    );
    let all = h.json(&["events", "--since", "1h", "--json"]);
    assert!(all.as_array().unwrap().len() >= ev.len());
    let future = h.json(&["events", "--since", "2100-01-01T00:00:00Z", "--json"]);
    assert_eq!(future.as_array().unwrap().len(), 0);
    // The MACs are kept for the VM's life.
    let again = h.json(&["vm", "show", "markers", "--json"]);
    assert_eq!(again["nics"], vm["nics"]);
}

/// The `-machine` argument of the VM's running QEMU.
fn qemu_machine(h: &Host, vm: &str) -> String {
    let pid = h.json(&["vm", "show", vm, "--json"])["qemu_pid"]
        .as_u64()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "-machine").unwrap();
    args[i + 1].clone()
}

#[test]
fn save_then_start_continues_the_counter_and_pause_reset_work() {
    let h = Host::new();
    let g = guest(h.home(), "counter", &[], COUNTER);
    // An older machine type than the host's newest: it is what QEMU runs, saves and restores.
    let older = h.json(&["host", "info", "--json"])["machines"][1]
        .as_str()
        .unwrap()
        .to_string();
    vm_create(&h, "ctr", &g, &["--machine", &older]);
    h.ok(&["vm", "start", "ctr"]);
    h.wait_console("ctr", "count 5", T);
    assert_eq!(qemu_machine(&h, "ctr"), older);

    // Pause: the counter stops; resume: it goes on.
    assert_eq!(h.json(&["vm", "pause", "ctr", "--json"])["state"], "paused");
    std::thread::sleep(Duration::from_millis(500));
    let paused = counts(&h.console("ctr")).len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        counts(&h.console("ctr")).len(),
        paused,
        "the guest ran while paused"
    );
    let err = h.fails(&["vm", "shutdown", "ctr"]);
    assert!(err.contains("paused"), "{err}");
    h.ok(&["vm", "resume", "ctr"]);
    let resumed = counts(&h.console("ctr")).len();
    wait_for("the counter after resume", T, || {
        counts(&h.console("ctr")).len() > resumed + 3
    });

    // Save, then start: the counter continues where it stopped.
    let saved = h.json(&["vm", "save", "ctr", "--json"]);
    assert_eq!(saved["state"], "saved");
    assert!(saved["pid"].is_null());
    assert!(h.home().join("vms/ctr/saved.state").exists());
    let before = counts(&h.console("ctr"));
    let last = *before.last().unwrap();
    let len_before = h.console("ctr").len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(h.state("ctr"), "saved");

    // A saved state made elsewhere (another accelerator and CPU) is refused with the reason.
    let meta_path = h.home().join("vms/ctr/saved.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(
        &meta_path,
        meta.replace("\"tcg\"", "\"kvm\"")
            .replace("\"max\"", "\"host\""),
    )
    .unwrap();
    let err = h.fails(&["vm", "start", "ctr"]);
    assert!(
        err.contains("saved running under kvm") && err.contains("different kind of host"),
        "{err}"
    );
    // A saved state of a machine type this QEMU lacks is refused with the reason.
    let saved_on: Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(saved_on["machine"], older.as_str());
    std::fs::write(
        &meta_path,
        meta.replace(&format!("\"{older}\""), "\"pc-i440fx-99.0\""),
    )
    .unwrap();
    let err = h.fails(&["vm", "start", "ctr"]);
    assert!(
        err.contains("saved on machine type pc-i440fx-99.0") && err.contains("lacks"),
        "{err}"
    );
    std::fs::write(&meta_path, meta).unwrap();
    // The restore uses the saved state's machine type, whatever the VM's pin says now (`vm set`
    // refuses while saved, so the pin is moved by hand): the next cold start uses the pin.
    let newest = h.json(&["host", "info", "--json"])["default_machine"]
        .as_str()
        .unwrap()
        .to_string();
    let toml_path = h.home().join("vms/ctr/vm.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    assert!(toml.contains(&format!("machine = \"{older}\"")), "{toml}");
    std::fs::write(
        &toml_path,
        toml.replace(
            &format!("machine = \"{older}\""),
            &format!("machine = \"{newest}\""),
        ),
    )
    .unwrap();

    assert_eq!(
        h.json(&["vm", "start", "ctr", "--json"])["state"],
        "running"
    );
    assert_eq!(
        qemu_machine(&h, "ctr"),
        older,
        "restored on its own machine type"
    );
    wait_for("the counter after restore", T, || {
        counts(&h.console("ctr")[len_before..]).len() > 3
    });
    let after = counts(&h.console("ctr")[len_before..]);
    assert!(
        after[0] > last && after[0] <= last + 2,
        "after the restore the counter went on from {} (it had reached {last})",
        after[0]
    );
    assert!(h.has_event("ctr", "vm-saved") && h.has_event("ctr", "vm-restored"));
    assert!(
        !h.home().join("vms/ctr/saved.state").exists(),
        "the saved state is dropped once resumed"
    );

    // Reset: the guest boots again, counting from 0.
    let len = h.console("ctr").len();
    h.ok(&["vm", "reset", "ctr"]);
    wait_for("the counter after reset", T, || {
        counts(&h.console("ctr")[len..]).contains(&0)
    });
    assert!(h.has_event("ctr", "vm-reset"));
    assert_eq!(h.json(&["vm", "stop", "ctr", "--json"])["state"], "off");
    assert!(h.has_event("ctr", "vm-turned-off"));
    h.ok(&["vm", "start", "ctr"]);
    assert_eq!(qemu_machine(&h, "ctr"), newest, "a cold start uses the pin");
    h.ok(&["vm", "stop", "ctr"]);
}

#[test]
fn shut_down_a_guest_that_honours_acpi_and_one_that_ignores_it() {
    let h = Host::new();
    let acpi = guest(
        h.home(),
        "acpi",
        &["button", "evdev"],
        r#"
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "guest: power button" > /dev/console\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -d -c /etc/acpi 2>/dev/null &
sleep 1
echo "guest: acpid ready"
while true; do sleep 1; done
"#,
    );
    let deaf = guest(
        h.home(),
        "deaf",
        &[],
        "echo 'guest: ignoring'\nwhile true; do sleep 1; done\n",
    );
    vm_create(&h, "polite", &acpi, &[]);
    vm_create(&h, "deaf", &deaf, &["--shutdown-timeout", "3"]);
    h.ok(&["vm", "start", "polite"]);
    h.ok(&["vm", "start", "deaf"]);
    h.wait_console("polite", "guest: acpid ready", T);
    h.wait_console("deaf", "guest: ignoring", T);

    assert_eq!(
        h.json(&["vm", "shutdown", "polite", "--timeout", "120", "--json"])["state"],
        "off"
    );
    assert!(
        h.console("polite").contains("guest: power button"),
        "{}",
        h.console("polite")
    );
    let ev = h.events("polite");
    assert!(ev.iter().any(|e| e["name"] == "vm-shutdown-requested"));
    assert!(
        ev.iter()
            .any(|e| e["name"] == "vm-powered-off" && e["message"] == "the guest shut down"),
        "{ev:?}"
    );

    assert_eq!(
        h.json(&["vm", "shutdown", "deaf", "--json"])["state"],
        "off"
    );
    let ev = h.events("deaf");
    let timed_out = ev
        .iter()
        .find(|e| e["name"] == "vm-shutdown-timed-out")
        .expect("a timed-out event");
    assert!(
        timed_out["message"]
            .as_str()
            .unwrap()
            .contains("did not shut down within 3 s"),
        "{timed_out}"
    );
    assert_eq!(timed_out["level"], "warning");
}

#[test]
fn killing_qemu_marks_the_vm_crashed_and_leaves_its_disk_consistent() {
    let h = Host::new();
    let disk = h.home().join("data.vhd");
    h.ok(&[
        "disk",
        "create",
        &s(&disk),
        "--size",
        "64M",
        "--block-size",
        "64K",
    ]);
    let g = guest(
        h.home(),
        "writer",
        &["virtio_pci", "virtio_blk"],
        r#"
for i in $(seq 1 60); do [ -b /dev/vda ] && break; sleep 1; done
echo "guest: writing"
i=0
while true; do dd if=/dev/urandom of=/dev/vda bs=64k seek=$((i % 1000)) count=1 conv=notrunc 2>/dev/null; i=$((i+1)); done
"#,
    );
    vm_create(&h, "victim", &g, &["--disk", &s(&disk)]);
    let vm = h.json(&["vm", "start", "victim", "--json"]);
    h.wait_console("victim", "guest: writing", T);
    std::thread::sleep(Duration::from_secs(2));
    signal(&vm["qemu_pid"], rustix::process::Signal::KILL);
    h.wait_state("victim", "crashed", Duration::from_secs(30));
    let shown = h.json(&["vm", "show", "victim", "--json"]);
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("QEMU ended unexpectedly"),
        "{shown}"
    );
    let crashed = h
        .events("victim")
        .into_iter()
        .find(|e| e["name"] == "vm-crashed")
        .expect("a crash event");
    assert_eq!(crashed["level"], "error");
    h.ok(&["disk", "check", &s(&disk)]);

    // A crashed VM starts again. QEMU stopped by SIGTERM from outside exits with status 0, yet
    // it is a crash, not the guest powering off.
    let vm = h.json(&["vm", "start", "victim", "--json"]);
    std::thread::sleep(Duration::from_secs(1));
    signal(&vm["qemu_pid"], rustix::process::Signal::TERM);
    h.wait_state("victim", "crashed", Duration::from_secs(30));
    let shown = h.json(&["vm", "show", "victim", "--json"]);
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("signal from outside Strata"),
        "{shown}"
    );

    // A disk changed while the VM is saved: the restore is refused, the saved state can be dropped.
    h.ok(&["vm", "start", "victim"]);
    h.wait_console("victim", "guest: writing", T);
    assert_eq!(
        h.json(&["vm", "save", "victim", "--json"])["state"],
        "saved"
    );
    h.ok(&["disk", "check", &s(&disk)]);
    let f = std::fs::File::options().write(true).open(&disk).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let err = h.fails(&["vm", "start", "victim"]);
    assert!(
        err.contains("has changed") && err.contains("discard-saved"),
        "{err}"
    );
    assert_eq!(
        h.json(&["vm", "discard-saved", "victim", "--json"])["state"],
        "off"
    );
    assert!(!h.home().join("vms/victim/saved.state").exists());
}

#[test]
fn the_console_relays_keystrokes_to_the_guest_and_its_output_back() {
    use std::io::{Read, Write};
    let h = Host::new();
    let g = guest(
        h.home(),
        "echo",
        &[],
        "echo 'guest: type'\nwhile read line; do echo \"guest got: $line\"; done\n",
    );
    vm_create(&h, "talk", &g, &[]);
    h.ok(&["vm", "start", "talk"]);
    h.wait_console("talk", "guest: type", T);
    let mut attach = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["vm", "console", "talk"])
        .env("STRATA_HOME", h.home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = attach.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("guest got: hello strata") {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    std::thread::sleep(Duration::from_millis(500));
    attach
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello strata\n")
        .unwrap();
    wait_for("the guest's answer in the log", T, || {
        h.console("talk").contains("guest got: hello strata")
    });
    h.ok(&["vm", "stop", "talk"]);
    // The VM ending ends the attached console.
    let seen = reader.join().unwrap();
    assert!(seen.contains("guest got: hello strata"), "{seen}");
    let status = attach.wait().unwrap();
    assert!(status.success());
}
