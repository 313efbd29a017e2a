//! Identifiers on the 32-bit Chord ring and wrap-around interval math.
//!
//! As in the Chord paper (Stoica et al., SIGCOMM 2001, section 4), node and key identifiers live on
//! a circle of 2^m positions; here m = 32 and an identifier is the first four bytes (big-endian) of
//! the SHA-1 digest of the name. Intervals are read clockwise: `(a, b]` holds every identifier met
//! walking from `a` (excluded) to `b` (included). When `a == b` the walk goes all the way round, so
//! `(a, a]` is the whole ring (a lone node owns every key) and `(a, a)` is the ring without `a`.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::fmt;

/// Number of bits of the identifier space (the paper's `m`).
pub const ID_BITS: usize = 32;

/// Largest finger base (`Config::finger_base`): 255 fingers per level, four levels.
pub const MAX_FINGER_BASE: u32 = 256;

/// Distances from a node to the starts of its fingers in base `base` (a power of two from 2 to
/// [`MAX_FINGER_BASE`]; anything else is rounded down to one, and below 2 taken as 2),
/// ascending: `j * base^level` for every level and digit `j` in `1..base` that stays inside
/// the ring. Base 2 gives Chord's `2^i`, `i` in `0..32`; base `b` gives `(b-1)·32/log2 b`
/// fingers, of which about `(b-1)·log_b N` are distinct peers in a ring of `N`, for lookups
/// of about `log_b N` hops (Chord, ToN 2003, section V-F; Stoica et al. call these "base-b
/// fingers" as in Pastry and Kademlia).
pub fn finger_offsets(base: u32) -> Vec<u32> {
    let base = base.clamp(2, MAX_FINGER_BASE);
    let base = 1u64 << (31 - base.leading_zeros());
    let digit_bits = base.trailing_zeros();
    let mut offsets = Vec::new();
    let mut level_bits = 0;
    while level_bits < ID_BITS as u32 {
        for digit in 1..base {
            let offset = digit << level_bits;
            if offset > u64::from(u32::MAX) {
                break;
            }
            offsets.push(offset as u32);
        }
        level_bits += digit_bits;
    }
    offsets
}

/// A position on the ring: a peer's identifier or a key's identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Id(pub u32);

/// A peer is named by its ring identifier (drivers map it to a data channel).
pub type PeerId = Id;

impl Id {
    /// The identifier of `bytes`: SHA-1, first four bytes, big-endian.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha1::digest(bytes);
        Self(u32::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3],
        ]))
    }

    /// The identifier of a key.
    pub fn of_key(key: &str) -> Self {
        Self::of(key.as_bytes())
    }

    /// Clockwise distance from `self` to `other` (0 when equal).
    pub fn distance_to(self, other: Self) -> u32 {
        other.0.wrapping_sub(self.0)
    }

    /// `self + delta` on the ring.
    pub fn plus(self, delta: u32) -> Self {
        Self(self.0.wrapping_add(delta))
    }

    /// Start of finger `i` (0-based) in base 2: `self + 2^i` (`RingState::finger_start` for
    /// any base).
    pub fn finger_start(self, i: usize) -> Self {
        debug_assert!(i < ID_BITS);
        self.plus(1u32 << i)
    }

    /// `self ∈ (a, b]`; the whole ring when `a == b`.
    pub fn in_half_open(self, a: Self, b: Self) -> bool {
        if a == b {
            return true;
        }
        let to_self = a.distance_to(self);
        to_self != 0 && to_self <= a.distance_to(b)
    }

    /// `self ∈ (a, b)`; the ring without `a` when `a == b`.
    pub fn in_open(self, a: Self, b: Self) -> bool {
        if a == b {
            return self != a;
        }
        let to_self = a.distance_to(self);
        to_self != 0 && to_self < a.distance_to(b)
    }

    /// `self ∈ [a, b]`; exactly `{a}` when `a == b`.
    pub fn in_closed(self, a: Self, b: Self) -> bool {
        a.distance_to(self) <= a.distance_to(b)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The peer among `candidates` that most closely precedes `target` while lying strictly after
/// `me` (the paper's `closest_preceding_node`), or `None` when no candidate is in `(me, target)`.
pub fn closest_preceding(
    me: Id,
    target: Id,
    candidates: impl IntoIterator<Item = Id>,
) -> Option<Id> {
    candidates
        .into_iter()
        .filter(|c| c.in_open(me, target))
        .max_by_key(|c| me.distance_to(*c))
}

/// The true owner (successor) of `key` among a sorted, deduplicated list of live ids.
pub fn successor_in(sorted_ids: &[Id], key: Id) -> Option<Id> {
    if sorted_ids.is_empty() {
        return None;
    }
    let i = sorted_ids.partition_point(|id| *id < key);
    Some(sorted_ids.get(i).copied().unwrap_or(sorted_ids[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_around_intervals() {
        let (a, b) = (Id(u32::MAX - 1), Id(2));
        assert!(Id(u32::MAX).in_half_open(a, b));
        assert!(Id(0).in_half_open(a, b));
        assert!(Id(2).in_half_open(a, b));
        assert!(!Id(3).in_half_open(a, b));
        assert!(!a.in_half_open(a, b));
        assert!(!Id(2).in_open(a, b));
        assert!(Id(7).in_half_open(Id(7), Id(7)));
        assert!(!Id(7).in_open(Id(7), Id(7)));
        assert!(Id(8).in_open(Id(7), Id(7)));
    }

    #[test]
    fn sha1_prefix() {
        // SHA-1("") = da39a3ee...
        assert_eq!(Id::of(b""), Id(0xda39_a3ee));
    }

    #[test]
    fn successor_wraps() {
        let ids = [Id(10), Id(20), Id(30)];
        assert_eq!(successor_in(&ids, Id(15)), Some(Id(20)));
        assert_eq!(successor_in(&ids, Id(20)), Some(Id(20)));
        assert_eq!(successor_in(&ids, Id(31)), Some(Id(10)));
    }
}
