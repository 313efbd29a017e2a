//! A hostile peer in the simulator (`chord-experiment --mode sim-hostile`,
//! `node-core/tests/hostile.rs`; threat model in docs/threat-model.md).
//!
//! One run ([`run`]): a ring of 8 peers forms. One peer, `H`, is hostile: its core runs the
//! protocol as usual (it stays a ring member and a replica), and on top of that, every
//! [`ATTACK_PERIOD_MS`], it sends well-formed frames of one [`Attack`] class to the peers it
//! holds links to (a peer can only send on its own links; everything inside a frame is chosen
//! by the attacker: claimed origins, ranges, timestamps, request ids, set lists, sizes). `H` is
//! a linked peer of the owner of the key `apple` outside that key's replica set, as in issue 11
//! ("8 peers, a forged Entries with ts u64::MAX-1 sent to a key's owner from one of its linked
//! peers outside the set"). The attacker reads the honest peers' state from the simulator
//! (ring pointers, clocks, request counters): it knows at least as much as a peer that watches
//! the traffic it relays.
//!
//! Meanwhile four clients put, delete and get three keys through honest peers only (so every
//! failure counts against the honest peers), the attack stops, the ring rests and every key is
//! read twice more; the history goes to [`super::history::check`] like `sim-history`'s.

use super::history::{self, Report};
use super::{JoinPattern, Sim, SimConfig};
use crate::Time;
use crate::election::ElectionMsg;
use crate::flood::{FloodMsg, QueryId};
use crate::id::Id;
use crate::merkle::{self, NodeHash, NodeRef, SummaryChunk, SyncHashes, SyncMsg};
use crate::rng::Rng;
use crate::store::{Entry, RingRange, Version, key_id};
use crate::wire::kv::{KvAction, KvMsg, KvReply, KvRequest, KvResult};
use crate::wire::{self, Body, Dest, Message, Routed};

/// How often the hostile peer sends one batch of its attack.
pub const ATTACK_PERIOD_MS: Time = 100;
/// Keys the clients use: `apple` (whose owner the hostile peer is linked to) and two more whose
/// replica sets exclude the hostile peer (see [`workload_keys`]).
const KEYS: [&str; 3] = ["apple", "banana", "cherry"];
const CLIENTS: usize = 4;
const WORKLOAD_MS: Time = 20_000;
const PEERS: usize = 8;

/// One attack class per row of `sim-hostile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    /// The hostile peer behaves: the baseline (and the cost of the checks).
    None,
    /// Issue 11's case: anti-entropy `Entries` for the owner's own range `(pred, owner]`,
    /// carrying the key with ts `u64::MAX - 1` (and, alternately, just above the owner's
    /// clock), from a linked peer outside the key's set.
    ForgedSync,
    /// `Entries` claiming to be the sender's own primary range (or a hand-back) with ranges
    /// stretched over other peers' keys and forged timestamps.
    SyncTheirs,
    /// `Replicate` of forged values to every linked peer, from a non-member.
    ForgedReplicate,
    /// `ReplicateAck`s for guessed request ids, direct and routed with a member's id as origin
    /// (fake quorums), half of them claiming a newer version (restamp storms).
    ForgedAcks,
    /// `ReadReply`s for guessed request ids with a forged newer value, direct and routed with
    /// a member's id as origin.
    ForgedReadReply,
    /// `Election`s and `Coordinator`s naming sets of hundreds of ids (amplification, an
    /// unbounded table of running elections, leader cache churn).
    ElectionFlood,
    /// Client requests that carry a `set` of hundreds of ids (the receiver coordinating with
    /// whatever set it is handed).
    KvSetFlood,
    /// Anti-entropy work bombs: openings with a zero root, `Summaries` of 1024 root chunks,
    /// `Want`s of thousands of keys.
    MerkleBomb,
    /// Routed messages claiming other peers' ids as origin with the attacker as `origin_via`
    /// (planting routing hints), forged `KvReply`s and `FoundSuccessor`s for guessed op ids.
    RoutingHints,
    /// Random well-formed messages of every kind with random fields, except the two below.
    Garbage,
    /// A "hand-back" of forged entries over nearly the whole ring from the receiver's
    /// successor. Only the receiver's own primary range is taken, whose set the successor is
    /// a member of; keys behind it go back through their leader as the stand-in's strays
    /// (`node/sync.rs`), so a successor outside a set cannot write into it.
    ForgedHandBack,
    /// Ring-maintenance lies: `Leaving` with forged neighbours (and `Neighbors` answers). A
    /// hostile ring neighbour can misreport the ring; chord-kv does not defend against that
    /// (docs/threat-model.md), and this row shows what it costs.
    RingLies,
}

