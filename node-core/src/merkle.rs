//! Anti-entropy between replicas: Merkle trees over key-id ranges, compared top-down.
//!
//! # Protocol
//!
//! As in Dynamo (DeCandia et al., SOSP 2007, section 4.7) two replicas of a key range compare
//! hash trees (Merkle, CRYPTO 1987) from the root down and exchange only the keys under subtrees
//! whose hashes differ, so in-sync neighbours exchange one root hash, not their maps.
//!
//! 1. **Fixed shape.** The tree splits the whole 32-bit id space by id prefix: node
//!    `(level, index)` covers the ids whose top `level` bits equal `index`; leaves are at
//!    `level == depth` (`2^depth` buckets). Every peer uses the same depth, so two peers' trees
//!    line up node for node whatever keys they hold.
//! 2. **Range restriction.** Two neighbours share a range `(a, b]`, not the whole ring. The tree
//!    of a range ([`RangeTree`], from [`Store::range_tree`]) gives each node the digest of the
//!    entries that lie in both the node and the range; nodes outside the range are empty.
//! 3. **Descent.** The initiator sends [`SyncHashes::opening`] (its root). Each side answers a
//!    [`SyncHashes`] with [`diff_step`]: for every node whose hash differs from its own it either
//!    sends its hashes for the node's descendants `expand_levels` further down, or, at a leaf or
//!    when one side's subtree is empty, marks the node for exchange. Messages carry range and
//!    depth, so a step needs no session state. A side replies only when the step produced
//!    something, except that the responder to an opening always answers.
//! 4. **Exchange.** For each node to exchange, the side that found it sends
//!    [`summarize`]d `(key, version, digest)` lists (or, when the peer's subtree is empty, its
//!    entries straight away); the other side calls [`compare_summary`] and sends back the
//!    entries the summariser lacks or holds older (`send`), plus the keys it wants (`want`),
//!    which the summariser answers with entries. Entries are applied with [`Store::apply`],
//!    which keeps the LWW winner.
//!
//! # Session API
//!
//! [`open_round`] and [`handle`] run the protocol above as messages ([`SyncMsg`]) without
//! exposing its steps; the node only moves messages between two replicas of a range:
//!
//! ```text
//! initiator                                 responder
//!   open_round(range) -- Hashes[root] ------->  handle: roots equal -> Equal   (in_sync)
//!   handle(Equal) -> no replies (in_sync)  <--  ... round over: 2 messages
//!
//!   open_round(range) -- Hashes[root] ------->  handle -> Hashes[children]
//!   handle -> Hashes[grandchildren]       <--   ... descends until leaves or empty subtrees:
//!   ... -> Summaries / Entries              -->  handle -> Entries (what I lack) + Want
//!   handle(Entries) -> applies; Want -> Entries  handle(Entries) -> applies, no reply
//! ```
//!
//! A round is over when neither side has a reply left: every message is answered by messages
//! that are strictly further along (deeper hashes, then summaries, then entries or wants, then
//! entries, which need no answer), so a round between honest peers ends after at most
//! `depth / expand_levels + 4` exchanges. No state survives between messages; lost messages
//! only leave differences for the next round.
//!
//! Cost: an in-sync round is two small messages ([`in_sync_round_bytes`], under 220 bytes
//! whatever the key count, about 280 with the wire envelope). With `d` differing keys the
//! descent sends at most `1 + d * 2^e * ceil(depth / e)` hashes for `e = expand_levels` (about
//! `2 * d * depth` for `e` = 1 or 2), in O(depth / e) messages, plus one summary of each
//! differing leaf and the differing entries, packed into messages of at most
//! [`MAX_SYNC_MESSAGE_BYTES`].
//!
//! # Deviations
//!
//! - **XOR aggregation instead of hash-of-children.** A leaf is the XOR of the digests of its
//!   entries and an inner node the XOR of its children (so: of all entries below it). Inserting,
//!   replacing or removing an entry is then O(depth) XORs ([`MerkleTree::update`]), independent
//!   of arrival order, and the value of a node restricted to a range is computed from the stored
//!   tree plus the two boundary paths. The [`Store`] maintains its tree on every change. The price
//!   is that XOR set hashes are linear, so an adversary choosing many entries could forge a
//!   collision; anti-entropy only detects accidental divergence between cooperating replicas (a
//!   peer that lies can always just send wrong data), and for honest data a differing subtree
//!   goes unnoticed with probability 2^-128 per comparison. The empty subtree is all zeros.
//! - **Digests** are SHA-1 truncated to 16 bytes (128 bits) over a domain-separated,
//!   length-prefixed encoding of `(key, ts, writer, tombstone flag, value)`
//!   ([`entry_digest`]); on the wire they are 32 lowercase hex digits.
//! - **Depth** defaults to [`DEFAULT_DEPTH`] = 12: 4096 leaves, a 128 KiB dense tree per store
//!   (allocated with the store's first entry, so empty stores cost nothing).
//!   In a ring of N peers a replica range spans about 4096 / N leaves; raise the depth for rings
//!   with many keys per peer (at most [`MAX_DEPTH`], a 2 MiB tree). All peers MUST agree on it.

