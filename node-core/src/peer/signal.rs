//! WebRTC signalling between two peers: the payload codec and what to do with an offer or an
//! answer, as pure functions of the link table's state. The drivers carry the verdicts out with
//! their stack (webrtc-rs natively, `RTCPeerConnection` in a tab); the simulator applies the
//! same verdicts to its modelled links.
//!
//! # The rules
//! - **Payloads** are JSON `{"type":"offer"|"answer","sdp":"..."}` with every ICE candidate in
//!   the SDP (non-trickle), so a browser passes them straight to `setRemoteDescription`. Anything
//!   else is refused ([`Description::parse`]) and counted by the driver.
//! - **Glare.** Both sides offered at once: the lower id keeps its offer and ignores the remote
//!   one; the higher id drops its own attempt and answers. While the lower id's offer has no
//!   answer yet it also sends that offer again at once ([`OfferVerdict::Reoffer`]): the remote's
//!   offer proves the remote reachable now, while ours may have gone to an earlier incarnation
//!   of it (it restarted) or been lost, and would otherwise wait [`OFFER_RETRY_MS`] for its
//!   retry while the remote waits for an answer that never comes. In a true glare the remote
//!   merely gets our offer twice: it answers the first and answers again, or ignores, the copy.
//! - **Re-offers.** An offer for a peer we already hold a link with means the remote lost that
//!   link (it restarted): the old link is replaced and the offer answered. One case is
//!   ambiguous: the lower-id side, holding an *open* link it offered, cannot tell a restart from
//!   the higher side's late glare offer. It ignores the offer; a restart then costs the remote
//!   one more attempt once the old link's failure is detected.
//! - **Duplicates.** An offer whose SDP equals the one the current answerer link answered is the
//!   same offer delivered twice (every new offer carries fresh ICE credentials and a fresh
//!   certificate fingerprint). While that link is not open, the offerer evidently has not got
//!   our answer (it sends an offer again only after [`OFFER_RETRY_MS`] without one), so the
//!   answer is sent again ([`OfferVerdict::Reanswer`]); once the link is open the duplicate is
//!   ignored. Replacing the link for it would tear down a working attempt for nothing.
//! - **Retries.** An offer with no answer after [`OFFER_RETRY_MS`] is sent again, the same
//!   payload, through the introducer when there is one: the ring lost the offer or the answer
//!   (a routed signal is fire-and-forget). Without this a lost answer cost the whole connect
//!   timeout, and a peer whose answers kept getting lost never linked.
//! - **Answers** apply only to a link we offered and that has no answer yet; a second copy of
//!   the answer is ignored.

use serde::{Deserialize, Serialize};

/// An offer with no answer this long after it was sent goes again through the introducer.
pub const OFFER_RETRY_MS: u64 = 3_000;

/// A session description as signalled between peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Description {
    Offer(String),
    Answer(String),
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sdp: std::borrow::Cow<'a, str>,
}

impl Description {
    /// `{"type":"offer"|"answer","sdp":"..."}`; `None` for anything else (other types such as
    /// `rollback`, missing fields, bad JSON). The SDP itself is the driver's stack to check.
    pub fn parse(payload: &str) -> Option<Self> {
        if let Some(description) = Self::parse_plain(payload) {
            return Some(description);
        }
        let wire: Wire<'_> = serde_json::from_str(payload).ok()?;
        let sdp = wire.sdp.into_owned();
        match wire.kind {
            "offer" => Some(Self::Offer(sdp)),
            "answer" => Some(Self::Answer(sdp)),
            _ => None,
        }
    }

