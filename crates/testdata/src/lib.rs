//! # strata-testdata
//!
//! Test support: the VHD files written by other tools (Windows, qemu-img) that Strata's tests read,
//! kept gzip-compressed in `crates/testdata/interop/` (provenance and licences in its README), so
//! that the tests need nothing outside the clone.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The interop files this crate holds.
pub const INTEROP: [&str; 4] = [
    "qemu-bad-footer-checksum.vhd",
    "qemu-ext2-dynamic.vhd",
    "windows-ntfs-fixed.vhd",
    "windows10-fat-differential.vhd",
];

/// Their sizes once decompressed (a copy of another size is made again).
const INTEROP_SIZES: [u64; 4] = [2_100_224, 2_100_224, 4_194_816, 2_183_168];

/// The path of a decompressed copy of the interop file `name` (one of [`INTEROP`]), made once in
/// `strata-testdata-UID` under the system's temporary folder and shared by the test runs of that
/// user (every copy is the same bytes, written beside and renamed). Tests copy it before writing.
///
/// # Panics
/// When `name` is not one of [`INTEROP`] or the copy can't be written: a test can't go on.
pub fn interop(name: &str) -> PathBuf {
    assert!(
        INTEROP.contains(&name),
        "{name}: not an interop file of strata-testdata (it has {INTEROP:?})"
    );
    let dir = std::env::temp_dir().join(format!("strata-testdata-{}", uid()));
    let out = dir.join(name);
    let expected = INTEROP_SIZES[INTEROP.iter().position(|n| *n == name).unwrap_or(0)];
    if std::fs::metadata(&out).is_ok_and(|m| m.len() == expected) {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(format!("{name}.gz"));
    let file = std::fs::File::open(&gz).unwrap_or_else(|e| panic!("{}: {e}", gz.display()));
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut data)
        .unwrap_or_else(|e| panic!("{}: not a valid gzip file: {e}", gz.display()));
    // Written beside, then renamed: tests of one binary run in parallel threads.
    let tmp = dir.join(format!(
        "{name}.{}.{:?}.partial",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, &data).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    out
}

/// The user's id, from the owner of `/proc/self` (no unsafe code, no extra crate).
fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_interop_file_decompresses_to_a_vhd() {
        for name in super::INTEROP {
            let data = std::fs::read(super::interop(name)).unwrap();
            assert!(data.len() > 512, "{name}");
            // Every VHD ends with its footer, whose cookie is "conectix".
            assert_eq!(&data[data.len() - 512..][..8], b"conectix", "{name}");
        }
    }
}
