//! # strata-plug
//!
//! A VHD exposed on this host (Strata's VHDMount): `strata disk plug|unplug|query|mount` and the
//! disk server behind them, as a library the command line only parses for and prints from.
//!
//! - One background server process per plugged disk ([`serve`], started detached by
//!   [`Plugs::plug`] with [`strata_proc::spawn_daemon`], reporting a typed
//!   [`strata_proc::Readiness`] line): a crash or a stuck client affects one disk only, and the
//!   server holds the disk's lock for as long as it is plugged. It serves the disk over NBD with
//!   [`strata_nbd::serve_disk`] (and, for a mount, as a file through FUSE), and on SIGTERM
//!   flushes and records how it ended.
//! - Each plugged disk has a record ([`Plugged`], JSON), a socket, a log, an exit status and a
//!   lock file in the run folder ([`run_dir`]). Plug and unplug of one disk hold its lock, so they
//!   never interleave. A record's server counts as alive only if its pid still has the recorded
//!   start time and a server command line for that socket: a reused pid is never signalled.
//! - Writes go to an undo disk ([`Mode::Undo`], the default of the command line), the VHD itself
//!   ([`Mode::Direct`]) or nowhere ([`Mode::ReadOnly`]). [`Plugs::unplug`] commits or discards
//!   the undo disk as the caller's callback decides, and commits only after a clean end.
//! - [`Plugs::mount`] maps the disk's FUSE file on a loop device and mounts its file system (no
//!   kernel NBD client needed); unplug unmounts first.
//!
//! It knows nothing of VMs, of the command line's flags or of terminals.

mod error;
mod mount;
mod plug;
mod record;
mod server;
mod unplug;

pub use error::{ErrorKind, PlugError, Result};
pub use plug::{MountOptions, PlugOptions, Plugs};
pub use record::{run_dir, Mode, Plugged};
pub use server::{serve, ServerArgs};
pub use unplug::{UndoChoice, UndoOutcome, Unplugged};
