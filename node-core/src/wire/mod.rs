//! The wire format: one JSON message per data-channel frame.
//!
//! A frame is `{"v":1,"m":{"t":"<kind>",...}}`: a protocol version and a tagged message. Frames
//! larger than [`MAX_FRAME_BYTES`] are refused before parsing; unknown versions, unknown kinds and
//! malformed JSON are rejected with a [`DecodeError`] that the node counts and drops (a remote
//! peer's garbage never panics the node). Overlay signaling payloads (SDP, ICE) are opaque strings.
//!
//! Limits: a frame is at most 64 KiB, the largest message every WebRTC stack we target delivers
//! unfragmented (webrtc-rs' SCTP default; Chromium accepts 256 KiB). Keys and values are bounded
//! by the store below that, so the largest value always fits in one frame.

use crate::election::ElectionMsg;
use crate::id::Id;
use serde::{Deserialize, Serialize};

mod fast;
pub mod kv;

use kv::{KvMsg, KvReply, KvRequest};

/// Version carried by every frame; a peer speaking another version is refused.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame accepted or produced.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest successor list accepted from a peer.
pub const MAX_LIST_LEN: usize = 32;

/// Every message between two peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// First message on a new link, and again when the sender becomes a ring member.
    Hello {
        joined: bool,
    },
    /// Heartbeat probe (check_predecessor / successor liveness).
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Stabilize: ask a successor for its predecessor and successor list.
    GetNeighbors {
        nonce: u64,
        /// The sender's Lamport clock (0: not sent). Ring neighbours gossip their clocks on
        /// stabilize, so a leader's clock is never far behind the timestamps its neighbours
        /// hold (`node/maintain.rs`, `observe_neighbour_clock`).
        #[serde(default, skip_serializing_if = "is_zero")]
        clock: u64,
    },
    Neighbors {
        nonce: u64,
        pred: Option<Id>,
        succs: Vec<Id>,
        /// Other linked peers that recently notified the sender, closest first: lets a crowd of
        /// concurrent joiners that share one successor sort themselves out in a round or two
        /// instead of one node per round.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        preds: Vec<Id>,
        /// The sender's Lamport clock, as in `GetNeighbors`.
        #[serde(default, skip_serializing_if = "is_zero")]
        clock: u64,
        /// The sender's quorum fence (`node/fence.rs`): keys behind the sender up to this id
        /// are fenced for this many more milliseconds. A peer that joined into that part takes
        /// it over, and the fence with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<(Id, u64)>,
    },
    /// Global maintenance: ask our predecessor for the peers before it (`node/sync.rs`,
    /// "Strays").
    GetPreds {
        nonce: u64,
    },
    /// The sender's predecessor, then the predecessors its own predecessor named, closest
    /// first (at most k).
    Preds {
        nonce: u64,
        preds: Vec<Id>,
    },
    /// "I think I might be your predecessor."
    Notify,
    /// Graceful leave: the sender hands its neighbours to each other.
    Leaving {
        pred: Option<Id>,
        succs: Vec<Id>,
    },
    /// "I no longer need this link; do you?" Answered by `Keep` when the receiver needs it,
    /// otherwise both sides close it. Links stay open while either side needs them.
    Bye,
    Keep,
    /// "I am closing this link now (link budget); I am alive." Not a failure.
    Close,
    /// A message routed over the ring.
    Route(Routed),
    /// Between members of a replica set (replication, reads, read-repair).
    Kv(KvMsg),
    /// Bully election of a replica set's leader.
    Election(ElectionMsg),
    /// Gnutella-style flooding (query / hit).
    Flood(crate::flood::FloodMsg),
    /// Anti-entropy between replicas (Merkle descent, summaries, entries).
    Sync(crate::merkle::SyncMsg),
}

/// A message forwarded hop by hop over live links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    pub dest: Dest,
    /// Peer that started the route (answers go back to it).
    pub origin: Id,
    /// A peer linked to `origin`, for answers to an origin that is not yet in the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_via: Option<Id>,
    /// Forwards so far.
    pub hops: u8,
    pub body: Body,
}

/// Where a routed message is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", content = "c", rename_all = "snake_case")]
pub enum Dest {
    /// To whichever peer first knows the owner (successor) of this key id.
    Owner { key: Id },
    /// To this exact peer; `via` is a peer linked to it when it is not yet in the ring.
    Peer {
        id: Id,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Id>,
    },
}

/// Payload of a routed message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "b", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Body {
    /// Lookup: answer `origin` with the owner of the key.
    FindSuccessor { op: u64 },
    /// Lookup answer; `hops` is the lookup's path length.
    FoundSuccessor { op: u64, owner: Id, hops: u8 },
    /// Overlay signaling (opaque to the core: SDP offers/answers, ICE candidates).
    Signal { payload: String },
    /// A client request on its way to the key's owner and leader.
    Kv(KvRequest),
    /// The leader's answer to the request's origin.
    KvReply(KvReply),
    /// A replica-set message to a member this node holds no link to.
    KvDirect(KvMsg),
    /// An election message to a member this node holds no link to.
    Election(ElectionMsg),
    /// Ask the destination peer for its ring pointers (`node/walk.rs`).
    GetView { op: u64 },
    /// Subscribe `origin` to changes of `key` (`crate::watch`), routed to the key's owner; a
    /// `lease_ms` of 0 cancels. `since`: the newest version the watcher has seen.
    Watch {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<crate::store::Version>,
        lease_ms: u64,
    },
    /// The answer; `hops` is how many hops the `GetView` took; `agent` is what the answering
    /// peer says it is (`crate::agent`: display text, cut to `MAX_AGENT_BYTES` by the receiver;
    /// absent from peers that predate it, and ignored by them).
    View {
        op: u64,
        predecessor: Option<Id>,
        successors: Vec<Id>,
        hops: u8,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        agent: String,
    },
}

