//! The peer session: one sans-IO [`Peer`] wraps the [`Node`] with the policy every driver
//! used to hold beside it, so that the native peer, the tab and the simulator carry out one
//! set of decisions.
//!
//! A `Peer` owns:
//! - the node (ring, routing, store, replication);
//! - which way each signalling payload travels ([`SignalPaths`]): the ring once any link is
//!   open, an introducer for the first link, the introducer again when the ring could not route
//!   a payload (the failed `signal` op is sent again here, never seen by the driver), answers
//!   back the way their offer came;
//! - the open links, as the link layer reported them (for the choice above);
//! - the join: the op in flight, the join plan (`crate::peer::join`: candidates in turn, the
//!   pause after a failure, patience, the round after being cut off) and its retry timer, which
//!   is part of [`Peer::next_timeout`];
//! - the group-commit gate (`crate::peer::commit`) when the driver persists: the writes of a
//!   drain come out as one [`PeerOutput::Persist`], and nothing the core asked for after them
//!   comes out before the driver calls [`Peer::committed`].
//!
//! The driver keeps what is its own: the links themselves (webrtc-rs tasks, the browser's
//! `RTCPeerConnection`s, the simulator's modelled network), the introducer session, the store,
//! the clients waiting for their ops, and (native only) serving as a ring of one and merging
//! (node-native/src/driver.rs).
//!
//! Caller obligations (as for [`Node`]): after any call that may change the peer, call
//! [`Peer::poll_output`] until it returns [`PeerOutput::Timeout`], and call
//! [`Peer::handle_timeout`] no later than that time.

use std::collections::{BTreeSet, VecDeque};

use crate::Time;
use crate::api::{Event, Input, OpError, OpId, OpOutcome, Output};
use crate::id::{Id, PeerId};
use crate::node::Node;
use crate::peer::commit::{Batch, CommitGate};
use crate::peer::join::{JoinPlan, Retry};
use crate::signal_path::{SignalOpDone, SignalPath, SignalPaths, SignalStats};

/// What a driver carries out for its [`Peer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerOutput {
    /// A frame for the open link to `to`. If the link layer refuses it, report
    /// [`Peer::send_failed`].
    Send { to: PeerId, bytes: Vec<u8> },
    /// Open a link to this peer (make an offer).
    Connect(PeerId),
    /// Close the link to this peer.
    Disconnect(PeerId),
    /// A signalling payload from `from` that came through the ring: hand it to the link layer
    /// (an offer to answer, an answer to apply).
    Deliver { from: PeerId, payload: String },
    /// Send a signalling payload to `to` through an introducer session: `Remote` (the one this
    /// peer connected to) or `Local` (the one a native peer serves).
    Introducer {
        path: SignalPath,
        to: PeerId,
        payload: String,
    },
    /// Write these to the store in one transaction, then call [`Peer::committed`] with its id
    /// (also when it failed: the driver decides what a failure means).
    Persist(Box<Batch>),
    /// The join succeeded.
    Joined { successor: PeerId },
    /// The join failed with `error`; `retry` is the join plan's verdict. On
    /// [`Retry::At`] the peer tries again by itself (as [`PeerOutput::JoinDue`]); on
    /// [`Retry::GiveUp`] the driver decides (a tab's start fails, a native peer serves alone).
    JoinFailed { error: Box<OpError>, retry: Retry },
    /// The join plan's retry is due: join through `through` (the driver checks that it still
    /// wants to, then calls [`Peer::join_through`]).
    JoinDue { through: PeerId },
    /// An operation the driver started finished.
    OpDone {
        op: OpId,
        result: Box<Result<OpOutcome, OpError>>,
    },
    /// Any other event of the node (`Event::Isolated` after the join plan took note of it).
    Event(Box<Event>),
    /// Nothing more now; call [`Peer::handle_timeout`] at this time.
    Timeout(Time),
}

/// A node and the policy its driver carries out (see the module docs).
#[derive(Debug)]
pub struct Peer {
    node: Node,
    paths: SignalPaths,
    plan: JoinPlan,
    /// The join in flight and its bootstrap.
    join_op: Option<(OpId, PeerId)>,
    /// Peers whose data channel is open.
    open: BTreeSet<PeerId>,
    /// A remote introducer session is up.
    remote: bool,
    /// The driver has a store: `Stored`/`Collected` go through the gate.
    durable: bool,
    gate: CommitGate<Output>,
    ready: VecDeque<PeerOutput>,
}

