//! `inspect`: everything in a disk's footer and header, and its chain, without changing anything
//! and without locks, so that it works on a disk in use and on a chain with a missing parent.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::disk::{Disk, OpenOptions};
use crate::error::Result;
use crate::footer::{system_time, DiskType, Geometry};
use crate::locator;
use crate::uuid_fmt::DiskId;

/// One parent locator as found in the file.
#[derive(Debug, Serialize)]
pub struct LocatorInfo {
    /// Platform code (`W2ru`, `W2ku`, `MacX` …).
    pub platform: String,
    /// The path it holds, decoded.
    pub path: Option<String>,
    /// File offset of its data.
    pub data_offset: u64,
    /// Length of its data.
    pub data_len: u32,
    /// The data-space field as stored.
    pub data_space: u32,
}

/// The parent link of a differencing disk.
#[derive(Debug, Serialize)]
pub struct ParentInfo {
    /// Where the parent was found (null when it was not).
    pub path: Option<PathBuf>,
    /// The parent name recorded in the header.
    pub name: String,
    /// The parent's unique id recorded in the child.
    pub uuid: DiskId,
    /// The parent's modification time recorded in the child (seconds since 2000-01-01).
    pub timestamp: u32,
    /// The locators.
    pub locators: Vec<LocatorInfo>,
}

/// One link of the chain.
#[derive(Debug, Serialize)]
pub struct LinkInfo {
    /// The disk's path.
    pub path: PathBuf,
    /// `ok`, or what is wrong with the link to it.
    pub status: String,
}

/// What `inspect` reports.
#[derive(Debug, Serialize)]
pub struct Info {
    /// The path given.
    pub path: PathBuf,
    /// `fixed`, `dynamic` or `differencing`.
    #[serde(rename = "type")]
    pub disk_type: DiskType,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Size at creation.
    pub original_size: u64,
    /// Size of the file.
    pub file_size: u64,
    /// Block size (null for fixed disks).
    pub block_size: Option<u32>,
    /// Allocated blocks (0 for fixed disks).
    pub allocated_blocks: u32,
    /// BAT entries (null for fixed disks).
    pub max_table_entries: Option<u32>,
    /// Unique id.
    pub uuid: DiskId,
    /// Creator application.
    pub creator_app: String,
    /// Creator version as major.minor.
    pub creator_version: String,
    /// Creator host OS code as text.
    pub creator_host_os: String,
    /// Creation time stamp (seconds since 2000-01-01 UTC).
    pub timestamp: u32,
    /// Creation time, RFC 3339.
    pub created: String,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Size the geometry addresses.
    pub geometry_size: u64,
    /// Saved-state flag.
    pub saved_state: bool,
    /// Footer checksum as stored.
    pub footer_checksum: u32,
    /// BAT offset (null for fixed disks).
    pub table_offset: Option<u64>,
    /// The parent link (null unless differencing).
    pub parent: Option<ParentInfo>,
    /// The chain, this disk first, as far as it could be followed.
    pub chain: Vec<PathBuf>,
    /// Each link's status.
    pub links: Vec<LinkInfo>,
    /// Everything found wrong or worth knowing.
    pub problems: Vec<String>,
}

fn four_cc(code: u32) -> String {
    code.to_be_bytes()
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Inspects a disk.
pub fn inspect(path: &Path) -> Result<Info> {
    let disk = Disk::open(path, OpenOptions::alone())?;
    let f = disk.footer().clone();
    let file_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut problems: Vec<String> = disk.warnings().to_vec();
    let parent = disk
        .header()
        .filter(|_| f.disk_type == DiskType::Differencing)
        .map(|h| {
            let file = disk.file();
            let mut locators = vec![];
            for l in h.locators.iter().filter(|l| l.code != 0) {
                let mut data = vec![0u8; usize::try_from(l.data_len.min(64 * 1024)).unwrap_or(0)];
                let text =
                    crate::disk::read_exact_at(file, path, &mut data, l.data_offset, "inspect")
                        .ok()
                        .and_then(|()| locator::decode(l.code, &data));
                locators.push(LocatorInfo {
                    platform: l.code_str(),
                    path: text,
                    data_offset: l.data_offset,
                    data_len: l.data_len,
                    data_space: l.data_space,
                });
            }
            ParentInfo {
                path: None,
                name: h.parent_name.clone(),
                uuid: h.parent_id,
                timestamp: h.parent_timestamp,
                locators,
            }
        });
    let (bs, entries, table) = disk.header().map_or((None, None, None), |h| {
        (
            Some(h.block_size),
            Some(h.max_table_entries),
            Some(h.table_offset),
        )
    });
    let allocated_blocks = disk.allocated_blocks();
    let (chain, links) = follow_chain(disk, &mut problems);
    let parent = parent.map(|mut p| {
        p.path = chain.get(1).cloned();
        p
    });
    Ok(Info {
        path: path.to_path_buf(),
        disk_type: f.disk_type,
        virtual_size: f.current_size,
        original_size: f.original_size,
        file_size,
        block_size: bs,
        allocated_blocks,
        max_table_entries: entries,
        uuid: f.unique_id,
        creator_app: f.creator_app_str(),
        creator_version: format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xFFFF),
        creator_host_os: four_cc(f.creator_host_os),
        timestamp: f.timestamp,
        created: humantime::format_rfc3339_seconds(system_time(f.timestamp)).to_string(),
        geometry: f.geometry,
        geometry_size: f.geometry.size(),
        saved_state: f.saved_state,
        footer_checksum: f.checksum,
        table_offset: table,
        parent,
        chain,
        links,
        problems,
    })
}

/// Follows the chain link by link, recording what is wrong instead of failing.
fn follow_chain(first: Disk, problems: &mut Vec<String>) -> (Vec<PathBuf>, Vec<LinkInfo>) {
    let mut chain = vec![first.path().to_path_buf()];
    let mut links = vec![LinkInfo {
        path: first.path().to_path_buf(),
        status: "ok".into(),
    }];
    let mut current = first;
    while current.disk_type() == DiskType::Differencing {
        match current.locate_parent() {
            Ok((p, warning)) => {
                if let Some(w) = warning {
                    problems.push(w);
                }
                if chain.iter().any(|c| crate::disk::same_file(c, &p)) {
                    problems.push(format!("the chain loops back to {}", p.display()));
                    break;
                }
                if chain.len() > 255 {
                    problems.push("the chain is longer than 255 disks".into());
                    break;
                }
                match Disk::open(&p, OpenOptions::alone()) {
                    Ok(d) => {
                        problems
                            .extend(d.warnings().iter().map(|w| format!("{}: {w}", p.display())));
                        chain.push(p.clone());
                        links.push(LinkInfo {
                            path: p,
                            status: "ok".into(),
                        });
                        current = d;
                    }
                    Err(e) => {
                        problems.push(e.to_string());
                        links.push(LinkInfo {
                            path: p,
                            status: format!("unreadable: {}", e.kind),
                        });
                        break;
                    }
                }
            }
            Err(e) => {
                problems.push(e.to_string());
                let status = match &*e.kind {
                    crate::ErrorKind::ParentNotFound { .. } => "parent not found".to_string(),
                    other => other.to_string(),
                };
                if let Some(last) = links.last_mut() {
                    last.status = status;
                }
                break;
            }
        }
    }
    (chain, links)
}
