//! Sector bitmaps of dynamic and differencing blocks. Bit 7 of byte 0 (the most significant bit)
//! is the block's first sector, as the specification says; a set bit means the sector's data is in
//! this file.

/// Bytes of data one bitmap byte covers (8 sectors): Strata's allocation unit in differencing disks,
/// so that every bitmap byte it writes is 0x00 or 0xFF and peers with partial-byte bugs read it right.
pub const CHUNK: u64 = 4096;

/// One block's bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// The bytes, as on disk (padded to a sector).
    pub bytes: Vec<u8>,
    /// Sectors in the block.
    sectors: u64,
}

impl Bitmap {
    /// A bitmap of `sectors` sectors stored in `bytes`.
    pub fn from_bytes(bytes: Vec<u8>, sectors: u64) -> Bitmap {
        Bitmap { bytes, sectors }
    }

    /// All clear, or all set.
    pub fn filled(padded_len: usize, sectors: u64, set: bool) -> Bitmap {
        let mut bytes = vec![0u8; padded_len];
        if set {
            let n = usize::try_from(sectors.div_ceil(8))
                .unwrap_or(padded_len)
                .min(padded_len);
            bytes[..n].fill(0xFF);
        }
        Bitmap { bytes, sectors }
    }

    /// Whether sector `s` (in the block) is present.
    pub fn get(&self, s: u64) -> bool {
        let byte = usize::try_from(s / 8).unwrap_or(usize::MAX);
        self.bytes
            .get(byte)
            .is_some_and(|b| b & (0x80 >> (s % 8)) != 0)
    }

    /// Whether every sector of the block is present.
    pub fn is_full(&self) -> bool {
        (0..self.sectors.div_ceil(8)).all(|i| self.byte(i) == 0xFF)
    }

    /// Whether no sector is present.
    pub fn is_empty(&self) -> bool {
        self.bytes.iter().all(|&b| b == 0)
    }

    /// Bitmap byte `i` (covering sectors 8i..8i+8).
    pub fn byte(&self, i: u64) -> u8 {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.bytes.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Sets bitmap byte `i`.
    pub fn set_byte(&mut self, i: u64, v: u8) {
        if let Some(b) = usize::try_from(i).ok().and_then(|i| self.bytes.get_mut(i)) {
            *b = v;
        }
    }

    /// Maximal runs of sectors with the same bit in `[first, end)`: (present, start, end).
    pub fn runs(&self, first: u64, end: u64) -> Vec<(bool, u64, u64)> {
        let mut out: Vec<(bool, u64, u64)> = Vec::new();
        let mut s = first;
        while s < end {
            // Whole bytes at once where possible.
            let (bit, next) =
                if s.is_multiple_of(8) && s + 8 <= end && matches!(self.byte(s / 8), 0 | 0xFF) {
                    (self.byte(s / 8) == 0xFF, s + 8)
                } else {
                    (self.get(s), s + 1)
                };
            match out.last_mut() {
                Some(last) if last.0 == bit => last.2 = next,
                _ => out.push((bit, s, next)),
            }
            s = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_is_the_first_sector() {
        let mut b = Bitmap::filled(512, 4096, false);
        b.bytes[0] = 0x80;
        assert!(b.get(0));
        assert!(!b.get(1));
        assert_eq!(b.runs(0, 16), vec![(true, 0, 1), (false, 1, 16)]);
        b.bytes[1] = 0xFF;
        assert_eq!(
            b.runs(0, 24),
            vec![(true, 0, 1), (false, 1, 8), (true, 8, 16), (false, 16, 24)]
        );
    }

    #[test]
    fn full_and_empty() {
        let b = Bitmap::filled(512, 4096, true);
        assert!(b.is_full());
        assert!(!b.is_empty());
        assert!(Bitmap::filled(512, 4096, false).is_empty());
    }
}
