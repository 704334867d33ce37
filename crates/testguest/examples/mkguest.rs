//! Builds a tiny guest: `mkguest [--agent] DIR INIT_SCRIPT [MODULE…]` writes DIR/initrd.cpio
//! (busybox and the modules, with INIT_SCRIPT as /init's body) and prints "KERNEL INITRD". With
//! `--agent`, the initramfs also carries qemu-ga ([`AGENT_BINARY`] and its libraries) and the
//! modules its virtio-serial port needs, and /init runs [`START_AGENT`] before INIT_SCRIPT. Used by
//! `scripts/first-vm.sh` and the benchmarks.

use std::path::Path;

use strata_testguest::{build_with, Options, AGENT_BINARY, AGENT_MODULES, START_AGENT};

fn main() {
    let mut a: Vec<String> = std::env::args().skip(1).collect();
    let agent = a.first().is_some_and(|x| x == "--agent");
    if agent {
        a.remove(0);
    }
    if a.len() < 2 {
        eprintln!("usage: mkguest [--agent] DIR INIT_SCRIPT [MODULE...]");
        std::process::exit(2);
    }
    let script = std::fs::read_to_string(&a[1]).unwrap_or_else(|e| {
        eprintln!("mkguest: {}: {e}", a[1]);
        std::process::exit(1)
    });
    let mut modules: Vec<&str> = a[2..].iter().map(String::as_str).collect();
    let mut binaries: Vec<&Path> = Vec::new();
    let init = if agent {
        modules.extend(
            AGENT_MODULES
                .iter()
                .filter(|m| !a[2..].iter().any(|x| x == *m)),
        );
        binaries.push(Path::new(AGENT_BINARY));
        format!("{START_AGENT}\n{script}")
    } else {
        script
    };
    let g = build_with(
        Path::new(&a[0]),
        &Options {
            modules: &modules,
            binaries: &binaries,
            init: &init,
        },
    );
    println!("{} {}", g.kernel.display(), g.initrd.display());
}
