//! A driver's link table: one current link per remote peer, each with a generation, its role
//! and negotiation state, and the driver's own handle for its WebRTC stack (`H`: webrtc-rs
//! tasks natively, an `RTCPeerConnection` and its callbacks in a tab).
//!
//! Every callback of a stack carries the generation of the link it belongs to and acts only
//! while that link is still the current one ([`LinkTable::current`]): a replaced or closed link
//! falls silent. The table applies the signalling rules of [`super::signal`] to its own state,
//! so a driver asks it what to do with an offer ([`LinkTable::on_offer`]), an answer
//! ([`LinkTable::accept_answer`]) and a retry timer ([`LinkTable::retry_payload`]), and only
//! carries the answer out with its stack. It also keeps the table's counters (attempts,
//! opened, failures, ignored signals, re-answers, offer retries; [`LinkStats`]).
//!
//! Before this module each driver held its own table with these fields and checks; the "is this
//! offer still unanswered, current and not open" test of the retry timer was written twice.
//!
//! # Bounds (issue 11, item 3)
//! Every offer we answer makes the driver build a peer connection (sockets, ICE gathering, a
//! DTLS handshake), and a routed offer's origin is only a claim: one hostile peer can offer
//! under any number of ids. So the table counts *pending answers*, answerer connections that
//! have not opened yet, and refuses an offer ([`OnOffer::Refused`], counted in
//! [`LinkStats::offers_refused`]) that would make more than [`PendingBounds::per_peer`] of them
//! for one peer or [`PendingBounds::total`] in all ([`DEFAULT_PENDING_BOUNDS`]: 2 and 64). A
//! pending answer stops counting when its channel opens, or when it is gone: at once when it
//! leaves the table, or, for a driver whose teardown runs on after that
//! ([`LinkTable::release_explicitly`], the native peer), when the driver says so
//! ([`LinkTable::released`]). Two per peer let a restarted peer's new offer replace an answer
//! still being torn down; 64 is well above what a ring asks of one peer at once (its fingers,
//! successors and predecessor) and far below what would exhaust a process's sockets. Our own
//! offers are not bounded here: the core decides them (`links.rs`, `max_links`).

use std::collections::{BTreeMap, HashMap};

/// How many answerer connections that have not opened yet the table allows (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBounds {
    /// For one remote peer (the current link and replaced ones not yet torn down).
    pub per_peer: usize,
    /// For every remote peer together.
    pub total: usize,
}

/// 2 per peer, 64 in all (module docs).
pub const DEFAULT_PENDING_BOUNDS: PendingBounds = PendingBounds {
    per_peer: 2,
    total: 64,
};

/// A tab's data channel holding this many bytes not yet handed to the network
/// (`RTCDataChannel.bufferedAmount`) takes no more frames: the browser queues without limit
/// (and Chromium closes a channel whose buffer passes 16 MiB), so the tab drops the frame and
/// reports it (`Input::SendFailed`) instead. 1 MiB is about 16 frames of the largest size, the
/// biggest burst the core sends one peer at once (an anti-entropy reply), and the natively
/// measured sweet spot for bytes in flight is far below it (`RtcConfig::send_buffer_limit`,
/// 64 KiB), so a healthy link never gets there.
pub const BUFFERED_HIGH_WATER: u64 = 1 << 20;

/// Whether a frame may go on a channel with `buffered` bytes queued ([`BUFFERED_HIGH_WATER`]).
pub fn below_high_water(buffered: u64) -> bool {
    buffered < BUFFERED_HIGH_WATER
}

use super::identity::{self, Fingerprint, IdProof};
use super::signal::{self, Ignored, LinkSnapshot, OfferVerdict, Role};
use super::stats::LinkStats;
use crate::id::Id;

