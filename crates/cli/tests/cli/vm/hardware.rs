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
