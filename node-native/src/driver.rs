//! The native peer's driver: one tokio task that owns the sans-IO [`Peer`] (node-core's peer
//! session: the node, signalling paths, the join plan, group commit) and feeds it.
//!
//! A select loop over (the node's next deadline, WebRTC link events, the introducer WebSocket,
//! signals that reach this peer through its own mounted introducer, commands from the HTTP
//! API) that hands every input to the core and carries out every output (thin drivers,
//! docs/conventions.md habit 5). Protocol decisions stay in `node-core`; this file only moves
//! bytes and keeps time.
//!
//! Signaling paths are the peer session's (`node_core::peer::session`): an SDP payload goes
//! through the ring once any link is open, else through the remote introducer (the
//! `--bootstrap` WebSocket); answers go back the way the offer came (ring, remote introducer,
//! or this peer's own introducer for a newcomer that bootstrapped here). This driver only
//! carries `PeerOutput::Introducer` to the right session.
//!
//! Staying in the ring (issue 12's process lifecycle): the introducer session is opened again
//! with backoff whenever it cannot connect or drops, trying `--bootstrap` and then the
//! introducers this peer remembers from earlier runs ([`crate::known_peers`]). A peer that
//! cannot join serves as a ring of one: at once when it has no `--bootstrap` and nothing from
//! an earlier run (or the introducer lists nobody else); after [`ALONE_AFTER`] when no
//! introducer answered and nobody bootstraps through it; while candidates exist (peers an
//! introducer listed, peers with a session on its own introducer) it keeps joining through
//! them in turn (node-core's join plan, `node_core::peer::join`: a failed join is tried again
//! after its pause, through the next candidate), for at most the plan's patience after start
//! with `--bootstrap`, or half of it without (the ring's first peer, which the others of a
//! ring restarted at once wait for). A ring of one
//! merges when it learns of other peers: every [`MERGE_CHECK`] it looks at the peers its remote
//! introducer's welcome listed and at the sessions on its own mounted introducer (peers whose
//! `--bootstrap` is this peer), and joins through one that was there at the previous check too
//! (so a newcomer that is joining through it is not taken for a ring to merge with). A failed
//! merge leaves it a ring of one again (`Node::join` on a node that `is_alone`). A peer that is
//! a member of a larger ring ignores welcomes.
//!
//! When a ring of one merges into another ring, the core writes every key it holds into that
//! ring (node-core/src/replication.rs, "Merging a ring of one"); a key written on both sides
//! meanwhile keeps the higher Lamport timestamp, not the later write. So a peer without
//! `--bootstrap` that was part of a ring before (it restored data, or remembers introducers)
//! does not serve alone at once: for [`ALONE_AFTER`] it looks for that ring (the peers
//! reconnecting to its introducer, the remembered introducers) and joins it as a newcomer,
//! which avoids such conflicts. A peer restarted `--in-memory` without `--bootstrap` has nothing to go by and
//! serves alone at once.
//!
//! Persistence ([`crate::storage`]): a durable peer restores its store right after
//! `Node::new`, before it joins or creates a ring. Each drain of the core is a group commit
//! (node-core's `peer::commit`, the rule a tab follows too): the outputs after a write wait,
//! the drain's writes are committed in one transaction, and only then are the outputs carried
//! out (sends, replies), so in strict mode nothing that depends on a write leaves this peer
//! before the write is on disk (`node_core::persist`). A failed commit stops the driver: the peer then behaves like a
//! crashed one (`PeerHandle::closed`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use node_core::node::{Config, Event, OpError, OpId, OpOutcome};
use node_core::peer::commit::Batch;
use node_core::peer::join::{JOIN_PATIENCE_MS, JOIN_RETRY_MS, Retry};
use node_core::signal_path::SignalPath;
use node_core::{Id, Node, Peer, PeerOutput};
use serde::Serialize;
use signaling::{
    ClientMessage, ErrorCode, LocalReceiver, LocalSender, PeerId as SigPeer, ServerMessage,
    SignalingState,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::known_peers::KnownPeers;
use crate::rtc::{Rtc, RtcConfig, RtcEvent};
use crate::storage::{Loaded, Storage, StorageError, StorageStats};

/// A request from the HTTP API (or a test) to the node.
#[derive(Debug)]
pub enum Command {
    Put {
        key: String,
        value: String,
        writer: String,
        /// A Lamport timestamp the client has seen, observed before the write.
        client_ts: Option<u64>,
    },
    Delete {
        key: String,
        writer: String,
    },
    Get {
        key: String,
    },
    Flood {
        key: String,
        ttl: u8,
    },
    Lookup {
        key: u32,
    },
    /// Ask a peer for its ring pointers and agent (one step of a ring walk, `GET /walk`).
    View {
        peer: Id,
    },
    /// Leave the ring gracefully (the neighbours are told, the links closed); answered with
    /// `OpOutcome::Left`.
    Leave,
}

/// A subscription of an API client to a key's changes (`GET /watch`): the driver watches the
/// key in the core while at least one client does, and hands each `Event::Watch` to every
/// client's channel as `node_core::watch::event_json`.
#[derive(Debug)]
enum WatchCommand {
    Subscribe {
        key: String,
        events: mpsc::Sender<serde_json::Value>,
        reply: oneshot::Sender<Result<u64, OpError>>,
    },
    Unsubscribe {
        key: String,
        id: u64,
    },
}

/// Clients watching at once, over all keys (each also needs one of the core's 64 keys).
pub const MAX_API_WATCHERS: usize = 256;
/// Events queued per client: a client that falls this far behind loses its stream (it ends;
/// the client reconnects) rather than the driver buffering without bound or skipping events.
pub const WATCH_QUEUE: usize = 64;

/// One client's stream of changes of a key; dropping it ends the subscription.
#[derive(Debug)]
pub struct Watcher {
    key: String,
    id: u64,
    events: mpsc::Receiver<serde_json::Value>,
    control: mpsc::UnboundedSender<WatchCommand>,
}

impl Watcher {
    /// The next change (`node_core::watch::event_json`); `None` once the stream ended (the
    /// client fell [`WATCH_QUEUE`] events behind, or the driver stopped).
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        self.events.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.control.send(WatchCommand::Unsubscribe {
            key: std::mem::take(&mut self.key),
            id: self.id,
        });
    }
}