impl Attack {
    pub const ALL: [Self; 13] = [
        Self::None,
        Self::ForgedSync,
        Self::SyncTheirs,
        Self::ForgedReplicate,
        Self::ForgedAcks,
        Self::ForgedReadReply,
        Self::ElectionFlood,
        Self::KvSetFlood,
        Self::MerkleBomb,
        Self::RoutingHints,
        Self::Garbage,
        Self::ForgedHandBack,
        Self::RingLies,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ForgedSync => "forged-sync",
            Self::SyncTheirs => "sync-theirs",
            Self::ForgedReplicate => "forged-replicate",
            Self::ForgedAcks => "forged-acks",
            Self::ForgedReadReply => "forged-read-reply",
            Self::ElectionFlood => "election-flood",
            Self::KvSetFlood => "kv-set-flood",
            Self::MerkleBomb => "merkle-bomb",
            Self::RoutingHints => "routing-hints",
            Self::Garbage => "garbage",
            Self::ForgedHandBack => "forged-hand-back",
            Self::RingLies => "ring-lies",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What one run saw.
#[derive(Debug, Clone)]
pub struct HostileRun {
    pub attack: Attack,
    pub seed: u64,
    pub hostile: Id,
    pub report: Report,
    pub history: history::History,
    /// Attack frames the hostile peer sent.
    pub attack_frames: u64,
    /// Frames and bytes the honest peers sent during the run.
    pub honest_frames_out: u64,
    pub honest_bytes_out: u64,
    /// Largest store (keys) of an honest peer at the end (the workload writes 3 keys).
    pub max_store_keys: usize,
    /// Honest peers whose Lamport clock passed 2^62 (a clock pushed toward saturation).
    pub clocks_pushed: usize,
    /// Sum over the honest peers of the mean put / get latency (ms) and the puts measured.
    pub put_latency_ms_sum: f64,
    pub get_latency_ms_sum: f64,
    pub puts: u64,
    pub gets: u64,
    /// Frames the honest peers refused as unauthorized or out of bounds.
    pub refused: u64,
}

impl HostileRun {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p lab --bin chord-experiment -- --mode sim-hostile \
             --attacks {} --seed {} --seeds 1 --verbose",
            self.attack.name(),
            self.seed
        )
    }
}

struct Client {
    peer: Option<Id>,
    pending: Option<usize>,
    next_at: Time,
}

/// Runs one seed of one attack class and checks the honest clients' history.
pub fn run(attack: Attack, seed: u64) -> HostileRun {
    let mut sim = Sim::new(SimConfig::new(seed));
    let mut rng = Rng::new(seed ^ 0x4057_11E0);
    sim.join_nodes(PEERS, JoinPattern::Sequential);
    sim.run_until_converged(120_000);

    // The hostile peer: linked to the owner of `apple`, outside the key's replica set.
    let truth = sim.truth();
    let owner = sim.true_owner(Id(key_id(KEYS[0]))).expect("a ring");
    let at = truth.iter().position(|p| *p == owner).expect("owner alive");
    let set: Vec<Id> = (0..3).map(|i| truth[(at + i) % truth.len()]).collect();
    let candidates: Vec<Id> = sim
        .linked_peers(owner)
        .into_iter()
        .filter(|p| !set.contains(p))
        .collect();
    let hostile = if candidates.is_empty() {
        truth[(at + truth.len() - 1) % truth.len()] // the owner's predecessor
    } else {
        candidates[rng.below(candidates.len() as u64) as usize]
    };

    let keys = workload_keys(&sim, hostile);
    let honest_out = |sim: &Sim| -> (u64, u64) {
        sim.alive_ids()
            .into_iter()
            .filter(|p| *p != hostile)
            .filter_map(|p| sim.node(p).map(|n| n.metrics().chord))
            .fold((0, 0), |(f, b), c| (f + c.frames_out, b + c.bytes_out))
    };
    let (frames_before, bytes_before) = honest_out(&sim);

    let start = sim.now();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            peer: None,
            pending: None,
            next_at: start,
        })
        .collect();
    let mut serial = 0u64;
    let mut attack_frames = 0u64;
    let mut next_attack = start + 500;
    while sim.now() < start + WORKLOAD_MS {
        if sim.now() >= next_attack {
            next_attack += ATTACK_PERIOD_MS;
            attack_frames += attack_step(&mut sim, &mut rng, attack, hostile, &keys);
        }
        for client in &mut clients {
            step_client(&mut sim, &mut rng, client, &mut serial, hostile, &keys);
        }
        sim.run_for(5);
    }
    // The attack stops; calls in flight finish; repair runs; then every key is read twice.
    sim.run_for(sim.config().node.op_timeout_ms + 1_000);
    sim.run_for(20_000);
    for key in &keys {
        for _ in 0..2 {
            let ids = honest_ids(&sim, hostile);
            let at = ids[rng.below(ids.len() as u64) as usize];
            if let Some(index) = sim.client_get(at, key) {
                let deadline = sim.now() + sim.config().node.op_timeout_ms + 1_000;
                while !sim.history().is_complete(index) && sim.now() < deadline {
                    sim.run_for(5);
                }
            }
        }
    }
    let (frames_after, bytes_after) = honest_out(&sim);
    let honest: Vec<Id> = honest_ids(&sim, hostile);
    let mut run = HostileRun {
        attack,
        seed,
        hostile,
        report: history::check(sim.history()),
        history: sim.history().clone(),
        attack_frames,
        honest_frames_out: frames_after - frames_before,
        honest_bytes_out: bytes_after - bytes_before,
        max_store_keys: 0,
        clocks_pushed: 0,
        put_latency_ms_sum: 0.0,
        get_latency_ms_sum: 0.0,
        puts: 0,
        gets: 0,
        refused: 0,
    };
    for p in honest {
        let Some(node) = sim.node(p) else { continue };
        let m = node.metrics();
        run.max_store_keys = run.max_store_keys.max(node.store().len());
        run.clocks_pushed += usize::from(node.lamport() > 1 << 62);
        run.put_latency_ms_sum += m.kv.put_latency_ms.mean() * m.kv.put_latency_ms.total() as f64;
        run.get_latency_ms_sum += m.kv.get_latency_ms.mean() * m.kv.get_latency_ms.total() as f64;
        run.puts += m.kv.put_latency_ms.total();
        run.gets += m.kv.get_latency_ms.total();
        run.refused += refused_total(&m);
    }
    run
}

