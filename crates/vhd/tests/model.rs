//! Property tests: random sequences of writes, reads, flushes, snapshots (a new child), merges,
//! compactions and reopenings give the same bytes as a plain in-memory model of the disk.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_vhd::ops::progress::Silent;
use strata_vhd::ops::{compact, merge, resize};
use strata_vhd::{Disk, DiskType, NewDisk, OpenOptions};

const SIZE: u64 = 4 << 20;

#[derive(Clone, Debug)]
enum Op {
    Write {
        off: u64,
        len: usize,
        seed: u8,
        zeros: bool,
    },
    Read {
        off: u64,
        len: usize,
    },
    Flush,
    Snapshot,
    Merge,
    Compact,
    Reopen,
    Grow,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SIZE, 1usize..200_000, any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(off, len, seed, zeros)| Op::Write { off, len, seed, zeros }),
        // Sector- and chunk-aligned writes, the common case.
        4 => (0..SIZE / 4096, 1usize..64, any::<u8>())
            .prop_map(|(c, n, seed)| Op::Write { off: c * 4096, len: n * 4096, seed, zeros: false }),
        3 => (0..SIZE, 1usize..300_000).prop_map(|(off, len)| Op::Read { off, len }),
        2 => Just(Op::Flush),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Merge),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Grow),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    chain: Vec<PathBuf>,
    disk: Option<Disk>,
    model: Vec<u8>,
    next: u32,
}

impl Harness {
    fn new(block_size: u32) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.vhd");
        strata_vhd::create(&base, SIZE, NewDisk::Dynamic { block_size }).unwrap();
        let disk = Disk::open(&base, OpenOptions::write()).unwrap();
        Harness {
            dir,
            chain: vec![base],
            disk: Some(disk),
            model: vec![0; usize::try_from(SIZE).unwrap()],
            next: 0,
        }
    }

    fn top(&self) -> &Path {
        self.chain.last().unwrap()
    }

    fn close(&mut self) {
        self.disk.take().unwrap().close().unwrap();
    }

    fn open(&mut self) {
        self.disk = Some(Disk::open(self.top(), OpenOptions::write()).unwrap());
    }

    fn apply(&mut self, op: &Op) {
        let size = self.model.len() as u64;
        match *op {
            Op::Write {
                off,
                len,
                seed,
                zeros,
            } => {
                let off = off % size;
                let len = usize::try_from((len as u64).min(size - off)).unwrap();
                let data: Vec<u8> = if zeros {
                    vec![0; len]
                } else {
                    (0..len)
                        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()) | 1)
                        .collect()
                };
                self.disk.as_ref().unwrap().write_at(&data, off).unwrap();
                let o = usize::try_from(off).unwrap();
                self.model[o..o + len].copy_from_slice(&data);
            }
            Op::Read { off, len } => {
                let off = off % size;
                let len = usize::try_from((len as u64).min(size - off)).unwrap();
                let mut buf = vec![0xAA; len];
                self.disk.as_ref().unwrap().read_at(&mut buf, off).unwrap();
                let o = usize::try_from(off).unwrap();
                assert!(
                    buf == self.model[o..o + len],
                    "read at {off}+{len} differs from the model"
                );
            }
            Op::Flush => self.disk.as_ref().unwrap().flush().unwrap(),
            Op::Snapshot => {
                if self.chain.len() >= 4 {
                    return;
                }
                self.close();
                self.next += 1;
                let child = self.dir.path().join(format!("child{}.vhd", self.next));
                strata_vhd::create_differencing(&child, self.top()).unwrap();
                self.chain.push(child);
                self.open();
            }
            Op::Merge => {
                if self.chain.len() < 2 {
                    return;
                }
                self.close();
                let child = self.chain.pop().unwrap();
                let parent = merge::merge_into_parent(&child, &Silent).unwrap();
                assert_eq!(
                    std::fs::canonicalize(parent).unwrap(),
                    std::fs::canonicalize(self.top()).unwrap()
                );
                assert!(!child.exists());
                self.open();
            }
            Op::Compact => {
                self.close();
                if self.chain.len() == 1 {
                    compact::compact(self.top(), &Silent).unwrap();
                } else {
                    // Refused for differencing disks, with nothing changed.
                    assert!(compact::compact(self.top(), &Silent).is_err());
                }
                self.open();
            }
            Op::Reopen => {
                self.close();
                self.open();
            }
            Op::Grow => {
                if size >= 3 * SIZE || self.chain.len() > 1 {
                    return;
                }
                self.close();
                resize::resize(self.top(), size + SIZE / 2, false).unwrap();
                self.model
                    .resize(self.model.len() + usize::try_from(SIZE / 2).unwrap(), 0);
                self.open();
            }
        }
    }

    fn verify_all(&mut self) {
        let disk = self.disk.as_ref().unwrap();
        assert_eq!(disk.size(), self.model.len() as u64);
        let mut buf = vec![0u8; self.model.len()];
        disk.read_at(&mut buf, 0).unwrap();
        let first_diff = buf.iter().zip(&self.model).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "whole-disk read differs from the model");
        // Every file of the chain passes `check` after a close.
        self.close();
        for p in &self.chain {
            let report = strata_vhd::ops::check::check(p, false).unwrap();
            assert!(report.ok(), "{}: {:?}", p.display(), report.errors);
        }
        // And a read-only reopen sees the same bytes.
        let ro = Disk::open(self.top(), OpenOptions::read()).unwrap();
        let mut again = vec![0u8; self.model.len()];
        ro.read_at(&mut again, 0).unwrap();
        assert!(again == self.model);
        drop(ro);
        self.open();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn chain_matches_model(ops in prop::collection::vec(op(), 1..40), bs in prop::sample::select(vec![4096u32, 65536, 1 << 20])) {
        let mut h = Harness::new(bs);
        for op in &ops {
            h.apply(op);
        }
        h.verify_all();
    }
}