/// What the driver answers a [`Command`] with.
pub type Reply = Result<OpOutcome, OpError>;

/// A snapshot for `GET /ring` and `GET /metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ring: node_core::RingView,
    pub metrics: node_core::metrics::Summary,
    pub raw: node_core::Metrics,
    pub keys_stored: usize,
    pub driver: DriverStats,
}

/// Counters of the driver itself: node-core's shape, the same a tab reports.
pub use node_core::peer::stats::DriverStats;

/// Handle to a running driver.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    id: Id,
    commands: mpsc::Sender<(Command, oneshot::Sender<Reply>)>,
    status: mpsc::Sender<oneshot::Sender<Status>>,
    /// Unbounded so that a dropped [`Watcher`] can always unsubscribe; bounded in practice by
    /// [`MAX_API_WATCHERS`] subscriptions and their unsubscriptions.
    watch: mpsc::UnboundedSender<WatchCommand>,
}

impl PeerHandle {
    pub fn id(&self) -> Id {
        self.id
    }

    /// Runs one command to completion (the core bounds every operation with a deadline).
    pub async fn call(&self, command: Command) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((command, tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.status.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Watches `key` (`GET /watch`): `None` when the driver stopped, the core's error for a
    /// bad key or too many watches (`busy`: the core's 64 keys, or [`MAX_API_WATCHERS`]).
    pub async fn watch(&self, key: String) -> Option<Result<Watcher, OpError>> {
        let (events_tx, events) = mpsc::channel(WATCH_QUEUE);
        let (tx, rx) = oneshot::channel();
        self.watch
            .send(WatchCommand::Subscribe {
                key: key.clone(),
                events: events_tx,
                reply: tx,
            })
            .ok()?;
        Some(rx.await.ok()?.map(|id| Watcher {
            key,
            id,
            events,
            control: self.watch.clone(),
        }))
    }

    /// Resolves when the driver has stopped (a failed commit to its store, see the log).
    pub async fn closed(&self) {
        self.commands.closed().await;
    }
}

/// A peer's durable store, opened and read before the driver starts (so the binary can report
/// a bad data directory and exit).
#[derive(Debug)]
pub struct Persistence {
    pub storage: Storage,
    pub loaded: Loaded,
}

/// How to start a peer.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub id: Id,
    pub node: Config,
    pub rtc: RtcConfig,
    /// `ws://host:port/ws` of an introducer; `None` starts a new ring.
    pub bootstrap: Option<String>,
    /// This peer's HTTP `host:port`, reported to flood origins when it holds a key.
    pub http_addr: Option<String>,
    /// This peer's own mounted introducer: a ring of one merges with the peers that have a
    /// session on it. `None` when it mounts none.
    pub introducer: Option<SignalingState>,
    /// Introducers remembered from earlier runs: tried after `bootstrap`, and updated when a
    /// session reaches one ([`crate::known_peers`]).
    pub known: KnownPeers,
}

/// What the introducer session task tells the driver.
#[derive(Debug)]
enum FromIntroducer {
    Up { url: String },
    Message(ServerMessage),
    Down,
}

/// What the driver tells the introducer session task.
#[derive(Debug)]
enum ToIntroducer {
    Frame(String),
    /// Close the session and open a new one (for a fresh welcome).
    Reconnect,
}

/// Starts the driver task. `local` is this peer's session on its own mounted introducer;
/// without `persistence` the peer keeps its store in memory only.
pub fn spawn(
    config: DriverConfig,
    local: Option<(LocalSender, LocalReceiver)>,
    persistence: Option<Persistence>,
) -> PeerHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (status_tx, status_rx) = mpsc::channel(16);
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let handle = PeerHandle {
        id: config.id,
        commands: cmd_tx,
        status: status_tx,
        watch: watch_tx,
    };
    tokio::spawn(run(config, local, persistence, cmd_rx, status_rx, watch_rx));
    handle
}

