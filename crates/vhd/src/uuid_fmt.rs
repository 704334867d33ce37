//! Unique ids: 16 opaque bytes. They are compared byte for byte and shown in the canonical
//! 8-4-4-4-12 form of those bytes in file order (Windows writes them in GUID byte order, so
//! Windows' own display may swap the first three groups; comparisons never depend on it).

use std::fmt;

/// A disk's unique id, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DiskId(pub [u8; 16]);

impl DiskId {
    /// A fresh random id.
    pub fn random() -> DiskId {
        DiskId(*uuid::Uuid::new_v4().as_bytes())
    }

    /// True when all bytes are zero (no id recorded).
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", uuid::Uuid::from_bytes(self.0).hyphenated())
    }
}

impl fmt::Debug for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskId({self})")
    }
}

impl serde::Serialize for DiskId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
