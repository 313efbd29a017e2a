//! Deterministic in-process network simulator (feature `sim`).
//!
//! Many real peers ([`Peer`], node-core's peer session around a [`Node`], driven as the native
//! and browser drivers drive it), one virtual clock, and a network model:
//! - every link has a fixed latency drawn from the seed (so frames on one link stay in order, as
//!   on a reliable WebRTC data channel, while different links reorder relative to each other):
//!   uniform in `[latency_min_ms, latency_max_ms]` by default, or, with
//!   [`SimConfig::geometry`], from the distance between the two peers' places in a plane
//!   ([`Geometry`]: a base, a part proportional to the distance, and a fixed per-link jitter);
//! - frames can be lost with a given probability;
//! - partitions split the peers into groups; frames across groups are dropped and links across
//!   them are reported down after `link_detect_ms` (ICE consent failure);
//! - crashes stop a node at once; its peers see its links go down after `link_detect_ms`;
//!   restarts bring a fresh incarnation with the same id, without its disk (`Sim::restart`) or
//!   restored from it (`Sim::restart_with_disk`);
//! - link establishment plays the real drivers' signalling with node-core's own rules: each
//!   node keeps the drivers' link table (`crate::peer::table`: role, open, answered, the offer
//!   it answers, its own payload) and decides with its `on_offer` (`crate::peer::signal`:
//!   answer, replace, or ignore: glare, duplicate, offer on an open link); a `Connect` makes a
//!   `{type:"offer",sdp}` payload (unique per attempt, as real SDP is) that the peer session
//!   sends the way its signalling paths choose (`crate::signal_path`: through the ring once a
//!   link is open, else through the introducer, which this model relays; again through the
//!   introducer when the ring could not route it), and answers go back the way the offer came;
//!   the link opens one latency after an answer the offerer's table accepts (`accept_answer`).
//!   If no answer comes within `signal_timeout_ms`, the peer session sends the offer again
//!   (`send_signal_retry`: through the introducer) when the introducer is enabled and both
//!   peers are alive and not partitioned apart; otherwise the initiator gets `PeerDown`. A side
//!   whose link is not open `connect_timeout_ms` after its offer or answer gives up and reports
//!   `PeerDown`. A joining node's first link always comes through the introducer;
//! - joins follow the peer session's join plan: a failed join is tried again on the peer's
//!   own timer (`PeerOutput::JoinDue`), through the fixed welcome's next member
//!   ([`Sim::add_node_via`]) or a fresh pick of a live member; writes come out as batches that
//!   the modelled disk commits at once.
//!
//! The event loop always processes the earliest of {each node's timeout, each frame in flight,
//! each link event}, with ties broken by insertion order (as str0m's test harness does), so a
//! run is a pure function of its seed and its script.

pub mod faults;
pub mod history;
pub mod hostile;

use crate::Time;
use crate::id::{Id, successor_in};
use crate::node::{Config, Event, Input, Node, OpError, OpId, OpOutcome};
use crate::peer::join::{JOIN_RETRY_MS, Retry};
use crate::peer::session::{Peer, PeerOutput};
use crate::peer::signal::{self, Description, Role};
use crate::peer::table::{LinkTable, OnOffer, PendingBounds};
use crate::rng::{Rng, splitmix64};
use crate::signal_path::SignalPath;
use crate::store::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Network model and node template.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Template for every node (its `seed` is replaced by one derived from the sim seed).
    pub node: Config,
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Probability that one frame is lost.
    pub loss: f64,
    /// How long a peer takes to notice that a link died (crash, partition).
    pub link_detect_ms: u64,
    /// How long a driver waits for an answer before it sends its offer again through the
    /// introducer (and again after as long, until the offer is answered or the attempt ends;
    /// with no introducer to relay it, the attempt fails then).
    pub signal_timeout_ms: u64,
    /// Whether an introducer (signaling server) is reachable.
    pub introducer: bool,
    /// A link not open this long after its offer or answer was made is closed and reported down
    /// (the drivers' connect timeout).
    pub connect_timeout_ms: u64,
    /// Probability that a delivered frame arrives a second time (a misbehaving transport).
    pub duplicate: f64,
    /// Latency from the peers' places in a plane instead of uniform per link (`None`, the
    /// default, keeps `latency_min_ms..=latency_max_ms`).
    pub geometry: Option<Geometry>,
}

/// A geometric latency model: every peer has a place in a plane, drawn from the sim seed and
/// its id (so a restarted peer keeps its place), and a frame's one-way latency is
/// `base_ms + distance + jitter`, the distance measured in milliseconds. The jitter is fixed per
/// link (drawn from the pair's ids), not per frame, so frames on one link stay in order as on a
/// reliable data channel; what it models is routes that are not straight lines.
///
/// With `continents > 0` the places gather around that many centres (drawn uniformly in the
/// square), each peer within `continent_radius_ms` of its own; with 0 they are uniform in the
/// square. The defaults ([`Geometry::wan`]) give round trips from about 2 ms (neighbours on one
/// continent) to about 300 ms (opposite corners), like a WAN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Side of the square the places are drawn in, in milliseconds of one-way latency.
    pub side_ms: f64,
    /// One-way latency of a link of length zero (the last mile, both ends).
    pub base_ms: u64,
    /// Largest per-link addition to the one-way latency.
    pub jitter_ms: u64,
    /// Number of clusters (continents); 0 places peers uniformly in the square.
    pub continents: u32,
    /// Largest distance of a peer from its continent's centre, in milliseconds.
    pub continent_radius_ms: f64,
}

impl Geometry {
    /// Five continents in a 100 ms square, 1 ms base, up to 5 ms jitter: round trips of
    /// 2-300 ms.
    pub fn wan() -> Self {
        Self {
            side_ms: 100.0,
            base_ms: 1,
            jitter_ms: 5,
            continents: 5,
            continent_radius_ms: 15.0,
        }
    }

    /// The place of `peer` in a run with seed `seed`, in milliseconds.
    pub fn place(&self, seed: u64, peer: Id) -> (f64, f64) {
        let unit = |state: &mut u64| (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64;
        let mut s = seed ^ 0x6E0_6E0 ^ (u64::from(peer.0) << 20);
        if self.continents == 0 {
            return (unit(&mut s) * self.side_ms, unit(&mut s) * self.side_ms);
        }
        let continent = splitmix64(&mut s) % u64::from(self.continents);
        let mut c = seed ^ 0xC0_17_1E_17 ^ (continent << 40);
        let centre = (unit(&mut c) * self.side_ms, unit(&mut c) * self.side_ms);
        // Uniform in the disc around the centre, kept inside the square.
        let r = self.continent_radius_ms * unit(&mut s).sqrt();
        let angle = unit(&mut s) * std::f64::consts::TAU;
        let clamp = |v: f64| v.clamp(0.0, self.side_ms);
        (
            clamp(centre.0 + r * angle.cos()),
            clamp(centre.1 + r * angle.sin()),
        )
    }

    /// One-way latency between `a` and `b` (symmetric).
    pub fn latency(&self, seed: u64, a: Id, b: Id) -> u64 {
        let (x, y) = pair(a, b);
        let (pa, pb) = (self.place(seed, x), self.place(seed, y));
        let distance = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt();
        let mut s = seed ^ 0x717_7E2 ^ (u64::from(x.0) << 32 | u64::from(y.0));
        let jitter = splitmix64(&mut s) % (self.jitter_ms + 1);
        self.base_ms + distance.round() as u64 + jitter
    }
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            node: Config::default(),
            latency_min_ms: 5,
            latency_max_ms: 40,
            loss: 0.0,
            link_detect_ms: 3_000,
            signal_timeout_ms: signal::OFFER_RETRY_MS,
            introducer: true,
            connect_timeout_ms: 15_000,
            duplicate: 0.0,
            geometry: None,
        }
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub frames_delivered: u64,
    pub frames_lost: u64,
    pub frames_partitioned: u64,
    pub frames_to_dead: u64,
    /// Frames a node sent on a link it did not hold (a core bug if it ever rises).
    pub frames_without_link: u64,
    pub links_via_overlay: u64,
    pub links_via_introducer: u64,
    pub connects_failed: u64,
    /// Offers ignored by the signalling rules (glare lost by the remote, duplicates, offers on
    /// an open link from a higher id), and answers nobody waited for.
    pub signals_ignored: u64,
    /// Signalling payloads that did not parse.
    pub signals_bad: u64,
    /// Offers that replaced a link (a re-offer after a restart, the higher id's side of glare).
    pub links_replaced: u64,
    /// Links whose offer came while the answering side held an open link to the offerer.
    pub open_links_replaced: u64,
    /// Answers sent again for an offer that came again before the link opened.
    pub reanswers: u64,
    /// Offers sent again through the introducer for want of an answer.
    pub offer_retries: u64,
    /// Joins started (first attempts and retries), joins that failed, and rounds of attempts
    /// the join plan gave up (node-core's `peer::join`).
    pub join_attempts: u64,
    pub joins_failed: u64,
    pub joins_given_up: u64,
    /// Failed joins whose bootstrap said it is no ring member (`OpError::BootstrapNotJoined`).
    pub joins_refused_not_member: u64,
    pub events: u64,
    /// Frames sent, by message kind (and routed body kind).
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        from: Id,
        to: Id,
        bytes: Vec<u8>,
        /// The link the frame was sent on; a frame never crosses onto a newer link.
        generation: u64,
    },
    Timer {
        node: Id,
        at: Time,
    },
    LinkUp {
        a: Id,
        b: Id,
        via_introducer: bool,
    },
    LinkDown {
        a: Id,
        b: Id,
        generation: u64,
        notify: [Option<Id>; 2],
    },
    /// Offer attempt `attempt` of `a` to `b` may need sending again.
    SignalTimeout {
        a: Id,
        b: Id,
        attempt: u64,
    },
    /// A signalling payload relayed by the introducer.
    Relay {
        from: Id,
        to: Id,
        payload: String,
    },
    /// The link attempt `attempt` (its local description's number) should be open by now.
    ConnectTimeout {
        a: Id,
        b: Id,
        attempt: u64,
    },
    ConnectFailed {
        a: Id,
        b: Id,
    },
    RetryJoin {
        node: Id,
    },
}

