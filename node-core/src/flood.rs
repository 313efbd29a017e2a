//! Gnutella-style flooding search: the unstructured baseline that Chord routing is measured
//! against (messages per query, success against TTL).
//!
//! # Protocol
//!
//! This follows the Query / QueryHit part of *The Gnutella Protocol Specification v0.4*
//! (Clip2 Distributed Search Services, document revision 1.2, 2000): sections "Descriptor
//! Header", "Query", "QueryHit" and "Descriptor Routing".
//!
//! - The origin draws a random 128-bit descriptor id ([`QueryId`]) and sends
//!   [`FloodMsg::Query`] `{ ttl, hops: 0 }` on every connection it has.
//! - A peer remembers every query id it has seen, with the connection it first came from
//!   (the seen-cache). A query whose id it has already seen is dropped, so no peer processes a
//!   query twice and loops die out before the TTL would stop them.
//! - On first sight a peer that holds the key answers with [`FloodMsg::Hit`] on the connection
//!   the query came from, and (holder or not) forwards the query to every other connection
//!   with `ttl - 1` and `hops + 1` while `ttl - 1 > 0`. As in the spec, `ttl + hops` never grows
//!   along a path, so a query with TTL `t` reaches peers at most `t` links from the origin.
//! - Hits travel back only along the reverse path, one hop at a time, each peer looking up the
//!   connection the query came from. A hit whose query a peer never saw (or has forgotten) is
//!   removed from the network, as the spec requires.
//! - The origin cannot know when the flood has ended, so a query completes when its timeout
//!   expires ([`Flooder::poll_done`]) with every holder whose hit arrived by then.
//!
//! # Deviations from Gnutella 0.4
//!
//! - Only Query and QueryHit exist. There is no Ping/Pong (the "connections" are whatever
//!   links the Chord layer holds open now: successors, fingers, predecessors) and no Push
//!   (the answer is the holder's id, not a file to download).
//! - A query names one exact key rather than free-text search criteria; there is no minimum
//!   speed. A hit names one holder instead of a result set, and carries the query's `hops` at
//!   the holder in place of its own TTL/hops (it is bounded by the reverse path instead).
//! - Messages are serde JSON inside the node's frames, not the binary descriptor format; the
//!   id travels as 32 lowercase hex characters.
//! - TTLs above [`FloodConfig::max_ttl`] are lowered so that `ttl + hops <= max_ttl` (what
//!   servents such as LimeWire did; the spec only advises a TTL of 7). Malformed messages (zero
//!   TTL, oversize key, `hops >= max_ttl`, a message "from" ourselves) are dropped and counted
//!   in [`FloodStats`].
//! - The seen-cache is bounded ([`FloodConfig::seen_capacity`]) with first-in-first-out
//!   eviction, instead of the spec's unspecified "recently seen" window; a hit whose reverse
//!   hop was evicted, or whose reverse link has closed since, is dropped and counted.
//! - Reports (off unless [`Flooder::send_reports`] turns them on; not in Gnutella): a peer that
//!   forwards a query, or holds its key and has an address to give, sends one
//!   [`FloodMsg::Report`] back along the reverse path, as a hit travels, with the number of query
//!   messages it sent and its address. The origin adds them up, so its result can say what the
//!   original project's synchronous flood returned: every query message of the whole tree
//!   ([`FloodResult::forwarded_total`], exact when every report arrives in time) and the
//!   holders' addresses ([`FloodResult::holder_addrs`]).
//!
//! # Sans-IO
//!
//! No clock and no randomness inside: the caller passes `now` in milliseconds and the query ids
//! (drawn from the node's seeded PRNG), and sends the returned `(peer, message)` pairs itself.
//! All maps are ordered, so the same inputs give the same outputs.
//!
//! # Counting a whole flood
//!
//! No single peer can know how many messages a flood cost. [`FloodStats`] counters are exact
//! per peer, so summing them across peers gives exact network totals (query messages sent,
//! duplicates dropped, peers reached); [`Flooder::trace`] gives the same numbers for one query
//! id while it is in the seen-cache, which lets a simulator account for concurrent floods.

use crate::id::Id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// A flood message id: 128 random bits drawn by the origin (Gnutella's descriptor id).
///
/// On the wire it is 32 lowercase hex characters, since JSON numbers cannot carry a `u128`
/// portably (JavaScript loses everything past 2^53).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueryId(pub u128);

impl QueryId {
    /// Number of hex characters in the wire form.
    pub const HEX_LEN: usize = 32;

    /// Parses the wire form: exactly 32 hex digits (either case; no sign, no prefix).
    pub fn from_hex(text: &str) -> Option<Self> {
        // `u128::from_str_radix` alone would also accept a leading `+`.
        if text.len() != Self::HEX_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryId({self})")
    }
}

impl Serialize for QueryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QueryId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;

        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = QueryId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 128-bit query id as 32 hex characters")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<QueryId, E> {
                QueryId::from_hex(text)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_str(HexVisitor)
    }
}