    /// What [`Description::encode`] writes for an SDP without escapes, read without serde_json
    /// (the simulator signals every link it makes); `None` for anything else, which then goes
    /// through serde_json.
    fn parse_plain(payload: &str) -> Option<Self> {
        let (make, rest): (fn(String) -> Self, &str) =
            if let Some(rest) = payload.strip_prefix(r#"{"type":"offer","sdp":""#) {
                (Self::Offer, rest)
            } else {
                (
                    Self::Answer,
                    payload.strip_prefix(r#"{"type":"answer","sdp":""#)?,
                )
            };
        let sdp = rest.strip_suffix(r#""}"#)?;
        is_plain(sdp).then(|| make(sdp.to_string()))
    }

    /// The payload to signal.
    pub fn encode(&self) -> String {
        let (kind, sdp) = match self {
            Self::Offer(sdp) => ("offer", sdp),
            Self::Answer(sdp) => ("answer", sdp),
        };
        if is_plain(sdp) {
            // What serde_json writes for a string it does not escape.
            return format!(r#"{{"type":"{kind}","sdp":"{sdp}"}}"#);
        }
        serde_json::to_string(&Wire {
            kind,
            sdp: std::borrow::Cow::Borrowed(sdp),
        })
        .expect("strings serialize")
    }

    pub fn sdp(&self) -> &str {
        match self {
            Self::Offer(sdp) | Self::Answer(sdp) => sdp,
        }
    }
}

/// A string serde_json writes as it is, between quotes (no quote, backslash or control
/// character).
fn is_plain(s: &str) -> bool {
    !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Which side of a link this peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Offerer,
    Answerer,
}

/// What the signalling rules need to know of the current link to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSnapshot<'a> {
    pub role: Role,
    /// The data channel is open.
    pub open: bool,
    /// Offerer: an answer was applied already.
    pub answered: bool,
    /// Answerer: the SDP of the offer this link answers.
    pub remote_offer: Option<&'a str>,
}

/// Why an offer was ignored (drivers count these as ignored signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Both sides offered; ours wins (lower id).
    Glare,
    /// An offer on an open link we offered, from a higher id: a late glare offer or a restart.
    OfferOnOpenLink,
    /// The offer our open answerer link answered.
    Duplicate,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Glare => "glare, keeping ours",
            Self::OfferOnOpenLink => "offer on open link",
            Self::Duplicate => "duplicate offer",
        }
    }
}

/// What to do with an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferVerdict {
    /// No link to the peer: answer it.
    Answer,
    /// Close the current link (report it down if it was open) and answer the offer.
    Replace {
        was_open: bool,
    },
    /// The offer our answerer link (not open yet) answers, again: send our answer again.
    Reanswer,
    /// Glare won by us while our offer has no answer: ignore the remote's offer and send our
    /// own offer again now.
    Reoffer,
    Ignore(Ignored),
}

/// The verdict on an offer with SDP `sdp` from `peer`, given our current link to it.
pub fn on_offer(me: u32, peer: u32, link: Option<LinkSnapshot<'_>>, sdp: &str) -> OfferVerdict {
    let Some(link) = link else {
        return OfferVerdict::Answer;
    };
    match link.role {
        Role::Offerer if me < peer && link.open => OfferVerdict::Ignore(Ignored::OfferOnOpenLink),
        Role::Offerer if me < peer && !link.answered => OfferVerdict::Reoffer,
        Role::Offerer if me < peer => OfferVerdict::Ignore(Ignored::Glare),
        Role::Answerer if link.remote_offer == Some(sdp) && link.open => {
            OfferVerdict::Ignore(Ignored::Duplicate)
        }
        Role::Answerer if link.remote_offer == Some(sdp) => OfferVerdict::Reanswer,
        _ => OfferVerdict::Replace {
            was_open: link.open,
        },
    }
}