/// A bucket queue of events by virtual millisecond: a wheel covering the next `WHEEL_MS`
/// milliseconds plus an ordered map beyond it. Events of one millisecond keep insertion order,
/// which is what makes runs replayable (the same tie-break a binary heap gets from a sequence
/// number, at a fraction of the cost).
///
/// A bucket hands its buffer to `spare` once emptied, and an empty bucket takes the most
/// recently spared one: buffers stay as few as the buckets holding events at once, and warm.
/// Kept by their buckets, every buffer held its peak (a bucket is reused once per turn of the
/// wheel, 16 s): at 1,024 peers the wheel was 41% of the heap, and each push went to a buffer
/// of its own, out of cache.
#[derive(Debug)]
struct EventQueue {
    /// The earliest millisecond that may still hold events.
    cursor: Time,
    wheel: Vec<VecDeque<Ev>>,
    far: BTreeMap<Time, Vec<Ev>>,
    len: usize,
    spare: Vec<VecDeque<Ev>>,
}

const WHEEL_MS: u64 = 1 << 14;

impl EventQueue {
    fn new() -> Self {
        Self {
            cursor: 0,
            wheel: (0..WHEEL_MS).map(|_| VecDeque::new()).collect(),
            far: BTreeMap::new(),
            len: 0,
            spare: Vec::new(),
        }
    }

    /// The bucket of millisecond `at`, given a spare buffer if it has none.
    fn bucket(&mut self, at: Time) -> &mut VecDeque<Ev> {
        let bucket = &mut self.wheel[(at % WHEEL_MS) as usize];
        if bucket.capacity() == 0
            && let Some(buffer) = self.spare.pop()
        {
            *bucket = buffer;
        }
        bucket
    }

    fn push(&mut self, at: Time, ev: Ev) {
        let at = at.max(self.cursor);
        self.len += 1;
        if at - self.cursor < WHEEL_MS {
            self.bucket(at).push_back(ev);
        } else {
            self.far.entry(at).or_default().push(ev);
        }
    }

    /// The next event at or before `until`, with its time.
    fn pop_until(&mut self, until: Time) -> Option<(Time, Ev)> {
        if self.len == 0 {
            self.cursor = self.cursor.max(until);
            return None;
        }
        loop {
            if let Some(ev) = self.wheel[(self.cursor % WHEEL_MS) as usize].pop_front() {
                self.len -= 1;
                return Some((self.cursor, ev));
            }
            if self.cursor >= until {
                return None;
            }
            // This millisecond is over: its bucket's buffer goes to the next bucket that needs one.
            let done = &mut self.wheel[(self.cursor % WHEEL_MS) as usize];
            if done.capacity() > 0 {
                self.spare.push(std::mem::take(done));
            }
            self.cursor += 1;
            // Far events enter the wheel as their millisecond comes within its span.
            while let Some(entry) = self.far.first_entry() {
                if *entry.key() >= self.cursor + WHEEL_MS {
                    break;
                }
                let (at, evs) = entry.remove_entry();
                self.bucket(at).extend(evs);
            }
        }
    }
}

/// `repr(C)`, aligned to a cache line: the fields every event reads (`peer`, `alive`,
/// `timer_at`) come first and share one line. Laid out by the compiler, `alive` sat at the end
/// of the 488-byte struct and `node` elsewhere: a 16,384-peer profile showed a third of the
/// event loop's own time waiting on the line of `alive` alone.
#[derive(Debug)]
#[repr(C, align(64))]
struct SimNode {
    /// The peer session both real drivers drive (node-core's `peer::session`: the node, the
    /// signalling paths, the join plan and its retry timer, group commit). Boxed: a `Peer` is
    /// a few KiB, and the table's small fields (`alive`, `timer_at`) are read for every event,
    /// often without touching the node (stale timers, frames to the dead); unboxed, each of
    /// those reads is a cache miss of its own.
    peer: Box<Peer>,
    timer_at: Time,
    alive: bool,
    bootstrap: Option<Id>,
    /// A fixed introducer welcome for this node ([`Sim::add_node_via`]); without it each
    /// attempt's welcome is a fresh pick of one live member.
    welcome: Option<Vec<Id>>,
    incarnation: u64,
    /// What a durable driver would have on disk: the last `Event::Stored` per key (a crash keeps
    /// it; [`Sim::restart`] throws it away, [`Sim::restart_with_disk`] restores from it).
    disk: BTreeMap<String, Entry>,
    /// The driver's link table, node-core's `peer::table` as both drivers keep it: links being
    /// negotiated or open, by peer, as this node sees them. The handle is the number of this
    /// side's description (what a connect timeout refers to); its own payload is the table's
    /// `local_payload`. Not bounded: the simulator models no pending-answer limit.
    rtc: LinkTable<u64>,
    /// Entries this incarnation put in `rtc` (offers made and offers answered): the peer
    /// connections a tab's driver would have created (`rtc.attempts`, node-core's `peer::stats`).
    connections_created: u64,
}

/// A simulated node's link table (see `NodeState::rtc`).
fn sim_link_table(me: Id) -> LinkTable<u64> {
    LinkTable::new(me.0).with_bounds(PendingBounds {
        per_peer: usize::MAX,
        total: usize::MAX,
    })
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: Time,
    queue: EventQueue,
    nodes: NodeTable,
    /// Links closed by one side whose in-flight frames still arrive (pair, generation).
    draining: BTreeSet<((Id, Id), u64)>,
    /// Open links (ordered pair) -> generation.
    links: FastMap<(Id, Id), u64>,
    next_gen: u64,
    /// Partition group of each node (absent = group 0); empty when healed.
    groups: FastMap<Id, u8>,
    /// Descriptions made so far (each offer or answer is unique, as real SDP is).
    descriptions: u64,
    /// Members seen by the last full scan (the introducer's session list, roughly).
    member_cache: Vec<Id>,
    joins_since_scan: usize,
    /// Results of finished operations, with the virtual time their `OpDone` came out.
    results: FastMap<(Id, OpId), (Time, Result<OpOutcome, OpError>)>,
    pub stats: SimStats,
    /// Extra one-way latency to and from a peer (a slow peer).
    slow: FastMap<Id, u64>,
    /// Client operations recorded for the history checker ([`Sim::client_put`] and friends).
    history: history::History,
    tracked: FastMap<(Id, OpId), usize>,
    /// Count frames by kind in `stats.by_kind` (costs a little per frame).
    pub count_kinds: bool,
    /// Every `Event::Watch` each node emitted, in order: (time, key, entry).
    watch_events: FastMap<Id, Vec<(Time, String, Entry)>>,
}

