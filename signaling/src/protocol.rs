//! The introducer's wire protocol: one JSON object per WebSocket text frame, tagged by `type`.
//!
//! Client to server:
//! - `{"type":"hello","peer":"0a1b2c3d"}`: register this session under a ring id (8 lowercase hex
//!   digits, the `node-core` `Id` display format). Answered by `welcome`. An id is one
//!   session's (first come, first served: a second hello under it is `duplicate_peer`), except
//!   at an introducer that serves a ring proving ids by the certificates of its links
//!   (node-core's `peer::identity`; `SignalingConfig::share_verified_ids`, set by
//!   `chord-node --verify-ids` and the signaling binary's `--verified-ids`): there a hello
//!   that says `"verified":true` joins whatever sessions already hold the id, and every signal
//!   to the id goes to all of them. Only the true peer can answer such a signal in a way its
//!   sender accepts, so taking an id first ("squatting") keeps nobody out; the squatter still
//!   reads the signals (SDP, with the sender's ICE candidates, its addresses).
//! - `{"type":"signal","to":"0a1b2c3d","payload":"..."}`: relay `payload` (a string, opaque to
//!   the server: SDP, ICE, whatever the peers agree on) to the session registered as `to`.
//!
//! Server to client:
//! - `{"type":"welcome","peers":["0a1b2c3d",...]}`: up to `welcome_peers` other live peers,
//!   picked at random, sorted.
//! - `{"type":"signal","from":"0a1b2c3d","payload":"..."}`: a relayed signal.
//! - `{"type":"error","code":"bad_json","reason":"..."}`: see [`ErrorCode`]. The session stays
//!   open after every error except `too_many_sessions`, `too_many_from_address`,
//!   `hello_timeout` and `idle_timeout`, after which the server closes it.
//!
//! This is the introducer protocol of docs/design.md section 7. Unknown fields are ignored;
//! unknown `type`s are `bad_json`. The server keeps nothing but the live sessions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A peer's ring id as the introducer sees it: 32 bits, written as exactly 8 lowercase hex
/// digits (the same text as `node_core::id::Id`'s `Display`, so `PeerId::new(id.0)` converts).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerId(u32);

impl PeerId {
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    pub const fn as_u32(self) -> u32 {
        self.0
    }
}