/// One link as the table sees it.
#[derive(Debug)]
pub struct Link<H> {
    pub generation: u64,
    pub role: Role,
    /// The data channel is open.
    pub open: bool,
    /// Offerer: an answer was accepted for this link.
    pub answered: bool,
    /// Answerer: the SDP of the offer it answers (to spot the same offer delivered twice).
    pub remote_offer: Option<String>,
    /// Our own description's payload once signalled (to answer a repeated offer again, or to
    /// offer again for want of an answer).
    pub local_payload: Option<String>,
    /// The driver's handle on its stack for this link.
    pub handle: H,
}

impl<H> Link<H> {
    /// What the signalling rules need to know of this link.
    pub fn snapshot(&self) -> LinkSnapshot<'_> {
        LinkSnapshot {
            role: self.role,
            open: self.open,
            answered: self.answered,
            remote_offer: self.remote_offer.as_deref(),
        }
    }
}

/// What to do with an offer (see [`super::signal::on_offer`] for the rules).
#[derive(Debug)]
pub enum OnOffer<H> {
    /// Nothing (counted).
    Ignore(Ignored),
    /// The same offer again before the link opened: send our answer again (`None`: not
    /// gathered yet; it goes out when it is).
    Reanswer(Option<String>),
    /// Glare won by us while our offer waits for an answer: the remote's offer is ignored and
    /// ours goes to it again now, the usual way (`None`: not gathered yet; it goes out when it
    /// is). Counted as an ignored signal and an offer retry.
    Reoffer(Option<String>),
    /// Answer it with a new link ([`LinkTable::start`] as the answerer). `replaced` is the link
    /// the offer replaces, already out of the table: the driver tears it down, and reports the
    /// peer down if it was open.
    Answer { replaced: Option<Link<H>> },
    /// Answering would exceed the [`PendingBounds`]: nothing is built, any current link stays
    /// (counted in [`LinkStats::offers_refused`]).
    Refused,
    /// The offer does not prove its sender's id ([`LinkTable::verify_ids`]): nothing is built,
    /// any current link stays (counted in [`LinkStats::identity_refused`]).
    WrongIdentity(IdProof),
}

/// Every link of one peer.
#[derive(Debug)]
pub struct LinkTable<H> {
    me: u32,
    links: HashMap<u32, Link<H>>,
    next_generation: u64,
    stats: LinkStats,
    bounds: PendingBounds,
    /// Generations of the pending answers per peer: answerer links not open yet and not yet
    /// released (module docs).
    pending: HashMap<u32, Vec<u64>>,
    /// A link leaving the table is released at once (false: by [`LinkTable::released`]).
    release_on_remove: bool,
    /// Offers and answers must prove their sender's id ([`LinkTable::verify_ids`]).
    verify_ids: bool,
    /// The fingerprint each id was first proven with, and when (a count of proofs), for the
    /// trust-on-first-use rule of `super::identity`; at most [`REMEMBERED_FINGERPRINTS`].
    fingerprints: BTreeMap<u32, (Fingerprint, u64)>,
    proofs: u64,
}

/// Ids whose fingerprint a verifying table remembers (the most recently proven ones).
pub const REMEMBERED_FINGERPRINTS: usize = 4096;

impl<H> LinkTable<H> {
    /// A table with [`DEFAULT_PENDING_BOUNDS`], releasing a pending answer when it leaves the
    /// table (the driver's teardown is synchronous).
    pub fn new(me: u32) -> Self {
        Self {
            me,
            links: HashMap::new(),
            next_generation: 1,
            stats: LinkStats::default(),
            bounds: DEFAULT_PENDING_BOUNDS,
            pending: HashMap::new(),
            release_on_remove: true,
            verify_ids: false,
            fingerprints: BTreeMap::new(),
            proofs: 0,
        }
    }

    /// Every offer and answer must prove the id of its sender by its certificate fingerprint
    /// ([`super::identity`]); one that does not is refused before anything is built, and
    /// counted ([`LinkStats::identity_refused`]). A current link stays as it is, and no offer
    /// replaces an open link (a proven offer may be a replay; `super::identity`, "The rules").
    pub fn verify_ids(mut self) -> Self {
        self.verify_ids = true;
        self
    }

