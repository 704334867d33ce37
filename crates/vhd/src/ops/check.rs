//! `check`: checksums, footer copies, BAT entries, bitmaps and the parent link; and `--repair`,
//! which fixes what can be fixed without touching user data (footers, checksums, unused space at
//! the end), each repair made durable before the next.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::disk::{read_bat, read_exact_at, read_footer, read_header, Disk, OpenOptions};
use crate::error::{IoContext, Result, VhdError};
use crate::footer::{DiskType, Footer, FOOTER_SIZE};
use crate::header::{DynamicHeader, HeaderProblem, BAT_UNUSED, HEADER_SIZE};
use crate::lock::{lock, LockMode};
use crate::sparse::us;

/// Unused bytes before the footer that are reported (and dropped by a repair); smaller gaps are
/// alignment padding, which Windows leaves.
const REPORTED_GAP: u64 = 64 * 1024;

/// What `check` found and did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The disk checked.
    pub path: std::path::PathBuf,
    /// Damage: the disk fails the check.
    pub errors: Vec<String>,
    /// Worth knowing, but the disk is usable (e.g. a parent modified after the child was made).
    pub warnings: Vec<String>,
    /// Repairs made (with `--repair`).
    pub repairs: Vec<String>,
}

impl Report {
    /// True when no error was found (warnings allowed).
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Metadata facts gathered by a check, used to plan repairs.
#[derive(Default)]
struct Facts {
    file_len: u64,
    /// The footer to keep (the valid end footer, or the copy).
    footer: Option<Footer>,
    end_footer_ok: bool,
    copy_ok: bool,
    header_checksum_bad: bool,
    /// End of the last structure in use (sparse disks).
    data_end: Option<u64>,
    /// Where the footer is (or should be).
    footer_pos: u64,
}

/// Checks a disk (and its link to its parent); with `repair`, repairs it first.
pub fn check(path: &Path, repair: bool) -> Result<Report> {
    let mut report = Report {
        path: path.to_path_buf(),
        ..Report::default()
    };
    if repair {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx(path, "repair")?;
        lock(&file, LockMode::Exclusive, path, "repair")?;
        let mut scratch = Report::default();
        let facts = examine(&file, path, &mut scratch)?;
        report.repairs = fix(&file, path, &facts, &scratch)?;
    }
    let file = File::open(path).ctx(path, "check")?;
    examine(&file, path, &mut report)?;
    check_parent(path, &mut report);
    Ok(report)
}

/// Reads every structure and records problems; fails only when nothing can be understood.
fn examine(file: &File, path: &Path, report: &mut Report) -> Result<Facts> {
    let file_len = file.metadata().ctx(path, "check")?.len();
    let fr = match read_footer(file, path, file_len) {
        Ok(fr) => fr,
        Err(e) => {
            report.errors.push(e.kind.to_string());
            return Ok(Facts {
                file_len,
                ..Facts::default()
            });
        }
    };
    let end_footer_ok = fr.problems.is_empty();
    report.errors.extend(fr.problems.iter().cloned());
    let mut facts = Facts {
        file_len,
        footer: Some(fr.footer.clone()),
        end_footer_ok,
        footer_pos: fr.footer_pos,
        ..Facts::default()
    };
    if fr.footer.disk_type == DiskType::Fixed {
        facts.data_end = Some(examine_fixed(&fr.footer, fr.footer_pos, report));
    } else {
        examine_sparse(file, path, &fr.footer, &mut facts, report)?;
    }
    Ok(facts)
}

/// A fixed disk: its data must fit before the footer. Returns where the data ends.
fn examine_fixed(footer: &Footer, footer_pos: u64, report: &mut Report) -> u64 {
    if footer.current_size > footer_pos {
        report.errors.push(format!(
            "the fixed disk declares {} bytes but the file holds only {}",
            footer.current_size, footer_pos
        ));
    } else if footer.current_size < footer_pos {
        report.warnings.push(format!(
            "{} bytes between the data and the footer are not part of the disk",
            footer_pos - footer.current_size
        ));
    }
    footer.current_size
}

/// A dynamic or differencing disk: the footer copy, the dynamic header, the BAT, the bitmaps and
/// the space before the footer, in that order; stops (with the error recorded) at the first
/// structure the next ones cannot be found without.
fn examine_sparse(
    file: &File,
    path: &Path,
    footer: &Footer,
    facts: &mut Facts,
    report: &mut Report,
) -> Result<()> {
    let Some(copy_ok) = examine_copy(file, path, footer, facts.file_len, report) else {
        return Ok(());
    };
    facts.copy_ok = copy_ok;
    let (header, _) = match read_header(file, path, footer, facts.footer_pos) {
        Ok(h) => h,
        Err(e) => {
            report.errors.push(e.kind.to_string());
            return Ok(());
        }
    };
    facts.header_checksum_bad = header_checksum_bad(file, path, footer, &header, report)?;
    let (bat, data_end) = match read_bat(file, path, footer, &header, facts.footer_pos) {
        Ok(x) => x,
        Err(e) => {
            let at = e
                .offset
                .map(|o| format!(" (at byte offset {o:#x})"))
                .unwrap_or_default();
            report.errors.push(format!("{}{at}", e.kind));
            return Ok(());
        }
    };
    facts.data_end = Some(data_end);
    check_bitmaps(file, path, &header, &bat, report)?;
    // Windows aligns blocks and may leave a gap before the footer: only larger gaps are reported.
    if facts.footer_pos > data_end + REPORTED_GAP && facts.end_footer_ok {
        report.warnings.push(format!(
            "{} bytes before the footer are not used by any block (left by an interrupted write or by another tool; `check --repair` drops them)",
            facts.footer_pos - data_end
        ));
    }
    Ok(())
}

/// The footer copy at offset 0: whether it equals the footer in use. `None` (recorded as an error)
/// when the file is too short for the copy, a header and a footer.
fn examine_copy(
    file: &File,
    path: &Path,
    footer: &Footer,
    file_len: u64,
    report: &mut Report,
) -> Option<bool> {
    let mut copy = [0u8; FOOTER_SIZE];
    if file_len < 2 * FOOTER_SIZE as u64
        || read_exact_at(file, path, &mut copy, 0, "check").is_err()
    {
        report
            .errors
            .push("the file is too short to hold a footer copy, a header and a footer".into());
        return None;
    }
    let problem = match Footer::parse(&copy) {
        Ok(c) if c == *footer => return Some(true),
        Ok(_) => "the footer copy at offset 0 differs from the footer at the end",
        Err(crate::footer::FooterProblem::BadChecksum { .. }) => {
            "the footer copy at offset 0 has a wrong checksum too"
        }
        Err(_) => "the footer copy at offset 0 is missing or damaged",
    };
    report.errors.push(problem.into());
    Some(false)
}

/// Whether the dynamic header's checksum is wrong (recorded as an error; `read_header` accepts
/// such a header, with a problem that keeps the disk read-only).
fn header_checksum_bad(
    file: &File,
    path: &Path,
    footer: &Footer,
    header: &DynamicHeader,
    report: &mut Report,
) -> Result<bool> {
    let mut raw = [0u8; HEADER_SIZE];
    read_exact_at(file, path, &mut raw, footer.data_offset, "check")?;
    let Err(HeaderProblem::BadChecksum { computed, .. }) = DynamicHeader::parse(&raw) else {
        return Ok(false);
    };
    report.errors.push(format!(
        "the header checksum is {:#010x}, expected {computed:#010x}",
        header.checksum
    ));
    Ok(true)
}

/// Bitmap padding bits past the block's sectors must be clear or all set (peers differ); bits of a
/// bitmap are otherwise all valid. Reads each bitmap once.
fn check_bitmaps(
    file: &File,
    path: &Path,
    h: &DynamicHeader,
    bat: &[u32],
    report: &mut Report,
) -> Result<()> {
    let sectors = u64::from(h.block_size) / 512;
    let used = us(sectors.div_ceil(8));
    let mut buf = vec![0u8; us(h.bitmap_bytes())];
    for (i, &e) in bat.iter().enumerate() {
        if e == BAT_UNUSED {
            continue;
        }
        read_exact_at(file, path, &mut buf, u64::from(e) * 512, "check")?;
        let pad = &buf[used..];
        if !(pad.iter().all(|&b| b == 0) || pad.iter().all(|&b| b == 0xFF)) {
            report.warnings.push(format!(
                "block {i}: the padding of its sector bitmap holds stray bits"
            ));
        }
    }
    Ok(())
}

/// Makes the repairs the facts call for. Each write is synced before the next.
fn fix(file: &File, path: &Path, facts: &Facts, found: &Report) -> Result<Vec<String>> {
    let mut done = vec![];
    let Some(mut footer) = facts.footer.clone() else {
        return Ok(done);
    };
    let sync = || file.sync_data().ctx(path, "repair");
    let write = |buf: &[u8], at: u64| {
        file.write_all_at(buf, at)
            .map_err(|e| VhdError::io(e, path, "repair").at(at))
    };
    if footer.disk_type == DiskType::Fixed {
        if !facts.end_footer_ok && footer.current_size <= facts.footer_pos {
            write(&footer.to_bytes(), facts.footer_pos)?;
            sync()?;
            done.push("rewrote the footer with a correct checksum".to_string());
        }
        return Ok(done);
    }
    let Some(data_end) = facts.data_end else {
        return Ok(done);
    };
    if facts.header_checksum_bad {
        let mut raw = [0u8; HEADER_SIZE];
        read_exact_at(file, path, &mut raw, footer.data_offset, "repair")?;
        if let Err(HeaderProblem::BadChecksum { mut header, .. }) = DynamicHeader::parse(&raw) {
            write(&header.to_bytes(), footer.data_offset)?;
            sync()?;
            done.push("rewrote the dynamic header with a correct checksum".to_string());
        }
    }
    let bytes = footer.to_bytes();
    // The footer goes right after the data when the end is damaged or holds unused space.
    let unused_tail = facts.end_footer_ok && facts.footer_pos > data_end + REPORTED_GAP;
    if !facts.end_footer_ok || unused_tail {
        let at = if facts.end_footer_ok || facts.footer_pos >= facts.file_len {
            data_end
        } else {
            facts.footer_pos.max(data_end)
        };
        write(&bytes, at)?;
        sync()?;
        if facts.file_len > at + 512 {
            file.set_len(at + 512).ctx(path, "repair")?;
            sync()?;
        }
        done.push(if facts.end_footer_ok {
            format!(
                "dropped {} unused bytes before the footer",
                facts.footer_pos - data_end
            )
        } else {
            format!(
                "wrote a good footer at offset {at:#x} (from the {} footer)",
                if facts.copy_ok {
                    "copy of the"
                } else {
                    "damaged"
                }
            )
        });
    }
    if !facts.copy_ok || found.errors.iter().any(|e| e.contains("copy at offset 0")) {
        write(&bytes, 0)?;
        sync()?;
        done.push("rewrote the footer copy at offset 0".to_string());
    }
    Ok(done)
}

/// Checks the whole chain above the disk: parent found, same unique id, time stamp.
fn check_parent(path: &Path, report: &mut Report) {
    let Ok(mut disk) = Disk::open(path, OpenOptions::alone()) else {
        return;
    };
    let mut depth = 0;
    while disk.disk_type() == DiskType::Differencing {
        depth += 1;
        if depth > 255 {
            report
                .errors
                .push("the chain of parents is longer than 255 disks (a loop?)".into());
            return;
        }
        match disk.locate_parent() {
            Ok((p, warning)) => {
                report.warnings.extend(warning);
                match Disk::open(&p, OpenOptions::alone()) {
                    Ok(d) => disk = d,
                    Err(e) => {
                        report.errors.push(e.to_string());
                        return;
                    }
                }
            }
            Err(e) => {
                report.errors.push(e.to_string());
                return;
            }
        }
        if crate::disk::same_file(disk.path(), path) {
            report
                .errors
                .push("the chain of parents loops back to this disk".into());
            return;
        }
    }
}
