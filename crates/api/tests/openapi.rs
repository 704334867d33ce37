//! Checks `docs/openapi.json` against the code: its routes against [`strata_api::ROUTES`], its
//! references, and each schema against what serde really does with the Rust type (field names,
//! required fields, nullable fields, defaults, refused unknown fields, enum values). Each check
//! returns its problems as text; the `*_can_fail` tests break a copy of the document and make sure
//! the check notices.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use strata_api::*;

const SCHEMAS: &str = "#/components/schemas/";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "docs/openapi.json: {what}:\n  {}",
        problems.join("\n  ")
    );
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// "in the document, not in the code" and the reverse, for two sets of names.
fn differences(what: &str, doc: &BTreeSet<String>, code: &BTreeSet<String>) -> Vec<String> {
    differences_with(what, doc, code, "the code")
}

/// The same, comparing with `other` rather than with the code.
fn differences_with(
    what: &str,
    doc: &BTreeSet<String>,
    other: &BTreeSet<String>,
    other_name: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let extra: Vec<&String> = doc.difference(other).collect();
    let missing: Vec<&String> = other.difference(doc).collect();
    if !extra.is_empty() {
        out.push(format!(
            "{what}: in openapi.json but not in {other_name}: {extra:?}"
        ));
    }
    if !missing.is_empty() {
        out.push(format!(
            "{what}: in {other_name} but not in openapi.json: {missing:?}"
        ));
    }
    out
}

fn schema<'a>(spec: &'a Value, name: &str) -> Option<&'a Value> {
    spec.pointer(&format!("/components/schemas/{name}"))
}

/// Every operation: (METHOD, path, path item, operation).
fn operations(spec: &Value) -> Vec<(String, String, &Value, &Value)> {
    let mut out = Vec::new();
    if let Some(paths) = spec.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    out.push((m.to_uppercase(), path.clone(), item, op));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Routes.

fn check_routes(spec: &Value) -> Vec<String> {
    let doc: BTreeSet<String> = operations(spec)
        .iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    let code: BTreeSet<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    let mut problems = differences("routes (strata_api::ROUTES)", &doc, &code);
    if code.len() != ROUTES.len() {
        problems.push("strata_api::ROUTES lists a route twice".to_string());
    }
    problems
}

/// The parameters of `{...}` in `path`.
fn template_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

fn check_operations(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for (method, path, item, op) in operations(spec) {
        let at = format!("{method} {path}");
        for field in ["operationId", "summary", "description"] {
            if op
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{at}: no {field}"));
            }
        }
        if let Some(id) = op.get("operationId").and_then(Value::as_str) {
            if !ids.insert(id.to_string()) {
                problems.push(format!("{at}: operationId '{id}' is used twice"));
            }
        }
        // Path parameters (of the path item and the operation) are exactly the template's.
        let params: Vec<&Value> = [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p.get("in") == Some(&json!("path")))
            .map(|p| {
                if p.get("required") != Some(&json!(true)) {
                    problems.push(format!("{at}: path parameter {p} is not required"));
                }
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        problems.extend(differences_with(
            &format!("{at}: path parameters"),
            &in_path,
            &template_names(&path),
            "the path template",
        ));
        // One success status: 201 on create, 204 on delete, 200 otherwise; errors are ApiError.
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            problems.push(format!("{at}: no responses"));
            continue;
        };
        // Deleting a part of a switch or VM (a reservation, a forward, a NIC, a checkpoint) replies
        // 200 with it; taking a checkpoint replies 201 with the VM's checkpoints, a clone 201 with it.
        let expected = match (method.as_str(), path.as_str()) {
            (
                "POST",
                "/v1/vms"
                | "/v1/switches"
                | "/v1/vms/{name}/checkpoints"
                | "/v1/vms/{name}/clone"
                | "/v1/vms/import",
            ) => "201",
            ("DELETE", "/v1/vms/{name}" | "/v1/switches/{name}") => "204",
            _ => "200",
        };
        let success: Vec<&String> = responses.keys().filter(|c| c.starts_with('2')).collect();
        if success != [expected] {
            problems.push(format!(
                "{at}: success responses {success:?}, expected [{expected}]"
            ));
        }
        for (code, r) in responses {
            if r.get("description").and_then(Value::as_str).is_none() {
                problems.push(format!("{at}: response {code} has no description"));
            }
            if code.starts_with('4') || code.starts_with('5') {
                let s = r.pointer("/content/application~1json/schema/$ref");
                if s != Some(&json!(format!("{SCHEMAS}ApiError"))) {
                    problems.push(format!("{at}: error response {code} is not an ApiError"));
                }
            }
        }
    }
    problems
}

/// The query parameters of an operation match the fields of the type serde reads them into.
fn check_query(spec: &Value, method: &str, path: &str, type_name: &str) -> Vec<String> {
    let Some((_, _, _, op)) = operations(spec)
        .into_iter()
        .find(|(m, p, _, _)| m == method && p == path)
    else {
        return vec![format!("{method} {path}: no such operation")];
    };
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("in") == Some(&json!("query")))
    {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        names.insert(name.to_string());
        let field = schema(spec, type_name).and_then(|s| s.pointer(&format!("/properties/{name}")));
        if let Some(field) = field {
            if p.pointer("/schema/type") != field.get("type") {
                problems.push(format!(
                    "{method} {path}: query parameter {name}'s type differs from {type_name}'s"
                ));
            }
        }
    }
    let fields = keys(
        schema(spec, type_name)
            .and_then(|s| s.get("properties"))
            .unwrap_or(&Value::Null),
    );
    problems.extend(differences(
        &format!("{method} {path}: query parameters vs {type_name}"),
        &names,
        &fields,
    ));
    problems
}

