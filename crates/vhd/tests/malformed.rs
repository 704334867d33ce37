//! Malformed files, built by damaging valid disks made with the public API. Every one must be
//! refused by `Disk::open` with an error naming the file and the problem (or, where the policy is
//! lenient — a damaged footer or header checksum, a footer read from its copy — be opened
//! read-only with warnings), must never be opened for writing, must not make `inspect` or `check`
//! panic, and must make `check` report an error. The seed corpus of the fuzz target
//! (`fuzz/seeds/parse_vhd`) goes through the same code as the fuzz target.

#[path = "../../../fuzz/src/lib.rs"]
mod exercise;

use std::path::{Path, PathBuf};

use strata_vhd::footer::{checksum, Footer, FOOTER_SIZE};
use strata_vhd::header::{DynamicHeader, BAT_UNUSED, HEADER_SIZE};
use strata_vhd::ops::set_parent::set_parent;
use strata_vhd::{create, create_differencing, Disk, DiskType, NewDisk, OpenOptions};

const MIB: u64 = 1 << 20;
const BLOCK: u32 = 4096;
/// Offset of the header checksum in the header.
const HEADER_CHECKSUM_AT: usize = 36;

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

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_data(path: &Path, writes: &[(u64, usize)]) {
    let disk = Disk::open(path, OpenOptions::write()).expect("open the new disk for writing");
    for (seed, &(off, len)) in (1u8..).zip(writes) {
        disk.write_at(&pattern(len, seed), off).expect("write");
    }
    disk.close().expect("close");
}

/// A 1 MiB dynamic disk with 4 KiB blocks (256 BAT entries) and data in blocks 0, 1, 5 and 255.
fn dynamic(dir: &Dir, name: &str) -> PathBuf {
    let path = dir.join(name);
    create(&path, MIB, NewDisk::Dynamic { block_size: BLOCK }).expect("create a dynamic disk");
    write_data(
        &path,
        &[
            (0, 4096),
            (4096 + 512, 512),
            (5 * 4096, 4096),
            (MIB - 4096, 4096),
        ],
    );
    path
}

/// A 64 KiB fixed disk with some data.
fn fixed(dir: &Dir, name: &str) -> PathBuf {
    let path = dir.join(name);
    create(&path, 64 << 10, NewDisk::Fixed).expect("create a fixed disk");
    write_data(&path, &[(0, 4096), (60 << 10, 4096)]);
    path
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read the file")
}

fn save(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write the file");
}

fn at(x: u64) -> usize {
    usize::try_from(x).expect("64-bit")
}

fn footer_of(bytes: &[u8]) -> Footer {
    let end =
        <&[u8; FOOTER_SIZE]>::try_from(&bytes[bytes.len() - FOOTER_SIZE..]).expect("512 bytes");
    Footer::parse(end).expect("a valid footer at the end")
}

/// Changes the footer, keeping its checksum right, at the end and (sparse disks) in the copy at 0.
fn edit_footer(path: &Path, change: impl FnOnce(&mut Footer)) {
    let mut bytes = read(path);
    let mut footer = footer_of(&bytes);
    let sparse = footer.disk_type != DiskType::Fixed;
    change(&mut footer);
    let fb = footer.to_bytes();
    let n = bytes.len();
    bytes[n - FOOTER_SIZE..].copy_from_slice(&fb);
    if sparse {
        bytes[..FOOTER_SIZE].copy_from_slice(&fb);
    }
    save(path, &bytes);
}

/// Where the dynamic header is.
fn header_pos(bytes: &[u8]) -> usize {
    at(footer_of(bytes).data_offset)
}

fn header_of(bytes: &[u8]) -> DynamicHeader {
    let h = header_pos(bytes);
    let raw = <&[u8; HEADER_SIZE]>::try_from(&bytes[h..h + HEADER_SIZE]).expect("1024 bytes");
    DynamicHeader::parse(raw).expect("a valid header")
}

/// Changes the header, keeping its checksum right.
fn edit_header(path: &Path, change: impl FnOnce(&mut DynamicHeader)) {
    let mut bytes = read(path);
    let pos = header_pos(&bytes);
    let mut header = header_of(&bytes);
    change(&mut header);
    bytes[pos..pos + HEADER_SIZE].copy_from_slice(&header.to_bytes());
    save(path, &bytes);
}

