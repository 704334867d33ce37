//! Runs the `host_config` fuzz target's code (`fuzz/src/host.rs`) on its seeds and on damaged
//! variants of them: nothing may panic, and a parsed `vm.toml` must survive a round trip.

#[path = "../../../fuzz/src/host.rs"]
mod host;

#[test]
fn the_host_parsers_survive_the_seeds_and_their_mutations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/host_config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        host::host_config(&data);
        // Every truncation, and every byte flipped, of the seed.
        for cut in 0..data.len() {
            host::host_config(&data[..cut]);
            let mut flipped = data.clone();
            flipped[cut] ^= 0x5a;
            host::host_config(&flipped);
            n += 2;
        }
    }
    assert!(n > 100, "the seeds are there");
}