/// Every frame an honest peer refused as unauthorized or out of bounds.
fn refused_total(m: &crate::metrics::Metrics) -> u64 {
    m.kv.anti_entropy_refused + m.kv.rejected_entries + m.chord.unexpected_messages
}

fn honest_ids(sim: &Sim, hostile: Id) -> Vec<Id> {
    sim.alive_ids()
        .into_iter()
        .filter(|p| *p != hostile && sim.node(*p).is_some_and(|n| n.is_joined()))
        .collect()
}

/// The replica set (owner and its next two) of `key` in the true ring.
fn true_set(sim: &Sim, key: &str) -> Vec<Id> {
    let truth = sim.truth();
    let owner = sim.true_owner(Id(key_id(key))).expect("a ring");
    let at = truth.iter().position(|p| *p == owner).expect("owner alive");
    (0..3.min(truth.len()))
        .map(|i| truth[(at + i) % truth.len()])
        .collect()
}

/// `apple` and the first two of `banana`, `cherry`, `k1`, `k2`, ... whose replica sets exclude
/// the hostile peer. The promise is about keys whose set holds no hostile peer: a hostile
/// member can always store a forged value or acknowledge without storing (docs/threat-model.md).
pub fn workload_keys(sim: &Sim, hostile: Id) -> Vec<String> {
    let mut keys = vec![KEYS[0].to_string()];
    let more = KEYS[1..]
        .iter()
        .map(|k| k.to_string())
        .chain((1..1_000).map(|i| format!("k{i}")));
    for key in more {
        if keys.len() == 3 {
            break;
        }
        if !true_set(sim, &key).contains(&hostile) {
            keys.push(key);
        }
    }
    keys
}

fn step_client(
    sim: &mut Sim,
    rng: &mut Rng,
    client: &mut Client,
    serial: &mut u64,
    hostile: Id,
    keys: &[String],
) {
    if let Some(index) = client.pending {
        if !sim.history().is_complete(index) {
            return;
        }
        client.pending = None;
        client.next_at = sim.now() + rng.below(100);
    }
    if sim.now() < client.next_at {
        return;
    }
    let peer = match client.peer {
        Some(p) => p,
        None => {
            let ids = honest_ids(sim, hostile);
            let p = ids[rng.below(ids.len() as u64) as usize];
            client.peer = Some(p);
            p
        }
    };
    if rng.chance(0.1) {
        client.peer = None;
    }
    let key = keys[rng.below(keys.len() as u64) as usize].as_str();
    let dice = rng.below(100);
    client.pending = if dice < 45 {
        *serial += 1;
        sim.client_put(peer, key, &format!("v{serial}"))
    } else if dice < 55 {
        sim.client_delete(peer, key)
    } else {
        sim.client_get(peer, key)
    };
}

/// What the attacker knows of one honest peer.
struct View {
    id: Id,
    pred: Option<Id>,
    succs: Vec<Id>,
    lamport: u64,
    next_req: u64,
    next_op: u64,
}

fn view(sim: &Sim, id: Id) -> Option<View> {
    let n = sim.node(id)?;
    Some(View {
        id,
        pred: n.ring().predecessor(),
        succs: n.ring().successors().to_vec(),
        lamport: n.lamport(),
        next_req: n.repl.requests_issued(),
        next_op: n.next_op,
    })
}

