//! # strata-vhd
//!
//! The VHD format ("Virtual Hard Disk Image Format Specification" 1.0, as used by Virtual PC,
//! Virtual Server 2005 and Hyper-V): fixed, dynamic and differencing disks, read and written
//! through [`Disk`], plus the operations an administrator needs: create, inspect, check/repair,
//! merge, compact, convert, resize, set-parent and undo disks.
//!
//! The crate is synchronous and knows nothing of virtual machines or networks. Layout:
//! - [`footer`], [`header`], [`bitmap`], [`locator`]: the on-disk structures;
//! - [`Disk`] (`disk/`: opening, the chain of parents, I/O) and the sparse engine (`sparse.rs`,
//!   which sees the chain only through a trait): reads and crash-safe writes;
//! - [`ops`]: whole-file operations.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("strata-vhd needs a 64-bit target");

pub mod bitmap;
mod create;
mod disk;
mod error;
pub mod footer;
pub mod header;
pub mod locator;
mod lock;
pub mod ops;
mod sparse;
mod uuid_fmt;

pub use create::{create, create_differencing, validate_size, NewDisk};
pub use disk::{Disk, OpenOptions};
pub use error::{ErrorKind, Result, VhdError};
pub use footer::{DiskType, Footer, Geometry};
pub use header::DynamicHeader;
pub use sparse::is_zero;
pub use uuid_fmt::DiskId;
