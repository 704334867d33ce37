//! Disks added to and removed from a running guest (virtio and SCSI), kept across a save and
//! restore, with what the guest wrote landing in the VHD; and the requests a running VM refuses.

use super::netlab::T;
use super::*;

/// Waits until the guest has (or no longer has) block device `dev`.
fn wait_dev(h: &Host, tag: &str, dev: &str, present: bool) {
    let test = if present { "-b" } else { "! -e" };
    let cmd = format!("i=0; while [ ! {test} {dev} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; [ {test} {dev} ] && echo yes");
    assert_eq!(h.says("hp", tag, &cmd), "yes", "{dev} present={present}");
}

/// The 16 bytes at 1 MiB of VHD `path`, read through Strata's engine with a write lock (which
/// fails while a worker still holds the disk).
fn marker_in(path: &Path) -> Vec<u8> {
    let d = strata_vhd::Disk::open(path, strata_vhd::OpenOptions::write()).unwrap();
    let mut buf = vec![0u8; 16];
    d.read_at(&mut buf, 1 << 20).unwrap();
    buf
}

#[test]
fn disks_come_and_go_while_the_guest_runs_and_survive_a_restore() {
    let h = Host::new();
    let disk = |name: &str| {
        let p = h.home().join(name);
        h.ok(&["disk", "create", &s(&p), "--size", "16M"]);
        p
    };
    let (boot, hot, scsi, ide) = (
        disk("boot.vhd"),
        disk("hot.vhd"),
        disk("scsi.vhd"),
        disk("ide.vhd"),
    );
    let g = guest(
        h.home(),
        "hot",
        &["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"],
        "echo READY\nwhile read -r line; do eval \"$line\"; done < /dev/ttyS0\n",
    );
    vm_create(&h, "hp", &g, &["--disk", &s(&boot)]);
    h.ok(&["vm", "start", "hp"]);
    h.wait_console("hp", "READY", T);

    // Hot add: a virtio disk and a SCSI disk (the VM had no SCSI disk: its controller is there).
    h.ok(&["vm", "disk", "add", "hp", &s(&hot)]);
    wait_dev(&h, "a1", "/dev/vdb", true);
    h.ok(&["vm", "disk", "add", "hp", &format!("{}:scsi", s(&scsi))]);
    wait_dev(&h, "a2", "/dev/sda", true);
    let write = |dev: &str, text: &str| {
        format!("printf {text} | dd of={dev} bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null && echo done")
    };
    assert_eq!(
        h.says("hp", "w1", &write("/dev/vdb", "HOT-VIRTIO-MARK")),
        "done"
    );
    assert_eq!(
        h.says("hp", "w2", &write("/dev/sda", "HOT-SCSI-MARKER")),
        "done"
    );
    let v = h.json(&["vm", "show", "hp", "--json"]);
    let buses: Vec<_> = v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bus"].as_str().unwrap())
        .collect();
    assert_eq!(buses, ["virtio", "virtio", "scsi"], "{v}");
    assert!(h.has_event("hp", "vm-changed"));

    // What a running VM refuses, by name; the VM runs on.
    let err = h.fails(&["vm", "disk", "remove", "hp", "0"]);
    assert!(err.contains("is its boot disk"), "{err}");
    let err = h.fails(&["vm", "disk", "add", "hp", &format!("{}:ide", s(&ide))]);
    assert!(err.contains("an IDE disk cannot be added"), "{err}");
    let err = h.fails(&["vm", "disk", "add", "hp", &s(&hot)]);
    assert!(err.contains("attached twice"), "{err}");
    let missing = h.home().join("missing.vhd");
    let err = h.fails(&["vm", "disk", "add", "hp", &s(&missing)]);
    assert!(err.contains(&s(&missing)), "{err}");
    let err = h.fails(&["vm", "disk", "remove", "hp", "/no/such.vhd"]);
    assert!(err.contains("has no disk '/no/such.vhd'"), "{err}");
    assert_eq!(h.state("hp"), "running");
    assert_eq!(
        h.json(&["vm", "show", "hp", "--json"])["disks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Saved and restored: the added disks are where the guest left them.
    h.ok(&["vm", "save", "hp"]);
    h.ok(&["vm", "start", "hp"]);
    let read = |dev: &str| format!("dd if={dev} bs=512 skip=2048 count=1 2>/dev/null | head -c 15");
    assert_eq!(h.says("hp", "r1", &read("/dev/vdb")), "HOT-VIRTIO-MARK");
    assert_eq!(h.says("hp", "r2", &read("/dev/sda")), "HOT-SCSI-MARKER");

    // Hot remove, by path and by index: the guest lets go, the VHDs hold the markers and are
    // free (a write lock is taken) while the VM still runs.
    h.ok(&["vm", "disk", "remove", "hp", &s(&hot)]);
    wait_dev(&h, "g1", "/dev/vdb", false);
    assert_eq!(&marker_in(&hot)[..15], b"HOT-VIRTIO-MARK");
    h.ok(&["vm", "disk", "remove", "hp", "1"]);
    wait_dev(&h, "g2", "/dev/sda", false);
    assert_eq!(&marker_in(&scsi)[..15], b"HOT-SCSI-MARKER");
    let v = h.json(&["vm", "show", "hp", "--json"]);
    assert_eq!(v["disks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(h.state("hp"), "running");
    h.ok(&["vm", "stop", "hp"]);

    // Off, any bus changes, the boot disk too.
    h.ok(&["vm", "disk", "add", "hp", &format!("{}:ide", s(&ide))]);
    h.ok(&["vm", "disk", "remove", "hp", "0"]);
    let v = h.json(&["vm", "show", "hp", "--json"]);
    assert_eq!(v["disks"][0]["path"], s(&ide), "{v}");
    assert!(boot.exists(), "a removed disk's file is kept");
}
