//! `strata disk` commands that work on files: create, inspect, check, convert, merge, compact,
//! resize, set-parent, undo.

use std::process::Command;

use serde_json::Value;

use crate::{fails, interop, json, ok, raw_image, s, same_as_raw, sh, strata};

#[test]
fn create_and_inspect_report_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a.vhd");
    ok(&["disk", "create", s(&d), "--size", "64M"]);
    let v = json(&["disk", "inspect", s(&d), "--json"]);
    for key in [
        "path",
        "type",
        "virtual_size",
        "file_size",
        "block_size",
        "allocated_blocks",
        "uuid",
        "creator_app",
        "parent",
        "chain",
        "problems",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}: {v}");
    }
    assert_eq!(v["type"], "dynamic");
    assert_eq!(v["virtual_size"], 64 << 20);
    assert_eq!(v["block_size"], 2 << 20);
    assert_eq!(v["parent"], Value::Null);
    assert_eq!(v["chain"].as_array().unwrap().len(), 1);
    // qemu agrees on the size.
    let q = sh(Command::new("qemu-img").args(["info", "-f", "vpc", "--output=json", s(&d)]));
    assert!(
        q.contains(&format!("\"virtual-size\": {}", 64 << 20)),
        "{q}"
    );
    // Fixed, with a size that is not whole MiB: created, with a warning.
    let f = dir.path().join("f.vhd");
    let out = strata(&[
        "disk",
        "create",
        s(&f),
        "--size",
        "1000K",
        "--type",
        "fixed",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 1 MiB"));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1000 * 1024 + 512);
    assert_eq!(json(&["disk", "inspect", s(&f), "--json"])["type"], "fixed");
    // Differencing.
    let c = dir.path().join("c.vhd");
    ok(&["disk", "create", s(&c), "--parent", s(&d)]);
    let v = json(&["disk", "inspect", s(&c), "--json"]);
    assert_eq!(v["type"], "differencing");
    assert_eq!(v["virtual_size"], 64 << 20);
    let parent = &v["parent"];
    assert_eq!(
        parent["uuid"],
        json(&["disk", "inspect", s(&d), "--json"])["uuid"]
    );
    for key in ["path", "uuid", "timestamp", "locators"] {
        assert!(parent.get(key).is_some(), "parent lacks {key}");
    }
    let platforms: Vec<&str> = parent["locators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["W2ru", "W2ku", "MacX"]);
    assert_eq!(v["chain"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a.vhd");
    assert!(fails(&["disk", "create", s(&d), "--size", "3000G"]).contains("2040 GiB"));
    assert!(fails(&["disk", "create", s(&d), "--size", "12X"]).contains("invalid size"));
    assert!(fails(&[
        "disk",
        "create",
        s(&d),
        "--size",
        "1M",
        "--block-size",
        "3000"
    ])
    .contains("power of two"));
    assert!(!d.exists(), "no file is left behind by a refused create");
    ok(&["disk", "create", s(&d), "--size", "8M"]);
    let before = std::fs::read(&d).unwrap();
    let e = fails(&["disk", "create", s(&d), "--size", "16M"]);
    assert!(e.contains("already exists") && e.contains("a.vhd"), "{e}");
    assert_eq!(
        std::fs::read(&d).unwrap(),
        before,
        "an existing disk is never replaced"
    );
    let missing = dir.path().join("missing.vhd");
    let e = fails(&["disk", "inspect", s(&missing)]);
    assert!(
        e.contains("missing.vhd") && e.contains("No such file"),
        "{e}"
    );
    let junk = dir.path().join("junk.vhd");
    std::fs::write(&junk, vec![0x5Au8; 100_000]).unwrap();
    let e = fails(&["disk", "inspect", s(&junk)]);
    assert!(e.contains("junk.vhd") && e.contains("not a VHD"), "{e}");
    assert!(fails(&["disk", "check", s(&junk)]).contains("no footer"));
    let tiny = dir.path().join("tiny.vhd");
    std::fs::write(&tiny, b"conectix").unwrap();
    assert!(fails(&["disk", "inspect", s(&tiny)]).contains("too small"));
}

#[test]
fn convert_round_trips_raw_and_is_quiet_in_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let data = raw_image(&raw, 16);
    let dynamic = dir.path().join("d.vhd");
    let out = strata(&["disk", "convert", s(&raw), s(&dynamic), "--type", "dynamic"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "no progress output when stderr is not a terminal"
    );
    same_as_raw(&raw, &dynamic);
    // Only blocks with data are allocated: the first 2 MiB and the one near the end.
    assert_eq!(
        json(&["disk", "inspect", s(&dynamic), "--json"])["allocated_blocks"],
        2
    );
    let fixed = dir.path().join("f.vhd");
    ok(&["disk", "convert", s(&dynamic), s(&fixed), "--type", "fixed"]);
    let back = dir.path().join("back.raw");
    ok(&["disk", "convert", s(&fixed), s(&back), "--type", "raw"]);
    assert!(std::fs::read(&back).unwrap() == data);
    assert!(
        fails(&["disk", "convert", s(&raw), s(&back), "--type", "raw"]).contains("already exists")
    );
}

#[test]
fn linked_disk_from_a_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("dev.raw");
    let data = raw_image(&raw, 8);
    let dev = sh(Command::new("losetup").args(["-f", "--show", s(&raw)]))
        .trim()
        .to_string();
    let out = dir.path().join("linked.vhd");
    let result = strata(&["disk", "convert", &dev, s(&out), "--type", "dynamic"]);
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let back = dir.path().join("back.raw");
    ok(&["disk", "convert", s(&out), s(&back), "--type", "raw"]);
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn a_device_with_a_mounted_file_system_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("fs.raw");
    std::fs::write(&raw, vec![0u8; 16 << 20]).unwrap();
    sh(Command::new("mkfs.ext4").args(["-q", "-F", s(&raw)]));
    let dev = sh(Command::new("losetup").args(["-f", "--show", s(&raw)]))
        .trim()
        .to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([&dev, s(&mnt)])
        .status()
        .unwrap()
        .success();
    let out = dir.path().join("x.vhd");
    let result = strata(&["disk", "convert", &dev, s(&out), "--type", "dynamic"]);
    if mounted {
        let _ = Command::new("umount").arg(&mnt).status();
    }
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(mounted, "could not mount the test file system");
    assert!(!result.status.success());
    let e = String::from_utf8_lossy(&result.stderr);
    assert!(e.contains("mounted") && e.contains(&dev), "{e}");
    assert!(!out.exists());
}

#[test]
fn moved_chains_reconnect_and_set_parent_checks_ids() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    let raw = dir.path().join("src.raw");
    let data = raw_image(&raw, 8);
    ok(&[
        "disk",
        "convert",
        s(&raw),
        s(&a.join("base.vhd")),
        "--type",
        "dynamic",
    ]);
    ok(&[
        "disk",
        "create",
        s(&a.join("child.vhd")),
        "--parent",
        s(&a.join("base.vhd")),
    ]);
    // Move the whole folder: the relative locator finds the parent.
    let b = dir.path().join("b");
    std::fs::rename(&a, &b).unwrap();
    ok(&["disk", "check", s(&b.join("child.vhd"))]);
    let flat = dir.path().join("flat.raw");
    ok(&[
        "disk",
        "convert",
        s(&b.join("child.vhd")),
        s(&flat),
        "--type",
        "raw",
    ]);
    assert!(std::fs::read(&flat).unwrap() == data);
    // Move the parent alone: parent not found, until set-parent.
    let elsewhere = dir.path().join("moved-base.vhd");
    std::fs::rename(b.join("base.vhd"), &elsewhere).unwrap();
    let e = fails(&["disk", "check", s(&b.join("child.vhd"))]);
    assert!(e.contains("parent not found"), "{e}");
    let other = dir.path().join("other.vhd");
    ok(&["disk", "create", s(&other), "--size", "8M"]);
    let e = fails(&["disk", "set-parent", s(&b.join("child.vhd")), s(&other)]);
    assert!(e.contains("unique id"), "{e}");
    ok(&["disk", "set-parent", s(&b.join("child.vhd")), s(&elsewhere)]);
    ok(&["disk", "check", s(&b.join("child.vhd"))]);
    let v = json(&["disk", "inspect", s(&b.join("child.vhd")), "--json"]);
    assert_eq!(
        std::fs::canonicalize(v["chain"][1].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&elsewhere).unwrap()
    );
    // --force accepts a different parent (the user takes responsibility).
    ok(&[
        "disk",
        "set-parent",
        s(&b.join("child.vhd")),
        s(&other),
        "--force",
    ]);
    ok(&["disk", "check", s(&b.join("child.vhd"))]);
}

#[test]
fn compact_merge_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("q.vhd");
    sh(Command::new("qemu-img").args(["create", "-q", "-f", "vpc", s(&d), "32M"]));
    // qemu allocates blocks even for zeros; data in one block only.
    sh(Command::new("qemu-io").args([
        "-f",
        "vpc",
        "-c",
        "write -P 0 0 16M",
        "-c",
        "write -P 0x3c 20M 64k",
        s(&d),
    ]));
    let copy = dir.path().join("orig.vhd");
    std::fs::copy(&d, &copy).unwrap();
    let v = json(&["disk", "compact", s(&d), "--json"]);
    assert!(
        v["after"].as_u64().unwrap() < v["before"].as_u64().unwrap() / 3,
        "{v}"
    );
    assert!(v["zero_blocks_dropped"].as_u64().unwrap() >= 8, "{v}");
    sh(Command::new("qemu-img").args(["compare", "-q", "-f", "vpc", "-F", "vpc", s(&copy), s(&d)]));
    ok(&["disk", "check", s(&d)]);
    // Refusals say what to do instead.
    let c = dir.path().join("c.vhd");
    ok(&["disk", "create", s(&c), "--parent", s(&d)]);
    assert!(fails(&["disk", "compact", s(&c)]).contains("merge"));
    let f = dir.path().join("f.vhd");
    ok(&["disk", "create", s(&f), "--size", "4M", "--type", "fixed"]);
    assert!(fails(&["disk", "compact", s(&f)]).contains("convert"));
    // Flatten the chain into a new disk, then merge in place (the child disappears).
    let flat = dir.path().join("flat.vhd");
    ok(&["disk", "merge", s(&c), "--to", s(&flat), "--type", "fixed"]);
    sh(Command::new("qemu-img").args([
        "compare",
        "-q",
        "-f",
        "vpc",
        "-F",
        "vpc",
        s(&copy),
        s(&flat),
    ]));
    assert!(c.exists());
    ok(&["disk", "merge", s(&c)]);
    assert!(!c.exists());
    assert!(fails(&["disk", "merge", s(&d)]).contains("not a differencing disk"));
    // Resize: grow, refuse to shrink over data, shrink when allowed and empty.
    ok(&["disk", "resize", s(&d), "--size", "1G"]);
    assert_eq!(
        json(&["disk", "inspect", s(&d), "--json"])["virtual_size"],
        1 << 30
    );
    assert!(fails(&["disk", "resize", s(&d), "--size", "16M"]).contains("--allow-shrink"));
    assert!(
        fails(&["disk", "resize", s(&d), "--size", "16M", "--allow-shrink"]).contains("holds data")
    );
    ok(&["disk", "resize", s(&d), "--size", "24M", "--allow-shrink"]);
    let out = sh(Command::new("qemu-io").args(["-f", "vpc", "-c", "read -P 0x3c 20M 64k", s(&d)]));
    assert!(!out.contains("failed"), "{out}");
    ok(&["disk", "check", s(&d)]);
}

#[test]
fn check_repairs_damaged_footers_without_touching_data() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    raw_image(&raw, 8);
    let d = dir.path().join("d.vhd");
    ok(&["disk", "convert", s(&raw), s(&d), "--type", "dynamic"]);
    // The footer at the end is destroyed: the copy at offset 0 still reads, check fails, repair fixes.
    let mut bytes = std::fs::read(&d).unwrap();
    let n = bytes.len();
    bytes[n - 512..].fill(0xEE);
    std::fs::write(&d, &bytes).unwrap();
    let v = json(&["disk", "inspect", s(&d), "--json"]);
    assert!(!v["problems"].as_array().unwrap().is_empty());
    let out = strata(&["disk", "check", s(&d), "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report["errors"].as_array().unwrap().is_empty());
    let e = fails(&["disk", "convert", s(&raw), s(&d), "--type", "dynamic"]);
    assert!(e.contains("already exists"));
    let repaired = ok(&["disk", "check", s(&d), "--repair"]);
    assert!(repaired.contains("repaired:"), "{repaired}");
    ok(&["disk", "check", s(&d)]);
    same_as_raw(&raw, &d);
    // Trailing garbage after the footer: reported, and dropped by a repair.
    let mut bytes = std::fs::read(&d).unwrap();
    let good_len = bytes.len();
    bytes.extend(vec![0x11u8; 300_000]);
    std::fs::write(&d, &bytes).unwrap();
    fails(&["disk", "check", s(&d)]);
    ok(&["disk", "check", s(&d), "--repair"]);
    ok(&["disk", "check", s(&d)]);
    assert_eq!(
        std::fs::metadata(&d).unwrap().len(),
        u64::try_from(good_len).unwrap()
    );
    same_as_raw(&raw, &d);
}

#[test]
fn undo_disks_keep_the_base_untouched_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    raw_image(&raw, 8);
    let base = dir.path().join("base.vhd");
    ok(&["disk", "convert", s(&raw), s(&base), "--type", "dynamic"]);
    let before = std::fs::read(&base).unwrap();
    ok(&["disk", "undo", "create", s(&base)]);
    let vud = dir.path().join("base.vud");
    assert!(vud.exists());
    assert_eq!(
        json(&["disk", "inspect", s(&vud), "--json"])["type"],
        "differencing"
    );
    assert!(fails(&["disk", "undo", "create", s(&base)]).contains("already exists"));
    ok(&["disk", "undo", "discard", s(&base)]);
    assert!(!vud.exists());
    assert_eq!(std::fs::read(&base).unwrap(), before);
    assert!(fails(&["disk", "undo", "commit", s(&base)]).contains("no undo disk"));
    ok(&["disk", "undo", "create", s(&base)]);
    ok(&["disk", "undo", "commit", s(&base)]);
    assert!(!vud.exists());
    same_as_raw(&raw, &base);
}

#[test]
fn the_interop_corpus_through_the_cli() {
    let win = interop("windows10-fat-differential.vhd");
    let v = json(&["disk", "inspect", s(&win), "--json"]);
    assert_eq!(v["type"], "differencing");
    assert_eq!(v["creator_app"], "win ");
    assert_eq!(
        v["parent"]["name"],
        "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"
    );
    assert_eq!(v["parent"]["path"], Value::Null);
    assert!(v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str().unwrap().contains("parent not found")));
    let e = fails(&["disk", "check", s(&win)]);
    assert!(e.contains("parent not found"), "{e}");
    let bad = interop("qemu-bad-footer-checksum.vhd");
    let e = fails(&["disk", "check", s(&bad)]);
    assert!(e.contains("checksum"), "{e}");
    let fixed = interop("windows-ntfs-fixed.vhd");
    let v = json(&["disk", "inspect", s(&fixed), "--json"]);
    assert_eq!(v["type"], "fixed");
    assert_eq!(v["virtual_size"], 4 << 20);
    ok(&["disk", "check", s(&fixed)]);
}

