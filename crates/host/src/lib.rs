//! # strata-host
//!
//! Strata's host service, the equivalent of Hyper-V's Virtual Machine Management Service: the one
//! place every management request goes through.
//!
//! - [`store`]: the data folder (`$STRATA_HOME`), one folder per VM with its `vm.toml`;
//! - [`service`]: the [`service::Command`] type that the REST API and the automatic actions feed,
//!   and the VM lifecycle (validation, start, control, reconciliation after a crash);
//! - [`worker`]: the per-VM worker process that serves the disks over NBD, runs QEMU and talks
//!   QMP ([`qmp`]); [`qemu`] builds QEMU's command line and probes KVM;
//! - [`http`]: the REST API (axum); [`events`]: the event log; [`status`]: run status files.
//!
//! It knows disks only through `strata-vhd`'s API and serves them with `strata-nbd`.

pub mod agent;
mod checkpoint;
pub mod error;
pub mod events;
pub mod http;
mod ports;
pub mod qemu;
pub mod qmp;
pub mod service;
pub mod status;
pub mod store;
pub mod switch_store;
pub mod worker;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ErrorKind, HostError};
pub use service::{Command, Reply, Service};

/// Where `strata serve` listens and keeps its state.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data folder.
    pub home: PathBuf,
    /// The API's Unix socket (default `HOME/api.sock`).
    pub socket: Option<PathBuf>,
    /// Also listen on this TCP address (no authentication yet: keep it on loopback).
    pub tcp: Option<String>,
    /// The command that runs a worker (`strata worker`).
    pub worker: Vec<OsString>,
}

/// Runs the host service until SIGTERM or SIGINT. VMs keep running after it stops; the next
/// start reattaches to them.
pub fn serve(opts: &ServeOptions) -> Result<(), HostError> {
    let service = Arc::new(Service::new(&opts.home, opts.worker.clone())?);
    // One service per data folder, whatever socket each is given; the lock goes with the process.
    let lock_path = service.home().root().join("service.lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| HostError::io(&lock_path, "open", e))?;
    if lock.try_lock().is_err() {
        return Err(HostError::conflict(format!(
            "{}: another host service already runs on this data folder",
            service.home().root().display()
        )));
    }
    let socket = opts
        .socket
        .clone()
        .unwrap_or_else(|| service.home().api_socket());
    let unix = bind_unix(&socket)?;
    service.reconcile_all();
    service.restore_switches();
    service.watch_memory();
    service.watch_merges();
    let info = service.host_info();
    let accel = match &info.kvm_problem {
        None => "KVM".to_string(),
        Some(why) => format!("TCG (KVM unusable: {why})"),
    };
    service.events().log(
        events::Code::ServiceStarted,
        None,
        "system",
        &format!(
            "host service started: {} VMs, {accel}, {}",
            info.vms, info.qemu
        ),
    );
    eprintln!(
        "strata serve: listening on {} ({} VMs, {accel}); data in {}",
        socket.display(),
        info.vms,
        info.home
    );
    service.autostart();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| HostError::internal(e.to_string()))?;
    let result = runtime.block_on(async {
        unix.set_nonblocking(true)?;
        let unix = tokio::net::UnixListener::from_std(unix)?;
        let tcp = match &opts.tcp {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
            None => None,
        };
        http::serve(service.clone(), unix, tcp).await
    });
    let _ = std::fs::remove_file(&socket);
    service.events().log(
        events::Code::ServiceStopped,
        None,
        "system",
        "host service stopped; VMs left running",
    );
    result.map_err(|e| HostError::internal(format!("API: {e}")))
}

/// Binds the API socket, replacing a stale one but refusing when a service already answers.
fn bind_unix(socket: &Path) -> Result<std::os::unix::net::UnixListener, HostError> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Err(HostError::conflict(format!(
            "{}: a host service is already running on this socket",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(socket);
    std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| HostError::io(socket, "listen on", e))
}
