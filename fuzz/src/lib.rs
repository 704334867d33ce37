//! What a fuzz input (or a damaged file) is put through. None of it may panic, whatever the bytes.
//!
//! Used by the `parse_vhd` fuzz target and, through `#[path]`, by
//! `crates/vhd/tests/malformed.rs`, so that `cargo test` runs the seed corpus through the very
//! same code. Keep it free of inner attributes and of dependencies other than `strata-vhd`.

use std::path::Path;

use strata_vhd::footer::{Footer, FooterProblem, FOOTER_SIZE};
use strata_vhd::header::{DynamicHeader, HeaderProblem, HEADER_SIZE};
use strata_vhd::{locator, ops, Disk, OpenOptions};

/// Largest read done through [`Disk::read_at`] per range.
const READ_LEN: u64 = 64 * 1024;

/// What the file-level operations said.
#[derive(Debug)]
pub struct Outcome {
    /// `Disk::open` (read-only, no lock, no parents): its warnings, or the error's `Display`.
    pub open: Result<Vec<String>, String>,
    /// `inspect`: its problems, or the error's `Display`.
    pub inspect: Result<Vec<String>, String>,
    /// `check` (no repair): (errors, warnings), or the error's `Display`.
    pub check: Result<(Vec<String>, Vec<String>), String>,
}

/// Opens the file read-only without locks or parents, reads a few ranges, then inspects and
/// checks it.
pub fn exercise(path: &Path) -> Outcome {
    let alone = OpenOptions {
        write: false,
        lock: false,
        parents: false,
    };
    let open = match Disk::open(path, alone) {
        Ok(disk) => {
            read_some(&disk);
            Ok(disk.warnings().to_vec())
        }
        Err(e) => Err(e.to_string()),
    };
    let inspect = ops::inspect::inspect(path)
        .map(|info| info.problems)
        .map_err(|e| e.to_string());
    let check = ops::check::check(path, false)
        .map(|r| (r.errors, r.warnings))
        .map_err(|e| e.to_string());
    Outcome {
        open,
        inspect,
        check,
    }
}

/// Reads the start, the middle, the end and an unaligned range; a read past the end must fail.
fn read_some(disk: &Disk) {
    let size = disk.size();
    let len = size.min(READ_LEN);
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let middle = (size / 2).saturating_sub(len / 2) / 512 * 512;
    for off in [0, middle, size - len] {
        let _ = disk.read_at(&mut buf, off);
    }
    if size > 1024 {
        let n = buf.len().min(513);
        let _ = disk.read_at(&mut buf[..n], 511);
    }
    assert!(
        disk.read_at(&mut [0u8; 1], size).is_err(),
        "a read past the virtual end must fail"
    );
    assert!(
        disk.read_at(&mut [0u8; 1], u64::MAX).is_err(),
        "a read at u64::MAX must fail"
    );
    let _ = disk.range_may_have_data(0, size);
    let _ = disk.extents();
    let _ = disk.allocated_blocks();
    let _ = disk.parent_candidates();
}

/// Feeds the bytes to the parsers of the on-disk structures: the footer (first and last 512
/// bytes), the dynamic header (at 0 and 512), and the locator decoder (whole input, every code).
pub fn parse_structures(data: &[u8]) {
    let mut footer_spots = vec![0];
    if let Some(end) = data.len().checked_sub(FOOTER_SIZE) {
        footer_spots.push(end);
    }
    for at in footer_spots {
        if let Some(b) = data
            .get(at..at + FOOTER_SIZE)
            .and_then(|s| <&[u8; FOOTER_SIZE]>::try_from(s).ok())
        {
            footer_round_trip(b);
        }
    }
    for at in [0, 512] {
        if let Some(b) = data
            .get(at..at + HEADER_SIZE)
            .and_then(|s| <&[u8; HEADER_SIZE]>::try_from(s).ok())
        {
            header_round_trip(b, data);
        }
    }
    let sample = &data[..data.len().min(64 * 1024)];
    for code in [
        strata_vhd::header::PLAT_W2KU,
        strata_vhd::header::PLAT_W2RU,
        strata_vhd::header::PLAT_WI2K,
        strata_vhd::header::PLAT_WI2R,
        strata_vhd::header::PLAT_MACX,
        0,
    ] {
        if let Some(text) = locator::decode(code, sample) {
            let _ = locator::host_path(Path::new("/d"), &text);
            let _ = locator::base_name(&text);
        }
    }
}

fn footer_round_trip(b: &[u8; FOOTER_SIZE]) {
    let parsed = match Footer::parse(b) {
        Ok(f) => Some(f),
        Err(FooterProblem::BadChecksum { footer, .. }) => Some(*footer),
        Err(FooterProblem::NoCookie | FooterProblem::Invalid(_)) => None,
    };
    if let Some(mut f) = parsed {
        let _ = f.geometry.size();
        let _ = f.creator_app_str();
        let again = f.to_bytes();
        assert_eq!(
            Footer::parse(&again).as_ref(),
            Ok(&f),
            "a serialized footer must parse back"
        );
    }
}

fn header_round_trip(b: &[u8; HEADER_SIZE], data: &[u8]) {
    let parsed = match DynamicHeader::parse(b) {
        Ok(h) => Some(h),
        Err(HeaderProblem::BadChecksum { header, .. }) => Some(*header),
        Err(HeaderProblem::NoCookie | HeaderProblem::Invalid(_)) => None,
    };
    let Some(mut h) = parsed else { return };
    let _ = (h.bat_bytes(), h.bitmap_bytes());
    for loc in &h.locators {
        let _ = loc.code_str();
        let start = usize::try_from(loc.data_offset).unwrap_or(usize::MAX);
        let len = usize::try_from(loc.data_len.min(64 * 1024)).unwrap_or(0);
        if let Some(payload) = data.get(start..start.saturating_add(len)) {
            if let Some(text) = locator::decode(loc.code, payload) {
                let _ = locator::host_path(Path::new("/d"), &text);
            }
        }
    }
    let again = h.to_bytes();
    let back = DynamicHeader::parse(&again).expect("a serialized header must parse back");
    assert_eq!(
        (
            back.table_offset,
            back.max_table_entries,
            back.block_size,
            back.parent_id,
            back.locators
        ),
        (
            h.table_offset,
            h.max_table_entries,
            h.block_size,
            h.parent_id,
            h.locators
        ),
        "a serialized header must keep its fields"
    );
}
