//! Checkpoints through the `strata` binary with real guests: a tree with branches, apply,
//! revert, rename, delete (with merges), a running checkpoint with memory, and bad input.

use super::netlab::T;
use super::*;

/// A guest that runs each line typed on its console (virtio disk driver loaded).
fn console_guest(h: &Host, name: &str) -> Guest {
    guest(
        h.home(),
        name,
        &["virtio_pci", "virtio_blk"],
        "echo READY\nwhile read -r line; do eval \"$line\"; done < /dev/ttyS0\n",
    )
}

const READ: &str = "dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 4";

fn write(mark: &str) -> String {
    format!(
        "printf {mark} | dd of=/dev/vda bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null && echo ok"
    )
}

/// Starts the VM, checks what its disk holds, writes `mark` (if any), turns it off.
fn session(h: &Host, vm: &str, tag: &str, expect: &str, mark: Option<&str>) {
    // The console log is appended to: wait for this boot's READY.
    let readies = h.console(vm).matches("READY").count();
    h.ok(&["vm", "start", vm]);
    wait_for("the guest", T, || {
        h.console(vm).matches("READY").count() > readies
    });
    assert_eq!(h.says(vm, &format!("{tag}r"), READ), expect, "{tag}");
    if let Some(m) = mark {
        assert_eq!(h.says(vm, &format!("{tag}w"), &write(m)), "ok");
    }
    h.ok(&["vm", "stop", vm]);
}