/// Changes raw bytes of the header, then recomputes its checksum.
fn edit_header_bytes(path: &Path, change: impl FnOnce(&mut [u8])) {
    let mut bytes = read(path);
    let pos = header_pos(&bytes);
    let raw = &mut bytes[pos..pos + HEADER_SIZE];
    change(raw);
    let sum = checksum(raw, HEADER_CHECKSUM_AT);
    raw[HEADER_CHECKSUM_AT..HEADER_CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
    save(path, &bytes);
}

fn bat_entry(path: &Path, i: usize) -> u32 {
    let bytes = read(path);
    let t = at(header_of(&bytes).table_offset) + 4 * i;
    u32::from_be_bytes(bytes[t..t + 4].try_into().expect("4 bytes"))
}

fn set_bat_entry(path: &Path, i: usize, value: u32) {
    let mut bytes = read(path);
    let t = at(header_of(&bytes).table_offset) + 4 * i;
    bytes[t..t + 4].copy_from_slice(&value.to_be_bytes());
    save(path, &bytes);
}

/// What opening a damaged file may do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    /// `Disk::open` refuses it.
    Refused,
    /// Readable read-only, with warnings.
    Lenient,
    /// Either (truncations, where it depends on what is left).
    Either,
}

fn names_any(text: &str, problem: &[&str]) -> bool {
    let text = text.to_lowercase();
    problem.iter().any(|p| text.contains(&p.to_lowercase()))
}

/// The checks every damaged file must pass; `problem` lists words of which the error (or a
/// warning) must contain one. Panics with every failure found.
fn assert_damaged(path: &Path, policy: Policy, problem: &[&str]) {
    report(damaged(path, &[path], policy, problem));
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Like [`assert_damaged`], returning the failures; `at_fault` are the files an error may name
/// (the damaged link of a chain may be a parent of `path`).
fn damaged(path: &Path, at_fault: &[&Path], policy: Policy, problem: &[&str]) -> Vec<String> {
    let mut failures = vec![];
    let mut fail = |msg: String| failures.push(msg);
    let shown = path.display().to_string();
    let names_file = |msg: &str| {
        at_fault
            .iter()
            .any(|p| msg.contains(&p.display().to_string()))
    };
    let outcome = exercise::exercise(path);
    exercise::parse_structures(&read(path));

    match Disk::open(path, OpenOptions::read()) {
        Err(e) => {
            let msg = e.to_string();
            if policy == Policy::Lenient {
                fail(format!(
                    "{shown}: refused although the policy is lenient: {msg}"
                ));
            }
            if !names_file(&msg) {
                fail(format!("{shown}: the error does not name the file: {msg}"));
            }
            if !names_any(&msg, problem) {
                fail(format!(
                    "{shown}: the error does not name the problem ({problem:?}): {msg}"
                ));
            }
        }
        Ok(disk) => {
            let warnings = disk.warnings().join("; ");
            if policy == Policy::Refused {
                fail(format!(
                    "{shown}: opened although damaged (warnings: [{warnings}])"
                ));
            } else if warnings.is_empty() {
                fail(format!("{shown}: opened without a warning"));
            } else if policy == Policy::Lenient && !names_any(&warnings, problem) {
                fail(format!(
                    "{shown}: the warnings do not name the problem ({problem:?}): {warnings}"
                ));
            }
        }
    }

    match Disk::open(path, OpenOptions::write()) {
        Ok(disk) => fail(format!(
            "{shown}: opened for writing although damaged (warnings: {:?})",
            disk.warnings()
        )),
        Err(e) => {
            let msg = e.to_string();
            if !names_file(&msg) {
                fail(format!(
                    "{shown}: the write-open error does not name the file: {msg}"
                ));
            }
        }
    }

    match &outcome.check {
        Ok((errors, _)) if errors.is_empty() => {
            fail(format!("{shown}: check found no error ({outcome:?})"))
        }
        Ok(_) => {}
        Err(e) => fail(format!(
            "{shown}: check failed instead of reporting the damage: {e}"
        )),
    }
    if let Err(e) = &outcome.inspect {
        if !names_file(e) {
            fail(format!(
                "{shown}: the inspect error does not name the file: {e}"
            ));
        }
    }
    failures
}

// ---- Footer ----------------------------------------------------------------------------------

#[test]
fn bad_footer_checksum_fixed_is_read_only_with_a_warning() {
    let dir = Dir::new();
    let path = fixed(&dir, "f.vhd");
    let mut bytes = read(&path);
    let n = bytes.len();
    bytes[n - FOOTER_SIZE + 64] ^= 0x01; // the checksum field itself
    save(&path, &bytes);
    assert_damaged(&path, Policy::Lenient, &["checksum"]);
}

#[test]
fn bad_footer_checksum_dynamic_is_read_only_with_a_warning() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let mut bytes = read(&path);
    let n = bytes.len();
    bytes[n - FOOTER_SIZE + 24] ^= 0x01; // the time stamp, checksum left stale
    save(&path, &bytes);
    assert_damaged(&path, Policy::Lenient, &["checksum"]);
    // The data is still there.
    let disk = Disk::open(&path, OpenOptions::read()).expect("lenient open");
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 0).expect("read");
    assert_eq!(buf, pattern(4096, 1));
}

