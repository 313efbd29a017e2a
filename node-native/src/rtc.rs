//! WebRTC links to other peers: one data channel per peer, over webrtc-rs 0.21.
//!
//! [`Rtc`] turns "connect to peer X", "here is a signalling payload from X" and "send these bytes
//! to X" into WebRTC peer connections, and reports what happens as [`RtcEvent`]s on one tokio
//! channel. It knows peer ids (`u32`) and bytes; it knows nothing of Chord, of frames' contents
//! or of how signalling payloads travel (the driver carries them over the overlay or the
//! introducer).
//!
//! # Protocol
//! - One peer connection per remote peer, carrying one data channel labelled `chord`, ordered and
//!   reliable (the W3C defaults). The offerer creates it; the answerer accepts the first channel
//!   the remote opens. No media.
//! - Signalling payloads are JSON in the browser's `RTCSessionDescription` shape,
//!   `{"type":"offer"|"answer","sdp":"..."}`, so a browser peer can pass them straight to
//!   `setRemoteDescription` and send back `JSON.stringify(pc.localDescription)`.
//! - **Non-trickle ICE.** A description is sent once ICE gathering is complete, with every local
//!   candidate inside the SDP. That costs the gathering time once per link (a few milliseconds
//!   with host candidates only, longer with STUN) but halves the signalling traffic and removes
//!   the candidate messages, their ordering problems and their buffering before the remote
//!   description. Remote trickled candidates are not needed: a browser peer must likewise wait
//!   for `icegatheringstate == "complete"` before sending its description. Candidates a browser
//!   reveals only through connectivity checks (mDNS `.local` hosts) still work through
//!   peer-reflexive pairs, which this module accepts at once (`prflx_acceptance_min_wait = 0`).
//! - **Glare, re-offers, duplicates.** What to do with an offer or an answer is decided by
//!   node-core's signalling rules (`node_core::peer::signal`, module docs), the same functions
//!   the browser peer and the simulator apply: glare is won by the lower id ("perfect
//!   negotiation" with the lower id as the impolite peer; the higher side drops its own attempt
//!   silently, no `Closed`); an offer for a peer we hold a link with replaces that link (with
//!   `Closed` if it was open), except on the lower-id side holding an open link it offered
//!   (ignored); the very offer the current answerer link answers is answered again while that
//!   link is not open ([`RtcStats::reanswers`]) and ignored once it is. Ignored offers are
//!   counted in [`RtcStats::ignored_signals`]. An offer with no answer goes again every
//!   `OFFER_RETRY_MS` ([`RtcEvent::Signal`] with `retry`, [`RtcStats::offer_retries`]).
//! - **Timeout.** A link that has not opened within [`RtcConfig::connect_timeout`] is closed and
//!   reported as `Closed`.
//!
//! # Bounds (issue 11, item 3)
//! - **Connections a remote makes us build.** An offer is answered only while the link table's
//!   pending-answer bounds allow it ([`RtcConfig::pending_bounds`], node-core's
//!   `peer::table::PendingBounds`: 2 per remote peer, 64 in all). A pending answer counts until
//!   its channel opens or its supervisor has torn it down (a replaced attempt keeps its socket
//!   until then). Refused offers are counted ([`RtcStats::offers_refused`]).
//! - **Frames in.** At most [`RtcConfig::inbound_queue_frames`] frames and
//!   [`RtcConfig::inbound_queue_bytes`] bytes wait in [`RtcEvents`] for the driver; a frame
//!   beyond is dropped and counted ([`RtcStats::frames_in_dropped`]), so a driver blocked on
//!   an fsync costs memory up to the bound and never blocks webrtc-rs's tasks. `Signal`,
//!   `Open` and `Closed` are never dropped and keep their place in the one FIFO (which is what
//!   keeps the order below).
//! - **Frames out.** [`RtcConfig::send_queue_frames`] per link; [`Rtc::send`] returns `false`
//!   beyond, and the driver reports that to the core (`Input::SendFailed`).
//!
//! # Events and their order
//! For each peer the events form `(Open Message* )? Closed` per link, never a `Message` before
//! `Open` nor after `Closed`: every `Open`, `Message` and `Closed` is emitted under the link
//! table's lock after checking the link is still the current one. A failed attempt (timeout,
//! ICE failure, bad remote description) yields `Closed` without `Open`. An explicit
//! [`Rtc::close`] emits nothing. `Signal` events may come at any time.
//!
//! # What the driver MUST do
//! - Call [`Rtc::connect`], [`Rtc::on_signal`], [`Rtc::close`] and [`Rtc::close_all`] from
//!   inside a tokio runtime (they spawn tasks); [`Rtc::send`] and [`Rtc::stats`] may be called
//!   from anywhere, any thread.
//! - Drain [`RtcEvents`] promptly: received frames beyond its bound are dropped.
//! - Carry each `Signal` payload verbatim to its peer, whose `on_signal` gets it with our id.
//! - Treat `Closed` as "peer down" whether or not an `Open` came first.
//! - Call [`Rtc::close_all`] before exiting: links live on in their tasks otherwise.
//!
//! # Tasks
//! Each link is run by one supervisor task (builds the peer connection, applies descriptions,
//! waits for gathering, enforces the timeout, closes everything at the end), one reader task
//! (polls the data channel) and, once open, one writer task (drains the link's send queue into
//! `DataChannel::send`, which applies the send-buffer back-pressure). webrtc-rs runs its own
//! driver task per connection. All are spawned on the ambient tokio runtime, so every method
//! that starts a link must be called inside one.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use node_core::peer::signal::{self, Description, Role};
use node_core::peer::stats::LinkStats;
use node_core::peer::table::{DEFAULT_PENDING_BOUNDS, LinkTable, OnOffer, PendingBounds};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