fn list(h: &Host, vm: &str) -> Vec<Value> {
    h.json(&["checkpoint", "list", vm, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn by_name<'a>(l: &'a [Value], name: &str) -> &'a Value {
    l.iter().find(|c| c["name"] == name).unwrap()
}

#[test]
fn a_checkpoint_tree_with_branches_applies_renames_and_deletes_with_merges() {
    let h = Host::new();
    let disk = h.home().join("cp.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    let g = console_guest(&h, "cp");
    vm_create(&h, "c", &g, &["--disk", &s(&disk)]);
    session(&h, "c", "s1", "", Some("AAAA"));
    h.ok(&["checkpoint", "create", "c", "--name", "one"]);
    session(&h, "c", "s2", "AAAA", Some("BBBB"));
    h.ok(&["checkpoint", "create", "c", "--name", "two"]);
    session(&h, "c", "s3", "BBBB", Some("CCCC"));
    // Back to one: what was written after it is gone.
    h.ok(&["checkpoint", "apply", "c", "one"]);
    assert_eq!(h.state("c"), "off");
    session(&h, "c", "s4", "AAAA", Some("DDDD"));
    h.ok(&["checkpoint", "create", "c"]);
    let l = list(&h, "c");
    assert_eq!(l.len(), 3, "{l:?}");
    let third = l
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("c - ("))
        .unwrap();
    let third_name = third["name"].as_str().unwrap().to_string();
    h.ok(&["checkpoint", "rename", "c", &third_name, "three"]);
    let l = list(&h, "c");
    let one = by_name(&l, "one")["id"].clone();
    assert_eq!(by_name(&l, "two")["parent"], one);
    assert_eq!(by_name(&l, "three")["parent"], one);
    assert_eq!(by_name(&l, "three")["current"], true);
    assert_eq!(by_name(&l, "one")["has_memory"], false);
    let text = h.ok(&["checkpoint", "list", "c"]);
    assert!(text.contains("one (") && text.contains("    Now"), "{text}");
    // Revert: back to three (DDDD), after writing EEEE.
    session(&h, "c", "s5", "DDDD", Some("EEEE"));
    h.ok(&["checkpoint", "revert", "c"]);
    session(&h, "c", "s6", "DDDD", None);

    // Bad input: each refused by name, nothing changed.
    let err = h.fails(&["checkpoint", "apply", "c", "nope"]);
    assert!(err.contains("has no checkpoint 'nope'"), "{err}");
    let err = h.fails(&["checkpoint", "rename", "c", "two", "three"]);
    assert!(
        err.contains("already has a checkpoint named 'three'"),
        "{err}"
    );
    let err = h.fails(&["checkpoint", "create", "c", "--name", "two"]);
    assert!(
        err.contains("already has a checkpoint named 'two'"),
        "{err}"
    );
    assert_eq!(list(&h, "c").len(), 3);
    let err = h.fails(&["vm", "disk", "remove", "c", "0"]);
    assert!(err.contains("has checkpoints"), "{err}");
    let err = h.fails(&["vm", "delete", "c"]);
    assert!(err.contains("has checkpoints"), "{err}");
    // The VM's own disk is now a checkpoint's frozen layer: no other VM may write it.
    let err = h.fails(&["vm", "create", "thief", "--disk", &s(&disk)]);
    assert!(err.contains("is a parent in VM 'c''s disk chain"), "{err}");

    // Delete one (two children: its layer stays, hidden); then three's subtree: one's layer
    // has a single child left and is merged away.
    h.ok(&["checkpoint", "delete", "c", "one"]);
    let l = list(&h, "c");
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|c| c["parent"].is_null()), "{l:?}");
    h.ok(&["checkpoint", "apply", "c", "two"]);
    session(&h, "c", "s7", "BBBB", None);
    h.ok(&["checkpoint", "delete", "c", "three", "--subtree"]);
    let l = list(&h, "c");
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(h.has_event("c", "merge-finished"));
    let folder = h.home().join("vms/c/checkpoints");
    let layers: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "avhd"))
        .collect();
    assert_eq!(
        layers.len(),
        1,
        "two's layer over the base, Now: {layers:?}"
    );
    for f in layers.iter().map(|e| e.path()).chain([disk.clone()]) {
        h.ok(&["disk", "check", &s(&f)]);
    }
    session(&h, "c", "s8", "BBBB", None);
    // Delete the last: everything merges back into the VM's own disk.
    h.ok(&["checkpoint", "delete", "c", "two"]);
    assert!(list(&h, "c").is_empty());
    let v = h.json(&["vm", "show", "c", "--json"]);
    assert_eq!(v["disks"][0]["path"], s(&disk), "{v}");
    session(&h, "c", "s9", "BBBB", None);

    // The 65th checkpoint is refused.
    for i in 0..64 {
        h.ok(&["checkpoint", "create", "c", "--name", &format!("n{i}")]);
    }
    let err = h.fails(&["checkpoint", "create", "c"]);
    assert!(err.contains("64 checkpoints, the most it keeps"), "{err}");
    h.ok(&["vm", "delete", "c", "--delete-disks"]);
    assert!(!disk.exists());
    assert!(!h.home().join("vms/c").exists());
}

