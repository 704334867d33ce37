//! Any bytes as a VHD file: open (read-only, no lock, no parents), read, inspect, check; plus the
//! footer, header and locator parsers on the raw bytes. Nothing may panic.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The file each input is written to: in /dev/shm when there is one (no disk I/O), in a folder of
/// its own per process so that parallel jobs (`-jobs=N`) do not share it. The file is removed
/// after each input; folders left by processes that have ended are removed at start.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        remove_stale(&base);
        let dir = base.join(format!("strata-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir.join("input.vhd")
    })
}

/// Removes the scratch folders of fuzzing processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("strata-fuzz-")) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    strata_fuzz::parse_structures(data);
    let path = scratch();
    std::fs::write(path, data).expect("write the input file");
    let _ = strata_fuzz::exercise(path);
    let _ = std::fs::remove_file(path);
});
