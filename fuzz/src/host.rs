//! The host service's parsers on any bytes (the `host_config` fuzz target; also run on the seeds
//! by `crates/host/tests/fuzz_seeds.rs`, which includes this file).

/// The host service's parsers on any bytes; panics only on a bug.
pub fn host_config(data: &[u8]) {
    use strata_host::store::VmConfig;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = toml::from_str::<VmConfig>(text) {
            let again = toml::to_string_pretty(&config).expect("a parsed configuration serializes");
            let back: VmConfig = toml::from_str(&again).expect("a written configuration parses");
            assert_eq!(back, config, "vm.toml round trip");
        }
    }
    let _ = serde_json::from_slice::<strata_api::CreateVm>(data);
    let _ = serde_json::from_slice::<strata_api::SetVm>(data);
    let _ = serde_json::from_slice::<strata_api::ShutdownRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // The worker's control protocol, both ways, and the worker's readiness line.
        let _ = strata_host::worker::protocol::decode_request(text);
        let _ = strata_host::worker::protocol::decode_reply(text);
        let _ = serde_json::from_str::<strata_proc::Readiness>(text);
    }
    let _ = serde_json::from_slice::<strata_host::worker::SavedMeta>(data);
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("strata-fuzz-host-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the scratch folder");
        d
    });
    std::fs::write(dir.join("status.json"), data).unwrap();
    let _ = strata_host::status::read(dir);
    std::fs::write(dir.join("events.jsonl"), data).unwrap();
    let log = strata_host::events::EventLog::new(&dir.join("events.jsonl"));
    let _ = log.read(Some("vm"), Some(std::time::SystemTime::UNIX_EPOCH));
}