pub use crate::store::tree::{
    DEFAULT_DEPTH, Digest, MAX_DEPTH, MerkleError, MerkleTree, NodeRef, RangeTree, entry_digest,
};
use crate::store::{Entry, Record, RingRange, Store, Version, key_id};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Most node hashes accepted in one [`SyncHashes`] (about 45 JSON bytes each, so a full message
/// stays under the 64 KiB frame).
pub const MAX_NODES_PER_MESSAGE: usize = 1024;
/// Most items accepted in one [`NodeSummary`].
pub const MAX_SUMMARY_ITEMS: usize = 2048;
/// Default JSON budget of one [`NodeSummary`] built by [`summarize`].
pub const SUMMARY_BUDGET_BYTES: usize = 32 * 1024;

/// One node's digest, on the wire as `[level, index, "hex"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u8, u32, Digest)", into = "(u8, u32, Digest)")]
pub struct NodeHash {
    pub node: NodeRef,
    pub hash: Digest,
}

impl From<(u8, u32, Digest)> for NodeHash {
    fn from((level, index, hash): (u8, u32, Digest)) -> Self {
        Self {
            node: NodeRef::new(level, index),
            hash,
        }
    }
}

impl From<NodeHash> for (u8, u32, Digest) {
    fn from(value: NodeHash) -> Self {
        (value.node.level, value.node.index, value.hash)
    }
}

/// A descent message: some node digests of the sender's tree for `range`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncHashes {
    pub range: RingRange,
    pub depth: u8,
    pub nodes: Vec<NodeHash>,
}

impl SyncHashes {
    /// The first message of a round: the sender's root for the tree's range.
    pub fn opening(tree: &RangeTree<'_>) -> Self {
        Self {
            range: tree.range(),
            depth: tree.depth(),
            nodes: vec![NodeHash {
                node: NodeRef::ROOT,
                hash: tree.root(),
            }],
        }
    }

    /// Whether this message carries no hashes (a reply meaning "nothing further differs").
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether this is an opening: the root's hash and nothing else.
    pub fn is_opening(&self) -> bool {
        matches!(self.nodes.as_slice(), [only] if only.node == NodeRef::ROOT)
    }
}

/// Tuning of [`diff_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOptions {
    /// Levels to descend per message (1..=4): fewer round trips for a few more hashes.
    /// For an isolated difference, 1 and 2 cost the same bytes; 2 halves the round trips.
    pub expand_levels: u8,
    /// Most hashes in one reply (at most [`MAX_NODES_PER_MESSAGE`]).
    pub max_reply_nodes: usize,
    /// Most nodes marked for exchange per step (each costs a summary or an entry list). The
    /// default exchanges every differing node a message names, so one round repairs everything;
    /// lower it to bound the work one message can cause, and leave the rest to later rounds.
    pub max_exchange: usize,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            expand_levels: 2,
            max_reply_nodes: MAX_NODES_PER_MESSAGE,
            max_exchange: MAX_NODES_PER_MESSAGE,
        }
    }
}

/// The outcome of one descent step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Hashes to send to the peer (empty: nothing more to compare on this side).
    pub reply: SyncHashes,
    /// Nodes whose contents differ: exchange them with [`summarize`] / [`compare_summary`].
    /// A leaf, or a subtree that one side holds empty.
    pub exchange: Vec<NodeRef>,
    /// Some differing nodes were left out to respect the bounds; the next round finds them.
    pub truncated: bool,
}

/// Why a peer's sync message was refused (drop it and count).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("peer uses tree depth {theirs}, this peer {mine}")]
    DepthMismatch { mine: u8, theirs: u8 },
    #[error(
        "peer compares range ({theirs_from}, {theirs_to}], this tree covers ({mine_from}, {mine_to}]"
    )]
    RangeMismatch {
        mine_from: u32,
        mine_to: u32,
        theirs_from: u32,
        theirs_to: u32,
    },
    #[error("node (level {level}, index {index}) is not in a tree of depth {depth}")]
    InvalidNode { level: u8, index: u32, depth: u8 },
    #[error("{len} items exceed the per-message limit of {max}")]
    TooManyItems { len: usize, max: usize },
    #[error("node (level {level}, index {index}) holds no id of the compared range")]
    NodeOutsideRange { level: u8, index: u32 },
}

/// One descent step: compares the peer's hashes with `mine` (built for the message's range) and
/// says what to send next and which nodes to exchange.
pub fn diff_step(
    mine: &RangeTree<'_>,
    theirs: &SyncHashes,
    options: &StepOptions,
) -> Result<Step, SyncError> {
    let max_reply = options.max_reply_nodes.min(MAX_NODES_PER_MESSAGE);
    let descent = descend(mine, theirs, options, max_reply)?;
    Ok(Step {
        reply: SyncHashes {
            range: mine.range(),
            depth: mine.depth(),
            nodes: descent.hashes,
        },
        exchange: descent.exchange.into_keys().collect(),
        truncated: descent.truncated,
    })
}

/// What one descent step found, before it is cut into messages.
struct Descent {
    /// My hashes of the descendants of differing nodes.
    hashes: Vec<NodeHash>,
    /// Differing nodes to exchange, with the peer's digest of each.
    exchange: BTreeMap<NodeRef, Digest>,
    truncated: bool,
}