impl Peer {
    /// A peer around `node`; `durable` when the driver persists the store.
    pub fn new(node: Node, durable: bool) -> Self {
        Self {
            node,
            paths: SignalPaths::default(),
            plan: JoinPlan::new(),
            join_op: None,
            open: BTreeSet::new(),
            remote: false,
            durable,
            gate: CommitGate::new(),
            ready: VecDeque::new(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The node, for commands (put, get, ...) and queries. Their outputs come out of
    /// [`Peer::poll_output`].
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    pub fn id(&self) -> Id {
        self.node.id()
    }

    pub fn plan(&self) -> &JoinPlan {
        &self.plan
    }

    /// The join plan, to set candidates (an introducer's welcome) or give a round up.
    pub fn plan_mut(&mut self) -> &mut JoinPlan {
        &mut self.plan
    }

    /// A join is in flight.
    pub fn joining(&self) -> bool {
        self.join_op.is_some()
    }

    pub fn signal_stats(&self) -> SignalStats {
        self.paths.stats()
    }

    /// Outputs that ever had to wait for a transaction (`storage.frames_held`).
    pub fn items_held(&self) -> u64 {
        self.gate.items_held
    }

    /// Whether any data channel is open.
    pub fn any_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// The remote introducer session came up or went down.
    pub fn set_remote(&mut self, up: bool) {
        self.remote = up;
    }

    pub fn has_remote(&self) -> bool {
        self.remote
    }

    /// The core's next deadline and the join plan's retry, whichever is first.
    pub fn next_timeout(&self) -> Time {
        let retry = self.plan.retry_at().unwrap_or(Time::MAX);
        self.node.next_timeout().min(retry)
    }

    /// Time passed: the core's timers, and the join plan's retry when it is due.
    pub fn handle_timeout(&mut self, now: Time) {
        self.node.handle_input(now, Input::Timeout);
        if let Some(through) = self.plan.due(now) {
            self.ready.push_back(PeerOutput::JoinDue { through });
        }
    }

    // ----- links -------------------------------------------------------------------------

    /// The data channel to `peer` opened. True when its signalling went through the ring (an
    /// overlay link), false when through an introducer.
    pub fn link_opened(&mut self, peer: PeerId, now: Time) -> bool {
        self.open.insert(peer);
        let via_ring = self.paths.link_opened(peer);
        self.node.handle_input(now, Input::PeerUp { peer });
        via_ring
    }

    /// The link to `peer` closed or failed to open.
    pub fn link_closed(&mut self, peer: PeerId, now: Time) {
        self.open.remove(&peer);
        self.paths.link_closed(peer);
        self.node.handle_input(now, Input::PeerDown { peer });
    }

    /// The link to `peer` closed on purpose or was replaced: also forget which way its
    /// signals came.
    pub fn link_dropped(&mut self, peer: PeerId, now: Time) {
        self.paths.forget(peer);
        self.link_closed(peer, now);
    }

    /// A frame from `from`.
    pub fn frame(&mut self, from: PeerId, bytes: &[u8], now: Time) {
        self.node.handle_input(now, Input::Receive { from, bytes });
    }

    /// The link layer refused a frame for `peer` (no open channel, queue or buffer full).
    pub fn send_failed(&mut self, peer: PeerId, now: Time) {
        self.node.handle_input(now, Input::SendFailed { peer });
    }

    // ----- signalling --------------------------------------------------------------------

    /// A signalling payload for `peer` from the link layer: sent the way [`SignalPaths`]
    /// chooses (through the ring, or out as [`PeerOutput::Introducer`]).
    pub fn send_signal(&mut self, peer: PeerId, payload: String, now: Time) {
        let path = self.paths.choose(peer, self.any_open(), self.remote);
        self.send_signal_by(path, peer, payload, now);
    }

    /// An offer sent again for want of an answer (`SignalPaths::choose_retry`).
    pub fn send_signal_retry(&mut self, peer: PeerId, payload: String, now: Time) {
        let path = self.paths.choose_retry(peer, self.remote);
        self.send_signal_by(path, peer, payload, now);
    }

    fn send_signal_by(&mut self, path: SignalPath, peer: PeerId, payload: String, now: Time) {
        match path {
            SignalPath::Ring => {
                let op = self.node.signal(peer, payload.clone(), now);
                self.paths.sent_through_ring(op, peer, payload);
            }
            path => self.ready.push_back(PeerOutput::Introducer {
                path,
                to: peer,
                payload,
            }),
        }
    }

    /// A signalling payload from `peer` came through an introducer (`path`); the driver hands
    /// it to its link layer. Answers go back the same way.
    pub fn heard(&mut self, peer: PeerId, path: SignalPath) {
        self.paths.heard(peer, path);
    }

    // ----- joining -----------------------------------------------------------------------

    /// Joins the ring through `bootstrap`, whose signals go by `path` (its introducer).
    pub fn join_through(&mut self, bootstrap: PeerId, path: SignalPath, now: Time) -> OpId {
        self.paths.heard(bootstrap, path);
        let op = self.node.join(bootstrap, now);
        self.join_op = Some((op, bootstrap));
        op
    }

    /// Stops waiting for the join in flight (its outcome will come out as an ordinary
    /// [`PeerOutput::OpDone`]).
    pub fn forget_join(&mut self) {
        self.join_op = None;
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next thing to carry out.
    pub fn poll_output(&mut self) -> PeerOutput {
        loop {
            if let Some(output) = self.ready.pop_front() {
                return output;
            }
            match self.node.poll_output() {
                Output::Timeout(at) => {
                    if let Some(batch) = self.gate.take_batch() {
                        return PeerOutput::Persist(Box::new(batch));
                    }
                    let retry = self.plan.retry_at().unwrap_or(Time::MAX);
                    return PeerOutput::Timeout(at.min(retry));
                }
                // The common case, a frame while nothing waits for a write: straight out,
                // without moving the whole output through the gate.
                Output::Send { to, bytes } if self.gate.is_open() => {
                    return PeerOutput::Send { to, bytes };
                }
                output => {
                    // A write goes into the drain's batch; the event itself comes out too (a
                    // tab shows it), after the batch is committed like everything behind it.
                    if self.durable
                        && let Output::Event(event) = &output
                    {
                        match &**event {
                            Event::Stored { key, entry } => {
                                self.gate.stored(key.clone(), entry.clone());
                            }
                            Event::Collected { key } => self.gate.collected(key.clone()),
                            _ => {}
                        }
                    }
                    if let Some(out) = self.gate.pass(output).and_then(|o| self.carry(o)) {
                        return out;
                    }
                }
            }
        }
    }

    /// Transaction `id` of a [`PeerOutput::Persist`] ended: what waited for it comes out of
    /// [`Peer::poll_output`].
    pub fn committed(&mut self, id: u64) {
        for output in self.gate.committed(id) {
            if let Some(out) = self.carry(output) {
                self.ready.push_back(out);
            }
        }
    }

    /// Turns a released core output into what the driver does (`None`: nothing, or only what
    /// it queued itself).
    fn carry(&mut self, output: Output) -> Option<PeerOutput> {
        match output {
            Output::Send { to, bytes } => Some(PeerOutput::Send { to, bytes }),
            Output::Connect(peer) => Some(PeerOutput::Connect(peer)),
            Output::Disconnect(peer) => {
                self.paths.forget(peer);
                Some(PeerOutput::Disconnect(peer))
            }
            Output::Event(event) => self.on_event(event),
            Output::Timeout(_) => None,
        }
    }

    fn on_event(&mut self, event: Box<Event>) -> Option<PeerOutput> {
        let now = self.node.now;
        match *event {
            Event::OpDone { op, result } => {
                match self.paths.op_done(op, result.is_err(), self.remote) {
                    SignalOpDone::NotSignal => {}
                    SignalOpDone::Resend { peer, payload } => {
                        self.send_signal(peer, payload, now);
                        return None;
                    }
                    _ => return None,
                }
                let bootstrap = match self.join_op {
                    Some((join, bootstrap)) if join == op => bootstrap,
                    _ => {
                        return Some(PeerOutput::OpDone {
                            op,
                            result: Box::new(result),
                        });
                    }
                };
                self.join_op = None;
                let not_member = matches!(result, Err(OpError::BootstrapNotJoined { .. }));
                self.plan.answered(bootstrap, not_member);
                Some(match result {
                    Ok(OpOutcome::Joined { successor }) => {
                        self.plan.joined();
                        PeerOutput::Joined { successor }
                    }
                    // A join answers `Joined` or fails; anything else counts as a timeout.
                    Ok(_) => PeerOutput::JoinFailed {
                        error: Box::new(OpError::JoinTimeout { bootstrap }),
                        retry: self.plan.failed(now),
                    },
                    Err(error) => PeerOutput::JoinFailed {
                        error: Box::new(error),
                        retry: self.plan.failed(now),
                    },
                })
            }
            Event::Signal { from, payload } => {
                self.paths.heard(from, SignalPath::Ring);
                Some(PeerOutput::Deliver { from, payload })
            }
            Event::Isolated => {
                // Cut off after joining: a round without patience through the members the
                // introducer named (`JoinPlan::isolated`); the driver sees the event too.
                self.plan.isolated(now);
                Some(PeerOutput::Event(event))
            }
            _ => Some(PeerOutput::Event(event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Config;

    fn peer(id: u32, durable: bool) -> Peer {
        Peer::new(Node::new(Config::with_seed(7), Id(id), 0), durable)
    }

    /// Every output until the peer only asks to be woken; writes are committed at once.
    fn drain(peer: &mut Peer) -> (Vec<PeerOutput>, Time) {
        let mut outs = Vec::new();
        loop {
            match peer.poll_output() {
                PeerOutput::Timeout(at) => return (outs, at),
                PeerOutput::Persist(batch) => {
                    let id = batch.id;
                    outs.push(PeerOutput::Persist(batch));
                    peer.committed(id);
                }
                out => outs.push(out),
            }
        }
    }

    #[test]
    fn a_failed_join_is_tried_again_through_the_next_candidate_on_the_peers_own_timer() {
        let mut p = peer(100, false);
        p.set_remote(true);
        p.plan_mut().set_candidates([Id(1), Id(2)], Id(100), 0);
        let first = p.plan_mut().attempt(0).expect("a candidate");
        assert_eq!(first, Id(1));
        p.join_through(first, SignalPath::Remote, 0);
        assert!(p.joining());
        // The bootstrap never links: run the peer's timers until the join fails.
        let mut now = 0;
        let retry = loop {
            let (outs, at) = drain(&mut p);
            if let Some(retry) = outs.iter().find_map(|o| match o {
                PeerOutput::JoinFailed { retry, .. } => Some(*retry),
                _ => None,
            }) {
                break retry;
            }
            assert!(at < 600_000, "the join never failed");
            now = at;
            p.handle_timeout(now);
        };
        let Retry::At { at, through } = retry else {
            panic!("gave up at once: {retry:?}");
        };
        assert_eq!(through, Id(2));
        assert!(!p.joining());
        // The retry is part of the peer's deadline, and comes out when due.
        assert!(p.next_timeout() <= at);
        let mut due = None;
        while due.is_none() && now < at {
            now = p.next_timeout().min(at);
            p.handle_timeout(now);
            due = drain(&mut p).0.into_iter().find_map(|o| match o {
                PeerOutput::JoinDue { through } => Some(through),
                _ => None,
            });
        }
        assert_eq!(due, Some(Id(2)));
        assert_eq!(now, at, "due exactly at the plan's time");
    }

    #[test]
    fn a_signal_the_ring_cannot_route_goes_again_through_the_introducer() {
        let mut p = peer(100, false);
        p.set_remote(true);
        p.node_mut().create_ring(0);
        let _ = drain(&mut p);
        // A link is open, so the ring is the first way; but it leads nowhere near peer 7.
        p.link_opened(Id(5), 1);
        p.send_signal(Id(7), "offer".into(), 2);
        let mut now = 2;
        let mut resent = None;
        for _ in 0..1000 {
            let (outs, at) = drain(&mut p);
            resent = outs.into_iter().find_map(|o| match o {
                PeerOutput::Introducer { path, to, payload } => Some((path, to, payload)),
                _ => None,
            });
            if resent.is_some() || at == Time::MAX {
                break;
            }
            now = at;
            p.handle_timeout(now);
        }
        assert_eq!(
            resent,
            Some((SignalPath::Remote, Id(7), "offer".to_string())),
            "at {now} ms"
        );
        // Once through the ring, once more through the introducer.
        assert_eq!(p.signal_stats().signals_via_ring, 1);
        assert_eq!(p.signal_stats().signals_via_introducer, 1);
    }

    #[test]
    fn nothing_after_a_write_comes_out_before_its_batch_is_committed() {
        let mut p = peer(100, true);
        p.node_mut().create_ring(0);
        let _ = drain(&mut p);
        let op = p.node_mut().put("k", "v", "w", 1);
        let batch = loop {
            match p.poll_output() {
                PeerOutput::Persist(batch) => break batch,
                PeerOutput::OpDone { .. } => panic!("acknowledged before the write was stored"),
                PeerOutput::Event(e) if matches!(*e, Event::Stored { .. }) => {
                    panic!("reported before committed")
                }
                PeerOutput::Timeout(_) => panic!("no batch"),
                _ => {}
            }
        };
        assert_eq!(batch.stored.len(), 1);
        assert_eq!(batch.stored[0].0, "k");
        // Not committed yet: the acknowledgement waits.
        assert!(matches!(p.poll_output(), PeerOutput::Timeout(_)));
        p.committed(batch.id);
        let (outs, _) = drain(&mut p);
        assert!(
            outs.iter().any(
                |o| matches!(o, PeerOutput::OpDone { op: done, result } if *done == op && result.is_ok())
            )
        );
        // The write is reported too (a tab shows it), once committed.
        assert!(
            outs.iter()
                .any(|o| matches!(o, PeerOutput::Event(e) if matches!(&**e, Event::Stored { key, .. } if key == "k")))
        );
        assert_eq!(p.items_held(), 2);
    }
}
