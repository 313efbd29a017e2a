//! The `sim-antientropy` experiment: what one Merkle anti-entropy round costs between two
//! replicas of a range, against the original project's "send the whole map every round".
//!
//! Two [`Store`]s get the same random keys (values of 32 hex characters), then one of them
//! diverges by `d` writes: newer values of existing keys, deletes (tombstones) of existing keys
//! and brand-new keys, each on a distinct key. One round then runs purely through
//! [`merkle::open_round`] and [`merkle::handle`], both stores in this process, until neither
//! side has a reply. Every message is measured as the node would frame it,
//! `{"v":1,"m":{"t":"sync","c":<SyncMsg>}}`; the baseline is the JSON of the whole map of the
//! range, what the original sent every round whatever changed.
//!
//! The range is the whole ring, so every key of the two stores takes part. A real replica range
//! covers a fraction of the tree's leaves, which puts more keys under each leaf (larger leaf
//! summaries) but does not change the in-sync cost.

use std::collections::{BTreeMap, VecDeque};

use node_core::merkle::{self, StepOptions, SyncError, SyncMsg};
use node_core::rng::Rng;
use node_core::store::{Entry, Limits, RingRange, Store};
use serde::Serialize;

/// Messages after which a round is declared runaway (a bug, not a measurement).
const ROUND_MESSAGE_BOUND: usize = 1_000_000;

/// One measured round.
#[derive(Debug, Clone, Serialize)]
pub struct AntiEntropyRow {
    /// Keys both replicas held before diverging.
    pub keys: usize,
    /// Divergent writes applied to one replica (each on a distinct key).
    pub divergent: usize,
    /// Sync messages of the round, both directions, the opening included.
    pub messages: usize,
    /// Framed JSON bytes of all those messages.
    pub bytes_per_round: usize,
    /// JSON bytes of the initiator's whole map of the range: the original's cost per round.
    pub baseline_bytes: usize,
    /// Largest single framed message.
    pub largest_message_bytes: usize,
    /// Entries that changed a store during the round.
    pub applied: usize,
    /// The responder found the roots equal at once.
    pub in_sync: bool,
    /// After the round both replicas hold the same range (must always be true).
    pub converged: bool,
}

impl AntiEntropyRow {
    /// `bytes_per_round` in KiB.
    pub fn kib_per_round(&self) -> f64 {
        self.bytes_per_round as f64 / 1024.0
    }

    /// `baseline_bytes` in KiB.
    pub fn baseline_kib(&self) -> f64 {
        self.baseline_bytes as f64 / 1024.0
    }
}

/// The envelope of a sync message on the wire: `{"v":1,"m":{"t":"sync","c":..}}`.
#[derive(Serialize)]
struct Frame<'a> {
    v: u8,
    m: Tagged<'a>,
}

#[derive(Serialize)]
#[serde(tag = "t", content = "c", rename_all = "snake_case")]
enum Tagged<'a> {
    Sync(&'a SyncMsg),
}

/// Bytes of `message` framed as the node sends it.
pub fn framed_len(message: &SyncMsg) -> serde_json::Result<usize> {
    let frame = Frame {
        v: node_core::wire::PROTOCOL_VERSION,
        m: Tagged::Sync(message),
    };
    Ok(serde_json::to_vec(&frame)?.len())
}

/// A store of `keys` random keys under a Merkle tree of `depth` (at most
/// [`merkle::MAX_DEPTH`]), the starting point both replicas share.
///
/// # Panics
/// If `depth` exceeds [`merkle::MAX_DEPTH`] (the caller validates it).
pub fn random_store(keys: usize, depth: u8, seed: u64) -> Store {
    let mut rng = Rng::new(seed);
    let mut store = Store::with_merkle_depth(Limits::default(), depth)
        .expect("the caller checks the depth against MAX_DEPTH");
    while store.len() < keys {
        let key = format!("user:{:016x}", rng.next_u64());
        let value = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let ts = rng.range_inclusive(1, 1_000);
        let writer = format!("{:08x}", rng.next_u32());
        store
            .apply(&key, Entry::live(value, ts, writer), 0)
            .expect("generated entries are within the default limits");
    }
    store
}