#[test]
fn no_cookie_fixed_is_not_a_vhd() {
    let dir = Dir::new();
    let path = fixed(&dir, "f.vhd");
    let mut bytes = read(&path);
    let n = bytes.len();
    bytes[n - FOOTER_SIZE..n - FOOTER_SIZE + 8].copy_from_slice(b"notavhd!");
    save(&path, &bytes);
    assert_damaged(&path, Policy::Refused, &["not a VHD"]);
}

#[test]
fn no_cookie_anywhere_dynamic_is_not_a_vhd() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let mut bytes = read(&path);
    let n = bytes.len();
    bytes[n - FOOTER_SIZE..n - FOOTER_SIZE + 8].copy_from_slice(b"notavhd!");
    bytes[..8].copy_from_slice(b"notavhd!");
    save(&path, &bytes);
    assert_damaged(&path, Policy::Refused, &["not a VHD"]);
}

#[test]
fn no_cookie_at_the_end_dynamic_uses_the_copy() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let mut bytes = read(&path);
    let n = bytes.len();
    bytes[n - FOOTER_SIZE..n - FOOTER_SIZE + 8].fill(0);
    save(&path, &bytes);
    assert_damaged(&path, Policy::Lenient, &["no footer", "copy"]);
}

// ---- Header ----------------------------------------------------------------------------------

#[test]
fn bad_header_checksum_is_read_only_with_a_warning() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let mut bytes = read(&path);
    let h = header_pos(&bytes);
    bytes[h + HEADER_CHECKSUM_AT + 3] ^= 0x01;
    save(&path, &bytes);
    assert_damaged(&path, Policy::Lenient, &["header checksum"]);
}

#[test]
fn no_header_cookie_is_refused() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let mut bytes = read(&path);
    let h = header_pos(&bytes);
    bytes[h..h + 8].copy_from_slice(b"notspars");
    save(&path, &bytes);
    assert_damaged(&path, Policy::Refused, &["cxsparse", "dynamic header"]);
}

#[test]
fn block_size_not_a_power_of_two_is_refused() {
    for size in [3000u32, 4097, 3 << 20, 0, u32::MAX] {
        let dir = Dir::new();
        let path = dynamic(&dir, "d.vhd");
        edit_header(&path, |h| h.block_size = size);
        assert_damaged(&path, Policy::Refused, &["block size"]);
    }
}

#[test]
fn max_table_entries_ffffffff_is_refused() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    edit_header(&path, |h| h.max_table_entries = u32::MAX);
    assert_damaged(&path, Policy::Refused, &["BAT entries"]);
}

#[test]
fn too_few_bat_entries_for_the_size_is_refused() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    edit_header(&path, |h| h.max_table_entries = 10);
    assert_damaged(&path, Policy::Refused, &["too few"]);
}

#[test]
fn header_offset_past_the_end_is_refused() {
    for offset in [1 << 30, u64::MAX - 100, u64::MAX] {
        let dir = Dir::new();
        let path = dynamic(&dir, "d.vhd");
        edit_footer(&path, |f| f.data_offset = offset);
        assert_damaged(&path, Policy::Refused, &["header offset"]);
    }
    // Just short of the end: the header would overlap the footer.
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let len = std::fs::metadata(&path).expect("metadata").len();
    edit_footer(&path, |f| f.data_offset = len - 1024);
    assert_damaged(&path, Policy::Refused, &["header offset"]);
}

// ---- Huge sizes ------------------------------------------------------------------------------

#[test]
fn huge_virtual_size_dynamic_is_refused() {
    for size in [u64::MAX, u64::MAX - 511, 1 << 63, 2041 << 30] {
        let dir = Dir::new();
        let path = dynamic(&dir, "d.vhd");
        edit_footer(&path, |f| {
            f.current_size = size;
            f.original_size = size;
        });
        assert_damaged(&path, Policy::Refused, &["too few", "virtual size"]);
    }
}

