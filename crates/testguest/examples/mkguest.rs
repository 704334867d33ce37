fn main() {
    let a: Vec<String> = std::env::args().collect();
    let script = std::fs::read_to_string(&a[2]).unwrap();
    let mods: Vec<&str> = a[3..].iter().map(String::as_str).collect();
    let g = strata_testguest::build(std::path::Path::new(&a[1]), &mods, &script);
    println!("{} {}", g.kernel.display(), g.initrd.display());
}
