//! # strata-testguest
//!
//! Test support for real guests: builds a tiny Linux guest from the host's stock Debian kernel
//! (`linux-image-amd64`) and an initramfs made of `busybox-static`, the kernel modules the test
//! needs (with their dependencies, from `modules.dep`), any extra host binaries (with the shared
//! libraries `ldd` finds for them) and an `/init` script; and runs QEMU under TCG (KVM cannot run a
//! guest on the project's machines) with a serial console captured to a string. Nothing is
//! downloaded: everything comes from Debian packages `scripts/install-deps.sh` installs.
//!
//! [`build`] takes modules and an init script; [`build_with`] takes [`Options`], which add host
//! binaries. The initramfs always has `/bin` (busybox applets), `/dev` (devtmpfs), `/proc`, `/sys`,
//! `/tmp`, `/run` and `/var/run`.
//!
//! ## The QEMU guest agent
//!
//! A guest can run Debian's real `qemu-ga` (package `qemu-guest-agent`, QEMU 10 from
//! bookworm-backports) on a virtio-serial port:
//!
//! - binaries: [`AGENT_BINARY`] (`/usr/sbin/qemu-ga`; its libraries and the ELF interpreter come
//!   along);
//! - modules: [`AGENT_MODULES`] (`virtio_pci` for the PCI transport, `virtio_console` for
//!   virtio-serial);
//! - QEMU: [`agent_qemu_args`] adds a `virtio-serial-pci` controller and a port named
//!   [`AGENT_PORT`] (`org.qemu.guest_agent.0`) backed by a Unix socket the test connects to;
//! - init: [`START_AGENT`], a shell snippet. There is no udev in the guest, so the
//!   `/dev/virtio-ports/org.qemu.guest_agent.0` symlink never appears: ports show up only as
//!   `/dev/vportNpM`, and a port's name is in `/sys/class/virtio-ports/vportNpM/name` (it arrives
//!   from the host shortly after the module loads, so the snippet polls for it). The snippet starts
//!   `qemu-ga -d -m virtio-serial -p /dev/vportNpM -t /run` (pid file in `/run`, log in
//!   `/tmp/qemu-ga.log`) and installs a `/sbin/shutdown` that runs `poweroff -f`, so that
//!   `guest-shutdown` powers the guest off (QEMU then exits, see [`run`]).
//!
//! ```no_run
//! # use std::path::Path;
//! # use std::time::Duration;
//! use strata_testguest::{agent_qemu_args, build_with, run, Options, AGENT_BINARY, AGENT_MODULES, START_AGENT};
//! let dir = Path::new("/tmp/guest");
//! let init = format!("{START_AGENT}\nsleep 600\npoweroff -f");
//! let guest = build_with(
//!     dir,
//!     &Options { modules: AGENT_MODULES, binaries: &[Path::new(AGENT_BINARY)], init: &init },
//! );
//! // `run` blocks until QEMU exits: call it in a thread, and meanwhile talk QMP (one JSON object
//! // a line) to the agent on dir/qga.sock; `guest-shutdown` ends the run.
//! let result = run(&guest, 256, &agent_qemu_args(&dir.join("qga.sock")), Duration::from_secs(300));
//! ```

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

/// The guest agent's binary (package `qemu-guest-agent`).
pub const AGENT_BINARY: &str = "/usr/sbin/qemu-ga";

/// The kernel modules the guest agent's virtio-serial port needs.
pub const AGENT_MODULES: &[&str] = &["virtio_pci", "virtio_console"];

/// The name of the agent's virtio-serial port (what QEMU and libvirt use).
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// A busybox `sh` snippet for an init script: waits up to 30 s for the virtio-serial port named
/// [`AGENT_PORT`] (found through `/sys/class/virtio-ports/vport*/name`: without udev there is no
/// `/dev/virtio-ports/` symlink), sets `QGA_PORT` to its `/dev/vportNpM`, installs a
/// `/sbin/shutdown` that runs `poweroff -f` (what `guest-shutdown` calls) and starts
/// [`AGENT_BINARY`] as a daemon on the port, with its state and pid file in `/run` and its log in
/// `/tmp/qemu-ga.log`. It prints `qga: started on /dev/vportNpM`, `qga: failed to start on …` or
/// `qga: no port`.
pub const START_AGENT: &str = r#"QGA_PORT=""
for _ in $(seq 1 300); do
  for n in /sys/class/virtio-ports/vport*/name; do
    if [ -f "$n" ] && [ "$(cat "$n")" = org.qemu.guest_agent.0 ]; then
      p="${n%/name}"; QGA_PORT="/dev/${p##*/}"
    fi
  done
  [ -n "$QGA_PORT" ] && [ -c "$QGA_PORT" ] && break
  QGA_PORT=""
  sleep 0.1
