//! Writes the seed corpus of the `parse_vhd` target: small valid disks made with strata-vhd, and
//! damaged variants of them. Every seed stays under 100 KiB.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds/parse_vhd`

use std::path::{Path, PathBuf};

use strata_vhd::footer::{checksum, Footer, FOOTER_SIZE};
use strata_vhd::header::{DynamicHeader, HEADER_SIZE};
use strata_vhd::{create, create_differencing, Disk, NewDisk, OpenOptions};

const MIB: u64 = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed)).collect()
}

fn write(path: &Path, writes: &[(u64, usize)]) {
    let disk = Disk::open(path, OpenOptions::write()).expect("open for writing");
    for (seed, &(off, len)) in (1u8..).zip(writes) {
        disk.write_at(&pattern(len, seed), off).expect("write");
    }
    disk.close().expect("close");
}

fn footer_at_end(bytes: &[u8]) -> Footer {
    let end = <&[u8; FOOTER_SIZE]>::try_from(&bytes[bytes.len() - FOOTER_SIZE..]).expect("512 bytes");
    Footer::parse(end).expect("valid footer")
}

fn header_at_512(bytes: &[u8]) -> DynamicHeader {
    let raw = <&[u8; HEADER_SIZE]>::try_from(&bytes[512..512 + HEADER_SIZE]).expect("1024 bytes");
    DynamicHeader::parse(raw).expect("valid header")
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: make_seeds OUTPUT_DIR"));
    std::fs::create_dir_all(&out).expect("create the output folder");
    let work = tempfile_dir();
    let save = |name: &str, bytes: &[u8]| {
        assert!(bytes.len() < 100 * 1024, "{name} is too large for a seed");
        std::fs::write(out.join(name), bytes).expect("write a seed");
    };

    // Dynamic, 1 MiB, 4 KiB blocks: empty, and with data (blocks 0, 5 and 255).
    let empty = work.join("empty.vhd");
    create(&empty, MIB, NewDisk::Dynamic { block_size: 4096 }).expect("create");
    save("dynamic_1m_4k_empty.vhd", &std::fs::read(&empty).expect("read"));
    let base = work.join("base.vhd");
    create(&base, MIB, NewDisk::Dynamic { block_size: 4096 }).expect("create");
    write(&base, &[(0, 4096), (5 * 4096 + 512, 1024), (MIB - 4096, 4096)]);
    let dynamic = std::fs::read(&base).expect("read");
    save("dynamic_1m_4k_data.vhd", &dynamic);

    // Dynamic, 1 MiB, default 2 MiB blocks (a single BAT entry), empty.
    let big_blocks = work.join("big_blocks.vhd");
    create(&big_blocks, MIB, NewDisk::dynamic()).expect("create");
    save("dynamic_1m_2m_empty.vhd", &std::fs::read(&big_blocks).expect("read"));

    // Fixed, 64 KiB, with data; a lone footer (size 0); an old 511-byte footer; a bad checksum.
    let fixed = work.join("fixed.vhd");
    create(&fixed, 64 << 10, NewDisk::Fixed).expect("create");
    write(&fixed, &[(0, 4096), (60 << 10, 4096)]);
    let fx = std::fs::read(&fixed).expect("read");
    save("fixed_64k.vhd", &fx);
    let mut lone = footer_at_end(&fx);
    lone.current_size = 0;
    lone.original_size = 0;
    save("fixed_empty_footer_only.vhd", &lone.to_bytes());
    save("fixed_64k_511_byte_footer.vhd", &fx[..fx.len() - 1]);
    let mut bad = fx.clone();
    let n = bad.len();
    bad[n - FOOTER_SIZE + 55] ^= 0x02; // current size, checksum left stale
    save("fixed_64k_bad_checksum.vhd", &bad);

    // A differencing child of base.vhd with data (its parent is absent when fuzzing).
    let child = work.join("child.vhd");
    create_differencing(&child, &base).expect("create differencing");
    write(&child, &[(4096, 4096), (8192 + 512, 512)]);
    let diff = std::fs::read(&child).expect("read");
    save("differencing_1m.vhd", &diff);

    // A differencing disk naming itself as parent: "input.vhd" is the name the fuzz target (and
    // the malformed test) give the file; its own unique id; no locators.
    let mut own = diff.clone();
    let mut h = header_at_512(&own);
    h.parent_id = footer_at_end(&own).unique_id;
    h.parent_name = "input.vhd".into();
    h.locators = Default::default();
    own[512..512 + HEADER_SIZE].copy_from_slice(&h.to_bytes());
    save("differencing_self_parent.vhd", &own);

    // Damaged dynamic disks.
    let mut v = dynamic.clone();
    let n = v.len();
    v[n - FOOTER_SIZE..n - FOOTER_SIZE + 8].copy_from_slice(b"garbled!");
    save("dynamic_end_footer_garbled.vhd", &v);
    let mut v = dynamic.clone();
    v[512 + 30] ^= 0x10; // max_table_entries, checksum left stale
    save("dynamic_bad_header_checksum.vhd", &v);
    let bat = usize::try_from(header_at_512(&dynamic).table_offset).expect("64-bit");
    let mut v = dynamic.clone();
    v[bat + 4..bat + 8].copy_from_slice(&0x0010_0000u32.to_be_bytes());
    save("dynamic_bat_out_of_file.vhd", &v);
    let mut v = dynamic.clone();
    let first = v[bat..bat + 4].to_vec();
    v[bat + 20..bat + 24].copy_from_slice(&first); // block 5 on block 0
    save("dynamic_bat_overlap.vhd", &v);
    save("dynamic_truncated_2000.vhd", &dynamic[..2000]);
    save("dynamic_truncated_mid_block.vhd", &dynamic[..dynamic.len() - 3000]);
    let mut v = dynamic.clone();
    v[512 + 32..512 + 36].copy_from_slice(&3000u32.to_be_bytes()); // block size, checksum right
    let sum = checksum(&v[512..512 + HEADER_SIZE], 36);
    v[512 + 36..512 + 40].copy_from_slice(&sum.to_be_bytes());
    save("dynamic_block_size_3000.vhd", &v);

    std::fs::remove_dir_all(&work).expect("remove the work folder");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-make-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a work folder");
    dir
}