struct Driver {
    /// The node and the policy both drivers share (node-core's peer session).
    peer: Peer,
    rtc: Rtc,
    started: Instant,
    pending: HashMap<OpId, oneshot::Sender<Reply>>,
    ws_out: Option<mpsc::UnboundedSender<ToIntroducer>>,
    local_out: Option<LocalSender>,
    stats: DriverStats,
    join_pending: bool,
    storage: Option<Storage>,
    /// Turn among peers that bootstrap through this one, and among merge candidates.
    local_turn: usize,
    /// A join through the peers that bootstrap through this one is tried again at this time
    /// (the join plan's own retries are the peer session's timer).
    rejoin_at: Option<Instant>,
    /// Not joined by then (no introducer answered, or every join failed): serve as a ring of
    /// one, and keep looking for peers to merge with.
    alone_at: Option<Instant>,
    /// This peer has been a ring member (of one or more): after a failed join it serves as a
    /// ring of one again instead of staying out of every ring.
    was_member: bool,
    /// Next look for peers a ring of one could merge with, and the candidates seen at the
    /// previous look.
    merge_at: Instant,
    merge_seen: BTreeSet<u32>,
    /// Peers on this peer's own introducer a merge join went through (their signals go by the
    /// local introducer).
    local_peers: HashSet<u32>,
    /// The remote introducer's latest welcome, without this peer.
    welcome: Vec<u32>,
    last_refresh: Instant,
    introducer: Option<SignalingState>,
    known: KnownPeers,
    /// Started with `--bootstrap` (not the ring's first peer).
    has_bootstrap: bool,
    /// API clients watching keys: key -> client id -> its event queue.
    watchers: BTreeMap<String, BTreeMap<u64, mpsc::Sender<serde_json::Value>>>,
    next_watcher: u64,
}

/// Pause before a failed join is tried again.
const REJOIN_DELAY: Duration = Duration::from_millis(JOIN_RETRY_MS);
/// A peer given `--bootstrap` that is not joined after this long serves as a ring of one.
pub const ALONE_AFTER: Duration = Duration::from_secs(10);
/// How often a ring of one looks for peers to merge with.
pub const MERGE_CHECK: Duration = Duration::from_secs(2);
/// A ring of one with an introducer session but nobody to merge with reopens the session this
/// often, for a fresh welcome.
const WELCOME_REFRESH: Duration = Duration::from_secs(10);

