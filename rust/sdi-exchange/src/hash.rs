//! A small deterministic 64-bit hash for state fingerprints (not for security).

/// Folds `u64` words into a 64-bit digest, the same on every run and machine.
pub struct StateHasher {
    state: u64,
}

impl StateHasher {
    pub fn new() -> Self {
        Self {
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    #[inline]
    pub fn u64(&mut self, value: u64) {
        // A multiply-xorshift mix per word (the finaliser of splitmix64).
        let mut x = self.state ^ value.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.state = x ^ (x >> 31);
    }

    pub fn finish(&self) -> u64 {
        self.state
    }
}

impl Default for StateHasher {
    fn default() -> Self {
        Self::new()
    }
}