fn descend(
    mine: &RangeTree<'_>,
    theirs: &SyncHashes,
    options: &StepOptions,
    max_reply: usize,
) -> Result<Descent, SyncError> {
    let depth = mine.depth();
    if theirs.depth != depth {
        return Err(SyncError::DepthMismatch {
            mine: depth,
            theirs: theirs.depth,
        });
    }
    if theirs.range != mine.range() {
        return Err(SyncError::RangeMismatch {
            mine_from: mine.range().from,
            mine_to: mine.range().to,
            theirs_from: theirs.range.from,
            theirs_to: theirs.range.to,
        });
    }
    if theirs.nodes.len() > MAX_NODES_PER_MESSAGE {
        return Err(SyncError::TooManyItems {
            len: theirs.nodes.len(),
            max: MAX_NODES_PER_MESSAGE,
        });
    }
    if let Some(bad) = theirs.nodes.iter().find(|hash| !hash.node.is_valid(depth)) {
        return Err(SyncError::InvalidNode {
            level: bad.node.level,
            index: bad.node.index,
            depth,
        });
    }
    let expand = options.expand_levels.clamp(1, 4);
    let mut seen = BTreeSet::new();
    let mut descent = Descent {
        hashes: Vec::new(),
        exchange: BTreeMap::new(),
        truncated: false,
    };
    for their in &theirs.nodes {
        // A repeated node would only repeat the work (and the reply).
        if !mine.overlaps(their.node) || !seen.insert(their.node) {
            continue;
        }
        let my_hash = mine.restricted(their.node);
        if my_hash == their.hash {
            continue;
        }
        if their.node.level == depth || my_hash.is_zero() || their.hash.is_zero() {
            if descent.exchange.len() < options.max_exchange {
                descent.exchange.insert(their.node, their.hash);
            } else {
                descent.truncated = true;
            }
            continue;
        }
        let down = expand.min(depth - their.node.level);
        let below: Vec<NodeHash> = their
            .node
            .descendants(down)
            .filter(|node| mine.overlaps(*node))
            .map(|node| NodeHash {
                node,
                hash: mine.restricted(node),
            })
            .collect();
        if descent.hashes.len() + below.len() > max_reply {
            descent.truncated = true;
        } else {
            descent.hashes.extend(below);
        }
    }
    Ok(descent)
}

/// One entry as listed in a [`NodeSummary`]: on the wire `[key, ts, writer, "digest"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(String, u64, String, Digest)",
    into = "(String, u64, String, Digest)"
)]
pub struct SummaryItem {
    pub key: String,
    pub version: Version,
    /// [`entry_digest`] of the entry: equal digests mean identical entries.
    pub digest: Digest,
}

impl From<(String, u64, String, Digest)> for SummaryItem {
    fn from((key, ts, writer, digest): (String, u64, String, Digest)) -> Self {
        Self {
            key,
            version: Version { ts, writer },
            digest,
        }
    }
}

impl From<SummaryItem> for (String, u64, String, Digest) {
    fn from(item: SummaryItem) -> Self {
        (item.key, item.version.ts, item.version.writer, item.digest)
    }
}

/// The sender's entries in `node` ∩ `range` whose `(key id, key)` position lies after the key
/// `after` and up to the key `through` (`None`: from the node's start / to its end). A node's
/// summary is split into such chunks so each fits one frame, and each chunk is complete for its
/// interval, so the receiver can tell "missing" from "in another chunk".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub range: RingRange,
    pub node: NodeRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    pub items: Vec<SummaryItem>,
}

/// Summarises `store`'s entries in `node` ∩ `range` in chunks of about `budget_bytes` of JSON
/// each ([`SUMMARY_BUDGET_BYTES`] is a good default). Always returns at least one chunk (an empty
/// one says "I hold nothing here").
pub fn summarize(
    store: &Store,
    range: RingRange,
    node: NodeRef,
    budget_bytes: usize,
) -> Vec<NodeSummary> {
    let mut unbounded = usize::MAX;
    summarize_bounded(store, range, node, budget_bytes, &mut unbounded).0
}

/// [`summarize`], stopping once about `total` JSON bytes are summarised (`total` is decreased
/// by what was used). Returns whether it stopped early: the last chunk then ends at its last
/// key (`through`), so every chunk stays complete for its interval and the rest of the node
/// is left to a later round.
fn summarize_bounded(
    store: &Store,
    range: RingRange,
    node: NodeRef,
    budget_bytes: usize,
    total: &mut usize,
) -> (Vec<NodeSummary>, bool) {
    let mut chunks = Vec::new();
    let mut items: Vec<SummaryItem> = Vec::new();
    let mut after: Option<String> = None;
    let mut used = 0;
    for record in store.node_entries(range, node) {
        let cost = item_json_bound(&record);
        if *total < cost {
            let through = items.last().map(|item| item.key.clone());
            if through.is_some() {
                chunks.push(NodeSummary {
                    range,
                    node,
                    after,
                    through,
                    items,
                });
            }
            return (chunks, true);
        }
        *total -= cost;
        if !items.is_empty() && (used + cost > budget_bytes || items.len() == MAX_SUMMARY_ITEMS) {
            let through = items.last().map(|item| item.key.clone());
            chunks.push(NodeSummary {
                range,
                node,
                after: after.take(),
                through: through.clone(),
                items: std::mem::take(&mut items),
            });
            after = through;
            used = 0;
        }
        used += cost;
        items.push(SummaryItem {
            key: record.key.to_owned(),
            version: record.entry.version.clone(),
            digest: record.digest,
        });
    }
    chunks.push(NodeSummary {
        range,
        node,
        after,
        through: None,
        items,
    });
    (chunks, false)
}

