//! Interoperability with real peers: qemu-img/qemu-io (dynamic and fixed disks), libvhdi's
//! vhdiinfo/vhdimount (differencing chains, which qemu cannot read), and the files written by
//! Windows and qemu kept in `crates/testdata/interop/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_vhd::ops::convert::{self, Source, Target};
use strata_vhd::ops::progress::Silent;
use strata_vhd::{Disk, NewDisk, OpenOptions};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (install qemu-utils and libvhdi-utils)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A decompressed copy of an interop file (they live in `crates/testdata/interop/`).
fn interop(name: &str) -> PathBuf {
    strata_testdata::interop(name)
}

fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(disk.size()).unwrap()];
    disk.read_at(&mut buf, 0).unwrap();
    buf
}

/// Deterministic bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + usize::from(seed) * 13) % 251).unwrap() ^ seed)
        .collect()
}

#[test]
fn qemu_written_disks_read_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("dyn.vhd", vec![]),
        ("fixed.vhd", vec!["-o", "subformat=fixed"]),
    ] {
        let p = dir.path().join(name);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc"])
            .args(&extra)
            .arg(&p)
            .arg("24M"));
        run(Command::new("qemu-io")
            .args([
                "-f",
                "vpc",
                "-c",
                "write -P 0x5a 1M 3M",
                "-c",
                "write -P 0x11 9437696 4096",
                "-c",
                "write -P 0x7e 20M 512",
            ])
            .arg(&p));
        let raw = dir.path().join(format!("{name}.qemu.raw"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(&p)
            .arg(&raw));
        let ours = read_all(&Disk::open(&p, OpenOptions::read()).unwrap());
        let theirs = std::fs::read(&raw).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: size");
        assert!(
            ours == theirs,
            "{name}: contents differ from qemu's reading"
        );
        assert_eq!(ours[1 << 20], 0x5a);
        // And Strata can write into qemu's file; qemu reads our writes.
        let d = Disk::open(&p, OpenOptions::write()).unwrap();
        d.write_at(&[0x33; 5000], 15 << 20).unwrap();
        d.close().unwrap();
        let out = run(Command::new("qemu-io")
            .args([
                "-f",
                "vpc",
                "-c",
                "read -P 0x33 15M 5000",
                "-c",
                "read -P 0x5a 1M 3M",
            ])
            .arg(&p));
        assert!(!out.contains("Pattern verification failed"), "{out}");
        assert!(strata_vhd::ops::check::check(&p, false).unwrap().ok());
    }
}

#[test]
fn strata_disks_read_identically_by_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut data = vec![0u8; 12 << 20];
    data[..3 << 20].copy_from_slice(&pattern(3 << 20, 1));
    data[(7 << 20) + 512..(7 << 20) + 4608].copy_from_slice(&pattern(4096, 2));
    std::fs::write(&raw, &data).unwrap();
    let src = Source::open(&raw).unwrap();
    for (name, t) in [
        ("d.vhd", convert::dynamic()),
        ("f.vhd", Target::Vhd(NewDisk::Fixed)),
        (
            "s.vhd",
            Target::Vhd(NewDisk::Dynamic {
                block_size: 512 * 1024,
            }),
        ),
    ] {
        let p = dir.path().join(name);
        convert::convert(&src, &p, t, &Silent).unwrap();
        run(Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "vpc"])
            .arg(&raw)
            .arg(&p));
        // (`-f vpc`: qemu probes only offset 0, where a fixed disk has no footer copy.)
        let info = run(Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(&p));
        assert!(
            info.contains(&format!("\"virtual-size\": {}", 12 << 20)),
            "{info}"
        );
    }
    // Zero blocks are not allocated: 3 MiB of data + 1 block near 7 MiB = 3 blocks of 2 MiB.
    let d = Disk::open(dir.path().join("d.vhd"), OpenOptions::read()).unwrap();
    assert_eq!(d.allocated_blocks(), 3);
}

