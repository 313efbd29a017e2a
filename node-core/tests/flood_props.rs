//! Gnutella flooding over random graphs of 20-200 peers, driven by a tiny in-test event loop:
//! no peer processes a query twice, a query never outlives its TTL, a TTL as large as the graph's
//! diameter finds every holder, TTL 1 asks only the direct neighbours, and garbage is counted,
//! never a panic. A failing case prints its seed (proptest also shrinks and persists it).

use node_core::Id;
use node_core::flood::{FloodConfig, FloodMsg, FloodResult, FloodStats, Flooder, QueryId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const KEY: &str = "the-key";
const TIMEOUT_MS: u64 = 3000;

/// splitmix64: the test's only randomness, so a seed names a whole case.
struct TestRng(u64);

impl TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// How the loop picks the next message in flight.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// Global first-in-first-out: the flood advances one BFS level at a time.
    Fifo,
    /// Any message in flight, chosen by the seeded RNG (arbitrary reordering across links).
    Shuffled,
}

/// One Query reception as the loop saw it.
#[derive(Debug)]
struct QueryDelivery {
    to: usize,
    id: QueryId,
    ttl: u8,
    hops: u8,
    /// The peer processed it (rather than dropping it as a duplicate or as garbage).
    processed: bool,
}

/// A random connected graph of peers with random ids, each running a `Flooder`.
struct Net {
    seed: u64,
    ids: Vec<Id>,
    index: BTreeMap<Id, usize>,
    neighbors: Vec<Vec<Id>>,
    flooders: Vec<Flooder>,
    holders: BTreeSet<usize>,
    rng: TestRng,
    in_flight: VecDeque<(usize, usize, FloodMsg)>,
    queries: Vec<QueryDelivery>,
    hits_delivered: u64,
}