fn pair(a: Id, b: Id) -> (Id, Id) {
    if a < b { (a, b) } else { (b, a) }
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            rng: Rng::new(cfg.seed ^ 0x5EED_0F51_u64),
            cfg,
            now: 0,
            queue: EventQueue::new(),
            nodes: NodeTable::default(),
            links: FastMap::default(),
            draining: BTreeSet::new(),
            next_gen: 1,
            groups: FastMap::default(),
            descriptions: 0,
            member_cache: Vec::new(),
            joins_since_scan: 0,
            results: FastMap::default(),
            stats: SimStats::default(),
            slow: FastMap::default(),
            history: history::History::new(),
            tracked: FastMap::default(),
            count_kinds: false,
            watch_events: FastMap::default(),
        }
    }

    // ----- getters ------------------------------------------------------------------------

    pub fn now(&self) -> Time {
        self.now
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn node(&self, id: Id) -> Option<&Node> {
        self.nodes
            .get(&id)
            .filter(|n| n.alive)
            .map(|n| n.peer.node())
    }

    /// Every node ever added that is alive now, sorted by id.
    pub fn alive_ids(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The `Event::Watch`es `id` emitted so far, in order: (time, key, version).
    pub fn watch_events(&self, id: Id) -> &[(Time, String, Entry)] {
        self.watch_events.get(&id).map_or(&[], Vec::as_slice)
    }

    pub fn alive_count(&self) -> usize {
        self.nodes.iter().filter(|(_, n)| n.alive).count()
    }

    /// The result of an operation, once its `OpDone` was seen.
    pub fn result(&self, node: Id, op: OpId) -> Option<&Result<OpOutcome, OpError>> {
        self.results.get(&(node, op)).map(|(_, result)| result)
    }

    /// Forgets a collected result (long experiments keep the map small).
    pub fn take_result(&mut self, node: Id, op: OpId) -> Option<Result<OpOutcome, OpError>> {
        self.results.remove(&(node, op)).map(|(_, result)| result)
    }

    /// [`Sim::take_result`] with the virtual time the operation finished.
    pub fn take_result_timed(
        &mut self,
        node: Id,
        op: OpId,
    ) -> Option<(Time, Result<OpOutcome, OpError>)> {
        self.results.remove(&(node, op))
    }

    /// Whether a link between `a` and `b` is open.
    pub fn has_link(&self, a: Id, b: Id) -> bool {
        self.links.contains_key(&pair(a, b))
    }

    /// Whether `a`'s driver holds a link to `b` that it believes open.
    pub fn sees_open(&self, a: Id, b: Id) -> bool {
        self.nodes
            .get(&a)
            .and_then(|n| n.rtc.get(b.0))
            .is_some_and(|l| l.open)
    }

    /// Both drivers start a link to each other at this very instant, as if both cores had asked
    /// (`Output::Connect`): the glare case of the signalling rules.
    pub fn connect_both(&mut self, a: Id, b: Id) {
        self.connect(a, b);
        self.connect(b, a);
        self.drain(a);
        self.drain(b);
    }

    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    // ----- scripting ----------------------------------------------------------------------

    /// A fresh id not used by any node so far.
    pub fn fresh_id(&mut self) -> Id {
        loop {
            let id = Id(self.rng.next_u32());
            if !self.nodes.contains_key(&id) {
                return id;
            }
        }
    }

    fn node_config(&self, id: Id, incarnation: u64) -> Config {
        let mut state = self.cfg.seed ^ (u64::from(id.0) << 16) ^ incarnation;
        let mut cfg = self.cfg.node.clone();
        cfg.seed = splitmix64(&mut state);
        if cfg.agent.is_empty() {
            // Every simulated peer names itself, so walks can be checked to report each one's.
            cfg.agent = format!("sim {id}");
        }
        cfg
    }

    /// Adds a node and joins it through a random live member (the introducer's choice); the
    /// first node creates the ring. Failed joins are retried by the simulated driver.
    pub fn add_node(&mut self, id: Id) {
        self.add_node_with_disk(id, BTreeMap::new());
    }

    fn add_node_with_disk(&mut self, id: Id, disk: BTreeMap<String, Entry>) {
        self.insert_node(id, disk);
        self.start_join(id);
    }

    /// Puts a fresh incarnation of node `id` in the table, not joined.
    fn insert_node(&mut self, id: Id, disk: BTreeMap<String, Entry>) {
        let incarnation = self.nodes.get(&id).map_or(0, |n| n.incarnation + 1);
        let mut node = Node::new(self.node_config(id, incarnation), id, self.now);
        if !disk.is_empty() {
            node.restore(disk.clone(), 0, self.now)
                .expect("a fresh node accepts a restore");
        }
        // Durable: its writes come out as batches, committed at once to `disk`.
        let mut peer = Box::new(Peer::new(node, true));
        peer.set_remote(self.cfg.introducer);
        self.nodes.insert(
            id,
            SimNode {
                peer,
                alive: true,
                timer_at: Time::MAX,
                bootstrap: None,
                welcome: None,
                incarnation,
                disk,
                rtc: sim_link_table(id),
                connections_created: 0,
            },
        );
    }

    /// The introducer's pick: a random live member on the same side of any partition. Samples
    /// first (a scan per join would make forming a large ring quadratic), then scans.
    fn pick_member(&mut self, id: Id) -> Option<Id> {
        let eligible = |s: &Self, other: Id| {
            other != id
                && s.nodes
                    .get(&other)
                    .is_some_and(|n| n.alive && n.peer.node().is_joined())
                && s.same_group(id, other)
        };
        // Rescan now and then so newer members get picked too (amortized O(1) per join).
        self.joins_since_scan += 1;
        if self.joins_since_scan > (self.member_cache.len() / 4).max(16) {
            self.member_cache.clear();
        }
        for _ in 0..32 {
            if self.member_cache.is_empty() {
                break;
            }
            let other = self.member_cache[self.rng.below(self.member_cache.len() as u64) as usize];
            if eligible(self, other) {
                return Some(other);
            }
        }
        let members: Vec<Id> = self
            .nodes
            .iter()
            .map(|(id, _)| *id)
            .filter(|other| eligible(self, *other))
            .collect();
        self.member_cache.clone_from(&members);
        self.joins_since_scan = 0;
        (!members.is_empty()).then(|| members[self.rng.below(members.len() as u64) as usize])
    }

    fn start_join(&mut self, id: Id) {
        let now = self.now;
        if !self.alive(id) {
            return;
        }
        if let Some(welcome) = self.nodes.get(&id).and_then(|n| n.welcome.clone()) {
            // A fixed welcome (perhaps naming peers that are gone): the plan's turn picks.
            let n = self.nodes.get_mut(&id).expect("present");
            n.peer.plan_mut().set_candidates(welcome, id, 0);
            if let Some(bootstrap) = n.peer.plan_mut().attempt(now) {
                self.join_through(id, bootstrap);
            }
            return;
        }
        let member = self.pick_member(id);
        let members: Vec<Id> = member.into_iter().collect();
        if members.is_empty() {
            let anyone_else = self.nodes.iter().any(|(o, n)| *o != id && n.alive);
            // A cut-off node keeps trying: a real introducer still lists the members it lost.
            let isolated = self
                .nodes
                .get(&id)
                .is_some_and(|n| n.peer.node().is_isolated());
            if anyone_else || isolated {
                // Others exist but none joined yet (concurrent start): try again shortly.
                self.schedule(now + 500, Ev::RetryJoin { node: id });
                return;
            }
            let n = self.nodes.get_mut(&id).expect("present");
            n.peer.forget_join();
            n.peer.node_mut().create_ring(now);
            self.drain(id);
        } else {
            let n = self.nodes.get_mut(&id).expect("present");
            n.peer.plan_mut().set_candidates(members, id, 0);
            let bootstrap = n.peer.plan_mut().attempt(now).expect("one candidate");
            self.join_through(id, bootstrap);
        }
    }

    /// `id` joins through `bootstrap` (the peer session's `join_through`; its first link comes
    /// through the introducer).
    fn join_through(&mut self, id: Id, bootstrap: Id) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.bootstrap = Some(bootstrap);
        n.peer.join_through(bootstrap, SignalPath::Remote, now);
        self.stats.join_attempts += 1;
        self.drain(id);
    }

    /// The join plan's retry of `id` is due (the peer session's timer): through the candidate
    /// it names when the welcome is fixed, else through a fresh pick of the introducer.
    fn join_due(&mut self, id: Id, through: Id) {
        let wanted = self.nodes.get(&id).is_some_and(|n| {
            n.alive
                && (!n.peer.node().is_joined() || n.peer.node().is_isolated())
                && !n.peer.joining()
        });
        if !wanted {
            return;
        }
        if self.nodes.get(&id).is_some_and(|n| n.welcome.is_some()) {
            self.join_through(id, through);
        } else {
            self.start_join(id);
        }
    }

    /// Adds node `id` whose introducer welcome is always `welcome` (which may name peers that
    /// are gone): it joins through them in the join plan's turn.
    pub fn add_node_via(&mut self, id: Id, welcome: Vec<Id>) {
        self.insert_node(id, BTreeMap::new());
        if let Some(n) = self.nodes.get_mut(&id) {
            n.welcome = Some(welcome);
        }
        self.start_join(id);
    }

    /// The peer `id` last joined (or tried to join) through.
    pub fn bootstrap_of(&self, id: Id) -> Option<Id> {
        self.nodes.get(&id).and_then(|n| n.bootstrap)
    }

    /// Adds `count` fresh nodes at once and returns their ids.
    pub fn add_nodes(&mut self, count: usize) -> Vec<Id> {
        (0..count)
            .map(|_| {
                let id = self.fresh_id();
                self.add_node(id);
                id
            })
            .collect()
    }

    /// Stops a node at once (no goodbye); its peers notice after `link_detect_ms`.
    pub fn crash(&mut self, id: Id) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.alive = false;
        self.forget_client_ops(id);
        let detect = self.now + self.cfg.link_detect_ms;
        let mut mine: Vec<((Id, Id), u64)> = self
            .links
            .iter()
            .filter(|((a, b), _)| *a == id || *b == id)
            .map(|(p, g)| (*p, *g))
            .collect();
        mine.sort_unstable(); // HashMap order is random; event order must not be
        for ((a, b), generation) in mine {
            let other = if a == id { b } else { a };
            self.schedule(
                detect,
                Ev::LinkDown {
                    a,
                    b,
                    generation,
                    notify: [Some(other), None],
                },
            );
        }
    }

    /// Brings a crashed node back as a fresh incarnation (empty state: its disk is lost) that
    /// joins again.
    pub fn restart(&mut self, id: Id) {
        if self.nodes.get(&id).is_none_or(|n| n.alive) {
            return;
        }
        self.links.retain(|(a, b), _| *a != id && *b != id);
        self.add_node(id);
    }

    /// Brings a crashed node back with what it had persisted (every `Event::Stored` it emitted
    /// before the crash: the strict-durability model), restored before it joins again.
    pub fn restart_with_disk(&mut self, id: Id) {
        let Some(n) = self.nodes.get_mut(&id).filter(|n| !n.alive) else {
            return;
        };
        let disk = std::mem::take(&mut n.disk);
        self.links.retain(|(a, b), _| *a != id && *b != id);
        self.add_node_with_disk(id, disk);
    }

    /// Puts `entry` for `key` on a crashed node's simulated disk, as if it had stored it before
    /// the crash: a copy the ring no longer knows of, for `restart_with_disk` to bring back
    /// (tests of global maintenance, `node/sync.rs`). False if the node is not crashed.
    pub fn plant_on_disk(&mut self, id: Id, key: &str, entry: Entry) -> bool {
        match self.nodes.get_mut(&id).filter(|n| !n.alive) {
            Some(n) => {
                n.disk.insert(key.to_string(), entry);
                true
            }
            None => false,
        }
    }

    /// Entries on a node's simulated disk.
    pub fn disk_len(&self, id: Id) -> usize {
        self.nodes.get(&id).map_or(0, |n| n.disk.len())
    }

    /// What a node's simulated disk holds for `key` (`Event::Stored` minus `Event::Collected`).
    pub fn disk_entry(&self, id: Id, key: &str) -> Option<&Entry> {
        self.nodes.get(&id).and_then(|n| n.disk.get(key))
    }

    /// Graceful leave.
    pub fn leave(&mut self, id: Id) -> Option<OpId> {
        let now = self.now;
        let n = self.nodes.get_mut(&id).filter(|n| n.alive)?;
        let op = n.peer.node_mut().leave(now);
        self.drain(id);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.alive = false;
        }
        self.forget_client_ops(id);
        Some(op)
    }

    /// Splits the network: `group_of(id)` names each node's side.
    pub fn partition(&mut self, group_of: impl Fn(Id) -> u8) {
        self.groups = self
            .nodes
            .iter()
            .map(|(id, _)| (*id, group_of(*id)))
            .collect();
        let detect = self.now + self.cfg.link_detect_ms;
        let mut cut: Vec<((Id, Id), u64)> = self
            .links
            .iter()
            .filter(|((a, b), _)| !self.same_group(*a, *b))
            .map(|(p, g)| (*p, *g))
            .collect();
        cut.sort_unstable(); // HashMap order is random; event order must not be
        for ((a, b), generation) in cut {
            self.schedule(
                detect,
                Ev::LinkDown {
                    a,
                    b,
                    generation,
                    notify: [Some(a), Some(b)],
                },
            );
        }
    }

    pub fn heal(&mut self) {
        self.groups.clear();
    }

    pub fn set_introducer(&mut self, enabled: bool) {
        self.cfg.introducer = enabled;
        let ids: Vec<Id> = self.nodes.iter().map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.peer.set_remote(enabled);
            }
        }
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Starts a lookup at `from`.
    pub fn lookup(&mut self, from: Id, key: Id) -> Option<OpId> {
        let now = self.now;
        let n = self.nodes.get_mut(&from).filter(|n| n.alive)?;
        let op = n.peer.node_mut().lookup(key, now);
        self.drain(from);
        Some(op)
    }

    /// Runs a closure against a live node (commands), then drains its outputs.
    pub fn with_node<R>(&mut self, id: Id, f: impl FnOnce(&mut Node, Time) -> R) -> Option<R> {
        let now = self.now;
        let n = self.nodes.get_mut(&id).filter(|n| n.alive)?;
        let r = f(n.peer.node_mut(), now);
        self.drain(id);
        Some(r)
    }

    /// Makes a peer slow: every frame to or from it takes `extra_ms` longer (0 = normal).
    pub fn set_slow(&mut self, id: Id, extra_ms: u64) {
        if extra_ms == 0 {
            self.slow.remove(&id);
        } else {
            self.slow.insert(id, extra_ms);
        }
    }

    pub fn set_duplicate(&mut self, probability: f64) {
        self.cfg.duplicate = probability;
    }

    /// A client puts `value` through peer `at`; the call enters the history. Returns its index
    /// in [`Sim::history`], or `None` when the peer is not alive.
    pub fn client_put(&mut self, at: Id, key: &str, value: &str) -> Option<usize> {
        let writer = format!("client@{at}");
        self.client_call(
            at,
            key,
            history::Call::Put {
                value: value.to_string(),
            },
            |n, now| n.put(key, value, &writer, now),
        )
    }

    /// A client deletes `key` through peer `at` (recorded like [`Sim::client_put`]).
    pub fn client_delete(&mut self, at: Id, key: &str) -> Option<usize> {
        let writer = format!("client@{at}");
        self.client_call(at, key, history::Call::Delete, |n, now| {
            n.delete(key, &writer, now)
        })
    }

    /// A client reads `key` through peer `at` (recorded like [`Sim::client_put`]).
    pub fn client_get(&mut self, at: Id, key: &str) -> Option<usize> {
        self.client_call(at, key, history::Call::Get, |n, now| n.get(key, now))
    }

    fn client_call(
        &mut self,
        at: Id,
        key: &str,
        call: history::Call,
        f: impl FnOnce(&mut Node, Time) -> OpId,
    ) -> Option<usize> {
        let now = self.now;
        let n = self.nodes.get_mut(&at).filter(|n| n.alive)?;
        let is_get = matches!(call, history::Call::Get);
        let index = self.history.invoke(&at.to_string(), key, call, now);
        let op = f(n.peer.node_mut(), now);
        if is_get {
            let newest = self.newest_live(key);
            self.history.note_newest_live(index, newest);
        }
        self.tracked.insert((at, op), index);
        self.drain(at);
        Some(index)
    }

    /// The newest version (Lamport timestamp, 0 for none) of `key` held by a live ring member
    /// (`history::Op::newest_live`).
    fn newest_live(&self, key: &str) -> u64 {
        self.nodes
            .iter()
            .map(|(_, n)| n)
            .filter(|n| n.alive && n.peer.node().is_joined())
            .filter_map(|n| n.peer.node().store().get(key).map(|e| e.version.ts))
            .max()
            .unwrap_or(0)
    }

    /// Sends `bytes` from `from` to `to` over their open link, as if `from`'s driver had sent
    /// them: how a hostile peer's forged frames enter the network ([`hostile`]). False when
    /// the two hold no link (a peer can only send on its own links).
    pub fn inject(&mut self, from: Id, to: Id, bytes: Vec<u8>) -> bool {
        if !self.alive(from) || !self.links.contains_key(&pair(from, to)) {
            return false;
        }
        self.transmit(from, to, bytes);
        true
    }

    /// Peer connections `id`'s current incarnation created (offers made and offers answered):
    /// what a tab's driver counts against its lifetime budget (node-core's `peer::budget`).
    pub fn connections_created(&self, id: Id) -> u64 {
        self.nodes.get(&id).map_or(0, |n| n.connections_created)
    }

    /// The peers `id` holds an open link to, in id order.
    pub fn linked_peers(&self, id: Id) -> Vec<Id> {
        let mut peers: Vec<Id> = self
            .links
            .keys()
            .filter_map(|&(a, b)| {
                if a == id {
                    Some(b)
                } else if b == id {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        peers.sort_unstable();
        peers
    }

    /// The client operations recorded so far.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// Operations of a peer that crashed or left never return: their outcome stays unknown.
    fn forget_client_ops(&mut self, id: Id) {
        self.tracked.retain(|(peer, _), _| *peer != id);
    }

    /// Joins `count` fresh nodes following `pattern`; returns their ids.
    pub fn join_nodes(&mut self, count: usize, pattern: JoinPattern) -> Vec<Id> {
        match pattern {
            JoinPattern::Sequential => (0..count)
                .map(|_| {
                    let id = self.fresh_id();
                    self.add_node(id);
                    // The next one starts once this one is a member (bounded: a join retries).
                    self.run_until_true(10, 60_000, |s| s.node(id).is_some_and(Node::is_joined));
                    id
                })
                .collect(),
            JoinPattern::Growth { percent_per_sec } => {
                let mut ids = Vec::with_capacity(count);
                while ids.len() < count {
                    // This second's joins: a share of the current ring, at random instants.
                    let members = self.alive_count().max(1) as u64;
                    let batch = (members * u64::from(percent_per_sec))
                        .div_ceil(100)
                        .min((count - ids.len()) as u64);
                    let mut times: Vec<u64> = (0..batch).map(|_| self.rng.below(1_000)).collect();
                    times.sort_unstable();
                    let start = self.now;
                    for t in times {
                        self.run_until(start + t);
                        let id = self.fresh_id();
                        self.add_node(id);
                        ids.push(id);
                    }
                    self.run_until(start + 1_000);
                }
                ids
            }
            JoinPattern::RandomTimes { window_ms } => {
                let mut times: Vec<u64> = (0..count)
                    .map(|_| self.rng.below(window_ms.max(1)))
                    .collect();
                times.sort_unstable();
                let start = self.now;
                times
                    .into_iter()
                    .map(|t| {
                        self.run_until(start + t);
                        let id = self.fresh_id();
                        self.add_node(id);
                        id
                    })
                    .collect()
            }
        }
    }

    /// Runs until every live node's pointers match the truth (checked each virtual second), at
    /// most `max_ms`. Returns whether it converged.
    pub fn run_until_converged(&mut self, max_ms: u64) -> bool {
        self.run_until_true(1_000, max_ms, Self::is_converged)
    }

    /// Whether every pointer matches the truth; stops at the first mismatch (cheap while a
    /// large ring is still forming), where [`Sim::convergence`] counts them all.
    pub fn is_converged(&self) -> bool {
        let ids = self.truth();
        let n = ids.len();
        let r = self.cfg.node.successor_list_len;
        ids.iter().enumerate().all(|(i, id)| {
            let node = self.nodes.get(id).expect("listed").peer.node();
            let ring = node.ring();
            node.is_joined()
                && ring.successors().len() == (n - 1).min(r)
                && ring
                    .successors()
                    .iter()
                    .enumerate()
                    .all(|(k, s)| *s == ids[(i + k + 1) % n])
                && ring.predecessor() == (n > 1).then(|| ids[(i + n - 1) % n])
                && (0..ring.finger_count()).all(|f| {
                    let owner = successor_in(&ids, ring.finger_start(f)).expect("non-empty");
                    ring.finger(f) == (owner != *id).then_some(owner)
                })
        })
    }

    // ----- running ------------------------------------------------------------------------

    /// Processes every event up to and including `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Time) {
        while let Some((at, ev)) = self.queue.pop_until(until) {
            self.now = self.now.max(at);
            self.stats.events += 1;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs until `done(self)` holds (checked every `check_every_ms`) or `max_ms` passed.
    /// Returns whether it held.
    pub fn run_until_true(
        &mut self,
        check_every_ms: u64,
        max_ms: u64,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let end = self.now + max_ms;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.run_until((self.now + check_every_ms).min(end));
        }
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn same_group(&self, a: Id, b: Id) -> bool {
        self.groups.is_empty()
            || self.groups.get(&a).copied().unwrap_or(0)
                == self.groups.get(&b).copied().unwrap_or(0)
    }

    fn alive(&self, id: Id) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.alive)
    }

    /// The one-way latency of a frame between `a` and `b` now (the link's latency plus what
    /// [`Sim::set_slow`] adds). Experiments read it as the oracle (the direct round trip is
    /// twice it); nodes never see it, they measure round trips themselves.
    pub fn latency(&self, a: Id, b: Id) -> u64 {
        let slow =
            self.slow.get(&a).copied().unwrap_or(0) + self.slow.get(&b).copied().unwrap_or(0);
        if let Some(geometry) = &self.cfg.geometry {
            return geometry.latency(self.cfg.seed, a, b) + slow;
        }
        let (x, y) = pair(a, b);
        let mut s = self.cfg.seed ^ (u64::from(x.0) << 32 | u64::from(y.0));
        let span = self
            .cfg
            .latency_max_ms
            .saturating_sub(self.cfg.latency_min_ms)
            + 1;
        self.cfg.latency_min_ms + splitmix64(&mut s) % span + slow
    }

    fn input(&mut self, id: Id, input: Input<'_>) {
        if let Some(slot) = self.nodes.slot(&id) {
            self.input_at(slot, id, input);
        }
    }

    /// [`Sim::input`] to the node in table slot `slot` (found once per event).
    fn input_at(&mut self, slot: usize, id: Id, input: Input<'_>) {
        let now = self.now;
        let n = self.nodes.at_mut(slot);
        if !n.alive {
            return;
        }
        // Link events and time go through the peer session, as in the real drivers.
        match input {
            Input::PeerUp { peer } => {
                n.peer.link_opened(peer, now);
            }
            Input::PeerDown { peer } => n.peer.link_closed(peer, now),
            Input::Receive { from, bytes } => n.peer.frame(from, bytes, now),
            Input::Timeout => n.peer.handle_timeout(now),
            input => n.peer.node_mut().handle_input(now, input),
        }
        self.drain_at(slot, id);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                bytes,
                generation,
            } => {
                let p = pair(from, to);
                let slot = self.nodes.slot(&to);
                if !slot.is_some_and(|slot| self.nodes.at(slot).alive) {
                    self.stats.frames_to_dead += 1;
                } else if self.links.get(&p) != Some(&generation)
                    && !self.draining.contains(&(p, generation))
                {
                    self.stats.frames_without_link += 1;
                } else if !self.same_group(from, to) {
                    self.stats.frames_partitioned += 1;
                } else {
                    self.stats.frames_delivered += 1;
                    self.input_at(
                        slot.expect("alive"),
                        to,
                        Input::Receive {
                            from,
                            bytes: &bytes,
                        },
                    );
                }
            }
            Ev::Timer { node, at } => {
                if let Some(slot) = self.nodes.slot(&node) {
                    let n = self.nodes.at_mut(slot);
                    if n.alive && n.timer_at == at {
                        n.timer_at = Time::MAX;
                        self.input_at(slot, node, Input::Timeout);
                    }
                }
            }
            Ev::LinkUp {
                a,
                b,
                via_introducer,
            } => self.link_up(a, b, via_introducer),
            Ev::LinkDown {
                a,
                b,
                generation,
                notify,
            } => {
                let p = pair(a, b);
                self.draining.remove(&(p, generation));
                if self.links.get(&p) == Some(&generation) {
                    self.links.remove(&p);
                }
                // A newer link between the two replaced this one: its end is nobody's news.
                if !self.links.contains_key(&p) {
                    for side in notify.into_iter().flatten() {
                        let other = if side == a { b } else { a };
                        if let Some(n) = self.nodes.get_mut(&side)
                            && n.rtc.get(other.0).is_some_and(|l| l.open)
                        {
                            n.rtc.close(other.0);
                        }
                        self.input(side, Input::PeerDown { peer: other });
                    }
                }
            }
            Ev::SignalTimeout { a, b, attempt } => {
                // No answer over the ring: the driver asks the introducer to relay its offer.
                let offer = self
                    .nodes
                    .get(&a)
                    .and_then(|n| n.rtc.get(b.0))
                    .and_then(|l| {
                        (l.handle == attempt && l.role == Role::Offerer && !l.answered && !l.open)
                            .then(|| l.local_payload.clone().unwrap_or_default())
                    });
                if let Some(payload) = offer {
                    if self.cfg.introducer && self.alive(b) && self.same_group(a, b) {
                        self.stats.offer_retries += 1;
                        let now = self.now;
                        if let Some(n) = self.nodes.get_mut(&a) {
                            n.peer.send_signal_retry(b, payload, now);
                        }
                        self.drain(a);
                        let again = self.now + self.cfg.signal_timeout_ms;
                        self.schedule(again, Ev::SignalTimeout { a, b, attempt });
                    } else {
                        self.connect_failed(a, b);
                    }
                }
            }
            Ev::Relay { from, to, payload } => {
                if self.alive(to) && self.same_group(from, to) {
                    self.on_signal(to, from, &payload, true);
                    self.drain(to);
                }
            }
            Ev::ConnectTimeout { a, b, attempt } => {
                let stuck = self
                    .nodes
                    .get(&a)
                    .and_then(|n| n.rtc.get(b.0))
                    .is_some_and(|l| l.handle == attempt && !l.open);
                if stuck {
                    self.connect_failed(a, b);
                }
            }
            Ev::ConnectFailed { a, b } => {
                if !self.links.contains_key(&pair(a, b)) {
                    self.connect_failed(a, b);
                }
            }
            Ev::RetryJoin { node } => {
                if self.nodes.get(&node).is_some_and(|n| {
                    n.alive && (!n.peer.node().is_joined() || n.peer.node().is_isolated())
                }) {
                    self.start_join(node);
                }
            }
        }
    }

    fn link_up(&mut self, a: Id, b: Id, via_introducer: bool) {
        if !(self.alive(a) && self.alive(b) && self.same_group(a, b)) {
            self.schedule(self.now, Ev::ConnectFailed { a, b });
            return;
        }
        if !self.links.contains_key(&pair(a, b)) {
            let generation = self.next_gen;
            self.next_gen += 1;
            self.links.insert(pair(a, b), generation);
            for (side, other, role) in [(a, b, Role::Offerer), (b, a, Role::Answerer)] {
                if let Some(n) = self.nodes.get_mut(&side) {
                    // A side that negotiated nothing (the introducer's direct link) gets a
                    // link as it comes up.
                    if !n.rtc.contains(other.0) {
                        n.connections_created += 1;
                        n.rtc.start(other.0, role, None, |_| Some(0));
                        // As if its answer had come: a late answer finds nothing to apply.
                        if let Some(link) = n.rtc.get_mut(other.0) {
                            link.answered = true;
                        }
                    }
                    let generation = n.rtc.get(other.0).map(|l| l.generation);
                    if let Some(generation) = generation {
                        n.rtc.mark_open(other.0, generation);
                    }
                }
            }
            if via_introducer {
                self.stats.links_via_introducer += 1;
            } else {
                self.stats.links_via_overlay += 1;
            }
            self.input(a, Input::PeerUp { peer: b });
            self.input(b, Input::PeerUp { peer: a });
        } else {
            self.input(a, Input::PeerUp { peer: b });
        }
    }

    fn via_introducer(&mut self, a: Id, b: Id) {
        if self.cfg.introducer && self.alive(b) && self.same_group(a, b) {
            let at = self.now + 3 * self.latency(a, b);
            self.schedule(
                at,
                Ev::LinkUp {
                    a,
                    b,
                    via_introducer: true,
                },
            );
        } else {
            self.schedule(self.now, Ev::ConnectFailed { a, b });
        }
    }

    /// Drains a node's outputs, playing its driver.
    fn drain(&mut self, id: Id) {
        if let Some(slot) = self.nodes.slot(&id) {
            self.drain_at(slot, id);
        }
    }

    /// [`Sim::drain`] of the node in table slot `slot` (slots never move; handling an output
    /// adds no node).
    fn drain_at(&mut self, slot: usize, id: Id) {
        loop {
            let n = self.nodes.at_mut(slot);
            if !n.alive {
                return;
            }
            match n.peer.poll_output() {
                PeerOutput::Timeout(at) => {
                    if at != n.timer_at {
                        n.timer_at = at;
                        if at != Time::MAX {
                            self.schedule(at.max(self.now), Ev::Timer { node: id, at });
                        }
                    }
                    return;
                }
                PeerOutput::Send { to, bytes } => self.transmit(id, to, bytes),
                PeerOutput::Connect(peer) => self.connect(id, peer),
                PeerOutput::Disconnect(peer) => {
                    // The link closes at once (a new Connect makes a new link); frames already
                    // in flight still arrive; then the far side sees it close.
                    if let Some(generation) = self.links.remove(&pair(id, peer)) {
                        self.draining.insert((pair(id, peer), generation));
                        let at = self.now + self.cfg.latency_max_ms + 1;
                        self.schedule(
                            at,
                            Ev::LinkDown {
                                a: id,
                                b: peer,
                                generation,
                                notify: [Some(peer), None],
                            },
                        );
                    }
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.rtc.close(peer.0);
                    }
                }
                PeerOutput::Deliver { from, payload } => {
                    self.on_signal(id, from, &payload, false);
                }
                PeerOutput::Introducer { to, payload, .. } => {
                    if self.cfg.introducer {
                        self.relay(id, to, payload);
                    }
                }
                PeerOutput::Persist(batch) => {
                    // The disk commits at once: what waited for it comes out next.
                    let n = self.nodes.at_mut(slot);
                    for (key, entry) in batch.stored {
                        n.disk.insert(key, entry);
                    }
                    for key in batch.collected {
                        n.disk.remove(&key);
                    }
                    n.peer.committed(batch.id);
                }
                PeerOutput::Joined { .. } => {}
                PeerOutput::JoinFailed { error, retry } => {
                    if matches!(*error, OpError::BootstrapNotJoined { .. }) {
                        self.stats.joins_refused_not_member += 1;
                    }
                    self.join_failed(id, retry);
                }
                PeerOutput::JoinDue { through } => self.join_due(id, through),
                PeerOutput::OpDone { op, result } => self.op_done(id, op, *result),
                PeerOutput::Event(event) => self.on_event(id, *event),
            }
        }
    }

    fn transmit(&mut self, from: Id, to: Id, bytes: Vec<u8>) {
        let Some(generation) = self.links.get(&pair(from, to)).copied() else {
            self.stats.frames_without_link += 1;
            return;
        };
        if !self.same_group(from, to) {
            self.stats.frames_partitioned += 1;
            return;
        }
        if self.cfg.loss > 0.0 && self.rng.chance(self.cfg.loss) {
            self.stats.frames_lost += 1;
            return;
        }
        if self.count_kinds {
            *self.stats.by_kind.entry(frame_kind(&bytes)).or_default() += 1;
        }
        let at = self.now + self.latency(from, to);
        if self.cfg.duplicate > 0.0 && self.rng.chance(self.cfg.duplicate) {
            let again = at + 1 + self.rng.below(self.cfg.latency_max_ms.max(1));
            self.schedule(
                again,
                Ev::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                    generation,
                },
            );
        }
        self.schedule(
            at,
            Ev::Deliver {
                from,
                to,
                bytes,
                generation,
            },
        );
    }

    fn connect(&mut self, a: Id, b: Id) {
        if self.links.contains_key(&pair(a, b)) {
            self.schedule(
                self.now,
                Ev::LinkUp {
                    a,
                    b,
                    via_introducer: false,
                },
            );
            return;
        }
        let joining_bootstrap = self
            .nodes
            .get(&a)
            .is_some_and(|n| !n.peer.node().is_joined() && n.bootstrap == Some(b));
        if joining_bootstrap {
            self.via_introducer(a, b);
            return;
        }
        // One link per peer: an attempt under way (or a link this side still holds) stands.
        if self.nodes.get(&a).is_none_or(|n| n.rtc.contains(b.0)) {
            return;
        }
        let (attempt, sdp) = self.description('o');
        let payload = Description::Offer(sdp).encode();
        if let Some(n) = self.nodes.get_mut(&a) {
            n.connections_created += 1;
            if let Some(generation) = n.rtc.start(b.0, Role::Offerer, None, |_| Some(attempt)) {
                n.rtc.set_local_payload(b.0, generation, payload.clone());
            }
        }
        let now = self.now;
        self.schedule(
            now + self.cfg.connect_timeout_ms,
            Ev::ConnectTimeout { a, b, attempt },
        );
        self.schedule(
            now + self.cfg.signal_timeout_ms,
            Ev::SignalTimeout { a, b, attempt },
        );
        if let Some(n) = self.nodes.get_mut(&a) {
            n.peer.send_signal(b, payload, now);
        }
    }

    /// A fresh session description, unique as real SDP with its ICE credentials is (its
    /// content means nothing else here), and its number.
    fn description(&mut self, kind: char) -> (u64, String) {
        self.descriptions += 1;
        (self.descriptions, format!("{kind}{}", self.descriptions))
    }

    /// Sends a payload from `me` to `to` the way the peer session chooses (an answer goes back
    /// the way its offer came). Its outputs come out at `me`'s next drain.
    fn send_signal(&mut self, me: Id, to: Id, payload: String) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&me) {
            n.peer.send_signal(to, payload, now);
        }
    }

    /// The introducer carries a payload: one latency to it and one on (its own hop is modelled
    /// as half the pair's latency each way).
    fn relay(&mut self, from: Id, to: Id, payload: String) {
        let at = self.now + self.latency(from, to) * 3 / 2;
        self.schedule(at, Ev::Relay { from, to, payload });
    }

    /// `a`'s attempt to link with `b` failed: its driver forgets it and tells the core.
    fn connect_failed(&mut self, a: Id, b: Id) {
        if let Some(n) = self.nodes.get_mut(&a)
            && n.rtc.get(b.0).is_some_and(|l| !l.open)
        {
            n.rtc.close(b.0);
        }
        self.stats.connects_failed += 1;
        self.input(a, Input::PeerDown { peer: b });
    }

    /// A signalling payload from `from` reached `me`'s driver (over the ring, or relayed by the
    /// introducer): node-core's signalling rules decide, as in both real drivers.
    fn on_signal(&mut self, me: Id, from: Id, payload: &str, via_introducer: bool) {
        let Some(description) = Description::parse(payload) else {
            self.stats.signals_bad += 1;
            return;
        };
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&me) {
            let path = if via_introducer {
                SignalPath::Remote
            } else {
                SignalPath::Ring
            };
            n.peer.heard(from, path);
        }
        match description {
            Description::Offer(sdp) => {
                let Some(n) = self.nodes.get_mut(&me) else {
                    return;
                };
                match n.rtc.on_offer(from.0, &sdp) {
                    OnOffer::Ignore(_) | OnOffer::Refused | OnOffer::WrongIdentity(_) => {
                        self.stats.signals_ignored += 1;
                        return;
                    }
                    OnOffer::Reoffer(ours) => {
                        self.stats.signals_ignored += 1;
                        let payload =
                            ours.unwrap_or_else(|| Description::Offer(String::new()).encode());
                        self.send_signal(me, from, payload);
                        return;
                    }
                    OnOffer::Reanswer(answered) => {
                        self.stats.reanswers += 1;
                        let payload =
                            answered.unwrap_or_else(|| Description::Answer(String::new()).encode());
                        self.send_signal(me, from, payload);
                        return;
                    }
                    OnOffer::Answer { replaced: None } => {}
                    OnOffer::Answer {
                        replaced: Some(old),
                    } => {
                        self.stats.links_replaced += 1;
                        if old.open {
                            self.stats.open_links_replaced += 1;
                            // Our side of the old link closes now; the offerer no longer holds
                            // it (it offered anew).
                            if let Some(generation) = self.links.remove(&pair(me, from)) {
                                self.draining.insert((pair(me, from), generation));
                            }
                            self.input(me, Input::PeerDown { peer: from });
                        }
                    }
                }
                let (attempt, answer) = self.description('a');
                let payload = Description::Answer(answer).encode();
                if let Some(n) = self.nodes.get_mut(&me) {
                    n.connections_created += 1;
                    if let Some(generation) = n
                        .rtc
                        .start(from.0, Role::Answerer, Some(sdp), |_| Some(attempt))
                    {
                        n.rtc.set_local_payload(from.0, generation, payload.clone());
                    }
                }
                self.schedule(
                    now + self.cfg.connect_timeout_ms,
                    Ev::ConnectTimeout {
                        a: me,
                        b: from,
                        attempt,
                    },
                );
                // The answer goes back the way the offer came.
                self.send_signal(me, from, payload);
            }
            Description::Answer(sdp) => {
                let accepted = self
                    .nodes
                    .get_mut(&me)
                    .and_then(|n| n.rtc.accept_answer(from.0, &sdp))
                    .is_some();
                if !accepted {
                    self.stats.signals_ignored += 1;
                    return;
                }
                let at = now + self.latency(me, from);
                self.schedule(
                    at,
                    Ev::LinkUp {
                        a: me,
                        b: from,
                        via_introducer,
                    },
                );
            }
        }
    }

    /// An operation finished: recorded for the history checker and [`Sim::result`].
    fn op_done(&mut self, id: Id, op: OpId, result: Result<OpOutcome, OpError>) {
        if let Some(index) = self.tracked.remove(&(id, op)) {
            self.history.complete(index, self.now, history_ret(&result));
            if let Some(get) = self
                .history
                .get(index)
                .filter(|o| matches!(o.call, history::Call::Get))
            {
                let newest = self.newest_live(&get.key.clone());
                self.history.note_newest_live(index, newest);
            }
        }
        if !matches!(result, Ok(OpOutcome::SignalSent)) {
            self.results.insert((id, op), (self.now, result));
        }
    }

    fn on_event(&mut self, id: Id, event: Event) {
        match event {
            // Cut off from the ring: the peer session's join plan retries through the members
            // it knows (its timer brings `JoinDue`); without any, a fresh pick of the
            // introducer's.
            Event::Isolated
                if self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| n.peer.plan().retry_at().is_none()) =>
            {
                let at = self.now + JOIN_RETRY_MS;
                self.schedule(at, Ev::RetryJoin { node: id });
            }
            Event::Watch {
                key,
                value,
                ts,
                writer,
            } => {
                let entry = Entry {
                    value,
                    version: crate::store::Version::new(ts, writer),
                };
                self.watch_events
                    .entry(id)
                    .or_default()
                    .push((self.now, key, entry));
            }
            _ => {}
        }
    }

    /// A join failed: on [`Retry::At`] the peer session's timer brings the next attempt. A
    /// round the plan gives up is counted and followed by a new one (a fresh welcome): a
    /// simulated peer has no ring of one to fall back on, and the scenarios want every peer in
    /// the ring eventually.
    fn join_failed(&mut self, id: Id, retry: Retry) {
        self.stats.joins_failed += 1;
        if retry == Retry::GiveUp {
            self.stats.joins_given_up += 1;
            let at = self.now + JOIN_RETRY_MS;
            self.schedule(at, Ev::RetryJoin { node: id });
        }
    }

    // ----- global truth -------------------------------------------------------------------

    /// Sorted ids of the live nodes: the ring every node should converge to.
    pub fn truth(&self) -> Vec<Id> {
        self.alive_ids()
    }

    /// How far the ring is from the global truth.
    pub fn convergence(&self) -> Convergence {
        let ids = self.truth();
        let mut c = Convergence {
            nodes: ids.len(),
            ..Convergence::default()
        };
        let r = self.cfg.node.successor_list_len;
        for (i, id) in ids.iter().enumerate() {
            let node = self.nodes.get(id).expect("listed").peer.node();
            if !node.is_joined() {
                c.not_joined += 1;
                continue;
            }
            let ring = node.ring();
            let n = ids.len();
            let expected_succs: Vec<Id> = (1..n.min(r + 1)).map(|k| ids[(i + k) % n]).collect();
            let expected_succ = expected_succs.first().copied().unwrap_or(*id);
            if ring.successor() != expected_succ {
                c.wrong_successor += 1;
            }
            if ring.successors() != expected_succs.as_slice() {
                c.wrong_successor_list += 1;
            }
            let expected_pred = (n > 1).then(|| ids[(i + n - 1) % n]);
            if ring.predecessor() != expected_pred {
                c.wrong_predecessor += 1;
            }
            for f in 0..ring.finger_count() {
                let owner = successor_in(&ids, ring.finger_start(f)).expect("non-empty");
                let expected = (owner != *id).then_some(owner);
                if ring.finger(f) != expected {
                    c.wrong_fingers += 1;
                }
            }
        }
        c
    }

    /// The true owner of `key` among live nodes.
    pub fn true_owner(&self, key: Id) -> Option<Id> {
        successor_in(&self.truth(), key)
    }
}