#[test]
fn a_running_checkpoint_keeps_memory_and_apply_resumes_there() {
    let h = Host::new();
    let disk = h.home().join("run.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    let g = guest(
        h.home(),
        "runcp",
        &["virtio_pci", "virtio_blk"],
        &format!(
            "(i=0; while true; do echo \"count $i\"; i=$((i+1)); sleep 0.2; done) &\n{}",
            "echo READY\nwhile read -r line; do eval \"$line\"; done < /dev/ttyS0\n"
        ),
    );
    vm_create(&h, "r", &g, &["--disk", &s(&disk)]);
    h.ok(&["vm", "start", "r"]);
    h.wait_console("r", "READY", T);
    assert_eq!(h.says("r", "w1", &write("KEEP")), "ok");
    wait_for("counting", T, || counts(&h.console("r")).len() > 5);
    h.ok(&["checkpoint", "create", "r", "--name", "live"]);
    let at = *counts(&h.console("r")).last().unwrap();
    let l = list(&h, "r");
    assert_eq!(l[0]["has_memory"], true, "{l:?}");
    assert!(h.has_event("r", "checkpoint-created"));
    let taken = h.event_message("r", "checkpoint taken (");
    assert!(taken.contains("crash-consistent"), "{taken}");
    assert_eq!(h.state("r"), "running", "the guest runs on");
    assert_eq!(h.says("r", "w2", &write("GONE")), "ok");
    wait_for("more counting", T, || {
        counts(&h.console("r")).last().is_some_and(|c| *c > at + 20)
    });
    let before = *counts(&h.console("r")).last().unwrap();
    // A running VM is not applied without --force.
    let err = h.fails(&["checkpoint", "apply", "r", "live"]);
    assert!(err.contains("--force"), "{err}");
    h.ok(&["checkpoint", "apply", "r", "live", "--force"]);
    assert_eq!(h.state("r"), "saved");
    let mark = h.console("r").len();
    h.ok(&["vm", "start", "r"]);
    // The counter continues from where the checkpoint was, not from where it was stopped.
    wait_for("counting after apply", T, || {
        counts(&h.console("r")[mark..]).len() > 3
    });
    let resumed = counts(&h.console("r")[mark..])[0];
    assert!(
        resumed < before,
        "resumed at {resumed}, was at {before} before apply"
    );
    assert!(
        resumed + 10 >= at,
        "resumed at {resumed}, checkpoint at {at}"
    );
    assert_eq!(h.says("r", "r1", READ), "KEEP");
    assert_eq!(h.says("r", "w3", &write("LAST")), "ok");

    // Deleted while the VM runs: its files are in the running chain, so the merge waits (shown
    // in `vm show`) and runs once the VM is off; the VM's own disk then holds everything.
    h.ok(&["checkpoint", "delete", "r", "live"]);
    assert!(list(&h, "r").is_empty());
    let v = h.json(&["vm", "show", "r", "--json"]);
    assert_eq!(v["pending_merges"][0]["state"], "waiting", "{v}");
    assert_eq!(v["pending_merges"][0]["into"], s(&disk), "{v}");
    assert!(h.has_event("r", "merge-started"));
    h.ok(&["vm", "stop", "r"]);
    wait_for("the merge", T, || {
        let v = h.json(&["vm", "show", "r", "--json"]);
        v["pending_merges"].as_array().unwrap().is_empty() && v["disks"][0]["path"] == s(&disk)
    });
    assert!(h.has_event("r", "merge-finished"));
    h.ok(&["disk", "check", &s(&disk)]);
    let d = strata_vhd::Disk::open(&disk, strata_vhd::OpenOptions::read()).unwrap();
    let mut buf = [0u8; 4];
    d.read_at(&mut buf, 2048 * 512).unwrap();
    assert_eq!(&buf, b"LAST");
}

/// What sector 2048 of VHD `path` holds (4 bytes), read while the VM is off.
fn base_mark(path: &Path) -> Vec<u8> {
    let d = strata_vhd::Disk::open(path, strata_vhd::OpenOptions::read()).unwrap();
    let mut buf = vec![0u8; 4];
    d.read_at(&mut buf, 2048 * 512).unwrap();
    buf
}