#[test]
fn zero_writes_to_unallocated_blocks_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.vhd");
    strata_vhd::create(&p, 64 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&p, OpenOptions::write()).unwrap();
    d.write_at(&vec![0u8; 8 << 20], 0).unwrap();
    d.flush().unwrap();
    assert_eq!(d.allocated_blocks(), 0);
    let len = std::fs::metadata(&p).unwrap().len();
    d.write_at(&[1u8; 512], 4 << 20).unwrap();
    d.close().unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() > len);
    let d = Disk::open(&p, OpenOptions::read()).unwrap();
    assert_eq!(d.allocated_blocks(), 1);
}

#[test]
fn differencing_writes_record_whole_4k_chunks_from_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    strata_vhd::create(&base, 8 << 20, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    d.write_at(&[7u8; 8192], 0).unwrap();
    d.close().unwrap();
    let child = dir.path().join("child.vhd");
    strata_vhd::create_differencing(&child, &base).unwrap();
    let c = Disk::open(&child, OpenOptions::write()).unwrap();
    assert_eq!(c.disk_type(), DiskType::Differencing);
    c.write_at(&[9u8; 100], 4096 + 10).unwrap();
    c.close().unwrap();
    // Alone (without its parent), the child holds exactly the 4 KiB chunk 4096..8192.
    let alone = Disk::open(
        &child,
        OpenOptions {
            parents: false,
            ..OpenOptions::read()
        },
    )
    .unwrap();
    assert_eq!(alone.extents().unwrap(), vec![(4096, 8192)]);
    let mut chunk = vec![0u8; 4096];
    alone.read_at(&mut chunk, 4096).unwrap();
    assert!(chunk[..10].iter().all(|&b| b == 7));
    assert!(chunk[10..110].iter().all(|&b| b == 9));
    assert!(chunk[110..].iter().all(|&b| b == 7));
}