/// How a batch of nodes joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPattern {
    /// One after another: each starts when the previous one is a member.
    Sequential,
    /// At uniformly random times within a window (concurrent joins).
    RandomTimes { window_ms: u64 },
    /// At random times, each second as many as `percent_per_sec` of the current ring (at least
    /// one): how a real network grows, and how the large experiments form their rings.
    Growth { percent_per_sec: u32 },
}

/// Distance of the ring from the truth (all zero = converged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Convergence {
    pub nodes: usize,
    pub not_joined: usize,
    pub wrong_successor: usize,
    pub wrong_successor_list: usize,
    pub wrong_predecessor: usize,
    pub wrong_fingers: usize,
}

impl Convergence {
    /// Every pointer (successor list, predecessor, fingers) matches the truth.
    pub fn is_converged(&self) -> bool {
        self.not_joined == 0
            && self.wrong_successor == 0
            && self.wrong_successor_list == 0
            && self.wrong_predecessor == 0
            && self.wrong_fingers == 0
    }

    /// Successors and predecessors match (fingers may still be refreshing).
    pub fn ring_is_correct(&self) -> bool {
        self.not_joined == 0 && self.wrong_successor == 0 && self.wrong_predecessor == 0
    }
}

/// The seed for a simulation test: `SIM_SEED` when set (replay), else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `"route/signal"`-style name of a frame's message kind, read off the JSON tags.
fn frame_kind(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let tag = |key: &str| {
        text.find(key).map(|i| {
            let rest = &text[i + key.len()..];
            rest.split('"').next().unwrap_or("").to_string()
        })
    };
    match (tag("\"t\":\""), tag("\"b\":\"")) {
        (Some(t), Some(b)) => format!("{t}/{b}"),
        (Some(t), None) => t,
        _ => "?".to_string(),
    }
}