#[derive(Serialize)]
struct FrameOut<'a> {
    v: u8,
    m: &'a Message,
}

#[derive(Deserialize)]
struct FrameIn {
    v: u8,
    m: Message,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u8,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    #[error("unsupported protocol version {got} (this peer speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u8 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("list of {len} ids exceeds the limit of {MAX_LIST_LEN}")]
    ListTooLong { len: usize },
}

/// Encodes a message; `None` when it would exceed the frame limit (the caller counts and drops).
pub fn encode(message: &Message) -> Option<Vec<u8>> {
    // The ring's own small frames are written by hand (`fast`, the same bytes), the rest by serde.
    let bytes = match fast::encode(message) {
        Some(bytes) => bytes,
        None => serde_json::to_vec(&FrameOut {
            v: PROTOCOL_VERSION,
            m: message,
        })
        .ok()?,
    };
    (bytes.len() <= MAX_FRAME_BYTES).then_some(bytes)
}

/// Decodes and validates one frame.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::Oversize {
            len: bytes.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    // Canonical frames of the ring's own small messages are read by hand (`fast`); anything else,
    // including every malformed frame, goes through serde_json.
    let frame: FrameIn = match fast::decode(bytes) {
        Some(m) => FrameIn {
            v: PROTOCOL_VERSION,
            m,
        },
        None => match serde_json::from_slice(bytes) {
            Ok(frame) => frame,
            Err(err) => {
                // Tell a version mismatch apart from garbage: a newer peer may add message kinds.
                if let Ok(VersionOnly { v }) = serde_json::from_slice(bytes)
                    && v != PROTOCOL_VERSION
                {
                    return Err(DecodeError::UnsupportedVersion { got: v });
                }
                return Err(DecodeError::Malformed(err.to_string()));
            }
        },
    };
    if frame.v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: frame.v });
    }
    match &frame.m {
        Message::Neighbors { succs, preds, .. } if succs.len().max(preds.len()) > MAX_LIST_LEN => {
            Err(DecodeError::ListTooLong {
                len: succs.len().max(preds.len()),
            })
        }
        Message::Preds { preds, .. } if preds.len() > MAX_LIST_LEN => {
            Err(DecodeError::ListTooLong { len: preds.len() })
        }
        Message::Leaving { succs, .. } if succs.len() > MAX_LIST_LEN => {
            Err(DecodeError::ListTooLong { len: succs.len() })
        }
        Message::Route(Routed {
            body: Body::View { successors, .. },
            ..
        }) if successors.len() > MAX_LIST_LEN => Err(DecodeError::ListTooLong {
            len: successors.len(),
        }),
        _ => Ok(frame.m),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message::Route(Routed {
            dest: Dest::Owner { key: Id(5) },
            origin: Id(9),
            origin_via: None,
            hops: 3,
            body: Body::FindSuccessor { op: 11 },
        });
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    /// Peers that predate agents send views without one (and serde ignores the field in
    /// ours): an empty agent is left out, and a view without one reads as empty.
    #[test]
    fn views_with_and_without_an_agent() {
        let view = |agent: &str| {
            Message::Route(Routed {
                dest: Dest::Peer {
                    id: Id(5),
                    via: None,
                },
                origin: Id(9),
                origin_via: None,
                hops: 1,
                body: Body::View {
                    op: 3,
                    predecessor: None,
                    successors: vec![Id(5)],
                    hops: 1,
                    agent: agent.into(),
                },
            })
        };
        let old = encode(&view("")).unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("agent"));
        assert_eq!(decode(&old).unwrap(), view(""));
        let new = encode(&view("firefox 128")).unwrap();
        assert!(String::from_utf8_lossy(&new).contains(r#""agent":"firefox 128""#));
        assert_eq!(decode(&new).unwrap(), view("firefox 128"));
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(decode(b"{"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode(br#"{"v":2,"m":{"t":"notify"}}"#),
            Err(DecodeError::UnsupportedVersion { got: 2 })
        ));
        assert!(matches!(
            decode(&vec![b' '; MAX_FRAME_BYTES + 1]),
            Err(DecodeError::Oversize { .. })
        ));
        assert_eq!(
            decode(br#"{"v":1,"m":{"t":"notify"}}"#).unwrap(),
            Message::Notify
        );
        // A `Preds` answer longer than the list limit (global maintenance asks for k).
        let long: Vec<String> = (0..=MAX_LIST_LEN).map(|i| i.to_string()).collect();
        let frame = format!(
            r#"{{"v":1,"m":{{"t":"preds","c":{{"nonce":1,"preds":[{}]}}}}}}"#,
            long.join(",")
        );
        assert!(matches!(
            decode(frame.as_bytes()),
            Err(DecodeError::ListTooLong { .. })
        ));
    }
}
