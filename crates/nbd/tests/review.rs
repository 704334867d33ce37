//! Regression tests from a review of the storage server (NBD server, plug/unplug/mount).
//!
//! Tests that drive the `strata` binary need it built first (`cargo build -p strata-cli`); they
//! find it beside this test binary (`target/debug/strata`). Tests that need root, FUSE and loop
//! devices fail where those are missing (scripts/install-deps.sh installs them).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{go, read_n, request};
use strata_nbd::{Export, VhdBackend};
use strata_vhd::{Disk, NewDisk, OpenOptions};

const SIZE: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers: a raw NBD client.

// ---------------------------------------------------------------------------------------------
// Helpers: a server in a child process (this test binary, running `helper_server`), so that
// resource limits and memory can be applied to and measured on the server alone.

/// Not a test: the body of the child server process. Does nothing unless REVIEW_DISK is set.
#[test]
fn helper_server() {
    let Ok(disk) = std::env::var("REVIEW_DISK") else {
        return;
    };
    let socket = std::env::var("REVIEW_SOCKET").unwrap();
    let d = Disk::open(&disk, OpenOptions::write()).unwrap();
    let l = UnixListener::bind(&socket).unwrap();
    let export = Export {
        name: String::new(),
        backend: Arc::new(VhdBackend::new(d)),
    };
    let r = strata_nbd::serve_unix(l, export);
    eprintln!("serve_unix returned: {r:?}");
    std::process::exit(3);
}

struct ChildServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the helper server on a new 64 MiB dynamic disk; `nofile` limits its open files.
fn child_server(nofile: Option<u32>) -> ChildServer {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.vhd");
    strata_vhd::create(&disk, SIZE, NewDisk::dynamic()).unwrap();
    let socket = dir.path().join("s.sock");
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "helper_server",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("REVIEW_DISK", &disk)
    .env("REVIEW_SOCKET", &socket)
    .stdout(Stdio::null());
    let child = cmd.spawn().unwrap();
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "helper did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ChildServer {
        child,
        socket,
        _dir: dir,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The NBD server.

/// `serve_unix` returns on the first `accept` error (`conn?`): a client that opens connections
/// until the server reaches its open-file limit (EMFILE), or any transient accept error
/// (ECONNABORTED, ENFILE, ENOBUFS), ends the accept loop — and `strata disk serve` then exits,
/// without its final flush. Every other client of the disk loses it.
#[test]
fn accept_error_ends_the_whole_server() {
    let s = child_server(Some(48));
    // A flood of connections that never get past the greeting.
    let flood: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(&s.socket).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    let mut s = s;
    let status = s.child.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the server process exited ({status:?}) after a connection flood hit its fd limit"
    );
    // The flood is gone: a well-behaved client must be served again.
    let mut c = go(&s.socket);
    c.write_all(&request(0, 0, 1, 0, 4096)).unwrap();
    let r = read_n(&mut c, 16);
    assert_eq!(&r[4..8], &[0, 0, 0, 0]);
}

