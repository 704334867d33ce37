//! Regression tests from a review of the VHD engine and its operations (public API only).
//! Each test names the scenario; eight of them demonstrated bugs that were then fixed (merge past
//! an odd size, differencing shrink and regrow, writes without parents, the BAT entry limit,
//! 511-byte footers in set-parent, `original_size` for libvhdi).

use std::path::{Path, PathBuf};

use strata_vhd::ops::progress::Silent;
use strata_vhd::ops::{check, compact, merge, resize, set_parent};
use strata_vhd::{create, create_differencing, Disk, NewDisk, OpenOptions};

const MIB: u64 = 1 << 20;

/// A canonical temporary folder (so that paths found through locators compare equal).
struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().expect("temporary folder");
        let path = std::fs::canonicalize(tmp.path()).expect("canonical temporary folder");
        Dir { _tmp: tmp, path }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 7).to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn write(path: &Path, data: &[u8], off: u64) {
    let d = Disk::open(path, OpenOptions::write()).expect("open for writing");
    d.write_at(data, off).expect("write");
    d.close().expect("close");
}

fn read_all(path: &Path) -> Vec<u8> {
    let d = Disk::open(path, OpenOptions::read()).expect("open for reading");
    let mut buf = vec![0u8; usize::try_from(d.size()).unwrap()];
    d.read_at(&mut buf, 0).expect("read");
    buf
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    assert_eq!(a.len(), b.len(), "sizes differ");
    a.iter().zip(b).position(|(x, y)| x != y)
}

// A disk whose size is not a multiple of 4 KiB: a write of its last sector is widened to
// a whole 4 KiB bitmap byte, so the child "holds" sectors past its virtual size. `extents()`
// reports them and `merge_into_parent` then reads past the end of the child: OutOfRange, and the
// chain can never be merged (undo commit fails the same way).
#[test]
fn merge_child_whose_size_is_not_a_multiple_of_4k() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    let size = MIB + 512;
    create(&base, size, NewDisk::dynamic()).unwrap();
    write(&base, &pattern(usize::try_from(size).unwrap(), 1), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    write(&child, &[0xAB; 512], size - 512);
    let before = read_all(&child);
    merge::merge_into_parent(&child, &Silent).expect("merge");
    assert_eq!(first_difference(&read_all(&base), &before), None);
}

// The same with a 4 KiB-aligned size: shrinking a differencing disk keeps the block
// that straddles the new end with its bitmap bits past it, so `extents()` again reaches past the
// virtual size and the merge fails with OutOfRange.
#[test]
fn merge_child_shrunk_inside_a_block() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 8 * MIB, NewDisk::dynamic()).unwrap();
    write(&base, &pattern(8 << 20, 20), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    write(&child, &pattern(4096, 21), 4096);
    // The guest wipes everything past 5 MiB: zeros recorded over the parent's data.
    write(&child, &vec![0u8; 3 << 20], 5 * MIB);
    resize::resize(&child, 5 * MIB, true).unwrap();
    let before = read_all(&child);
    merge::merge_into_parent(&child, &Silent).expect("merge");
    let after = read_all(&base);
    assert_eq!(first_difference(&after[..5 << 20], &before), None);
}

// `set_parent` put the new locators at `file length - 512`, assuming a 512-byte
// footer; with a 511-byte footer (Virtual PC before 2004, which `Disk::open` accepts, also for
// writing) the first locator byte overwrites the last byte of the last block's data.
#[test]
fn set_parent_with_a_511_byte_footer_keeps_the_data() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 4 * MIB, NewDisk::dynamic()).unwrap();
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    write(&child, &pattern(4096, 22), 2 * MIB - 4096); // the last chunk of block 0, before the footer
    let before = read_all(&child);
    // Drop the footer's last byte (reserved, zero): a 511-byte footer.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&child)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 1).unwrap();
    drop(f);
    assert_eq!(first_difference(&read_all(&child), &before), None);
    set_parent::set_parent(&child, &base, false).unwrap();
    assert_eq!(first_difference(&read_all(&child), &before), None);
}

// Shrinking a differencing disk dropped its blocks past the new end even when they hold
// zeros that hide the parent's data; growing it again then shows the parent's old bytes in the
// new space instead of zeros.
#[test]
fn differencing_shrink_then_grow_reads_zeros() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 8 * MIB, NewDisk::dynamic()).unwrap();
    write(&base, &pattern(8 << 20, 2), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    write(&child, &vec![0u8; 4 << 20], 4 * MIB); // the guest wipes the second half
    resize::resize(&child, 4 * MIB, true).expect("shrink: the part cut off reads as zeros");
    resize::resize(&child, 8 * MIB, false).expect("grow");
    let after = read_all(&child);
    let bad = after[4 << 20..].iter().position(|&b| b != 0);
    assert_eq!(bad, None, "grown space shows the parent's data");
}

