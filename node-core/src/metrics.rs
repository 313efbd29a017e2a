//! Counters and histograms a node keeps about itself; `Node::metrics()` returns a snapshot.
//!
//! Everything here is plain data (serde-serializable) so drivers can expose it as JSON
//! (`GET /metrics`) or Prometheus text without knowing the protocol.

use serde::Serialize;

/// A histogram of small integers (hop counts), with exact percentiles.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[v]` = how many samples had value `v` (the last bucket also holds larger values).
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Values above this share the last bucket (hops never come close; latencies in ms may).
    const MAX_BUCKETS: usize = 10_000;

    pub fn record(&mut self, value: u64) {
        let i = (value as usize).min(Self::MAX_BUCKETS - 1);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn mean(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        let sum: u64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(v, c)| v as u64 * c)
            .sum();
        sum as f64 / n as f64
    }

    /// The smallest value `v` such that at least `q` (0..=1) of the samples are `<= v`.
    pub fn percentile(&self, q: f64) -> u64 {
        let n = self.total();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (v, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return v as u64;
            }
        }
        (self.counts.len() - 1) as u64
    }

    pub fn merge(&mut self, other: &Self) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
}

/// Ring and transport counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChordMetrics {
    pub total_lookups: u64,
    pub lookups_ok: u64,
    pub lookups_failed: u64,
    pub lookup_retries: u64,
    /// Path length of completed lookups (forwards until the owner was known).
    pub hops: Histogram,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Frames refused by the codec (malformed JSON, unknown kind).
    pub bad_frames: u64,
    pub oversize_frames: u64,
    pub bad_version_frames: u64,
    /// Well-formed messages that made no sense in the node's state (ignored).
    pub unexpected_messages: u64,
    /// Routed messages dropped: no live link leads on, or the hop limit was reached.
    pub dropped_no_route: u64,
    pub dropped_hop_limit: u64,
    /// Outgoing messages too large for one frame.
    pub dropped_oversize_out: u64,
    pub messages_forwarded: u64,
    pub signals_sent: u64,
    pub signals_relayed: u64,
    pub signals_delivered: u64,
    pub connects_requested: u64,
    pub connects_failed: u64,
    pub links_up_total: u64,
    pub links_pruned: u64,
    pub peers_failed: u64,
    /// Peers declared failed because they stopped answering heartbeats.
    pub heartbeat_timeouts: u64,
    /// Frames the driver could not queue (`Input::SendFailed`).
    pub send_failures: u64,
    /// Links closed because the driver refused too many frames in a row to them
    /// (`links::SEND_FAILURES_UNHEALTHY`).
    pub send_failure_closes: u64,
    pub successor_changes: u64,
    /// Times every successor failed and the node was cut off (`Event::Isolated`).
    pub isolations: u64,
    pub predecessor_changes: u64,
    pub stabilize_rounds: u64,
    pub finger_sweeps: u64,
    /// Self-check lookups that found the ring skipping this node (and repaired it).
    pub self_check_repairs: u64,
}

/// Key-value counters (the original project's `kv` section plus quorum and repair counts).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KvMetrics {
    pub total_puts: u64,
    pub total_gets: u64,
    pub total_get_hits: u64,
    pub total_get_misses: u64,
    /// Origin-side latency of completed puts/deletes and gets, in milliseconds.
    pub put_latency_ms: Histogram,
    pub get_latency_ms: Histogram,
    /// Hops of completed requests from the origin to the key's leader.
    pub hops: Histogram,
    /// Requests that ran out of time at the origin.
    pub failed: u64,
    pub retries: u64,
    pub read_repairs: u64,
    /// Replicate frames sent again to members that did not acknowledge a write.
    pub replicate_retries: u64,
    /// Writes a leader stamped again because a replica held a newer version.
    pub restamps: u64,
    /// Reads that wrote the newest version back to a quorum before answering.
    pub read_write_backs: u64,
    /// Write requests that came again (retry or duplicate) and were not stamped twice.
    pub duplicate_requests: u64,
    /// Keys a node that served alone wrote into the ring it then joined ("Merging a ring of
    /// one" in replication.rs), and keys it held outside their replica set and wrote back to
    /// it (global maintenance, `node/sync.rs`): queued, confirmed by a write quorum, and given
    /// up.
    pub handover_keys: u64,
    pub handed_over: u64,
    pub handover_failed: u64,
    pub quorum_failures: u64,
    pub dropped_requests: u64,
    /// Requests refused because their key lay in a fenced part of our range, fences set, and
    /// fences that lifted by expiry rather than by the peers coming back (`node/fence.rs`).
    pub fenced_requests: u64,
    pub fences: u64,
    pub fences_expired: u64,
    pub rejected_entries: u64,
    pub elections_started: u64,
    pub elections_won: u64,
    pub keys_stored: usize,
    /// Anti-entropy rounds this node opened, and the bytes of every anti-entropy frame it sent.
    pub anti_entropy_rounds: u64,
    pub anti_entropy_bytes: u64,
    /// Entries applied from anti-entropy exchanges (repairs and handoffs).
    pub anti_entropy_applied: u64,
    /// Anti-entropy messages refused (a range the pair does not share, or a malformed step).
    pub anti_entropy_refused: u64,
    /// Tombstones this node dropped (as the key's owner, or on its owner's `Collect` order).
    pub tombstones_collected: u64,
    /// Replicate / Read / Collect not sent because no link to the member was open (members
    /// take them only over a direct link; a link is requested instead).
    pub requests_awaiting_link: u64,
    /// Live updates (`crate::watch`): keys this peer watches, subscriptions it holds for
    /// others, subscriptions it sent (renewals included), notifications it sent, events it
    /// emitted, notifications dropped as not newer than the last event, and notifications for
    /// keys it does not watch.
    pub watching: usize,
    pub watch_subscriptions: usize,
    pub watch_requests_sent: u64,
    pub watch_notifies_sent: u64,
    pub watch_events: u64,
    pub watch_duplicates: u64,
    pub watch_unsolicited: u64,
}

