//! The 512-byte hard disk footer: at the end of every VHD, and copied at offset 0 of dynamic and
//! differencing disks. All integers are big-endian.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::uuid_fmt::DiskId;

/// Size of the footer in bytes.
pub const FOOTER_SIZE: usize = 512;
/// The footer's cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// Offset of the checksum field.
const CHECKSUM_AT: usize = 64;
/// "No data offset" marker of fixed disks.
pub const NO_OFFSET: u64 = u64::MAX;
/// Seconds between 1970-01-01 and 2000-01-01, the VHD epoch.
pub const VHD_EPOCH: u64 = 946_684_800;
/// The creator application Strata writes.
pub const STRATA_CREATOR: [u8; 4] = *b"strt";
/// Host OS code "Wi2k" (Windows).
pub const HOST_WINDOWS: u32 = 0x5769_326B;
/// Host OS code "Mac ".
pub const HOST_MAC: u32 = 0x4D61_6320;
/// The largest virtual size Strata creates: 2040 GiB, the format's practical limit.
pub const MAX_VIRTUAL_SIZE: u64 = 2040 * 1024 * 1024 * 1024;

/// The kind of disk a footer describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// Data then footer; no header.
    Fixed,
    /// Sparse, with a header and a block allocation table.
    Dynamic,
    /// Sparse, with a parent disk.
    Differencing,
}

impl DiskType {
    fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    /// The lower-case name (`fixed`, `dynamic`, `differencing`).
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// Cylinder/head/sector geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

impl Geometry {
    /// The geometry for a size, by the algorithm in the specification's appendix.
    pub fn for_size(size: u64) -> Geometry {
        let mut total = size / 512;
        if total > 65535 * 16 * 255 {
            total = 65535 * 16 * 255;
        }
        let (spt, heads, cth);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cth = total / spt;
        } else {
            let mut s = 17;
            let mut c = total / s;
            let mut h = c.div_ceil(1024).max(4);
            if c >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                c = total / s;
            }
            if c >= h * 1024 {
                s = 63;
                h = 16;
                c = total / s;
            }
            spt = s;
            heads = h;
            cth = c;
        }
        let cyl = cth / heads;
        Geometry {
            cylinders: u16::try_from(cyl).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }

    /// The size in bytes the geometry addresses.
    pub fn size(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors) * 512
    }
}

/// A parsed footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Feature flags (bit 1 is always set).
    pub features: u32,
    /// File format version (0x00010000).
    pub format_version: u32,
    /// Offset of the dynamic header, or [`NO_OFFSET`] for fixed disks.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Creator application, four characters.
    pub creator_app: [u8; 4],
    /// Creator version.
    pub creator_version: u32,
    /// Creator host OS code.
    pub creator_host_os: u32,
    /// Size at creation.
    pub original_size: u64,
    /// Current virtual size.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Disk type.
    pub disk_type: DiskType,
    /// The checksum stored in the file (after [`Footer::to_bytes`], the right one).
    pub checksum: u32,
    /// Unique id (16 opaque bytes).
    pub unique_id: DiskId,
    /// Saved-state flag.
    pub saved_state: bool,
}

/// Why 512 bytes are not a usable footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FooterProblem {
    /// No "conectix" cookie.
    NoCookie,
    /// Cookie present, but the checksum is wrong; the footer parsed otherwise.
    BadChecksum {
        /// The footer as parsed.
        footer: Box<Footer>,
        /// The checksum the bytes should have.
        computed: u32,
    },
    /// Cookie present, but a field is invalid.
    Invalid(String),
}