#[test]
fn disks_of_other_platforms_are_imported_through_qemus_drivers() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["qcow2", "vmdk", "vdi"] {
        let src = dir.path().join(format!("src.{fmt}"));
        sh(Command::new("qemu-img").args(["create", "-q", "-f", fmt, s(&src), "24M"]));
        // Data at the start, in the middle (unaligned) and at the very end; holes between.
        for (pattern, at, len) in [
            ("0x11", "0", "64k"),
            ("0x5a", "7340544", "1M"),
            ("0xc3", "25100288", "64k"),
        ] {
            let cmd = format!("write -P {pattern} {at} {len}");
            sh(Command::new("qemu-io").args(["-f", fmt, "-c", &cmd, s(&src)]));
        }
        let dst = dir.path().join(format!("from-{fmt}.vhd"));
        let out = ok(&["disk", "import", s(&src), s(&dst)]);
        assert!(out.contains(&format!("({fmt})")), "{out}");
        sh(Command::new("qemu-img").args([
            "compare",
            "-q",
            "-f",
            "vpc",
            "-F",
            fmt,
            s(&dst),
            s(&src),
        ]));
        // Holes stay holes: 3 data regions in 2 MiB blocks.
        let v = json(&["disk", "inspect", s(&dst), "--json"]);
        assert!(v["allocated_blocks"].as_u64().unwrap() <= 4, "{v}");
        ok(&["disk", "check", s(&dst)]);
    }
    // A fixed VHD, and bad input: a damaged qcow2, a missing file, an existing target.
    let src = dir.path().join("src.qcow2");
    let fixed = dir.path().join("fixed.vhd");
    ok(&["disk", "import", s(&src), s(&fixed), "--type", "fixed"]);
    sh(Command::new("qemu-img").args([
        "compare",
        "-q",
        "-f",
        "vpc",
        "-F",
        "qcow2",
        s(&fixed),
        s(&src),
    ]));
    // A damaged qcow2 (its header's version is nonsense): qemu's refusal, naming the file.
    let cut = dir.path().join("cut.qcow2");
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[4..8].copy_from_slice(&[0, 0, 0, 99]);
    std::fs::write(&cut, &bytes).unwrap();
    let dst = dir.path().join("cut.vhd");
    let err = fails(&["disk", "import", s(&cut), s(&dst)]);
    assert!(err.contains("cut.qcow2"), "{err}");
    assert!(!dst.exists(), "nothing is left behind");
    let err = fails(&["disk", "import", s(&dir.path().join("none.vmdk")), s(&dst)]);
    assert!(err.contains("none.vmdk: no such file"), "{err}");
    let err = fails(&["disk", "import", s(&src), s(&fixed)]);
    assert!(err.contains("fixed.vhd: already exists"), "{err}");
}
