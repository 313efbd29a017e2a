//! The node: dispatches inputs to the ring, routing and link modules and queues their outputs.
//!
//! Protocols (Chord paper, Stoica et al. 2001, Fig. 6-7, and the ToN 2003 version):
//! - **join**: a newcomer linked to any ring member (its bootstrap, introduced by a signaling
//!   server) looks up the owner of its own id through that member; the owner becomes its
//!   successor. The answer comes back through the bootstrap (`origin_via`) because nobody else
//!   can reach a peer that is not in the ring yet.
//! - **stabilize** (every `stabilize_interval_ms`, doubling up to `stabilize_max_interval_ms`
//!   while rounds change nothing, back to the minimum on any ring change): ask the successor for
//!   its predecessor, successor list and recent notifiers, adopt the closest one between us, then
//!   `notify` it.
//! - **fix-fingers**: a sweep looks up the owners of `id + 2^i`; one answer fills every finger
//!   whose start precedes it. Sweeps back off (doubling up to a maximum) while nothing changes
//!   and restart at full speed when the ring changes.
//! - **heartbeat / check-predecessor**: ping the predecessor and the successor when they have
//!   been silent; a peer silent past `heartbeat_timeout_ms` is declared failed.
//! - **routing** is recursive over *open links only* ([`crate::routing`]).
//! - **partition healing** (beyond the paper): peers that failed are remembered for a while and
//!   probed now and then; a probe that reconnects brings two rings that split back together
//!   through the ordinary successor/notify rules.
//! - **leave**: the leaving node hands its predecessor to its successor and its successor list
//!   to its predecessor.
//!
//! Caller obligations (as in str0m): after any call that mutates the node, the driver MUST call
//! [`Node::poll_output`] until it returns [`Output::Timeout`], and MUST call
//! `handle_input(Input::Timeout)` no later than that time.

use crate::Time;
use crate::clock::LamportClock;
use crate::election::{ElectionConfig, Elections};
use crate::flood::{FloodConfig, Flooder, QueryId};
use crate::id::{Id, PeerId};
use crate::links::{LinkState, Links};
use crate::merkle::{self, StepOptions, SyncMsg};
use crate::metrics::Metrics;
use crate::replication::Replicator;
use crate::ring::{Changed, RingState};
use crate::rng::Rng;
use crate::routing;
use crate::store::{Limits, RingRange, Store};
use crate::timers::{Timer, TimerTable};
use crate::wire::{self, Body, DecodeError, Dest, Message, Routed};

mod authorize;
mod fence;
mod lookup;
mod maintain;
mod proximity;
mod replicate;
mod sync;
mod walk;
mod watch;

