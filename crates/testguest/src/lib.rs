//! # strata-testguest
//!
//! Test support for real guests: builds a tiny Linux guest from the host's stock Debian kernel
//! (`linux-image-amd64`) and an initramfs made of `busybox-static`, the kernel modules the test
//! needs (with their dependencies, from `modules.dep`) and an `/init` script; and runs QEMU under
//! TCG (KVM cannot run a guest on the project's machines) with a serial console captured to a
//! string. Nothing is downloaded: everything comes from Debian packages `scripts/install-deps.sh`
//! installs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bootable guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The kernel image (`/boot/vmlinuz-…`).
    pub kernel: PathBuf,
    /// The initramfs built for the test.
    pub initrd: PathBuf,
}

/// The newest kernel in /boot that has its modules installed, as (image, version).
pub fn host_kernel() -> (PathBuf, String) {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .expect("/boot is readable")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&version)
                .join("modules.dep")
                .exists()
                .then(|| (Path::new("/boot").join(&name), version))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.pop().expect(
        "no kernel in /boot with modules: install linux-image-amd64 (scripts/install-deps.sh)",
    )
}

/// Module files (relative to /lib/modules/VERSION) to load for `wanted` (names such as
/// "virtio_blk"), dependencies first, each once.
pub fn module_load_order(version: &str, wanted: &[&str]) -> Vec<String> {
    let dep = std::fs::read_to_string(format!("/lib/modules/{version}/modules.dep"))
        .expect("modules.dep");
    let mut order: Vec<String> = Vec::new();
    for name in wanted {
        let file = format!("/{name}.ko");
        let line = dep
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|m| m.ends_with(&file) || m.ends_with(&file.replace('_', "-")))
            })
            .unwrap_or_else(|| panic!("module {name} not found in modules.dep"));
        let (module, deps) = line.split_once(':').expect("modules.dep line");
        // modules.dep lists a module's dependencies deepest last: load them in reverse.
        for m in deps.split_whitespace().rev().chain(std::iter::once(module)) {
            if !order.iter().any(|o| o == m) {
                order.push(m.to_string());
            }
        }
    }
    order
}

/// Builds a guest in `dir` whose `/init` is `init` (a busybox `sh` script; the modules listed are
/// loaded before it runs, and `/proc`, `/sys`, `/dev` are mounted).
pub fn build(dir: &Path, modules: &[&str], init: &str) -> Guest {
    let (kernel, version) = host_kernel();
    let root = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "dev", "proc", "sys", "lib/modules", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox-static");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    let mut loads = String::new();
    for m in module_load_order(&version, modules) {
        let name = Path::new(&m)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::fs::copy(
            format!("/lib/modules/{version}/{m}"),
            root.join("lib/modules").join(&name),
        )
        .unwrap();
        loads.push_str(&format!("insmod /lib/modules/{name} 2>/dev/null\n"));
    }
    let script = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n{loads}{init}\n"
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let initrd = dir.join("initrd.cpio");
    let list = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .output()
        .expect("find");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&initrd).unwrap())
        .spawn()
        .expect("cpio (package cpio)");
    {
        use std::io::Write;
        cpio.stdin.take().unwrap().write_all(&list.stdout).unwrap();
    }
    assert!(cpio.wait().unwrap().success(), "cpio failed");
    Guest { kernel, initrd }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct Run {
    /// Everything the serial console printed.
    pub console: String,
    /// Whether QEMU exited by itself (false: killed at the time limit).
    pub exited: bool,
}

/// Boots `guest` under TCG with `extra` QEMU arguments (disks …); returns when QEMU exits (the
/// guest powers off) or after `limit`.
pub fn run(guest: &Guest, memory_mib: u32, extra: &[String], limit: Duration) -> Run {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            &memory_mib.to_string(),
            "-nographic",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (package qemu-system-x86)");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let mut console = reader.join().unwrap();
    if !err.is_empty() {
        console.push_str("\n[qemu stderr]\n");
        console.push_str(&err);
    }
    Run { console, exited }
}