// A differencing disk opened for writing without its parents: a write that covers
// part of a 4 KiB chunk completes the chunk with zeros instead of the parent's bytes, and an
// all-zero write to a block the parent holds is dropped. Either such an open must refuse
// writes, or the chain must read the same as with the parents open.
#[test]
fn differencing_write_without_parents_keeps_the_chain() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 4 * MIB, NewDisk::dynamic()).unwrap();
    write(&base, &pattern(4 << 20, 3), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    let opts = OpenOptions {
        write: true,
        lock: true,
        parents: false,
    };
    let Ok(d) = Disk::open(&child, opts) else {
        return; // refusing to open a differencing disk for writing without its parents is fine
    };
    let r1 = d.write_at(&[0xEE; 512], 0);
    let r2 = d.write_at(&[0u8; 4096], 2 * MIB + 8192); // zeros over the parent's data, block 1
    d.close().unwrap();
    let mut expected = pattern(4 << 20, 3);
    if r1.is_ok() {
        expected[..512].fill(0xEE);
    }
    if r2.is_ok() {
        expected[(2 << 20) + 8192..(2 << 20) + 12288].fill(0);
    }
    let got = read_all(&child);
    assert_eq!(
        first_difference(&got[..4096], &expected[..4096]),
        None,
        "chunk completed with zeros"
    );
    assert_eq!(
        first_difference(&got, &expected),
        None,
        "zero write dropped"
    );
}

// Growing a dynamic disk with small blocks past MAX_BAT_ENTRIES (2^23) wrote a header
// that `Disk::open` refuses ("more than 8388608 BAT entries"): the disk and its data become
// unreadable. Resize must refuse such a size (or the limit must be raised consistently).
#[test]
fn grow_past_the_bat_entry_limit_keeps_the_disk_openable() {
    let dir = Dir::new();
    let p = dir.join("small-blocks.vhd");
    create(&p, 32 * MIB, NewDisk::Dynamic { block_size: 4096 }).unwrap();
    write(&p, &pattern(8192, 4), 0);
    // 40 GiB / 4 KiB = 10 485 760 entries > 2^23.
    let grown = resize::resize(&p, 40 << 30, false);
    let d = Disk::open(&p, OpenOptions::read());
    assert!(
        d.is_ok(),
        "resize returned {grown:?}, and now the disk cannot be opened: {:?}",
        d.err()
    );
    let mut buf = vec![0u8; 8192];
    d.unwrap().read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, pattern(8192, 4));
}

// `create` accepted a size/block size pair whose BAT exceeds MAX_BAT_ENTRIES, leaving a
// file nothing (including Strata) can open.
#[test]
fn create_refuses_what_open_refuses() {
    let dir = Dir::new();
    let p = dir.join("big.vhd");
    if create(&p, 64 << 30, NewDisk::Dynamic { block_size: 4096 }).is_ok() {
        Disk::open(&p, OpenOptions::read()).expect("a disk `create` made must open");
    }
}

// `resize` changed `current_size` but left `original_size` at the creation size.
// libvhdi (vhdiinfo/vhdimount, a listed peer) takes the media size from `original_size`, so after
// a grow it shows (and vhdimount serves) only the old size: everything written past it is
// invisible to that peer (setting `original_size` too on resize keeps it right).
#[test]
fn libvhdi_sees_the_size_after_a_resize() {
    let dir = Dir::new();
    let p = dir.join("grown.vhd");
    create(&p, MIB, NewDisk::dynamic()).unwrap();
    resize::resize(&p, 3 * MIB, false).unwrap();
    write(&p, &[0xCD; 100], 2 * MIB + 5);
    let out = std::process::Command::new("vhdiinfo").arg(&p).output();
    let Ok(out) = out else {
        eprintln!("vhdiinfo not installed: skipped");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("({} bytes)", 3 * MIB)),
        "vhdiinfo sees another size:\n{text}"
    );
}

// ---- scenarios from the review that pass (regression tests) ----

#[test]
fn merge_into_smaller_fixed_parent() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, MIB, NewDisk::Fixed).unwrap();
    write(&base, &pattern(1 << 20, 5), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    resize::resize(&child, 3 * MIB + 4096, false).unwrap();
    write(&child, &pattern(10_000, 6), MIB - 3000);
    write(&child, &pattern(600, 7), 3 * MIB - 88);
    let before = read_all(&child);
    merge::merge_into_parent(&child, &Silent).unwrap();
    assert!(!child.exists());
    assert_eq!(first_difference(&read_all(&base), &before), None);
    assert!(check::check(&base, false).unwrap().ok());
}

