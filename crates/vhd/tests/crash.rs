//! Crash test: a writer process is killed with SIGKILL at hundreds of random points. After each
//! kill, `check` passes and every write acknowledged before the writer's last completed flush reads
//! back. The writer is this same test binary, re-run with `STRATA_CRASH_WRITER` set.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_vhd::{Disk, NewDisk, OpenOptions};

const SIZE: u64 = 16 << 20;

/// A tiny deterministic generator (xorshift), so the writer needs no shared state.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The writer: logs each write's intent before doing it and "F" after each completed flush.
#[test]
fn crash_writer() {
    let Ok(disk_path) = std::env::var("STRATA_CRASH_WRITER") else {
        return;
    };
    let log_path = std::env::var("STRATA_CRASH_LOG").unwrap();
    let seed: u64 = std::env::var("STRATA_CRASH_SEED").unwrap().parse().unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log_path)
        .unwrap();
    let disk = Disk::open(&disk_path, OpenOptions::write()).unwrap();
    let mut rng = Rng(seed | 1);
    loop {
        for _ in 0..(1 + rng.next() % 16) {
            let len = 1 + rng.next() % (192 * 1024);
            let off = rng.next() % (SIZE - len);
            let val = u8::try_from(1 + rng.next() % 255).unwrap();
            log.write_all(format!("W {off} {len} {val}\n").as_bytes())
                .unwrap();
            disk.write_at(&vec![val; usize::try_from(len).unwrap()], off)
                .unwrap();
        }
        disk.flush().unwrap();
        log.write_all(b"F\n").unwrap();
    }
}

fn run_and_kill(disk: &Path, log: &Path, seed: u64, delay: Duration) {
    std::fs::write(log, b"").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer", "--nocapture", "--test-threads=1"])
        .env("STRATA_CRASH_WRITER", disk)
        .env("STRATA_CRASH_LOG", log)
        .env("STRATA_CRASH_SEED", seed.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Applies the log to `model`: writes before the last "F" must be present; bytes written after
/// it may hold either value and are marked uncertain.
fn expected(model: &mut [u8], log: &str) -> Vec<bool> {
    let lines: Vec<&str> = log.lines().collect();
    let last_flush = lines.iter().rposition(|l| *l == "F");
    let mut uncertain = vec![false; model.len()];
    for (i, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] != "W" || f.len() != 4 {
            continue;
        }
        let off = usize::try_from(f[1].parse::<u64>().unwrap()).unwrap();
        let len = usize::try_from(f[2].parse::<u64>().unwrap()).unwrap();
        let val: u8 = f[3].parse().unwrap();
        if last_flush.is_some_and(|lf| i < lf) {
            model[off..off + len].fill(val);
        } else {
            uncertain[off..off + len].fill(true);
        }
    }
    uncertain
}

fn crash_loop(disk: &Path, rounds: u64, seed0: u64) {
    let log = disk.with_extension("log");
    let mut model = vec![0u8; usize::try_from(SIZE).unwrap()];
    {
        let d = Disk::open(disk, OpenOptions::read()).unwrap();
        d.read_at(&mut model, 0).unwrap();
    }
    let mut rng = Rng(seed0);
    let mut flushed_rounds = 0;
    for round in 0..rounds {
        let delay = Duration::from_millis(5 + rng.next() % 60);
        run_and_kill(disk, &log, seed0 * 1000 + round, delay);
        let text = std::fs::read_to_string(&log).unwrap();
        if text.lines().any(|l| l == "F") {
            flushed_rounds += 1;
        }
        let uncertain = expected(&mut model, &text);
        let report = strata_vhd::ops::check::check(disk, false).unwrap();
        assert!(
            report.ok(),
            "round {round}: check failed: {:?}",
            report.errors
        );
        let d = Disk::open(disk, OpenOptions::read()).unwrap();
        let mut actual = vec![0u8; model.len()];
        d.read_at(&mut actual, 0).unwrap();
        let bad = (0..model.len()).find(|&i| !uncertain[i] && actual[i] != model[i]);
        assert_eq!(bad, None, "round {round}: a flushed write was lost");
        model = actual;
    }
    assert!(
        flushed_rounds > rounds / 2,
        "the writer rarely reached a flush: {flushed_rounds}/{rounds}"
    );
}

#[test]
fn sigkill_dynamic_disk() {
    if std::env::var("STRATA_CRASH_WRITER").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crash.vhd");
    strata_vhd::create(
        &p,
        SIZE,
        NewDisk::Dynamic {
            block_size: 64 * 1024,
        },
    )
    .unwrap();
    crash_loop(&p, 150, 7);
}

#[test]
fn sigkill_differencing_disk() {
    if std::env::var("STRATA_CRASH_WRITER").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    strata_vhd::create(&base, SIZE, NewDisk::dynamic()).unwrap();
    let d = Disk::open(&base, OpenOptions::write()).unwrap();
    for i in 0..SIZE / (1 << 20) {
        d.write_at(&vec![u8::try_from(i + 1).unwrap(); 300_000], i << 20)
            .unwrap();
    }
    d.close().unwrap();
    let child = dir.path().join("child.vhd");
    strata_vhd::create_differencing(&child, &base).unwrap();
    crash_loop(&child, 150, 11);
}