/// The label of the one data channel per link.
pub const CHANNEL_LABEL: &str = "chord";

/// How long [`Rtc::close`] waits for the link's teardown before returning anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a closing link may take to write its queued frames ([`Handle::flush_and_stop`]),
/// and the pause after them before the connection is torn down.
const FLUSH_WAIT: Duration = Duration::from_millis(500);
const FLUSH_GRACE: Duration = Duration::from_millis(20);

/// The UDP addresses to bind for the configured `udp_addrs`, given the machine's interface
/// addresses `local`: a wildcard (`0.0.0.0:port`, `[::]:port`) becomes that family's loopback
/// address when no interface of the family has a usable (not loopback, not link-local) address.
///
/// webrtc-rs expands a wildcard into one socket per usable interface and skips loopback; on a
/// host with only `lo` it binds the wildcard itself, whose host candidate (`0.0.0.0`) no peer
/// can dial, so native peers with default flags never linked there. Loopback candidates reach
/// every peer on the same host, which are the only peers such a host can reach anyway.
pub fn bind_addrs(configured: &[String], local: &[std::net::IpAddr]) -> Vec<String> {
    let usable = |v4: bool| {
        local.iter().any(|ip| {
            ip.is_ipv4() == v4 && !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip)
        })
    };
    configured
        .iter()
        .map(|text| match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_unspecified() && !usable(addr.is_ipv4()) => {
                let loopback: std::net::IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                std::net::SocketAddr::new(loopback, addr.port()).to_string()
            }
            _ => text.clone(),
        })
        .collect()
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The addresses of the machine's interfaces now; `None` if they cannot be listed (the
/// configured addresses are then left to webrtc-rs as they are).
/// The UDP addresses a new link binds ([`bind_addrs`] over this host's interfaces). The first
/// time, and whenever they change, they are logged (`WebRTC binds`): a loopback-only host must
/// show loopback addresses there, never a wildcard.
fn link_udp_addrs(configured: &[String]) -> Vec<String> {
    static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let addrs = match local_ips() {
        Some(local) => bind_addrs(configured, &local),
        None => configured.to_vec(),
    };
    if let Ok(mut logged) = LOGGED.lock()
        && *logged != addrs
    {
        tracing::info!(addrs = ?addrs, "WebRTC binds");
        logged.clone_from(&addrs);
    }
    addrs
}

fn local_ips() -> Option<Vec<std::net::IpAddr>> {
    match rtc::shared::ifaces::ifaces() {
        Ok(interfaces) => Some(
            interfaces
                .into_iter()
                .filter_map(|interface| interface.addr.map(|addr| addr.ip()))
                .collect(),
        ),
        Err(error) => {
            warn!(%error, "cannot list network interfaces");
            None
        }
    }
}

/// Settings for every link an [`Rtc`] makes.
#[derive(Debug, Clone, PartialEq)]
pub struct RtcConfig {
    /// STUN/TURN URLs such as `stun:host:3478`. Empty by default: host candidates only, which is
    /// enough on one machine or one LAN.
    pub ice_servers: Vec<String>,
    /// Local UDP addresses to bind per link. `0.0.0.0:0` (the default) binds one socket per
    /// non-loopback interface, or the loopback address on a host that has no other (see
    /// [`bind_addrs`]); `127.0.0.1:0` gives a loopback candidate; a concrete address
    /// (`10.77.0.1:0` in a test namespace) binds exactly that interface.
    pub udp_addrs: Vec<String>,
    /// Accept remote mDNS (`.local`) candidates by querying. Off by default: building a peer
    /// connection with it fails ("No such device") on a host without a multicast route, and a
    /// browser's `.local` candidates connect anyway through peer-reflexive pairs.
    pub mdns: bool,
    /// Per-channel bytes handed to SCTP and not yet acknowledged before the writer waits.
    ///
    /// 64 KiB by default, not more: webrtc-rs cannot enlarge its UDP sockets' receive buffers,
    /// and with 256 KiB or 1 MiB in flight a burst overflows the receiver's (Linux default
    /// 208 KiB) buffer, and SCTP recovers the drops only at its 1 s minimum RTO. Measured on one
    /// host, 2000 frames of 16 KiB: 64 KiB limit 0.24 s (~135 MB/s); 256 KiB 1.8-5 s; 1 MiB
    /// 3-8 s. The cost is a ceiling of 64 KiB per round trip per link (1.3 MB/s at 50 ms).
    pub send_buffer_limit: usize,
    /// Frames queued per link in front of the data channel; [`Rtc::send`] drops (returns
    /// `false`) beyond this.
    pub send_queue_frames: usize,
    /// Largest frame [`Rtc::send`] accepts: SCTP's default max message size (64 KiB), which
    /// every browser accepts too.
    pub max_frame_bytes: usize,
    /// A link that has not opened this long after it started is closed and reported `Closed`.
    pub connect_timeout: Duration,
    /// Answerer connections not yet open that remote peers can make us build (module docs,
    /// "Bounds"). node-core's defaults: 2 per peer, 64 in all.
    pub pending_bounds: PendingBounds,
    /// The certificate every link presents (`--verify-ids`; [`crate::identity`]). `None`:
    /// webrtc-rs makes a new one per link.
    pub certificate: Option<webrtc::peer_connection::RTCCertificate>,
    /// Refuse offers and answers whose certificate fingerprint does not prove their sender's
    /// id (node-core's `peer::identity`), counted in [`RtcStats::identity_refused`].
    pub verify_ids: bool,
    /// Received frames waiting in [`RtcEvents`] for the driver; beyond this (or
    /// [`RtcConfig::inbound_queue_bytes`]) a frame is dropped. 1024 by default: a second of a
    /// busy link's traffic, enough to ride out a strict-durability fsync.
    pub inbound_queue_frames: usize,
    /// Payload bytes waiting in [`RtcEvents`]; 16 MiB by default (256 frames of the largest
    /// size).
    pub inbound_queue_bytes: usize,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            udp_addrs: vec!["0.0.0.0:0".to_owned()],
            mdns: false,
            send_buffer_limit: 64 * 1024,
            send_queue_frames: 4096,
            max_frame_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(15),
            pending_bounds: DEFAULT_PENDING_BOUNDS,
            certificate: None,
            verify_ids: false,
            inbound_queue_frames: 1024,
            inbound_queue_bytes: 16 << 20,
        }
    }
}