    /// Whether this table refuses descriptions that do not prove their sender's id.
    pub fn verifies_ids(&self) -> bool {
        self.verify_ids
    }

    /// `None` when `sdp` may come from `peer`; else why not (counted).
    fn refuse_identity(&mut self, peer: u32, sdp: &str) -> Option<IdProof> {
        if !self.verify_ids {
            return None;
        }
        let proof = match identity::proving_fingerprint(Id(peer), sdp) {
            Ok(fingerprint) => self.remember(peer, fingerprint),
            Err(why) => why,
        };
        match proof {
            IdProof::Proven => None,
            wrong => {
                self.stats.identity_refused += 1;
                Some(wrong)
            }
        }
    }

    /// Trust on first use (`super::identity`, "The rules"): `Proven` if `peer` was never
    /// proven with another fingerprint (now remembered as its), else `Changed`.
    fn remember(&mut self, peer: u32, fingerprint: Fingerprint) -> IdProof {
        self.proofs += 1;
        match self.fingerprints.get_mut(&peer) {
            Some((known, _)) if *known != fingerprint => return IdProof::Changed,
            Some((_, at)) => *at = self.proofs,
            None => {
                crate::guard::evict_oldest_when_full(
                    &mut self.fingerprints,
                    REMEMBERED_FINGERPRINTS,
                    |(_, at)| *at,
                );
                self.fingerprints.insert(peer, (fingerprint, self.proofs));
            }
        }
        IdProof::Proven
    }