/// Frames (or parts of frames) refused because the sender was not entitled to send them or
/// they exceeded a bound, by reason (see `guard.rs` and docs/threat-model.md). Always 0 between
/// honest peers with the same view of the ring; churn makes a few.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Rejected {
    /// Anti-entropy over our own range from a peer that is not one of our replica successors.
    pub sync_not_replica: u64,
    /// Anti-entropy over a range the sender is not entitled to (not its own primary range as
    /// far as we know, a hand-back beyond our range).
    pub sync_bad_range: u64,
    /// Replicate / Read / Collect from a peer that cannot be in the key's replica set (or for a
    /// key whose set cannot include us).
    pub kv_not_member: u64,
    /// Acknowledgements and read replies for unknown requests or from peers outside the set.
    pub answer_not_asked: u64,
    /// Routed replica or election messages claiming the id of a peer we are linked to.
    pub spoofed_origin: u64,
    /// Request or election sets that are too large, miss us, or name implausible members.
    pub bad_set: u64,
    /// Timestamps above the bound (`guard::TS_CEILING`, or 2^40 ahead of our clock); the
    /// entries carrying them are dropped.
    pub ts_out_of_bounds: u64,
    /// Expensive requests over a link's budget (anti-entropy, floods, walks).
    pub rate_limited: u64,
    /// Elections refused because the table of running elections is full.
    pub elections_full: u64,
    /// Subscriptions refused because the subscriber (64) or the whole table (4096) is full
    /// (`crate::watch`).
    pub watch_full: u64,
}

/// A snapshot of everything the node counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    pub chord: ChordMetrics,
    pub kv: KvMetrics,
    pub gnutella: crate::flood::FloodStats,
    /// Refused frames by reason (issue 11).
    pub rejected: Rejected,
    /// Open links now.
    pub links_up: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.01), 1);
        assert_eq!(h.percentile(0.5), 50);
        assert_eq!(h.percentile(0.99), 99);
        assert_eq!(h.percentile(1.0), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }
}

/// Percentiles of a histogram.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl From<&Histogram> for Percentiles {
    fn from(h: &Histogram) -> Self {
        Self {
            count: h.total(),
            mean: h.mean(),
            p50: h.percentile(0.5),
            p90: h.percentile(0.9),
            p99: h.percentile(0.99),
            max: h.percentile(1.0),
        }
    }
}

/// The original project's `GET /metrics` shape (sections `kv`, `chord`, `gnutella`, same field
/// names) plus percentiles and the repair counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub kv: KvSummary,
    pub chord: ChordSummary,
    pub gnutella: GnutellaSummary,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KvSummary {
    pub total_puts: u64,
    pub total_gets: u64,
    pub total_get_hits: u64,
    pub total_get_misses: u64,
    pub avg_put_latency_sec: f64,
    pub avg_get_latency_sec: f64,
    pub put_latency_ms: Percentiles,
    pub get_latency_ms: Percentiles,
    pub hops: Percentiles,
    pub failed: u64,
    pub read_repairs: u64,
    pub quorum_failures: u64,
    /// Requests refused in a fenced part of a range (`node/fence.rs`).
    pub fenced_requests: u64,
    pub elections_started: u64,
    pub elections_won: u64,
    pub keys_stored: usize,
    pub anti_entropy_rounds: u64,
    pub anti_entropy_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChordSummary {
    pub total_lookups: u64,
    pub avg_hops: f64,
    pub hops: Percentiles,
    pub lookups_failed: u64,
    pub links_up: usize,
    pub bad_frames: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GnutellaSummary {
    pub total_queries: u64,
    pub avg_forwarded: f64,
    pub duplicates_dropped: u64,
}

impl Metrics {
    /// The snapshot in the original project's shape, with percentiles.
    pub fn summary(&self) -> Summary {
        let kv = &self.kv;
        let c = &self.chord;
        Summary {
            kv: KvSummary {
                total_puts: kv.total_puts,
                total_gets: kv.total_gets,
                total_get_hits: kv.total_get_hits,
                total_get_misses: kv.total_get_misses,
                avg_put_latency_sec: kv.put_latency_ms.mean() / 1_000.0,
                avg_get_latency_sec: kv.get_latency_ms.mean() / 1_000.0,
                put_latency_ms: (&kv.put_latency_ms).into(),
                get_latency_ms: (&kv.get_latency_ms).into(),
                hops: (&kv.hops).into(),
                failed: kv.failed,
                read_repairs: kv.read_repairs,
                quorum_failures: kv.quorum_failures,
                fenced_requests: kv.fenced_requests,
                elections_started: kv.elections_started,
                elections_won: kv.elections_won,
                keys_stored: kv.keys_stored,
                anti_entropy_rounds: kv.anti_entropy_rounds,
                anti_entropy_bytes: kv.anti_entropy_bytes,
            },
            chord: ChordSummary {
                total_lookups: c.total_lookups,
                avg_hops: c.hops.mean(),
                hops: (&c.hops).into(),
                lookups_failed: c.lookups_failed,
                links_up: self.links_up,
                bad_frames: c.bad_frames + c.oversize_frames + c.bad_version_frames,
            },
            gnutella: GnutellaSummary {
                total_queries: self.gnutella.total_queries,
                avg_forwarded: self.gnutella.avg_forwarded(),
                duplicates_dropped: self.gnutella.duplicates_dropped,
            },
        }
    }
}