/// What happened on the links; drain these from the [`RtcEvents`] given by [`Rtc::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcEvent {
    /// Deliver `payload` to `peer` through signalling; the remote passes it to its
    /// [`Rtc::on_signal`] (or a browser to `setRemoteDescription`). JSON
    /// `{"type":"offer"|"answer","sdp":"..."}` with every candidate inside (non-trickle).
    /// `retry`: the same offer again, no answer having come within
    /// `node_core::peer::signal::OFFER_RETRY_MS`: send it through an introducer if there is one.
    Signal {
        peer: u32,
        payload: String,
        retry: bool,
    },
    /// The data channel to `peer` is open: frames can flow.
    Open { peer: u32 },
    /// One frame (one data channel message) from `peer`.
    Message { peer: u32, bytes: Vec<u8> },
    /// The link to `peer` closed or failed, or an attempt to open it failed or timed out.
    /// Not emitted for links ended by [`Rtc::close`].
    Closed { peer: u32 },
}

/// The events of one [`Rtc`], in order (module docs). Received frames in it are bounded
/// ([`RtcConfig::inbound_queue_frames`], [`RtcConfig::inbound_queue_bytes`]); everything else is
/// never dropped.
pub struct RtcEvents {
    events: mpsc::UnboundedReceiver<RtcEvent>,
    inbound: Arc<Inbound>,
}

impl fmt::Debug for RtcEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtcEvents")
            .field("frames", &self.inbound.frames.load(Ordering::Relaxed))
            .field("bytes", &self.inbound.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl RtcEvents {
    /// The next event; `None` once every [`Rtc`] handle and link task is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<RtcEvent> {
        let event = self.events.recv().await?;
        if let RtcEvent::Message { bytes, .. } = &event {
            self.inbound.frames.fetch_sub(1, Ordering::Relaxed);
            self.inbound.bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
        }
        Some(event)
    }
}

/// Received frames and their bytes in [`RtcEvents`] now.
#[derive(Default)]
struct Inbound {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

/// Counters since [`Rtc::new`]: node-core's link counters (`peer::stats::LinkStats`), the
/// shape both drivers report.
pub type RtcStats = LinkStats;

/// The WebRTC link manager. Cheap to clone (one `Arc` inside); every clone drives the same links.
///
/// Links outlive the `Rtc` handles (their tasks hold the shared state): call
/// [`Rtc::close_all`] before dropping the last handle to end them.
#[derive(Clone)]
pub struct Rtc {
    inner: Arc<Inner>,
}

impl fmt::Debug for Rtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtc")
            .field("me", &format_args!("{:08x}", self.inner.me))
            .field("stats", &self.stats())
            .finish()
    }
}

impl Rtc {
    /// A link manager for the local peer `me`, and the events it reports.
    pub fn new(me: u32, config: RtcConfig) -> (Self, RtcEvents) {
        let (events, receiver) = mpsc::unbounded_channel();
        let inbound = Arc::new(Inbound::default());
        // Supervisors release their link's slot once torn down (`Supervisor`'s `Drop`).
        let mut table = LinkTable::new(me)
            .with_bounds(config.pending_bounds)
            .release_explicitly();
        if config.verify_ids {
            table = table.verify_ids();
        }
        let rtc = Self {
            inner: Arc::new(Inner {
                me,
                config,
                events,
                inbound: Arc::clone(&inbound),
                links: Mutex::new(table),
                counters: Counters::default(),
            }),
        };
        let events = RtcEvents {
            events: receiver,
            inbound,
        };
        (rtc, events)
    }