fn send(sim: &mut Sim, from: Id, to: Id, message: &Message) -> u64 {
    match wire::encode(message) {
        Some(bytes) => u64::from(sim.inject(from, to, bytes)),
        None => 0,
    }
}

fn routed(dest: Dest, origin: Id, origin_via: Option<Id>, body: Body) -> Message {
    Message::Route(Routed {
        dest,
        origin,
        origin_via,
        hops: 1,
        body,
    })
}

/// A forged timestamp: the ceiling every other time, else just ahead of the victim's clock
/// (inside any jump bound, so only authorization can refuse it).
fn forged_ts(rng: &mut Rng, victim: &View) -> u64 {
    if rng.chance(0.5) {
        u64::MAX - 1
    } else {
        victim.lamport.saturating_add(1_000 + rng.below(1_000))
    }
}

fn forged_entries(
    rng: &mut Rng,
    victim: &View,
    range: RingRange,
    keys: &[String],
) -> Vec<(String, Entry)> {
    keys.iter()
        .filter(|k| range.contains(key_id(k)))
        .map(|k| {
            let ts = forged_ts(rng, victim);
            (
                k.to_string(),
                Entry::live(format!("forged-{ts}"), ts, "evil"),
            )
        })
        .collect()
}

fn entries_msg(range: RingRange, entries: Vec<(String, Entry)>) -> Message {
    Message::Sync(SyncMsg::Entries {
        range,
        depth: merkle::DEFAULT_DEPTH,
        entries,
    })
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<Id> {
    (0..n).map(|_| Id(rng.next_u32())).collect()
}

/// The replica set (owner and two successors) of a key in the victim's view, as the owner
/// would name it.
fn set_seen_by(owner: &View) -> Vec<Id> {
    let mut set: Vec<Id> = std::iter::once(owner.id)
        .chain(owner.succs.iter().copied())
        .take(3)
        .collect();
    set.sort_unstable();
    set
}

/// One batch of `attack` from `h`; returns the frames sent.
fn attack_step(sim: &mut Sim, rng: &mut Rng, attack: Attack, h: Id, keys: &[String]) -> u64 {
    let linked: Vec<Id> = sim.linked_peers(h);
    let mut sent = 0;
    let owner = sim.true_owner(Id(key_id(&keys[0])));
    match attack {
        Attack::None => {}
        Attack::ForgedSync => {
            if let Some(o) = owner.and_then(|o| view(sim, o))
                && let Some(pred) = o.pred
            {
                let range = RingRange::new(pred.0, o.id.0);
                let ts = forged_ts(rng, &o);
                let entries = vec![(
                    keys[0].clone(),
                    Entry::live(format!("forged-{ts}"), ts, "evil"),
                )];
                sent += send(sim, h, o.id, &entries_msg(range, entries));
            }
        }
        Attack::SyncTheirs => {
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                let mut ranges = vec![
                    RingRange::new(p.0, h.0),
                    RingRange::new(h.0.wrapping_sub(1 << 30), h.0),
                ];
                if let Some(pred) = v.pred {
                    ranges.push(RingRange::new(pred.0, p.0));
                }
                for range in ranges {
                    let entries = forged_entries(rng, &v, range, keys);
                    if !entries.is_empty() {
                        sent += send(sim, h, p, &entries_msg(range, entries));
                    }
                }
            }
        }
        Attack::ForgedHandBack => {
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                let range = RingRange::new(p.0.wrapping_add(1), p.0);
                let entries = forged_entries(rng, &v, range, keys);
                if !entries.is_empty() {
                    sent += send(sim, h, p, &entries_msg(range, entries));
                }
            }
        }
        Attack::ForgedReplicate => {
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                for key in keys {
                    let ts = forged_ts(rng, &v);
                    let msg = KvMsg::Replicate {
                        req: rng.below(1_000),
                        key: key.to_string(),
                        entry: Entry::live(format!("forged-{ts}"), ts, "evil"),
                        wid: None,
                    };
                    sent += send(sim, h, p, &Message::Kv(msg));
                }
            }
        }
        Attack::ForgedAcks | Attack::ForgedReadReply => {
            // Every key's set as its owner sees it; the forged answers go to every member
            // (one of them leads), claiming each other member as origin.
            for key in keys {
                let Some(o) = sim.true_owner(Id(key_id(key))).and_then(|o| view(sim, o)) else {
                    continue;
                };
                let set = set_seen_by(&o);
                for &leader in &set {
                    let Some(l) = view(sim, leader) else { continue };
                    let hop = linked.first().copied().unwrap_or(leader);
                    for req in l.next_req.saturating_sub(2)..l.next_req + 6 {
                        let msg = if attack == Attack::ForgedAcks {
                            KvMsg::ReplicateAck {
                                req,
                                newer: rng.chance(0.5).then(|| l.lamport + 10),
                                fresh: false,
                            }
                        } else {
                            let ts = l.lamport + 1_000;
                            KvMsg::ReadReply {
                                req,
                                entry: Some(Entry::live(format!("forged-{ts}"), ts, "evil")),
                                fresh: false,
                            }
                        };
                        if linked.contains(&leader) {
                            sent += send(sim, h, leader, &Message::Kv(msg.clone()));
                        }
                        for &member in set.iter().filter(|m| **m != leader) {
                            let m = routed(
                                Dest::Peer {
                                    id: leader,
                                    via: None,
                                },
                                member,
                                None,
                                Body::KvDirect(msg.clone()),
                            );
                            let to = if linked.contains(&leader) {
                                leader
                            } else {
                                hop
                            };
                            sent += send(sim, h, to, &m);
                        }
                    }
                }
            }
        }
        Attack::ElectionFlood => {
            for p in linked {
                let mut set = random_ids(rng, 400);
                set.push(p);
                set.push(h);
                let msg = if h < p {
                    ElectionMsg::Election { set }
                } else {
                    ElectionMsg::Coordinator { set, leader: h }
                };
                sent += send(sim, h, p, &Message::Election(msg));
                // Many small sets too: the table of running elections and the leader cache.
                for _ in 0..20 {
                    let mut set = random_ids(rng, 1);
                    set.push(p);
                    set.push(h);
                    let msg = if h < p {
                        ElectionMsg::Election { set }
                    } else {
                        ElectionMsg::Coordinator { set, leader: h }
                    };
                    sent += send(sim, h, p, &Message::Election(msg));
                }
            }
        }
        Attack::KvSetFlood => {
            for p in linked {
                let mut set = random_ids(rng, 300);
                set.push(p);
                let request = KvRequest {
                    op: rng.next_u64(),
                    key: keys[rng.below(keys.len() as u64) as usize].clone(),
                    action: KvAction::Get,
                    set,
                    unsettled: Vec::new(),
                };
                let m = routed(Dest::Peer { id: p, via: None }, h, None, Body::Kv(request));
                sent += send(sim, h, p, &m);
            }
        }
        // Every fifth batch: each bomb is a ~40 KB frame, and the point is the work per frame.
        Attack::MerkleBomb if rng.below(5) == 0 => {
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                let mut ranges = vec![RingRange::new(p.0, h.0)];
                if let Some(pred) = v.pred {
                    ranges.push(RingRange::new(pred.0, p.0));
                }
                for range in ranges {
                    let depth = merkle::DEFAULT_DEPTH;
                    let zero = Message::Sync(SyncMsg::Hashes(SyncHashes {
                        range,
                        depth,
                        nodes: vec![NodeHash {
                            node: NodeRef::ROOT,
                            hash: merkle::Digest::ZERO,
                        }],
                    }));
                    sent += send(sim, h, p, &zero);
                    let chunks: Vec<SummaryChunk> = (0..1024)
                        .map(|_| SummaryChunk {
                            node: NodeRef::ROOT,
                            after: None,
                            through: None,
                            items: Vec::new(),
                        })
                        .collect();
                    let bomb = Message::Sync(SyncMsg::Summaries {
                        range,
                        depth,
                        chunks,
                    });
                    sent += send(sim, h, p, &bomb);
                    let keys: Vec<String> =
                        (0..4000).map(|i| format!("{}{i}", keys[i % 3])).collect();
                    let want = Message::Sync(SyncMsg::Want { range, depth, keys });
                    sent += send(sim, h, p, &want);
                }
            }
        }
        Attack::RoutingHints => {
            let honest: Vec<Id> = sim.alive_ids().into_iter().filter(|p| *p != h).collect();
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                let claimed = honest[rng.below(honest.len() as u64) as usize];
                let m = routed(
                    Dest::Owner {
                        key: Id(rng.next_u32()),
                    },
                    claimed,
                    Some(h),
                    Body::FindSuccessor { op: rng.next_u64() },
                );
                sent += send(sim, h, p, &m);
                // Forged answers to the peer's own operations (op ids guessed from its counter).
                for op in v.next_op.saturating_sub(4)..v.next_op + 4 {
                    let ts = v.lamport + 1_000;
                    let reply = routed(
                        Dest::Peer { id: p, via: None },
                        claimed,
                        None,
                        Body::KvReply(KvReply {
                            op,
                            result: KvResult::Found {
                                value: format!("forged-{ts}"),
                                ts,
                                writer: "evil".to_string(),
                            },
                            hops: 1,
                        }),
                    );
                    sent += send(sim, h, p, &reply);
                    let found = routed(
                        Dest::Peer { id: p, via: None },
                        claimed,
                        None,
                        Body::FoundSuccessor {
                            op,
                            owner: h,
                            hops: 1,
                        },
                    );
                    sent += send(sim, h, p, &found);
                }
            }
        }
        Attack::MerkleBomb => {}
        Attack::Garbage | Attack::RingLies => {
            for p in linked {
                let Some(v) = view(sim, p) else { continue };
                for _ in 0..4 {
                    let kind = if attack == Attack::RingLies {
                        RING_LIES[rng.below(RING_LIES.len() as u64) as usize]
                    } else {
                        loop {
                            let kind = rng.below(MESSAGE_KINDS);
                            if !RING_LIES.contains(&kind) {
                                break kind;
                            }
                        }
                    };
                    let m = random_message_of(kind, rng, v.id, v.pred, v.lamport);
                    // Forged hand-backs (entries for a range ending at the victim) have a row
                    // of their own: not defended from the victim's successor.
                    if attack == Attack::Garbage
                        && matches!(&m, Message::Sync(SyncMsg::Entries { range, .. }) if range.to == v.id.0)
                    {
                        continue;
                    }
                    sent += send(sim, h, p, &m);
                }
            }
        }
    }
    sent
}