#[test]
fn undo_disks_keep_commit_and_discard_all_disks_together() {
    let h = Host::new();
    let (a, b) = (h.home().join("ua.vhd"), h.home().join("ub.vhd"));
    for d in [&a, &b] {
        h.ok(&["disk", "create", &s(d), "--size", "16M"]);
    }
    let g = console_guest(&h, "undo");
    vm_create(
        &h,
        "u",
        &g,
        &["--disk", &s(&a), "--disk", &s(&b), "--undo-disks", "on"],
    );
    let vud = |p: &Path| p.with_extension("vud");
    let run = |tag: &str, expect: &str, mark: &str| {
        let readies = h.console("u").matches("READY").count();
        h.ok(&["vm", "start", "u"]);
        wait_for("the guest", T, || {
            h.console("u").matches("READY").count() > readies
        });
        for dev in ["vda", "vdb"] {
            let read = format!("dd if=/dev/{dev} bs=512 skip=2048 count=1 2>/dev/null | head -c 4");
            assert_eq!(
                h.says("u", &format!("{tag}r{dev}"), &read),
                expect,
                "{tag} {dev}"
            );
            let w = format!("printf {mark} | dd of=/dev/{dev} bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null && echo ok");
            assert_eq!(h.says("u", &format!("{tag}w{dev}"), &w), "ok");
        }
    };
    // Discard: the disks are as before.
    run("d", "", "AAAA");
    assert!(
        vud(&a).exists() && vud(&b).exists(),
        "the VM writes into undo disks"
    );
    h.ok(&["vm", "stop", "u", "--undo", "discard"]);
    assert!(!vud(&a).exists() && !vud(&b).exists());
    assert_eq!(base_mark(&a), [0; 4]);
    // Keep (the default): the next start goes on from them; the disks stay untouched.
    run("k", "", "BBBB");
    h.ok(&["vm", "stop", "u"]);
    assert!(h.json(&["vm", "show", "u", "--json"])["undo_kept"] == true);
    assert_eq!(base_mark(&b), [0; 4]);
    run("k2", "BBBB", "CCCC");
    h.ok(&["vm", "stop", "u", "--undo", "keep"]);
    // Refused while undo disks are kept or on, by name.
    let err = h.fails(&["vm", "set", "u", "--undo-disks", "off"]);
    assert!(err.contains("has kept undo disks"), "{err}");
    let err = h.fails(&["checkpoint", "create", "u"]);
    assert!(
        err.contains("undo disks and checkpoints do not mix"),
        "{err}"
    );
    // Commit while off: both disks take the changes.
    h.ok(&["vm", "commit-undo", "u"]);
    assert_eq!(base_mark(&a), b"CCCC");
    assert_eq!(base_mark(&b), b"CCCC");
    assert!(!vud(&a).exists() && !vud(&b).exists());
    let err = h.fails(&["vm", "discard-undo", "u"]);
    assert!(err.contains("has no kept undo disks"), "{err}");
    // The VM's action commits when it is turned off.
    h.ok(&["vm", "set", "u", "--undo-action", "commit"]);
    run("c", "CCCC", "DDDD");
    h.ok(&["vm", "stop", "u"]);
    assert_eq!(base_mark(&a), b"DDDD");
    assert_eq!(base_mark(&b), b"DDDD");
    assert!(!vud(&a).exists());
    assert!(h.has_event("u", "vm-changed"));
    for d in [&a, &b] {
        h.ok(&["disk", "check", &s(d)]);
    }
}