/// Mounts with vhdimount and returns the bytes of the disk given (libvhdi numbers the chain from
/// the base: vhdi1 is the base, the highest number the disk itself).
fn read_with_libvhdi(path: &Path, mnt: &Path) -> Vec<u8> {
    std::fs::create_dir_all(mnt).unwrap();
    run(Command::new("vhdimount").arg(path).arg(mnt));
    // vhdimount goes to the background before its FUSE mount is always in place: wait for it.
    let canon = std::fs::canonicalize(mnt).unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == canon.to_str())
    {
        assert!(
            start.elapsed().as_secs() < 20,
            "vhdimount did not mount {}",
            mnt.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let top = std::fs::read_dir(mnt)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .strip_prefix("vhdi")
                .and_then(|n| n.parse::<u32>().ok())
        })
        .max()
        .unwrap();
    let bytes = std::fs::read(mnt.join(format!("vhdi{top}")));
    let _ = Command::new("fusermount").arg("-u").arg(mnt).status();
    bytes.unwrap()
}

#[test]
fn differencing_chains_read_identically_by_libvhdi() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    strata_vhd::create(&base, 16 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    d.write_at(&pattern(6 << 20, 3), 1 << 20).unwrap();
    d.close().unwrap();
    let mid = dir.path().join("mid.vhd");
    strata_vhd::create_differencing(&mid, &base).unwrap();
    let d = Disk::open(&mid, OpenOptions::write()).unwrap();
    // Unaligned and sub-sector writes: Strata completes the 4 KiB chunk from the parent.
    d.write_at(&[0xEE; 100], (2 << 20) + 10).unwrap();
    d.write_at(&pattern(70_000, 4), (5 << 20) + 1000).unwrap();
    d.write_at(&[0; 4096], 3 << 20).unwrap(); // zeros over parent data must be recorded
    d.close().unwrap();
    let top = dir.path().join("top.vhd");
    strata_vhd::create_differencing(&top, &mid).unwrap();
    let d = Disk::open(&top, OpenOptions::write()).unwrap();
    d.write_at(&pattern(9000, 5), (12 << 20) + 300).unwrap();
    d.close().unwrap();
    let ours = read_all(&Disk::open(&top, OpenOptions::read()).unwrap());
    let info = run(Command::new("vhdiinfo").arg(&top));
    assert!(info.contains("Differential"), "{info}");
    let theirs = read_with_libvhdi(&top, &dir.path().join("mnt"));
    assert_eq!(theirs.len(), ours.len());
    let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(first, None, "libvhdi reads the chain differently");
    assert!(ours[(3 << 20)..(3 << 20) + 4096].iter().all(|&b| b == 0));
}

#[test]
fn shared_corpus_files_read_as_their_makers_meant() {
    let dir = tempfile::tempdir().unwrap();
    // qemu's ext2 disk: same bytes as qemu reads, an ext2 superblock magic at 1024+56.
    let ext2 = interop("qemu-ext2-dynamic.vhd");
    let raw = dir.path().join("ext2.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vpc", "-O", "raw"])
        .arg(&ext2)
        .arg(&raw));
    let ours = read_all(&Disk::open(&ext2, OpenOptions::read()).unwrap());
    assert!(ours == std::fs::read(&raw).unwrap());
    assert_eq!(&ours[1024 + 56..1024 + 58], &[0x53, 0xEF]);
    // Windows' fixed NTFS disk: the data is the file minus its footer; NTFS boot sector at 0 of the partition.
    let ntfs = interop("windows-ntfs-fixed.vhd");
    let d = Disk::open(&ntfs, OpenOptions::read()).unwrap();
    let file = std::fs::read(&ntfs).unwrap();
    assert!(read_all(&d) == file[..file.len() - 512]);
    assert_eq!(&file[510..512], &[0x55, 0xAA], "MBR signature");
    // qemu's file with a bad footer checksum: readable read-only, with a warning; never writable.
    let bad = interop("qemu-bad-footer-checksum.vhd");
    let d = Disk::open(&bad, OpenOptions::read()).unwrap();
    assert!(d.warnings().iter().any(|w| w.contains("checksum")));
    let copy = dir.path().join("bad.vhd");
    std::fs::copy(&bad, &copy).unwrap();
    let e = Disk::open(&copy, OpenOptions::write()).err().unwrap();
    assert!(e.to_string().contains("check --repair"), "{e}");
    let report = strata_vhd::ops::check::check(&copy, true).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(!report.repairs.is_empty());
    assert!(read_all(&Disk::open(&copy, OpenOptions::write()).unwrap()) == read_all(&d));
}

