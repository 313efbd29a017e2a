//! A peer's metrics document: one shape for the native peer's `GET /metrics` and the tab's
//! `peer.metrics()`, built here from the core's counters and the driver's.
//!
//! The document is the core's [`crate::metrics::Summary`] (the original project's `kv`,
//! `chord` and `gnutella` sections with percentiles), plus per-section hop histograms
//! (`hop_histogram`: `[[hops, count], ...]`), `kv.keys_stored`, the original's name
//! `gnutella.avg_forwarded_per_query`, and `driver` ([`DriverStats`]): links, signalling paths,
//! the introducer session, and the store ([`StorageStats`]). A driver adds only what exists
//! for it alone (the native peer: `node`, `uptime_sec`, `http`, `raw`).
//!
//! Before this module the native document came from serde and the tab's was written by hand;
//! the tab had no link counters and the native peer no `links` count or `frames_bad`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::metrics::{Histogram, Metrics};
use crate::signal_path::SignalStats;

/// Counters of a driver's link layer (webrtc-rs natively, `RTCPeerConnection` in a tab).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Links whose data channel is open now.
    pub links_open: u64,
    /// Links started, as offerer or answerer.
    pub attempts: u64,
    /// Links whose data channel opened.
    pub opened: u64,
    /// Links that failed: timed out, ICE failed, closed by the remote, or replaced while open by
    /// the remote's new offer (an explicit close by the core is not a failure).
    pub failures: u64,
    /// Frames received, and sent, over data channels; their payload bytes.
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Frames the link layer refused to send: no open channel, queue full (natively 4096 frames
    /// per link; in a tab 1 MiB in the channel's `bufferedAmount`), too large.
    pub frames_dropped: u64,
    /// Frames received but dropped because the driver's inbound queue was full (natively 1024
    /// frames or 16 MiB waiting for the driver task; a tab has no such queue).
    pub frames_in_dropped: u64,
    /// Offers refused because answering them would exceed the pending-connection bounds
    /// (`peer::table::PendingBounds`: 2 per remote peer, 64 in all).
    pub offers_refused: u64,
    /// Signalling payloads that did not parse as an offer or answer with valid SDP.
    pub bad_signals: u64,
    /// Offers and answers refused because their certificate fingerprint does not prove the id
    /// of their sender (`peer::identity`; only when the peer verifies ids).
    pub identity_refused: u64,
    /// Well-formed payloads with no use: answers nobody waits for, glare offers, duplicates.
    pub ignored_signals: u64,
    /// Answers sent again for an offer that came again before the link opened.
    pub reanswers: u64,
    /// Offers sent again for want of an answer.
    pub offer_retries: u64,
}

/// Commits of a commit-latency histogram fall into buckets of at most these many ms (and one
/// more bucket for longer).
pub const COMMIT_BOUNDS_MS: [f64; 7] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0];

/// Counters of a driver's durable store (redb natively, IndexedDB in a tab).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StorageStats {
    /// `strict`, `relaxed` or `in-memory` natively; `indexeddb` or `in-memory` in a tab.
    pub durability: String,
    /// The database file, or the IndexedDB database name (empty in memory).
    pub path: String,
    /// Entries written (one per `Stored` event; a key written twice counts twice).
    pub entries_persisted: u64,
    /// Transactions committed, durable or not.
    pub commits: u64,
    /// Commits made durable (`fsync`; every IndexedDB transaction that completed).
    pub durable_commits: u64,
    /// Commits that failed.
    pub errors: u64,
    /// Frames held back until the transaction of the entries they depend on completed.
    pub frames_held: u64,
    pub last_commit_ms: f64,
    pub mean_commit_ms: f64,
    pub max_commit_ms: f64,
    /// Commits by latency: counts of commits that took at most each of [`COMMIT_BOUNDS_MS`],
    /// and longer (the last bucket).
    pub commit_ms_histogram: [u64; 8],
    /// Entries loaded into the node at start.
    pub restored_entries: u64,
    /// Opening, reading and restoring the store at start, in milliseconds.
    pub restore_ms: f64,
}

impl StorageStats {
    /// The counters of a peer without persistence.
    pub fn in_memory() -> Self {
        Self {
            durability: "in-memory".into(),
            ..Self::default()
        }
    }

    /// One commit of `entries` entries that took `ms`.
    pub fn record_commit(&mut self, ms: f64, entries: usize, durable: bool) {
        self.commits += 1;
        self.durable_commits += u64::from(durable);
        self.entries_persisted += entries as u64;
        self.last_commit_ms = ms;
        self.max_commit_ms = self.max_commit_ms.max(ms);
        self.mean_commit_ms += (ms - self.mean_commit_ms) / self.commits as f64;
        let bucket = COMMIT_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(COMMIT_BOUNDS_MS.len());
        self.commit_ms_histogram[bucket] += 1;
    }
}