/// The two flooding messages (Gnutella's Query and QueryHit descriptors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FloodMsg {
    /// "Who holds `key`?" `ttl`: links it may still cross, counting the one it arrived on;
    /// `hops`: links it crossed before the one it arrived on (0 at the origin's neighbours).
    Query {
        id: QueryId,
        key: String,
        ttl: u8,
        hops: u8,
    },
    /// "`holder` has the key of query `id`", travelling back along the query's path. `hops` is
    /// the query's `hops` when it reached the holder, so the holder is `hops + 1` links from the
    /// origin.
    Hit { id: QueryId, holder: Id, hops: u8 },
    /// "`peer` sent `forwarded` query messages for query `id`" (and, when it holds the key,
    /// "it is at `addr`"), travelling back along the query's path like a hit. Sent only by
    /// peers with reports on ([`Flooder::send_reports`]).
    Report {
        id: QueryId,
        peer: Id,
        forwarded: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
    },
}

/// Longest address a report may carry (bytes); longer ones are dropped as malformed.
pub const MAX_REPORT_ADDR_BYTES: usize = 256;

/// Bounds and timing of the flooding layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodConfig {
    /// Query ids remembered (for duplicate suppression and reverse paths); oldest forgotten
    /// first. At least 1 is used.
    pub seen_capacity: usize,
    /// Highest TTL honoured; larger TTLs are lowered so that `ttl + hops <= max_ttl`. Every peer
    /// SHOULD use the same value: hits whose `hops` reach it are dropped as impossible.
    pub max_ttl: u8,
    /// How long the origin collects hits before the query completes.
    pub query_timeout_ms: u64,
    /// Longest key (UTF-8 bytes) started or accepted; longer queries from peers are dropped.
    pub max_key_bytes: usize,
    /// Queries this peer may have in flight as origin at once.
    pub max_pending: usize,
}

impl FloodConfig {
    /// Default seen-cache size.
    pub const DEFAULT_SEEN_CAPACITY: usize = 4096;
    /// Default TTL ceiling.
    pub const DEFAULT_MAX_TTL: u8 = 16;
    /// Default time an origin waits for hits.
    pub const DEFAULT_QUERY_TIMEOUT_MS: u64 = 3000;
    /// Default key bound: the store's default key bound (1 KiB).
    pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
    /// Default bound on queries in flight from one origin.
    pub const DEFAULT_MAX_PENDING: usize = 1024;
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            seen_capacity: Self::DEFAULT_SEEN_CAPACITY,
            max_ttl: Self::DEFAULT_MAX_TTL,
            query_timeout_ms: Self::DEFAULT_QUERY_TIMEOUT_MS,
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_pending: Self::DEFAULT_MAX_PENDING,
        }
    }
}

/// Why [`Flooder::start`] refused a query (caller misuse or overload; nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FloodError {
    #[error("key of {len} bytes exceeds the {max}-byte flood limit")]
    KeyTooLarge { len: usize, max: usize },
    #[error("{limit} flood queries already in flight")]
    TooManyPending { limit: usize },
    #[error("query id {id} is already in use")]
    DuplicateId { id: QueryId },
}

/// What the origin learned when its query's time was up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloodResult {
    pub id: QueryId,
    pub key: String,
    /// TTL the query was sent with (after lowering to `max_ttl`).
    pub ttl: u8,
    /// Holders whose hits arrived (the origin itself included when it holds the key), sorted,
    /// without duplicates.
    pub matches: Vec<Id>,
    /// Hits that reached the origin in time (a holder answering twice counts twice).
    pub hits_received: u64,
    /// Links between the origin and the holder whose hit arrived first (0 when the origin
    /// holds the key itself).
    pub hops_to_first_hit: Option<u8>,
    /// Milliseconds from the start to the first hit (0 when the origin holds the key).
    pub ms_to_first_hit: Option<u64>,
    /// Neighbours the origin sent the query to.
    pub neighbors_asked: u64,
    /// Query messages of the whole flood that the origin knows of: its own plus those that
    /// reports in time accounted for (equal to `neighbors_asked` without reports).
    pub forwarded_total: u64,
    /// Addresses of holders that reported one (the origin's own included), sorted by id.
    pub holder_addrs: Vec<(Id, String)>,
}