done
mkdir -p /sbin /run /var/run
printf '#!/bin/sh
exec poweroff -f
' > /sbin/shutdown
chmod 755 /sbin/shutdown
if [ -n "$QGA_PORT" ]; then
  if /usr/sbin/qemu-ga -d -m virtio-serial -p "$QGA_PORT" -t /run -f /run/qemu-ga.pid \
    -l /tmp/qemu-ga.log; then
    echo "qga: started on $QGA_PORT"
  else
    echo "qga: failed to start on $QGA_PORT"
  fi
else
  echo "qga: no port"
fi"#;

/// QEMU arguments for [`run`] that give the guest a `virtio-serial-pci` controller and a port
/// named [`AGENT_PORT`] whose host side is a Unix socket QEMU listens on at `socket` (without
/// waiting for a client: connect once QEMU has started).
pub fn agent_qemu_args(socket: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!(
            "socket,id=qga0,path={},server=on,wait=off",
            socket.display()
        ),
        "-device".into(),
        format!("virtserialport,chardev=qga0,name={AGENT_PORT}"),
    ]
}

/// The shared libraries `binary` loads, as `ldd` resolves them on the host, the ELF interpreter
/// (`/lib64/ld-linux-x86-64.so.2`) included; empty for a static binary. Panics if a library is
/// not found.
pub fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd (package libc-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable" (static binaries) is the only failure we accept.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("not a dynamic executable") || err.contains("not a dynamic executable"),
            "ldd {}: {text}{err}",
            binary.display()
        );
        return Vec::new();
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2
        // (0x…)", "linux-vdso.so.1 (0x…)" (in the kernel: nothing to copy), "statically linked".
        let target = match line.split_once("=>") {
            Some((name, path)) => {
                let path = path.trim();
                assert!(
                    !path.starts_with("not found"),
                    "{}: {} not found",
                    binary.display(),
                    name.trim()
                );
                path
            }
            None => line.trim(),
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') && !libs.iter().any(|l: &PathBuf| l == Path::new(path)) {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// What [`build_with`] puts in a guest's initramfs besides busybox.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// Kernel modules to load before `init` runs (names such as "virtio_blk"); their dependencies
    /// come along.
    pub modules: &'a [&'a str],
    /// Host binaries (absolute paths), each copied to the same path in the initramfs with the
    /// shared libraries it needs (see [`shared_libraries`]), also at their host paths.
    pub binaries: &'a [&'a Path],
    /// The body of `/init` (a busybox `sh` script), run once the modules are loaded and `/proc`,
    /// `/sys`, `/dev` are mounted; it should end with `poweroff -f`.
    pub init: &'a str,
}

/// Builds a guest in `dir` whose `/init` is `init` (a busybox `sh` script; the modules listed are
/// loaded before it runs, and `/proc`, `/sys`, `/dev` are mounted). Same as [`build_with`] without
/// extra binaries.
pub fn build(dir: &Path, modules: &[&str], init: &str) -> Guest {
    build_with(
        dir,
        &Options {
            modules,
            binaries: &[],
            init,
        },
    )
}

/// Copies the host file `host` (following symbolic links) to the same path under `root`.
fn copy_at_host_path(root: &Path, host: &Path) {
    let rel = host
        .strip_prefix("/")
        .unwrap_or_else(|_| panic!("{}: not an absolute path", host.display()));
    let to = root.join(rel);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(host, &to).unwrap_or_else(|e| panic!("copy {}: {e}", host.display()));
}

/// Builds a guest in `dir` (which holds the work tree `initramfs/` and the result `initrd.cpio`)
/// from `options`: busybox, the modules, the binaries with their libraries and `/init`.
pub fn build_with(dir: &Path, options: &Options) -> Guest {
    let Options {
        modules,
        binaries,
        init,
    } = *options;
    let (kernel, version) = host_kernel();
    let root = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "lib/modules",
        "tmp",
        "run",
        "var/run",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for binary in binaries {
        copy_at_host_path(&root, binary);
        for lib in shared_libraries(binary) {
            copy_at_host_path(&root, &lib);
        }
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