#[test]
fn locks_exclude_a_second_writer_and_name_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.vhd");
    strata_vhd::create(&p, 8 << 20, NewDisk::dynamic()).unwrap();
    let _w = Disk::open(&p, OpenOptions::write()).unwrap();
    let err = Disk::open(&p, OpenOptions::write())
        .err()
        .expect("second writer refused");
    let text = err.to_string();
    assert!(text.contains("in use"), "{text}");
    assert!(
        text.contains(&std::process::id().to_string()),
        "holder named: {text}"
    );
    assert!(
        Disk::open(&p, OpenOptions::read()).is_err(),
        "reader refused while a writer holds it"
    );
    // Parents are shared: two children of one parent can be open at once.
    drop(_w);
    let c1 = dir.path().join("c1.vhd");
    let c2 = dir.path().join("c2.vhd");
    strata_vhd::create_differencing(&c1, &p).unwrap();
    strata_vhd::create_differencing(&c2, &p).unwrap();
    let _a = Disk::open(&c1, OpenOptions::write()).unwrap();
    let _b = Disk::open(&c2, OpenOptions::write()).unwrap();
    assert!(
        Disk::open(&p, OpenOptions::write()).is_err(),
        "parent in use by children is not writable"
    );
}

#[test]
fn shrink_only_when_allowed_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [NewDisk::Fixed, NewDisk::dynamic()] {
        let p = dir
            .path()
            .join(format!("{kind:?}.vhd").replace(['{', '}', ' ', ':'], ""));
        strata_vhd::create(&p, 16 << 20, kind).unwrap();
        let d = Disk::open(&p, OpenOptions::write()).unwrap();
        d.write_at(&[5u8; 4096], (10 << 20) + 512).unwrap();
        d.close().unwrap();
        assert!(
            resize::resize(&p, 8 << 20, false).is_err(),
            "shrink needs --allow-shrink"
        );
        let e = resize::resize(&p, 8 << 20, true).unwrap_err();
        assert!(e.to_string().contains("holds data"), "{e}");
        resize::resize(&p, 12 << 20, true).unwrap();
        resize::resize(&p, 40 << 20, false).unwrap();
        let d = Disk::open(&p, OpenOptions::read()).unwrap();
        assert_eq!(d.size(), 40 << 20);
        let mut b = vec![0u8; 4096];
        d.read_at(&mut b, (10 << 20) + 512).unwrap();
        assert!(b.iter().all(|&x| x == 5));
        let mut tail = vec![1u8; 1 << 20];
        d.read_at(&mut tail, 39 << 20).unwrap();
        assert!(tail.iter().all(|&x| x == 0));
        drop(d);
        assert!(strata_vhd::ops::check::check(&p, false).unwrap().ok());
    }
}

#[test]
fn concurrent_readers_see_consistent_data_while_a_writer_works() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    strata_vhd::create(
        &base,
        32 << 20,
        NewDisk::Dynamic {
            block_size: 1 << 20,
        },
    )
    .unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    // The first 8 MiB hold a fixed pattern; readers check it while the writer fills the rest.
    d.write_at(&vec![0x5A; 8 << 20], 0).unwrap();
    let child = dir.path().join("child.vhd");
    d.close().unwrap();
    strata_vhd::create_differencing(&child, &base).unwrap();
    let d = Disk::open(&child, OpenOptions::write()).unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let d = &d;
            s.spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                for i in 0..200u64 {
                    let off = ((i * 7919 + t * 104_729) % 120) * 65536;
                    d.read_at(&mut buf, off).unwrap();
                    assert!(
                        buf.iter().all(|&b| b == 0x5A),
                        "reader {t} saw torn data at {off}"
                    );
                }
            });
        }
        let d = &d;
        s.spawn(move || {
            for i in 0..300u64 {
                let off = (8 << 20) + (i * 37 % 96) * 250_000;
                d.write_at(&[u8::try_from(i % 200).unwrap() + 1; 70_000], off)
                    .unwrap();
                if i % 50 == 0 {
                    d.flush().unwrap();
                }
            }
        });
    });
    d.close().unwrap();
    assert!(strata_vhd::ops::check::check(&child, false).unwrap().ok());
}