#[test]
fn huge_virtual_size_fixed_is_refused() {
    for size in [u64::MAX, u64::MAX - 511, (64 << 10) + 512] {
        let dir = Dir::new();
        let path = fixed(&dir, "f.vhd");
        edit_footer(&path, |f| f.current_size = size);
        assert_damaged(&path, Policy::Refused, &["declares"]);
    }
}

// ---- BAT -------------------------------------------------------------------------------------

#[test]
fn bat_entry_outside_the_file_is_refused() {
    for entry in [0x0010_0000u32, BAT_UNUSED - 1] {
        let dir = Dir::new();
        let path = dynamic(&dir, "d.vhd");
        set_bat_entry(&path, 3, entry);
        assert_damaged(&path, Policy::Refused, &["past the end"]);
    }
    // Just past: the last block's data would run into the footer.
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let last = bat_entry(&path, 255);
    set_bat_entry(&path, 255, last + 1);
    assert_damaged(&path, Policy::Refused, &["past the end"]);
}

#[test]
fn two_bat_entries_on_the_same_block_are_refused() {
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let first = bat_entry(&path, 0);
    set_bat_entry(&path, 5, first);
    assert_damaged(&path, Policy::Refused, &["overlap"]);
    // Overlapping by one sector only.
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    let first = bat_entry(&path, 0);
    set_bat_entry(&path, 1, first + 1);
    assert_damaged(&path, Policy::Refused, &["overlap"]);
}

#[test]
fn bat_at_the_header_is_refused() {
    // The BAT starts on the header: its first entries are the "cxsparse" cookie.
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    edit_header(&path, |h| h.table_offset = 512);
    assert_damaged(&path, Policy::Refused, &["overlap", "BAT"]);
}

#[test]
fn bat_overlapping_the_header_is_refused() {
    // The BAT starts inside the header, in its reserved bytes, which hold 0xFF (unused entries):
    // every entry read is plausible, only the overlap betrays the damage.
    let dir = Dir::new();
    let path = dynamic(&dir, "d.vhd");
    edit_header(&path, |h| h.table_offset = 512 + 768);
    edit_header_bytes(&path, |raw| raw[768..].fill(0xFF));
    assert_damaged(&path, Policy::Refused, &["overlap"]);
}

#[test]
fn block_on_the_header_is_refused() {
    // A block whose bitmap and data would be the header and the BAT: writing to it would destroy
    // them.
    for sector in [0, 1] {
        let dir = Dir::new();
        let path = dynamic(&dir, "d.vhd");
        set_bat_entry(&path, 2, sector);
        assert_damaged(&path, Policy::Refused, &["overlap"]);
    }
}

// ---- Parents ---------------------------------------------------------------------------------

/// A chain base <- a <- b (differencing), all in `dir`.
fn chain(dir: &Dir) -> (PathBuf, PathBuf, PathBuf) {
    let base = dynamic(dir, "base.vhd");
    let a = dir.join("a.vhd");
    create_differencing(&a, &base).expect("create a");
    write_data(&a, &[(8192, 4096)]);
    let b = dir.join("b.vhd");
    create_differencing(&b, &a).expect("create b");
    write_data(&b, &[(12288, 4096)]);
    (base, a, b)
}

/// Makes `child` name `parent` (by absolute path and unique id only: locators cleared).
fn point_at(child: &Path, parent: &Path) {
    let parent_id = footer_of(&read(parent)).unique_id;
    edit_header(child, |h| {
        h.parent_id = parent_id;
        h.parent_name = parent.display().to_string();
        h.locators = Default::default();
    });
}

#[test]
fn a_disk_that_is_its_own_parent_is_refused() {
    let dir = Dir::new();
    let (_, a, _) = chain(&dir);
    point_at(&a, &a);
    assert_damaged(&a, Policy::Refused, &["loop"]);
}

#[test]
fn set_parent_cannot_close_a_loop() {
    let dir = Dir::new();
    let (_, a, b) = chain(&dir);
    let err = set_parent(&a, &b, true).expect_err("set_parent made a loop a -> b -> a");
    assert!(err.to_string().contains(&a.display().to_string()), "{err}");
    // Nothing was changed.
    for p in [&a, &b] {
        let disk = Disk::open(p, OpenOptions::read()).expect("the chain still opens");
        assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
    }
}