fn item_json_bound(record: &Record<'_>) -> usize {
    use crate::store::json_escaped_len;
    // ["key",ts,"writer","32 hex"], plus a comma.
    json_escaped_len(record.key) + json_escaped_len(&record.entry.version.writer) + 20 + 34 + 9
}

/// What [`compare_summary`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// My entries the summariser lacks, or holds older or different: send them.
    pub send: Vec<(String, Entry)>,
    /// Keys the summariser holds newer, or that I lack: ask for them.
    pub want: Vec<String>,
    /// Items outside the summary's node, range or interval (dropped; count them).
    pub misplaced: usize,
    /// The comparison ran out of its visit budget (a later round does the rest).
    pub truncated: bool,
}

/// Compares a peer's summary chunk with `store`'s entries in the same interval.
pub fn compare_summary(store: &Store, summary: &NodeSummary) -> Result<Comparison, SyncError> {
    let mut unbounded = usize::MAX;
    compare_summary_bounded(store, summary, &mut unbounded)
}

/// [`compare_summary`] visiting at most `visits` of our records (decreased by what it used):
/// only the records of the chunk's interval are visited, and a comparison that runs out stops
/// there (`Comparison::truncated`), leaving the rest to a later round.
fn compare_summary_bounded(
    store: &Store,
    summary: &NodeSummary,
    visits: &mut usize,
) -> Result<Comparison, SyncError> {
    let depth = store.merkle().depth();
    if !summary.node.is_valid(depth) {
        return Err(SyncError::InvalidNode {
            level: summary.node.level,
            index: summary.node.index,
            depth,
        });
    }
    if summary.items.len() > MAX_SUMMARY_ITEMS {
        return Err(SyncError::TooManyItems {
            len: summary.items.len(),
            max: MAX_SUMMARY_ITEMS,
        });
    }
    let position = |key| (key_id(key), key);
    let after = summary.after.as_deref().map(position);
    let through = summary.through.as_deref().map(position);
    let (lo, hi) = summary.node.span();
    let in_interval = |id: u32, key: &str| {
        after.is_none_or(|after| (id, key) > after)
            && through.is_none_or(|through| (id, key) <= through)
    };

    let mut comparison = Comparison::default();
    let mut theirs: BTreeMap<&str, &SummaryItem> = BTreeMap::new();
    for item in &summary.items {
        let id = key_id(&item.key);
        if id < lo || id > hi || !summary.range.contains(id) || !in_interval(id, &item.key) {
            comparison.misplaced += 1;
            continue;
        }
        let slot = theirs.entry(&item.key).or_insert(item);
        if (&item.version, item.digest) > (&slot.version, slot.digest) {
            *slot = item;
        }
    }

    // Only the chunk's interval: a node split into many chunks is scanned once in all.
    let first = after.map_or(lo, |(id, _)| id.max(lo));
    let last = through.map_or(hi, |(id, _)| id.min(hi));
    for record in store
        .ids_between(first, last)
        .filter(|record| summary.range.contains(record.id))
    {
        if !in_interval(record.id, record.key) {
            continue;
        }
        if *visits == 0 {
            // Out of budget: what was not visited is neither sent nor wanted this round.
            comparison.truncated = true;
            return Ok(comparison);
        }
        *visits -= 1;
        match theirs.remove(record.key) {
            None => comparison
                .send
                .push((record.key.to_owned(), record.entry.clone())),
            Some(their) if their.digest == record.digest => {}
            Some(their) => match record.entry.version.cmp(&their.version) {
                Ordering::Greater => comparison
                    .send
                    .push((record.key.to_owned(), record.entry.clone())),
                Ordering::Less => comparison.want.push(record.key.to_owned()),
                // Same version, different contents: exchange both, LWW settles it.
                Ordering::Equal => {
                    comparison
                        .send
                        .push((record.key.to_owned(), record.entry.clone()));
                    comparison.want.push(record.key.to_owned());
                }
            },
        }
    }
    comparison
        .want
        .extend(theirs.into_keys().map(str::to_owned));
    Ok(comparison)
}

