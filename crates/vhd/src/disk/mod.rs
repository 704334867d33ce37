//! [`Disk`]: an open VHD (with its chain of parents), to read and write like a block device.
//!
//! - `open.rs`: [`OpenOptions`], locks, and reading and checking the footer, dynamic header and
//!   BAT into a [`Disk`];
//! - `chain.rs`: the parent of a differencing disk: where it may be (locators), checking that it
//!   is the right one, and opening the chain below;
//! - `io.rs`: reads, writes, zeroing, discard and flush, fixed disks directly, sparse ones through
//!   the engine (`sparse.rs`), which sees the chain below only through the
//!   [`Parent`](crate::sparse::Parent) trait that `Disk` implements here.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::footer::{DiskType, Footer, FOOTER_SIZE};
use crate::header::DynamicHeader;
use crate::sparse::Sparse;

mod chain;
mod io;
mod open;

pub(crate) use chain::same_file;
pub use open::OpenOptions;
pub(crate) use open::{read_bat, read_exact_at, read_footer, read_header};

pub(crate) enum Layout {
    Fixed,
    Sparse(Box<Sparse>),
}

/// An open VHD.
pub struct Disk {
    path: PathBuf,
    file: File,
    writable: bool,
    footer: Footer,
    footer_bytes: [u8; FOOTER_SIZE],
    pub(crate) layout: Layout,
    parent: Option<Box<Disk>>,
    warnings: Vec<String>,
}

impl Disk {
    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.footer.current_size
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn header(&self) -> Option<&DynamicHeader> {
        match &self.layout {
            Layout::Sparse(s) => Some(&s.header),
            Layout::Fixed => None,
        }
    }

    /// The disk type.
    pub fn disk_type(&self) -> DiskType {
        self.footer.disk_type
    }

    /// The open parent, if any.
    pub fn parent(&self) -> Option<&Disk> {
        self.parent.as_deref()
    }

    /// Problems noticed while opening that did not prevent it (damaged footer read from its copy,
    /// parent modified since the child was made …).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the disk is open for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Block size of a sparse disk.
    pub fn block_size(&self) -> Option<u32> {
        self.header().map(|h| h.block_size)
    }

    /// Number of allocated blocks (0 for fixed disks).
    pub fn allocated_blocks(&self) -> u32 {
        match &self.layout {
            Layout::Sparse(s) => s.allocated_blocks(),
            Layout::Fixed => 0,
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Where the footer at the end of the file is.
    pub(crate) fn footer_pos(&self) -> u64 {
        match &self.layout {
            Layout::Fixed => self.size(),
            Layout::Sparse(s) => s.state.read().expect("vhd state").footer_pos,
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Best effort: callers that care about errors call `close`.
        let _ = self.flush();
    }
}