/// One's complement of the byte sum, skipping the 4 checksum bytes at `skip`.
pub fn checksum(bytes: &[u8], skip: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Footer {
    /// A new footer for a disk Strata creates.
    pub fn new(disk_type: DiskType, size: u64, unique_id: DiskId) -> Footer {
        Footer {
            features: 2,
            format_version: 0x0001_0000,
            data_offset: if disk_type == DiskType::Fixed {
                NO_OFFSET
            } else {
                512
            },
            timestamp: vhd_time_now(),
            creator_app: STRATA_CREATOR,
            creator_version: 0x0001_0000,
            creator_host_os: HOST_WINDOWS,
            original_size: size,
            current_size: size,
            geometry: Geometry::for_size(size),
            disk_type,
            checksum: 0,
            unique_id,
            saved_state: false,
        }
    }

    /// Parses 512 bytes.
    pub fn parse(b: &[u8; FOOTER_SIZE]) -> Result<Footer, FooterProblem> {
        if &b[0..8] != FOOTER_COOKIE {
            return Err(FooterProblem::NoCookie);
        }
        let disk_type = match be32(b, 60) {
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            t => return Err(FooterProblem::Invalid(format!("unknown disk type {t}"))),
        };
        let version = be32(b, 12);
        if version >> 16 != 1 {
            return Err(FooterProblem::Invalid(format!(
                "unsupported format version {version:#x}"
            )));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[68..84]);
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(&b[28..32]);
        let footer = Footer {
            features: be32(b, 8),
            format_version: version,
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_app,
            creator_version: be32(b, 32),
            creator_host_os: be32(b, 36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            geometry: Geometry {
                cylinders: u16::from_be_bytes([b[56], b[57]]),
                heads: b[58],
                sectors: b[59],
            },
            disk_type,
            checksum: be32(b, CHECKSUM_AT),
            unique_id: DiskId(id),
            saved_state: b[84] != 0,
        };
        let computed = checksum(b, CHECKSUM_AT);
        if computed != footer.checksum {
            return Err(FooterProblem::BadChecksum {
                footer: Box::new(footer),
                computed,
            });
        }
        Ok(footer)
    }

    /// Serializes the footer with a correct checksum (and stores that checksum).
    pub fn to_bytes(&mut self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(FOOTER_COOKIE);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_host_os.to_be_bytes());
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors;
        b[60..64].copy_from_slice(&self.disk_type.code().to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id.0);
        b[84] = u8::from(self.saved_state);
        self.checksum = checksum(&b, CHECKSUM_AT);
        b[64..68].copy_from_slice(&self.checksum.to_be_bytes());
        b
    }

    /// The creator application as text.
    pub fn creator_app_str(&self) -> String {
        String::from_utf8_lossy(&self.creator_app).into_owned()
    }
}

/// Now, in seconds since 2000-01-01 UTC.
pub fn vhd_time_now() -> u32 {
    vhd_time(SystemTime::now())
}

/// A system time in seconds since 2000-01-01 UTC (0 before that, saturating after 2136).
pub fn vhd_time(t: SystemTime) -> u32 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

/// A VHD time stamp as a system time.
pub fn system_time(vhd: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(VHD_EPOCH + u64::from(vhd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_specification() {
        // 127 MiB: the 17-sector branch (260096 sectors: 15299 cylinders*heads, 15 heads).
        let g = Geometry::for_size(127 * 1024 * 1024);
        assert_eq!((g.cylinders, g.heads, g.sectors), (1019, 15, 17));
        // 1 GiB needs more than 16 heads at 17 sectors: the 63-sector branch, 16 heads.
        let g = Geometry::for_size(1 << 30);
        assert_eq!((g.cylinders, g.heads, g.sectors), (2080, 16, 63));
        // Large disks clamp at 65535/16/255.
        let g = Geometry::for_size(2040 * 1024 * 1024 * 1024);
        assert_eq!((g.cylinders, g.heads, g.sectors), (65535, 16, 255));
        // The qemu ext2 interop file: 4212736 bytes is 121/4/17.
        let g = Geometry::for_size(4_212_736);
        assert_eq!((g.cylinders, g.heads, g.sectors), (121, 4, 17));
        assert!(Geometry::for_size(20 << 30).size() <= 20 << 30);
    }

    #[test]
    fn footer_round_trips_and_detects_damage() {
        let mut f = Footer::new(DiskType::Dynamic, 1 << 30, DiskId([7; 16]));
        let bytes = f.to_bytes();
        assert_eq!(Footer::parse(&bytes).unwrap(), f);
        let mut bad = bytes;
        bad[50] ^= 1;
        assert!(matches!(
            Footer::parse(&bad),
            Err(FooterProblem::BadChecksum { .. })
        ));
        bad[0] = b'x';
        assert_eq!(Footer::parse(&bad), Err(FooterProblem::NoCookie));
    }

    #[test]
    fn vhd_epoch_is_2000() {
        assert_eq!(vhd_time(UNIX_EPOCH + Duration::from_secs(VHD_EPOCH + 5)), 5);
        assert_eq!(vhd_time(UNIX_EPOCH), 0);
    }
}