/// Largest serialized [`SyncMsg`] that [`handle`] and [`open_round`] produce, framed as
/// `{"v":1,"m":{"t":"sync","c":<SyncMsg>}}`, as long as entries respect [`Limits::default`](crate::store::Limits::default)
/// (60 KiB: under the 64 KiB frame with room for a longer envelope).
pub const MAX_SYNC_MESSAGE_BYTES: usize = 60 * 1024;
/// Most entries accepted in one [`SyncMsg::Entries`].
pub const MAX_ENTRIES_PER_MESSAGE: usize = 2048;
/// Most keys accepted in one [`SyncMsg::Want`].
pub const MAX_WANT_KEYS: usize = 4096;
/// Most JSON bytes of entries and summaries one handled message makes this side send back (16
/// full messages, about 1 MiB): an opening with a zero root, a summary of an empty node or a
/// want list would otherwise answer with the whole range at once. The rest follows in later
/// rounds ([`Handled::truncated`]), which the owner runs every 250 ms until its replicas settle.
pub const MAX_REPLY_BYTES: usize = 16 * MAX_SYNC_MESSAGE_BYTES;
/// Most of its own records one handled [`SyncMsg::Summaries`] makes this side visit (a message
/// of 1024 chunks each naming the root would otherwise scan the range 1024 times).
pub const MAX_SCAN_RECORDS: usize = 32 * MAX_SUMMARY_ITEMS;
/// JSON bytes of payload packed into one message; the rest of [`MAX_SYNC_MESSAGE_BYTES`] is
/// for the message's own fields and the envelope. One maximal entry (about 50 KiB under the
/// default limits) fits alone.
const PACK_BUDGET_BYTES: usize = 56 * 1024;

/// A sync chunk as carried in [`SyncMsg::Summaries`]: a [`NodeSummary`] without the range,
/// which the message carries once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryChunk {
    pub node: NodeRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    pub items: Vec<SummaryItem>,
}

impl SummaryChunk {
    /// The chunk as the [`NodeSummary`] of `range`.
    pub fn into_summary(self, range: RingRange) -> NodeSummary {
        NodeSummary {
            range,
            node: self.node,
            after: self.after,
            through: self.through,
            items: self.items,
        }
    }
}

impl From<NodeSummary> for SummaryChunk {
    fn from(summary: NodeSummary) -> Self {
        Self {
            node: summary.node,
            after: summary.after,
            through: summary.through,
            items: summary.items,
        }
    }
}

/// Every message of an anti-entropy round (see the module docs for the flow). Each one names
/// the range and tree depth it is about, so [`handle`] needs no session state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "s", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncMsg {
    /// Descent: the sender's digests of some tree nodes. The opening holds just the root.
    Hashes(SyncHashes),
    /// "Your opening's root equals mine": the round is over, the replicas agree.
    Equal { range: RingRange, depth: u8 },
    /// The sender's `(key, version, digest)` lists of nodes that differ; answer with the
    /// entries the sender lacks ([`SyncMsg::Entries`]) and the keys it holds newer
    /// ([`SyncMsg::Want`]).
    Summaries {
        range: RingRange,
        depth: u8,
        chunks: Vec<SummaryChunk>,
    },
    /// Entries to merge under LWW. Needs no answer.
    Entries {
        range: RingRange,
        depth: u8,
        entries: Vec<(String, Entry)>,
    },
    /// Keys whose entries the sender asks for; answered with [`SyncMsg::Entries`].
    Want {
        range: RingRange,
        depth: u8,
        keys: Vec<String>,
    },
}

impl SyncMsg {
    /// The ring range this message is about.
    pub const fn range(&self) -> RingRange {
        match self {
            Self::Hashes(hashes) => hashes.range,
            Self::Equal { range, .. }
            | Self::Summaries { range, .. }
            | Self::Entries { range, .. }
            | Self::Want { range, .. } => *range,
        }
    }

    /// The tree depth the sender uses.
    pub const fn depth(&self) -> u8 {
        match self {
            Self::Hashes(hashes) => hashes.depth,
            Self::Equal { depth, .. }
            | Self::Summaries { depth, .. }
            | Self::Entries { depth, .. }
            | Self::Want { depth, .. } => *depth,
        }
    }

    /// A short name of the variant, for metrics and logs.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Hashes(_) => "hashes",
            Self::Equal { .. } => "equal",
            Self::Summaries { .. } => "summaries",
            Self::Entries { .. } => "entries",
            Self::Want { .. } => "want",
        }
    }

    /// Whether this is the first message of a round ([`open_round`]): hashes of the root only.
    pub fn is_opening(&self) -> bool {
        matches!(self, Self::Hashes(hashes) if hashes.is_opening())
    }
}

/// What [`handle`] did with one message.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Handled {
    /// Messages to send back to the peer that sent the handled one, in order.
    pub replies: Vec<SyncMsg>,
    /// Entries that changed the store (inserted or replaced): `stored.len()`.
    pub applied: usize,
    /// Those entries, `(key, entry)`, as now stored (e.g. for persistence or events).
    pub stored: Vec<(String, Entry)>,
    /// The round found the replicas equal: set on the responder when it answers an opening
    /// with [`SyncMsg::Equal`], and on the initiator when it receives that answer.
    pub in_sync: bool,
    /// Items of the message that were dropped: entries or wanted keys outside the message's
    /// range, entries the store's limits refuse, summary items outside their chunk. Always 0
    /// between honest peers; count it like other garbage.
    pub dropped: usize,
    /// Some differing nodes were left out ([`StepOptions::max_exchange`]); a later round
    /// repairs them.
    pub truncated: bool,
}