    /// The local peer id.
    pub fn me(&self) -> u32 {
        self.inner.me
    }

    /// Starts a link to `peer` as the offerer; the offer comes out as a `Signal` event.
    ///
    /// A no-op if a link or attempt to `peer` already exists (whichever side started it), or if
    /// `peer` is this peer. Returns at once; progress is reported as events.
    pub async fn connect(&self, peer: u32) {
        let inner = &self.inner;
        if peer == inner.me {
            warn!(me = %Hex(inner.me), "rtc: refusing to connect to self");
            return;
        }
        let mut links = inner.lock_links();
        let mut start = None;
        let Some(id) = links.start(peer, Role::Offerer, None, |id| {
            let (handle, pending) = inner.new_link(id, Role::Offerer);
            start = Some(pending);
            Some(handle)
        }) else {
            debug!(me = %Hex(inner.me), peer = %Hex(peer), "rtc: connect: link exists");
            return;
        };
        drop(links);
        debug!(me = %Hex(inner.me), peer = %Hex(peer), link = id, "rtc: connect");
        if let Some(start) = start {
            start.spawn(Arc::clone(inner), peer, None);
        }
    }

    /// Handles a signalling payload from `peer`: an offer is answered (a `Signal` event follows),
    /// an answer completes our own attempt. Garbage is counted in [`RtcStats::bad_signals`] and
    /// otherwise ignored. See the module docs for glare and re-offers.
    pub async fn on_signal(&self, peer: u32, payload: &str) {
        let inner = &self.inner;
        let Some(description) = parse_signal(payload) else {
            inner.counters.bad_signals.fetch_add(1, Ordering::Relaxed);
            debug!(me = %Hex(inner.me), peer = %Hex(peer), "rtc: bad signal ignored");
            return;
        };
        if peer == inner.me {
            inner.counters.bad_signals.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match description {
            Signal::Offer(offer) => inner.on_offer(peer, offer),
            Signal::Answer(answer) => inner.on_answer(peer, answer),
        }
    }

    /// Queues one frame for `peer`. `false` (frame dropped) if no open link, the link's queue is
    /// full, or the frame exceeds [`RtcConfig::max_frame_bytes`]. Never blocks.
    pub fn send(&self, peer: u32, bytes: Vec<u8>) -> bool {
        let inner = &self.inner;
        let len = bytes.len();
        let queued = len <= inner.config.max_frame_bytes
            && inner
                .lock_links()
                .get(peer)
                .and_then(|link| link.handle.outbound.as_ref())
                .is_some_and(|outbound| outbound.try_send(Bytes::from(bytes)).is_ok());
        if queued {
            inner.counters.frames_out.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .bytes_out
                .fetch_add(len as u64, Ordering::Relaxed);
        } else {
            inner
                .counters
                .frames_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Ends the link to `peer`, if any, and waits (briefly) for its teardown. No `Closed` event
    /// follows for it. The remote sees its channel close and reports `Closed` on its side.
    pub async fn close(&self, peer: u32) {
        let closed = self.inner.lock_links().close(peer);
        if let Some(link) = closed {
            debug!(me = %Hex(self.inner.me), peer = %Hex(peer), "rtc: close");
            link.handle.flush_and_stop().await;
        }
    }

    /// Ends every link, as [`Rtc::close`] does for one.
    pub async fn close_all(&self) {
        let closed = self.inner.lock_links().drain();
        let stops = closed
            .into_iter()
            .map(|(_, link)| tokio::spawn(link.handle.flush_and_stop()));
        for stop in stops.collect::<Vec<_>>() {
            let _ = stop.await;
        }
    }

    /// Peers whose data channel is open now, sorted.
    pub fn open_peers(&self) -> Vec<u32> {
        self.inner.lock_links().open_peers()
    }

    /// The counters, and the links open now.
    pub fn stats(&self) -> RtcStats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        // The table counts what it decides; the atomics what the tasks see.
        let table = self.inner.lock_links().stats();
        RtcStats {
            frames_in: get(&c.frames_in),
            frames_out: get(&c.frames_out),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            frames_dropped: get(&c.frames_dropped),
            frames_in_dropped: get(&c.frames_in_dropped),
            bad_signals: get(&c.bad_signals),
            ..table
        }
    }
}

/// Peer ids in logs: 8 hex digits.
struct Hex(u32);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_dropped: AtomicU64,
    frames_in_dropped: AtomicU64,
    bad_signals: AtomicU64,
}

struct Inner {
    me: u32,
    config: RtcConfig,
    events: mpsc::UnboundedSender<RtcEvent>,
    /// Received frames in the event channel ([`RtcEvents`] takes them off).
    inbound: Arc<Inbound>,
    /// The current link per peer (node-core's link table, `peer::table`). A link's tasks act
    /// only while their `id` (the table's generation) is still the current one, which is what
    /// makes replaced or closed links fall silent.
    links: Mutex<LinkTable<Handle>>,
    counters: Counters,
}

/// webrtc-rs's side of one link; node-core's link table holds it with the link's generation
/// and negotiation state.
struct Handle {
    /// To the link's supervisor task.
    control: mpsc::UnboundedSender<Control>,
    /// The send queue; `Some` exactly while the data channel is open.
    outbound: Option<mpsc::Sender<Bytes>>,
    /// The task that writes the send queue to the data channel, while it is open.
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Handle {
    /// Tells the supervisor to tear the link down; resolves when it has.
    fn stop(self) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        let _ = self.control.send(Control::Stop(Some(done)));
        finished
    }