/// Every connection may pin two buffers of up to 32 MiB (the request buffer and the copy made by
/// `write_simple_reply`) for as long as its client does not read the reply, and connections are
/// not limited: a few stalled readers make the server hold hundreds of MiB (a hostile client over
/// `--tcp`, or many, can exhaust the host's memory and the server is then killed or aborts).
#[test]
fn stalled_readers_pin_64_mib_each() {
    let s = child_server(None);
    let pid = s.child.id();
    // Warm up: one ordinary read so that allocator state is comparable.
    let mut warm = go(&s.socket);
    warm.write_all(&request(0, 0, 1, 0, 4096)).unwrap();
    read_n(&mut warm, 16 + 4096);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    let stalled: Vec<UnixStream> = (0..4)
        .map(|i| {
            let mut c = go(&s.socket);
            c.write_all(&request(0, 0, i, 0, 32 << 20)).unwrap();
            c // never reads the reply
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    drop(stalled);
    assert!(
        grown_mib < 64,
        "4 clients that do not read their 32 MiB replies made the server grow by {grown_mib} MiB"
    );
}

// ---------------------------------------------------------------------------------------------
// plug / unplug / mount through the `strata` binary.

fn strata() -> PathBuf {
    // target/debug/deps/review-… → target/debug/strata
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("strata");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p strata-cli` first",
        bin.display()
    );
    bin
}

fn run_strata(run_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(strata())
        .args(args)
        .env("STRATA_RUN_DIR", run_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Pids of `strata disk serve` processes serving a path under `dir` (processes these tests
/// started).
fn servers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if args.len() > 3
            && args[1] == "disk"
            && args[2] == "serve"
            && args[3].contains(&needle)
            && !stat.contains(") Z ")
        {
            out.push(pid);
        }
    }
    out
}

fn kill_servers_under(dir: &Path) {
    for pid in servers_under(dir) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// Two `plug --read-only` of one disk at the same time: `plug` checks for a record, starts the
/// server and saves the record with no lock in between, and read-only servers share the disk's
/// lock, so both start. The second `serve` deletes the first one's socket (`remove_file` before
/// `bind`) and the records overwrite each other: one server is orphaned, invisible to `query`,
/// never stopped by `unplug`, and holds a shared lock on the VHD that refuses every later writer.
#[test]
fn concurrent_read_only_plugs_orphan_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let disk = dir.path().join("d.vhd");
    strata_vhd::create(&disk, SIZE, NewDisk::dynamic()).unwrap();
    let disk_s = disk.to_str().unwrap().to_string();
    let mut both_started = false;
    for _ in 0..10 {
        let spawn = || {
            Command::new(strata())
                .args(["disk", "plug", "--read-only", &disk_s])
                .env("STRATA_RUN_DIR", &run)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        both_started = a.status.success() && b.status.success();
        if both_started {
            break;
        }
        let _ = run_strata(&run, &["disk", "unplug", "--all"]);
    }
    let unplug = run_strata(&run, &["disk", "unplug", &disk_s]);
    let left = servers_under(dir.path());
    let writable = Disk::open(&disk, OpenOptions::write()).map(|_| ());
    kill_servers_under(dir.path());
    assert!(
        !both_started,
        "two concurrent plugs of one disk both succeeded (unplug: {})",
        String::from_utf8_lossy(&unplug.stderr)
    );
    assert!(
        left.is_empty(),
        "servers left running after unplug: {left:?}"
    );
    assert!(writable.is_ok(), "the disk stays locked: {writable:?}");
}

/// A record whose server died (crash, OOM kill, SIGKILL, or a run folder in /tmp that outlived
/// a reboot) keeps its pid; `alive()` only asks whether *some* process has that pid. Once the
/// pid is reused, `plug` refuses ("already plugged in") and `unplug` sends SIGTERM to the
/// unrelated process (and waits up to 60 s for it).
#[test]
fn unplug_signals_an_unrelated_process_that_reused_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let disk = dir.path().join("d.vhd");
    strata_vhd::create(&disk, SIZE, NewDisk::dynamic()).unwrap();
    let canon = std::fs::canonicalize(&disk).unwrap();
    let meta = std::fs::metadata(&canon).unwrap();
    let key = format!("{:x}-{:x}", meta.dev(), meta.ino());
    // Stands for whatever process got the dead server's pid.
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let socket = run.join(format!("{key}.sock"));
    let record = format!(
        r#"{{"path":{:?},"uri":"nbd+unix:///?socket={}","tcp_uri":null,"mode":"direct",
            "undo_path":null,"mount_point":null,"loop_device":null,"socket":{:?},"pid":{}}}"#,
        canon.to_str().unwrap(),
        socket.display(),
        socket.to_str().unwrap(),
        bystander.id()
    );
    std::fs::write(run.join(format!("{key}.json")), record).unwrap();
    let plug = run_strata(&run, &["disk", "plug", "--direct", disk.to_str().unwrap()]);
    let unplug = run_strata(&run, &["disk", "unplug", disk.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(100));
    let bystander_status = bystander.try_wait().unwrap();
    let _ = bystander.kill();
    let _ = bystander.wait();
    kill_servers_under(dir.path());
    assert!(
        bystander_status.is_none(),
        "unplug killed an unrelated process ({bystander_status:?}); unplug said: {}",
        String::from_utf8_lossy(&unplug.stdout)
    );
    assert!(
        plug.status.success(),
        "plug refused because of a stale record: {}",
        String::from_utf8_lossy(&plug.stderr)
    );
}

fn can_mount() -> bool {
    rustix_is_root()
        && Path::new("/dev/fuse").exists()
        && Command::new("losetup")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        && Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `unplug` of a mounted disk runs `umount` and gives up when it fails. When the file system is
/// no longer mounted (the user ran `umount`, or a reboot of the mount namespace, or a previous
/// unplug that failed after unmounting), `umount` fails with "not mounted" and the disk can
/// never be unplugged: the server, its loop device and its undo disk stay until killed by hand.
#[test]
fn unplug_after_a_manual_umount_fails_forever() {
    assert!(
        can_mount(),
        "this test needs root, /dev/fuse, losetup and mkfs.ext4 (scripts/install-deps.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let disk = dir.path().join("d.vhd");
    let raw = dir.path().join("raw.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&raw).unwrap().set_len(SIZE).unwrap();
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&raw)
        .status()
        .unwrap()
        .success());
    strata_vhd::create(&disk, SIZE, NewDisk::dynamic()).unwrap();
    {
        let d = Disk::open(&disk, OpenOptions::write()).unwrap();
        let bytes = std::fs::read(&raw).unwrap();
        for (i, chunk) in bytes.chunks(65536).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                d.write_at(chunk, i as u64 * 65536).unwrap();
            }
        }
        d.close().unwrap();
    }
    let disk_s = disk.to_str().unwrap();
    let m = run_strata(
        &run,
        &["disk", "mount", "--direct", disk_s, mnt.to_str().unwrap()],
    );
    assert!(
        m.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let rec_text = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    let unplug = run_strata(&run, &["disk", "unplug", disk_s]);
    // Clean up whatever is left: loop device, server, FUSE mount.
    if !unplug.status.success() {
        if let Some(dev) = rec_text
            .lines()
            .find(|l| l.contains("\"loop_device\""))
            .and_then(|l| l.split('"').nth(3))
        {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        std::thread::sleep(Duration::from_millis(300));
        for pid in servers_under(dir.path()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(500));
        kill_servers_under(dir.path());
    }
    assert!(
        unplug.status.success(),
        "unplug after a manual umount: {}",
        String::from_utf8_lossy(&unplug.stderr)
    );
}

/// TRIM and WRITE_ZEROES free whole blocks, but `Sparse::unmap` never lets the space be reused
/// while the disk is open (`allocate` only appends at `data_end`): a client that writes and
/// trims the same block over and over (a guest with online discard and file churn, fstrim, or a
/// hostile client) grows the VHD file without bound — here 100 × 2 MiB for a 16 MiB disk — until
/// the host file system is full or the 2 TiB VHD offset limit makes every allocation fail.
#[test]
fn write_trim_cycles_grow_the_file_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.vhd");
    let size: u64 = 16 << 20;
    strata_vhd::create(&path, size, NewDisk::dynamic()).unwrap();
    let disk = Disk::open(&path, OpenOptions::write()).unwrap();
    let socket = dir.path().join("s.sock");
    let l = UnixListener::bind(&socket).unwrap();
    let export = Export {
        name: String::new(),
        backend: Arc::new(VhdBackend::new(disk)),
    };
    std::thread::spawn(move || strata_nbd::serve_unix(l, export));
    let mut c = go(&socket);
    let data = vec![0x5Au8; 2 << 20];
    for i in 0..100u64 {
        let mut w = request(1, 0, i, 0, 2 << 20);
        w.extend_from_slice(&data);
        c.write_all(&w).unwrap();
        assert_eq!(&read_n(&mut c, 16)[4..8], &[0, 0, 0, 0]);
        c.write_all(&request(4, 0, i, 0, 2 << 20)).unwrap(); // TRIM
        assert_eq!(&read_n(&mut c, 16)[4..8], &[0, 0, 0, 0]);
        if i % 10 == 9 {
            c.write_all(&request(3, 0, i, 0, 0)).unwrap(); // FLUSH
            assert_eq!(&read_n(&mut c, 16)[4..8], &[0, 0, 0, 0]);
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        len <= 2 * size,
        "a {} MiB disk with at most one block in use grew to {} MiB",
        size >> 20,
        len >> 20
    );
}
