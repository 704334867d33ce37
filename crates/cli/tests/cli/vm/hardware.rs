//! Firmware and TPM with real guests: UEFI (OVMF) with the VM's own variables store, secure boot
//! on a Q35 machine as the guest sees it, a TPM 2.0 (swtpm) whose state lives in the VM's folder
//! and is there again at the next start; bad combinations refused before anything runs.

use super::netlab::T;
use super::*;

/// A guest that reports its firmware and TPM on the console, then powers off.
const REPORT: &str = r#"
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
[ -d /sys/firmware/efi ] && echo FIRMWARE-UEFI || echo FIRMWARE-BIOS
sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
[ -f $sb ] && echo "SECUREBOOT $(od -An -tu1 $sb | awk '{print $NF}')"
i=0; while [ ! -e /dev/tpm0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -e /dev/tpm0 ] && echo TPM-PRESENT || echo TPM-ABSENT
echo REPORT-DONE
poweroff -f
"#;

fn boot_and_report(h: &Host, vm: &str, run: usize) -> String {
    h.ok(&["vm", "start", vm]);
    h.wait_state(vm, "off", T);
    let text = h.console(vm);
    assert_eq!(text.matches("REPORT-DONE").count(), run, "{text}");
    text
}

#[test]
fn uefi_with_a_tpm_keeps_its_variables_and_tpm_state_across_starts() {
    let h = Host::new();
    let g = guest(h.home(), "fw", &["efivarfs"], REPORT);
    vm_create(&h, "u", &g, &["--firmware", "uefi", "--tpm", "on"]);
    let v = h.json(&["vm", "show", "u", "--json"]);
    assert_eq!(
        (v["firmware"].as_str(), v["tpm"].as_bool()),
        (Some("uefi"), Some(true)),
        "{v}"
    );
    let text = boot_and_report(&h, "u", 1);
    assert!(
        text.contains("FIRMWARE-UEFI") && text.contains("SECUREBOOT 0"),
        "{text}"
    );
    assert!(text.contains("TPM-PRESENT"), "{text}");
    let dir = h.home().join("vms").join("u");
    let vars = std::fs::metadata(dir.join("uefi-vars.fd")).unwrap();
    assert!(vars.len() > 0);
    let state = dir.join("tpm").join("tpm2-00.permall");
    let first = std::fs::read(&state).expect("the TPM's state in the VM's folder");
    // Started again: the same variables store and TPM state are used, not new ones.
    let text = boot_and_report(&h, "u", 2);
    assert_eq!(text.matches("TPM-PRESENT").count(), 2, "{text}");
    let second = std::fs::read(&state).unwrap();
    // The TPM's persistent seeds (the start of its state) are the same after the restart.
    assert_eq!(first[..64], second[..64], "the TPM's state was made anew");
    let ps = Command::new("pgrep")
        .args(["-af", "swtpm socket"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&s(&dir)),
        "swtpm outlived its VM"
    );

    // A BIOS VM has no EFI and no TPM.
    vm_create(&h, "b", &g, &[]);
    let text = boot_and_report(&h, "b", 1);
    assert!(
        text.contains("FIRMWARE-BIOS") && text.contains("TPM-ABSENT"),
        "{text}"
    );
}

#[test]
fn secure_boot_runs_on_q35_and_bad_combinations_are_refused() {
    let h = Host::new();
    let g = guest(h.home(), "sb", &["efivarfs"], REPORT);
    let refused = [
        (
            vec!["--secure-boot", "on"],
            "secure boot needs UEFI firmware",
        ),
        (
            vec!["--firmware", "uefi", "--secure-boot", "on"],
            "needs a Q35 machine",
        ),
        (vec!["--firmware", "efi"], "invalid firmware 'efi'"),
        (vec!["--machine", "q36"], "machine type 'q36'"),
    ];
    for (extra, words) in refused {
        let mut args = vec!["vm", "create", "x"];
        args.extend(extra.iter());
        let err = h.fails(&args);
        assert!(err.contains(words), "{extra:?}: {err}");
    }
    vm_create(
        &h,
        "s",
        &g,
        &[
            "--machine",
            "q35",
            "--firmware",
            "uefi",
            "--secure-boot",
            "on",
        ],
    );
    let v = h.json(&["vm", "show", "s", "--json"]);
    assert!(v["machine"].as_str().unwrap().starts_with("pc-q35-"), "{v}");
    let text = boot_and_report(&h, "s", 1);
    assert!(
        text.contains("FIRMWARE-UEFI") && text.contains("SECUREBOOT 1"),
        "{text}"
    );
}