    /// A closing link first writes what is queued (node-core's `Leaving` goodbye, sent just
    /// before it asks to close every link, is the frame that matters), for at most
    /// [`FLUSH_WAIT`]; then tears down as [`Handle::stop`] does.
    async fn flush_and_stop(mut self) {
        // Without its sender the writer ends once the queue is empty.
        self.outbound = None;
        if let Some(writer) = self.writer.take() {
            let flushed = tokio::time::timeout(FLUSH_WAIT, writer).await.is_ok();
            if flushed {
                // The frames are in SCTP's buffer: give it a moment to put them on the wire.
                tokio::time::sleep(FLUSH_GRACE).await;
            }
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, self.stop()).await;
    }
}

/// Everything a link's supervisor reacts to: commands from [`Rtc`] and callbacks from webrtc-rs
/// (which run on the connection's driver and must not block, hence a channel).
enum Control {
    RemoteAnswer(Box<RTCSessionDescription>),
    GatheringComplete,
    ConnectionState(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
    Stop(Option<oneshot::Sender<()>>),
}

/// A link registered in the table whose supervisor is not yet spawned.
struct PendingStart {
    id: u64,
    role: Role,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
}

impl PendingStart {
    fn spawn(self, inner: Arc<Inner>, peer: u32, remote_offer: Option<RTCSessionDescription>) {
        let supervisor = Supervisor {
            inner,
            peer,
            id: self.id,
            role: self.role,
            control_tx: self.control_tx,
            control_rx: self.control_rx,
            pc: None,
            dc: None,
        };
        tokio::spawn(supervisor.run(remote_offer));
    }
}

impl Inner {
    /// The link table. A poisoned lock is taken over: every critical section leaves the table
    /// consistent, and a panic elsewhere must not take the network down with it.
    fn lock_links(&self) -> MutexGuard<'_, LinkTable<Handle>> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: RtcEvent) {
        // A dropped receiver means the driver is shutting down; nothing to report to.
        let _ = self.events.send(event);
    }

    /// The handle and the not yet spawned supervisor of link `id`.
    fn new_link(&self, id: u64, role: Role) -> (Handle, PendingStart) {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let handle = Handle {
            control: control_tx.clone(),
            outbound: None,
            writer: None,
        };
        let start = PendingStart {
            id,
            role,
            control_tx,
            control_rx,
        };
        (handle, start)
    }

    fn on_offer(self: &Arc<Self>, peer: u32, offer: RTCSessionDescription) {
        let me = self.me;
        let mut links = self.lock_links();
        match links.on_offer(peer, &offer.sdp) {
            OnOffer::Refused => {
                let (mine, total) = links.pending_answers(peer);
                debug!(me = %Hex(me), peer = %Hex(peer), mine, total, "rtc: offer refused, too many pending answers");
                return;
            }
            OnOffer::Ignore(why) => {
                debug!(me = %Hex(me), peer = %Hex(peer), why = why.as_str(), "rtc: offer ignored");
                return;
            }
            OnOffer::WrongIdentity(proof) => {
                debug!(me = %Hex(me), peer = %Hex(peer), ?proof, "rtc: offer refused, its certificate does not prove the sender's id");
                return;
            }
            // Our answer again (the same offer came again), or our own offer again (glare won
            // by us while it waits): either way a payload goes back the usual way (`None`: not
            // yet gathered; it goes out when it is).
            OnOffer::Reanswer(payload) | OnOffer::Reoffer(payload) => {
                if let Some(payload) = payload {
                    debug!(me = %Hex(me), peer = %Hex(peer), "rtc: offer again, signalling ours again");
                    self.emit(RtcEvent::Signal {
                        peer,
                        payload,
                        retry: false,
                    });
                }
                return;
            }
            OnOffer::Answer { replaced } => {
                if let Some(old) = replaced {
                    debug!(me = %Hex(me), peer = %Hex(peer), link = old.generation, "rtc: replacing link for new offer");
                    if old.open {
                        self.emit(RtcEvent::Closed { peer });
                    }
                    // Teardown goes on in the background; the new link does not wait for it.
                    drop(old.handle.stop());
                }
            }
        }
        let mut start = None;
        let id = links.start(peer, Role::Answerer, Some(offer.sdp.clone()), |id| {
            let (handle, pending) = self.new_link(id, Role::Answerer);
            start = Some(pending);
            Some(handle)
        });
        drop(links);
        if let (Some(id), Some(start)) = (id, start) {
            debug!(me = %Hex(me), peer = %Hex(peer), link = id, "rtc: answering offer");
            start.spawn(Arc::clone(self), peer, Some(offer));
        }
    }