/// Applies `divergent` writes to `store`, each on a distinct key: a third newer values, a third
/// tombstones of existing keys, a third new keys (existing-key kinds fall back to new keys once
/// the existing keys run out).
pub fn diverge(store: &mut Store, divergent: usize, rng: &mut Rng) {
    let mut existing: Vec<String> = store.iter().map(|record| record.key.to_owned()).collect();
    for _ in 0..divergent {
        let ts = 2_000 + rng.below(1_000);
        let writer = format!("{:08x}", rng.next_u32());
        let kind = rng.below(3);
        if kind < 2 && !existing.is_empty() {
            // Partial Fisher-Yates: a distinct key each time.
            let at = rng.below(existing.len() as u64) as usize;
            let key = existing.swap_remove(at);
            let entry = if kind == 0 {
                Entry::live(format!("{:032x}", rng.next_u128()), ts, writer)
            } else {
                Entry::tombstone(ts, writer)
            };
            store.apply(&key, entry, 0).expect("within limits");
        } else {
            let key = format!("new:{:016x}", rng.next_u64());
            let entry = Entry::live(format!("{:032x}", rng.next_u128()), ts, writer);
            store.apply(&key, entry, 0).expect("within limits");
        }
    }
}

/// Why a round could not be measured (each one a bug in the protocol, not a measurement).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    #[error("a replica refused an honest peer's message: {0}")]
    Refused(#[from] SyncError),
    #[error("cannot serialize a message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("round did not end after {0} messages")]
    Runaway(usize),
}

/// Measures one round over the whole ring between a replica of `base` (the initiator) and a
/// replica of `base` that diverged by `divergent` writes drawn from `seed`.
pub fn measure_round(
    base: &Store,
    divergent: usize,
    seed: u64,
    options: &StepOptions,
) -> Result<AntiEntropyRow, RoundError> {
    let range = RingRange::full();
    let mut rng = Rng::new(seed ^ (divergent as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut initiator = base.clone();
    let mut responder = base.clone();
    diverge(&mut responder, divergent, &mut rng);

    let map: BTreeMap<&str, &Entry> = initiator
        .range(range)
        .map(|record| (record.key, record.entry))
        .collect();
    let baseline_bytes = serde_json::to_vec(&map)?.len();

    let mut row = AntiEntropyRow {
        keys: base.len(),
        divergent,
        messages: 0,
        bytes_per_round: 0,
        baseline_bytes,
        largest_message_bytes: 0,
        applied: 0,
        in_sync: false,
        converged: false,
    };
    // (to the responder?, message), delivered in order.
    let mut in_flight = VecDeque::from([(true, merkle::open_round(&initiator, range))]);
    while let Some((to_responder, message)) = in_flight.pop_front() {
        if row.messages == ROUND_MESSAGE_BOUND {
            return Err(RoundError::Runaway(ROUND_MESSAGE_BOUND));
        }
        let len = framed_len(&message)?;
        row.messages += 1;
        row.bytes_per_round += len;
        row.largest_message_bytes = row.largest_message_bytes.max(len);
        let store = if to_responder {
            &mut responder
        } else {
            &mut initiator
        };
        let handled = merkle::handle(store, message, 0, options)?;
        row.applied += handled.applied;
        row.in_sync |= to_responder && handled.in_sync;
        in_flight.extend(
            handled
                .replies
                .into_iter()
                .map(|reply| (!to_responder, reply)),
        );
    }
    let contents = |store: &Store| -> Vec<(String, Entry)> {
        store
            .range(range)
            .map(|record| (record.key.to_owned(), record.entry.clone()))
            .collect()
    };
    row.converged = initiator.range_tree(range).root() == responder.range_tree(range).root()
        && contents(&initiator) == contents(&responder);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_sync_round_is_two_small_messages() {
        let base = random_store(500, merkle::DEFAULT_DEPTH, 1);
        let row = measure_round(&base, 0, 1, &StepOptions::default()).unwrap();
        assert_eq!(row.messages, 2);
        assert!(row.in_sync && row.converged);
        assert!(row.bytes_per_round < 1024);
    }

    #[test]
    fn framing_matches_the_wire_codec() {
        let store = random_store(50, 6, 3);
        let message = merkle::open_round(&store, RingRange::new(7, 3));
        let wire = node_core::wire::encode(&node_core::wire::Message::Sync(message.clone()))
            .expect("an opening fits a frame");
        assert_eq!(framed_len(&message).unwrap(), wire.len());
    }

    #[test]
    fn divergences_touch_distinct_keys_and_converge() {
        let base = random_store(300, 8, 2);
        let row = measure_round(&base, 40, 2, &StepOptions::default()).unwrap();
        assert!(row.converged);
        assert_eq!(row.applied, 40);
        assert!(row.largest_message_bytes <= merkle::MAX_SYNC_MESSAGE_BYTES);
    }
}