/// Message kinds [`random_message`] draws from (every variant of [`Message`], routed bodies
/// and replica / election / sync / flood messages counted separately).
pub const MESSAGE_KINDS: u64 = 35;

/// A random well-formed message of kind `kind % MESSAGE_KINDS`, with fields drawn near the
/// victim's view (its id, predecessor, clock) or anywhere, for the garbage attack and the
/// property tests over every message kind (`node-core/tests/fuzz_frames.rs`).
pub fn random_message_of(
    kind: u64,
    rng: &mut Rng,
    victim: Id,
    pred: Option<Id>,
    lamport: u64,
) -> Message {
    let id = |rng: &mut Rng| match rng.below(4) {
        0 => victim,
        1 => pred.unwrap_or(victim),
        _ => Id(rng.next_u32()),
    };
    let ids = |rng: &mut Rng| {
        let n = match rng.below(3) {
            0 => 0,
            1 => rng.below(4) as usize,
            _ => rng.below(40) as usize,
        };
        (0..n).map(|_| id(rng)).collect::<Vec<Id>>()
    };
    let ts = |rng: &mut Rng| match rng.below(4) {
        0 => u64::MAX - rng.below(2),
        1 => lamport.saturating_add(rng.below(1 << 41)),
        2 => rng.next_u64(),
        _ => rng.below(100),
    };
    let key = |rng: &mut Rng| match rng.below(3) {
        0 => KEYS[rng.below(3) as usize].to_string(),
        1 => format!("k{}", rng.below(1_000)),
        _ => String::new(),
    };
    let entry = |rng: &mut Rng| {
        let t = ts(rng);
        if rng.chance(0.2) {
            Entry::tombstone(t, "evil")
        } else {
            Entry::live(format!("x{t}"), t, "evil")
        }
    };
    let range = |rng: &mut Rng| RingRange::new(id(rng).0, id(rng).0);
    let depth = |rng: &mut Rng| {
        if rng.chance(0.8) {
            merkle::DEFAULT_DEPTH
        } else {
            rng.below(40) as u8
        }
    };
    let node = |rng: &mut Rng| {
        let level = rng.below(14) as u8;
        NodeRef::new(
            level,
            rng.next_u32() >> (32 - u32::from(level.min(31)).max(1)),
        )
    };
    let digest = |rng: &mut Rng| {
        if rng.chance(0.3) {
            merkle::Digest::ZERO
        } else {
            merkle::Digest::from_bytes(rng.next_u128().to_be_bytes())
        }
    };
    let nonce = rng.next_u64();
    let kv = |rng: &mut Rng, k: u64| match k {
        0 => KvMsg::Replicate {
            req: rng.below(64),
            key: key(rng),
            entry: entry(rng),
            wid: rng.chance(0.5).then(|| (id(rng), rng.below(64))),
        },
        1 => KvMsg::ReplicateAck {
            req: rng.below(64),
            newer: rng.chance(0.5).then(|| ts(rng)),
            fresh: rng.chance(0.5),
        },
        2 => KvMsg::Read {
            req: rng.below(64),
            key: key(rng),
        },
        3 => KvMsg::ReadReply {
            req: rng.below(64),
            entry: rng.chance(0.8).then(|| entry(rng)),
            fresh: rng.chance(0.5),
        },
        _ => KvMsg::Collect {
            entries: (0..rng.below(40))
                .map(|_| (key(rng), Version::new(ts(rng), "evil")))
                .collect(),
        },
    };
    let election = |rng: &mut Rng, k: u64| match k {
        0 => ElectionMsg::Election { set: ids(rng) },
        1 => ElectionMsg::Answer { set: ids(rng) },
        _ => ElectionMsg::Coordinator {
            set: ids(rng),
            leader: id(rng),
        },
    };
    let dest = |rng: &mut Rng| {
        if rng.chance(0.5) {
            Dest::Owner { key: id(rng) }
        } else {
            Dest::Peer {
                id: id(rng),
                via: rng.chance(0.3).then(|| id(rng)),
            }
        }
    };
    let route = |rng: &mut Rng, body: Body| {
        Message::Route(Routed {
            dest: dest(rng),
            origin: id(rng),
            origin_via: rng.chance(0.3).then(|| id(rng)),
            hops: rng.below(60) as u8,
            body,
        })
    };
    match kind % MESSAGE_KINDS {
        0 => Message::Hello {
            joined: rng.chance(0.5),
        },
        1 => Message::Ping { nonce },
        2 => Message::Pong { nonce },
        3 => Message::GetNeighbors {
            nonce,
            clock: ts(rng),
        },
        4 => Message::Neighbors {
            nonce,
            pred: rng.chance(0.7).then(|| id(rng)),
            succs: ids(rng).into_iter().take(32).collect(),
            preds: ids(rng).into_iter().take(32).collect(),
            clock: ts(rng),
            fence: rng.chance(0.3).then(|| (id(rng), ts(rng))),
        },
        5 => Message::Notify,
        6 => Message::Leaving {
            pred: rng.chance(0.7).then(|| id(rng)),
            succs: ids(rng).into_iter().take(32).collect(),
        },
        7 => Message::Bye,
        8 => Message::Keep,
        9 => Message::Close,
        10..=14 => Message::Kv(kv(rng, kind % MESSAGE_KINDS - 10)),
        15..=17 => Message::Election(election(rng, kind % MESSAGE_KINDS - 15)),
        18 => Message::Flood(if rng.chance(0.5) {
            FloodMsg::Query {
                id: QueryId(rng.next_u128()),
                key: key(rng),
                ttl: rng.below(20) as u8,
                hops: rng.below(20) as u8,
            }
        } else {
            FloodMsg::Hit {
                id: QueryId(rng.next_u128()),
                holder: id(rng),
                hops: rng.below(20) as u8,
            }
        }),
        19 => Message::Sync(SyncMsg::Hashes(SyncHashes {
            range: range(rng),
            depth: depth(rng),
            nodes: (0..rng.below(64))
                .map(|_| NodeHash {
                    node: node(rng),
                    hash: digest(rng),
                })
                .collect(),
        })),
        20 => Message::Sync(SyncMsg::Equal {
            range: range(rng),
            depth: depth(rng),
        }),
        21 => Message::Sync(SyncMsg::Summaries {
            range: range(rng),
            depth: depth(rng),
            chunks: (0..rng.below(64))
                .map(|_| SummaryChunk {
                    node: node(rng),
                    after: rng.chance(0.2).then(|| key(rng)),
                    through: rng.chance(0.2).then(|| key(rng)),
                    items: (0..rng.below(4))
                        .map(|_| merkle::SummaryItem {
                            key: key(rng),
                            version: Version::new(ts(rng), "evil"),
                            digest: digest(rng),
                        })
                        .collect(),
                })
                .collect(),
        }),
        22 => Message::Sync(SyncMsg::Entries {
            range: range(rng),
            depth: depth(rng),
            entries: (0..rng.below(8)).map(|_| (key(rng), entry(rng))).collect(),
        }),
        23 => Message::Sync(SyncMsg::Want {
            range: range(rng),
            depth: depth(rng),
            keys: (0..rng.below(64)).map(|_| key(rng)).collect(),
        }),
        24 => {
            let body = Body::FindSuccessor {
                op: rng.below(1 << 20),
            };
            route(rng, body)
        }
        25 => {
            let body = Body::FoundSuccessor {
                op: rng.next_u64(),
                owner: id(rng),
                hops: rng.below(60) as u8,
            };
            route(rng, body)
        }
        26 => route(
            rng,
            Body::Signal {
                payload: "offer".to_string(),
            },
        ),
        27 => {
            // A hostile peer may write as a client through any path: its requests use keys no
            // honest client writes, so the checker does not take them for phantom values.
            let body = Body::Kv(KvRequest {
                op: rng.next_u64(),
                key: format!("evil-{}", rng.below(1_000)),
                action: match rng.below(3) {
                    0 => KvAction::Get,
                    1 => KvAction::Delete {
                        writer: "evil".to_string(),
                    },
                    _ => KvAction::Put {
                        value: "evil".to_string(),
                        writer: "evil".to_string(),
                    },
                },
                set: ids(rng),
                unsettled: ids(rng),
            });
            route(rng, body)
        }
        28 => {
            let t = ts(rng);
            let body = Body::KvReply(KvReply {
                op: rng.next_u64(),
                result: match rng.below(4) {
                    0 => KvResult::Stored { ts: t },
                    1 => KvResult::NotFound,
                    2 => KvResult::Failed {
                        reason: "evil".to_string(),
                    },
                    _ => KvResult::Found {
                        value: "evil".to_string(),
                        ts: t,
                        writer: "evil".to_string(),
                    },
                },
                hops: 1,
            });
            route(rng, body)
        }
        29 => {
            let k = rng.below(5);
            let body = Body::KvDirect(kv(rng, k));
            route(rng, body)
        }
        30 => {
            let k = rng.below(3);
            let body = Body::Election(election(rng, k));
            route(rng, body)
        }
        31 => {
            let body = Body::GetView { op: rng.next_u64() };
            route(rng, body)
        }
        33 => Message::GetPreds { nonce },
        34 => Message::Preds {
            nonce,
            preds: ids(rng).into_iter().take(32).collect(),
        },
        _ => {
            let body = Body::View {
                op: rng.next_u64(),
                predecessor: rng.chance(0.5).then(|| id(rng)),
                successors: ids(rng).into_iter().take(32).collect(),
                hops: 1,
                // Display text the receiver must bound: sometimes far over the limit, with
                // control characters.
                agent: if rng.chance(0.5) {
                    "\u{202E}native\n".repeat(rng.below(2_000) as usize)
                } else {
                    String::new()
                },
            };
            route(rng, body)
        }
    }
}