/// The initiator's first message of a round over `range`: the root of its range tree.
pub fn open_round(store: &Store, range: RingRange) -> SyncMsg {
    SyncMsg::Hashes(SyncHashes::opening(&store.range_tree(range)))
}

/// One side's whole reaction to one message of a round: checks it, merges received entries
/// into `store` under LWW (stamping new tombstones with `now`) and returns the messages to send
/// back. Both sides run this same function; a round is over when neither has replies left.
///
/// Every reply serializes, framed, under [`MAX_SYNC_MESSAGE_BYTES`] (given entries within
/// [`Limits::default`](crate::store::Limits::default)). The replies are bounded by the
/// message handled: its (at most [`MAX_NODES_PER_MESSAGE`]) nodes expand to at most
/// `2^expand_levels` hashes each, cut into messages of `max_reply_nodes`, plus one summary or
/// entry list per differing node, packed.
///
/// The caller MUST check that `msg.range()` is a range it replicates together with the sender:
/// this function trusts it, and merges whatever entries of that range it receives.
///
/// # Errors
/// A message that no honest peer sends (other tree depth, too many items, nodes not in the tree
/// or not in the range); drop it and count.
pub fn handle(
    store: &mut Store,
    msg: SyncMsg,
    now: u64,
    opts: &StepOptions,
) -> Result<Handled, SyncError> {
    let depth = store.merkle().depth();
    if msg.depth() != depth {
        return Err(SyncError::DepthMismatch {
            mine: depth,
            theirs: msg.depth(),
        });
    }
    match msg {
        SyncMsg::Hashes(hashes) => on_hashes(store, &hashes, opts),
        SyncMsg::Equal { .. } => Ok(Handled {
            in_sync: true,
            ..Handled::default()
        }),
        SyncMsg::Summaries { range, chunks, .. } => on_summaries(store, range, chunks),
        SyncMsg::Entries { range, entries, .. } => on_entries(store, range, entries, now),
        SyncMsg::Want { range, keys, .. } => on_want(store, range, keys),
    }
}

fn on_hashes(store: &Store, hashes: &SyncHashes, opts: &StepOptions) -> Result<Handled, SyncError> {
    let range = hashes.range;
    let depth = store.merkle().depth();
    let tree = store.range_tree(range);
    let descent = descend(&tree, hashes, opts, usize::MAX)?;
    let mut handled = Handled {
        truncated: descent.truncated,
        ..Handled::default()
    };
    if descent.hashes.is_empty() && descent.exchange.is_empty() {
        // Nothing differs below what the peer sent. Only an opening gets an answer: the peer
        // is waiting to learn whether the round is over.
        if hashes.is_opening() {
            handled.in_sync = true;
            handled.replies.push(SyncMsg::Equal { range, depth });
        }
        return Ok(handled);
    }
    let per_message = opts.max_reply_nodes.clamp(1, MAX_NODES_PER_MESSAGE);
    for nodes in descent.hashes.chunks(per_message) {
        handled.replies.push(SyncMsg::Hashes(SyncHashes {
            range,
            depth,
            nodes: nodes.to_vec(),
        }));
    }
    let mut chunks = Vec::new();
    let mut entries = Vec::new();
    let mut budget = MAX_REPLY_BYTES;
    for (node, their_hash) in descent.exchange {
        if their_hash.is_zero() {
            // The peer holds nothing here: a summary would only come back as a want for all.
            for record in store.node_entries(range, node) {
                let cost = entry_json_bound(record.key, record.entry);
                if budget < cost {
                    handled.truncated = true;
                    break;
                }
                budget -= cost;
                entries.push((record.key.to_owned(), record.entry.clone()));
            }
        } else {
            let (summary, cut) =
                summarize_bounded(store, range, node, SUMMARY_BUDGET_BYTES, &mut budget);
            handled.truncated |= cut;
            chunks.extend(summary.into_iter().map(SummaryChunk::from));
        }
        if handled.truncated {
            break;
        }
    }
    for chunks in pack(
        chunks,
        chunk_json_bound,
        MAX_NODES_PER_MESSAGE,
        MAX_SUMMARY_ITEMS,
    ) {
        handled.replies.push(SyncMsg::Summaries {
            range,
            depth,
            chunks,
        });
    }
    push_entries(&mut handled.replies, range, depth, entries);
    Ok(handled)
}