    fn on_answer(&self, peer: u32, answer: RTCSessionDescription) {
        let mut links = self.lock_links();
        match links.accept_answer(peer, &answer.sdp) {
            Some(link) => {
                let _ = link
                    .handle
                    .control
                    .send(Control::RemoteAnswer(Box::new(answer)));
            }
            // Counted by the table.
            None => debug!(me = %Hex(self.me), peer = %Hex(peer), "rtc: unexpected answer ignored"),
        }
    }

    fn is_current(&self, peer: u32, id: u64) -> bool {
        self.lock_links().is_current(peer, id)
    }

    /// The data channel of link `id` opened: set up its send queue and writer, report `Open`.
    fn mark_open(self: &Arc<Self>, peer: u32, id: u64, dc: &Arc<dyn DataChannel>) {
        let mut links = self.lock_links();
        let Some(link) = links.mark_open(peer, id) else {
            return;
        };
        let (outbound, queue) = mpsc::channel(self.config.send_queue_frames.max(1));
        link.handle.outbound = Some(outbound);
        link.handle.writer = Some(tokio::spawn(write_frames(
            Arc::clone(self),
            peer,
            id,
            Arc::clone(dc),
            queue,
        )));
        debug!(me = %Hex(self.me), peer = %Hex(peer), link = id, "rtc: open");
        self.emit(RtcEvent::Open { peer });
    }

    fn deliver(&self, peer: u32, id: u64, data: BytesMut) {
        let links = self.lock_links();
        let open = links.current(peer, id).is_some_and(|link| link.open);
        if !open {
            return;
        }
        // Deliverers are serialized by the lock; the receiver only takes frames off.
        let inbound = &self.inbound;
        if inbound.frames.load(Ordering::Relaxed) >= self.config.inbound_queue_frames
            || inbound.bytes.load(Ordering::Relaxed) + data.len() > self.config.inbound_queue_bytes
        {
            self.counters
                .frames_in_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        inbound.frames.fetch_add(1, Ordering::Relaxed);
        inbound.bytes.fetch_add(data.len(), Ordering::Relaxed);
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.emit(RtcEvent::Message {
            peer,
            bytes: Vec::from(data),
        });
    }

    /// Link `id` failed: drop it from the table, report `Closed`, tell its supervisor to tear
    /// down. A no-op if the link was already replaced or closed.
    fn fail(&self, peer: u32, id: u64, reason: &str) {
        let mut links = self.lock_links();
        let Some(link) = links.fail(peer, id) else {
            return;
        };
        debug!(me = %Hex(self.me), peer = %Hex(peer), link = id, reason, "rtc: link down");
        self.emit(RtcEvent::Closed { peer });
        let _ = link.handle.control.send(Control::Stop(None));
    }
}

enum Signal {
    Offer(RTCSessionDescription),
    Answer(RTCSessionDescription),
}

/// node-core's `{"type":"offer"|"answer","sdp":"..."}` payload ([`Description::parse`]) with SDP
/// that webrtc-rs parses; anything else is `None`.
fn parse_signal(payload: &str) -> Option<Signal> {
    match Description::parse(payload)? {
        Description::Offer(sdp) => RTCSessionDescription::offer(sdp).ok().map(Signal::Offer),
        Description::Answer(sdp) => RTCSessionDescription::answer(sdp).ok().map(Signal::Answer),
    }
}

/// The payload of our local description: an offer or an answer, by the string webrtc-rs gives
/// its type (`RTCSdpType`'s `Display`: "offer", "answer").
fn signal_payload(description: &RTCSessionDescription) -> String {
    let sdp = description.sdp.clone();
    if description.sdp_type.to_string() == "answer" {
        Description::Answer(sdp).encode()
    } else {
        Description::Offer(sdp).encode()
    }
}

/// Forwards webrtc-rs callbacks to the supervisor. They run on the connection's driver task, so
/// they only enqueue.
struct LinkHandler {
    control: mpsc::UnboundedSender<Control>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for LinkHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.control.send(Control::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.control.send(Control::ConnectionState(state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.control.send(Control::DataChannel(data_channel));
    }
}

/// Why a supervisor stops.
enum Exit {
    /// Removed from the table by [`Rtc::close`], a replacement or [`Inner::fail`].
    Stopped(Option<oneshot::Sender<()>>),
    Failed(String),
}

/// Runs one link from start to teardown. Dropping it (the end of [`Supervisor::run`], or a
/// panic) releases the link's pending-answer slot in the table.
struct Supervisor {
    inner: Arc<Inner>,
    peer: u32,
    id: u64,
    role: Role,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    pc: Option<Arc<dyn PeerConnection>>,
    dc: Option<Arc<dyn DataChannel>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.inner.lock_links().released(self.peer, self.id);
    }
}

impl Supervisor {
    async fn run(mut self, remote_offer: Option<RTCSessionDescription>) {
        let deadline = Instant::now() + self.inner.config.connect_timeout;
        let exit = match tokio::time::timeout_at(deadline, self.start(remote_offer)).await {
            Err(_elapsed) => Exit::Failed("timed out while starting".to_owned()),
            Ok(Err(reason)) => Exit::Failed(reason),
            Ok(Ok(())) => self.supervise(deadline).await,
        };
        let done = match exit {
            Exit::Stopped(done) => done,
            Exit::Failed(reason) => {
                self.inner.fail(self.peer, self.id, &reason);
                None
            }
        };
        self.teardown().await;
        if let Some(done) = done {
            let _ = done.send(());
        }
        // A `close` that raced with a failure waits for its own acknowledgement.
        while let Ok(control) = self.control_rx.try_recv() {
            if let Control::Stop(Some(done)) = control {
                let _ = done.send(());
            }
        }
    }

