//! The store's anti-entropy index: a fixed-shape Merkle tree over the ring's ids whose nodes
//! are XOR set hashes of the entries below them (the design and its trade-offs are in
//! `crate::merkle`'s module docs, "Deviations"). The [`Store`] keeps it up to date on every
//! change; the anti-entropy protocol (`crate::merkle`) reads it through [`RangeTree`].

use super::{Entry, RingRange, Store};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::{Digest as _, Sha1};
use std::collections::BTreeMap;
use std::fmt;

/// Default tree depth: 2^12 = 4096 leaf buckets.
pub const DEFAULT_DEPTH: u8 = 12;
/// Deepest tree accepted: 2^16 leaves, 2 MiB of node digests.
pub const MAX_DEPTH: u8 = 16;

/// A 128-bit digest: of one entry, or the XOR of the entries under a tree node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub(crate) u128);

impl Digest {
    /// The digest of nothing (an empty subtree).
    pub const ZERO: Self = Self(0);

    /// From 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// As 16 big-endian bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Whether this is [`Digest::ZERO`].
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Combines two digests (XOR: associative, commutative, self-inverse).
    #[must_use]
    pub const fn xor(self, other: Self) -> Self {
        Self(self.0 ^ other.0)
    }

    /// Parses exactly 32 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(hex, 16).ok().map(Self)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest of 32 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, hex: &str) -> Result<Digest, E> {
                Digest::from_hex(hex)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(hex), &self))
            }
        }
        deserializer.deserialize_str(HexVisitor)
    }
}

/// The anti-entropy digest of one stored entry.
pub fn entry_digest(key: &str, entry: &Entry) -> Digest {
    fn field(hasher: &mut Sha1, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha1::new();
    hasher.update(b"chord-kv entry v1\0");
    field(&mut hasher, key.as_bytes());
    hasher.update(entry.version.ts.to_be_bytes());
    field(&mut hasher, entry.version.writer.as_bytes());
    match &entry.value {
        None => hasher.update([0]),
        Some(value) => {
            hasher.update([1]);
            field(&mut hasher, value.as_bytes());
        }
    }
    let sha = hasher.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&sha[..16]);
    Digest::from_bytes(bytes)
}

/// A node of the fixed-shape tree: the ids whose top `level` bits equal `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    pub level: u8,
    pub index: u32,
}

impl NodeRef {
    /// The root: the whole id space.
    pub const ROOT: Self = Self { level: 0, index: 0 };

    /// The node `(level, index)`.
    pub const fn new(level: u8, index: u32) -> Self {
        Self { level, index }
    }

    /// The node at `level` (at most 32) whose span holds `id`.
    pub const fn containing(id: u32, level: u8) -> Self {
        let index = if level == 0 {
            0
        } else if level >= 32 {
            id
        } else {
            id >> (32 - level as u32)
        };
        Self { level, index }
    }

    /// Whether this node exists in a tree of `depth`.
    pub const fn is_valid(self, depth: u8) -> bool {
        self.level <= depth && (self.index as u64) < (1u64 << self.level)
    }

    /// The inclusive id span `[lo, hi]` of a valid node.
    pub const fn span(self) -> (u32, u32) {
        let level = if self.level > 32 {
            32
        } else {
            self.level as u32
        };
        let shift = 32 - level;
        let index = (self.index as u64) & ((1u64 << level) - 1);
        let lo = index << shift;
        let hi = lo + (1u64 << shift) - 1;
        (lo as u32, hi as u32)
    }

    /// The two children (meaningful for a node above the leaves).
    pub const fn children(self) -> [Self; 2] {
        let level = self.level.saturating_add(1);
        let first = self.index.wrapping_mul(2);
        [Self::new(level, first), Self::new(level, first | 1)]
    }

    /// The `2^down` descendants `down` levels below (`down` at most 31), in id order;
    /// meaningful for a node whose descendants exist.
    pub fn descendants(self, down: u8) -> impl Iterator<Item = Self> {
        let down = down.min(31);
        let level = self.level.saturating_add(down);
        let first = u64::from(self.index) << down;
        (first..first + (1u64 << down)).map(move |index| Self::new(level, index as u32))
    }
}