fn on_summaries(
    store: &Store,
    range: RingRange,
    chunks: Vec<SummaryChunk>,
) -> Result<Handled, SyncError> {
    let depth = store.merkle().depth();
    if chunks.len() > MAX_NODES_PER_MESSAGE {
        return Err(SyncError::TooManyItems {
            len: chunks.len(),
            max: MAX_NODES_PER_MESSAGE,
        });
    }
    let items: usize = chunks.iter().map(|chunk| chunk.items.len()).sum();
    if items > MAX_SUMMARY_ITEMS {
        return Err(SyncError::TooManyItems {
            len: items,
            max: MAX_SUMMARY_ITEMS,
        });
    }
    if !chunks_disjoint(&chunks) {
        // An honest summariser's chunks cover disjoint intervals (disjoint nodes, a split
        // node's chunks one after another); overlapping ones only multiply our work.
        return Err(SyncError::TooManyItems {
            len: chunks.len(),
            max: MAX_NODES_PER_MESSAGE,
        });
    }
    let mut handled = Handled::default();
    let mut send = Vec::new();
    let mut want = BTreeSet::new();
    let mut visits = MAX_SCAN_RECORDS;
    let mut budget = MAX_REPLY_BYTES;
    for chunk in chunks {
        if chunk.node.is_valid(depth) && !overlaps(range, chunk.node) {
            return Err(SyncError::NodeOutsideRange {
                level: chunk.node.level,
                index: chunk.node.index,
            });
        }
        let comparison = compare_summary_bounded(store, &chunk.into_summary(range), &mut visits)?;
        handled.dropped += comparison.misplaced;
        handled.truncated |= comparison.truncated;
        for (key, entry) in comparison.send {
            let cost = entry_json_bound(&key, &entry);
            if budget < cost {
                handled.truncated = true;
                break;
            }
            budget -= cost;
            send.push((key, entry));
        }
        want.extend(comparison.want);
        if handled.truncated {
            break;
        }
    }
    push_entries(&mut handled.replies, range, depth, send);
    for keys in pack(
        want,
        |key| crate::store::json_escaped_len(key) + 3,
        MAX_WANT_KEYS,
        MAX_WANT_KEYS,
    ) {
        handled.replies.push(SyncMsg::Want { range, depth, keys });
    }
    Ok(handled)
}

/// Whether the chunks of one [`SyncMsg::Summaries`] cover disjoint intervals: distinct nodes
/// neither nested nor overlapping, and the chunks of one node ordered `after` the previous
/// chunk's `through`.
fn chunks_disjoint(chunks: &[SummaryChunk]) -> bool {
    type Position = Option<(u32, String)>;
    let position = |key: &str| (key_id(key), key.to_owned());
    let mut by_node: BTreeMap<NodeRef, Vec<(Position, Position)>> = BTreeMap::new();
    for chunk in chunks {
        by_node.entry(chunk.node).or_default().push((
            chunk.after.as_deref().map(position),
            chunk.through.as_deref().map(position),
        ));
    }
    let mut spans: Vec<(u32, u32)> = by_node.keys().map(|node| node.span()).collect();
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 <= w[0].1) {
        return false;
    }
    by_node.into_values().all(|mut parts| {
        parts.sort();
        parts.windows(2).all(|w| match (&w[0].1, &w[1].0) {
            (Some(through), Some(after)) => after >= through,
            _ => false,
        })
    })
}

fn on_entries(
    store: &mut Store,
    range: RingRange,
    entries: Vec<(String, Entry)>,
    now: u64,
) -> Result<Handled, SyncError> {
    if entries.len() > MAX_ENTRIES_PER_MESSAGE {
        return Err(SyncError::TooManyItems {
            len: entries.len(),
            max: MAX_ENTRIES_PER_MESSAGE,
        });
    }
    let mut handled = Handled::default();
    for (key, entry) in entries {
        if !range.contains(key_id(&key)) {
            handled.dropped += 1;
            continue;
        }
        match store.apply(&key, entry, now) {
            Ok(outcome) if outcome.changed() => {
                if let Some(entry) = store.get(&key) {
                    handled.stored.push((key, entry.clone()));
                }
            }
            Ok(_) => {}
            Err(_) => handled.dropped += 1,
        }
    }
    handled.applied = handled.stored.len();
    Ok(handled)
}

fn on_want(store: &Store, range: RingRange, keys: Vec<String>) -> Result<Handled, SyncError> {
    if keys.len() > MAX_WANT_KEYS {
        return Err(SyncError::TooManyItems {
            len: keys.len(),
            max: MAX_WANT_KEYS,
        });
    }
    let mut handled = Handled::default();
    let mut entries = Vec::new();
    let mut budget = MAX_REPLY_BYTES;
    let keys: BTreeSet<String> = keys.into_iter().collect();
    for key in keys {
        if !range.contains(key_id(&key)) {
            handled.dropped += 1;
            continue;
        }
        // A key removed since the peer's summary is simply not sent.
        if let Some(entry) = store.get(&key) {
            let cost = entry_json_bound(&key, entry);
            if budget < cost {
                handled.truncated = true;
                break;
            }
            budget -= cost;
            let entry = entry.clone();
            entries.push((key, entry));
        }
    }
    push_entries(&mut handled.replies, range, store.merkle().depth(), entries);
    Ok(handled)
}

fn push_entries(
    replies: &mut Vec<SyncMsg>,
    range: RingRange,
    depth: u8,
    entries: Vec<(String, Entry)>,
) {
    for entries in pack(
        entries,
        |(key, entry)| entry_json_bound(key, entry),
        MAX_ENTRIES_PER_MESSAGE,
        MAX_ENTRIES_PER_MESSAGE,
    ) {
        replies.push(SyncMsg::Entries {
            range,
            depth,
            entries,
        });
    }
}