pub use crate::api::{Event, Input, OpError, OpId, OpOutcome, Output, PeerView, RingView};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Tunables. Defaults suit browser and native peers on a LAN or the internet.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Seed of the node's PRNG (drivers pass OS randomness; the simulator a derived seed).
    pub seed: u64,
    /// Length `r` of the successor list.
    pub successor_list_len: usize,
    pub stabilize_interval_ms: u64,
    pub stabilize_max_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub fix_fingers_min_interval_ms: u64,
    pub fix_fingers_max_interval_ms: u64,
    /// A lookup attempt without an answer after this long is sent again.
    pub lookup_attempt_timeout_ms: u64,
    /// Deadline of every operation.
    pub op_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub connect_backoff_ms: u64,
    pub connect_backoff_max_ms: u64,
    /// Bound on open + connecting links.
    pub max_links: usize,
    /// How many of the first successors are kept linked (the others in the list are linked
    /// only when they move up, or reused while a link to them is open). All of them by
    /// default; a peer with a lifetime connection budget links fewer
    /// ([`crate::peer::budget::budgeted_links`]).
    pub linked_successors: usize,
    /// A finger not linked is served by a linked ring member in its interval, if there is one,
    /// instead of a new link (`Node::wanted_links`). Off by default; a peer with a lifetime
    /// connection budget turns it on ([`crate::peer::budget::budgeted_links`]).
    pub reuse_finger_links: bool,
    /// Base of the finger table (a power of two, 2 to [`crate::id::MAX_FINGER_BASE`]): 2 is
    /// Chord's `log2 N` fingers and about `½·log2 N` hops; base `b` keeps about
    /// `(b-1)·log_b N` fingers for about `log_b N` hops (`crate::ring`). Each distinct finger
    /// is a link, and other peers' fingers are links too: keep `(b-1)·log_b N` plus the
    /// successors well under half of `max_links`.
    pub finger_base: u32,
    /// Proximity neighbour selection: for each finger, among the exact finger and the
    /// members of its interval the exact finger's successor list names, route through the
    /// one with the lowest round trip this node measured (ping and finger-check round trips
    /// over its own links; candidates not linked get one short-lived link each to be
    /// measured). Off by default; `node/proximity.rs`.
    pub proximity_fingers: bool,
    /// Lookups end one hop early where they can: a key just past a finger is answered from
    /// the successor list that finger reported at its last check (`RingState::lookup_owner`).
    /// Costs no link, and a message only for near fingers (one `GetNeighbors` each per
    /// sweep; an exact finger's check already carries its list); the price is hearsay as old
    /// as the last check, so a newcomer can be missed by lookups (never by stores, which do
    /// not use it) until the finger is checked again. Off by default.
    pub finger_lists: bool,
    /// A link neither side points at is offered for closing after this long unused.
    pub link_idle_ms: u64,
    pub max_hops: u8,
    pub max_pending_ops: usize,
    /// Replicas per key (`k`, the `N` of N/R/W).
    pub replicas: usize,
    /// Versions a get waits for (`R`) and stores a put waits for (`W`), the leader's included.
    pub read_quorum: usize,
    pub write_quorum: usize,
    /// Key, value and writer bounds (see [`crate::store::Limits`]).
    pub limits: Limits,
    /// How long a part of our range stays fenced when no read quorum of its previous replica
    /// set is reachable (`node/fence.rs`): a partition shorter than this costs availability
    /// only; after it the missing peers are taken for failed.
    pub fence_max_ms: u64,
    /// Whether a peer that joined with an empty store inherits its successor's fence over the
    /// part it took over (`node/fence.rs`, `inherit_fence`). Off by default: it closes a
    /// split-brain case under partitions (`tests/partition_fence.rs`), but keeps a newcomer's
    /// range fenced until the fence expires (up to `fence_max_ms`): nothing lifts an inherited
    /// fence earlier yet.
    pub inherit_fences: bool,
    pub election: ElectionConfig,
    pub flood: FloodConfig,
    /// Anti-entropy pacing with the successors that replicate this node's range: starts at the
    /// minimum after a ring change or a round that repaired something, doubles while rounds
    /// find the replicas in sync.
    pub anti_entropy_min_interval_ms: u64,
    pub anti_entropy_max_interval_ms: u64,
    /// Global maintenance: how often this node looks for keys it holds outside their replica
    /// set, as its view of the ring stands, and writes them back to the set (`node/sync.rs`,
    /// "Strays"). 0 disables.
    pub strays_interval_ms: u64,
    /// Self-check (look up our own id from the far side of the ring) pacing: starts at the
    /// minimum after any ring change and doubles while checks find nothing. 0 disables.
    pub self_check_min_interval_ms: u64,
    pub self_check_max_interval_ms: u64,
    /// How often one remembered failed peer is probed (partition healing); 0 disables. A
    /// peer's own probes back off: the gap after a probe is the time since it was lost,
    /// between this and [`MAX_PROBE_GAP_MS`] (each probe costs a connection attempt, and a tab
    /// may create only so many in its lifetime).
    pub probe_interval_ms: u64,
    /// How far the gap between probes of any lost peers grows while probes find nobody
    /// (`probe_lost_peer`): equal to `probe_interval_ms` by default (no growth), so a split
    /// heals within one interval of the network healing; a peer with a lifetime connection
    /// budget lets it grow to [`MAX_PROBE_INTERVAL_MS`] ([`crate::peer::budget::budgeted_links`]).
    pub probe_interval_max_ms: u64,
    /// How long a failed peer is remembered for probing.
    pub probe_memory_ms: u64,
    /// How long a tombstone is kept at least, from when this replica stored it, before the
    /// key's owner may collect it (see `replication.rs`, "Tombstone collection"). MUST exceed
    /// the longest time a peer may be out of a replica set (down, or displaced by a join) and
    /// still come back into it with its old store.
    pub tombstone_grace_ms: u64,
    /// This peer's self-description, reported in its answers to ring walks (`native 0.1.0`,
    /// `chromium 131`, `firefox 128`; see [`crate::agent`]). Set by the driver; [`Node::new`]
    /// keeps at most [`crate::agent::MAX_AGENT_BYTES`] bytes of it, without control characters.
    pub agent: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            successor_list_len: 6,
            stabilize_interval_ms: 500,
            stabilize_max_interval_ms: 2_000,
            heartbeat_interval_ms: 2_000,
            heartbeat_timeout_ms: 6_000,
            fix_fingers_min_interval_ms: 2_000,
            fix_fingers_max_interval_ms: 60_000,
            lookup_attempt_timeout_ms: 2_000,
            op_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            connect_backoff_ms: 1_000,
            connect_backoff_max_ms: 30_000,
            max_links: 64,
            // All of them, whatever `successor_list_len` is.
            linked_successors: usize::MAX,
            reuse_finger_links: false,
            finger_base: 2,
            proximity_fingers: false,
            finger_lists: false,
            link_idle_ms: 20_000,
            max_hops: 48,
            max_pending_ops: 4_096,
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            limits: Limits::default(),
            fence_max_ms: 60_000,
            inherit_fences: false,
            election: ElectionConfig::default(),
            flood: FloodConfig::default(),
            anti_entropy_min_interval_ms: 2_000,
            anti_entropy_max_interval_ms: 32_000,
            strays_interval_ms: 10_000,
            self_check_min_interval_ms: 4_000,
            self_check_max_interval_ms: 64_000,
            probe_interval_ms: 5_000,
            probe_interval_max_ms: 5_000,
            probe_memory_ms: 600_000,
            tombstone_grace_ms: 600_000,
            agent: String::new(),
        }
    }
}

impl Config {
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Phase {
    Idle,
    Joining {
        op: OpId,
        bootstrap: PeerId,
        successor: Option<PeerId>,
        lookup_started: bool,
        /// The lookup of our own id found a ring member with our id (our previous incarnation,
        /// not yet noticed dead): we look up the peer after it instead, and take its place.
        past_self: bool,
        deadline: Time,
        /// When to look our id up again if the successor the lookup found has not linked by
        /// then (`Time::MAX`: not waiting for one). See [`JOIN_RELOOKUP_MS`].
        relookup_at: Time,
    },
    Joined,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    User,
    Join,
    Finger(usize),
    /// Look up our own id through the far side of the ring: the answer names the peer that
    /// believes it owns our id, so a skipped node finds who skips it (see `on_self_check`).
    SelfCheck,
}

#[derive(Debug, Clone)]
struct LookupOp {
    key: Id,
    purpose: Purpose,
    attempts: u32,
    deadline: Time,
    retry_at: Time,
}

#[derive(Debug, Clone, Copy)]
struct Sweep {
    next: usize,
    changed: bool,
    /// A finger being verified by asking it for its predecessor: (index, nonce, finger, since).
    checking: Option<(usize, u64, Id, Time)>,
}

/// (wake time, op) for pending operations, with the earliest wake time kept beside the set:
/// [`Node::next_timeout`] runs after every input, and reading the set's first entry there meant a
/// walk down a B-tree that is rarely in cache.
#[derive(Debug, Clone)]
pub(crate) struct OpTimers {
    set: BTreeSet<(Time, OpId)>,
    /// `set.first()`'s time, `Time::MAX` when empty.
    earliest: Time,
}

impl Default for OpTimers {
    fn default() -> Self {
        Self {
            set: BTreeSet::new(),
            earliest: Time::MAX,
        }
    }
}

impl OpTimers {
    pub(crate) fn insert(&mut self, timer: (Time, OpId)) {
        self.earliest = self.earliest.min(timer.0);
        self.set.insert(timer);
    }

    pub(crate) fn first(&self) -> Option<&(Time, OpId)> {
        self.set.first()
    }