/// A request body: its schema, and whether it is required.
type RequestBody = Option<(&'static str, bool)>;

/// Every route's request body and success reply: (method, path, request body schema and whether
/// it is required, success reply schema). `[X]` is an array of `X`, `text` plain text, `-` none.
const BODIES: &[(&str, &str, RequestBody, &str)] = &[
    ("GET", "/v1/host", None, "HostInfo"),
    ("POST", "/v1/host/stop-vms", None, "StopVmsReport"),
    ("GET", "/v1/vms", None, "[VmSummary]"),
    ("POST", "/v1/vms", Some(("CreateVm", true)), "VmDetails"),
    ("GET", "/v1/vms/{name}", None, "VmDetails"),
    (
        "PATCH",
        "/v1/vms/{name}",
        Some(("SetVm", true)),
        "VmDetails",
    ),
    ("DELETE", "/v1/vms/{name}", None, "-"),
    (
        "POST",
        "/v1/vms/{name}/{action}",
        Some(("ShutdownRequest", false)),
        "VmDetails",
    ),
    ("GET", "/v1/vms/{name}/console", None, "text"),
    (
        "POST",
        "/v1/vms/{name}/copy-file",
        Some(("CopyFile", true)),
        "CopyReport",
    ),
    (
        "POST",
        "/v1/vms/{name}/media",
        Some(("ChangeMedia", true)),
        "VmDetails",
    ),
    (
        "POST",
        "/v1/vms/{name}/memory",
        Some(("MemoryTarget", true)),
        "VmDetails",
    ),
    (
        "GET",
        "/v1/vms/{name}/checkpoints",
        None,
        "[CheckpointInfo]",
    ),
    (
        "POST",
        "/v1/vms/{name}/checkpoints",
        Some(("CreateCheckpoint", false)),
        "[CheckpointInfo]",
    ),
    (
        "PATCH",
        "/v1/vms/{name}/checkpoints/{checkpoint}",
        Some(("RenameCheckpoint", true)),
        "[CheckpointInfo]",
    ),
    (
        "DELETE",
        "/v1/vms/{name}/checkpoints/{checkpoint}",
        None,
        "[CheckpointInfo]",
    ),
    (
        "POST",
        "/v1/vms/{name}/checkpoints/{checkpoint}/apply",
        Some(("ApplyCheckpoint", false)),
        "[CheckpointInfo]",
    ),
    (
        "POST",
        "/v1/vms/import",
        Some(("ImportVm", true)),
        "VmDetails",
    ),
    (
        "POST",
        "/v1/vms/{name}/export",
        Some(("ExportVm", true)),
        "VmDetails",
    ),
    (
        "POST",
        "/v1/vms/{name}/clone",
        Some(("CloneVm", true)),
        "VmDetails",
    ),
    (
        "POST",
        "/v1/vms/{name}/disks",
        Some(("DiskSpec", true)),
        "VmDetails",
    ),
    ("DELETE", "/v1/vms/{name}/disks/{disk}", None, "VmDetails"),
    (
        "POST",
        "/v1/vms/{name}/nics",
        Some(("NicSpec", true)),
        "VmDetails",
    ),
    (
        "PATCH",
        "/v1/vms/{name}/nics/{nic}",
        Some(("SetNic", true)),
        "VmDetails",
    ),
    ("DELETE", "/v1/vms/{name}/nics/{nic}", None, "VmDetails"),
    ("GET", "/v1/events", None, "[Event]"),
    ("GET", "/v1/switches", None, "[SwitchInfo]"),
    (
        "POST",
        "/v1/switches",
        Some(("CreateSwitch", true)),
        "SwitchInfo",
    ),
    ("GET", "/v1/switches/{name}", None, "SwitchInfo"),
    ("DELETE", "/v1/switches/{name}", None, "-"),
    (
        "PATCH",
        "/v1/switches/{name}",
        Some(("SetSwitch", true)),
        "SwitchInfo",
    ),
    ("GET", "/v1/switches/{name}/leases", None, "[Lease]"),
    (
        "POST",
        "/v1/switches/{name}/reservations",
        Some(("Reservation", true)),
        "SwitchInfo",
    ),
    (
        "DELETE",
        "/v1/switches/{name}/reservations/{mac}",
        None,
        "SwitchInfo",
    ),
    (
        "POST",
        "/v1/switches/{name}/forwards",
        Some(("PortForward", true)),
        "SwitchInfo",
    ),
    (
        "DELETE",
        "/v1/switches/{name}/forwards/{proto}/{port}",
        None,
        "SwitchInfo",
    ),
];

/// The request body and success reply of each operation are those of [`BODIES`].
fn check_bodies(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: BTreeSet<String> = BODIES.iter().map(|(m, p, ..)| format!("{m} {p}")).collect();
    let code: BTreeSet<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    problems.extend(differences_with(
        "routes of this test's BODIES",
        &listed,
        &code,
        "strata_api::ROUTES",
    ));
    let ops = operations(spec);
    for (method, path, request, reply) in BODIES {
        let at = format!("{method} {path}");
        let Some((_, _, _, op)) = ops.iter().find(|(m, p, _, _)| m == method && p == path) else {
            problems.push(format!("{at}: no such operation"));
            continue;
        };
        // The body's `required` and `content` (a description may come with them).
        let body = op.get("requestBody").map(|b| {
            json!({
                "required": b.get("required").unwrap_or(&Value::Null),
                "content": b.get("content").unwrap_or(&Value::Null),
            })
        });
        let expected_body = request.map(|(name, required)| {
            json!({
                "required": required,
                "content": {"application/json": {"schema": {"$ref": format!("{SCHEMAS}{name}")}}}
            })
        });
        if body != expected_body {
            problems.push(format!(
                "{at}: request body {}, expected {}",
                body.unwrap_or(Value::Null),
                expected_body.unwrap_or(Value::Null)
            ));
        }
        let success = op
            .get("responses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .find(|(c, _)| c.starts_with('2'))
            .map(|(_, r)| r.get("content"));
        let schema = |name: &str| json!({"$ref": format!("{SCHEMAS}{name}")});
        let expected_content = match *reply {
            "-" => None,
            "text" => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
            r => Some(
                match r.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                    Some(item) => {
                        json!({"application/json": {"schema": {"type": "array", "items": schema(item)}}})
                    }
                    None => json!({"application/json": {"schema": schema(r)}}),
                },
            ),
        };
        if let Some(content) = success {
            if content != expected_content.as_ref() {
                problems.push(format!(
                    "{at}: success reply {}, expected {}",
                    content.unwrap_or(&Value::Null),
                    expected_content.unwrap_or(Value::Null)
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// References.

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn check_refs(spec: &Value) -> Vec<String> {
    let mut refs = Vec::new();
    collect_refs(spec, &mut refs);
    let mut problems = Vec::new();
    if refs.is_empty() {
        problems.push("no $ref at all".to_string());
    }
    for r in refs {
        match r.as_str().and_then(|s| s.strip_prefix(SCHEMAS)) {
            Some(name) if schema(spec, name).is_some() => {}
            Some(_) => problems.push(format!("$ref {r}: no such schema")),
            None => problems.push(format!("$ref {r}: not a {SCHEMAS}... reference")),
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Validating a JSON value against the subset of OpenAPI schemas the document uses.

/// Whether `n` is within the schema's `min` and `max` (of a length or a number of items).
fn count_in(schema: &Value, min: &str, max: &str, n: usize) -> bool {
    let bound = |k: &str| {
        schema
            .get(k)
            .and_then(Value::as_u64)
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
    };
    bound(min).is_none_or(|m| n >= m) && bound(max).is_none_or(|m| n <= m)
}

fn validate(spec: &Value, schema: &Value, v: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r.strip_prefix(SCHEMAS).and_then(|n| self::schema(spec, n)) {
            Some(s) => validate(spec, s, v, at, problems),
            None => problems.push(format!("{at}: unresolved $ref {r}")),
        }
        return;
    }
    if v.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            problems.push(format!("{at}: null, but the schema is not nullable"));
        }
        return;
    }
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(spec, s, v, at, problems);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            problems.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        Some(other) => {
            problems.push(format!("{at}: unknown type '{other}'"));
            true
        }
    };
    if !type_ok {
        problems.push(format!("{at}: {v} is not of type {}", schema["type"]));
        return;
    }
    if let Some(x) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x < m)
        {
            problems.push(format!("{at}: {v} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x > m)
        {
            problems.push(format!("{at}: {v} is above the maximum"));
        }
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count();
        if !count_in(schema, "minLength", "maxLength", n) {
            problems.push(format!("{at}: {v} has the wrong length"));
        }
    }
    if let Some(a) = v.as_array() {
        if !count_in(schema, "minItems", "maxItems", a.len()) {
            problems.push(format!("{at}: {} items is out of range", a.len()));
        }
        if schema.get("uniqueItems") == Some(&json!(true))
            && a.iter().enumerate().any(|(i, x)| a[..i].contains(x))
        {
            problems.push(format!("{at}: items repeat"));
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                validate(spec, items, x, &format!("{at}[{i}]"), problems);
            }
        }
    }
    if let Some(m) = v.as_object() {
        for k in strings(schema.get("required")) {
            if !m.contains_key(&k) {
                problems.push(format!("{at}: required field {k} is absent"));
            }
        }
        let props = schema.get("properties");
        for (k, x) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(spec, s, x, &format!("{at}.{k}"), problems),
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    problems.push(format!("{at}: field {k} is not allowed"));
                }
                None => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects: each schema against serde's behaviour with a sample of the Rust type.

/// A Rust type's samples: `full` has every `Option` filled, `minimal` every `Option` empty (and
/// every defaulted field at its default).
struct Case {
    name: &'static str,
    full: Value,
    minimal: Value,
    /// Deserializes into the Rust type and serializes the result.
    roundtrip: fn(Value) -> Result<Value, String>,
}

fn roundtrip<T: Serialize + DeserializeOwned>(v: Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

fn case<T: Serialize + DeserializeOwned>(full: &T, minimal: &T) -> Case {
    let name = std::any::type_name::<T>().rsplit("::").next().unwrap_or("");
    Case {
        name,
        full: serde_json::to_value(full).expect("serialize"),
        minimal: serde_json::to_value(minimal).expect("serialize"),
        roundtrip: roundtrip::<T>,
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

fn kernel() -> KernelBoot {
    KernelBoot {
        kernel: s("/boot/vmlinuz"),
        initrd: Some(s("/boot/initrd.img")),
        cmdline: s("console=ttyS0"),
    }
}

fn com() -> ComPort {
    ComPort {
        port: 2,
        kind: ComKind::Socket,
        path: s("/run/strata/com2.sock"),
    }
}

fn nic_info() -> NicInfo {
    NicInfo {
        model: NicModel::E1000,
        mac: s("02:53:54:0a:0b:0c"),
        switch: Some(s("lan")),
        connected: false,
        mac_spoofing: true,
        dhcp_guard: true,
        router_guard: true,
        vlan: Some(42),
        bandwidth_limit: Some(100_000_000),
        tap: Some(s("stt-0f8e6a1c-0")),
    }
}

/// A NIC spec with every setting away from its default, so that serde writes every field.
fn nic_spec() -> NicSpec {
    NicSpec {
        model: NicModel::E1000,
        mac: Some(s("02:53:54:0a:0b:0c")),
        connected: false,
        mac_spoofing: true,
        dhcp_guard: true,
        router_guard: true,
        vlan: Some(42),
        bandwidth_limit: Some(100_000_000),
        slot: Some(3),
        ..NicSpec::new(Some("lan"))
    }
}

fn forward() -> PortForward {
    PortForward {
        proto: Proto::Udp,
        host_port: 8053,
        vm: Some(s("web-1")),
        nic: 1,
        address: Some(s("10.10.0.40")),
        port: 53,
    }
}

fn details() -> VmDetails {
    VmDetails {
        name: s("web-1"),
        state: VmState::Running,
        memory_mib: 2048,
        memory_min_mib: Some(512),
        memory_current_mib: Some(1536),
        memory_available_mib: Some(412),
        cpus: 2,
        id: s("0f8e6a1c2b3d4e5f60718293a4b5c6d7"),
        notes: s("front end"),
        boot_order: vec![BootDevice::Cdrom, BootDevice::Disk],
        disks: vec![
            DiskInfo {
                path: s("/vhd/web-1.vhd"),
                bus: DiskBus::Ide,
            },
            DiskInfo {
                path: s("/vhd/web-1-data.vhd"),
                bus: DiskBus::Scsi,
            },
        ],
        cdrom: Some(s("/iso/install.iso")),
        floppy: Some(s("/vfd/drivers.vfd")),
        usb_tablet: true,
        nics: vec![nic_info()],
        agent: true,
        firmware: Firmware::Uefi,
        secure_boot: true,
        tpm: true,
        undo_disks: true,
        undo_action: UndoAction::Commit,
        undo_kept: true,
        template: false,
        heartbeat: Heartbeat::Ok,
        guest: Some(guest_info()),
        checkpoints: 2,
        pending_merges: vec![PendingMerge {
            layer: s("/var/lib/strata/vms/web-1/checkpoints/web-1-3f2a9c1d.avhd"),
            into: s("/vhd/web-1.vhd"),
            state: s("waiting"),
        }],
        com_ports: vec![com()],
        kernel: Some(kernel()),
        accelerator: Accelerator::Kvm,
        accelerator_setting: Accelerator::Auto,
        machine: s("pc-q35-10.0"),
        start_action: StartAction::IfRunning,
        start_delay_secs: 30,
        stop_action: StopAction::TurnOff,
        shutdown_timeout_secs: 120,
        pid: Some(4242),
        qemu_pid: Some(4243),
        console_socket: Some(s("/var/lib/strata/run/x/console.sock")),
        folder: s("/var/lib/strata/vms/web-1"),
        started_at: Some(s("2026-11-22T10:00:00Z")),
        last_error: Some(s("QEMU exited with status 1")),
    }
}

fn guest_interface() -> GuestInterface {
    GuestInterface {
        name: s("eth0"),
        mac: Some(s("02:53:54:0a:0b:0c")),
        addresses: vec![s("10.10.0.40/24"), s("fe80::53:54ff:fe0a:b0c/64")],
    }
}

fn guest_info() -> GuestInfo {
    GuestInfo {
        os_name: Some(s("Debian GNU/Linux")),
        os_version: Some(s("12 (bookworm)")),
        kernel: Some(s("6.1.0-28-amd64")),
        hostname: Some(s("web-1")),
        interfaces: vec![guest_interface()],
        reported: s("2026-11-22T10:00:05Z"),
    }
}

fn cases() -> Vec<Case> {
    let create = CreateVm {
        name: s("web-1"),
        notes: s("front end"),
        memory_mib: 2048,
        memory_min_mib: Some(512),
        cpus: 2,
        boot_order: vec![BootDevice::Network, BootDevice::Disk],
        disks: vec![
            DiskSpec {
                path: s("/vhd/web-1.vhd"),
                bus: DiskBus::Ide,
                slot: Some(0),
            },
            DiskSpec {
                path: s("/vhd/web-1-data.vhd"),
                bus: DiskBus::Scsi,
                slot: None,
            },
        ],
        cdrom: Some(s("/iso/install.iso")),
        floppy: Some(s("/vfd/drivers.vfd")),
        usb_tablet: true,
        nics: vec![nic_spec()],
        com_ports: vec![com()],
        kernel: Some(kernel()),
        agent: true,
        firmware: Firmware::Uefi,
        secure_boot: true,
        tpm: true,
        undo_disks: true,
        undo_action: UndoAction::Commit,
        template: true,
        accelerator: Accelerator::Tcg,
        machine: Some(s("pc-q35-9.2")),
        start_action: StartAction::Always,
        start_delay_secs: 30,
        stop_action: StopAction::Shutdown,
        shutdown_timeout_secs: 120,
    };
    let set = SetVm {
        notes: Some(s("back end")),
        memory_mib: Some(1024),
        memory_min_mib: Some(0),
        cpus: Some(4),
        boot_order: Some(vec![BootDevice::Disk]),
        disks: Some(vec![DiskSpec {
            path: s("/vhd/db.vhd"),
            bus: DiskBus::Virtio,
            slot: None,
        }]),
        cdrom: Some(String::new()),
        floppy: Some(String::new()),
        usb_tablet: Some(true),
        nics: Some(vec![NicSpec::new(None)]),
        com_ports: Some(vec![com()]),
        accelerator: Some(Accelerator::Kvm),
        agent: Some(true),
        firmware: Some(Firmware::Uefi),
        secure_boot: Some(false),
        tpm: Some(true),
        undo_disks: Some(true),
        undo_action: Some(UndoAction::Discard),
        template: Some(false),
        machine: Some(s("q35")),
        kernel: Some(kernel()),
        start_action: Some(StartAction::IfRunning),
        start_delay_secs: Some(0),
        stop_action: Some(StopAction::Save),
        shutdown_timeout_secs: Some(3600),
    };
    let minimal_details = VmDetails {
        state: VmState::Off,
        memory_min_mib: None,
        memory_current_mib: None,
        memory_available_mib: None,
        cdrom: None,
        floppy: None,
        usb_tablet: false,
        agent: false,
        firmware: Firmware::Bios,
        secure_boot: false,
        tpm: false,
        undo_disks: false,
        undo_action: UndoAction::Keep,
        template: false,
        heartbeat: Heartbeat::None,
        guest: None,
        checkpoints: 0,
        pending_merges: Vec::new(),
        kernel: None,
        accelerator: Accelerator::Auto,
        pid: None,
        qemu_pid: None,
        console_socket: None,
        started_at: None,
        last_error: None,
        machine: s("pc-i440fx-10.0"),
        ..details()
    };
    let event = Event {
        time: s("2026-11-22T10:00:00.123Z"),
        code: 322,
        name: s("vm-shutdown-timed-out"),
        level: s("warning"),
        vm: Some(s("web-1")),
        user: s("alice"),
        message: s("the guest did not shut down within 60 s: turned off"),
    };
    let feature = HostFeature {
        name: s("save-state"),
        available: false,
        problem: Some(s("saving a VM's state needs QEMU 8.2 or newer")),
    };
    let host = HostInfo {
        version: s("0.1.0"),
        home: s("/var/lib/strata"),
        accelerator: Accelerator::Tcg,
        kvm_problem: Some(s("/dev/kvm: no such file")),
        qemu: s("qemu-system-x86_64 8.2.2"),
        qemu_version: s("8.2.2"),
        default_machine: s("pc-i440fx-8.2"),
        machines: vec![
            s("pc-i440fx-8.2"),
            s("pc-i440fx-8.1"),
            s("pc-q35-8.2"),
            s("pc-q35-8.1"),
        ],
        features: vec![feature.clone()],
        vms: 3,
    };
    let summary = VmSummary {
        name: s("web-1"),
        state: VmState::Saved,
        memory_mib: 512,
        cpus: 1,
        heartbeat: Heartbeat::Lost,
    };
    let report = StopVmsReport {
        results: vec![(s("web-1"), s("saved")), (s("db"), s("shut down"))],
    };
    let port = SwitchPort {
        vm: s("web-1"),
        nic: 0,
        mac: s("02:53:54:0a:0b:0c"),
        vlan: Some(42),
    };
    let reservation = Reservation {
        mac: s("02:53:54:0a:0b:0c"),
        ip: s("10.10.0.40"),
    };
    let forward_info = ForwardInfo {
        forward: forward(),
        to: Some(s("10.10.0.40")),
        problem: Some(s("VM 'web-1' NIC 1 has no address yet")),
    };
    let switch = SwitchInfo {
        name: s("lan"),
        kind: SwitchType::Internal,
        id: s("0123456789abcdef0123456789abcdef"),
        bridge: s("stb-0123456789"),
        host_nic: Some(s("eth1")),
        subnet: Some(s("10.10.0.0/24")),
        host_address: Some(s("10.10.0.1")),
        dhcp: true,
        dhcp_range: Some(s("10.10.0.16-10.10.0.254")),
        gateway: Some(s("10.10.0.1")),
        dns: vec![s("10.10.0.1")],
        lease_secs: 3600,
        nat: true,
        vlan: Some(7),
        notes: String::new(),
        reservations: vec![reservation.clone()],
        forwards: vec![forward_info.clone()],
        ports: vec![port.clone()],
        warnings: vec![s("the forward chain of table 'filter' drops by default")],
    };
    let lease = Lease {
        mac: s("02:53:54:0a:0b:0c"),
        ip: s("10.10.0.16"),
        vm: Some(s("web-1")),
        nic: Some(0),
        expires: s("2026-12-03T10:00:00Z"),
    };
    let error = ApiError {
        error: s("no VM named 'x'"),
        kind: ErrorKind::NotFound,
    };
    let checkpoint = CheckpointInfo {
        id: s("6c1f0e2d3b4a59687766554433221100"),
        name: s("web-1 - (2026-12-03 - 16:10:05)"),
        parent: Some(s("0f8e6a1c2b3d4e5f60718293a4b5c6d7")),
        created: s("2026-12-03T16:10:05Z"),
        has_memory: true,
        current: true,
    };
    let merge = PendingMerge {
        layer: s("/var/lib/strata/vms/web-1/checkpoints/web-1-6c1f0e2d.avhd"),
        into: s("/vhd/web-1.vhd"),
        state: s("waiting"),
    };
    vec![
        case(&create, &CreateVm::named("web-1")),
        case(&set, &SetVm::default()),
        case(
            &DiskSpec {
                path: s("/vhd/a.vhd"),
                bus: DiskBus::Ide,
                slot: Some(1),
            },
            &DiskSpec {
                path: s("/vhd/a.vhd"),
                bus: DiskBus::default(),
                slot: None,
            },
        ),
        case(&nic_spec(), &NicSpec::new(None)),
        case(&com(), &com()),
        case(
            &kernel(),
            &KernelBoot {
                kernel: s("/boot/vmlinuz"),
                initrd: None,
                cmdline: String::new(),
            },
        ),
        case(&summary, &summary),
        case(
            &DiskInfo {
                path: s("/vhd/a.vhd"),
                bus: DiskBus::Virtio,
            },
            &DiskInfo {
                path: s("/vhd/a.vhd"),
                bus: DiskBus::Ide,
            },
        ),
        case(
            &nic_info(),
            &NicInfo {
                model: NicModel::Virtio,
                switch: None,
                connected: true,
                mac_spoofing: false,
                dhcp_guard: false,
                router_guard: false,
                vlan: None,
                bandwidth_limit: None,
                tap: None,
                ..nic_info()
            },
        ),
        case(&details(), &minimal_details),
        case(
            &ExportVm {
                dir: s("/srv/export/web-1"),
            },
            &ExportVm {
                dir: s("/srv/export/web-2"),
            },
        ),
        case(
            &ImportVm {
                dir: s("/srv/export/web-1"),
                name: Some(s("web-9")),
                in_place: true,
                new_id: true,
            },
            &ImportVm {
                dir: s("/srv/export/web-1"),
                name: None,
                in_place: false,
                new_id: false,
            },
        ),
        case(
            &CloneVm {
                name: s("web-2"),
                linked: true,
            },
            &CloneVm {
                name: s("web-3"),
                linked: false,
            },
        ),
        case(
            &ShutdownRequest {
                timeout_secs: Some(30),
                undo: Some(UndoAction::Discard),
            },
            &ShutdownRequest::default(),
        ),
        case(
            &TurnOffRequest {
                undo: Some(UndoAction::Commit),
            },
            &TurnOffRequest::default(),
        ),
        case(&DeleteQuery { delete_disks: true }, &DeleteQuery::default()),
        case(
            &EventQuery {
                vm: Some(s("web-1")),
                since: Some(s("2026-11-22T10:00:00Z")),
            },
            &EventQuery::default(),
        ),
        case(
            &event,
            &Event {
                vm: None,
                ..event.clone()
            },
        ),
        case(
            &host,
            &HostInfo {
                kvm_problem: None,
                ..host.clone()
            },
        ),
        case(
            &feature,
            &HostFeature {
                problem: None,
                ..feature.clone()
            },
        ),
        case(&report, &StopVmsReport { results: vec![] }),
        case(
            &CreateSwitch {
                name: s("lan"),
                kind: SwitchType::Internal,
                subnet: Some(s("10.10.0.0/24")),
                host_nic: Some(s("eth1")),
                host_address: Some(s("10.10.0.1")),
                dhcp: Some(false),
                dhcp_range: Some(s("10.10.0.100-10.10.0.200")),
                gateway: Some(s("10.10.0.254")),
                dns: vec![s("10.10.0.1")],
                lease_secs: 600,
                nat: true,
                vlan: Some(7),
                notes: s("office"),
                reservations: vec![reservation.clone()],
                forwards: vec![forward()],
            },
            &CreateSwitch::new("lan", SwitchType::External, None),
        ),
        case(
            &SetSwitch {
                dhcp: Some(true),
                dhcp_range: Some(String::new()),
                gateway: Some(s("10.10.0.254")),
                dns: Some(vec![s("1.1.1.1")]),
                lease_secs: Some(86400),
                nat: Some(false),
                notes: Some(s("lab")),
            },
            &SetSwitch::default(),
        ),
        case(&reservation, &reservation),
        case(
            &forward(),
            &PortForward {
                proto: Proto::Tcp,
                host_port: 8080,
                vm: None,
                nic: 0,
                address: None,
                port: 80,
            },
        ),
        case(
            &forward_info,
            &ForwardInfo {
                forward: PortForward {
                    vm: None,
                    address: None,
                    ..forward()
                },
                to: None,
                problem: None,
            },
        ),
        case(
            &port,
            &SwitchPort {
                vlan: None,
                ..port.clone()
            },
        ),
        case(
            &switch,
            &SwitchInfo {
                kind: SwitchType::External,
                host_nic: None,
                subnet: None,
                host_address: None,
                dhcp: false,
                dhcp_range: None,
                gateway: None,
                nat: false,
                vlan: None,
                reservations: vec![],
                forwards: vec![],
                ports: vec![],
                warnings: vec![],
                ..switch.clone()
            },
        ),
        case(
            &lease,
            &Lease {
                vm: None,
                nic: None,
                ..lease.clone()
            },
        ),
        case(
            &SetNic {
                switch: Some(String::new()),
                mac_spoofing: Some(true),
                dhcp_guard: Some(false),
                router_guard: Some(true),
                vlan: Some(0),
                bandwidth_limit: Some(0),
            },
            &SetNic::default(),
        ),
        case(&error, &error),
        case(
            &guest_info(),
            &GuestInfo {
                reported: s("2026-11-22T10:00:05Z"),
                ..GuestInfo::default()
            },
        ),
        case(
            &guest_interface(),
            &GuestInterface {
                mac: None,
                addresses: vec![],
                ..guest_interface()
            },
        ),
        case(
            &CopyFile {
                source: s("/etc/hostname"),
                destination: s("/tmp/hostname"),
                direction: CopyDirection::FromGuest,
            },
            &CopyFile {
                source: s("/srv/setup.sh"),
                destination: s("/root/setup.sh"),
                direction: CopyDirection::ToGuest,
            },
        ),
        case(&CopyReport { bytes: 4096 }, &CopyReport { bytes: 0 }),
        case(
            &ChangeMedia {
                iso: Some(s("/iso/drivers.iso")),
            },
            &ChangeMedia { iso: None },
        ),
        case(
            &MemoryTarget { target_mib: 1024 },
            &MemoryTarget { target_mib: 1024 },
        ),
        case(
            &checkpoint,
            &CheckpointInfo {
                parent: None,
                has_memory: false,
                current: false,
                ..checkpoint.clone()
            },
        ),
        case(
            &CreateCheckpoint {
                name: Some(s("before upgrade")),
            },
            &CreateCheckpoint::default(),
        ),
        case(
            &RenameCheckpoint {
                name: s("before the upgrade"),
            },
            &RenameCheckpoint { name: s("a") },
        ),
        case(
            &DeleteCheckpointQuery { subtree: true },
            &DeleteCheckpointQuery::default(),
        ),
        case(
            &ApplyCheckpoint { force: true },
            &ApplyCheckpoint::default(),
        ),
        case(&merge, &merge),
    ]
}

fn without(v: &Value, key: &str) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
    v
}

fn check_object(spec: &Value, c: &Case) -> Vec<String> {
    let name = c.name;
    let Some(schema) = schema(spec, name) else {
        return vec![format!("{name}: no schema")];
    };
    let mut problems = Vec::new();
    let props = schema.get("properties").unwrap_or(&Value::Null);
    if schema.get("type") != Some(&json!("object")) {
        problems.push(format!("{name}: not of type object"));
    }
    if schema.get("description").and_then(Value::as_str).is_none() {
        problems.push(format!("{name}: no description"));
    }
    // The field names.
    problems.extend(differences(
        &format!("{name}'s fields"),
        &keys(props),
        &keys(&c.full),
    ));
    for (k, p) in props.as_object().into_iter().flatten() {
        if p.get("description").and_then(Value::as_str).is_none() {
            problems.push(format!("{name}.{k}: no description"));
        }
    }
    for (k, v) in c.full.as_object().into_iter().flatten() {
        if v.is_null() {
            problems.push(format!(
                "{name}.{k}: the test's full sample leaves it empty"
            ));
        }
    }
    // Both samples are valid.
    validate(spec, schema, &c.full, name, &mut problems);
    validate(spec, schema, &c.minimal, name, &mut problems);
    // Nullable exactly where serde writes null.
    for (k, p) in props.as_object().into_iter().flatten() {
        let nullable = p.get("nullable") == Some(&json!(true));
        let null = c.minimal.get(k).is_some_and(Value::is_null);
        if nullable != null {
            problems.push(format!(
                "{name}.{k}: nullable is {nullable}, but serde {} null",
                if null { "writes" } else { "never writes" }
            ));
        }
    }
    // Request bodies refuse unknown fields: additionalProperties false.
    let mut unknown = c.full.clone();
    if let Some(m) = unknown.as_object_mut() {
        m.insert(s("no_such_field"), json!(1));
    }
    let closed = (c.roundtrip)(unknown).is_err();
    let declared_closed = schema.get("additionalProperties") == Some(&json!(false));
    if closed != declared_closed {
        problems.push(format!(
            "{name}: additionalProperties false is {declared_closed}, but serde {} unknown fields",
            if closed { "refuses" } else { "accepts" }
        ));
    }
    if let Err(e) = (c.roundtrip)(c.full.clone()) {
        problems.push(format!("{name}: the full sample does not deserialize: {e}"));
    }
    // Required: for requests, the fields serde can't do without; for replies, the fields always
    // written.
    let required = strings(schema.get("required"));
    let expected: BTreeSet<String> = if closed {
        keys(&c.full)
            .into_iter()
            .filter(|k| (c.roundtrip)(without(&c.full, k)).is_err())
            .collect()
    } else {
        keys(&c.minimal)
    };
    problems.extend(differences(
        &format!("{name}'s required fields"),
        &required,
        &expected,
    ));
    // Defaults: a request with only the required fields gets exactly the documented defaults.
    if closed {
        let mut bare = Map::new();
        for k in &expected {
            bare.insert(k.clone(), c.full[k.as_str()].clone());
        }
        match (c.roundtrip)(Value::Object(bare.clone())) {
            Err(e) => problems.push(format!("{name}: the required fields alone don't do: {e}")),
            Ok(got) => {
                for (k, p) in props.as_object().into_iter().flatten() {
                    if !required.contains(k) {
                        problems.extend(check_default(c, &bare, &got, k, p.get("default")));
                    }
                }
            }
        }
    }
    problems
}

/// Whether serde's default of the optional field `k` is the documented one. `bare` holds the
/// required fields only and `got` is what serde made of it. A field serde writes shows its
/// default in `got`; a field it skips at its default (`skip_serializing_if`) has one when giving
/// it changes nothing, and has none (an `Option`) when `null` changes nothing.
fn check_default(
    c: &Case,
    bare: &Map<String, Value>,
    got: &Value,
    k: &str,
    documented: Option<&Value>,
) -> Vec<String> {
    let name = c.name;
    if let Some(value) = got.get(k) {
        return if documented == Some(value) {
            vec![]
        } else {
            vec![format!(
                "{name}.{k}: documented default {documented:?}, serde's default {value}"
            )]
        };
    }
    let with = |v: &Value| {
        let mut m = bare.clone();
        m.insert(k.to_string(), v.clone());
        (c.roundtrip)(Value::Object(m))
    };
    match documented {
        Some(d) if with(d).as_ref() != Ok(got) => vec![format!(
            "{name}.{k}: documented default {d}, but giving it is not the same as leaving it out"
        )],
        Some(_) => vec![],
        None if with(&Value::Null).as_ref() != Ok(got) => vec![format!(
            "{name}.{k}: no documented default, but serde has one (it skips writing it)"
        )],
        None => vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// Enums.

/// Every variant of an enum; the match stops compiling when a variant is added.
macro_rules! variants {
    ($ty:ident: $($v:ident),+ $(,)?) => {{
        #[allow(dead_code)]
        fn exhaustive(x: $ty) {
            match x {
                $($ty::$v)|+ => {}
            }
        }
        (stringify!($ty), vec![$(serde_json::to_value($ty::$v).expect("serialize")),+])
    }};
}

fn enums() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        variants!(VmState: Off, Starting, Running, Paused, Saving, Saved, Stopping, Crashed),
        variants!(Accelerator: Auto, Kvm, Tcg),
        variants!(DiskBus: Ide, Virtio, Scsi),
        variants!(NicModel: Virtio, E1000),
        variants!(Firmware: Bios, Uefi),
        variants!(BootDevice: Disk, Cdrom, Network),
        variants!(StartAction: Never, Always, IfRunning),
        variants!(StopAction: Save, Shutdown, TurnOff),
        variants!(UndoAction: Keep, Commit, Discard),
        variants!(ComKind: File, Socket),
        variants!(SwitchType: External, Internal, Private),
        variants!(Proto: Tcp, Udp),
        variants!(Heartbeat: None, Ok, Lost),
        variants!(CopyDirection: ToGuest, FromGuest),
        variants!(
            ErrorKind: NotFound,
            Invalid,
            Conflict,
            Unsupported,
            Refused,
            Hung,
            Gone,
            Corrupt,
            Io,
            Internal
        ),
    ]
}

fn check_enum(spec: &Value, name: &str, values: &[Value]) -> Vec<String> {
    let Some(schema) = schema(spec, name) else {
        return vec![format!("{name}: no schema")];
    };
    let mut problems = Vec::new();
    if schema.get("type") != Some(&json!("string")) {
        problems.push(format!("{name}: not of type string"));
    }
    if schema.get("description").and_then(Value::as_str).is_none() {
        problems.push(format!("{name}: no description"));
    }
    let listed = schema.get("enum").and_then(Value::as_array);
    let doc = strings(schema.get("enum"));
    if listed.map_or(0, Vec::len) != doc.len() {
        problems.push(format!(
            "{name}: a value is listed twice (or is not a string)"
        ));
    }
    let code = strings(Some(&Value::Array(values.to_vec())));
    problems.extend(differences(&format!("{name}'s values"), &doc, &code));
    problems
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn header() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.0.3");
    assert_eq!(spec["info"]["title"], "Strata host service API");
    let description = spec["info"]["description"].as_str().unwrap_or("");
    for words in [
        "$STRATA_HOME/api.sock",
        "/var/lib/strata/api.sock",
        "TCP",
        "peer credentials",
    ] {
        assert!(
            description.contains(words),
            "info.description does not mention {words}"
        );
    }
}

#[test]
fn routes_are_exactly_strata_api_routes() {
    assert_none("routes", &check_routes(&spec()));
}

#[test]
fn operations_are_complete() {
    let spec = spec();
    let mut problems = check_operations(&spec);
    problems.extend(check_query(
        &spec,
        "DELETE",
        "/v1/vms/{name}",
        "DeleteQuery",
    ));
    problems.extend(check_query(&spec, "GET", "/v1/events", "EventQuery"));
    problems.extend(check_query(
        &spec,
        "DELETE",
        "/v1/vms/{name}/checkpoints/{checkpoint}",
        "DeleteCheckpointQuery",
    ));
    problems.extend(check_bodies(&spec));
    assert_none("operations", &problems);
}

#[test]
fn every_ref_resolves() {
    assert_none("references", &check_refs(&spec()));
}

#[test]
fn object_schemas_match_serde() {
    let spec = spec();
    let problems: Vec<String> = cases()
        .iter()
        .flat_map(|c| check_object(&spec, c))
        .collect();
    assert_none("object schemas", &problems);
}

#[test]
fn enum_schemas_match_serde() {
    let spec = spec();
    let problems: Vec<String> = enums()
        .iter()
        .flat_map(|(name, values)| check_enum(&spec, name, values))
        .collect();
    assert_none("enum schemas", &problems);
}

/// Every type of `src/types.rs`, `src/net.rs`, `src/agent.rs` and `src/checkpoint.rs` has a schema
/// and a case in this test, and every schema is a type.
#[test]
fn every_type_has_a_schema() {
    let sources = [
        include_str!("../src/types.rs"),
        include_str!("../src/net.rs"),
        include_str!("../src/agent.rs"),
        include_str!("../src/checkpoint.rs"),
    ];
    let types: BTreeSet<String> = sources
        .iter()
        .flat_map(|source| source.lines())
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("pub struct ")
                .or_else(|| l.strip_prefix("pub enum "))
        })
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    let schemas = keys(&spec()["components"]["schemas"]);
    let tested: BTreeSet<String> = cases()
        .iter()
        .map(|c| c.name.to_string())
        .chain(enums().iter().map(|(n, _)| n.to_string()))
        .collect();
    let mut problems = differences(
        "schemas vs types.rs, net.rs, agent.rs and checkpoint.rs",
        &schemas,
        &types,
    );
    problems.extend(differences(
        "types tested here vs types.rs, net.rs, agent.rs and checkpoint.rs",
        &tested,
        &types,
    ));
    assert_none("schemas", &problems);
}

// The checks notice a broken document.

#[test]
fn route_check_can_fail() {
    let mut spec = spec();
    let paths = spec["paths"].as_object_mut().expect("paths");
    paths.remove("/v1/events");
    paths.insert(s("/v1/nothing"), json!({"get": {}}));
    let problems = check_routes(&spec);
    let text = problems.join("\n");
    assert!(
        text.contains("GET /v1/events") && text.contains("GET /v1/nothing"),
        "{text}"
    );
}

#[test]
fn ref_check_can_fail() {
    let mut spec = spec();
    spec["paths"]["/v1/host"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/Nothing"});
    let problems = check_refs(&spec).join("\n");
    assert!(
        problems.contains("schemas/Nothing\": no such schema"),
        "{problems}"
    );
}

/// Breaks a schema.
type Breakage = fn(&mut Map<String, Value>);

#[test]
fn object_check_can_fail() {
    let cases = cases();
    let find = |name: &str| cases.iter().find(|c| c.name == name).expect(name);
    let create = find("CreateVm");
    let details = find("VmDetails");
    let breakages: [(&Case, Breakage); 34] = [
        // A misspelt field.
        (create, |o| {
            let props = o["properties"].as_object_mut().expect("properties");
            let notes = props.remove("notes").expect("notes");
            props.insert(s("note"), notes);
        }),
        // A wrong default.
        (create, |o| {
            o["properties"]["memory_mib"]["default"] = json!(1024)
        }),
        // A field wrongly required.
        (create, |o| o["required"] = json!(["name", "cpus"])),
        // Unknown fields wrongly allowed.
        (create, |o| {
            o.remove("additionalProperties");
        }),
        // A nullable field not marked so.
        (details, |o| {
            o["properties"]["pid"]
                .as_object_mut()
                .expect("pid")
                .remove("nullable");
        }),
        // A wrong type.
        (details, |o| {
            o["properties"]["cpus"]["type"] = json!("string")
        }),
        // A field serde writes, missing from the schema.
        (find("NicInfo"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("tap");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "tap");
        }),
        // A field of a flattened struct, missing.
        (find("ForwardInfo"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("host_port");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "host_port");
        }),
        // A wrong default of a field serde skips at its default.
        (find("NicSpec"), |o| {
            o["properties"]["connected"]["default"] = json!(false)
        }),
        // A default missing, of a field serde skips at its default.
        (find("NicSpec"), |o| {
            o["properties"]["mac_spoofing"]
                .as_object_mut()
                .expect("mac_spoofing")
                .remove("default");
        }),
        // A nullable field of a reply not marked so.
        (find("SwitchInfo"), |o| {
            o["properties"]["subnet"]
                .as_object_mut()
                .expect("subnet")
                .remove("nullable");
        }),
        // A field serde may leave out of a reply, required.
        (find("SwitchPort"), |o| {
            o["required"]
                .as_array_mut()
                .expect("required")
                .push(json!("vlan"))
        }),
        // An optional field of a request, required.
        (find("CreateSwitch"), |o| {
            o["required"] = json!(["name", "type", "subnet"])
        }),
        // A request field serde reads, missing from the schema.
        (find("SetNic"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("bandwidth_limit");
        }),
        // A reply field serde writes, missing (the heartbeat of a VM in the list).
        (find("VmSummary"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("heartbeat");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "heartbeat");
        }),
        // A nullable object of a reply not marked so (what the guest agent reported).
        (details, |o| {
            o["properties"]["guest"]
                .as_object_mut()
                .expect("guest")
                .remove("nullable");
        }),
        // A request field serde needs, missing from the schema.
        (find("CopyFile"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("direction");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "direction");
        }),
        // A default missing, of a field serde skips at its default (the agent channel).
        (create, |o| {
            o["properties"]["agent"]
                .as_object_mut()
                .expect("agent")
                .remove("default");
        }),
        // A request field serde reads, missing from the schema (the firmware).
        (create, |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("firmware");
        }),
        // A wrong default of a field serde skips at its default (secure boot).
        (create, |o| {
            o["properties"]["secure_boot"]["default"] = json!(true)
        }),
        // A reply field serde writes, missing (the TPM).
        (details, |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("tpm");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "tpm");
        }),
        // A field of a change request, missing (secure boot).
        (find("SetVm"), |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("secure_boot");
        }),
        // A request field serde reads, missing from the schema (the floppy).
        (create, |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("floppy");
        }),
        // A default missing, of a field serde skips at its default (the USB tablet).
        (create, |o| {
            o["properties"]["usb_tablet"]
                .as_object_mut()
                .expect("usb_tablet")
                .remove("default");
        }),
        // A reply field serde writes, missing (the USB tablet).
        (details, |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("usb_tablet");
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "usb_tablet");
        }),
        // A nullable field of a reply not marked so (the floppy).
        (details, |o| {
            o["properties"]["floppy"]
                .as_object_mut()
                .expect("floppy")
                .remove("nullable");
        }),
        // A request field serde reads, missing from the schema (dynamic memory's minimum).
        (create, |o| {
            o["properties"]
                .as_object_mut()
                .expect("props")
                .remove("memory_min_mib");
        }),
        // A nullable field of a reply not marked so (the guest's current memory).
        (details, |o| {
            o["properties"]["memory_current_mib"]
                .as_object_mut()
                .expect("memory_current_mib")
                .remove("nullable");
        }),
        // A reply field serde always writes, not required (dynamic memory's minimum).
        (details, |o| {
            o["required"]
                .as_array_mut()
                .expect("required")
                .retain(|k| k != "memory_min_mib");
        }),
        // An optional request field, required (ejecting sends no ISO).
        (find("ChangeMedia"), |o| {
            o.insert(s("required"), json!(["iso"]));
        }),
        // A request field serde needs, not required (the memory target).
        (find("MemoryTarget"), |o| {
            o.remove("required");
        }),
        // A nullable field of a reply not marked so (a root checkpoint's parent).
        (find("CheckpointInfo"), |o| {
            o["properties"]["parent"]
                .as_object_mut()
                .expect("parent")
                .remove("nullable");
        }),
        // An optional request field, required (a checkpoint's name has a default).
        (find("CreateCheckpoint"), |o| {
            o.insert(s("required"), json!(["name"]));
        }),
        // A wrong default of a request field (apply without force).
        (find("ApplyCheckpoint"), |o| {
            o["properties"]["force"]["default"] = json!(true)
        }),
    ];
    for (i, (c, breakage)) in breakages.into_iter().enumerate() {
        let mut spec = spec();
        let schema = spec["components"]["schemas"][c.name]
            .as_object_mut()
            .expect("schema");
        breakage(schema);
        assert!(
            !check_object(&spec, c).is_empty(),
            "breakage {i} of {} went unnoticed",
            c.name
        );
    }
}