/// Why a tree could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    #[error("tree depth {depth} exceeds the maximum of {MAX_DEPTH}")]
    DepthTooLarge { depth: u8 },
}

/// The whole-ring tree: dense, XOR-aggregated, updated in O(depth).
///
/// Standalone users MUST keep it consistent (remove only what they inserted: XOR is
/// self-inverse, so removing an absent digest silently inserts it); [`Store`] does this itself.
///
/// Memory is allocated lazily: a tree that never held an entry owns no node storage (all its
/// digests are zero anyway), so a simulator can run thousands of peers whose stores stay empty.
#[derive(Clone)]
pub struct MerkleTree {
    depth: u8,
    /// Heap layout: node `(level, index)` at `2^level - 1 + index`. Empty until the first
    /// non-zero change, then `2^(depth + 1) - 1` digests; an empty vector reads as all zeros.
    nodes: Vec<Digest>,
}

/// Trees are equal when their depths and every node digest are equal, however their storage is
/// allocated (an unallocated tree equals an allocated all-zero one).
impl PartialEq for MerkleTree {
    fn eq(&self, other: &Self) -> bool {
        if self.depth != other.depth {
            return false;
        }
        match (self.nodes.is_empty(), other.nodes.is_empty()) {
            (false, false) => self.nodes == other.nodes,
            (true, true) => true,
            (true, false) => other.nodes.iter().all(|digest| digest.is_zero()),
            (false, true) => self.nodes.iter().all(|digest| digest.is_zero()),
        }
    }
}

impl Eq for MerkleTree {}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("depth", &self.depth)
            .field("root", &self.root())
            .finish_non_exhaustive()
    }
}

impl MerkleTree {
    /// An empty tree with `2^depth` leaves. Allocates nothing until the first insertion.
    pub fn new(depth: u8) -> Result<Self, MerkleError> {
        if depth > MAX_DEPTH {
            return Err(MerkleError::DepthTooLarge { depth });
        }
        Ok(Self {
            depth,
            nodes: Vec::new(),
        })
    }

    /// A tree built from scratch over `(key id, entry digest)` pairs.
    pub fn build(
        depth: u8,
        items: impl IntoIterator<Item = (u32, Digest)>,
    ) -> Result<Self, MerkleError> {
        let mut tree = Self::new(depth)?;
        for (id, digest) in items {
            tree.insert(id, digest);
        }
        Ok(tree)
    }

    /// Levels below the root.
    pub const fn depth(&self) -> u8 {
        self.depth
    }

    /// The root digest: XOR of every entry digest.
    pub fn root(&self) -> Digest {
        self.stored(NodeRef::ROOT)
    }

    /// The digest of `node`, `None` if it is not in the tree.
    pub fn node_hash(&self, node: NodeRef) -> Option<Digest> {
        node.is_valid(self.depth).then(|| self.stored(node))
    }

    /// Bytes of node storage currently allocated: 0 until the first entry, then
    /// `16 * (2^(depth + 1) - 1)`.
    pub fn allocated_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Digest>()
    }

    /// Forgets every digest and releases the node storage. Only for a tree whose owner knows it
    /// now summarises nothing (e.g. a [`Store`] that became empty).
    pub fn clear(&mut self) {
        self.nodes = Vec::new();
    }

    /// The children of `node`, `None` for a leaf or a node not in the tree.
    pub fn children(&self, node: NodeRef) -> Option<[NodeRef; 2]> {
        (node.is_valid(self.depth) && node.level < self.depth).then(|| node.children())
    }

    /// The leaf bucket holding `id`.
    pub const fn leaf_of(&self, id: u32) -> NodeRef {
        NodeRef::containing(id, self.depth)
    }

    /// Adds an entry digest under `id`.
    pub fn insert(&mut self, id: u32, digest: Digest) {
        self.toggle(id, digest);
    }

    /// Removes an entry digest previously inserted under `id`.
    pub fn remove(&mut self, id: u32, digest: Digest) {
        self.toggle(id, digest);
    }

    /// Replaces the entry under `id`: `old` is removed, `new` inserted (`None` for absent).
    pub fn update(&mut self, id: u32, old: Option<Digest>, new: Option<Digest>) {
        let delta = old.unwrap_or(Digest::ZERO).xor(new.unwrap_or(Digest::ZERO));
        self.toggle(id, delta);
    }

    /// The digest of a valid node (zero while nothing is allocated).
    fn stored(&self, node: NodeRef) -> Digest {
        self.nodes.get(slot(node)).copied().unwrap_or(Digest::ZERO)
    }

    fn toggle(&mut self, id: u32, delta: Digest) {
        if delta.is_zero() {
            return;
        }
        if self.nodes.is_empty() {
            self.nodes = vec![Digest::ZERO; (1usize << (self.depth + 1)) - 1];
        }
        for level in 0..=self.depth {
            let at = slot(NodeRef::containing(id, level));
            self.nodes[at] = self.nodes[at].xor(delta);
        }
    }
}

