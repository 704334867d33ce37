//! The crash test of checkpoint merges: a merge cut short after each of its steps (the journal
//! written; the layer merged into its parent and deleted; the children re-pointed; the settings
//! and tree saved) is finished by `recover`, and the VM's disk reads the same bytes as before
//! the merge began, with every file passing `check`.

use std::path::{Path, PathBuf};

use strata_api::{CreateVm, DiskBus, DiskSpec};
use strata_vhd::{Disk, NewDisk, OpenOptions};

use super::layers::{self, Journal};
use super::tree::{Checkpoint, Tree};
use crate::store::VmConfig;

const SIZE: u64 = 4 << 20;

/// Base B (a user's disk, data everywhere), checkpoint layer K over it, Now's layer G over K;
/// the root checkpoint H (layers [B]) was deleted: K is to be merged into B.
struct Setup {
    dir: PathBuf,
    base: String,
    k: String,
    g: String,
}

fn write(path: &str, fill: u8, every: u64) {
    let d = Disk::open(Path::new(path), OpenOptions::write()).unwrap();
    let mut off = 0;
    while off < SIZE {
        d.write_at(&[fill; 4096], off).unwrap();
        off += every;
    }
    d.close().unwrap();
}

fn setup(root: &Path) -> Setup {
    let dir = root.join("vms/v");
    std::fs::create_dir_all(layers::layer_dir(&dir)).unwrap();
    let base = root.join("base.vhd").display().to_string();
    strata_vhd::create(Path::new(&base), SIZE, NewDisk::dynamic()).unwrap();
    write(&base, 1, 64 << 10);
    let k = layers::make_children(&dir, std::slice::from_ref(&base))
        .unwrap()
        .remove(0);
    write(&k, 2, 192 << 10);
    let g = layers::make_children(&dir, std::slice::from_ref(&k))
        .unwrap()
        .remove(0);
    write(&g, 3, 320 << 10);
    Setup { dir, base, k, g }
}

fn state(s: &Setup) -> (VmConfig, Tree) {
    let mut vm = CreateVm::named("v");
    vm.disks = vec![DiskSpec {
        path: s.g.clone(),
        bus: DiskBus::Virtio,
        slot: Some(0),
    }];
    let cp = |id: &str, parent: Option<&str>, layer: &str, hidden: bool| Checkpoint {
        id: id.into(),
        name: id.into(),
        parent: parent.map(Into::into),
        created: "2026-12-03T16:00:00Z".into(),
        layers: vec![layer.to_string()],
        config: vm.clone(),
        memory: false,
        hidden,
    };
    let tree = Tree {
        schema: 1,
        checkpoints: vec![
            cp("h", None, &s.base, true),
            cp("k", Some("h"), &s.k, false),
        ],
        current: Some("k".into()),
    };
    let config = VmConfig {
        schema: 1,
        id: "0".repeat(32),
        vm,
    };
    (config, tree)
}

fn read_all(path: &str) -> Vec<u8> {
    let d = Disk::open(Path::new(path), OpenOptions::read()).unwrap();
    let mut buf = vec![0u8; usize::try_from(SIZE).unwrap()];
    d.read_at(&mut buf, 0).unwrap();
    buf
}

/// Runs the merge's steps up to `crash` (0: journal only … 3: all but the journal's removal).
fn cut_short(s: &Setup, crash: usize) -> (VmConfig, Tree) {
    let (config, mut tree) = state(s);
    let j = Journal {
        hidden: "h".into(),
        child: Some("k".into()),
        pairs: vec![(s.k.clone(), s.base.clone())],
        repoint: vec![(s.g.clone(), s.base.clone())],
    };
    let text = serde_json::to_vec(&j).unwrap();
    std::fs::write(layers::layer_dir(&s.dir).join("merge.journal"), text).unwrap();
    if crash >= 1 {
        strata_vhd::ops::merge::merge_into_parent(
            Path::new(&s.k),
            &strata_vhd::ops::progress::Silent,
        )
        .unwrap();
    }
    if crash >= 2 {
        strata_vhd::ops::set_parent::set_parent(Path::new(&s.g), Path::new(&s.base), true).unwrap();
    }
    if crash >= 3 {
        tree.checkpoints.retain(|c| c.id != "h");
        let k = tree.checkpoints.iter_mut().find(|c| c.id == "k").unwrap();
        k.layers = vec![s.base.clone()];
        k.parent = None;
    }
    (config, tree)
}