impl From<u32> for PeerId {
    fn from(raw: u32) -> Self {
        Self(raw)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// Text that is not 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer id must be 8 lowercase hex digits, got {shown:?}")]
pub struct InvalidPeerId {
    /// The offending text, cut to a few characters so an error never echoes a whole frame.
    shown: String,
}

impl FromStr for PeerId {
    type Err = InvalidPeerId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Strict on purpose: one spelling per id, so ids compare equal as text on every peer.
        let well_formed =
            text.len() == 8 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u32::from_str_radix(text, 16) {
            Ok(raw) if well_formed => Ok(Self(raw)),
            _ => Err(InvalidPeerId {
                shown: text.chars().take(16).collect(),
            }),
        }
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an `error` frame says went wrong. Serialized as the snake_case name (`"bad_json"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not JSON, not a known message `type`, misses a field, or is binary.
    BadJson,
    /// A `peer` or `to` field is not 8 lowercase hex digits.
    BadPeerId,
    /// A `signal` arrived before this session's `hello`.
    NotHello,
    /// The `hello` id is already registered (by another session, or this one said hello before).
    DuplicatePeer,
    /// No live session is registered under the `signal`'s `to`.
    UnknownTarget,
    /// The target's inbound queue is full (it reads too slowly); the signal was dropped.
    TargetBusy,
    /// The frame is longer than `max_frame_bytes`; it was dropped unread.
    Oversize,
    /// The server is at `max_sessions`; it closes the connection after this error.
    TooManySessions,
    /// The session sent faster than its token bucket allows; the frame was dropped.
    RateLimited,
    /// The source address already has `max_sessions_per_addr` sessions open; the server closes
    /// the connection after this error.
    TooManyFromAddress,
    /// No `hello` within `hello_timeout` of connecting; the server closes the connection.
    HelloTimeout,
    /// Nothing (not even a pong) arrived for `idle_timeout`; the server closes the connection.
    IdleTimeout,
    /// The HTTP request's `Host` is not one this server answers to (DNS rebinding); refused
    /// before any WebSocket upgrade, with a 403 and a JSON body.
    BadHost,
    /// The request came from a web page whose `Origin` is not allowed; refused like `BadHost`.
    BadOrigin,
}

impl ErrorCode {
    /// Every code, in a stable order (for metrics tables).
    pub const ALL: [Self; 14] = [
        Self::BadJson,
        Self::BadPeerId,
        Self::NotHello,
        Self::DuplicatePeer,
        Self::UnknownTarget,
        Self::TargetBusy,
        Self::Oversize,
        Self::TooManySessions,
        Self::RateLimited,
        Self::TooManyFromAddress,
        Self::HelloTimeout,
        Self::IdleTimeout,
        Self::BadHost,
        Self::BadOrigin,
    ];

    /// The wire name, e.g. `"bad_json"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadPeerId => "bad_peer_id",
            Self::NotHello => "not_hello",
            Self::DuplicatePeer => "duplicate_peer",
            Self::UnknownTarget => "unknown_target",
            Self::TargetBusy => "target_busy",
            Self::Oversize => "oversize",
            Self::TooManySessions => "too_many_sessions",
            Self::RateLimited => "rate_limited",
            Self::TooManyFromAddress => "too_many_from_address",
            Self::HelloTimeout => "hello_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::BadHost => "bad_host",
            Self::BadOrigin => "bad_origin",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    Hello {
        peer: PeerId,
        /// The id is proven by link certificates: share it with other sessions (module docs).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        verified: bool,
    },
    Signal {
        to: PeerId,
        payload: String,
    },
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        // Cannot fail: only strings and ids, no maps with non-string keys.
        serde_json::to_string(self).expect("client message serializes")
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    Welcome { peers: Vec<PeerId> },
    Signal { from: PeerId, payload: String },
    Error { code: ErrorCode, reason: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // Cannot fail: only strings, ids and a unit enum.
        serde_json::to_string(self).expect("server message serializes")
    }

    pub fn error(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self::Error {
            code,
            reason: reason.into(),
        }
    }
}

/// A frame the server could not accept, with the code and reason for its `error` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub reason: String,
}

/// The client frames with ids still as text, so a malformed id can be told apart from malformed
/// JSON (`bad_peer_id` vs `bad_json`).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RawClientMessage {
    Hello {
        peer: String,
        #[serde(default)]
        verified: bool,
    },
    Signal {
        to: String,
        payload: String,
    },
}

/// Longest `reason` the server echoes; serde's messages can quote the input.
const MAX_REASON_CHARS: usize = 200;

/// Parses one client text frame. Pure: no size or rate checks (the session does those first).
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let raw: RawClientMessage = serde_json::from_str(text).map_err(|err| ProtocolError {
        code: ErrorCode::BadJson,
        reason: err.to_string().chars().take(MAX_REASON_CHARS).collect(),
    })?;
    let peer_id = |field: &str, text: &str| {
        text.parse::<PeerId>().map_err(|err| ProtocolError {
            code: ErrorCode::BadPeerId,
            reason: format!("`{field}`: {err}"),
        })
    };
    Ok(match raw {
        RawClientMessage::Hello { peer, verified } => ClientMessage::Hello {
            peer: peer_id("peer", &peer)?,
            verified,
        },
        RawClientMessage::Signal { to, payload } => ClientMessage::Signal {
            to: peer_id("to", &to)?,
            payload,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_through_text() {
        for raw in [0, 1, 0xdead_beef, u32::MAX] {
            let id = PeerId::new(raw);
            assert_eq!(id.to_string().parse::<PeerId>(), Ok(id));
        }
        assert_eq!(PeerId::new(0xab).to_string(), "000000ab");
    }

    #[test]
    fn peer_id_rejects_other_spellings() {
        for bad in [
            "",
            "abc",
            "0000000A",
            "+0000000",
            "0x000000",
            "000000000",
            " 0000000",
            "ggggggggg",
        ] {
            assert!(bad.parse::<PeerId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parse_classifies_errors() {
        let code = |text: &str| parse_client_message(text).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"hello"}"#), ErrorCode::BadJson);
        assert_eq!(
            code(r#"{"type":"signal","to":"00000001","payload":{}}"#),
            ErrorCode::BadJson
        );
        assert_eq!(
            code(r#"{"type":"hello","peer":"XYZ"}"#),
            ErrorCode::BadPeerId
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"1","payload":"x"}"#),
            ErrorCode::BadPeerId
        );
    }

    #[test]
    fn parse_accepts_the_documented_shapes() {
        assert_eq!(
            parse_client_message(r#"{"type":"hello","peer":"0a1b2c3d","extra":1}"#),
            Ok(ClientMessage::Hello {
                peer: PeerId::new(0x0a1b_2c3d),
                verified: false,
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"hello","peer":"0a1b2c3d","verified":true}"#),
            Ok(ClientMessage::Hello {
                peer: PeerId::new(0x0a1b_2c3d),
                verified: true,
            })
        );
        // Written without the flag when it is false, so older introducers read it as before.
        let plain = ClientMessage::Hello {
            peer: PeerId::new(1),
            verified: false,
        };
        assert_eq!(plain.to_json(), r#"{"type":"hello","peer":"00000001"}"#);
        assert_eq!(
            parse_client_message(r#"{"type":"signal","to":"00000002","payload":"sdp"}"#),
            Ok(ClientMessage::Signal {
                to: PeerId::new(2),
                payload: "sdp".into()
            })
        );
    }

    #[test]
    fn server_messages_have_the_documented_shapes() {
        let json =
            |m: ServerMessage| serde_json::from_str::<serde_json::Value>(&m.to_json()).unwrap();
        assert_eq!(
            json(ServerMessage::Welcome {
                peers: vec![PeerId::new(1)]
            }),
            serde_json::json!({"type": "welcome", "peers": ["00000001"]})
        );
        assert_eq!(
            json(ServerMessage::Signal {
                from: PeerId::new(2),
                payload: "p".into()
            }),
            serde_json::json!({"type": "signal", "from": "00000002", "payload": "p"})
        );
        assert_eq!(
            json(ServerMessage::error(ErrorCode::TooManySessions, "full")),
            serde_json::json!({"type": "error", "code": "too_many_sessions", "reason": "full"})
        );
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