    pub(crate) fn pop_first(&mut self) -> Option<(Time, OpId)> {
        let first = self.set.pop_first();
        self.earliest = self.set.first().map_or(Time::MAX, |(at, _)| *at);
        first
    }

    pub(crate) fn clear(&mut self) {
        self.set.clear();
        self.earliest = Time::MAX;
    }

    /// The earliest wake time (`Time::MAX`: none).
    pub(crate) fn earliest(&self) -> Time {
        self.earliest
    }
}

/// The sans-IO Chord node.
///
/// `repr(C)`, hot fields first: every input reads the clock, the phase, the link table, the
/// output queue and the timers, and a simulated ring of 16,384 nodes is far larger than the
/// cache, so each cache line an input touches is a miss of its own. Laid out by the compiler
/// (a 3,440-byte struct), `now`, `phase`, `links` and `timers` sat on four different lines
/// (`chord-experiment --mode sim-hops` under `perf annotate`: most of `handle_input`'s own time
/// went to those first loads). The fields below `ring` are in no particular order.
#[derive(Debug)]
#[repr(C)]
pub struct Node {
    pub(crate) now: Time,
    pub(crate) next_op: u64,
    id: Id,
    pub(crate) phase: Phase,
    pub(crate) links: Links,
    out: VecDeque<Output>,
    timers: TimerTable,
    /// (wake time, op) for pending lookups and requests; stale entries are skipped.
    op_timers: OpTimers,
    sweep: Option<Sweep>,
    lookups: BTreeMap<OpId, LookupOp>,
    /// For peers not yet in the ring: a peer linked to them (learned from `origin_via`).
    via_hints: BTreeMap<PeerId, PeerId>,
    via_hints_old: BTreeMap<PeerId, PeerId>,
    ring: RingState,
    config: Config,
    rng: Rng,
    /// Draws request and operation ids only (`Replicator::new_req`, `new_op`): a stream of its own
    /// keeps the protocol's other random choices what they were.
    id_rng: Rng,
    views: walk::PendingViews,
    pub(crate) metrics: Metrics,
    pub(crate) store: Store,
    pub(crate) clock: LamportClock,
    elections: Elections,
    /// The replicated store (`replication.rs`): its request state and protocol; the node lends
    /// it the rest of itself and carries out its effects (`node/replicate.rs`).
    pub(crate) repl: Replicator,
    /// Live updates: this node's watches and the subscriptions it holds (`watch.rs`).
    watches: crate::watch::Watches,
    /// Per-link budgets of expensive requests (`guard.rs`).
    rate_limits: crate::guard::RateLimits,
    flooder: Flooder,
    anti_entropy_interval: u64,
    anti_entropy_cursor: usize,
    self_check_interval: u64,
    fix_interval: u64,
    stabilize_interval: u64,
    /// Round trips measured and near-finger candidates (`Config::proximity_fingers`).
    proximity: crate::proximity::Proximity,
    /// The nonces of the last [`STABILIZE_NONCES_KEPT`] `GetNeighbors` sent and to whom. An
    /// answer to any of them counts: over a link whose round trip is longer than the stabilize
    /// interval (a slow or distant peer, a throttled tab) an answer always arrives after the
    /// next round was sent, and if only the newest nonce counted no round would ever complete.
    stabilize_nonces: VecDeque<(PeerId, u64)>,
    /// Near fingers asked for their successor lists at the end of the last sweep
    /// (`Config::finger_lists`), with the nonces their answers must carry.
    list_requests: Vec<(PeerId, u64)>,
    /// The peers before our predecessor as it named them, closest first, and which
    /// predecessor named them (`node/sync.rs`, "Strays"); the open `GetPreds` round.
    pred_list: (Option<PeerId>, Vec<Id>),
    pred_list_nonce: Option<(PeerId, u64)>,
    pred_list_asked: Time,
    /// Parts of our range with no read quorum of their previous set on our side (`node/fence.rs`).
    fence: fence::Fence,
    /// Strays written back to their set, at the version written (not written again).
    strays_pushed: BTreeMap<String, crate::store::Version>,
    /// Failed peers remembered for probing: peer -> (failed at, next probe due).
    lost: BTreeMap<PeerId, (Time, Time)>,
    /// Gap until the next probe of any lost peer: doubles after each probe that found nobody,
    /// back to `probe_interval_ms` when one found its peer (`probe_lost_peer`).
    probe_gap: u64,
    /// The peer the last probe went to, until its outcome is known.
    last_probed: Option<PeerId>,
    /// Pointed peers whose link failed or never opened, and when: a successor's list that
    /// still names one is not believed about it for [`FAILED_MEMORY_MS`] (unless a link to it
    /// opens). In a ring no longer than the successor list, lists wrap around the whole ring
    /// and each peer adopts its successor's, so a dead peer that only the tails name would
    /// otherwise circulate for good, and a replica set with a dead member never settles.
    /// With each: whether a link to it was up when it failed (`note_failed`).
    failed_recently: BTreeMap<PeerId, (Time, bool)>,
    /// Peers that sent `Notify` (shared in `Neighbors.preds`).
    notifiers: BTreeSet<PeerId>,
    /// The predecessor as last seen, to notice our primary range shrinking.
    last_predecessor: Option<PeerId>,
    /// Start of a range we owned and no longer do (a predecessor came back or joined between):
    /// `(start, predecessor]` is handed back to the predecessor at the next anti-entropy round.
    handback_from: Option<Id>,
    /// Start of the widest range we owned before new predecessors took part of it, and when to
    /// pull it from our replica successors (`catch_up`, `node/sync.rs`).
    catch_up: Option<(Id, Time)>,
    /// Catch-up rounds we opened, by replica successor: their answers are taken over the
    /// round's range (`on_sync`).
    catch_up_rounds: BTreeMap<PeerId, RingRange>,
    /// A predecessor that joined in front of us, and when (`may_have_been_member`,
    /// `node/authorize.rs`).
    newcomer: Option<(PeerId, Time)>,
    /// Peers that joined in front of one of our replica successors, and when
    /// (`may_have_been_member`): they pushed that successor out of our sets.
    successor_newcomers: Vec<(PeerId, Time)>,
    /// Replica successors that hold everything this node's primary range holds (they were
    /// already replicas of it, or an anti-entropy round with them ended equal since they
    /// became one). Only these count toward a quorum for keys of the range (see
    /// `replication.rs`, "Membership changes").
    settled_members: BTreeSet<PeerId>,
    /// The largest replica set (this node and its successors, at most k) this node has been
    /// part of since it joined or created its ring. Quorums are never computed over fewer
    /// members than this: a peer whose successors all failed cannot tell a ring that shrank
    /// from a ring it is cut off from, so it does not acknowledge alone what a larger set
    /// should hold (`replication.rs`, "Membership changes"). Only a graceful `Leaving` of a
    /// member lowers it: that member handed its data on.
    peak_set: usize,
    /// Replica successors whose round over our range ended equal since they became replicas
    /// (or since their last new link). Unlike `settled_members` (which adopts the replicas we
    /// join in front of), only a round puts a peer here; rounds go to the others first, so a
    /// fresh ring settles (every `pred_settled`) within a few fast rounds.
    equal_with: BTreeSet<PeerId>,
    /// Whether this node's own store is complete for its primary range: false from start and
    /// whenever the range grows, until a round with every replica successor ended equal.
    own_settled: bool,
    /// Whether a round over the predecessor's range, opened by the predecessor, ended equal
    /// since this incarnation joined (with `own_settled`: this node is no longer fresh; later
    /// range changes are covered by `own_settled` and the owners' `settled_members`).
    pred_settled: bool,
    /// From the join until our own store first settles: the replica successors we learn of
    /// are the ones our range had before we came, so they count (see `unsettled_members`).
    adopting: bool,
    /// Whether our successor list came from the successor since we joined; until then our
    /// replica set is incomplete, and client requests for our range wait (`waiting_requests`).
    successors_known: bool,
    /// Per replica successor: when the oldest anti-entropy round over our range that it has not
    /// answered `Equal` yet was opened (a round that got lost keeps its older time, which only
    /// makes the proof below weaker, never wrong).
    rounds_opened: BTreeMap<PeerId, Time>,
    /// Per replica successor, over the current link: `(t, range)` of the latest round that ended
    /// `Equal`, `t` being when it was opened. It proves that the member held, at some moment
    /// after `t`, exactly what our store held for `range` at `t` (tombstone collection).
    equal_since: BTreeMap<PeerId, (Time, RingRange)>,
}

const MAX_VIA_HINTS: usize = 256;
/// A joining node whose successor (found by the join lookup) has not linked this long after it
/// was found looks its id up again: the lookup may have named a peer that had just crashed,
/// before the ring noticed, and the connect to it would only fail at the connect timeout, the
/// join at its deadline (2 x `op_timeout_ms`), and the retry come later still.
pub(crate) const JOIN_RELOOKUP_MS: Time = 3_000;
/// Stabilize rounds whose answers still count (see `Node::stabilize_nonces`): at the fastest
/// pace (500 ms) a round trip of up to 4 s completes a round.
const STABILIZE_NONCES_KEPT: usize = 8;
/// Pace of anti-entropy rounds while a replica (or this node) is not yet settled.
pub(crate) use crate::replication::SETTLE_ROUND_MS;
/// How long after a new predecessor took part of our range we pull that range from our replica
/// successors (`catch_up`, `node/sync.rs`): time for leaders whose view still lacks the
/// newcomer to finish the writes they started with the old set.
pub(crate) const CATCH_UP_DELAY_MS: u64 = 4_000;
const MAX_LOST: usize = 16;
/// The longest gap between two probes of one lost peer.
pub const MAX_PROBE_GAP_MS: Time = 60_000;
/// The longest gap between two probes of any lost peers for a peer with a connection budget,
/// reached while probes find nobody (peers that crashed rather than ones a partition hid):
/// under churn each probe is a peer connection, and a tab may create only so many in its
/// lifetime (`peer::budget`). Natives keep probing at `probe_interval_ms`: with the growth,
/// 2,000 partition seeds lost 116 acknowledged writes instead of 38 (slower healing).
pub const MAX_PROBE_INTERVAL_MS: Time = 300_000;
/// How long a failed peer is kept out of adopted successor lists (see `failed_recently`).
pub(crate) const FAILED_MEMORY_MS: Time = 30_000;
/// Bound on `failed_recently`.
const MAX_FAILED_RECENTLY: usize = 64;
const MAX_NOTIFIERS: usize = 32;
const MAX_NOTIFIERS_SHARED: usize = 16;
/// Largest overlay signaling payload (SDP with candidates is a few KiB).
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;

impl Node {
    // ----- construction and getters -------------------------------------------------------

