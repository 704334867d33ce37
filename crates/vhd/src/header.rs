//! The 1024-byte dynamic disk header of dynamic and differencing disks, with its eight parent
//! locator entries. All integers are big-endian; the parent name is UTF-16 big-endian.

use crate::footer::{be32, be64, checksum};
use crate::uuid_fmt::DiskId;

/// Size of the dynamic header in bytes.
pub const HEADER_SIZE: usize = 1024;
/// The header's cookie.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
const CHECKSUM_AT: usize = 36;
/// "Unused" BAT entry.
pub const BAT_UNUSED: u32 = u32::MAX;
/// Smallest block size accepted (one bitmap byte covers 4 KiB, Strata's allocation unit).
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest block size accepted.
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Default block size (2 MiB, as Virtual PC, Virtual Server, Hyper-V and qemu use).
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
/// Most BAT entries accepted when reading (2040 GiB in 256 KiB blocks).
pub const MAX_BAT_ENTRIES: u32 = 1 << 23;

/// Platform code "W2ku": absolute Windows path, UTF-16 little-endian.
pub const PLAT_W2KU: u32 = 0x5732_6B75;
/// Platform code "W2ru": relative Windows path, UTF-16 little-endian.
pub const PLAT_W2RU: u32 = 0x5732_7275;
/// Platform code "Wi2k": deprecated absolute path (ASCII).
pub const PLAT_WI2K: u32 = 0x5769_326B;
/// Platform code "Wi2r": deprecated relative path (ASCII).
pub const PLAT_WI2R: u32 = 0x5769_3272;
/// Platform code "MacX": `file://` URL, UTF-8.
pub const PLAT_MACX: u32 = 0x4D61_6358;

/// One parent locator entry (24 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocatorEntry {
    /// Platform code (0 = unused).
    pub code: u32,
    /// Space reserved for the data. Microsoft tools store bytes although the specification says
    /// sectors; Strata writes bytes (as Windows peers expect) and never relies on the field.
    pub data_space: u32,
    /// Length of the data in bytes.
    pub data_len: u32,
    /// Absolute file offset of the data.
    pub data_offset: u64,
}

impl LocatorEntry {
    /// The platform code as four characters.
    pub fn code_str(&self) -> String {
        self.code
            .to_be_bytes()
            .iter()
            .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
            .collect()
    }
}

/// A parsed dynamic disk header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Next structure (unused, all ones).
    pub data_offset: u64,
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Header version (0x00010000).
    pub version: u32,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Block size in bytes.
    pub block_size: u32,
    /// The checksum stored in the file.
    pub checksum: u32,
    /// Unique id of the parent (differencing disks).
    pub parent_id: DiskId,
    /// Modification time of the parent, seconds since 2000-01-01 (0 from Windows 10).
    pub parent_timestamp: u32,
    /// The parent's name (as written: Windows writes an absolute path).
    pub parent_name: String,
    /// The eight locator entries.
    pub locators: [LocatorEntry; 8],
}

/// Why 1024 bytes are not a usable header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// No "cxsparse" cookie.
    NoCookie,
    /// Checksum mismatch; the header parsed otherwise.
    BadChecksum {
        /// The header as parsed.
        header: Box<DynamicHeader>,
        /// The checksum the bytes should have.
        computed: u32,
    },
    /// A field is invalid.
    Invalid(String),
}

impl DynamicHeader {
    /// A new header.
    pub fn new(table_offset: u64, max_table_entries: u32, block_size: u32) -> DynamicHeader {
        DynamicHeader {
            data_offset: u64::MAX,
            table_offset,
            version: 0x0001_0000,
            max_table_entries,
            block_size,
            checksum: 0,
            parent_id: DiskId::default(),
            parent_timestamp: 0,
            parent_name: String::new(),
            locators: [LocatorEntry::default(); 8],
        }
    }

