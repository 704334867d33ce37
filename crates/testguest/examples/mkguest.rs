//! Builds a tiny guest: `mkguest DIR INIT_SCRIPT [MODULE…]` writes DIR/initrd.cpio (busybox and
//! the modules, with INIT_SCRIPT as /init's body) and prints "KERNEL INITRD". Used by
//! `scripts/first-vm.sh` and the benchmarks.

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: mkguest DIR INIT_SCRIPT [MODULE...]");
        std::process::exit(2);
    }
    let script = std::fs::read_to_string(&a[2]).unwrap_or_else(|e| {
        eprintln!("mkguest: {}: {e}", a[2]);
        std::process::exit(1)
    });
    let modules: Vec<&str> = a[3..].iter().map(String::as_str).collect();
    let g = strata_testguest::build(std::path::Path::new(&a[1]), &modules, &script);
    println!("{} {}", g.kernel.display(), g.initrd.display());
}