    pub fn new(mut config: Config, id: Id, now: Time) -> Self {
        config.agent = crate::agent::bounded(&config.agent);
        let ring = RingState::with_finger_base(id, config.successor_list_len, config.finger_base);
        let mut rng = Rng::new(config.seed);
        // Operation ids start at a random point so two incarnations of a peer (a restart)
        // never hand out the same id: a late answer to the old one cannot complete a new op.
        let first_op = 1 + (rng.next_u64() >> 24);
        let probe_gap = config.probe_interval_ms;
        Self {
            store: Store::new(config.limits),
            clock: LamportClock::new(),
            elections: Elections::new(id, config.election),
            repl: Replicator::new(replicate::repl_config(&config)),
            rate_limits: crate::guard::RateLimits::default(),
            watches: crate::watch::Watches::default(),
            flooder: Flooder::new(config.flood),
            timers: TimerTable::default(),
            anti_entropy_interval: config.anti_entropy_min_interval_ms,
            anti_entropy_cursor: 0,
            id,
            rng,
            id_rng: Rng::new(config.seed ^ 0x1D50_F0B5_u64),
            fix_interval: config.fix_fingers_min_interval_ms,
            stabilize_interval: config.stabilize_interval_ms,
            config,
            now,
            phase: Phase::Idle,
            ring,
            links: Links::default(),
            lookups: BTreeMap::new(),
            views: BTreeMap::new(),
            op_timers: OpTimers::default(),
            next_op: first_op,
            out: VecDeque::new(),
            metrics: Metrics::default(),
            self_check_interval: 0,
            sweep: None,
            proximity: crate::proximity::Proximity::default(),
            stabilize_nonces: VecDeque::new(),
            list_requests: Vec::new(),
            pred_list: (None, Vec::new()),
            pred_list_nonce: None,
            pred_list_asked: 0,
            fence: fence::Fence::default(),
            strays_pushed: BTreeMap::new(),
            via_hints: BTreeMap::new(),
            via_hints_old: BTreeMap::new(),
            lost: BTreeMap::new(),
            probe_gap,
            last_probed: None,
            failed_recently: BTreeMap::new(),
            notifiers: BTreeSet::new(),
            last_predecessor: None,
            handback_from: None,
            catch_up: None,
            catch_up_rounds: BTreeMap::new(),
            newcomer: None,
            successor_newcomers: Vec::new(),
            settled_members: BTreeSet::new(),
            peak_set: 1,
            equal_with: BTreeSet::new(),
            rounds_opened: BTreeMap::new(),
            equal_since: BTreeMap::new(),
            own_settled: false,
            pred_settled: false,
            adopting: false,
            successors_known: false,
        }
    }