    /// Builds the connection and sets the local description; gathering then runs on its own.
    async fn start(&mut self, remote_offer: Option<RTCSessionDescription>) -> Result<(), String> {
        let config = &self.inner.config;
        let ice_servers = if config.ice_servers.is_empty() {
            Vec::new()
        } else {
            vec![RTCIceServer {
                urls: config.ice_servers.clone(),
                ..Default::default()
            }]
        };
        let mdns = if config.mdns {
            ::rtc::ice::mdns::MulticastDnsMode::QueryOnly
        } else {
            ::rtc::ice::mdns::MulticastDnsMode::Disabled
        };
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(mdns)
            // A browser's connectivity check usually arrives before (or instead of) its
            // candidate; accepting the peer-reflexive pair at once saves ~1.5 s per link.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            // Checks every 50 ms (as browsers pace them) instead of 200 ms, over the same 1.4 s
            // per pair: ICE connects ~150 ms sooner.
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(28))
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .with_certificates(config.certificate.iter().cloned().collect())
                    .build(),
            )
            .with_setting_engine(settings)
            .with_handler(Arc::new(LinkHandler {
                control: self.control_tx.clone(),
            }))
            .with_udp_addrs(link_udp_addrs(&config.udp_addrs))
            .with_data_channel_send_buffer_limit(config.send_buffer_limit)
            .build()
            .await
            .map_err(|e| format!("building peer connection: {e}"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        self.pc = Some(Arc::clone(&pc));
        if !self.inner.is_current(self.peer, self.id) {
            return Err("superseded while starting".to_owned());
        }

        let local = match remote_offer {
            None => {
                let dc = pc
                    .create_data_channel(CHANNEL_LABEL, Some(RTCDataChannelInit::default()))
                    .await
                    .map_err(|e| format!("creating data channel: {e}"))?;
                self.adopt_channel(dc);
                pc.create_offer(None)
                    .await
                    .map_err(|e| format!("creating offer: {e}"))?
            }
            Some(offer) => {
                pc.set_remote_description(offer)
                    .await
                    .map_err(|e| format!("applying remote offer: {e}"))?;
                pc.create_answer(None)
                    .await
                    .map_err(|e| format!("creating answer: {e}"))?
            }
        };
        pc.set_local_description(local)
            .await
            .map_err(|e| format!("applying local description: {e}"))?;
        Ok(())
    }

    /// Reacts to callbacks and commands until the link ends.
    async fn supervise(&mut self, deadline: Instant) -> Exit {
        let mut signalled = false;
        let mut opened = false;
        // Offerer: our offer, and when to send it again if no answer came (node-core's
        // signalling rules, "Retries").
        let mut retry: Option<Instant> = None;
        let retry_every = Duration::from_millis(signal::OFFER_RETRY_MS);
        loop {
            let retry_at = retry;
            let control = tokio::select! {
                control = self.control_rx.recv() => control,
                () = tokio::time::sleep_until(deadline), if !opened => {
                    if self.is_open() {
                        opened = true;
                        continue;
                    }
                    return Exit::Failed("connect timeout".to_owned());
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or(deadline)), if retry_at.is_some() => {
                    let Some(at) = retry.take() else { continue };
                    // Still current, unanswered (an answer may be accepted while its
                    // `RemoteAnswer` is queued for this task) and not open: the table decides.
                    let payload = self.inner.lock_links().retry_payload(self.peer, self.id);
                    let Some(payload) = payload else { continue };
                    debug!(me = %Hex(self.inner.me), peer = %Hex(self.peer), link = self.id, "rtc: no answer yet, offering again");
                    self.inner.emit(RtcEvent::Signal {
                        peer: self.peer,
                        payload,
                        retry: true,
                    });
                    retry = Some(at + retry_every);
                    continue;
                }
            };
            // `None` cannot happen while we hold a sender ourselves; treat it as a stop.
            let Some(control) = control else {
                return Exit::Stopped(None);
            };
            match control {
                Control::Stop(done) => return Exit::Stopped(done),
                Control::GatheringComplete if !signalled => {
                    signalled = true;
                    match self.send_description().await {
                        Err(reason) => return Exit::Failed(reason),
                        Ok(()) if self.role == Role::Offerer => {
                            retry = Some(Instant::now() + retry_every);
                        }
                        Ok(()) => {}
                    }
                }
                Control::GatheringComplete => {}
                Control::RemoteAnswer(answer) => {
                    retry = None;
                    let Some(pc) = &self.pc else {
                        return Exit::Failed("no peer connection".to_owned());
                    };
                    if let Err(e) = pc.set_remote_description(*answer).await {
                        return Exit::Failed(format!("applying remote answer: {e}"));
                    }
                }
                Control::DataChannel(dc) => {
                    // The offerer hears of its own channel here too; only the first counts.
                    if self.dc.is_none() && self.role == Role::Answerer {
                        self.adopt_channel(dc);
                    }
                }
                Control::ConnectionState(state) => {
                    debug!(me = %Hex(self.inner.me), peer = %Hex(self.peer), link = self.id, %state, "rtc: connection state");
                    // `Disconnected` could recover, but ICE only calls it `Failed` 25 s later:
                    // far too long for a ring whose requests route through this link. The ring
                    // reconnects a peer it still needs, so a flapping link costs one re-offer.
                    if matches!(
                        state,
                        RTCPeerConnectionState::Failed
                            | RTCPeerConnectionState::Closed
                            | RTCPeerConnectionState::Disconnected
                    ) {
                        return Exit::Failed(format!("connection {state}"));
                    }
                }
            }
        }
    }

    fn is_open(&self) -> bool {
        self.inner
            .lock_links()
            .current(self.peer, self.id)
            .is_some_and(|link| link.open)
    }

    /// Signals the local description (and leaves its payload in the table, to be sent again).
    async fn send_description(&self) -> Result<(), String> {
        let Some(pc) = &self.pc else {
            return Err("no peer connection".to_owned());
        };
        let Some(description) = pc.local_description().await else {
            return Err("no local description after gathering".to_owned());
        };
        let payload = signal_payload(&description);
        let mut links = self.inner.lock_links();
        if links.set_local_payload(self.peer, self.id, payload.clone()) {
            debug!(me = %Hex(self.inner.me), peer = %Hex(self.peer), link = self.id, kind = %description.sdp_type, "rtc: signal");
            self.inner.emit(RtcEvent::Signal {
                peer: self.peer,
                payload,
                retry: false,
            });
        }
        Ok(())
    }

    fn adopt_channel(&mut self, dc: Arc<dyn DataChannel>) {
        self.dc = Some(Arc::clone(&dc));
        tokio::spawn(read_frames(Arc::clone(&self.inner), self.peer, self.id, dc));
    }

    /// Closes the channel (so the remote sees it close promptly) and then the connection.
    async fn teardown(&mut self) {
        debug!(me = %Hex(self.inner.me), peer = %Hex(self.peer), link = self.id, "rtc: teardown");
        if let Some(dc) = self.dc.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, dc.close()).await;
        }
        if let Some(pc) = self.pc.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, pc.close()).await;
        }
    }
}