#[test]
fn a_scsi_disk_a_floppy_and_a_usb_tablet_reach_the_guest() {
    let h = Host::new();
    let scsi = h.home().join("scsi.vhd");
    h.ok(&["disk", "create", &s(&scsi), "--size", "32M"]);
    let floppy = h.home().join("boot.vfd");
    let mut img = vec![0u8; 1_474_560];
    img[512..531].copy_from_slice(b"STRATA-FLOPPY-BYTES");
    std::fs::write(&floppy, &img).unwrap();
    let g = guest(
        h.home(),
        "dev",
        &[
            "virtio_pci",
            "virtio_scsi",
            "sd_mod",
            "floppy",
            "xhci_pci",
            "usbhid",
            "hid_generic",
        ],
        r#"
for i in $(seq 1 60); do [ -b /dev/sda ] && [ -b /dev/fd0 ] && break; sleep 1; done
printf STRATA-SCSI-MARKER | dd of=/dev/sda bs=512 seek=2048 conv=notrunc 2>/dev/null
sync
echo "floppy says $(dd if=/dev/fd0 bs=512 skip=1 count=1 2>/dev/null | head -c 19)"
for i in $(seq 1 60); do grep -q "USB Tablet" /sys/class/input/*/name 2>/dev/null && break; sleep 0.5; done
grep -h "USB Tablet" /sys/class/input/*/name 2>/dev/null | head -1 | sed 's/^/input: /'
echo DEVICES-DONE
poweroff -f
"#,
    );
    vm_create(
        &h,
        "d",
        &g,
        &[
            "--disk",
            &format!("{}:scsi", s(&scsi)),
            "--floppy",
            &s(&floppy),
            "--usb-tablet",
            "on",
        ],
    );
    let v = h.json(&["vm", "show", "d", "--json"]);
    assert_eq!(v["disks"][0]["bus"], "scsi", "{v}");
    h.ok(&["vm", "start", "d"]);
    h.wait_state("d", "off", T);
    let text = h.console("d");
    assert!(text.contains("floppy says STRATA-FLOPPY-BYTES"), "{text}");
    assert!(text.contains("input: QEMU QEMU USB Tablet"), "{text}");
    let d = strata_vhd::Disk::open(&scsi, strata_vhd::OpenOptions::read()).unwrap();
    let mut buf = [0u8; 18];
    d.read_at(&mut buf, 2048 * 512).unwrap();
    assert_eq!(&buf, b"STRATA-SCSI-MARKER");
    // Eight SCSI disks do not fit the controller; a floppy on a Q35 machine has no controller.
    let mut args = vec!["vm".to_string(), "create".into(), "x".into()];
    for _ in 0..8 {
        args.extend(["--disk".into(), format!("{}:scsi", s(&scsi))]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = h.fails(&a);
    assert!(err.contains("SCSI"), "{err}");
    let err = h.fails(&[
        "vm",
        "create",
        "y",
        "--machine",
        "q35",
        "--floppy",
        &s(&floppy),
    ]);
    assert!(err.contains("no floppy controller"), "{err}");
}

fn mem_total_kib(h: &Host, tag: &str) -> u64 {
    h.says("m", tag, "awk '/MemTotal/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap()
}

#[test]
fn dynamic_memory_and_media_change_on_a_running_vm() {
    let h = Host::new();
    let iso = |name: &str, text: &[u8]| {
        let p = h.home().join(name);
        let mut data = vec![0u8; 1 << 20];
        data[..text.len()].copy_from_slice(text);
        std::fs::write(&p, data).unwrap();
        p
    };
    let (one, two) = (iso("one.iso", b"ISO-ONE"), iso("two.iso", b"ISO-TWO"));
    let g = guest(
        h.home(),
        "mem",
        &["virtio_pci", "virtio_balloon", "ata_piix", "sr_mod"],
        "echo READY\nwhile read -r line; do eval \"$line\"; done < /dev/ttyS0\n",
    );
    vm_create(&h, "m", &g, &["--memory-min", "128M", "--cdrom", &s(&one)]);
    let err = h.fails(&[
        "vm",
        "create",
        "bad",
        "--memory",
        "256M",
        "--memory-min",
        "512M",
    ]);
    assert!(err.contains("dynamic memory's minimum 512 MiB"), "{err}");
    h.ok(&["vm", "start", "m"]);
    h.wait_console("m", "READY", T);
    let full = mem_total_kib(&h, "m1");
    assert!(full > 200_000, "{full}");
    let err = h.fails(&["vm", "memory", "m", "64M"]);
    assert!(
        err.contains("outside its dynamic memory, 128 to 256 MiB"),
        "{err}"
    );
    h.ok(&["vm", "memory", "m", "160M"]);
    wait_for("the balloon to inflate", T, || {
        h.json(&["vm", "show", "m", "--json"])["memory_current_mib"] == 160
    });
    let shrunk = mem_total_kib(&h, "m2");
    assert!(shrunk + 80_000 < full, "MemTotal {full} -> {shrunk} kB");
    h.ok(&["vm", "memory", "m", "256M"]);
    wait_for("the balloon to deflate", T, || {
        h.json(&["vm", "show", "m", "--json"])["memory_current_mib"] == 256
    });
    let back = mem_total_kib(&h, "m3");
    assert!(back > shrunk + 80_000, "MemTotal {shrunk} -> {back} kB");

    // The CD/DVD: read, changed while running, ejected.
    // The first read after a change meets the drive's "medium changed" and fails; the next one reads.
    let read = "dd if=/dev/sr0 of=/dev/null count=1 2>/dev/null; dd if=/dev/sr0 bs=2048 count=1 2>/dev/null | head -c 7";
    assert_eq!(h.says("m", "cd1", read), "ISO-ONE");
    h.ok(&["vm", "media", "insert", "m", &s(&two)]);
    assert_eq!(h.says("m", "cd2", read), "ISO-TWO");
    assert_eq!(h.json(&["vm", "show", "m", "--json"])["cdrom"], s(&two));
    h.ok(&["vm", "media", "eject", "m"]);
    assert_eq!(h.says("m", "cd3", read), "");
    assert!(h.json(&["vm", "show", "m", "--json"])["cdrom"].is_null());
    h.ok(&["vm", "stop", "m"]);
    let err = h.fails(&["vm", "memory", "m", "200M"]);
    assert!(err.contains("is off"), "{err}");
}

#[test]
fn a_host_short_of_memory_shrinks_idle_guests_and_gives_memory_to_one_that_allocates() {
    // Below 100% available, the host is "short": the policy takes memory back from an idle
    // guest, a quarter of the range at a time, down to the minimum (and no lower).
    let h = Host::with_env(&[("STRATA_MEMORY_LOW", "100")]);
    let g = guest(
        h.home(),
        "alloc",
        &["virtio_pci", "virtio_balloon"],
        "echo READY\nwhile read -r line; do eval \"$line\"; done < /dev/ttyS0\n",
    );
    vm_create(&h, "m", &g, &["--memory-min", "128M"]);
    h.ok(&["vm", "start", "m"]);
    h.wait_console("m", "READY", T);
    let show = || h.json(&["vm", "show", "m", "--json"]);
    wait_for("the policy to shrink the VM", T, || {
        show()["memory_current_mib"] == 128
    });
    let steps = |words: &str| {
        h.events("m")
            .into_iter()
            .filter(|e| e["message"].as_str().unwrap_or("").contains(words))
            .count()
    };
    assert!(steps("dynamic memory: the host short of") >= 3);
    // The guest's balloon driver reports what it has available.
    wait_for("the guest's statistics", T, || {
        show()["memory_available_mib"]
            .as_u64()
            .is_some_and(|a| a > 0 && a < 128)
    });
    let small = mem_total_kib(&h, "t1");

    // The guest fills its memory (a file in its RAM file system) to 12 MiB short: it needs
    // memory, and gets it although the host is short.
    h.type_line(
        "m",
        "a=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo); dd if=/dev/zero of=/hog bs=1M count=$((a-12)) 2>/dev/null; echo HOG-DONE",
    );
    h.wait_console("m", "HOG-DONE", T);
    wait_for("the VM to get memory back", T, || {
        show()["memory_current_mib"]
            .as_u64()
            .is_some_and(|c| c > 128)
    });
    assert!(steps("dynamic memory: the guest needs memory") >= 1);
    let grown = mem_total_kib(&h, "t2");
    assert!(grown > small + 16_000, "MemTotal {small} -> {grown} kB");

    // It frees it: idle again, it shrinks back to its minimum.
    h.type_line("m", "rm -f /hog");
    wait_for("the VM to shrink again", T, || {
        show()["memory_current_mib"] == 128
    });
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(show()["memory_current_mib"], 128, "never below the minimum");
    h.ok(&["vm", "stop", "m"]);
    assert!(show()["memory_available_mib"].is_null());
}

#[test]
fn a_uefi_vm_with_a_tpm_is_saved_and_restored() {
    let h = Host::new();
    let g = guest(h.home(), "count", &[], COUNTER);
    vm_create(&h, "c", &g, &["--firmware", "uefi", "--tpm", "on"]);
    h.ok(&["vm", "start", "c"]);
    wait_for("the guest to count", T, || {
        counts(&h.console("c")).len() > 3
    });
    h.ok(&["vm", "save", "c"]);
    assert_eq!(h.state("c"), "saved");
    let before = *counts(&h.console("c")).last().unwrap();
    // Saved, the VM's TPM is not running; its state and the UEFI store stay in its folder.
    let dir = h.home().join("vms").join("c");
    let ps = Command::new("pgrep")
        .args(["-af", "swtpm socket"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&s(&dir)),
        "swtpm outlived the save"
    );
    assert!(dir.join("uefi-vars.fd").exists() && dir.join("tpm").is_dir());
    h.ok(&["vm", "start", "c"]);
    assert_eq!(h.state("c"), "running");
    // The guest goes on counting from where it was saved, not from a new boot.
    wait_for("the count to go on", T, || {
        counts(&h.console("c"))
            .last()
            .is_some_and(|n| *n > before + 3)
    });
    // Restored, the line after the last one printed before the save is the next number; a new
    // boot would print "count 0" there.
    let all = counts(&h.console("c"));
    let at = all.iter().position(|n| *n == before).unwrap();
    assert_eq!(
        all[at + 1],
        before + 1,
        "restarted rather than restored: {all:?}"
    );
    h.ok(&["vm", "stop", "c"]);
}

#[test]
fn uefi_without_ovmf_and_a_tpm_without_swtpm_are_refused_by_name() {
    // A host whose firmware folder and swtpm are elsewhere (or missing): the settings name them.
    let h = Host::with_env(&[
        ("STRATA_OVMF_DIR", "/nonexistent-ovmf"),
        ("STRATA_SWTPM", "/nonexistent/swtpm"),
    ]);
    let err = h.fails(&["vm", "create", "u", "--firmware", "uefi"]);
    assert!(
        err.contains("UEFI needs /nonexistent-ovmf/OVMF_CODE_4M.fd") && err.contains("ovmf"),
        "{err}"
    );
    let err = h.fails(&["vm", "create", "t", "--tpm", "on"]);
    assert!(
        err.contains("a TPM needs swtpm (/nonexistent/swtpm)"),
        "{err}"
    );
    // Nothing was made.
    assert_eq!(h.json(&["vm", "list", "--json"]), serde_json::json!([]));
    assert!(!h.home().join("vms").join("u").exists());
}