/// Cuts `items` into messages of at most [`PACK_BUDGET_BYTES`] of estimated JSON, at most
/// `max_items` items and at most `max_weight` summed weight each (an item heavier than the
/// budget travels alone). Nothing in, nothing out.
fn pack<T: Weighed>(
    items: impl IntoIterator<Item = T>,
    cost: impl Fn(&T) -> usize,
    max_items: usize,
    max_weight: usize,
) -> Vec<Vec<T>> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let (mut used, mut weight) = (0, 0);
    for item in items {
        let (item_cost, item_weight) = (cost(&item), item.weight());
        if !current.is_empty()
            && (used + item_cost > PACK_BUDGET_BYTES
                || current.len() == max_items
                || weight + item_weight > max_weight)
        {
            messages.push(std::mem::take(&mut current));
            (used, weight) = (0, 0);
        }
        used += item_cost;
        weight += item_weight;
        current.push(item);
    }
    if !current.is_empty() {
        messages.push(current);
    }
    messages
}

/// How much of a per-message item limit a packed item uses.
trait Weighed {
    fn weight(&self) -> usize {
        1
    }
}

impl Weighed for String {}

impl Weighed for (String, Entry) {}

impl Weighed for SummaryChunk {
    /// Summary items are limited per message, not chunks.
    fn weight(&self) -> usize {
        self.items.len()
    }
}

/// Upper bound on the JSON of `["key",{"value":"..","version":{"ts":..,"writer":".."}}],`.
fn entry_json_bound(key: &str, entry: &Entry) -> usize {
    use crate::store::json_escaped_len;
    let value = entry
        .value
        .as_deref()
        .map_or(4, |value| json_escaped_len(value) + 2);
    json_escaped_len(key) + json_escaped_len(&entry.version.writer) + value + 72
}

/// Upper bound on the JSON of one [`SummaryChunk`], with its comma.
fn chunk_json_bound(chunk: &SummaryChunk) -> usize {
    use crate::store::json_escaped_len;
    let bound = |key: &Option<String>| key.as_deref().map_or(0, json_escaped_len) + 16;
    let items: usize = chunk
        .items
        .iter()
        .map(|item| {
            json_escaped_len(&item.key) + json_escaped_len(&item.version.writer) + 20 + 34 + 9
        })
        .sum();
    64 + bound(&chunk.after) + bound(&chunk.through) + items
}

/// Whether `node`'s id span shares an id with `range`.
fn overlaps(range: RingRange, node: NodeRef) -> bool {
    let (lo, hi) = node.span();
    // Either the span starts inside the range, or the range starts inside the span.
    range.contains(lo) || (lo <= range.from && range.from < hi)
}

/// JSON bytes of one in-sync round over `range` ([`open_round`] and the [`SyncMsg::Equal`]
/// answer), excluding the wire envelope (`{"v":1,"m":{"t":"sync","c":..}}`, 28 bytes each, and
/// any routing). Independent of the number of keys: at most 216 bytes.
pub fn in_sync_round_bytes(range: RingRange, depth: u8) -> usize {
    let opening = SyncMsg::Hashes(SyncHashes {
        range,
        depth,
        nodes: vec![NodeHash {
            node: NodeRef::ROOT,
            hash: Digest(u128::MAX),
        }],
    });
    let reply = SyncMsg::Equal { range, depth };
    json_len(&opening) + json_len(&reply)
}

fn json_len(message: &SyncMsg) -> usize {
    serde_json::to_vec(message).map_or(0, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_tile_the_id_space() {
        assert_eq!(NodeRef::ROOT.span(), (0, u32::MAX));
        assert_eq!(NodeRef::new(1, 1).span(), (0x8000_0000, u32::MAX));
        assert_eq!(NodeRef::new(4, 3).span(), (0x3000_0000, 0x3fff_ffff));
        assert_eq!(NodeRef::containing(0x3123_4567, 4), NodeRef::new(4, 3));
        assert_eq!(NodeRef::containing(7, 0), NodeRef::ROOT);
        assert!(!NodeRef::new(2, 4).is_valid(3));
        assert!(!NodeRef::new(4, 0).is_valid(3));
    }

    #[test]
    fn digest_hex_round_trip() {
        let digest = Digest::from_bytes(*b"0123456789abcdef");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json.len(), 34);
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>("\"+0000000000000000000000000000001\"").is_err());
        assert!(serde_json::from_str::<Digest>("\"00\"").is_err());
    }

    #[test]
    fn update_is_remove_then_insert() {
        let mut tree = MerkleTree::new(4).unwrap();
        let (a, b) = (Digest::from_bytes([1; 16]), Digest::from_bytes([2; 16]));
        tree.insert(10, a);
        tree.update(10, Some(a), Some(b));
        assert_eq!(tree, MerkleTree::build(4, [(10, b)]).unwrap());
        tree.remove(10, b);
        assert_eq!(tree, MerkleTree::new(4).unwrap());
    }

    #[test]
    fn depth_is_bounded() {
        assert_eq!(
            MerkleTree::new(MAX_DEPTH + 1),
            Err(MerkleError::DepthTooLarge {
                depth: MAX_DEPTH + 1
            })
        );
    }
}