/// Reader task: the data channel's events become `Open`, `Message` and, at the end, `Closed`.
async fn read_frames(inner: Arc<Inner>, peer: u32, id: u64, dc: Arc<dyn DataChannel>) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnOpen => inner.mark_open(peer, id, &dc),
            // Text messages (a misbehaving browser peer) are passed on as bytes too: the core
            // drops frames it cannot decode, and counts them.
            DataChannelEvent::OnMessage(message) => inner.deliver(peer, id, message.data),
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    inner.fail(peer, id, "data channel closed");
}

/// Writer task: drains the link's send queue into the channel, waiting on its back-pressure.
async fn write_frames(
    inner: Arc<Inner>,
    peer: u32,
    id: u64,
    dc: Arc<dyn DataChannel>,
    mut queue: mpsc::Receiver<Bytes>,
) {
    while let Some(frame) = queue.recv().await {
        if let Err(e) = dc.send(BytesMut::from(frame)).await {
            inner.fail(peer, id, &format!("send failed: {e}"));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_binds_loopback_only_when_no_other_interface_exists() {
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        let wildcard = vec!["0.0.0.0:0".to_owned()];
        assert_eq!(
            super::bind_addrs(&wildcard, &[ip("127.0.0.1"), ip("::1")]),
            ["127.0.0.1:0"]
        );
        assert_eq!(
            super::bind_addrs(&wildcard, &[ip("127.0.0.1"), ip("169.254.3.4")]),
            ["127.0.0.1:0"]
        );
        assert_eq!(
            super::bind_addrs(&wildcard, &[ip("127.0.0.1"), ip("10.77.0.1")]),
            ["0.0.0.0:0"]
        );
        // Only an IPv6 address: the IPv4 wildcard still has no usable interface.
        assert_eq!(
            super::bind_addrs(&["0.0.0.0:5000".to_owned()], &[ip("2001:db8::1")]),
            ["127.0.0.1:5000"]
        );
        assert_eq!(super::bind_addrs(&["[::]:0".to_owned()], &[]), ["[::1]:0"]);
        // Concrete addresses are never changed.
        assert_eq!(
            super::bind_addrs(&["10.77.0.1:0".to_owned()], &[]),
            ["10.77.0.1:0"]
        );
    }

    use super::*;

    #[test]
    fn signal_parsing_rejects_garbage() {
        assert!(parse_signal("").is_none());
        assert!(parse_signal("{").is_none());
        assert!(parse_signal(r#"{"type":"offer"}"#).is_none());
        assert!(parse_signal(r#"{"type":"rollback","sdp":""}"#).is_none());
        assert!(parse_signal(r#"{"type":"offer","sdp":"not sdp"}"#).is_none());
    }

    #[test]
    fn peer_ids_print_as_eight_hex_digits() {
        assert_eq!(Hex(0xab).to_string(), "000000ab");
    }
}