    /// The same table with other bounds.
    pub fn with_bounds(mut self, bounds: PendingBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// A pending answer keeps counting after it left the table, until the driver calls
    /// [`LinkTable::released`] (its teardown runs on in the background). The driver must call
    /// it for every generation it started, once its stack is gone, or the slots leak.
    pub fn release_explicitly(mut self) -> Self {
        self.release_on_remove = false;
        self
    }

    /// The stack of link `generation` to `peer` is gone (torn down, or never built): it no
    /// longer counts as pending. Idempotent; a no-op for links that opened.
    pub fn released(&mut self, peer: u32, generation: u64) {
        if let Some(generations) = self.pending.get_mut(&peer) {
            generations.retain(|g| *g != generation);
            if generations.is_empty() {
                self.pending.remove(&peer);
            }
        }
    }

    /// Pending answers to `peer`, and in all.
    pub fn pending_answers(&self, peer: u32) -> (usize, usize) {
        let mine = self.pending.get(&peer).map_or(0, Vec::len);
        (mine, self.pending.values().map(Vec::len).sum())
    }

    /// A link left the table: released now unless the driver releases it itself.
    fn removed(&mut self, peer: u32, link: &Link<H>) {
        if self.release_on_remove {
            self.released(peer, link.generation);
        }
    }

    pub fn me(&self) -> u32 {
        self.me
    }

    /// Starts a link to `peer` in `role`: `make` builds the driver's handle for the given
    /// generation (`None` when the stack refused; nothing is recorded then). Returns the new
    /// generation. An offerer link is not started while any link to `peer` exists.
    pub fn start(
        &mut self,
        peer: u32,
        role: Role,
        remote_offer: Option<String>,
        make: impl FnOnce(u64) -> Option<H>,
    ) -> Option<u64> {
        if peer == self.me || (role == Role::Offerer && self.links.contains_key(&peer)) {
            return None;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let handle = make(generation)?;
        self.stats.attempts += 1;
        if role == Role::Answerer {
            self.pending.entry(peer).or_default().push(generation);
        }
        self.links.insert(
            peer,
            Link {
                generation,
                role,
                open: false,
                answered: false,
                remote_offer,
                local_payload: None,
                handle,
            },
        );
        Some(generation)
    }

    /// An offer from `peer` with this SDP.
    pub fn on_offer(&mut self, peer: u32, sdp: &str) -> OnOffer<H> {
        if let Some(wrong) = self.refuse_identity(peer, sdp) {
            return OnOffer::WrongIdentity(wrong);
        }
        // A proven description may be a replay (`super::identity`, "The rules"): a verifying
        // table keeps an open link; a restarted peer gets its answer once the old link's
        // failure is detected.
        if self.verify_ids && self.links.get(&peer).is_some_and(|l| l.open) {
            self.stats.ignored_signals += 1;
            return OnOffer::Ignore(Ignored::OfferOnOpenLink);
        }
        let current = self.links.get(&peer).map(Link::snapshot);
        match signal::on_offer(self.me, peer, current, sdp) {
            OfferVerdict::Ignore(why) => {
                self.stats.ignored_signals += 1;
                OnOffer::Ignore(why)
            }
            OfferVerdict::Reoffer => {
                self.stats.ignored_signals += 1;
                let payload = self.links.get(&peer).and_then(|l| l.local_payload.clone());
                self.stats.offer_retries += u64::from(payload.is_some());
                OnOffer::Reoffer(payload)
            }
            OfferVerdict::Reanswer => {
                let payload = self.links.get(&peer).and_then(|l| l.local_payload.clone());
                self.stats.reanswers += u64::from(payload.is_some());
                OnOffer::Reanswer(payload)
            }
            OfferVerdict::Answer | OfferVerdict::Replace { .. } => {
                if !self.admits_answer(peer) {
                    self.stats.offers_refused += 1;
                    return OnOffer::Refused;
                }
                let replaced = self.links.remove(&peer);
                if let Some(old) = &replaced {
                    self.removed(peer, old);
                    if old.open {
                        self.stats.failures += 1;
                    }
                }
                OnOffer::Answer { replaced }
            }
        }
    }

    /// Whether one more pending answer to `peer` stays within the bounds, counting the current
    /// link as gone when answering would release it at once.
    fn admits_answer(&self, peer: u32) -> bool {
        let (mut mine, mut total) = self.pending_answers(peer);
        let freed = self.release_on_remove
            && self.links.get(&peer).is_some_and(|link| {
                self.pending
                    .get(&peer)
                    .is_some_and(|g| g.contains(&link.generation))
            });
        if freed {
            mine -= 1;
            total -= 1;
        }
        mine < self.bounds.per_peer && total < self.bounds.total
    }

    /// An answer from `peer` with this SDP: the link it answers (now marked answered), or
    /// `None` when nobody waits for it (counted as ignored) or it does not prove `peer`'s id
    /// ([`LinkTable::verify_ids`]; counted as refused, and our offer keeps waiting for the
    /// true peer's answer).
    pub fn accept_answer(&mut self, peer: u32, sdp: &str) -> Option<&mut Link<H>> {
        if self.refuse_identity(peer, sdp).is_some() {
            return None;
        }
        match self.links.get_mut(&peer) {
            Some(link) if signal::accepts_answer(Some(link.snapshot())) => {
                link.answered = true;
                Some(link)
            }
            _ => {
                self.stats.ignored_signals += 1;
                None
            }
        }
    }

    /// The link to `peer` if `generation` is still the current one.
    pub fn current(&self, peer: u32, generation: u64) -> Option<&Link<H>> {
        self.links
            .get(&peer)
            .filter(|link| link.generation == generation)
    }

    pub fn current_mut(&mut self, peer: u32, generation: u64) -> Option<&mut Link<H>> {
        self.links
            .get_mut(&peer)
            .filter(|link| link.generation == generation)
    }

    pub fn is_current(&self, peer: u32, generation: u64) -> bool {
        self.current(peer, generation).is_some()
    }

    /// The current link to `peer`, whatever its generation.
    pub fn get(&self, peer: u32) -> Option<&Link<H>> {
        self.links.get(&peer)
    }

    pub fn get_mut(&mut self, peer: u32) -> Option<&mut Link<H>> {
        self.links.get_mut(&peer)
    }

    pub fn contains(&self, peer: u32) -> bool {
        self.links.contains_key(&peer)
    }

    /// The data channel of link `generation` opened: `Some` (the link, now open) if it is the
    /// current link and was not open yet.
    pub fn mark_open(&mut self, peer: u32, generation: u64) -> Option<&mut Link<H>> {
        let link = self
            .links
            .get_mut(&peer)
            .filter(|l| l.generation == generation && !l.open)?;
        link.open = true;
        self.stats.opened += 1;
        self.released(peer, generation);
        self.links.get_mut(&peer)
    }

    /// Our description of link `generation` is ready: remember its payload (to answer or offer
    /// it again). False if the link is no longer current.
    pub fn set_local_payload(&mut self, peer: u32, generation: u64, payload: String) -> bool {
        match self.current_mut(peer, generation) {
            Some(link) => {
                link.local_payload = Some(payload);
                true
            }
            None => false,
        }
    }

    /// The retry timer of offer `generation` fired: the payload to send again while that offer
    /// is still current, unanswered and not open (counted); `None` otherwise.
    pub fn retry_payload(&mut self, peer: u32, generation: u64) -> Option<String> {
        let link = self.current(peer, generation)?;
        if link.role != Role::Offerer || link.answered || link.open {
            return None;
        }
        let payload = link.local_payload.clone()?;
        self.stats.offer_retries += 1;
        Some(payload)
    }

    /// Link `generation` failed (timed out, ICE failed, closed by the remote): removed and
    /// returned (the driver tears it down and reports the peer down), if it was current.
    pub fn fail(&mut self, peer: u32, generation: u64) -> Option<Link<H>> {
        self.current(peer, generation)?;
        let link = self.links.remove(&peer)?;
        self.removed(peer, &link);
        self.stats.failures += 1;
        Some(link)
    }

    /// The core closed the link to `peer`: removed and returned, not counted as a failure.
    pub fn close(&mut self, peer: u32) -> Option<Link<H>> {
        let link = self.links.remove(&peer)?;
        self.removed(peer, &link);
        Some(link)
    }

    /// Every link, removed (shutdown).
    pub fn drain(&mut self) -> Vec<(u32, Link<H>)> {
        let links: Vec<(u32, Link<H>)> = self.links.drain().collect();
        for (peer, link) in &links {
            self.removed(*peer, link);
        }
        links
    }

    pub fn open_count(&self) -> usize {
        self.links.values().filter(|l| l.open).count()
    }

    /// Peers with an open link.
    pub fn open_peers(&self) -> Vec<u32> {
        let mut peers: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, l)| l.open)
            .map(|(p, _)| *p)
            .collect();
        peers.sort_unstable();
        peers
    }

