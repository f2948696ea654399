//! The one pseudo-random generator of the project (SplitMix64), seeded.
//!
//! The Raft core draws randomness only from the seed its caller gives, so
//! the same seed and inputs give the same outputs; the simulator, the
//! nemesis's schedule, the Maelstrom harness, the bench's load, the
//! client's session ids and the tests' timing all use the same generator.
//! Not for cryptography.

/// SplitMix64: 64 bits of state, good statistical quality, trivially
/// reproducible across platforms.
#[derive(Clone, Debug)]
pub struct Random {
    state: u64,
}

impl Random {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound > 0`), by multiply-shift (no modulo
    /// bias worth caring about at these sizes).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range");
        low + self.below(high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same seed, same sequence; values stay in range.
    #[test]
    fn deterministic_and_in_range() {
        let mut first = Random::new(42);
        let mut second = Random::new(42);
        for _ in 0..1000 {
            let value = first.between(3, 7);
            assert_eq!(value, second.between(3, 7));
            assert!((3..=7).contains(&value));
        }
        assert_ne!(Random::new(1).next_u64(), Random::new(2).next_u64());
    }
}