    pub fn id(&self) -> Id {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Joined)
    }

    /// A ring of one: joined, with no other member as successor or predecessor (it created
    /// the ring, or lost every other member). Such a node may [`join`](Self::join) a ring.
    pub fn is_alone(&self) -> bool {
        self.is_joined()
            && self.ring.successor() == self.id
            && self.ring.predecessor().is_none_or(|p| p == self.id)
    }

    pub fn ring_view(&self) -> RingView {
        RingView {
            id: self.id,
            joined: self.is_joined(),
            predecessor: self.ring.predecessor(),
            successors: self.ring.successors().to_vec(),
            fingers: self.ring.fingers().to_vec(),
            links: self.links.up_peers().collect(),
            agent: self.config.agent.clone(),
        }
    }

    pub fn ring(&self) -> &RingState {
        &self.ring
    }

    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.links_up = self.links.up_count();
        m.kv.elections_started = self.elections.started;
        m.kv.elections_won = self.elections.won;
        m.rejected.elections_full = self.elections.refused_full;
        m.kv.keys_stored = self.store.len();
        m.kv.watch_subscriptions = self.watch_subscriptions();
        m.kv.watching = self.watches.mine.len();
        m.gnutella = self.flooder.stats().clone();
        m
    }

    /// The local replica store (read-only; writes go through the protocol).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Lamport clock's current value.
    pub fn lamport(&self) -> u64 {
        self.clock.current()
    }

    /// Observes a timestamp a client has seen (the HTTP API's `ts`, as the original project's
    /// `/put` accepted it) into the Lamport clock, so this peer's later writes are stamped after
    /// it. Only writes this peer stamps itself (as its key's leader) are affected: requests carry
    /// no clock to the leader. A timestamp more than `MAX_CLOCK_JUMP` ahead is ignored (as from
    /// a peer) and `false` is returned.
    pub fn observe_clock(&mut self, ts: u64) -> bool {
        if !self.accepts_ts(ts) {
            return false;
        }
        self.clock.observe(ts);
        true
    }

    /// Turns flood reports on (`flood` module docs): this peer tells every flood's origin how
    /// many query messages it forwarded and, when it holds the key, `addr` (e.g. its HTTP
    /// `host:port`), so origins can count a whole flood and name its holders. Drivers of one
    /// ring SHOULD all call it (native and browser peers do).
    pub fn report_floods(&mut self, addr: Option<String>) {
        self.flooder.send_reports(addr);
    }

    /// The cached leader of a replica set, if any.
    pub fn leader_of(&self, set: &[PeerId]) -> Option<PeerId> {
        self.elections.leader(set)
    }

    /// This node's replica set (itself and its next k-1 successors), sorted.
    pub fn own_replica_set(&self) -> Vec<PeerId> {
        self.replica_set()
    }

    pub fn pending_ops(&self) -> usize {
        self.lookups.len() + usize::from(matches!(self.phase, Phase::Joining { .. }))
    }

    // ----- commands -----------------------------------------------------------------------

    /// Starts a new ring with this node as its only member.
    pub fn create_ring(&mut self, now: Time) {
        self.advance(now);
        self.ring.clear();
        self.become_joined();
    }

    /// Joins the ring through `bootstrap`, a ring member the driver can link to (through an
    /// introducer). Ends in `OpDone` with `Joined` once the successor's link is open.
    ///
    /// A node that [`is_alone`](Self::is_alone) or [`is_isolated`](Self::is_isolated) may join too: that is how a ring of one merges
    /// into a ring its driver learned of (e.g. a restarted first peer that others reconnect
    /// to). Its store is kept, as a restored one is; either is handed over to the ring it joins
    /// (`replication.rs`, "Merging a ring of one"). Until the join ends the node is not a ring member; if the join fails it
    /// is `Idle`, and a driver that wants it to keep serving calls [`create_ring`](Self::create_ring)
    /// again. Any other node that is not idle gets `AlreadyJoined`.
    pub fn join(&mut self, bootstrap: PeerId, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if !(matches!(self.phase, Phase::Idle | Phase::Left)
            || self.is_alone()
            || self.is_isolated())
        {
            self.done(op, Err(OpError::AlreadyJoined));
            return op;
        }
        if !self.store.is_empty() {
            // A merge, or a restart with the disk: what this node holds (acknowledged alone, or
            // maybe the last copy of a set that was replaced meanwhile) must reach the ring.
            self.repl.handover_due();
        }
        self.ring.clear();
        self.phase = Phase::Joining {
            op,
            bootstrap,
            successor: None,
            lookup_started: false,
            past_self: false,
            deadline: now + 2 * self.config.op_timeout_ms,
            relookup_at: Time::MAX,
        };
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval_ms);
        if self.links.is_up(bootstrap) {
            self.start_join_lookup();
        } else {
            self.links.clear_backoff(bootstrap);
            self.ensure_link(bootstrap, true);
        }
        op
    }

    /// Joined, but every successor failed and the node was part of a larger replica set than
    /// itself: it is cut off, not a ring of one (see [`Event::Isolated`]).
    pub fn is_isolated(&self) -> bool {
        self.is_joined() && self.ring.successors().is_empty() && self.peak_set > 1
    }

    /// Finds the owner (successor) of `key`.
    pub fn lookup(&mut self, key: Id, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if !self.is_joined() {
            self.done(op, Err(OpError::NotJoined));
        } else if self.lookups.len() >= self.config.max_pending_ops {
            self.done(
                op,
                Err(OpError::TooManyPendingOps {
                    limit: self.config.max_pending_ops,
                }),
            );
        } else {
            self.start_lookup(op, key, Purpose::User);
        }
        op
    }

    /// Routes an opaque payload (SDP offer/answer, ICE candidate) to `to` through the ring.
    /// `OpDone` reports whether it left this node; delivery is not acknowledged.
    pub fn signal(&mut self, to: PeerId, payload: String, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if payload.len() > MAX_SIGNAL_BYTES {
            self.done(op, Err(OpError::PayloadTooLarge { len: payload.len() }));
            return op;
        }
        let routed = Routed {
            dest: Dest::Peer {
                id: to,
                // A hint for a ring member we point at could only have been planted (`on_routed`).
                via: self.via_hint(to).filter(|_| !self.ring.is_pointed(to)),
            },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 0,
            body: Body::Signal { payload },
        };
        let result = if self.route(routed) {
            self.metrics.chord.signals_sent += 1;
            Ok(OpOutcome::SignalSent)
        } else {
            Err(OpError::NoRoute { to })
        };
        self.done(op, result);
        op
    }

    /// Floods a query for `key` over the current links with `ttl` (the unstructured-search
    /// baseline); `OpDone` after the flood timeout carries who holds it and how far away.
    pub fn flood(&mut self, key: &str, ttl: u8, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        let id = QueryId(self.rng.next_u128());
        let neighbors: Vec<Id> = self.links.up_peers().collect();
        let have = self.store.get(key).is_some_and(|e| !e.is_tombstone());
        match self
            .flooder
            .start(op.0, id, key, ttl, self.id, &neighbors, have, now)
        {
            Ok(msgs) => {
                for (to, msg) in msgs {
                    self.send(to, &Message::Flood(msg));
                }
            }
            Err(e) => self.done(op, Err(OpError::FloodRefused(e))),
        }
        op
    }

    fn on_flood(&mut self, from: PeerId, msg: crate::flood::FloodMsg) {
        let neighbors: Vec<Id> = self.links.up_peers().collect();
        let store = &self.store;
        let msgs = self.flooder.on_message(
            self.id,
            from,
            msg,
            |key| store.get(key).is_some_and(|e| !e.is_tombstone()),
            &neighbors,
            self.now,
        );
        for (to, msg) in msgs {
            self.send(to, &Message::Flood(msg));
        }
    }

    /// Leaves the ring gracefully: hands the neighbours to each other and closes every link.
    pub fn leave(&mut self, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if self.is_joined() {
            let successor = self.ring.successor();
            let predecessor = self.ring.predecessor();
            if successor != self.id {
                self.send(
                    successor,
                    &Message::Leaving {
                        pred: predecessor,
                        succs: Vec::new(),
                    },
                );
            }
            if let Some(p) = predecessor.filter(|p| *p != self.id) {
                let succs = self.ring.successors().to_vec();
                self.send(p, &Message::Leaving { pred: None, succs });
            }
            // Every other linked peer hears it too: a link that closes without a word looks
            // like a crash, and a crash within one detection window of another departure
            // fences a range (`node/fence.rs`, "Growth") although nothing was lost.
            let others: Vec<Id> = self
                .links
                .up_peers()
                .filter(|p| *p != successor && Some(*p) != predecessor)
                .collect();
            for peer in others {
                self.send(
                    peer,
                    &Message::Leaving {
                        pred: None,
                        succs: Vec::new(),
                    },
                );
            }
        }
        self.fail_pending_ops();
        let peers: Vec<Id> = self.links.up_peers().collect();
        for peer in peers {
            self.links.down(peer, now, 0, 0);
            self.out.push_back(Output::Disconnect(peer));
        }
        self.ring.clear();
        self.phase = Phase::Left;
        self.timers.stop_all();
        self.done(op, Ok(OpOutcome::Left));
        op
    }

    // ----- inputs -------------------------------------------------------------------------

    pub fn handle_input(&mut self, now: Time, input: Input<'_>) {
        self.advance(now);
        match input {
            Input::PeerUp { peer } => self.on_peer_up(peer),
            Input::PeerDown { peer } => self.on_peer_down(peer),
            Input::Receive { from, bytes } => self.on_receive(from, bytes),
            Input::SendFailed { peer } => self.on_send_failed(peer),
            Input::Timeout => self.on_timeout(),
        }
    }

    /// Next output; [`Output::Timeout`] when drained.
    #[inline]
    pub fn poll_output(&mut self) -> Output {
        self.out
            .pop_front()
            .unwrap_or_else(|| Output::Timeout(self.next_timeout()))
    }

    /// When the node next needs `Input::Timeout` (`Time::MAX`: never).
    pub fn next_timeout(&self) -> Time {
        let mut t = self.timers.next().min(self.op_timers.earliest());
        if let Phase::Joining {
            deadline,
            relookup_at,
            ..
        } = self.phase
        {
            t = t.min(deadline).min(relookup_at);
        }
        if let Some(Sweep {
            checking: Some((_, _, _, since)),
            ..
        }) = self.sweep
        {
            t = t.min(since + self.config.lookup_attempt_timeout_ms);
        }
        if let Some(at) = self.next_coordination_deadline() {
            t = t.min(at);
        }
        if let Some(at) = self.elections.next_timeout() {
            t = t.min(at);
        }
        if let Some(at) = self.flooder.next_timeout() {
            t = t.min(at);
        }
        t
    }

    pub(crate) fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    fn on_peer_up(&mut self, peer: PeerId) {
        if peer == self.id || matches!(self.phase, Phase::Left) {
            return;
        }
        // Every PeerUp is a fresh data channel (maybe to a restarted incarnation): greet again.
        self.links.up(peer, self.now);
        self.lost.remove(&peer);
        self.failed_recently.remove(&peer);
        // Maybe a restarted incarnation that lost its store: it must sync again to count, and
        // an `Equal` over the old link proves nothing about what the new one holds.
        self.settled_members.remove(&peer);
        self.equal_with.remove(&peer);
        self.equal_since.remove(&peer);
        self.rounds_opened.remove(&peer);
        self.metrics.chord.links_up_total += 1;
        let joined = self.is_joined();
        self.send(peer, &Message::Hello { joined });
        self.proximity_on_up(peer);
        self.flush_awaiting_link(peer);
        if let Phase::Joining {
            bootstrap,
            successor,
            lookup_started,
            ..
        } = self.phase
        {
            if successor == Some(peer) {
                self.become_joined();
            } else if peer == bootstrap && !lookup_started {
                self.start_join_lookup();
            }
        } else if self.is_joined() && peer == self.ring.successor() {
            self.timers.set(Timer::Stabilize, self.now);
        }
        if self.is_joined() && self.ring.predecessor() == Some(peer) {
            self.ask_preds(peer);
        }
    }

    fn on_peer_down(&mut self, peer: PeerId) {
        self.repl.link_down(peer);
        self.proximity.link_down(peer);
        if self.links.get(peer).is_none() {
            return; // we closed it ourselves (Bye, leave, failure already handled)
        }
        if self.links.is_closing(peer) {
            // The peer agreed to our Bye; if we have come to need it since, just reconnect.
            self.links.remove_keep_backoff(peer);
            if self.wanted_links().binary_search(&peer).is_ok() {
                self.ensure_link(peer, true);
            }
            return;
        }
        let old = self.links.down(
            peer,
            self.now,
            self.config.connect_backoff_ms,
            self.config.connect_backoff_max_ms,
        );
        match old {
            Some(LinkState::Connecting { .. }) | None => self.metrics.chord.connects_failed += 1,
            Some(LinkState::Up { .. }) => {}
        }
        let was_up = matches!(old, Some(LinkState::Up { .. }));
        self.equal_since.remove(&peer);
        self.rounds_opened.remove(&peer);
        self.forget_peer(peer, was_up);
        if let Phase::Joining {
            op,
            bootstrap,
            successor,
            ..
        } = self.phase
            && peer == bootstrap
            && successor.is_none()
        {
            self.abort_join(op, OpError::BootstrapLost { bootstrap });
        }
    }

    /// The driver dropped a frame to `peer`: counted; a long streak of them closes the link as
    /// a heartbeat timeout does (`crate::links` module docs). The peer can link again at once.
    fn on_send_failed(&mut self, peer: PeerId) {
        self.metrics.chord.send_failures += 1;
        let Some(streak) = self.links.send_failed(peer, self.now) else {
            return;
        };
        if streak >= crate::links::SEND_FAILURES_UNHEALTHY {
            self.metrics.chord.send_failure_closes += 1;
            self.out.push_back(Output::Disconnect(peer));
            self.links.down(peer, self.now, 0, 0);
            self.forget_peer(peer, true);
        }
    }

    /// `peer` is gone, failed or left: a repair round soon if it held our range (or owned the
    /// one before it), and it leads no election and notifies us no more. Called before the
    /// ring drops it.
    pub(super) fn forget_departed(&mut self, peer: PeerId) {
        if self.replica_successors().contains(&peer) || self.ring.predecessor() == Some(peer) {
            // A replica of our range (or its owner before us) is gone: copy the range to its
            // replacement now, not at the next backed-off round.
            self.repair_soon();
        }
        self.notifiers.remove(&peer);
        self.elections.forget_peer(peer);
    }

    /// Drops a peer from the ring pointers after its link failed (or never opened).
    fn forget_peer(&mut self, peer: PeerId, was_up: bool) {
        self.forget_departed(peer);
        let pointed = self.ring.pointed_peers().binary_search(&peer).is_ok();
        if pointed {
            self.note_failed(peer, was_up);
            let changed = self.ring.remove_peer(peer);
            self.after_ring_change(changed);
        }
        if was_up && self.is_joined() && pointed {
            self.metrics.chord.peers_failed += 1;
            self.remember_lost(peer);
            self.out
                .push_back(Output::event(Event::PeerFailed { peer }));
        }
    }

    fn on_receive(&mut self, from: PeerId, bytes: &[u8]) {
        let m = &mut self.metrics.chord;
        m.frames_in += 1;
        m.bytes_in += bytes.len() as u64;
        let message = match wire::decode(bytes) {
            Ok(message) => message,
            Err(DecodeError::Oversize { .. }) => {
                m.oversize_frames += 1;
                return;
            }
            Err(DecodeError::UnsupportedVersion { .. }) => {
                m.bad_version_frames += 1;
                return;
            }
            Err(_) => {
                m.bad_frames += 1;
                return;
            }
        };
        self.links.heard(from, self.now);
        if matches!(self.phase, Phase::Left) {
            return;
        }
        match message {
            Message::Hello { joined } => self.on_hello(from, joined),
            Message::Ping { nonce } => self.send(from, &Message::Pong { nonce }),
            Message::Pong { nonce } => self.on_pong(from, nonce),
            Message::GetNeighbors { nonce, clock } => {
                if self.is_joined() {
                    if self.ring.predecessor() == Some(from) {
                        self.observe_neighbour_clock(clock);
                    }
                    let reply = Message::Neighbors {
                        nonce,
                        pred: self.ring.predecessor(),
                        succs: self.ring.successors().to_vec(),
                        preds: self.recent_notifiers(),
                        clock: self.clock.current(),
                        fence: self.fence_notice(),
                    };
                    self.send(from, &reply);
                } else {
                    self.metrics.chord.unexpected_messages += 1;
                }
            }
            Message::Neighbors {
                nonce,
                pred,
                succs,
                preds,
                clock,
                fence,
            } => {
                if let Some((end, remaining)) = fence {
                    self.inherit_fence(from, end, remaining);
                }
                self.on_neighbors(from, nonce, pred, &succs, &preds, clock);
            }
            Message::GetPreds { nonce } => self.on_get_preds(from, nonce),
            Message::Preds { nonce, preds } => self.on_preds(from, nonce, &preds),
            Message::Notify => self.on_notify(from),
            Message::Leaving { pred, succs } => self.on_leaving(from, pred, &succs),
            Message::Route(routed) => self.on_routed(from, routed),
            Message::Bye => {
                if self.ring.pointed_peers().binary_search(&from).is_ok() {
                    self.links.set_peer_needs(from, false);
                    self.send(from, &Message::Keep);
                } else {
                    self.close_link(from);
                }
            }
            Message::Keep => self.links.set_peer_needs(from, true),
            Message::Kv(msg) => self.on_kv_msg(from, msg),
            Message::Flood(msg) => {
                // Each query fans out to every link: a per-link budget (`guard.rs`).
                if matches!(msg, crate::flood::FloodMsg::Query { .. })
                    && !self.within_budget(from, crate::guard::Costly::Flood)
                {
                    return;
                }
                self.on_flood(from, msg);
            }
            Message::Sync(msg) => self.on_sync(from, msg),
            Message::Election(msg) => self.on_election_msg(from, msg),
            Message::Close => {
                // Closed for budget, not dead: keep pointing at it, retry the link later. Our
                // successor or predecessor is retried soon: the peer closed the link because
                // it does not know we need it (we point at it, it does not point at us: most
                // often a newer peer sits between us), and only a stabilize round over that
                // link tells us. Backing off for the full 30 s left a node of a forming
                // 16,384-peer ring with a wrong successor for 26 s.
                self.links.set_closing(from);
                let neighbour =
                    self.ring.successor() == from || self.ring.predecessor() == Some(from);
                let delay = if neighbour {
                    self.config.connect_backoff_ms
                } else {
                    self.config.connect_backoff_max_ms
                };
                self.links.back_off(from, self.now, delay);
            }
        }
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        if let Phase::Joining {
            op,
            bootstrap,
            deadline,
            ..
        } = self.phase
            && now >= deadline
        {
            self.abort_join(op, OpError::JoinTimeout { bootstrap });
        }
        if let Phase::Joining { relookup_at, .. } = self.phase
            && now >= relookup_at
        {
            self.relookup_join();
        }
        if self.timers.is_due(Timer::Heartbeat, now) {
            self.timers
                .set(Timer::Heartbeat, now + self.config.heartbeat_interval_ms);
            self.heartbeat();
        }
        if self.timers.is_due(Timer::Stabilize, now) {
            self.timers
                .set(Timer::Stabilize, now + self.stabilize_interval);
            self.stabilize();
        }
        if self.timers.is_due(Timer::FixFingers, now) {
            self.timers.stop(Timer::FixFingers);
            if self.sweep.is_none() {
                self.sweep = Some(Sweep {
                    next: 0,
                    changed: false,
                    checking: None,
                });
                self.continue_sweep();
            }
        }
        if self.timers.is_due(Timer::SelfCheck, now) {
            self.timers
                .set(Timer::SelfCheck, now + self.self_check_interval);
            // Quiet checks slow down; a mismatch or a ring change resets the pace.
            self.self_check_interval =
                (self.self_check_interval * 2).min(self.config.self_check_max_interval_ms);
            if self.is_joined() && !self.ring.successors().is_empty() {
                let op = self.new_op();
                self.start_lookup(op, self.id, Purpose::SelfCheck);
            }
        }
        self.check_stalled_finger();
        self.continue_handover();
        self.reask_fresh();
        self.expire_coordinations();
        self.election_timeouts();
        if self.timers.is_due(Timer::AntiEntropy, now) {
            self.anti_entropy_round();
        }
        for (op, result) in self.flooder.poll_done(now) {
            self.done(OpId(op), Ok(OpOutcome::Flooded(result)));
        }
        if self.timers.is_due(Timer::Watch, now) {
            self.watch_round();
        }
        if self.timers.is_due(Timer::Strays, now) {
            self.strays_round();
        }
        if self.timers.is_due(Timer::Probe, now) {
            self.probe_lost_peer();
        }
        // `earliest` first: most timeouts are not an operation's, and it spares a B-tree walk.
        while self.op_timers.earliest() <= now
            && let Some(&(at, op)) = self.op_timers.first()
        {
            if at > now {
                break;
            }
            self.op_timers.pop_first();
            self.on_op_timer(op, at);
        }
    }

    // ----- plumbing -----------------------------------------------------------------------

    pub(crate) fn send(&mut self, to: PeerId, message: &Message) {
        match wire::encode(message) {
            Some(bytes) => {
                if matches!(message, Message::Sync(_)) {
                    self.metrics.kv.anti_entropy_bytes += bytes.len() as u64;
                }
                self.metrics.chord.frames_out += 1;
                self.metrics.chord.bytes_out += bytes.len() as u64;
                self.links.used(to, self.now);
                self.out.push_back(Output::Send { to, bytes });
            }
            None => self.metrics.chord.dropped_oversize_out += 1,
        }
    }

    /// A fresh operation id: random (53 bits, exact in JavaScript numbers), so a peer that
    /// relays none of our requests cannot guess the id of an answer we wait for (a forged
    /// `KvReply` or `FoundSuccessor`), and two incarnations of a peer never share one.
    pub(crate) fn new_op(&mut self) -> OpId {
        let taken: [&dyn crate::replication::OpSet; 3] = [&self.repl, &self.lookups, &self.views];
        crate::replication::draw_op(&mut self.id_rng, &mut self.next_op, &taken)
    }

    pub(crate) fn done(&mut self, op: OpId, result: Result<OpOutcome, OpError>) {
        self.out
            .push_back(Output::event(Event::OpDone { op, result }));
    }

    fn fail_pending_ops(&mut self) {
        for op in self.repl.take_origin_ops() {
            self.done(op, Err(OpError::NotJoined));
        }
        for (op, _) in std::mem::take(&mut self.views) {
            self.done(op, Err(OpError::NotJoined));
        }
        let pending = std::mem::take(&mut self.lookups);
        self.op_timers.clear();
        for (op, lookup) in pending {
            if lookup.purpose == Purpose::User {
                self.done(op, Err(OpError::NotJoined));
            }
        }
        self.sweep = None;
        if let Phase::Joining { op, .. } = self.phase {
            self.done(op, Err(OpError::NotJoined));
        }
    }
}