#[test]
fn operation_check_can_fail() {
    let mut spec = spec();
    let responses =
        &mut spec["paths"]["/v1/switches/{name}/reservations/{mac}"]["delete"]["responses"];
    let ok = responses["200"].clone();
    responses.as_object_mut().expect("responses").remove("200");
    responses["204"] = ok;
    spec["paths"]["/v1/vms/{name}/nics/{nic}"]["patch"]["responses"]["200"]["content"]
        ["application/json"]["schema"]["$ref"] = json!("#/components/schemas/SwitchInfo");
    spec["paths"]["/v1/switches/{name}/forwards"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"] = json!("#/components/schemas/ForwardInfo");
    spec["paths"]["/v1/vms/{name}/media"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"] = json!("#/components/schemas/MemoryTarget");
    // Taking a checkpoint replying 200, and applying one with a required body.
    let responses = &mut spec["paths"]["/v1/vms/{name}/checkpoints"]["post"]["responses"];
    let created = responses["201"].clone();
    responses.as_object_mut().expect("responses").remove("201");
    responses["200"] = created;
    spec["paths"]["/v1/vms/{name}/checkpoints/{checkpoint}/apply"]["post"]["requestBody"]
        ["required"] = json!(true);
    let mut problems = check_operations(&spec);
    problems.extend(check_bodies(&spec));
    // The delete's query parameter misspelt.
    spec["paths"]["/v1/vms/{name}/checkpoints/{checkpoint}"]["delete"]["parameters"][2]["name"] =
        json!("sub_tree");
    problems.extend(check_query(
        &spec,
        "DELETE",
        "/v1/vms/{name}/checkpoints/{checkpoint}",
        "DeleteCheckpointQuery",
    ));
    let text = problems.join("\n");
    for at in [
        "DELETE /v1/switches/{name}/reservations/{mac}: success responses",
        "PATCH /v1/vms/{name}/nics/{nic}: success reply",
        "POST /v1/switches/{name}/forwards: request body",
        "POST /v1/vms/{name}/media: request body",
        "POST /v1/vms/{name}/checkpoints: success responses",
        "POST /v1/vms/{name}/checkpoints/{checkpoint}/apply: request body",
        "DELETE /v1/vms/{name}/checkpoints/{checkpoint}: query parameters",
    ] {
        assert!(text.contains(at), "{at} went unnoticed:\n{text}");
    }
}

#[test]
fn enum_check_can_fail() {
    let mut spec = spec();
    let values = spec["components"]["schemas"]["StopAction"]["enum"]
        .as_array_mut()
        .expect("enum");
    values.retain(|v| v != "turn-off");
    values.push(json!("turn_off"));
    let enums = enums();
    let find = |name: &str| {
        enums
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, values)| values)
            .expect(name)
    };
    let (name, values) = ("StopAction", find("StopAction"));
    let problems = check_enum(&spec, name, values).join("\n");
    assert!(
        problems.contains("turn-off") && problems.contains("turn_off"),
        "{problems}"
    );
    // A variant missing from the document.
    let mut spec = self::spec();
    spec["components"]["schemas"]["SwitchType"]["enum"]
        .as_array_mut()
        .expect("enum")
        .retain(|v| v != "external");
    let (name, values) = ("SwitchType", find("SwitchType"));
    let problems = check_enum(&spec, name, values).join("\n");
    assert!(problems.contains("external"), "{problems}");
    // The firmware without UEFI.
    let mut spec = self::spec();
    spec["components"]["schemas"]["Firmware"]["enum"] = json!(["bios"]);
    let problems = check_enum(&spec, "Firmware", find("Firmware")).join("\n");
    assert!(problems.contains("uefi"), "{problems}");
    // The disk bus without SCSI.
    let mut spec = self::spec();
    spec["components"]["schemas"]["DiskBus"]["enum"] = json!(["ide", "virtio"]);
    let problems = check_enum(&spec, "DiskBus", find("DiskBus")).join("\n");
    assert!(problems.contains("scsi"), "{problems}");
}
