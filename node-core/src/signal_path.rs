//! Which way a link's signaling payload (SDP) travels: through the ring or an introducer.
//!
//! Every driver carries WebRTC offers and answers; this module decides the way, so the native
//! and the browser peer follow one rule (it used to be written in both drivers):
//! - an answer goes back the way the peer's last signal came ([`SignalPaths::heard`]);
//! - otherwise a payload goes through the ring ([`crate::Node::signal`]) as soon as this peer
//!   holds any open link (a joining peer reaches the ring through its bootstrap), and through
//!   the remote introducer only for the very first link;
//! - a payload the ring could not route (its `signal` op failed) is sent again through the
//!   remote introducer, if there is one ([`SignalPaths::op_done`]);
//! - an offer with no answer in time is sent again through an introducer when there is one
//!   ([`SignalPaths::choose_retry`], `crate::peer::signal`, "Retries");
//! - links whose payloads went through the ring are counted as overlay links, the others as
//!   introducer links, so tests and metrics can see the introducer is no longer needed.
//!
//! Pure bookkeeping: the driver performs the sends and reports back.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::api::OpId;
use crate::id::PeerId;

/// A way for signaling payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalPath {
    /// Routed hop by hop through the ring (`Node::signal`).
    Ring,
    /// Through the introducer this peer connected to (`--bootstrap`, the page's introducer).
    Remote,
    /// Through the introducer this (native) peer serves itself, to a newcomer that
    /// bootstrapped here.
    Local,
}

/// Counters, in the drivers' metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SignalStats {
    /// Links whose SDP went through the ring (no introducer involved).
    pub overlay_links: u64,
    /// Links whose SDP went through an introducer (the first one, or a fallback).
    pub introducer_links: u64,
    pub signals_via_ring: u64,
    pub signals_via_introducer: u64,
}

/// What [`SignalPaths::op_done`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalOpDone {
    /// Not a signal op: the driver handles it.
    NotSignal,
    /// A signal op; nothing more to do.
    Done,
    /// The ring could not route it: send `payload` to `peer` again (it now goes through the
    /// remote introducer).
    Resend { peer: PeerId, payload: String },
}

/// The bookkeeping of one peer.
#[derive(Debug, Default)]
pub struct SignalPaths {
    last: BTreeMap<PeerId, SignalPath>,
    via_ring: BTreeSet<PeerId>,
    in_flight: BTreeMap<OpId, (PeerId, String)>,
    stats: SignalStats,
}

impl SignalPaths {
    pub fn stats(&self) -> SignalStats {
        self.stats
    }

    /// A signal from `peer` came by `path`: answers to it go back the same way.
    pub fn heard(&mut self, peer: PeerId, path: SignalPath) {
        self.last.insert(peer, path);
    }

    /// The way to send a payload to `peer` now (counted as sent). `Ring` means: call
    /// `Node::signal` and then [`SignalPaths::sent_through_ring`] with its op.
    pub fn choose(&mut self, peer: PeerId, any_link_open: bool, has_remote: bool) -> SignalPath {
        let default = if any_link_open {
            SignalPath::Ring
        } else {
            SignalPath::Remote
        };
        let path = match self.last.get(&peer).copied().unwrap_or(default) {
            // No introducer at all: the ring is the only way.
            SignalPath::Remote if !has_remote => SignalPath::Ring,
            path => path,
        };
        match path {
            SignalPath::Ring => self.stats.signals_via_ring += 1,
            _ => self.stats.signals_via_introducer += 1,
        }
        path
    }

    /// The way to send a payload to `peer` again because no answer came in time
    /// (`crate::peer::signal::OFFER_RETRY_MS`): the local introducer session the peer was last
    /// heard on, else the remote introducer when there is one, else the ring again. Counted as
    /// sent.
    pub fn choose_retry(&mut self, peer: PeerId, has_remote: bool) -> SignalPath {
        let path = match self.last.get(&peer) {
            Some(SignalPath::Local) => SignalPath::Local,
            _ if has_remote => SignalPath::Remote,
            _ => SignalPath::Ring,
        };
        match path {
            SignalPath::Ring => self.stats.signals_via_ring += 1,
            _ => {
                self.via_ring.remove(&peer);
                self.stats.signals_via_introducer += 1;
            }
        }
        path
    }

    /// `Node::signal` took the payload for `peer` as `op`.
    pub fn sent_through_ring(&mut self, op: OpId, peer: PeerId, payload: String) {
        self.via_ring.insert(peer);
        self.in_flight.insert(op, (peer, payload));
    }

    /// An op finished: if it was a ring-routed signal that failed, it goes again through the
    /// remote introducer (when there is one).
    pub fn op_done(&mut self, op: OpId, failed: bool, has_remote: bool) -> SignalOpDone {
        let Some((peer, payload)) = self.in_flight.remove(&op) else {
            return SignalOpDone::NotSignal;
        };
        if failed && has_remote {
            self.via_ring.remove(&peer);
            self.last.insert(peer, SignalPath::Remote);
            return SignalOpDone::Resend { peer, payload };
        }
        SignalOpDone::Done
    }

    /// The link to `peer` opened; returns true when its SDP went through the ring.
    pub fn link_opened(&mut self, peer: PeerId) -> bool {
        let via_ring = self.via_ring.remove(&peer);
        if via_ring {
            self.stats.overlay_links += 1;
        } else {
            self.stats.introducer_links += 1;
        }
        via_ring
    }

    /// The link to `peer` closed or failed to open.
    pub fn link_closed(&mut self, peer: PeerId) {
        self.via_ring.remove(&peer);
    }

    /// Forget how `peer`'s signals came (its link was dropped on purpose, or it is gone).
    pub fn forget(&mut self, peer: PeerId) {
        self.last.remove(&peer);
        self.via_ring.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;

    #[test]
    fn first_link_through_the_introducer_then_the_ring_with_fallback() {
        let mut paths = SignalPaths::default();
        let (a, b) = (Id(1), Id(2));
        assert_eq!(paths.choose(a, false, true), SignalPath::Remote);
        assert!(!paths.link_opened(a));
        assert_eq!(paths.choose(b, true, true), SignalPath::Ring);
        paths.sent_through_ring(OpId(7), b, "sdp".into());
        assert_eq!(
            paths.op_done(OpId(7), true, true),
            SignalOpDone::Resend {
                peer: b,
                payload: "sdp".into()
            }
        );
        assert_eq!(paths.choose(b, true, true), SignalPath::Remote);
        assert_eq!(paths.op_done(OpId(8), true, true), SignalOpDone::NotSignal);
        // Without an introducer the ring is the only way, and a failure is final.
        let mut alone = SignalPaths::default();
        assert_eq!(alone.choose(a, false, false), SignalPath::Ring);
        alone.sent_through_ring(OpId(1), a, "sdp".into());
        assert!(alone.link_opened(a));
        assert_eq!(alone.op_done(OpId(1), true, false), SignalOpDone::Done);
        assert_eq!(alone.stats().overlay_links, 1);
        // Answers go back the way the offer came.
        paths.heard(a, SignalPath::Local);
        assert_eq!(paths.choose(a, true, true), SignalPath::Local);
    }
}