#[test]
fn a_parent_loop_a_b_a_is_refused() {
    let dir = Dir::new();
    let (_, a, b) = chain(&dir);
    // set_parent refuses to make it (see above): made by hand.
    point_at(&a, &b);
    assert_damaged(&a, Policy::Refused, &["loop"]);
    assert_damaged(&b, Policy::Refused, &["loop"]);
}

#[test]
fn a_missing_parent_is_refused() {
    let dir = Dir::new();
    let (base, a, b) = chain(&dir);
    std::fs::remove_file(&base).expect("remove base");
    let mut failures = damaged(&a, &[&a], Policy::Refused, &["parent not found"]);
    // Opening b fails on a's link: the error may name a.
    failures.extend(damaged(
        &b,
        &[&b, &a],
        Policy::Refused,
        &["parent not found"],
    ));
    report(failures);
}

#[test]
fn a_parent_with_another_id_is_refused() {
    let dir = Dir::new();
    let (base, a, _) = chain(&dir);
    edit_footer(&base, |f| f.unique_id.0[0] ^= 1);
    assert_damaged(&a, Policy::Refused, &["unique id"]);
}

// ---- Truncation ------------------------------------------------------------------------------

/// What the error about a truncated sparse disk may say.
const TRUNCATED: &[&str] = &[
    "too small",
    "not a VHD",
    "outside",
    "past the end",
    "reaches past",
];

#[test]
fn truncated_dynamic_disks() {
    let dir = Dir::new();
    let whole = read(&dynamic(&dir, "d.vhd"));
    let len = whole.len();
    let bat_end = 512 + HEADER_SIZE + 1024;
    // Cutting a single byte leaves a valid 511-byte footer (Virtual PC before 2004): not damage.
    let cuts = [
        0,
        1,
        100,
        510,
        511,
        512,
        600,
        1023,
        1024,
        1535,
        1536,
        2000,
        bat_end - 1,
        bat_end,
        bat_end + 700,
        len / 2,
        len - 4096,
        len - 512,
        len - 511,
        len - 2,
    ];
    let mut failures = vec![];
    for cut in cuts {
        let path = dir.join(format!("cut-{cut}.vhd"));
        save(&path, &whole[..cut]);
        failures.extend(damaged(&path, &[&path], Policy::Either, TRUNCATED));
    }
    report(failures);
}

#[test]
fn truncated_fixed_disks() {
    let dir = Dir::new();
    let whole = read(&fixed(&dir, "f.vhd"));
    let len = whole.len();
    let mut failures = vec![];
    for cut in [0, 1, 511, 512, 4096, len - 512, len - 100, len - 2] {
        let path = dir.join(format!("cut-{cut}.vhd"));
        save(&path, &whole[..cut]);
        failures.extend(damaged(
            &path,
            &[&path],
            Policy::Refused,
            &["too small", "not a VHD"],
        ));
    }
    report(failures);
}

#[test]
fn truncated_differencing_disk() {
    let dir = Dir::new();
    let (_, a, _) = chain(&dir);
    let whole = read(&a);
    let len = whole.len();
    let mut failures = vec![];
    for cut in [700, 1600, len / 2, len - 512] {
        let path = dir.join(format!("cut-{cut}.vhd"));
        save(&path, &whole[..cut]);
        failures.extend(damaged(&path, &[&path], Policy::Either, TRUNCATED));
    }
    report(failures);
}

// ---- The fuzz seeds --------------------------------------------------------------------------

#[test]
fn fuzz_seeds_do_not_panic() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/parse_vhd");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|e| e.expect("seed entry").path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no seed in {}", seeds.display());
    for seed in entries {
        let data = read(&seed);
        exercise::parse_structures(&data);
        // The name the fuzz target writes its inputs to (a seed may name it as its parent).
        let dir = Dir::new();
        let path = dir.join("input.vhd");
        save(&path, &data);
        let outcome = exercise::exercise(&path);
        let name = seed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let valid = ![
            "bad",
            "garbled",
            "truncated",
            "overlap",
            "out_of",
            "block_size",
            "self",
            "511",
            "differencing",
        ]
        .iter()
        .any(|w| name.contains(w));
        if valid {
            assert_eq!(
                outcome.open.as_deref().map(<[String]>::is_empty),
                Ok(true),
                "{name}: {outcome:?}"
            );
            assert!(
                matches!(&outcome.check, Ok((errors, _)) if errors.is_empty()),
                "{name}: {outcome:?}"
            );
        }
    }
}