/// Whether an answer applies to our current link to its sender.
pub fn accepts_answer(link: Option<LinkSnapshot<'_>>) -> bool {
    link.is_some_and(|link| link.role == Role::Offerer && !link.answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(role: Role, open: bool, remote_offer: Option<&str>) -> LinkSnapshot<'_> {
        LinkSnapshot {
            role,
            open,
            answered: false,
            remote_offer,
        }
    }

    #[test]
    fn codec_round_trips_and_refuses_the_rest() {
        for d in [
            Description::Offer("v=0\r\n\"quoted\"".into()),
            Description::Answer(String::new()),
            Description::Offer("o12".into()),
            Description::Answer("a\u{7f}é🎉".into()),
            Description::Answer("back\\slash".into()),
        ] {
            assert_eq!(Description::parse(&d.encode()), Some(d.clone()));
            // Byte for byte what serde_json writes.
            let (kind, sdp) = match &d {
                Description::Offer(sdp) => ("offer", sdp),
                Description::Answer(sdp) => ("answer", sdp),
            };
            let wire = Wire {
                kind,
                sdp: std::borrow::Cow::Borrowed(sdp),
            };
            assert_eq!(d.encode(), serde_json::to_string(&wire).unwrap());
        }
        assert_eq!(
            Description::parse(r#"{"type":"offer","sdp":"x"}"#),
            Some(Description::Offer("x".into()))
        );
        // Not what `encode` writes, but JSON all the same: serde_json reads it.
        assert_eq!(
            Description::parse(r#"{ "sdp": "a\/b", "type": "answer" }"#),
            Some(Description::Answer("a/b".into()))
        );
        for bad in [
            "",
            "{",
            r#"{"type":"offer"}"#,
            r#"{"type":"rollback","sdp":""}"#,
            r#"{"type":"offer","sdp":"x"}x"#,
            r#"{"type":"offer","sdp":"x"y"}"#,
            r#"{"type":"answer","sdp":"x\"}"#,
            "[1]",
        ] {
            assert_eq!(Description::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn glare_is_won_by_the_lower_id() {
        let pending = link(Role::Offerer, false, None);
        assert_eq!(on_offer(1, 2, Some(pending), "o"), OfferVerdict::Reoffer);
        let answered = LinkSnapshot {
            answered: true,
            ..pending
        };
        assert_eq!(
            on_offer(1, 2, Some(answered), "o"),
            OfferVerdict::Ignore(Ignored::Glare)
        );
        assert_eq!(
            on_offer(2, 1, Some(pending), "o"),
            OfferVerdict::Replace { was_open: false }
        );
    }

    #[test]
    fn an_offer_on_an_open_offered_link_replaces_it_only_on_the_higher_side() {
        let open = link(Role::Offerer, true, None);
        assert_eq!(
            on_offer(1, 2, Some(open), "o"),
            OfferVerdict::Ignore(Ignored::OfferOnOpenLink)
        );
        assert_eq!(
            on_offer(2, 1, Some(open), "o"),
            OfferVerdict::Replace { was_open: true }
        );
    }

    #[test]
    fn an_identical_offer_is_answered_again_until_open_then_ignored_and_a_new_one_replaces() {
        for open in [false, true] {
            let answering = link(Role::Answerer, open, Some("o1"));
            for (me, peer) in [(1, 2), (2, 1)] {
                let expected = if open {
                    OfferVerdict::Ignore(Ignored::Duplicate)
                } else {
                    OfferVerdict::Reanswer
                };
                assert_eq!(on_offer(me, peer, Some(answering), "o1"), expected);
                assert_eq!(
                    on_offer(me, peer, Some(answering), "o2"),
                    OfferVerdict::Replace { was_open: open }
                );
            }
        }
        assert_eq!(on_offer(1, 2, None, "o"), OfferVerdict::Answer);
    }

    #[test]
    fn answers_apply_once_to_our_own_offer() {
        assert!(accepts_answer(Some(link(Role::Offerer, false, None))));
        let answered = LinkSnapshot {
            answered: true,
            ..link(Role::Offerer, false, None)
        };
        assert!(!accepts_answer(Some(answered)));
        assert!(!accepts_answer(Some(link(
            Role::Answerer,
            false,
            Some("o")
        ))));
        assert!(!accepts_answer(None));
    }
}