fn sha(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn linked_clones_of_a_template_boot_and_write_while_the_template_stays_the_same() {
    let h = Host::new();
    let disk = h.home().join("gold.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    let g = console_guest(&h, "tmpl");
    vm_create(&h, "gold", &g, &["--disk", &s(&disk), "--nic", "virtio"]);
    session(&h, "gold", "g", "", Some("GOLD"));
    let err = h.fails(&["vm", "clone", "gold", "c1", "--linked"]);
    assert!(err.contains("is not a template"), "{err}");
    h.ok(&["vm", "set", "gold", "--template", "on"]);
    let before = sha(&disk);
    let err = h.fails(&["vm", "start", "gold"]);
    assert!(err.contains("is a template: it never starts"), "{err}");
    let gold = h.json(&["vm", "show", "gold", "--json"]);
    assert_eq!(gold["template"], true);
    for (name, mark) in [("c1", "ONE1"), ("c2", "TWO2")] {
        let v = h.json(&["vm", "clone", "gold", name, "--linked", "--json"]);
        assert_ne!(v["nics"][0]["mac"], gold["nics"][0]["mac"], "a new MAC");
        assert_eq!(v["template"], false);
        session(&h, name, name, "GOLD", Some(mark));
        session(&h, name, &format!("{name}b"), mark, None);
    }
    assert_eq!(sha(&disk), before, "the template's disk is unchanged");
    // Its disk is read-only now, and it cannot stop being a template or go while clones exist.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
    };
    assert_eq!(mode(&disk) & 0o222, 0, "read-only");
    let err = h.fails(&["vm", "set", "gold", "--template", "off"]);
    assert!(err.contains("has linked clones (c1, c2)"), "{err}");
    let err = h.fails(&["vm", "delete", "gold"]);
    assert!(err.contains("has linked clones"), "{err}");
    // A full clone stands alone.
    let v = h.json(&["vm", "clone", "gold", "full", "--json"]);
    let own = v["disks"][0]["path"].as_str().unwrap().to_string();
    let info = h.json(&["disk", "inspect", &own, "--json"]);
    assert_eq!(info["type"], "dynamic", "{info}");
    session(&h, "full", "f", "GOLD", None);
    for c in ["c1", "c2"] {
        h.ok(&["vm", "delete", c, "--delete-disks"]);
    }
    h.ok(&["vm", "set", "gold", "--template", "off"]);
    assert_ne!(mode(&disk) & 0o200, 0, "writable again");
    let err = h.fails(&["vm", "clone", "gold", "full"]);
    assert!(err.contains("a VM named 'full' already exists"), "{err}");
}

#[test]
fn a_running_vm_is_exported_and_imported_elsewhere_as_a_copy() {
    let h = Host::new();
    let disk = h.home().join("ex.vhd");
    h.ok(&["disk", "create", &s(&disk), "--size", "16M"]);
    let g = console_guest(&h, "export");
    let v = vm_create(&h, "e", &g, &["--disk", &s(&disk), "--nic", "virtio"]);
    let mac = v["nics"][0]["mac"].clone();
    h.ok(&["vm", "start", "e"]);
    h.wait_console("e", "READY", T);
    assert_eq!(h.says("e", "w", &write("EXPO")), "ok");
    let out = h.home().join("export-e");
    h.ok(&["vm", "export", "e", &s(&out)]);
    assert_eq!(h.state("e"), "running", "exported without stopping");
    assert!(out.join("manifest.json").exists() && out.join("vm.toml").exists());
    assert!(list(&h, "e").is_empty(), "the export's checkpoint is gone");
    let err = h.fails(&["vm", "export", "e", &s(&out)]);
    assert!(err.contains("is not empty"), "{err}");

    // A damaged copy of the export is refused by the file's name; nothing is made.
    let other = Host::new();
    let bad = other.home().join("bad-export");
    std::fs::create_dir_all(bad.join("disks")).unwrap();
    for f in files(&out) {
        std::fs::copy(out.join(&f), bad.join(&f)).unwrap();
    }
    let vhd = files(&bad)
        .into_iter()
        .find(|f| f.ends_with(".vhd"))
        .unwrap();
    let len = std::fs::metadata(bad.join(&vhd)).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(bad.join(&vhd))
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = other.fails(&["vm", "import", &s(&bad)]);
    assert!(
        err.contains("is damaged or incomplete") && err.contains(&vhd),
        "{err}"
    );
    std::fs::remove_file(bad.join("manifest.json")).unwrap();
    let err = other.fails(&["vm", "import", &s(&bad)]);
    assert!(err.contains("manifest.json is missing"), "{err}");
    assert!(other
        .json(&["vm", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());

    // Imported as a copy on another data folder: new MACs, its own disk, the data there.
    let v = other.json(&["vm", "import", &s(&out), "--json"]);
    assert_eq!(v["name"], "e");
    assert_ne!(v["nics"][0]["mac"], mac, "a copy gets new MACs");
    let own = v["disks"][0]["path"].as_str().unwrap();
    assert!(own.starts_with(&s(other.home())), "{own}");
    session(&other, "e", "i", "EXPO", None);
    h.ok(&["vm", "stop", "e"]);
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            out.extend(files(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out
}