#[test]
fn a_merge_cut_short_after_any_step_is_finished_and_reads_the_same() {
    for crash in 0..=3 {
        let root = tempfile::tempdir().unwrap();
        let s = setup(root.path());
        let want = read_all(&s.g);
        let (mut config, mut tree) = cut_short(&s, crash);
        let saved = std::cell::RefCell::new(None);
        let save = |c: &VmConfig, t: &Tree| {
            *saved.borrow_mut() = Some((c.clone(), t.clone()));
            Ok(())
        };
        assert!(layers::recover(&s.dir, &mut config, &mut tree, &save).unwrap());
        assert!(saved.borrow().is_some(), "crash point {crash}: saved");
        assert!(
            layers::pending_journal(&s.dir).is_none(),
            "crash point {crash}"
        );
        assert!(
            !Path::new(&s.k).exists(),
            "crash point {crash}: K merged away"
        );
        assert_eq!(tree.checkpoints.len(), 1, "crash point {crash}");
        assert_eq!(tree.checkpoints[0].layers, std::slice::from_ref(&s.base));
        assert_eq!(tree.checkpoints[0].parent, None);
        assert_eq!(read_all(&s.g), want, "crash point {crash}: the same bytes");
        for f in [&s.base, &s.g] {
            let r = strata_vhd::ops::check::check(Path::new(f), false).unwrap();
            assert!(r.ok(), "crash point {crash}: {f}: {:?}", r.errors);
        }
        // The sweep leaves what is referenced.
        assert!(layers::sweep(&s.dir, &config, &tree).is_empty());
    }
}

#[test]
fn collapse_merges_a_deleted_root_and_waits_for_held_files() {
    let root = tempfile::tempdir().unwrap();
    let s = setup(root.path());
    let want = read_all(&s.g);
    let (mut config, mut tree) = state(&s);
    let save = |_: &VmConfig, _: &Tree| Ok(());
    // A running VM holds its whole chain: nothing is merged, the merge waits.
    let held = [s.base.clone(), s.k.clone(), s.g.clone()];
    let busy = |f: &str| !held.iter().any(|h| h == f);
    let waiting = layers::collapse(&s.dir, &mut config, &mut tree, &busy, &save).unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(Path::new(&s.k).exists());
    // Off: merged.
    let free = |_: &str| true;
    let waiting = layers::collapse(&s.dir, &mut config, &mut tree, &free, &save).unwrap();
    assert!(waiting.is_empty());
    assert!(!Path::new(&s.k).exists());
    assert_eq!(tree.checkpoints.len(), 1);
    assert_eq!(read_all(&s.g), want);
}

#[test]
fn the_sweep_keeps_every_parent_of_what_is_named() {
    let root = tempfile::tempdir().unwrap();
    let s = setup(root.path());
    // Only Now's layer G is named (no checkpoint): K, its parent, must stay all the same.
    let (config, _) = state(&s);
    let empty = Tree::default();
    let stray = layers::make_children(&s.dir, std::slice::from_ref(&s.base)).unwrap();
    let gone = layers::sweep(&s.dir, &config, &empty);
    assert_eq!(gone, stray, "only the unreferenced layer goes");
    assert!(Path::new(&s.k).exists() && Path::new(&s.g).exists());
    // A named file missing (a moved data folder): nothing is deleted.
    let mut moved = config.clone();
    moved.vm.disks[0].path = "/nowhere/g.avhd".into();
    let stray = layers::make_children(&s.dir, std::slice::from_ref(&s.base)).unwrap();
    assert!(layers::sweep(&s.dir, &moved, &empty).is_empty());
    assert!(Path::new(&stray[0]).exists());
}