fn slot(node: NodeRef) -> usize {
    (1usize << node.level) - 1 + node.index as usize
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Coverage {
    Inside,
    Outside,
    Partial,
}

/// The tree of the entries in one ring range: the store's whole-ring tree, with nodes outside
/// the range empty and the (at most two per level) nodes straddling a range boundary recomputed.
#[derive(Debug, Clone)]
pub struct RangeTree<'a> {
    tree: &'a MerkleTree,
    range: RingRange,
    partial: BTreeMap<NodeRef, Digest>,
}

impl<'a> RangeTree<'a> {
    /// The tree of `store`'s entries in `range`. O(depth + entries in the two boundary leaves).
    pub fn new(store: &'a Store, range: RingRange) -> Self {
        let mut view = Self {
            tree: store.merkle(),
            range,
            partial: BTreeMap::new(),
        };
        let depth = view.tree.depth();
        let cuts = [range.from, range.to];
        for level in (0..=depth).rev() {
            for cut in cuts {
                let node = NodeRef::containing(cut, level);
                if view.coverage(node) != Coverage::Partial || view.partial.contains_key(&node) {
                    continue;
                }
                let digest = if level == depth {
                    store
                        .node_entries(range, node)
                        .fold(Digest::ZERO, |acc, record| acc.xor(record.digest))
                } else {
                    let [left, right] = node.children();
                    view.restricted(left).xor(view.restricted(right))
                };
                // A node left out reads as zero (`restricted`): only non-zero digests take
                // room. Most ranges of a ring that holds few keys are empty, and a profile of
                // sim-hops (no keys at all) spent about 6% of its instructions filling this map
                // with zeros for every anti-entropy round.
                if !digest.is_zero() {
                    view.partial.insert(node, digest);
                }
            }
        }
        view
    }

    /// The range this tree covers.
    pub const fn range(&self) -> RingRange {
        self.range
    }

    /// Levels below the root.
    pub const fn depth(&self) -> u8 {
        self.tree.depth()
    }

    /// Digest of all entries in the range.
    pub fn root(&self) -> Digest {
        self.restricted(NodeRef::ROOT)
    }

    /// Digest of the entries in both `node` and the range; `None` if `node` is not in the tree.
    pub fn node_hash(&self, node: NodeRef) -> Option<Digest> {
        node.is_valid(self.depth()).then(|| self.restricted(node))
    }

    /// The children of `node`, `None` for a leaf or a node not in the tree.
    pub fn children(&self, node: NodeRef) -> Option<[NodeRef; 2]> {
        self.tree.children(node)
    }

    /// Whether `node` holds any id of the range (nodes that do not are empty on every peer).
    pub fn overlaps(&self, node: NodeRef) -> bool {
        self.coverage(node) != Coverage::Outside
    }

    pub(crate) fn restricted(&self, node: NodeRef) -> Digest {
        match self.coverage(node) {
            Coverage::Inside => self.tree.stored(node),
            Coverage::Outside => Digest::ZERO,
            Coverage::Partial => self.partial.get(&node).copied().unwrap_or(Digest::ZERO),
        }
    }

    fn coverage(&self, node: NodeRef) -> Coverage {
        if self.range.is_full() {
            return Coverage::Inside;
        }
        let (lo, hi) = node.span();
        // A cut between `c` and `c + 1` inside the span splits the node.
        if [self.range.from, self.range.to]
            .iter()
            .any(|&cut| lo <= cut && cut < hi)
        {
            Coverage::Partial
        } else if self.range.contains(lo) {
            Coverage::Inside
        } else {
            Coverage::Outside
        }
    }
}
