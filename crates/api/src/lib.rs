//! # strata-api
//!
//! The request and response bodies of Strata's REST API (`docs/openapi.json`), shared by the host
//! service (`strata-host`), the `strata` CLI and the tests. Request bodies refuse unknown fields, so
//! a misspelt setting is an error rather than silently ignored.

mod agent;
mod checkpoint;
mod net;
mod types;

pub use agent::*;
pub use checkpoint::*;
pub use net::*;
pub use types::*;

/// The API's version prefix: every route starts with it.
pub const PREFIX: &str = "/v1";

/// Every route of the API as (method, path template). The service builds its router from this
/// list and a test checks it against `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/host"),
    ("POST", "/v1/host/stop-vms"),
    ("GET", "/v1/vms"),
    ("POST", "/v1/vms"),
    ("GET", "/v1/vms/{name}"),
    ("PATCH", "/v1/vms/{name}"),
    ("DELETE", "/v1/vms/{name}"),
    ("POST", "/v1/vms/{name}/{action}"),
    ("GET", "/v1/vms/{name}/console"),
    ("GET", "/v1/events"),
    ("GET", "/v1/switches"),
    ("POST", "/v1/switches"),
    ("GET", "/v1/switches/{name}"),
    ("DELETE", "/v1/switches/{name}"),
    ("PATCH", "/v1/switches/{name}"),
    ("GET", "/v1/switches/{name}/leases"),
    ("POST", "/v1/switches/{name}/reservations"),
    ("DELETE", "/v1/switches/{name}/reservations/{mac}"),
    ("POST", "/v1/switches/{name}/forwards"),
    ("DELETE", "/v1/switches/{name}/forwards/{proto}/{port}"),
    ("POST", "/v1/vms/{name}/copy-file"),
    ("POST", "/v1/vms/{name}/media"),
    ("POST", "/v1/vms/{name}/memory"),
    ("POST", "/v1/vms/import"),
    ("POST", "/v1/vms/{name}/export"),
    ("POST", "/v1/vms/{name}/clone"),
    ("GET", "/v1/vms/{name}/checkpoints"),
    ("POST", "/v1/vms/{name}/checkpoints"),
    ("PATCH", "/v1/vms/{name}/checkpoints/{checkpoint}"),
    ("DELETE", "/v1/vms/{name}/checkpoints/{checkpoint}"),
    ("POST", "/v1/vms/{name}/checkpoints/{checkpoint}/apply"),
    ("POST", "/v1/vms/{name}/disks"),
    ("DELETE", "/v1/vms/{name}/disks/{disk}"),
    ("POST", "/v1/vms/{name}/nics"),
    ("PATCH", "/v1/vms/{name}/nics/{nic}"),
    ("DELETE", "/v1/vms/{name}/nics/{nic}"),
];