/// Counters of a driver, the `driver` section of the metrics document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriverStats {
    /// Overlay vs introducer links and signals (`overlay_links`, ...).
    #[serde(flatten)]
    pub signaling: SignalStats,
    /// Links whose data channel is open now (also `rtc.links_open`).
    pub links: u64,
    /// WebRTC connections this peer created since it started (also `rtc.attempts`): Chromium
    /// lets one tab create 500 in its lifetime.
    pub connections_created: u64,
    pub rtc: LinkStats,
    pub introducer_connected: bool,
    pub introducer_errors: u64,
    /// Frames the core sent that the link layer refused (no open channel, queue full,
    /// `bufferedAmount` above its mark): dropped, and reported to the core as
    /// `Input::SendFailed`.
    pub frames_without_channel: u64,
    /// Frames received that did not decode (malformed, oversize, unknown version).
    pub frames_bad: u64,
    pub storage: StorageStats,
}

/// `[[value, count], ...]` of the non-empty buckets.
fn histogram(h: &Histogram) -> Value {
    Value::Array(
        h.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(v, c)| json!([v, c]))
            .collect(),
    )
}

/// The metrics document of a node with counters `raw` (`Node::metrics`) and `keys_stored`
/// keys, run by a driver with counters `driver` (see the module docs). `driver.frames_bad` and
/// `driver.links` are filled in here from the core's and the link layer's counters.
pub fn document(raw: &Metrics, keys_stored: usize, driver: &DriverStats) -> Value {
    let summary = raw.summary();
    let mut doc = serde_json::to_value(&summary).unwrap_or_else(|_| json!({}));
    doc["chord"]["hop_histogram"] = histogram(&raw.chord.hops);
    doc["kv"]["hop_histogram"] = histogram(&raw.kv.hops);
    doc["kv"]["keys_stored"] = json!(keys_stored);
    doc["chord"]["send_failures"] = json!(raw.chord.send_failures);
    doc["chord"]["send_failure_closes"] = json!(raw.chord.send_failure_closes);
    // The original's name for the core's `avg_forwarded`.
    doc["gnutella"]["avg_forwarded_per_query"] = json!(summary.gnutella.avg_forwarded);
    let mut driver = driver.clone();
    driver.frames_bad =
        raw.chord.bad_frames + raw.chord.oversize_frames + raw.chord.bad_version_frames;
    driver.links = driver.rtc.links_open;
    driver.connections_created = driver.rtc.attempts;
    doc["driver"] = serde_json::to_value(&driver).unwrap_or_else(|_| json!({}));
    // Frames refused by the receiver-side checks, by reason (`guard.rs`).
    doc["rejected"] = serde_json::to_value(&raw.rejected).unwrap_or_else(|_| json!({}));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Id, Node};

    #[test]
    fn the_document_has_every_section_both_drivers_promise() {
        let mut node = Node::new(Config::with_seed(1), Id(7), 0);
        node.create_ring(0);
        let mut driver = DriverStats {
            storage: StorageStats::in_memory(),
            ..DriverStats::default()
        };
        driver.rtc.links_open = 3;
        let doc = document(&node.metrics(), node.store().len(), &driver);
        for path in [
            "/kv/total_puts",
            "/kv/hop_histogram",
            "/kv/keys_stored",
            "/chord/hop_histogram",
            "/gnutella/avg_forwarded_per_query",
            "/driver/links",
            "/driver/connections_created",
            "/driver/overlay_links",
            "/driver/rtc/reanswers",
            "/driver/rtc/offers_refused",
            "/driver/rtc/identity_refused",
            "/driver/rtc/frames_in_dropped",
            "/driver/frames_bad",
            "/driver/storage/durability",
            "/driver/storage/restored_entries",
            "/driver/storage/frames_held",
            "/chord/send_failures",
            "/chord/send_failure_closes",
            "/rejected/kv_not_member",
            "/rejected/ts_out_of_bounds",
            "/rejected/rate_limited",
        ] {
            assert!(doc.pointer(path).is_some(), "{path} missing from {doc}");
        }
        assert_eq!(doc["driver"]["links"], 3);
        assert_eq!(doc["driver"]["storage"]["durability"], "in-memory");
    }

    #[test]
    fn commits_fall_into_their_latency_buckets() {
        let mut s = StorageStats::default();
        s.record_commit(0.05, 2, true);
        s.record_commit(3.0, 1, false);
        s.record_commit(80.0, 1, true);
        assert_eq!(s.commits, 3);
        assert_eq!(s.durable_commits, 2);
        assert_eq!(s.entries_persisted, 4);
        assert_eq!(s.commit_ms_histogram, [1, 0, 0, 0, 1, 0, 0, 1]);
        assert_eq!(s.max_commit_ms, 80.0);
    }
}