/// Counters of one peer's flooding, exact so that sums over peers are exact network totals.
///
/// Every received message lands in exactly one outcome: a query is `queries_processed`,
/// `duplicates_dropped`, `oversize_keys` or `bad_messages`; a hit is `hits_accepted`,
/// `hits_late`, `hits_relayed`, `hits_no_route`, `hits_unknown` or `bad_messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FloodStats {
    /// Queries this peer started as origin.
    pub total_queries: u64,
    /// Queries refused by [`Flooder::start`].
    pub queries_refused: u64,
    /// Origin queries completed by their timeout.
    pub queries_completed: u64,
    /// Distinct queries from other peers processed (summed over peers: peers reached).
    pub queries_processed: u64,
    /// Query messages sent, by origins and relays alike (summed: the flood's message cost).
    pub query_messages_sent: u64,
    /// The part of `query_messages_sent` sent while relaying another peer's query.
    pub forwarded: u64,
    /// Queries dropped because their id was already seen.
    pub duplicates_dropped: u64,
    /// Queries whose TTL was lowered to respect `max_ttl`.
    pub ttl_clamped: u64,
    /// Queries dropped because their key exceeds `max_key_bytes`.
    pub oversize_keys: u64,
    /// Other malformed messages dropped: zero TTL, `hops >= max_ttl`, a hit from the peer the
    /// query came from, a sender claiming to be us.
    pub bad_messages: u64,
    /// Hits this peer originated as a holder.
    pub hits_sent: u64,
    /// Hits passed one hop further back along a reverse path.
    pub hits_relayed: u64,
    /// Hits that reached this peer as origin while its query was pending.
    pub hits_accepted: u64,
    /// Hits for this peer's own queries that arrived after they completed.
    pub hits_late: u64,
    /// Hits (originated or relayed) not sent because the reverse link is gone.
    pub hits_no_route: u64,
    /// Hits for query ids this peer never saw or has forgotten.
    pub hits_unknown: u64,
    /// Seen-cache entries forgotten to stay within `seen_capacity`.
    pub seen_evictions: u64,
    /// Reports this peer sent about its own forwarding.
    pub reports_sent: u64,
    /// Reports passed one hop further back along a reverse path.
    pub reports_relayed: u64,
    /// Reports that reached this peer as origin while its query was pending.
    pub reports_accepted: u64,
    /// Reports dropped: late, unknown query, no reverse link, or malformed.
    pub reports_dropped: u64,
}

impl FloodStats {
    /// Query messages sent per query this peer started or processed (the original project's
    /// `avg_forwarded`); 0 before any.
    pub fn avg_forwarded(&self) -> f64 {
        let handled = self.total_queries + self.queries_processed;
        if handled == 0 {
            return 0.0;
        }
        self.query_messages_sent as f64 / handled as f64
    }

    /// Adds `other` into `self` (totals over peers).
    pub fn merge(&mut self, other: &Self) {
        self.for_each_pair(other, |a, b| *a = a.saturating_add(b));
    }

    /// What happened between the snapshot `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut delta = self.clone();
        delta.for_each_pair(earlier, |a, b| *a = a.saturating_sub(b));
        delta
    }

    fn for_each_pair(&mut self, other: &Self, mut f: impl FnMut(&mut u64, u64)) {
        // Destructuring makes adding a field without updating this a compile error.
        let Self {
            total_queries,
            queries_refused,
            queries_completed,
            queries_processed,
            query_messages_sent,
            forwarded,
            duplicates_dropped,
            ttl_clamped,
            oversize_keys,
            bad_messages,
            hits_sent,
            hits_relayed,
            hits_accepted,
            hits_late,
            hits_no_route,
            hits_unknown,
            seen_evictions,
            reports_sent,
            reports_relayed,
            reports_accepted,
            reports_dropped,
        } = self;
        f(total_queries, other.total_queries);
        f(queries_refused, other.queries_refused);
        f(queries_completed, other.queries_completed);
        f(queries_processed, other.queries_processed);
        f(query_messages_sent, other.query_messages_sent);
        f(forwarded, other.forwarded);
        f(duplicates_dropped, other.duplicates_dropped);
        f(ttl_clamped, other.ttl_clamped);
        f(oversize_keys, other.oversize_keys);
        f(bad_messages, other.bad_messages);
        f(hits_sent, other.hits_sent);
        f(hits_relayed, other.hits_relayed);
        f(hits_accepted, other.hits_accepted);
        f(hits_late, other.hits_late);
        f(hits_no_route, other.hits_no_route);
        f(hits_unknown, other.hits_unknown);
        f(seen_evictions, other.seen_evictions);
        f(reports_sent, other.reports_sent);
        f(reports_relayed, other.reports_relayed);
        f(reports_accepted, other.reports_accepted);
        f(reports_dropped, other.reports_dropped);
    }
}

/// What one peer did with one query id (see [`Flooder::trace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueryTrace {
    /// The neighbour the query first came from; `None` at the origin.
    pub reached_from: Option<Id>,
    /// Query messages this peer sent for it.
    pub query_messages_sent: u32,
    /// Copies that arrived after the first and were dropped.
    pub duplicates: u32,
    /// Whether this peer held the key and sent a hit.
    pub answered: bool,
}

/// The fields of a [`FloodMsg::Report`].
#[derive(Debug)]
struct Report {
    id: QueryId,
    peer: Id,
    forwarded: u32,
    addr: Option<String>,
}