#[test]
fn windows_differencing_disk_opens_with_a_parent_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("child.vhd");
    std::fs::copy(interop("windows10-fat-differential.vhd"), &child).unwrap();
    // Without the parent: a clear error naming what was looked for.
    let e = Disk::open(&child, OpenOptions::read()).err().unwrap();
    assert!(
        e.to_string().contains("parent not found") && e.to_string().contains("fat-parent.vhd"),
        "{e}"
    );
    // A stand-in parent with the unique id the child recorded (GUID byte order, opaque to us).
    let info = strata_vhd::ops::inspect::inspect(&child).unwrap();
    let parent_info = info.parent.as_ref().unwrap();
    assert_eq!(
        parent_info.name,
        "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"
    );
    assert_eq!(parent_info.timestamp, 0);
    let parent = dir.path().join("fat-parent.vhd");
    strata_vhd::create(&parent, 4 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&parent, OpenOptions::write()).unwrap();
    d.write_at(&[0x42; 4 << 20], 0).unwrap();
    d.close().unwrap();
    set_unique_id(&parent, parent_info.uuid.0);
    let chain = Disk::open(&child, OpenOptions::read()).unwrap();
    assert!(
        chain.warnings().is_empty(),
        "parent time stamp 0 is not a warning: {:?}",
        chain.warnings()
    );
    let ours = read_all(&chain);
    let alone = Disk::open(
        &child,
        OpenOptions {
            parents: false,
            ..OpenOptions::read()
        },
    )
    .unwrap();
    let extents = alone.extents().unwrap();
    assert!(!extents.is_empty());
    // Sectors the child holds come from the child; all others from the parent.
    for (i, b) in ours.iter().enumerate() {
        let off = i as u64;
        if !extents.iter().any(|&(s, e)| off >= s && off < e) {
            assert_eq!(*b, 0x42, "byte {off} should come from the parent");
        }
    }
    // libvhdi agrees with us on this Windows chain, except in 4 KiB groups whose bitmap byte is
    // partial (Windows writes sector-granular bitmaps): there libvhdi reads the sectors after a
    // set bit from the child (its known bug); the specification, which we follow, says parent.
    let theirs = read_with_libvhdi(&child, &dir.path().join("mnt"));
    assert_eq!(theirs.len(), ours.len());
    let mut partial_groups = 0;
    for g in 0..ours.len() / 4096 {
        let (s, e) = (g as u64 * 4096, (g as u64 + 1) * 4096);
        let covered: u64 = extents
            .iter()
            .map(|&(a, b)| b.min(e).saturating_sub(a.max(s)))
            .sum();
        if covered == 0 || covered == 4096 {
            assert!(
                theirs[g * 4096..(g + 1) * 4096] == ours[g * 4096..(g + 1) * 4096],
                "group {g} differs"
            );
        } else {
            partial_groups += 1;
        }
    }
    assert!(
        partial_groups > 0,
        "the Windows file has partial bitmap bytes"
    );
}

/// Rewrites the unique id of a dynamic disk (both footer copies), keeping checksums right.
fn set_unique_id(path: &Path, id: [u8; 16]) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    for at in [0, len - 512] {
        let f = &mut bytes[at..at + 512];
        f[68..84].copy_from_slice(&id);
        let sum = strata_vhd::footer::checksum(f, 64);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}