async fn run(
    config: DriverConfig,
    local: Option<(LocalSender, LocalReceiver)>,
    persistence: Option<Persistence>,
    mut commands: mpsc::Receiver<(Command, oneshot::Sender<Reply>)>,
    mut status: mpsc::Receiver<oneshot::Sender<Status>>,
    mut watch: mpsc::UnboundedReceiver<WatchCommand>,
) {
    let had_data = persistence
        .as_ref()
        .is_some_and(|p| !p.loaded.entries.is_empty());
    let (rtc, mut rtc_rx) = Rtc::new(config.id.0, config.rtc.clone());
    let started = Instant::now();
    let (local_out, mut local_in) = match local {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let mut node = Node::new(config.node.clone(), config.id, 0);
    node.report_floods(config.http_addr.clone());
    let mut d = Driver {
        peer: Peer::new(node, persistence.is_some()),
        rtc,
        started,
        pending: HashMap::new(),
        ws_out: None,
        local_out,
        stats: DriverStats::default(),
        join_pending: false,
        storage: None,
        local_turn: 0,
        rejoin_at: None,
        alone_at: None,
        was_member: false,
        merge_at: Instant::now() + MERGE_CHECK,
        merge_seen: BTreeSet::new(),
        local_peers: HashSet::new(),
        welcome: Vec::new(),
        last_refresh: Instant::now(),
        introducer: config.introducer.clone(),
        known: config.known.clone(),
        has_bootstrap: config.bootstrap.is_some(),
        watchers: BTreeMap::new(),
        next_watcher: 0,
    };
    if let Some(persistence) = persistence {
        d.restore(persistence);
    }

    // The introducer session: a task turns the WebSocket into two channels, reconnecting
    // with backoff through `--bootstrap` and the remembered introducers.
    let (ws_in_tx, mut ws_in) = mpsc::unbounded_channel::<FromIntroducer>();
    let urls = d.known.session_urls(config.bootstrap.as_deref());
    if !urls.is_empty() {
        let (out_tx, out_rx) = mpsc::unbounded_channel::<ToIntroducer>();
        d.ws_out = Some(out_tx);
        tokio::spawn(introducer_session(
            urls,
            config.id,
            config.rtc.verify_ids,
            out_rx,
            ws_in_tx,
        ));
    } else {
        drop(ws_in_tx);
    }
    if config.bootstrap.is_some() {
        d.join_pending = true;
        d.alone_at = Some(Instant::now() + ALONE_AFTER);
    } else if had_data || !d.known.urls().is_empty() {
        // This peer was part of a ring (it restored data, or remembers introducers): that
        // ring may still be there, and a ring of one would acknowledge writes that merging
        // into it later does not carry over. So it first waits for the ring: its peers
        // reconnect to this peer's introducer, or a remembered introducer answers.
        tracing::info!(
            "no --bootstrap, but this peer was part of a ring: looking for it for up to \
             {ALONE_AFTER:?} before serving alone"
        );
        d.join_pending = true;
        d.alone_at = Some(Instant::now() + ALONE_AFTER);
    } else {
        d.serve_alone();
    }
    let mut healthy = d.drain().await;

    while healthy {
        let deadline = d.deadline();
        let flush_at = d.flush_deadline();
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                let now = d.now();
                d.peer.handle_timeout(now);
            }
            () = sleep_until_some(d.rejoin_at) => {
                d.rejoin_at = None;
                d.start_join();
            }
            () = sleep_until_some(d.alone_at) => d.on_alone_deadline(),
            () = tokio::time::sleep_until(d.merge_at) => d.look_for_merge(),
            () = sleep_until_some(flush_at) => {
                if !d.flush_storage() {
                    break;
                }
            }
            Some(event) = rtc_rx.recv() => d.on_rtc(event),
            Some(msg) = ws_in.recv() => d.on_introducer(msg),
            Some(signal) = recv_local(&mut local_in) => {
                let from = signal.from.as_u32();
                d.peer.heard(Id(from), SignalPath::Local);
                d.rtc.on_signal(from, &signal.payload).await;
            }
            Some((command, reply)) = commands.recv() => d.on_command(command, reply),
            Some(reply) = status.recv() => {
                let _ = reply.send(d.status());
            }
            Some(command) = watch.recv() => d.on_watch_command(command),
            else => break,
        }
        healthy = d.drain().await;
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs a disk operation on this worker thread without stalling the runtime's other tasks.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn recv_local(local: &mut Option<LocalReceiver>) -> Option<signaling::Signal> {
    match local {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Loads the persisted entries into the node (still idle: before join or create_ring).
    fn restore(&mut self, persistence: Persistence) {
        let Persistence {
            mut storage,
            loaded,
        } = persistence;
        let started = std::time::Instant::now();
        let now = self.now();
        match self
            .peer
            .node_mut()
            .restore(loaded.entries, loaded.lamport, now)
        {
            Ok(restored) => {
                storage.note_restored(restored.entries, loaded.took + started.elapsed());
                tracing::info!(
                    entries = restored.entries,
                    rejected = restored.rejected,
                    lamport = restored.lamport,
                    ms = storage.stats().restore_ms,
                    path = %storage.path().display(),
                    "restored the store"
                );
            }
            Err(e) => tracing::error!(%e, "restore refused"),
        }
        self.storage = Some(storage);
    }

    fn flush_deadline(&self) -> Option<Instant> {
        self.storage
            .as_ref()
            .and_then(Storage::flush_deadline)
            .map(Instant::from_std)
    }

    /// Relaxed mode's periodic durable commit. False if it failed (the driver stops).
    fn flush_storage(&mut self) -> bool {
        let lamport = self.peer.node().lamport();
        let Some(storage) = self.storage.as_mut() else {
            return true;
        };
        let result = blocking(|| storage.flush(lamport));
        self.storage_ok(result)
    }

    fn storage_ok(&self, result: Result<(), StorageError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(%e, "cannot persist the store: stopping this peer");
                false
            }
        }
    }

    fn deadline(&mut self) -> Instant {
        let at = self.peer.next_timeout();
        if at == u64::MAX {
            return Instant::now() + Duration::from_secs(3600);
        }
        self.started + Duration::from_millis(at)
    }

    fn on_rtc(&mut self, event: RtcEvent) {
        let now = self.now();
        match event {
            RtcEvent::Signal {
                peer,
                payload,
                retry: false,
            } => self.peer.send_signal(Id(peer), payload, now),
            RtcEvent::Signal {
                peer,
                payload,
                retry: true,
            } => self.peer.send_signal_retry(Id(peer), payload, now),
            RtcEvent::Open { peer } => {
                self.peer.link_opened(Id(peer), now);
            }
            RtcEvent::Message { peer, bytes } => self.peer.frame(Id(peer), &bytes, now),
            RtcEvent::Closed { peer } => self.peer.link_closed(Id(peer), now),
        }
    }

    /// Sends an SDP payload through an introducer session (the peer session chose which).
    fn send_to_introducer(&mut self, path: SignalPath, peer: u32, payload: String) {
        match path {
            SignalPath::Local => {
                if let Some(local) = &self.local_out {
                    let _ = local.send(SigPeer::new(peer), payload);
                }
            }
            _ => {
                if let Some(out) = &self.ws_out {
                    let frame = ClientMessage::Signal {
                        to: SigPeer::new(peer),
                        payload,
                    };
                    let _ = out.send(ToIntroducer::Frame(frame.to_json()));
                }
            }
        }
    }

    /// Whether a join is planned (the peer session's retry, or this driver's own).
    fn rejoin_planned(&self) -> bool {
        self.rejoin_at.is_some() || self.peer.plan().retry_at().is_some()
    }

    fn on_introducer(&mut self, msg: FromIntroducer) {
        let msg = match msg {
            FromIntroducer::Up { url } => {
                self.stats.introducer_connected = true;
                self.peer.set_remote(self.ws_out.is_some());
                self.known.reached(&url);
                return;
            }
            FromIntroducer::Down => {
                self.stats.introducer_connected = false;
                self.peer.set_remote(false);
                return;
            }
            FromIntroducer::Message(msg) => msg,
        };
        match msg {
            ServerMessage::Welcome { peers } => {
                self.welcome = peers
                    .iter()
                    .map(|p| p.as_u32())
                    .filter(|p| *p != self.peer.id().0)
                    .collect();
                if self.peer.node().is_joined() || self.peer.joining() {
                    // A member ignores welcomes; a ring of one merges at its next look.
                    return;
                }
                let me = self.peer.id();
                self.peer
                    .plan_mut()
                    .set_candidates(self.welcome.iter().map(|p| Id(*p)), me, 0);
                if !self.peer.plan().has_candidates() {
                    // Nobody else is there: this peer starts the ring (and merges later if
                    // others show up).
                    self.serve_alone();
                } else if self.join_pending || !self.rejoin_planned() {
                    self.join_pending = false;
                    self.start_join();
                }
            }
            ServerMessage::Signal { from, payload } => {
                let from = from.as_u32();
                self.peer.heard(Id(from), SignalPath::Remote);
                let rtc = self.rtc.clone();
                tokio::spawn(async move { rtc.on_signal(from, &payload).await });
            }
            ServerMessage::Error { code, reason } => {
                self.stats.introducer_errors += 1;
                tracing::warn!(%code, %reason, "introducer error");
                if code == ErrorCode::DuplicatePeer && self.last_refresh.elapsed() >= REJOIN_DELAY {
                    // Our previous incarnation's session is still registered there (it has
                    // not noticed the crash yet): a new session will be welcome soon. At most
                    // one new session per REJOIN_DELAY, so this never spins.
                    self.refresh_welcome();
                }
            }
            _ => {}
        }
    }

    /// Joins through the next peer the introducer listed (the first one at first; after a
    /// failed join, the one after the previous bootstrap: it may have been down or unreachable).
    ///
    /// Without a welcome (no introducer answered yet), the peers with a session on this peer's
    /// own introducer are the candidates: a restarted first peer finds its ring that way.
    fn start_join(&mut self) {
        if (self.peer.node().is_joined() && !self.peer.node().is_isolated()) || self.peer.joining()
        {
            return;
        }
        self.rejoin_at = None;
        if !self.peer.plan().has_candidates() {
            let local = self.local_candidates();
            // Start the rotation at a place of this peer's own, so restarted peers do not all
            // try the same (perhaps restarting) peer first.
            let turn = self.local_turn + self.peer.id().0 as usize;
            if let Some(through) = local.get(turn % local.len().max(1)) {
                self.local_turn += 1;
                self.local_peers.insert(*through);
                tracing::info!(peer = %Id(*through), "joining through a peer that bootstraps through this one");
                self.join_through(*through);
            }
            return;
        }
        let now = self.now();
        if let Some(bootstrap) = self.peer.plan_mut().attempt(now) {
            self.join_through(bootstrap.0);
        }
    }

    /// Peers with a session on this peer's own introducer (peers whose `--bootstrap` is this
    /// peer), without this peer.
    fn local_candidates(&self) -> Vec<u32> {
        let me = self.peer.id().0;
        self.introducer
            .as_ref()
            .map(|i| {
                i.live_peers()
                    .into_iter()
                    .map(|p| p.as_u32())
                    .filter(|p| *p != me)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn join_through(&mut self, bootstrap: u32) {
        let path = if self.local_peers.contains(&bootstrap) {
            SignalPath::Local
        } else {
            SignalPath::Remote
        };
        let now = self.now();
        self.peer.join_through(Id(bootstrap), path, now);
    }

    /// Becomes a ring of one (unless already a member): with no `--bootstrap`, when the
    /// introducer lists nobody else, when none answered within [`ALONE_AFTER`], and after a
    /// failed merge.
    fn serve_alone(&mut self) {
        self.alone_at = None;
        self.join_pending = false;
        if self.peer.node().is_joined() || self.peer.joining() {
            return;
        }
        tracing::info!("serving as a ring of one until other peers show up");
        let now = self.now();
        self.peer.node_mut().create_ring(now);
        self.was_member = true;
        self.merge_seen.clear();
    }

    fn on_alone_deadline(&mut self) {
        self.alone_at = None;
        if self.peer.node().is_joined() {
            return;
        }
        // Serving alone is for when nobody is there: while an introducer lists peers or peers
        // bootstrap through this one (most likely the ring; a join may have gone through a
        // peer that was restarting, and a join waits up to 2 op timeouts), keep trying them.
        // A peer without --bootstrap, the ring's first peer, gives up sooner: it may be the
        // one every other peer of a ring that restarted at once is waiting for; once every
        // peer it knows of said it is no ring member (`JoinPlan::none_is_member`), at once.
        let patience = Duration::from_millis(JOIN_PATIENCE_MS);
        let patience = if self.has_bootstrap {
            patience
        } else {
            patience / 2
        };
        let candidates = self.peer.plan().has_candidates() || !self.local_candidates().is_empty();
        // Unless every candidate said it is no ring member: then nobody is there to find,
        // the others wait for this first peer, and waiting longer only delays them all.
        let known: Vec<Id> = (self.peer.plan().candidates().iter().copied())
            .chain(self.local_candidates().into_iter().map(Id))
            .collect();
        let nobody_there = !self.has_bootstrap && self.peer.plan().none_is_member(&known);
        if self.peer.joining() || (candidates && self.started.elapsed() < patience && !nobody_there)
        {
            self.alone_at = Some(Instant::now() + REJOIN_DELAY);
            if !self.peer.joining() && !self.rejoin_planned() {
                self.start_join();
            }
            return;
        }
        tracing::warn!("no ring joined within {:?}", self.started.elapsed());
        self.serve_alone();
    }

    /// A ring of one looks for peers to merge with (the module docs say which and when).
    fn look_for_merge(&mut self) {
        // Spread the looks of several lone peers apart (0..500 ms), so two of them do not
        // keep joining through each other at the same moment.
        let jitter = Duration::from_millis(u64::from(self.peer.id().0 ^ self.now() as u32) % 500);
        self.merge_at = Instant::now() + MERGE_CHECK + jitter;
        // Not joined and no join under way or planned: peers that bootstrap through this one
        // may be the ring it is looking for.
        let newcomer =
            !self.peer.node().is_joined() && !self.peer.joining() && !self.rejoin_planned();
        if self.peer.joining() || !(newcomer || self.peer.node().is_alone()) {
            self.merge_seen.clear();
            return;
        }
        let me = self.peer.id().0;
        let local: BTreeSet<u32> = self.local_candidates().into_iter().collect();
        let mut candidates: BTreeSet<u32> = local.iter().copied().collect();
        candidates.extend(self.welcome.iter().copied());
        candidates.remove(&me);
        let ready: Vec<u32> = if newcomer {
            candidates.iter().copied().collect()
        } else {
            candidates.intersection(&self.merge_seen).copied().collect()
        };
        self.merge_seen = candidates;
        if ready.is_empty() {
            if self.merge_seen.is_empty() && self.last_refresh.elapsed() >= WELCOME_REFRESH {
                self.refresh_welcome();
            }
            return;
        }
        let through = ready[self.local_turn % ready.len()];
        self.local_turn += 1;
        if local.contains(&through) {
            self.local_peers.insert(through);
        }
        if newcomer {
            tracing::info!(peer = %Id(through), "joining through a peer it learned of");
        } else {
            tracing::info!(peer = %Id(through), "a ring of one merges: joining through a peer it learned of");
        }
        self.join_through(through);
    }

    /// Reopens the remote introducer session for a fresh welcome (if there is one).
    fn refresh_welcome(&mut self) {
        self.last_refresh = Instant::now();
        if let Some(out) = &self.ws_out {
            let _ = out.send(ToIntroducer::Reconnect);
        }
    }

    /// A join failed (the peer session already asked the join plan, `retry`): a peer that was
    /// a ring member serves as a ring of one again (and keeps looking for peers to merge with);
    /// a newcomer tries again when the plan says (the peer session's timer brings
    /// `PeerOutput::JoinDue`), with a fresh welcome once every candidate failed, and serves
    /// alone when the plan gives up.
    fn after_failed_join(&mut self, retry: Retry) {
        if self.was_member {
            self.peer.plan_mut().give_up();
            self.serve_alone();
            return;
        }
        match retry {
            Retry::At { through, .. } => {
                let plan = self.peer.plan();
                let tried = plan.attempts();
                if tried > 0 && tried % plan.candidates().len().max(1) == 0 {
                    self.refresh_welcome();
                }
                tracing::info!(peer = %through, "join failed; trying again");
            }
            Retry::GiveUp if !self.peer.plan().has_candidates() => {
                // Only peers bootstrapping through this one were candidates: keep trying them,
                // and ask the introducer again.
                self.refresh_welcome();
                self.rejoin_at = Some(Instant::now() + Duration::from_millis(JOIN_RETRY_MS));
            }
            Retry::GiveUp => {
                tracing::warn!("no ring joined within the join plan's patience");
                self.serve_alone();
            }
        }
    }

    fn on_command(&mut self, command: Command, reply: oneshot::Sender<Reply>) {
        let now = self.now();
        let op = match command {
            Command::Put {
                key,
                value,
                writer,
                client_ts,
            } => {
                if let Some(ts) = client_ts {
                    self.peer.node_mut().observe_clock(ts);
                }
                self.peer.node_mut().put(&key, &value, &writer, now)
            }
            Command::Delete { key, writer } => self.peer.node_mut().delete(&key, &writer, now),
            Command::Get { key } => self.peer.node_mut().get(&key, now),
            Command::Flood { key, ttl } => self.peer.node_mut().flood(&key, ttl, now),
            Command::Lookup { key } => self.peer.node_mut().lookup(Id(key), now),
            Command::View { peer } => self.peer.node_mut().peer_view(peer, now),
            Command::Leave => self.peer.node_mut().leave(now),
        };
        self.pending.insert(op, reply);
    }

    fn on_watch_command(&mut self, command: WatchCommand) {
        let now = self.now();
        match command {
            WatchCommand::Subscribe { key, events, reply } => {
                let count: usize = self.watchers.values().map(BTreeMap::len).sum();
                let result = if count >= MAX_API_WATCHERS {
                    Err(OpError::TooManyWatches {
                        limit: MAX_API_WATCHERS,
                    })
                } else {
                    self.peer.node_mut().watch(&key, now).map(|()| {
                        self.next_watcher += 1;
                        let id = self.next_watcher;
                        self.watchers.entry(key).or_default().insert(id, events);
                        id
                    })
                };
                let _ = reply.send(result);
            }
            WatchCommand::Unsubscribe { key, id } => self.drop_watcher(&key, id),
        }
    }

    /// Ends one client's subscription; the core stops watching a key nobody watches.
    fn drop_watcher(&mut self, key: &str, id: u64) {
        let Some(clients) = self.watchers.get_mut(key) else {
            return;
        };
        clients.remove(&id);
        if clients.is_empty() {
            self.watchers.remove(key);
            let now = self.now();
            self.peer.node_mut().unwatch(key, now);
        }
    }

    /// Hands a change to every client watching its key; a client whose queue is full or
    /// closed loses its subscription (its stream ends).
    fn on_watch_event(&mut self, key: &str, value: Option<&str>, ts: u64, writer: &str) {
        let Some(clients) = self.watchers.get(key) else {
            return;
        };
        let event = node_core::watch::event_json(key, value, ts, writer);
        let gone: Vec<u64> = clients
            .iter()
            .filter(|(_, tx)| tx.try_send(event.clone()).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            tracing::debug!(key, id, "watch client gone or too slow; ending its stream");
            self.drop_watcher(key, id);
        }
    }

    fn status(&self) -> Status {
        let node = self.peer.node();
        let raw = node.metrics();
        let rtc = self.rtc.stats();
        Status {
            ring: node.ring_view(),
            metrics: raw.summary(),
            raw,
            keys_stored: node.store().len(),
            driver: DriverStats {
                signaling: self.peer.signal_stats(),
                links: rtc.links_open,
                rtc,
                storage: {
                    let mut storage = self
                        .storage
                        .as_ref()
                        .map_or_else(StorageStats::in_memory, |s| s.stats().clone());
                    storage.frames_held = self.peer.items_held();
                    storage
                },
                ..self.stats.clone()
            },
        }
    }

    /// Carries out every output of the peer until it only asks to be woken later. Writes come
    /// out as one batch per drain of the core (node-core's `peer::commit`), committed here at
    /// once; what waited for them comes out after. False if the store could not be written
    /// (the driver stops; nothing that waited for that batch was sent).
    async fn drain(&mut self) -> bool {
        loop {
            match self.peer.poll_output() {
                PeerOutput::Timeout(_) => return true,
                PeerOutput::Persist(batch) => {
                    if !self.commit(&batch) {
                        return false;
                    }
                    self.peer.committed(batch.id);
                }
                output => self.carry_out(output),
            }
        }
    }

    /// Commits one drain's writes (node-core's `peer::commit`: the last event per key), in one
    /// transaction; the outputs held for them are carried out after.
    fn commit(&mut self, batch: &Batch) -> bool {
        let lamport = self.peer.node().lamport();
        let Some(storage) = self.storage.as_mut() else {
            return true;
        };
        let stored = batch
            .stored
            .iter()
            .map(|(key, entry)| (key.as_str(), entry));
        let collected: Vec<&str> = batch.collected.iter().map(String::as_str).collect();
        let result = blocking(|| {
            storage.persist(stored, lamport)?;
            storage.forget(&collected, lamport)
        });
        self.storage_ok(result)
    }

    fn carry_out(&mut self, output: PeerOutput) {
        match output {
            PeerOutput::Send { to, bytes } => self.send_frame(to.0, bytes),
            PeerOutput::Connect(peer) => {
                let rtc = self.rtc.clone();
                tokio::spawn(async move { rtc.connect(peer.0).await });
            }
            PeerOutput::Disconnect(peer) => {
                let rtc = self.rtc.clone();
                tokio::spawn(async move { rtc.close(peer.0).await });
            }
            PeerOutput::Deliver { from, payload } => {
                let rtc = self.rtc.clone();
                tokio::spawn(async move { rtc.on_signal(from.0, &payload).await });
            }
            PeerOutput::Introducer { path, to, payload } => {
                self.send_to_introducer(path, to.0, payload);
            }
            PeerOutput::Joined { .. } => {
                self.was_member = true;
                self.alone_at = None;
            }
            PeerOutput::JoinFailed { error, retry } => {
                if let OpError::IdInUse { id } = *error {
                    // The only ring member has our id: most likely our previous
                    // incarnation, until the ring notices it died. Keep trying.
                    tracing::warn!(%id, "a ring member has this id; trying again");
                } else {
                    tracing::warn!(%error, "join failed; trying again");
                }
                self.after_failed_join(retry);
            }
            PeerOutput::JoinDue { through } => {
                let node = self.peer.node();
                if (!node.is_joined() || node.is_isolated()) && !self.peer.joining() {
                    self.join_through(through.0);
                }
            }
            PeerOutput::OpDone { op, result } => {
                if let Some(reply) = self.pending.remove(&op) {
                    let _ = reply.send(*result);
                } else if let Err(e) = *result {
                    tracing::debug!(?op, %e, "internal operation failed");
                }
            }
            PeerOutput::Event(event) => self.on_event(*event),
            _ => {}
        }
    }

    /// Queues a frame; one the link layer refuses (no open channel, queue full, too large) is
    /// counted and reported to the core, whose policy a streak of them is.
    fn send_frame(&mut self, to: u32, bytes: Vec<u8>) {
        if !self.rtc.send(to, bytes) {
            self.stats.frames_without_channel += 1;
            let now = self.now();
            self.peer.send_failed(Id(to), now);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::SuccessorChanged { successor } => {
                tracing::info!(%successor, "successor changed");
            }
            Event::PredecessorChanged { predecessor } => {
                tracing::info!(?predecessor, "predecessor changed");
            }
            Event::PeerFailed { peer } => tracing::info!(%peer, "peer failed"),
            Event::Isolated => {
                // Every successor failed: join again (through the members the introducer
                // named, the peer session's join plan) rather than serve as a ring of one;
                // without such members, through the peers that bootstrap through this one.
                tracing::warn!("cut off from the ring; joining again");
                if self.peer.plan().retry_at().is_none() {
                    self.rejoin_at = Some(Instant::now() + Duration::from_millis(JOIN_RETRY_MS));
                }
            }
            Event::LeaderElected { set, leader } => {
                tracing::debug!(?set, %leader, "leader elected");
            }
            Event::Watch {
                key,
                value,
                ts,
                writer,
            } => self.on_watch_event(&key, value.as_deref(), ts, &writer),
            _ => {}
        }
    }
}

/// First and longest pause between two attempts to open the introducer session.
const SESSION_BACKOFF_MIN: Duration = Duration::from_millis(250);
const SESSION_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// An attempt to connect that takes longer than this counts as "does not answer".
const SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The session with the remote introducer, for the driver's whole life: connects to `urls` in
/// turn (the `--bootstrap` first, then the remembered introducers) with exponential backoff
/// until one answers, sends `hello`, relays frames both ways, and when the session drops (or
/// the driver asks for a fresh one) starts over with the first URL. Frames the driver sends
/// while no session is open are dropped (a signal to nobody; the core retries what matters).
async fn introducer_session(
    urls: Vec<String>,
    me: Id,
    verified: bool,
    mut out: mpsc::UnboundedReceiver<ToIntroducer>,
    into_driver: mpsc::UnboundedSender<FromIntroducer>,
) {
    let mut backoff = SESSION_BACKOFF_MIN;
    let mut attempt = 0usize;
    let mut failures = 0u64;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let connected = tokio::time::timeout(
            SESSION_CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url),
        )
        .await;
        let stream = match connected {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => {
                failures += 1;
                // Loud once, then quiet: a peer may wait a long time for its introducer.
                if failures == 1 {
                    tracing::warn!(%url, %e, "cannot reach the introducer; trying again with backoff");
                } else {
                    tracing::debug!(%url, %e, "cannot reach the introducer");
                }
                if !pause(&mut out, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(SESSION_BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(%url, "the introducer did not answer within {SESSION_CONNECT_TIMEOUT:?}");
                if !pause(&mut out, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(SESSION_BACKOFF_MAX);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(%url, failures, "reached the introducer");
        }
        failures = 0;
        backoff = SESSION_BACKOFF_MIN;
        // The next session starts over with `--bootstrap`.
        attempt = 0;
        if into_driver
            .send(FromIntroducer::Up { url: url.clone() })
            .is_err()
        {
            return;
        }
        let ended = relay_session(stream, me, verified, &mut out, &into_driver).await;
        if into_driver.send(FromIntroducer::Down).is_err() {
            return;
        }
        match ended {
            SessionEnd::DriverGone => return,
            SessionEnd::Reconnect => {}
            SessionEnd::Dropped => {
                tracing::warn!(%url, "introducer session closed; opening it again");
                if !pause(&mut out, backoff).await {
                    return;
                }
            }
        }
    }
}

/// Waits `backoff` (plus up to a quarter more, so restarted peers do not knock in step) while
/// dropping the frames the driver sends meanwhile. False if the driver is gone.
async fn pause(out: &mut mpsc::UnboundedReceiver<ToIntroducer>, backoff: Duration) -> bool {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = backoff / 4 * (nanos % 1000) / 1000;
    let until = Instant::now() + backoff + jitter;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            frame = out.recv() => {
                if frame.is_none() {
                    return false;
                }
            }
        }
    }
}

enum SessionEnd {
    Dropped,
    Reconnect,
    DriverGone,
}

/// One open session: `hello`, then frames both ways until either side closes.
async fn relay_session(
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    me: Id,
    verified: bool,
    out: &mut mpsc::UnboundedReceiver<ToIntroducer>,
    into_driver: &mpsc::UnboundedSender<FromIntroducer>,
) -> SessionEnd {
    let (mut sink, mut source) = stream.split();
    // A verifying peer's id is proven on every link, so it may share the id with a squatter
    // at the introducer (signaling's protocol docs).
    let hello = ClientMessage::Hello {
        peer: SigPeer::new(me.0),
        verified,
    }
    .to_json();
    if sink.send(WsMessage::text(hello)).await.is_err() {
        return SessionEnd::Dropped;
    }
    loop {
        tokio::select! {
            frame = out.recv() => match frame {
                Some(ToIntroducer::Frame(text)) => {
                    if sink.send(WsMessage::text(text)).await.is_err() {
                        return SessionEnd::Dropped;
                    }
                }
                Some(ToIntroducer::Reconnect) => {
                    let _ = sink.close().await;
                    return SessionEnd::Reconnect;
                }
                None => return SessionEnd::DriverGone,
            },
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(msg) => {
                            if into_driver.send(FromIntroducer::Message(msg)).is_err() {
                                return SessionEnd::DriverGone;
                            }
                        }
                        Err(e) => tracing::warn!(%e, "bad frame from the introducer"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return SessionEnd::Dropped,
            },
        }
    }
}