    /// The table's counters, with the links open now. The driver adds what its stack counts
    /// (frames, bytes, drops, unparsable payloads).
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            links_open: self.open_count() as u64,
            ..self.stats
        }
    }

    /// Counts a payload that did not parse (the driver parses before it knows the kind).
    pub fn count_bad_signal(&mut self) {
        self.stats.bad_signals += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_sdp(n: u32) -> String {
        format!("v=0 offer {n}")
    }

    #[test]
    fn callbacks_of_a_replaced_link_fall_silent() {
        let mut table = LinkTable::new(5);
        let first = table.start(9, Role::Offerer, None, Some).unwrap();
        assert_eq!(
            table.start(9, Role::Offerer, None, Some),
            None,
            "one at a time"
        );
        // A higher id's offer while we (lower) wait for our answer: glare, ignored, and our
        // offer goes again (not signalled yet here: nothing to send).
        assert!(matches!(
            table.on_offer(9, &offer_sdp(1)),
            OnOffer::Reoffer(None)
        ));
        assert!(table.set_local_payload(9, first, "our offer".to_string()));
        assert!(matches!(
            table.on_offer(9, &offer_sdp(1)),
            OnOffer::Reoffer(Some(p)) if p == "our offer"
        ));
        // The peer's offer from a restart once ours failed.
        assert!(table.fail(9, first).is_some());
        assert!(table.fail(9, first).is_none(), "once");
        let OnOffer::Answer { replaced } = table.on_offer(9, &offer_sdp(2)) else {
            panic!("a fresh offer is answered");
        };
        assert!(replaced.is_none());
        let second = table
            .start(9, Role::Answerer, Some(offer_sdp(2)), Some)
            .unwrap();
        assert!(table.mark_open(9, first).is_none(), "old generation");
        assert!(table.mark_open(9, second).is_some());
        assert!(table.mark_open(9, second).is_none(), "opens once");
        let s = table.stats();
        assert_eq!(
            (s.attempts, s.opened, s.failures, s.links_open),
            (2, 1, 1, 1)
        );
        assert_eq!((s.ignored_signals, s.offer_retries), (2, 1));
    }

    #[test]
    fn the_same_offer_is_answered_again_until_the_link_opens() {
        let mut table: LinkTable<()> = LinkTable::new(9);
        let sdp = offer_sdp(3);
        assert!(matches!(table.on_offer(2, &sdp), OnOffer::Answer { .. }));
        let generation = table
            .start(2, Role::Answerer, Some(sdp.clone()), |_| Some(()))
            .unwrap();
        assert!(
            matches!(table.on_offer(2, &sdp), OnOffer::Reanswer(None)),
            "not gathered"
        );
        assert!(table.set_local_payload(2, generation, "answer".into()));
        assert!(matches!(table.on_offer(2, &sdp), OnOffer::Reanswer(Some(p)) if p == "answer"));
        table.mark_open(2, generation);
        assert!(matches!(table.on_offer(2, &sdp), OnOffer::Ignore(_)));
        assert_eq!(table.stats().reanswers, 1);
    }

    #[test]
    fn an_offer_is_retried_only_while_current_unanswered_and_closed() {
        let mut table: LinkTable<()> = LinkTable::new(1);
        let generation = table.start(7, Role::Offerer, None, |_| Some(())).unwrap();
        assert_eq!(
            table.retry_payload(7, generation),
            None,
            "nothing gathered yet"
        );
        table.set_local_payload(7, generation, "offer".into());
        assert_eq!(table.retry_payload(7, generation).as_deref(), Some("offer"));
        assert_eq!(
            table.retry_payload(7, generation + 1),
            None,
            "another generation"
        );
        assert!(table.accept_answer(7, "v=0 answer").is_some());
        assert!(
            table.accept_answer(7, "v=0 answer").is_none(),
            "a second answer is ignored"
        );
        assert_eq!(table.retry_payload(7, generation), None, "answered");
        assert_eq!(table.stats().offer_retries, 1);
        assert_eq!(table.stats().ignored_signals, 1);
    }

    #[test]
    fn an_offer_replacing_an_open_link_hands_it_back() {
        let mut table: LinkTable<&str> = LinkTable::new(9);
        let sdp = offer_sdp(4);
        table.on_offer(2, &sdp);
        let generation = table
            .start(2, Role::Answerer, Some(sdp), |_| Some("old"))
            .unwrap();
        table.mark_open(2, generation);
        // The remote restarted and offers anew.
        let OnOffer::Answer { replaced } = table.on_offer(2, &offer_sdp(5)) else {
            panic!("a new offer replaces the link");
        };
        let old = replaced.expect("the old link");
        assert!(old.open);
        assert_eq!(old.handle, "old");
        assert!(!table.contains(2));
        assert_eq!(table.stats().failures, 1);
    }

    /// Answers `peer`'s offer `n` if the table lets it: the new generation, or `None` if refused.
    fn answer(table: &mut LinkTable<()>, peer: u32, n: u32) -> Option<u64> {
        match table.on_offer(peer, &offer_sdp(n)) {
            OnOffer::Answer { .. } => {
                table.start(peer, Role::Answerer, Some(offer_sdp(n)), |_| Some(()))
            }
            OnOffer::Refused => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn offers_beyond_the_pending_bounds_are_refused_and_counted() {
        let bounds = PendingBounds {
            per_peer: 2,
            total: 4,
        };
        // Native: replaced answers count until their teardown is reported.
        let mut table: LinkTable<()> = LinkTable::new(1).with_bounds(bounds).release_explicitly();
        let first = answer(&mut table, 10, 1).expect("first offer");
        // A new offer replaces the pending answer; the old one is still being torn down.
        let second = answer(&mut table, 10, 2).expect("second pending answer for one peer");
        assert_eq!(table.pending_answers(10), (2, 2));
        assert_eq!(answer(&mut table, 10, 3), None, "a third for one peer");
        assert!(
            table.get(10).is_some_and(|l| l.generation == second),
            "the current link stays"
        );
        // The first one's teardown finished: room for one more.
        table.released(10, first);
        table.released(10, first);
        assert_eq!(table.pending_answers(10), (1, 1));
        let third = answer(&mut table, 10, 4).expect("after a release");
        // Other claimed ids fill the total.
        assert!(answer(&mut table, 11, 5).is_some());
        assert!(answer(&mut table, 12, 6).is_some());
        assert_eq!(table.pending_answers(13), (0, 4));
        assert_eq!(answer(&mut table, 13, 7), None, "total reached");
        // An answer that opens no longer counts.
        assert!(table.mark_open(10, third).is_some());
        table.released(10, second);
        assert_eq!(table.pending_answers(10), (0, 2));
        assert!(answer(&mut table, 13, 8).is_some());
        assert_eq!(table.stats().offers_refused, 2);
        // Our own offers are the core's to bound.
        assert!(table.start(20, Role::Offerer, None, |_| Some(())).is_some());
        assert_eq!(table.pending_answers(20), (0, 3));
    }

    #[test]
    fn a_full_browser_buffer_takes_no_more_frames() {
        assert!(below_high_water(0));
        assert!(below_high_water(BUFFERED_HIGH_WATER - 1));
        assert!(!below_high_water(BUFFERED_HIGH_WATER));
        assert!(!below_high_water(16 << 20));
    }

    #[test]
    fn a_table_releasing_on_removal_frees_the_slot_it_replaces() {
        let mut table: LinkTable<()> = LinkTable::new(1).with_bounds(PendingBounds {
            per_peer: 1,
            total: 2,
        });
        let first = answer(&mut table, 10, 1).unwrap();
        // The browser closes a replaced connection at once: one per peer is enough.
        let second = answer(&mut table, 10, 2).expect("replacement");
        assert_eq!(table.pending_answers(10), (1, 1));
        assert!(table.fail(10, first).is_none(), "not current");
        assert!(answer(&mut table, 11, 3).is_some());
        assert_eq!(answer(&mut table, 12, 4), None, "total reached");
        assert!(table.fail(10, second).is_some());
        assert_eq!(table.pending_answers(10), (0, 1));
        assert!(answer(&mut table, 12, 5).is_some());
        table.close(12);
        table.drain();
        assert_eq!(table.pending_answers(0), (0, 0));
        assert_eq!(table.stats().offers_refused, 1);
    }

    /// A description naming the certificate fingerprint `f`.
    fn signed_sdp(f: &crate::peer::identity::Fingerprint, n: u32) -> String {
        format!("v=0 {n}\r\na=fingerprint:sha-256 {}\r\n", f.to_hex())
    }

    #[test]
    fn a_verifying_table_builds_links_only_for_descriptions_that_prove_their_sender() {
        use crate::peer::identity::Fingerprint;
        let honest = Fingerprint([7; 32]);
        let forger = Fingerprint([9; 32]);
        let (peer, me) = (honest.id().0, honest.id().0.wrapping_add(1));
        // Without verification a claimed id is taken at its word.
        let mut lax: LinkTable<()> = LinkTable::new(me);
        assert!(matches!(
            lax.on_offer(peer, &signed_sdp(&forger, 1)),
            OnOffer::Answer { .. }
        ));

        let mut table: LinkTable<&str> = LinkTable::new(me).verify_ids();
        assert!(table.verifies_ids());
        // An offer under `peer`'s id with another certificate, or with none, builds nothing.
        for sdp in [signed_sdp(&forger, 1), "v=0 no fingerprint".to_string()] {
            assert!(matches!(
                table.on_offer(peer, &sdp),
                OnOffer::WrongIdentity(_)
            ));
        }
        assert!(matches!(
            table.on_offer(peer, &signed_sdp(&forger, 2)),
            OnOffer::WrongIdentity(IdProof::Mismatch { proven }) if proven == forger.id()
        ));
        // The true peer's offer is answered.
        assert!(matches!(
            table.on_offer(peer, &signed_sdp(&honest, 3)),
            OnOffer::Answer { .. }
        ));
        // A forged offer does not replace a link we hold with the true peer.
        let generation = table
            .start(peer, Role::Answerer, Some(signed_sdp(&honest, 3)), |_| {
                Some("true")
            })
            .unwrap();
        table.mark_open(peer, generation);
        assert!(matches!(
            table.on_offer(peer, &signed_sdp(&forger, 4)),
            OnOffer::WrongIdentity(_)
        ));
        assert!(table.is_current(peer, generation));
        // Nor does a proven one (a replay of an old description, or a restart not noticed yet).
        assert!(matches!(
            table.on_offer(peer, &signed_sdp(&honest, 7)),
            OnOffer::Ignore(Ignored::OfferOnOpenLink)
        ));
        assert!(table.is_current(peer, generation));

        // Our offer to `other` takes only an answer that proves `other`'s id.
        let other = forger.id().0;
        table
            .start(other, Role::Offerer, None, |_| Some("offer"))
            .unwrap();
        assert!(
            table
                .accept_answer(other, &signed_sdp(&honest, 5))
                .is_none()
        );
        assert!(
            !table.get(other).unwrap().answered,
            "still waiting for the true answer"
        );
        assert!(
            table
                .accept_answer(other, &signed_sdp(&forger, 6))
                .is_some()
        );
        assert_eq!(table.stats().identity_refused, 5);
        assert_eq!(table.stats().attempts, 2);
    }

    #[test]
    fn a_verifying_table_remembers_the_fingerprint_an_id_was_proven_with() {
        use crate::peer::identity::Fingerprint;
        let honest = Fingerprint([7; 32]);
        let peer = honest.id().0;
        let mut table: LinkTable<()> = LinkTable::new(peer.wrapping_add(1)).verify_ids();
        assert!(matches!(
            table.on_offer(peer, &signed_sdp(&honest, 1)),
            OnOffer::Answer { .. }
        ));
        // A ground certificate for the same id (the test cannot grind one: it stands in for
        // the proof a description of it would give) is refused from now on.
        let ground = Fingerprint([8; 32]);
        assert_eq!(table.remember(peer, ground), IdProof::Changed);
        assert_eq!(table.remember(peer, honest), IdProof::Proven);
        // Bounded: the id proven longest ago is forgotten first.
        for id in 0..REMEMBERED_FINGERPRINTS as u32 {
            table.remember(id.wrapping_add(1 << 31), Fingerprint([1; 32]));
        }
        assert_eq!(table.fingerprints.len(), REMEMBERED_FINGERPRINTS);
        assert_eq!(table.remember(peer, ground), IdProof::Proven, "forgotten");
    }
}
