//! The node's API: what a driver feeds in ([`Input`]), what it carries out ([`Output`]), what
//! the application hears ([`Event`]), and the results and errors of commands ([`OpId`],
//! [`OpOutcome`], [`OpError`] with its one code and HTTP status for every driver). Also the
//! read-only pictures of the ring a node hands out ([`RingView`], [`PeerView`]).
//!
//! The types live apart from [`crate::node::Node`] so that the modules the node is built from
//! (replication, walks, persistence) can name them without naming the node; `crate::node`
//! re-exports them under their old paths.

use serde::Serialize;

use crate::Time;
use crate::flood::{FloodError, FloodResult};
use crate::id::{Id, PeerId};
use crate::store::{Entry, LimitError};

/// Names one command; every command ends in exactly one [`Event::OpDone`] with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct OpId(pub u64);

/// What the driver feeds in.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Input<'a> {
    /// A data channel to `peer` opened (either side initiated it).
    PeerUp { peer: PeerId },
    /// The data channel to `peer` closed, or a `Connect` to it failed.
    PeerDown { peer: PeerId },
    /// One frame arrived from `from`.
    Receive { from: PeerId, bytes: &'a [u8] },
    /// The driver could not queue an [`Output::Send`] to `peer` (its send queue is full, a
    /// tab's `bufferedAmount` is above its mark, or no channel is open): the frame is lost.
    /// Counted (`chord.send_failures`); a long streak closes the link (`crate::links`,
    /// [`crate::links::SEND_FAILURES_UNHEALTHY`]).
    SendFailed { peer: PeerId },
    /// The time given by the last [`Output::Timeout`] was reached.
    Timeout,
}

/// What the node asks of its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Send one frame on the data channel to `to`.
    Send { to: PeerId, bytes: Vec<u8> },
    /// Open a data channel to this peer (signal it through the ring with [`Node::signal`], or
    /// through an introducer when the ring cannot reach it). Report the result as `PeerUp` or
    /// `PeerDown`.
    Connect(PeerId),
    /// Close the data channel to this peer (no `PeerDown` needed afterwards).
    Disconnect(PeerId),
    /// Boxed: most outputs are frames, and an unboxed `Event` (an operation's result, a
    /// watched value) made every output 160 bytes, each copied in and out of the node's queue.
    /// With the event boxed an output is 32 bytes (`tests/output_size.rs`).
    Event(Box<Event>),
    /// Nothing more to do now: call `handle_input(Input::Timeout)` at this time.
    Timeout(Time),
}

impl Output {
    /// `event`, boxed (see [`Output::Event`]).
    pub(crate) fn event(event: Event) -> Self {
        Self::Event(Box::new(event))
    }
}

/// Something that happened, for the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    OpDone {
        op: OpId,
        result: Result<OpOutcome, OpError>,
    },
    /// An overlay signaling payload arrived for this node's driver.
    Signal {
        from: PeerId,
        payload: String,
    },
    SuccessorChanged {
        successor: PeerId,
    },
    PredecessorChanged {
        predecessor: Option<PeerId>,
    },
    /// A peer stopped answering or its link went down.
    PeerFailed {
        peer: PeerId,
    },
    /// A replica set (sorted member ids) has a leader.
    LeaderElected {
        set: Vec<PeerId>,
        leader: PeerId,
    },
    /// The local store took a new version of a key (for the driver's persistence).
    Stored {
        key: String,
        entry: Entry,
    },
    /// Every successor of this joined node failed and none is left to stand in: it is cut off
    /// from a ring it was part of (not a ring of one it created). It does not acknowledge
    /// writes alone (`peak_set`); the driver should join again through a member it knows of
    /// (`Node::join` accepts an isolated node). Emitted once per isolation.
    Isolated,
    /// The local store dropped the tombstone of `key` (tombstone collection): the driver
    /// deletes the key from its persisted store. Nothing newer of the key is stored (a newer
    /// write would come as a later `Stored`).
    Collected {
        key: String,
    },
    /// A watched key changed ([`crate::Node::watch`], `crate::watch`): its newer version, `value`
    /// `None` for a delete. Per key, versions only go up (by `ts`, then `writer`).
    Watch {
        key: String,
        value: Option<String>,
        ts: u64,
        writer: String,
    },
}

/// Successful result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpOutcome {
    Lookup {
        key: Id,
        owner: PeerId,
        hops: u32,
    },
    Joined {
        successor: PeerId,
    },
    SignalSent,
    Left,
    /// A put or delete reached its write quorum; `ts` is its Lamport timestamp. `hops` counts
    /// the request's hops from this node to the key's leader (the last attempt's).
    Stored {
        ts: u64,
        hops: u32,
    },
    Found {
        value: String,
        ts: u64,
        writer: String,
        hops: u32,
    },
    NotFound {
        hops: u32,
    },
    /// Another peer's ring pointers, as it answered a [`Node::peer_view`].
    View(PeerView),
    /// A flood query's time is up: who answered, and how far away.
    Flooded(FloodResult),
}