/// The kinds of [`random_message_of`] that are ring-maintenance lies (`Neighbors`, `Leaving`,
/// `Preds`).
const RING_LIES: [u64; 3] = [4, 6, 34];

/// One row of `--mode sim-hostile`: an attack class over many seeds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HostileRow {
    pub attack: String,
    pub seeds: u64,
    pub ops: u64,
    pub acked_writes: u64,
    pub acked_writes_lost: u64,
    /// Violations of the promise (stale reads, reads going backwards, phantom values: a
    /// forged value read back is a phantom read).
    pub anomalies: u64,
    /// Honest client calls that failed or never returned (clients use honest peers only).
    pub failed_ops: u64,
    pub attack_frames: u64,
    /// Frames and bytes the honest peers sent per seed (amplification shows here).
    pub honest_frames_per_seed: f64,
    pub honest_bytes_per_seed: f64,
    /// Honest frames and bytes per acknowledged write (the cost of a put, all traffic
    /// included: with `none` it is the baseline cost).
    pub frames_per_acked_write: f64,
    pub bytes_per_acked_write: f64,
    pub mean_put_latency_ms: f64,
    pub mean_get_latency_ms: f64,
    /// Largest honest store (keys) seen in any seed (the workload writes 3).
    pub max_store_keys: usize,
    /// Honest peers (summed over seeds) whose clock passed 2^62.
    pub clocks_pushed: u64,
    /// Frames the honest peers refused (unauthorized, out of bounds, rate limited).
    pub refused: u64,
    pub failing_seeds: Vec<u64>,
    #[serde(skip)]
    gets: u64,
    #[serde(skip)]
    puts: u64,
    #[serde(skip)]
    put_ms: f64,
    #[serde(skip)]
    get_ms: f64,
    #[serde(skip)]
    frames: u64,
    #[serde(skip)]
    bytes: u64,
}

