//! Newtypes for the numbers Raft juggles, so a term is never passed where an
//! index belongs. All are fixed-width on the wire and on disk.

use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value.
            pub const ZERO: Self = Self(0);

            /// The raw integer.
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term. Term 0 exists before any election.
    Term
);
newtype_u64!(
    /// A log position. Index 0 is the empty prefix; the first entry is 1.
    LogIndex
);
newtype_u64!(
    /// A node of the cluster. Id 0 means "none" (no vote, no known leader).
    NodeId
);
newtype_u64!(
    /// A Raft group: one named log. The id is a stable hash of the name.
    LogId
);

impl LogIndex {
    /// The next index.
    #[inline]
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The previous index, saturating at zero.
    #[inline]
    #[must_use]
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl Term {
    /// The next term.
    #[inline]
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl LogId {
    /// The id of the log named `name`: FNV-1a, stable across versions and
    /// machines because it decides which core owns the log and is on the wire.
    pub fn from_name(name: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log id is on the wire and decides core ownership: pin its values.
    #[test]
    fn log_id_is_stable_fnv1a() {
        assert_eq!(LogId::from_name("").get(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(LogId::from_name("a").get(), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(LogId::from_name("default"), LogId::from_name("defaulu"));
    }

    /// Index arithmetic saturates at the empty prefix instead of wrapping.
    #[test]
    fn index_prev_saturates() {
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(LogIndex(5).prev(), LogIndex(4));
        assert_eq!(LogIndex(5).next(), LogIndex(6));
    }
}
