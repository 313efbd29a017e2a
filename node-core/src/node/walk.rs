//! Ring walks: asking a peer we may hold no link to for its ring pointers.
//!
//! Tools and the browser page draw the whole ring, not only the peers a node is linked to. A
//! walk asks the successor for its successor list, then the last peer of that list, and so on
//! (the driver does the stepping). Each step is one request routed hop by hop to the named peer
//! (`Dest::Peer`, like overlay signaling) and answered along the way back: `GetView` ->
//! `View { predecessor, successors, agent }`, where `agent` is the peer's self-description
//! (`crate::agent`, bounded again on receipt: a hostile peer's text is cut to
//! `MAX_AGENT_BYTES`). Nothing is cached; an unanswered request fails with
//! [`OpError::NoRoute`] or [`OpError::LookupTimeout`] after one lookup attempt's time.
//!
//! Not part of the Chord paper; it costs one routed round trip per step and nothing when unused.

use std::collections::BTreeMap;

use super::Node;
use crate::Time;
use crate::api::{OpError, OpId, OpOutcome, PeerView};
use crate::id::{Id, PeerId};
use crate::wire::{Body, Dest, MAX_LIST_LEN, Routed};

/// Pending view requests: op -> deadline.
pub(crate) type PendingViews = BTreeMap<OpId, Time>;

/// At most this many view requests are in flight at once (a walk needs one at a time).
const MAX_PENDING_VIEWS: usize = 64;

impl Node {
    /// Asks `peer` for its predecessor and successor list, routed through the ring.
    /// `OpDone` carries [`OpOutcome::View`], or an error when no answer came in time.
    pub fn peer_view(&mut self, peer: PeerId, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if !self.is_joined() {
            self.done(op, Err(OpError::NotJoined));
            return op;
        }
        if peer == self.id {
            let view = self.own_view(0);
            self.done(op, Ok(OpOutcome::View(view)));
            return op;
        }
        if self.views.len() >= MAX_PENDING_VIEWS {
            self.done(
                op,
                Err(OpError::TooManyPendingOps {
                    limit: MAX_PENDING_VIEWS,
                }),
            );
            return op;
        }
        let routed = Routed {
            dest: Dest::Peer {
                id: peer,
                via: self.via_hint(peer),
            },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 0,
            body: Body::GetView { op: op.0 },
        };
        if !self.route(routed) {
            self.done(op, Err(OpError::NoRoute { to: peer }));
            return op;
        }
        let deadline = now + self.config.lookup_attempt_timeout_ms;
        self.views.insert(op, deadline);
        self.op_timers.insert((deadline, op));
        op
    }

    fn own_view(&self, hops: u32) -> PeerView {
        PeerView {
            id: self.id,
            predecessor: self.ring.predecessor(),
            successors: self
                .ring
                .successors()
                .iter()
                .copied()
                .filter(|s| *s != self.id)
                .take(MAX_LIST_LEN)
                .collect(),
            hops,
            agent: self.config.agent.clone(),
        }
    }

    /// A `GetView` reached this node: answer the origin the way it came.
    pub(crate) fn on_view_request(&mut self, routed: &Routed, op: u64) {
        let view = self.own_view(u32::from(routed.hops));
        let answer = Routed {
            dest: Dest::Peer {
                id: routed.origin,
                via: routed.origin_via,
            },
            origin: self.id,
            origin_via: None,
            hops: 0,
            body: Body::View {
                op,
                predecessor: view.predecessor,
                successors: view.successors,
                hops: routed.hops,
                agent: view.agent,
            },
        };
        if !self.route(answer) {
            self.metrics.chord.dropped_no_route += 1;
        }
    }

    pub(crate) fn on_view_reply(
        &mut self,
        from: PeerId,
        op: u64,
        predecessor: Option<Id>,
        successors: Vec<Id>,
        hops: u8,
        agent: &str,
    ) {
        if self.views.remove(&OpId(op)).is_none() {
            return; // late or unknown
        }
        let view = PeerView {
            id: from,
            predecessor,
            successors,
            hops: u32::from(hops),
            agent: crate::agent::bounded(agent),
        };
        self.done(OpId(op), Ok(OpOutcome::View(view)));
    }

    /// Returns true when `op` was a view request (answered or now failed).
    pub(crate) fn on_view_timer(&mut self, op: OpId, at: Time) -> bool {
        match self.views.get(&op) {
            Some(deadline) if *deadline == at => {
                self.views.remove(&op);
                self.done(
                    op,
                    Err(OpError::LookupTimeout {
                        key: Id(0),
                        attempts: 1,
                    }),
                );
                true
            }
            Some(_) => true,
            None => false,
        }
    }
}