impl HostileRow {
    pub fn new(attack: Attack) -> Self {
        Self {
            attack: attack.name().to_string(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, run: &HostileRun) {
        self.seeds += 1;
        self.ops += run.report.ops as u64;
        self.acked_writes += run.report.acked_writes as u64;
        self.acked_writes_lost += run.report.acked_writes_lost as u64;
        self.anomalies += run.report.anomalies.len() as u64;
        self.failed_ops += run
            .history
            .ops()
            .iter()
            .filter(|op| matches!(op.ret, history::Ret::Failed { .. } | history::Ret::Unknown))
            .count() as u64;
        self.attack_frames += run.attack_frames;
        self.frames += run.honest_frames_out;
        self.bytes += run.honest_bytes_out;
        self.max_store_keys = self.max_store_keys.max(run.max_store_keys);
        self.clocks_pushed += run.clocks_pushed as u64;
        self.refused += run.refused;
        self.puts += run.puts;
        self.put_ms += run.put_latency_ms_sum;
        self.get_ms += run.get_latency_ms_sum;
        self.gets += run.gets;
        let seeds = self.seeds as f64;
        self.honest_frames_per_seed = self.frames as f64 / seeds;
        self.honest_bytes_per_seed = self.bytes as f64 / seeds;
        let acked = self.acked_writes.max(1) as f64;
        self.frames_per_acked_write = self.frames as f64 / acked;
        self.bytes_per_acked_write = self.bytes as f64 / acked;
        self.mean_put_latency_ms = self.put_ms / self.puts.max(1) as f64;
        self.mean_get_latency_ms = self.get_ms / self.gets.max(1) as f64;
        if !run.report.holds() || run.clocks_pushed > 0 {
            self.failing_seeds.push(run.seed);
        }
    }
}