    /// Parses 1024 bytes.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<DynamicHeader, HeaderProblem> {
        if &b[0..8] != HEADER_COOKIE {
            return Err(HeaderProblem::NoCookie);
        }
        let block_size = be32(b, 32);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(HeaderProblem::Invalid(format!(
                "block size {block_size} must be a power of two between 4 KiB and 256 MiB"
            )));
        }
        let entries = be32(b, 28);
        if entries > MAX_BAT_ENTRIES {
            return Err(HeaderProblem::Invalid(format!(
                "{entries} BAT entries is more than {MAX_BAT_ENTRIES}"
            )));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[40..56]);
        let units: Vec<u16> = b[64..576]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut locators = [LocatorEntry::default(); 8];
        for (i, loc) in locators.iter_mut().enumerate() {
            let at = 576 + i * 24;
            *loc = LocatorEntry {
                code: be32(b, at),
                data_space: be32(b, at + 4),
                data_len: be32(b, at + 8),
                data_offset: be64(b, at + 16),
            };
        }
        let header = DynamicHeader {
            data_offset: be64(b, 8),
            table_offset: be64(b, 16),
            version: be32(b, 24),
            max_table_entries: entries,
            block_size,
            checksum: be32(b, CHECKSUM_AT),
            parent_id: DiskId(id),
            parent_timestamp: be32(b, 56),
            parent_name: String::from_utf16_lossy(&units),
            locators,
        };
        let computed = checksum(b, CHECKSUM_AT);
        if computed != header.checksum {
            return Err(HeaderProblem::BadChecksum {
                header: Box::new(header),
                computed,
            });
        }
        Ok(header)
    }

    /// Serializes the header with a correct checksum (and stores that checksum).
    pub fn to_bytes(&mut self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(HEADER_COOKIE);
        b[8..16].copy_from_slice(&self.data_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.version.to_be_bytes());
        b[28..32].copy_from_slice(&self.max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&self.block_size.to_be_bytes());
        b[40..56].copy_from_slice(&self.parent_id.0);
        b[56..60].copy_from_slice(&self.parent_timestamp.to_be_bytes());
        for (i, unit) in self.parent_name.encode_utf16().take(255).enumerate() {
            b[64 + 2 * i..66 + 2 * i].copy_from_slice(&unit.to_be_bytes());
        }
        for (i, loc) in self.locators.iter().enumerate() {
            let at = 576 + i * 24;
            b[at..at + 4].copy_from_slice(&loc.code.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&loc.data_space.to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&loc.data_len.to_be_bytes());
            b[at + 16..at + 24].copy_from_slice(&loc.data_offset.to_be_bytes());
        }
        self.checksum = checksum(&b, CHECKSUM_AT);
        b[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&self.checksum.to_be_bytes());
        b
    }

    /// Bytes of the BAT on disk, padded to a sector.
    pub fn bat_bytes(&self) -> u64 {
        (u64::from(self.max_table_entries) * 4).next_multiple_of(512)
    }

    /// Bytes of one block's sector bitmap, padded to a sector.
    pub fn bitmap_bytes(&self) -> u64 {
        bitmap_bytes(self.block_size)
    }
}

/// Bytes of one block's sector bitmap for a block size, padded to a sector.
pub fn bitmap_bytes(block_size: u32) -> u64 {
    (u64::from(block_size) / 512)
        .div_ceil(8)
        .next_multiple_of(512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut h = DynamicHeader::new(1536, 10, DEFAULT_BLOCK_SIZE);
        h.parent_name = "C:\\disks\\päréñt.vhd".into();
        h.parent_id = DiskId([9; 16]);
        h.locators[0] = LocatorEntry {
            code: PLAT_W2RU,
            data_space: 512,
            data_len: 20,
            data_offset: 4096,
        };
        let b = h.to_bytes();
        // UTF-16 big-endian: 'C' is 00 43.
        assert_eq!(&b[64..66], &[0, 0x43]);
        assert_eq!(DynamicHeader::parse(&b).unwrap(), h);
        assert_eq!(h.locators[0].code_str(), "W2ru");
    }

    #[test]
    fn bad_block_size_is_rejected() {
        let mut h = DynamicHeader::new(1536, 10, 3000);
        let b = h.to_bytes();
        assert!(matches!(
            DynamicHeader::parse(&b),
            Err(HeaderProblem::Invalid(_))
        ));
    }
}