/// A query this peer started and is collecting hits for.
#[derive(Debug)]
struct Pending {
    op: u64,
    key: String,
    ttl: u8,
    started_at: u64,
    matches: BTreeSet<Id>,
    hits_received: u64,
    hops_to_first_hit: Option<u8>,
    ms_to_first_hit: Option<u64>,
    neighbors_asked: u64,
    forwarded_total: u64,
    holder_addrs: BTreeMap<Id, String>,
}

/// The flooding state of one peer: seen-cache, origin queries in flight, counters.
#[derive(Debug)]
pub struct Flooder {
    config: FloodConfig,
    seen: BTreeMap<QueryId, QueryTrace>,
    /// Insertion order of `seen`, for first-in-first-out eviction.
    seen_order: VecDeque<QueryId>,
    pending: BTreeMap<QueryId, Pending>,
    /// `(deadline, id)` of every pending query, earliest first.
    deadlines: BTreeSet<(u64, QueryId)>,
    stats: FloodStats,
    /// `Some` when reports are on: this peer's address to report as a holder, if any.
    reports: Option<Option<String>>,
}

impl Flooder {
    pub fn new(config: FloodConfig) -> Self {
        Self {
            config,
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            stats: FloodStats::default(),
            reports: None,
        }
    }

    /// Turns reports on (see the module docs): from now on this peer reports its forwarding
    /// for every query it processes and, as a holder, `addr` (an address longer than
    /// [`MAX_REPORT_ADDR_BYTES`] is not reported). Every peer of a ring SHOULD do the same, or
    /// origins undercount.
    pub fn send_reports(&mut self, addr: Option<String>) {
        self.reports = Some(addr.filter(|a| a.len() <= MAX_REPORT_ADDR_BYTES));
    }

    // ----- getters -----

    pub fn config(&self) -> &FloodConfig {
        &self.config
    }

    pub fn stats(&self) -> &FloodStats {
        &self.stats
    }

    /// Origin queries still collecting hits.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Query ids remembered now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// What this peer did with query `id`, while the id is still in the seen-cache. Summed over
    /// peers this gives one flood's exact cost even when floods overlap.
    pub fn trace(&self, id: QueryId) -> Option<QueryTrace> {
        self.seen.get(&id).copied()
    }

    /// The earliest deadline of an origin query: the caller MUST call [`Self::poll_done`] once
    /// its clock reaches it (fold it into the node's own next timeout).
    pub fn next_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    // ----- commands -----

    /// Starts a query for `key` as origin. `op` is the caller's operation id, handed back by
    /// [`Self::poll_done`]; `id` MUST be fresh randomness (the node's seeded PRNG); `neighbors`
    /// are the peers with an open link now; `have_key` says whether this peer holds the key.
    ///
    /// Returns the messages to send, one per neighbour. A `ttl` above `max_ttl` is lowered; a
    /// `ttl` of 0 asks nobody. When nobody is asked the query is due at once (`now`), otherwise
    /// after `query_timeout_ms`. On `Err` nothing was sent or recorded: the caller ends `op`.
    #[allow(clippy::too_many_arguments)] // mirrors `on_message`; a params struct would only add noise
    pub fn start(
        &mut self,
        op: u64,
        id: QueryId,
        key: &str,
        ttl: u8,
        me: Id,
        neighbors: &[Id],
        have_key: bool,
        now: u64,
    ) -> Result<Vec<(Id, FloodMsg)>, FloodError> {
        if let Err(error) = self.check_start(id, key) {
            self.stats.queries_refused += 1;
            return Err(error);
        }
        let ttl = ttl.min(self.config.max_ttl);
        let mut out = Vec::new();
        if ttl > 0 {
            for peer in distinct_except(neighbors, me, None) {
                out.push((
                    peer,
                    FloodMsg::Query {
                        id,
                        key: key.to_owned(),
                        ttl,
                        hops: 0,
                    },
                ));
            }
        }
        let sent = out.len() as u64;
        self.stats.total_queries += 1;
        self.stats.query_messages_sent += sent;
        self.remember(
            id,
            QueryTrace {
                reached_from: None,
                query_messages_sent: saturating_u32(sent),
                duplicates: 0,
                answered: have_key,
            },
        );
        let deadline = if sent == 0 {
            now
        } else {
            now.saturating_add(self.config.query_timeout_ms)
        };
        let mut pending = Pending {
            op,
            key: key.to_owned(),
            ttl,
            started_at: now,
            matches: BTreeSet::new(),
            hits_received: 0,
            hops_to_first_hit: None,
            ms_to_first_hit: None,
            neighbors_asked: sent,
            forwarded_total: sent,
            holder_addrs: BTreeMap::new(),
        };
        if have_key {
            pending.matches.insert(me);
            pending.hops_to_first_hit = Some(0);
            pending.ms_to_first_hit = Some(0);
            if let Some(Some(addr)) = &self.reports {
                pending.holder_addrs.insert(me, addr.clone());
            }
        }
        self.pending.insert(id, pending);
        self.deadlines.insert((deadline, id));
        Ok(out)
    }

