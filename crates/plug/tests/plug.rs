//! Plug, query and unplug through the public API, with a stand-in disk server (a shell script
//! that reports readiness, and on SIGTERM records a clean end), so that records, locks, liveness
//! and undo disks are tested without the `strata` binary (its own tests serve real disks).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use strata_plug::{ErrorKind, Mode, PlugOptions, Plugs, UndoChoice, UndoOutcome, Unplugged};
use strata_vhd::ops::progress::Silent;

/// A stand-in server: `sh -c SCRIPT fake-server PATH --socket SOCKET …`.
fn server(script: &str) -> Vec<OsString> {
    ["sh", "-c", script, "fake-server"]
        .iter()
        .map(OsString::from)
        .collect()
}

const GOOD: &str = r#"trap 'printf ok > "${3%.sock}.exit"; exit 0' TERM
echo '{"status":"ready"}'
while :; do sleep 0.05; done"#;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.vhd");
    strata_vhd::create(&disk, 4 << 20, strata_vhd::NewDisk::dynamic()).unwrap();
    (dir, disk)
}

fn undo() -> PlugOptions {
    PlugOptions {
        mode: Mode::Undo,
        tcp: None,
        fuse: false,
    }
}

fn unplug(plugs: &Plugs, disk: &Path, choice: UndoChoice) -> Vec<Unplugged> {
    plugs
        .unplug(Some(disk), &mut |_| Ok(choice), &Silent)
        .unwrap()
}

#[test]
fn plug_query_unplug_with_an_undo_disk() {
    let (dir, disk) = setup();
    let plugs = Plugs::new(dir.path().join("run"), server(GOOD));
    let rec = plugs.plug(&disk, &undo()).unwrap();
    let undo_disk = rec.undo_path.clone().unwrap();
    assert!(undo_disk.exists());
    assert_eq!(
        rec.uri,
        format!("nbd+unix:///?socket={}", rec.socket.display())
    );
    assert!(rec.pid_start.is_some());
    assert_eq!(
        plugs.query(Some(&disk)).unwrap(),
        std::slice::from_ref(&rec)
    );
    let e = plugs.plug(&disk, &undo()).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::AlreadyPlugged { .. }), "{e}");
    assert!(e
        .to_string()
        .ends_with(&format!("is already plugged in at {}", rec.uri)));
    let done = unplug(&plugs, &disk, UndoChoice::Discard);
    assert_eq!(
        done,
        [Unplugged {
            path: rec.path.clone(),
            undo: Some(UndoOutcome::Discarded),
            problem: None,
        }]
    );
    assert!(!undo_disk.exists());
    assert!(plugs.query(None).unwrap().is_empty());
    let e = plugs.query(Some(&disk)).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::NotPlugged(_)), "{e}");
    let e = plugs.unplug(Some(&disk), &mut |_| Ok(UndoChoice::Commit), &Silent);
    assert!(e.unwrap_err().to_string().ends_with("is not plugged in"));
}

#[test]
fn a_server_that_fails_leaves_nothing_and_gives_its_reason() {
    let (dir, disk) = setup();
    let script = r#"echo '{"status":"failed","error":"d.vhd: open failed: in use"}'; exit 1"#;
    let plugs = Plugs::new(dir.path().join("run"), server(script));
    let e = plugs.plug(&disk, &undo()).unwrap_err();
    assert_eq!(e.to_string(), "d.vhd: open failed: in use");
    assert!(
        !disk.with_extension("vud").exists(),
        "the undo disk is removed"
    );
    assert!(plugs.query(None).unwrap().is_empty());
    // A server that ends without a word: its log is quoted.
    let plugs = Plugs::new(
        dir.path().join("run"),
        server("echo 'no such flag' >&2; exit 2"),
    );
    let e = plugs.plug(&disk, &undo()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the disk server ended without reporting ready: no such flag"
    );
}

#[test]
fn a_crashed_server_keeps_its_undo_disk_instead_of_a_commit() {
    let (dir, disk) = setup();
    let plugs = Plugs::new(dir.path().join("run"), server(GOOD));
    let rec = plugs.plug(&disk, &undo()).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &rec.pid.to_string()])
        .status()
        .unwrap()
        .success());
    // Gone (reaped by the starter's thread): no longer listed, but its record stays for unplug.
    let t = std::time::Instant::now();
    while strata_proc::start_time(rec.pid).is_some() {
        assert!(t.elapsed().as_secs() < 10, "the killed server lingers");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let done = unplug(&plugs, &disk, UndoChoice::Commit);
    let undo_disk = rec.undo_path.clone().unwrap();
    assert_eq!(done[0].undo, Some(UndoOutcome::Kept(undo_disk.clone())));
    assert!(
        done[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("stopped unexpectedly"),
        "{done:?}"
    );
    assert!(undo_disk.exists(), "kept for the user to decide");
    // The record is gone; the disk can be plugged again once the undo disk is dealt with.
    strata_vhd::ops::undo::discard(&disk).unwrap();
    let again = plugs
        .plug(
            &disk,
            &PlugOptions {
                mode: Mode::Direct,
                tcp: Some("10809".into()),
                fuse: false,
            },
        )
        .unwrap();
    assert_eq!(again.tcp_uri.as_deref(), Some("nbd://127.0.0.1:10809/"));
    let done = plugs
        .unplug(None, &mut |_| panic!("no undo disk to decide on"), &Silent)
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].undo.as_ref(), done[0].problem.as_ref()),
        (None, None)
    );
}