/// Why a command failed, with context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    #[error("lookup of {key} timed out after {attempts} attempts")]
    LookupTimeout { key: Id, attempts: u32 },
    #[error("join through {bootstrap} timed out")]
    JoinTimeout { bootstrap: PeerId },
    #[error("bootstrap peer {bootstrap} went away before the join finished")]
    BootstrapLost { bootstrap: PeerId },
    /// The peer joined through said it is not a ring member itself (it is joining too, or
    /// restarting): nothing it could answer would name our successor.
    #[error("bootstrap peer {bootstrap} is not a ring member")]
    BootstrapNotJoined { bootstrap: PeerId },
    #[error("id {id} is already used by a ring member")]
    IdInUse { id: Id },
    #[error("no live link leads towards {to}")]
    NoRoute { to: PeerId },
    #[error("this node is not a ring member")]
    NotJoined,
    #[error("this node already joined or is joining")]
    AlreadyJoined,
    #[error("too many pending operations (limit {limit})")]
    TooManyPendingOps { limit: usize },
    #[error("payload of {len} bytes does not fit in one frame")]
    PayloadTooLarge { len: usize },
    #[error("request refused: {0}")]
    Rejected(LimitError),
    /// `last_failure`: the last reason a leader gave for not answering (e.g. which members it
    /// could not count toward the quorum), when one did.
    #[error("request for key {key:?} got no answer after {attempts} attempts{}", last_failure.as_deref().map(|r| format!(" (last refusal: {r})")).unwrap_or_default())]
    KvTimeout {
        key: String,
        attempts: u32,
        last_failure: Option<String>,
    },
    #[error("flood query refused: {0}")]
    FloodRefused(FloodError),
    #[error("this peer already watches {limit} keys")]
    TooManyWatches { limit: usize },
}

impl OpError {
    /// Every code [`OpError::code`] can return, for documentation and exhaustive tests.
    pub const CODES: [&'static str; 7] = [
        "bad_input",
        "too_large",
        "timeout",
        "not_joined",
        "no_route",
        "busy",
        "id_in_use",
    ];

    /// The machine-readable code of this failure: the one both drivers report, the native HTTP
    /// API as `{"error": {"code"}}` and the browser peer as the rejected `Error`'s `code`, so a
    /// client sees the same code for the same failure from either kind of peer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(LimitError::EmptyWriter) => "bad_input",
            Self::Rejected(_)
            | Self::PayloadTooLarge { .. }
            | Self::FloodRefused(FloodError::KeyTooLarge { .. }) => "too_large",
            Self::LookupTimeout { .. } | Self::KvTimeout { .. } | Self::JoinTimeout { .. } => {
                "timeout"
            }
            Self::NotJoined | Self::AlreadyJoined | Self::BootstrapNotJoined { .. } => "not_joined",
            Self::NoRoute { .. } | Self::BootstrapLost { .. } => "no_route",
            Self::TooManyPendingOps { .. }
            | Self::FloodRefused(FloodError::TooManyPending { .. })
            | Self::TooManyWatches { .. } => "busy",
            Self::FloodRefused(FloodError::DuplicateId { .. }) => "bad_input",
            Self::IdInUse { .. } => "id_in_use",
        }
    }

    /// The HTTP status the native API answers this failure with, a function of [`Self::code`]
    /// alone: 400 for input the caller must change, 413 for sizes, 409 for a taken id, 503 for
    /// "not now, retry" (not joined, no route yet, busy), 504 when the ring did not answer in time.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            "too_large" => 413,
            "timeout" => 504,
            "not_joined" | "no_route" | "busy" => 503,
            "id_in_use" => 409,
            _ => 400,
        }
    }
}

/// A node's view of the ring, for tools, tests and the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingView {
    pub id: Id,
    pub joined: bool,
    pub predecessor: Option<Id>,
    pub successors: Vec<Id>,
    /// `fingers[i]` = believed owner of `id + 2^i`.
    pub fingers: Vec<Option<Id>>,
    pub links: Vec<Id>,
    /// This peer's self-description ([`crate::agent`]).
    pub agent: String,
}

/// A peer's ring pointers as it answered a [`Node::peer_view`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    pub id: PeerId,
    pub predecessor: Option<PeerId>,
    pub successors: Vec<PeerId>,
    /// Hops the request took to reach the peer.
    pub hops: u32,
    /// What the peer says it is (`native 0.1.0`, `chromium 131`, `firefox 128`; empty when it
    /// said nothing): untrusted display text, bounded by [`crate::agent::bounded`].
    pub agent: String,
}

impl PeerView {
    /// One entry of a ring walk as both APIs return it (`GET /walk`, `peer.walk()`): `{id,
    /// predecessor, successors, hops, agent, kind}` with ids as 8 hex digits and `kind` one of
    /// `native`, `chromium`, `firefox`, `other` ([`crate::agent::Kind`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_string(),
            "predecessor": self.predecessor.map(|p| p.to_string()),
            "successors": self.successors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "hops": self.hops,
            "agent": self.agent,
            "kind": crate::agent::Kind::of(&self.agent).as_str(),
        })
    }
}