    fn check_start(&self, id: QueryId, key: &str) -> Result<(), FloodError> {
        if key.len() > self.config.max_key_bytes {
            return Err(FloodError::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_bytes,
            });
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(FloodError::TooManyPending {
                limit: self.config.max_pending,
            });
        }
        if self.seen.contains_key(&id) || self.pending.contains_key(&id) {
            return Err(FloodError::DuplicateId { id });
        }
        Ok(())
    }

    // ----- inputs -----

    /// A flood message arrived from `from`. `have_key` is asked (once, with the key) only when a
    /// query is processed for the first time; `neighbors` are the peers with an open link now.
    /// Returns the messages to send. Garbage is dropped and counted, never a panic.
    pub fn on_message(
        &mut self,
        me: Id,
        from: Id,
        msg: FloodMsg,
        have_key: impl FnOnce(&str) -> bool,
        neighbors: &[Id],
        now: u64,
    ) -> Vec<(Id, FloodMsg)> {
        if from == me {
            self.stats.bad_messages += 1;
            return Vec::new();
        }
        match msg {
            FloodMsg::Query { id, key, ttl, hops } => {
                self.on_query(me, from, id, key, ttl, hops, have_key, neighbors)
            }
            FloodMsg::Hit { id, holder, hops } => {
                self.on_hit(from, id, holder, hops, neighbors, now)
            }
            FloodMsg::Report {
                id,
                peer,
                forwarded,
                addr,
            } => self.on_report(
                from,
                Report {
                    id,
                    peer,
                    forwarded,
                    addr,
                },
                neighbors,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of one message plus the caller's context
    fn on_query(
        &mut self,
        me: Id,
        from: Id,
        id: QueryId,
        key: String,
        ttl: u8,
        hops: u8,
        have_key: impl FnOnce(&str) -> bool,
        neighbors: &[Id],
    ) -> Vec<(Id, FloodMsg)> {
        if key.len() > self.config.max_key_bytes {
            self.stats.oversize_keys += 1;
            return Vec::new();
        }
        // A zero TTL should have stopped at the sender; `hops >= max_ttl` cannot happen when
        // every peer keeps `ttl + hops <= max_ttl` with `ttl >= 1`.
        if ttl == 0 || hops >= self.config.max_ttl {
            self.stats.bad_messages += 1;
            return Vec::new();
        }
        // Our own query echoing back counts as a duplicate even if its seen entry was evicted.
        if let Some(trace) = self.seen.get_mut(&id) {
            trace.duplicates = trace.duplicates.saturating_add(1);
            self.stats.duplicates_dropped += 1;
            return Vec::new();
        }
        if self.pending.contains_key(&id) {
            self.stats.duplicates_dropped += 1;
            return Vec::new();
        }
        self.stats.queries_processed += 1;
        // Lower the TTL so `ttl + hops` never exceeds the ceiling, whatever the sender claimed
        // (`allowed >= 1` after the check above).
        let allowed = self.config.max_ttl - hops;
        let ttl = if ttl > allowed {
            self.stats.ttl_clamped += 1;
            allowed
        } else {
            ttl
        };
        let linked = |peer: Id| neighbors.contains(&peer);
        let mut out = Vec::new();
        let answered = have_key(&key);
        if answered {
            if linked(from) {
                self.stats.hits_sent += 1;
                out.push((
                    from,
                    FloodMsg::Hit {
                        id,
                        holder: me,
                        hops,
                    },
                ));
            } else {
                self.stats.hits_no_route += 1;
            }
        }
        let mut sent = 0u64;
        if ttl > 1 {
            let next_hops = hops.saturating_add(1);
            for peer in distinct_except(neighbors, me, Some(from)) {
                out.push((
                    peer,
                    FloodMsg::Query {
                        id,
                        key: key.clone(),
                        ttl: ttl - 1,
                        hops: next_hops,
                    },
                ));
                sent += 1;
            }
        }
        self.stats.query_messages_sent += sent;
        self.stats.forwarded += sent;
        if let Some(own_addr) = &self.reports {
            let addr = if answered { own_addr.clone() } else { None };
            if (sent > 0 || addr.is_some()) && linked(from) {
                self.stats.reports_sent += 1;
                out.push((
                    from,
                    FloodMsg::Report {
                        id,
                        peer: me,
                        forwarded: saturating_u32(sent),
                        addr,
                    },
                ));
            }
        }
        self.remember(
            id,
            QueryTrace {
                reached_from: Some(from),
                query_messages_sent: saturating_u32(sent),
                duplicates: 0,
                answered,
            },
        );
        out
    }

    fn on_hit(
        &mut self,
        from: Id,
        id: QueryId,
        holder: Id,
        hops: u8,
        neighbors: &[Id],
        now: u64,
    ) -> Vec<(Id, FloodMsg)> {
        // An honest hit has `hops < ttl + hops <= max_ttl` at every peer on its path.
        if hops >= self.config.max_ttl {
            self.stats.bad_messages += 1;
            return Vec::new();
        }
        // The pending table, not the seen-cache, decides for our own queries: it outlives
        // seen-cache eviction for as long as the query runs.
        if let Some(pending) = self.pending.get_mut(&id) {
            self.stats.hits_accepted += 1;
            pending.hits_received += 1;
            pending.matches.insert(holder);
            if pending.hops_to_first_hit.is_none() {
                pending.hops_to_first_hit = Some(hops.saturating_add(1));
                pending.ms_to_first_hit = Some(now.saturating_sub(pending.started_at));
            }
            return Vec::new();
        }
        match self.seen.get(&id).map(|trace| trace.reached_from) {
            None => {
                self.stats.hits_unknown += 1;
                Vec::new()
            }
            Some(None) => {
                self.stats.hits_late += 1;
                Vec::new()
            }
            Some(Some(back)) if back != from && neighbors.contains(&back) => {
                self.stats.hits_relayed += 1;
                vec![(back, FloodMsg::Hit { id, holder, hops })]
            }
            Some(Some(back)) if back == from => {
                // The peer we got the query from cannot be downstream of us on its path.
                self.stats.bad_messages += 1;
                Vec::new()
            }
            Some(Some(_)) => {
                self.stats.hits_no_route += 1;
                Vec::new()
            }
        }
    }

    fn on_report(&mut self, from: Id, report: Report, neighbors: &[Id]) -> Vec<(Id, FloodMsg)> {
        if report
            .addr
            .as_ref()
            .is_some_and(|a| a.len() > MAX_REPORT_ADDR_BYTES)
        {
            self.stats.reports_dropped += 1;
            return Vec::new();
        }
        if let Some(pending) = self.pending.get_mut(&report.id) {
            self.stats.reports_accepted += 1;
            pending.forwarded_total = pending
                .forwarded_total
                .saturating_add(u64::from(report.forwarded));
            if let Some(addr) = report.addr {
                pending.holder_addrs.insert(report.peer, addr);
            }
            return Vec::new();
        }
        match self.seen.get(&report.id).map(|trace| trace.reached_from) {
            Some(Some(back)) if back != from && neighbors.contains(&back) => {
                self.stats.reports_relayed += 1;
                let Report {
                    id,
                    peer,
                    forwarded,
                    addr,
                } = report;
                vec![(
                    back,
                    FloodMsg::Report {
                        id,
                        peer,
                        forwarded,
                        addr,
                    },
                )]
            }
            _ => {
                self.stats.reports_dropped += 1;
                Vec::new()
            }
        }
    }

    /// Completes every origin query whose deadline is at or before `now`, earliest first, as
    /// `(op, result)`. Each started query comes out exactly once.
    pub fn poll_done(&mut self, now: u64) -> Vec<(u64, FloodResult)> {
        let mut done = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            self.stats.queries_completed += 1;
            done.push((
                pending.op,
                FloodResult {
                    id,
                    key: pending.key,
                    ttl: pending.ttl,
                    matches: pending.matches.into_iter().collect(),
                    hits_received: pending.hits_received,
                    hops_to_first_hit: pending.hops_to_first_hit,
                    ms_to_first_hit: pending.ms_to_first_hit,
                    neighbors_asked: pending.neighbors_asked,
                    forwarded_total: pending.forwarded_total,
                    holder_addrs: pending.holder_addrs.into_iter().collect(),
                },
            ));
        }
        done
    }

    // ----- internals -----

    fn remember(&mut self, id: QueryId, trace: QueryTrace) {
        if self.seen.insert(id, trace).is_none() {
            self.seen_order.push_back(id);
        }
        while self.seen.len() > self.config.seen_capacity.max(1) {
            let Some(oldest) = self.seen_order.pop_front() else {
                break;
            };
            if self.seen.remove(&oldest).is_some() {
                self.stats.seen_evictions += 1;
            }
        }
    }
}

/// `neighbors` without duplicates, `me` and `skip`, in ascending order (deterministic whatever
/// order the caller keeps its links in).
fn distinct_except(neighbors: &[Id], me: Id, skip: Option<Id>) -> BTreeSet<Id> {
    neighbors
        .iter()
        .copied()
        .filter(|&peer| peer != me && Some(peer) != skip)
        .collect()
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of peers 1-2-3-4 with reports on; peer 4 holds the key; peer 1 floods.
    #[test]
    fn reports_count_the_whole_tree_and_name_holders() {
        let ids: Vec<Id> = (1..=4).map(Id).collect();
        let neighbors = |i: usize| -> Vec<Id> {
            [i.checked_sub(1), (i + 1 < ids.len()).then_some(i + 1)]
                .into_iter()
                .flatten()
                .map(|j| ids[j])
                .collect()
        };
        let mut flooders: Vec<Flooder> = (0..4)
            .map(|i| {
                let mut f = Flooder::new(FloodConfig::default());
                f.send_reports(Some(format!("10.0.0.{}:5000", i + 1)));
                f
            })
            .collect();
        let out = flooders[0]
            .start(7, QueryId(1), "k", 5, ids[0], &neighbors(0), false, 0)
            .unwrap();
        let mut in_flight: VecDeque<(usize, Id, FloodMsg)> =
            out.into_iter().map(|(to, m)| (0, to, m)).collect();
        while let Some((from, to, msg)) = in_flight.pop_front() {
            let to = ids.iter().position(|id| *id == to).unwrap();
            let out =
                flooders[to].on_message(ids[to], ids[from], msg, |_| to == 3, &neighbors(to), 1);
            in_flight.extend(out.into_iter().map(|(next, m)| (to, next, m)));
        }
        let done = flooders[0].poll_done(u64::MAX);
        let (op, result) = &done[0];
        assert_eq!(*op, 7);
        assert_eq!(result.matches, vec![ids[3]]);
        assert_eq!(result.neighbors_asked, 1);
        // 1 -> 2, 2 -> 3, 3 -> 4: three query messages in the whole flood.
        assert_eq!(result.forwarded_total, 3);
        assert_eq!(
            result.holder_addrs,
            vec![(ids[3], "10.0.0.4:5000".to_string())]
        );
        let total: u64 = flooders.iter().map(|f| f.stats().query_messages_sent).sum();
        assert_eq!(total, result.forwarded_total);
        assert_eq!(flooders[0].stats().reports_accepted, 3);
        assert_eq!(flooders[1].stats().reports_relayed, 2);
    }

    #[test]
    fn without_reports_nothing_extra_is_sent() {
        let mut f = Flooder::new(FloodConfig::default());
        let out = f.on_message(Id(2), Id(1), query(1, 3, 0), |_| true, &[Id(1), Id(3)], 0);
        assert!(
            out.iter()
                .all(|(_, m)| !matches!(m, FloodMsg::Report { .. })),
            "{out:?}"
        );
    }

    fn query(id: u128, ttl: u8, hops: u8) -> FloodMsg {
        FloodMsg::Query {
            id: QueryId(id),
            key: "k".into(),
            ttl,
            hops,
        }
    }

    #[test]
    fn query_id_wire_form_is_32_lowercase_hex() {
        let msg = FloodMsg::Hit {
            id: QueryId(0xAB),
            holder: Id(7),
            hops: 2,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"f":"hit","c":{"id":"000000000000000000000000000000ab","holder":7,"hops":2}}"#
        );
        assert_eq!(serde_json::from_str::<FloodMsg>(&json).unwrap(), msg);
        for bad in [
            "",
            "ab",
            "+0000000000000000000000000000000",
            "0000000000000000000000000000000g",
        ] {
            assert_eq!(QueryId::from_hex(bad), None, "{bad:?}");
        }
        assert!(serde_json::from_str::<QueryId>("171").is_err());
        assert_eq!(QueryId::from_hex(&"F".repeat(32)), Some(QueryId(u128::MAX)));
    }

    #[test]
    fn holder_answers_and_still_forwards() {
        let mut flooder = Flooder::new(FloodConfig::default());
        let out = flooder.on_message(
            Id(1),
            Id(2),
            query(9, 3, 0),
            |_| true,
            &[Id(2), Id(3), Id(4)],
            0,
        );
        assert_eq!(
            out,
            vec![
                (
                    Id(2),
                    FloodMsg::Hit {
                        id: QueryId(9),
                        holder: Id(1),
                        hops: 0
                    }
                ),
                (Id(3), query(9, 2, 1)),
                (Id(4), query(9, 2, 1)),
            ]
        );
        // The same id again is a duplicate, whoever sends it.
        assert!(
            flooder
                .on_message(Id(1), Id(3), query(9, 3, 0), |_| true, &[Id(2)], 0)
                .is_empty()
        );
        assert_eq!(flooder.stats().duplicates_dropped, 1);
        // A hit from downstream goes back to Id(2).
        let hit = FloodMsg::Hit {
            id: QueryId(9),
            holder: Id(4),
            hops: 1,
        };
        assert_eq!(
            flooder.on_message(Id(1), Id(4), hit.clone(), |_| false, &[Id(2), Id(4)], 0),
            vec![(Id(2), hit.clone())]
        );
        // ...unless the link to Id(2) has closed.
        assert!(
            flooder
                .on_message(Id(1), Id(4), hit, |_| false, &[Id(4)], 0)
                .is_empty()
        );
        assert_eq!(flooder.stats().hits_no_route, 1);
    }

    #[test]
    fn ttl_is_lowered_to_the_ceiling() {
        let config = FloodConfig {
            max_ttl: 4,
            ..FloodConfig::default()
        };
        let mut flooder = Flooder::new(config);
        let out = flooder.on_message(Id(1), Id(2), query(1, 200, 1), |_| false, &[Id(3)], 0);
        assert_eq!(out, vec![(Id(3), query(1, 2, 2))]);
        assert_eq!(flooder.stats().ttl_clamped, 1);
        // One below the ceiling: processed, not forwarded. At the ceiling: impossible, dropped.
        let out = flooder.on_message(Id(1), Id(2), query(2, 9, 3), |_| false, &[Id(3)], 0);
        assert!(out.is_empty());
        assert_eq!(flooder.stats().queries_processed, 2);
        flooder.on_message(Id(1), Id(2), query(3, 1, 4), |_| true, &[Id(2)], 0);
        assert_eq!(flooder.stats().bad_messages, 1);
    }

    #[test]
    fn origin_collects_hits_until_the_deadline() {
        let mut flooder = Flooder::new(FloodConfig::default());
        let out = flooder
            .start(
                5,
                QueryId(1),
                "k",
                2,
                Id(1),
                &[Id(2), Id(3), Id(2), Id(1)],
                true,
                100,
            )
            .unwrap();
        assert_eq!(out, vec![(Id(2), query(1, 2, 0)), (Id(3), query(1, 2, 0))]);
        assert_eq!(flooder.next_timeout(), Some(3100));
        let hit = |holder, hops| FloodMsg::Hit {
            id: QueryId(1),
            holder: Id(holder),
            hops,
        };
        flooder.on_message(Id(1), Id(3), hit(9, 1), |_| false, &[], 150);
        flooder.on_message(Id(1), Id(2), hit(2, 0), |_| false, &[], 160);
        assert!(flooder.poll_done(3099).is_empty());
        let done = flooder.poll_done(3100);
        assert_eq!(done.len(), 1);
        let (op, result) = &done[0];
        assert_eq!(*op, 5);
        assert_eq!(result.matches, vec![Id(1), Id(2), Id(9)]);
        assert_eq!(result.hits_received, 2);
        assert_eq!(result.hops_to_first_hit, Some(0));
        assert_eq!(result.neighbors_asked, 2);
        assert_eq!(flooder.next_timeout(), None);
        // Late hits are counted, not relayed.
        assert!(
            flooder
                .on_message(Id(1), Id(2), hit(2, 0), |_| false, &[Id(2)], 4000)
                .is_empty()
        );
        assert_eq!(flooder.stats().hits_late, 1);
    }

    #[test]
    fn start_refuses_misuse() {
        let config = FloodConfig {
            max_pending: 1,
            max_key_bytes: 3,
            ..FloodConfig::default()
        };
        let mut flooder = Flooder::new(config);
        assert!(matches!(
            flooder.start(1, QueryId(1), "long", 1, Id(1), &[], false, 0),
            Err(FloodError::KeyTooLarge { len: 4, max: 3 })
        ));
        assert_eq!(
            flooder.start(1, QueryId(1), "k", 0, Id(1), &[Id(2)], false, 0),
            Ok(vec![])
        );
        assert_eq!(flooder.next_timeout(), Some(0), "nobody asked: due at once");
        assert!(matches!(
            flooder.start(2, QueryId(2), "k", 1, Id(1), &[], false, 0),
            Err(FloodError::TooManyPending { limit: 1 })
        ));
        assert_eq!(flooder.poll_done(0).len(), 1);
        assert!(matches!(
            flooder.start(3, QueryId(1), "k", 1, Id(1), &[], false, 0),
            Err(FloodError::DuplicateId { .. })
        ));
        assert_eq!(flooder.stats().queries_refused, 3);
    }

    #[test]
    fn seen_cache_is_bounded_fifo() {
        let config = FloodConfig {
            seen_capacity: 2,
            ..FloodConfig::default()
        };
        let mut flooder = Flooder::new(config);
        for id in 1..=3 {
            flooder.on_message(Id(1), Id(2), query(id, 1, 0), |_| false, &[], 0);
        }
        assert_eq!(flooder.seen_len(), 2);
        assert_eq!(flooder.trace(QueryId(1)), None);
        assert!(flooder.trace(QueryId(3)).is_some());
        assert_eq!(flooder.stats().seen_evictions, 1);
        let hit = FloodMsg::Hit {
            id: QueryId(1),
            holder: Id(5),
            hops: 0,
        };
        assert!(
            flooder
                .on_message(Id(1), Id(3), hit, |_| false, &[Id(2)], 0)
                .is_empty()
        );
        assert_eq!(flooder.stats().hits_unknown, 1);
    }

    #[test]
    fn stats_merge_and_since_are_inverse() {
        let mut a = FloodStats {
            forwarded: 3,
            hits_sent: 1,
            ..FloodStats::default()
        };
        let b = FloodStats {
            forwarded: 2,
            bad_messages: 5,
            ..FloodStats::default()
        };
        let before = a.clone();
        a.merge(&b);
        assert_eq!(a.forwarded, 5);
        assert_eq!(a.since(&before), b);
    }
}