/// Nodes by id: a vector in insertion order (deterministic iteration) with a hash index
/// (lookups on every frame; a B-tree of 16k nodes costs a cache miss per level).
#[derive(Debug, Default)]
struct NodeTable {
    /// Ids apart from the nodes, so that each node starts a cache line (`SimNode`).
    ids: Vec<Id>,
    slots: Vec<SimNode>,
    index: FastMap<Id, usize>,
}

impl NodeTable {
    fn get(&self, id: &Id) -> Option<&SimNode> {
        self.index.get(id).map(|i| &self.slots[*i])
    }

    fn get_mut(&mut self, id: &Id) -> Option<&mut SimNode> {
        self.index.get(id).map(|i| &mut self.slots[*i])
    }

    /// The slot of a node: stable for the node's lifetime (a restart reuses it).
    fn slot(&self, id: &Id) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn at(&self, slot: usize) -> &SimNode {
        &self.slots[slot]
    }

    fn at_mut(&mut self, slot: usize) -> &mut SimNode {
        &mut self.slots[slot]
    }

    fn contains_key(&self, id: &Id) -> bool {
        self.index.contains_key(id)
    }

    /// Inserts or replaces (a restart replaces the node in its slot).
    fn insert(&mut self, id: Id, node: SimNode) {
        match self.index.get(&id) {
            Some(i) => self.slots[*i] = node,
            None => {
                self.index.insert(id, self.slots.len());
                self.ids.push(id);
                self.slots.push(node);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Id, &SimNode)> {
        self.ids.iter().zip(&self.slots)
    }
}

/// A `HashMap` with a fixed multiplicative hash (FxHash's) instead of SipHash with a random key:
/// the simulator looks up its tables several times per event, and its keys (ids, op numbers)
/// are not chosen by an adversary. Nothing here depends on iteration order (every iteration
/// that reaches an output is sorted first), so the fixed hash changes no run.
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Debug, Default, Clone, Copy)]
struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // The multiply leaves the best-mixed bits on top; hashbrown indexes by the low bits.
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

fn history_ret(result: &Result<OpOutcome, OpError>) -> history::Ret {
    match result {
        Ok(OpOutcome::Stored { ts, .. }) => history::Ret::Stored { ts: *ts },
        Ok(OpOutcome::Found {
            value, ts, writer, ..
        }) => history::Ret::Found {
            value: value.clone(),
            ts: *ts,
            writer: writer.clone(),
        },
        Ok(OpOutcome::NotFound { .. }) => history::Ret::NotFound,
        Ok(other) => history::Ret::Failed {
            error: format!("unexpected outcome {other:?}"),
        },
        Err(e) => history::Ret::Failed {
            error: e.to_string(),
        },
    }
}