#[test]
fn merge_into_smaller_dynamic_parent_with_other_block_size() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 3 * MIB, NewDisk::Dynamic { block_size: 4096 }).unwrap();
    write(&base, &pattern(3 << 20, 8), 0);
    let mid = dir.join("mid.vhd");
    create_differencing(&mid, &base).unwrap();
    write(&mid, &pattern(5000, 9), 2 * MIB + 100);
    let child = dir.join("child.vhd");
    create_differencing(&child, &mid).unwrap();
    resize::resize(&child, 5 * MIB, false).unwrap();
    write(&child, &pattern(1 << 20, 10), 3 * MIB - 1000);
    write(&child, &[0; 300], 700);
    let before = read_all(&child);
    merge::merge_into_parent(&child, &Silent).unwrap();
    assert_eq!(first_difference(&read_all(&mid), &before), None);
    merge::merge_into_parent(&mid, &Silent).unwrap();
    assert_eq!(first_difference(&read_all(&base), &before), None);
}

#[test]
fn set_parent_to_a_parent_with_another_block_size() {
    let dir = Dir::new();
    let a = dir.join("a.vhd");
    create(&a, 4 * MIB, NewDisk::Dynamic { block_size: 4096 }).unwrap();
    write(&a, &pattern(4 << 20, 11), 0);
    let child = dir.join("child.vhd");
    create_differencing(&child, &a).unwrap();
    write(&child, &pattern(3000, 12), MIB + 5);
    // A copy of the parent with 2 MiB blocks and the same unique id is a fine new parent.
    let b = dir.join("b.vhd");
    let before = read_all(&child);
    strata_vhd::ops::convert::convert(
        &strata_vhd::ops::convert::Source::open(&a).unwrap(),
        &b,
        strata_vhd::ops::convert::dynamic(),
        &Silent,
    )
    .unwrap();
    std::fs::remove_file(&a).unwrap();
    set_parent::set_parent(&child, &b, true).unwrap();
    assert_eq!(first_difference(&read_all(&child), &before), None);
    write(&child, &[0x11; 100], 3 * MIB - 50);
    let mut exp = before;
    exp[(3 << 20) - 50..(3 << 20) + 50].fill(0x11);
    assert_eq!(first_difference(&read_all(&child), &exp), None);
}

#[test]
fn resize_then_write_dynamic_and_differencing() {
    let dir = Dir::new();
    let base = dir.join("base.vhd");
    create(&base, 3 * MIB + 512, NewDisk::dynamic()).unwrap();
    write(&base, &pattern(3 << 20, 13), 512);
    let mut model = read_all(&base);
    resize::resize(&base, 9 * MIB, false).unwrap();
    model.resize(9 << 20, 0);
    assert_eq!(first_difference(&read_all(&base), &model), None);
    write(&base, &pattern(2 << 20, 14), 3 * MIB - 4096);
    model[(3 << 20) - 4096..(5 << 20) - 4096].copy_from_slice(&pattern(2 << 20, 14));
    assert_eq!(first_difference(&read_all(&base), &model), None);
    let child = dir.join("child.vhd");
    create_differencing(&child, &base).unwrap();
    resize::resize(&child, 20 * MIB, false).unwrap();
    model.resize(20 << 20, 0);
    write(&child, &pattern(3 << 20, 15), 8 * MIB + 77);
    model[(8 << 20) + 77..(11 << 20) + 77].copy_from_slice(&pattern(3 << 20, 15));
    assert_eq!(first_difference(&read_all(&child), &model), None);
    assert!(check::check(&child, false).unwrap().ok());
}

#[test]
fn compact_keeps_the_data_of_an_odd_sized_disk() {
    let dir = Dir::new();
    let p = dir.join("d.vhd");
    create(
        &p,
        5 * MIB + 1024,
        NewDisk::Dynamic {
            block_size: 1 << 20,
        },
    )
    .unwrap();
    write(&p, &pattern(3 << 20, 16), 2 * MIB + 1024);
    write(&p, &vec![0u8; 1 << 20], 3 * MIB);
    let before = read_all(&p);
    let c = compact::compact(&p, &Silent).unwrap();
    assert_eq!(c.zero_blocks_dropped, 1);
    assert_eq!(first_difference(&read_all(&p), &before), None);
    assert!(check::check(&p, false).unwrap().ok());
}

#[test]
fn repair_of_an_unused_tail_keeps_the_data() {
    let dir = Dir::new();
    let p = dir.join("d.vhd");
    create(&p, 8 * MIB, NewDisk::dynamic()).unwrap();
    write(&p, &pattern(1 << 20, 17), 0);
    let before = read_all(&p);
    // Blocks allocated by a writer that died before its flush: unused space before the footer.
    let mut bytes = std::fs::read(&p).unwrap();
    let footer = bytes.split_off(bytes.len() - 512);
    bytes.extend(pattern(4 << 20, 18));
    bytes.extend(footer);
    std::fs::write(&p, &bytes).unwrap();
    let r = check::check(&p, true).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(first_difference(&read_all(&p), &before), None);
    write(&p, &pattern(100, 19), 7 * MIB);
    let mut exp = before;
    exp[7 << 20..(7 << 20) + 100].copy_from_slice(&pattern(100, 19));
    assert_eq!(first_difference(&read_all(&p), &exp), None);
}