impl Net {
    /// `n` peers: a random recursive tree (so the graph is connected) plus up to `2n` random
    /// extra edges; each peer holds the key with probability `holder_percent`.
    fn random(seed: u64, n: usize, holder_percent: u64, config: FloodConfig) -> Self {
        let mut rng = TestRng(seed);
        let mut ids = BTreeSet::new();
        while ids.len() < n {
            ids.insert(Id(rng.next_u64() as u32));
        }
        // Shuffle so that index order and id order differ.
        let mut ids: Vec<Id> = ids.into_iter().collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        let mut edges = BTreeSet::new();
        for i in 1..n {
            let j = rng.below(i);
            edges.insert((j, i));
        }
        for _ in 0..rng.below(2 * n + 1) {
            let (a, b) = (rng.below(n), rng.below(n));
            if a != b {
                edges.insert((a.min(b), a.max(b)));
            }
        }
        let mut neighbors = vec![Vec::new(); n];
        for &(a, b) in &edges {
            neighbors[a].push(ids[b]);
            neighbors[b].push(ids[a]);
        }
        let holders = (0..n).filter(|_| rng.chance(holder_percent)).collect();
        Self {
            seed,
            index: ids.iter().enumerate().map(|(i, &id)| (id, i)).collect(),
            ids,
            neighbors,
            flooders: (0..n).map(|_| Flooder::new(config)).collect(),
            holders,
            rng,
            in_flight: VecDeque::new(),
            queries: Vec::new(),
            hits_delivered: 0,
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Link distance from `origin` to every peer (BFS).
    fn distances(&self, origin: usize) -> Vec<Option<u32>> {
        let mut dist = vec![None; self.len()];
        dist[origin] = Some(0);
        let mut queue = VecDeque::from([origin]);
        while let Some(u) = queue.pop_front() {
            let d = dist[u].unwrap_or(0);
            for peer in &self.neighbors[u] {
                let v = self.index[peer];
                if dist[v].is_none() {
                    dist[v] = Some(d + 1);
                    queue.push_back(v);
                }
            }
        }
        dist
    }

    fn diameter(&self) -> u32 {
        (0..self.len())
            .flat_map(|origin| self.distances(origin))
            .map(|d| d.expect("the graph is connected"))
            .max()
            .unwrap_or(0)
    }

    /// Starts a query at `origin` and puts its messages in flight.
    fn start(&mut self, origin: usize, op: u64, id: QueryId, ttl: u8) {
        let have_key = self.holders.contains(&origin);
        let out = self.flooders[origin]
            .start(
                op,
                id,
                KEY,
                ttl,
                self.ids[origin],
                &self.neighbors[origin],
                have_key,
                0,
            )
            .unwrap_or_else(|e| panic!("seed {}: start refused: {e}", self.seed));
        self.send(origin, out);
    }

    fn send(&mut self, from: usize, out: Vec<(Id, FloodMsg)>) {
        for (to, msg) in out {
            let to = *self
                .index
                .get(&to)
                .unwrap_or_else(|| panic!("seed {}: message to unknown peer {to:?}", self.seed));
            assert!(
                self.neighbors[from].contains(&self.ids[to]),
                "seed {}: message over a missing link",
                self.seed
            );
            self.in_flight.push_back((from, to, msg));
        }
    }

    /// Delivers messages until none is in flight (bounded), all at time 0.
    fn run(&mut self, order: Order) {
        let mut budget = 10_000_000u64;
        loop {
            let next = match order {
                Order::Fifo => self.in_flight.pop_front(),
                Order::Shuffled if self.in_flight.is_empty() => None,
                Order::Shuffled => {
                    let i = self.rng.below(self.in_flight.len());
                    self.in_flight.swap_remove_back(i)
                }
            };
            let Some((from, to, msg)) = next else { break };
            budget -= 1;
            assert!(budget > 0, "seed {}: flood did not die out", self.seed);
            let before = self.flooders[to].stats().queries_processed;
            let query = match &msg {
                FloodMsg::Query { id, ttl, hops, .. } => Some((*id, *ttl, *hops)),
                _ => {
                    self.hits_delivered += 1;
                    None
                }
            };
            let holds = self.holders.contains(&to);
            let out = self.flooders[to].on_message(
                self.ids[to],
                self.ids[from],
                msg,
                |key| holds && key == KEY,
                &self.neighbors[to],
                0,
            );
            if let Some((id, ttl, hops)) = query {
                let processed = self.flooders[to].stats().queries_processed > before;
                assert!(
                    processed || out.is_empty(),
                    "seed {}: a dropped query produced messages",
                    self.seed
                );
                self.queries.push(QueryDelivery {
                    to,
                    id,
                    ttl,
                    hops,
                    processed,
                });
            }
            self.send(to, out);
        }
    }

    /// Lets every origin's timeout pass and collects the results by op.
    fn finish(&mut self) -> BTreeMap<u64, FloodResult> {
        let mut results = BTreeMap::new();
        for flooder in &mut self.flooders {
            // Only a query that asked nobody completes before its timeout.
            let early = flooder.poll_done(TIMEOUT_MS - 1);
            assert!(early.iter().all(|(_, result)| result.neighbors_asked == 0));
            for (op, result) in early.into_iter().chain(flooder.poll_done(TIMEOUT_MS)) {
                assert!(results.insert(op, result).is_none(), "op completed twice");
            }
            assert_eq!(flooder.next_timeout(), None);
        }
        results
    }

    fn total_stats(&self) -> FloodStats {
        let mut total = FloodStats::default();
        for flooder in &self.flooders {
            total.merge(flooder.stats());
        }
        total
    }

    /// (a) Per peer and query id, at most one reception was processed.
    fn assert_no_peer_processes_twice(&self) {
        let mut processed = BTreeSet::new();
        for q in self.queries.iter().filter(|q| q.processed) {
            assert!(
                processed.insert((q.to, q.id)),
                "seed {}: peer {:?} processed {:?} twice",
                self.seed,
                self.ids[q.to],
                q.id
            );
        }
    }

    /// (b) Every received query has `hops < ttl at the start`, and `ttl + hops` is constant.
    fn assert_ttl_bound(&self, ttl_at_start: &BTreeMap<QueryId, u8>) {
        for q in &self.queries {
            let start = ttl_at_start[&q.id];
            assert!(q.ttl >= 1, "seed {}: query in flight with ttl 0", self.seed);
            assert!(
                q.hops < start,
                "seed {}: {:?} travelled {} hops on ttl {start}",
                self.seed,
                q.id,
                q.hops + 1
            );
            assert_eq!(u16::from(q.ttl) + u16::from(q.hops), u16::from(start));
        }
    }
}

fn config() -> FloodConfig {
    FloodConfig {
        max_ttl: u8::MAX,
        query_timeout_ms: TIMEOUT_MS,
        ..FloodConfig::default()
    }
}

fn holders_within(net: &Net, dist: &[Option<u32>], ttl: u8) -> Vec<Id> {
    let mut found: Vec<Id> = net
        .holders
        .iter()
        .filter(|&&h| dist[h].is_some_and(|d| d <= u32::from(ttl)))
        .map(|&h| net.ids[h])
        .collect();
    found.sort();
    found
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under FIFO delivery a flood is a breadth-first search: it reaches exactly the peers within
    /// `ttl` links, finds exactly the holders among them, the nearest first, and every counter
    /// adds up across peers.
    #[test]
    fn fifo_flood_reaches_exactly_the_ttl_ball(
        seed: u64,
        n in 20usize..=200,
        holder_percent in 0u64..=30,
        ttl_slack in 0u8..=3,
    ) {
        let mut net = Net::random(seed, n, holder_percent, config());
        let origin = net.rng.below(n);
        let dist = net.distances(origin);
        let eccentricity = dist.iter().flatten().copied().max().unwrap_or(0);
        let ttl = u8::try_from(eccentricity).unwrap().saturating_sub(ttl_slack);
        let id = QueryId(u128::from(seed) << 64 | 1);
        net.start(origin, 7, id, ttl);
        net.run(Order::Fifo);
        let results = net.finish();
        let result = &results[&7];

        net.assert_no_peer_processes_twice();
        net.assert_ttl_bound(&BTreeMap::from([(id, ttl)]));

        let reached: BTreeSet<usize> =
            net.queries.iter().filter(|q| q.processed).map(|q| q.to).collect();
        let ball: BTreeSet<usize> = (0..n)
            .filter(|&v| v != origin && dist[v].is_some_and(|d| d <= u32::from(ttl)))
            .collect();
        prop_assert_eq!(&reached, &ball, "seed {}", seed);
        prop_assert_eq!(&result.matches, &holders_within(&net, &dist, ttl), "seed {}", seed);
        let nearest = net
            .holders
            .iter()
            .filter_map(|&h| dist[h])
            .filter(|&d| d <= u32::from(ttl))
            .min();
        prop_assert_eq!(result.hops_to_first_hit.map(u32::from), nearest, "seed {}", seed);

        // Summed counters are the flood's exact cost.
        let total = net.total_stats();
        let deliveries = net.queries.len() as u64;
        prop_assert_eq!(total.query_messages_sent, deliveries);
        prop_assert_eq!(total.queries_processed + total.duplicates_dropped, deliveries);
        prop_assert_eq!(total.queries_processed, ball.len() as u64);
        let remote_holders = result.matches.len() as u64
            - u64::from(net.holders.contains(&origin));
        prop_assert_eq!(total.hits_sent, remote_holders);
        prop_assert_eq!(total.hits_accepted, remote_holders);
        prop_assert_eq!(result.hits_received, remote_holders);
        prop_assert_eq!(total.hits_sent + total.hits_relayed, net.hits_delivered);
        prop_assert_eq!(
            total.hits_no_route + total.hits_unknown + total.hits_late + total.bad_messages,
            0
        );
        // Per-id traces add up to the same numbers.
        let traced: u64 = net
            .flooders
            .iter()
            .filter_map(|f| f.trace(id))
            .map(|t| u64::from(t.query_messages_sent))
            .sum();
        prop_assert_eq!(traced, deliveries);
    }

    /// (c) With TTL at least the graph's diameter, every holder is found.
    #[test]
    fn ttl_of_the_diameter_finds_every_holder(
        seed: u64,
        n in 20usize..=200,
        holder_percent in 1u64..=20,
    ) {
        let mut net = Net::random(seed, n, holder_percent, config());
        let ttl = u8::try_from(net.diameter()).unwrap();
        let origin = net.rng.below(n);
        net.start(origin, 1, QueryId(u128::from(seed)), ttl);
        net.run(Order::Fifo);
        let results = net.finish();
        let all: Vec<Id> = {
            let mut all: Vec<Id> = net.holders.iter().map(|&h| net.ids[h]).collect();
            all.sort();
            all
        };
        prop_assert_eq!(&results[&1].matches, &all, "seed {}", seed);
        prop_assert_eq!(net.total_stats().queries_processed, n as u64 - 1);
    }

    /// (d) With TTL 1 only the origin's direct neighbours are asked, and nobody forwards.
    #[test]
    fn ttl_one_asks_only_direct_neighbours(seed: u64, n in 20usize..=200) {
        let mut net = Net::random(seed, n, 50, config());
        let origin = net.rng.below(n);
        net.start(origin, 1, QueryId(3), 1);
        net.run(Order::Fifo);
        let asked: BTreeSet<Id> = net.queries.iter().map(|q| net.ids[q.to]).collect();
        let direct: BTreeSet<Id> = net.neighbors[origin].iter().copied().collect();
        prop_assert_eq!(&asked, &direct, "seed {}", seed);
        prop_assert!(net.queries.iter().all(|q| q.processed && q.hops == 0));
        prop_assert_eq!(net.total_stats().forwarded, 0);
        let results = net.finish();
        let dist = net.distances(origin);
        prop_assert_eq!(&results[&1].matches, &holders_within(&net, &dist, 1), "seed {}", seed);
    }

    /// (a) and (b) hold for overlapping floods from several origins under arbitrary reordering,
    /// where the TTL artefact of Gnutella may hide some peers but never shows a false holder.
    #[test]
    fn concurrent_reordered_floods_stay_bounded(
        seed: u64,
        n in 20usize..=200,
        origins in 1usize..=8,
        holder_percent in 0u64..=30,
    ) {
        let mut net = Net::random(seed, n, holder_percent, config());
        let mut ttl_at_start = BTreeMap::new();
        for op in 0..origins as u64 {
            let origin = net.rng.below(n);
            let ttl = net.rng.below(8) as u8;
            let id = QueryId(u128::from(net.rng.next_u64()) << 64 | u128::from(op));
            ttl_at_start.insert(id, ttl);
            net.start(origin, op, id, ttl);
        }
        net.run(Order::Shuffled);
        net.assert_no_peer_processes_twice();
        net.assert_ttl_bound(&ttl_at_start);
        let results = net.finish();
        prop_assert_eq!(results.len(), origins);
        for result in results.values() {
            for holder in &result.matches {
                prop_assert!(net.holders.contains(&net.index[holder]), "seed {}", seed);
            }
        }
        let total = net.total_stats();
        prop_assert_eq!(total.query_messages_sent, net.queries.len() as u64);
        for &id in ttl_at_start.keys() {
            let sent: u64 = net
                .flooders
                .iter()
                .filter_map(|f| f.trace(id))
                .map(|t| u64::from(t.query_messages_sent))
                .sum();
            let delivered = net.queries.iter().filter(|q| q.id == id).count() as u64;
            prop_assert_eq!(sent, delivered, "seed {}", seed);
        }
    }
}

// ----- (e) hostile input -----

/// The outcome counters of a received query, and of a received hit: exactly one moves per message.
fn query_outcomes(s: &FloodStats) -> [u64; 4] {
    [
        s.queries_processed,
        s.duplicates_dropped,
        s.oversize_keys,
        s.bad_messages,
    ]
}

fn hit_outcomes(s: &FloodStats) -> [u64; 6] {
    [
        s.hits_accepted,
        s.hits_late,
        s.hits_relayed,
        s.hits_no_route,
        s.hits_unknown,
        s.bad_messages,
    ]
}

fn moved<const N: usize>(before: [u64; N], after: [u64; N]) -> u64 {
    before.iter().zip(&after).map(|(b, a)| a - b).sum()
}

/// Few distinct ids and peers, so garbage often collides with real state.
fn arb_msg() -> impl Strategy<Value = FloodMsg> {
    let id = prop_oneof![
        (0u128..4).prop_map(QueryId),
        any::<u128>().prop_map(QueryId)
    ];
    let key = prop_oneof![
        Just(KEY.to_owned()),
        "[a-z]{0,8}",
        (0usize..200).prop_map(|len| "x".repeat(len)),
    ];
    prop_oneof![
        (id.clone(), key, any::<u8>(), any::<u8>())
            .prop_map(|(id, key, ttl, hops)| FloodMsg::Query { id, key, ttl, hops }),
        (id, 0u32..6, any::<u8>()).prop_map(|(id, holder, hops)| FloodMsg::Hit {
            id,
            holder: Id(holder),
            hops
        }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Receive {
        from: u32,
        msg: FloodMsg,
        have_key: bool,
        neighbors: Vec<u32>,
    },
    Start {
        id: u128,
        ttl: u8,
        neighbors: Vec<u32>,
        have_key: bool,
    },
    Advance(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    let neighbors = prop::collection::vec(0u32..6, 0..6);
    prop_oneof![
        6 => (0u32..6, arb_msg(), any::<bool>(), neighbors.clone()).prop_map(
            |(from, msg, have_key, neighbors)| Step::Receive { from, msg, have_key, neighbors }
        ),
        1 => (0u128..6, any::<u8>(), neighbors, any::<bool>()).prop_map(
            |(id, ttl, neighbors, have_key)| Step::Start { id, ttl, neighbors, have_key }
        ),
        1 => (0u64..2000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (e) Random messages, starts and clock steps never panic; every received message is
    /// counted in exactly one outcome; everything sent is well-formed and goes to a live link;
    /// every started query completes exactly once; the bounds hold.
    #[test]
    fn garbage_is_counted_never_a_panic(steps in prop::collection::vec(arb_step(), 1..200)) {
        let me = Id(0);
        let config = FloodConfig {
            seen_capacity: 3,
            max_ttl: 7,
            query_timeout_ms: 500,
            max_key_bytes: 64,
            max_pending: 2,
        };
        let mut flooder = Flooder::new(config);
        let mut now = 0u64;
        let mut started = BTreeSet::new();
        let mut done = BTreeSet::new();
        let mut op = 0u64;
        for step in steps {
            let (out, neighbors) = match step {
                Step::Receive { from, msg, have_key, neighbors } => {
                    let neighbors: Vec<Id> = neighbors.into_iter().map(Id).collect();
                    let before = flooder.stats().clone();
                    let is_query = matches!(msg, FloodMsg::Query { .. });
                    let out = flooder.on_message(me, Id(from), msg, |_| have_key, &neighbors, now);
                    let after = flooder.stats();
                    let outcomes = if is_query {
                        moved(query_outcomes(&before), query_outcomes(after))
                    } else {
                        moved(hit_outcomes(&before), hit_outcomes(after))
                    };
                    prop_assert_eq!(outcomes, 1, "{:?}", after.since(&before));
                    (out, neighbors)
                }
                Step::Start { id, ttl, neighbors, have_key } => {
                    let neighbors: Vec<Id> = neighbors.into_iter().map(Id).collect();
                    op += 1;
                    let out = match flooder.start(
                        op, QueryId(id), KEY, ttl, me, &neighbors, have_key, now,
                    ) {
                        Ok(out) => {
                            started.insert(op);
                            out
                        }
                        Err(_) => Vec::new(),
                    };
                    (out, neighbors)
                }
                Step::Advance(ms) => {
                    now += ms;
                    for (op, _) in flooder.poll_done(now) {
                        prop_assert!(started.contains(&op) && done.insert(op));
                    }
                    (Vec::new(), Vec::new())
                }
            };
            for (to, msg) in &out {
                prop_assert!(*to != me && neighbors.contains(to), "sent {:?} to {:?}", msg, to);
                match msg {
                    FloodMsg::Query { key, ttl, hops, .. } => {
                        prop_assert!(*ttl >= 1 && u16::from(*ttl) + u16::from(*hops) <= 7);
                        prop_assert!(key.len() <= 64);
                    }
                    FloodMsg::Hit { hops, .. } => prop_assert!(*hops < 7),
                    _ => {}
                }
            }
            prop_assert!(flooder.seen_len() <= 3 && flooder.pending_len() <= 2);
            if let Some(at) = flooder.next_timeout() {
                prop_assert!(at <= now + 500);
            }
        }
        for (op, _) in flooder.poll_done(u64::MAX) {
            prop_assert!(started.contains(&op) && done.insert(op));
        }
        prop_assert_eq!(&started, &done);
        prop_assert_eq!(flooder.pending_len(), 0);
    }

    /// Arbitrary text, and valid frames with bytes flipped, never panic the decoder.
    #[test]
    fn decoding_garbage_never_panics(
        text in ".{0,200}",
        msg in arb_msg(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let _ = serde_json::from_str::<FloodMsg>(&text);
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        prop_assert_eq!(serde_json::from_slice::<FloodMsg>(&bytes).unwrap(), msg);
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = serde_json::from_slice::<FloodMsg>(&bytes);
    }
}
