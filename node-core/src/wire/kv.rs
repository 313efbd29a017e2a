//! The replicated store's messages: client requests on their way to a key's leader, the
//! leader's answers, and the messages between the members of a replica set. What they mean and
//! when they are sent is the request path's business (`crate::replication`, module docs); this
//! module only defines their shape on the wire.

use crate::id::Id;
use crate::store::{Entry, Version};
use serde::{Deserialize, Serialize};

/// A client request travelling from the origin to the key's leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// The origin's operation id.
    pub op: u64,
    pub key: String,
    pub action: KvAction,
    /// The replica set, filled in by the owner when it hands the request to the set's leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Id>,
    /// Members of `set` that the owner does not count yet (`crate::replication`, "Membership changes").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<Id>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvAction {
    Put {
        value: String,
        writer: String,
    },
    Delete {
        writer: String,
    },
    Get,
    /// A version this node already holds, written into the ring as it is (no new stamp): the
    /// hand-over after a merge (`crate::replication`, "Merging a ring of one"). Acknowledged once a write quorum
    /// holds it or something newer.
    Restore {
        entry: Entry,
    },
}

/// The leader's answer to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReply {
    pub op: u64,
    pub result: KvResult,
    /// Hops the request took from its origin to the leader (shown to users next to latency).
    #[serde(default)]
    pub hops: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvResult {
    Stored {
        ts: u64,
    },
    Found {
        value: String,
        ts: u64,
        writer: String,
    },
    NotFound,
    Failed {
        reason: String,
    },
}

/// Messages between the members of a replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvMsg {
    /// Store this version (LWW); `req` 0 means no acknowledgement is wanted (read-repair).
    Replicate {
        req: u64,
        key: String,
        entry: Entry,
        /// The client request this write carries out, `(origin, origin's op id)`: a replica
        /// remembers it so that a retry reaching another leader is not stamped a second time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wid: Option<(Id, u64)>,
    },
    /// The answer to a `Replicate` that wants one. `newer` is `None` when the replica now holds
    /// the entry; otherwise the replica kept a newer version and names its timestamp, and the
    /// entry did NOT take effect there (the leader must not count it toward the quorum).
    ReplicateAck {
        req: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer: Option<u64>,
        /// The replica has not synced since it started or took over a range: its store may
        /// lack acknowledged writes, so it does not count toward the quorum.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh: bool,
    },
    Read {
        req: u64,
        key: String,
    },
    ReadReply {
        req: u64,
        entry: Option<Entry>,
        /// As in `ReplicateAck`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh: bool,
    },
    /// The owner collected these tombstones (`crate::replication`, "Tombstone collection"): drop each key only if
    /// it holds exactly that tombstone. No answer (a lost one leaves the tombstone, which a
    /// later round gives back to the owner, who collects it again after another grace period).
    Collect {
        entries: Vec<(String, Version)>,
    },
    /// The key's owner hands a subscription on to the other members of the key's set
    /// (`crate::watch`): notify `subscriber` of every newer version of `key` for `lease_ms`
    /// (0 cancels), and at once of a held version newer than `since`.
    Watch {
        key: String,
        subscriber: Id,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Version>,
        lease_ms: u64,
    },
    /// A member of `key`'s set to a subscriber: it now holds `entry` (`crate::watch`).
    Notify {
        key: String,
        entry: Entry,
    },
}

/// Most tombstones in one [`KvMsg::Collect`] (32 maximal keys and writer ids are about 37 KiB
/// of JSON, within one 64 KiB frame).
pub const MAX_COLLECT_ENTRIES: usize = 32;
