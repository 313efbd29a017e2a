//! The introducer's shared state: configuration, the registry of live peers (their mailboxes),
//! counters, and the local-session handle for an embedding process.
//!
//! Every live peer, remote (a WebSocket session) or local (the embedding process), has one
//! bounded mailbox of [`Signal`]s. Relaying is a non-blocking push into the target's mailbox: a
//! slow reader loses signals (`target_busy`) instead of stalling the sender.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::access::AccessPolicy;
use crate::protocol::{ErrorCode, PeerId};

/// Signals a peer's mailbox holds before further ones are refused with `target_busy`.
const MAILBOX_CAPACITY: usize = 256;

/// A session that has not said `hello` this long after connecting is closed (`hello_timeout`).
/// Every peer says hello as its first frame, one round trip after the upgrade.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The server pings every session this often, so that a live client always has something to
/// answer (browsers and tungstenite answer pings by themselves).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A session from which nothing arrived this long (no frame, not even the pong to three pings)
/// is closed (`idle_timeout`): its client is gone or stuck.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Sessions one source address may hold at once (`too_many_from_address` beyond).
pub const MAX_SESSIONS_PER_ADDR: usize = 64;

/// Limits of one introducer. Every field has a default ([`SignalingConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingConfig {
    /// Open WebSocket sessions at once (said hello or not). When full, a newcomer evicts the
    /// oldest session that has not said hello yet; if every session said hello, it gets
    /// `too_many_sessions`. Default 1024.
    pub max_sessions: usize,
    /// Longest accepted text frame in bytes; longer ones get `oversize` and are dropped. Frames
    /// over 4x this are refused by the WebSocket layer itself, which ends the session. Default
    /// 64 KiB.
    pub max_frame_bytes: usize,
    /// Sustained frames per second per session (token bucket refill); 0 disables the limit.
    /// Default 50.
    pub max_msgs_per_sec: u32,
    /// Token bucket size: frames a session may send at once after a quiet spell. Default 100.
    pub rate_burst: u32,
    /// Most peer ids a `welcome` lists. Default 8.
    pub welcome_peers: usize,
    /// Open sessions per source address (an IPv4 address, or an IPv6 /64: one host's usual
    /// share); one more gets `too_many_from_address`. Loopback sources are exempt unless
    /// [`Self::cap_loopback`]: every peer of a one-machine ring, and of the tests, connects from
    /// 127.0.0.1. Needs the source address: serve the router with
    /// `into_make_service_with_connect_info::<SocketAddr>()`; without it no session is capped.
    /// Default
    /// [`MAX_SESSIONS_PER_ADDR`].
    pub max_sessions_per_addr: usize,
    /// Apply `max_sessions_per_addr` to loopback sources too. Default false.
    pub cap_loopback: bool,
    /// This introducer serves a ring that proves ids by link certificates (`--verify-ids`): a
    /// `hello` marked `verified` joins the sessions already under its id (`protocol` module
    /// docs). Default false: every id is one session's, first come, first served, and the flag
    /// is ignored, since in a ring that does not verify ids a second session under an id could
    /// answer that peer's offers in its place.
    pub share_verified_ids: bool,
    /// A session that has not said `hello` this long after the upgrade is closed with
    /// `hello_timeout`. Default [`HELLO_TIMEOUT`].
    pub hello_timeout: Duration,
    /// How often the server pings each session. Default [`PING_INTERVAL`].
    pub ping_interval: Duration,
    /// A session silent this long (no frame, no pong) is closed with `idle_timeout`. Default
    /// [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// The `Host` and `Origin` checks of `/ws` and `/healthz` (crate::access).
    pub access: AccessPolicy,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            max_frame_bytes: 64 * 1024,
            max_msgs_per_sec: 50,
            rate_burst: 100,
            welcome_peers: 8,
            max_sessions_per_addr: MAX_SESSIONS_PER_ADDR,
            cap_loopback: false,
            share_verified_ids: false,
            hello_timeout: HELLO_TIMEOUT,
            ping_interval: PING_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            access: AccessPolicy::default(),
        }
    }
}

/// A relayed signal as a peer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub from: PeerId,
    pub payload: String,
}

/// Why registering or relaying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    #[error("peer {0} is already connected")]
    DuplicatePeer(PeerId),
    #[error("no live peer {0}")]
    UnknownTarget(PeerId),
    #[error("peer {0} is not reading its signals fast enough")]
    TargetBusy(PeerId),
    #[error("the introducer is shut down")]
    ShutDown,
}

impl SignalingError {
    /// The `error` frame code for this failure (`ShutDown` has none on the wire).
    pub const fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::DuplicatePeer(_) => Some(ErrorCode::DuplicatePeer),
            Self::UnknownTarget(_) => Some(ErrorCode::UnknownTarget),
            Self::TargetBusy(_) => Some(ErrorCode::TargetBusy),
            Self::ShutDown => None,
        }
    }
}

/// A snapshot of the counters, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalingStats {
    /// WebSocket sessions open now (said hello or not).
    pub sessions_now: u64,
    /// WebSocket sessions accepted since start (rejected ones are counted as errors).
    pub sessions_total: u64,
    /// Peer ids registered now, by remote sessions that said hello and local sessions (an id
    /// shared by several verified sessions counts once).
    pub peers_now: u64,
    /// Signals delivered into a peer's mailbox.
    pub relayed: u64,
    /// Sessions closed before their `hello` to make room for a newer one when the introducer
    /// (or their source address) was full; each was sent `too_many_sessions` (or
    /// `too_many_from_address`) first.
    pub evicted: u64,
    /// Refusals by code: `error` frames sent (sessions refused, timed out or closed included)
    /// and HTTP requests refused before the upgrade (`bad_host`, `bad_origin`); every code is
    /// present, zeros included.
    pub errors: BTreeMap<ErrorCode, u64>,
}

/// The introducer's state: cheap to clone (an `Arc` inside), shared by every route and session.
/// Mount it with [`crate::router`]; several routers may share one state.
#[derive(Debug, Clone)]
pub struct SignalingState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SignalingConfig,
    registry: Mutex<Registry>,
    /// Open sessions; `sessions_now` mirrors its size (written under its lock).
    sessions: Mutex<Sessions>,
    sessions_now: AtomicU64,
    sessions_total: AtomicU64,
    relayed: AtomicU64,
    evicted: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    shutdown: watch::Sender<bool>,
    /// Woken whenever a session ends, for [`SignalingState::sessions_closed`].
    session_ended: Notify,
}

#[derive(Debug)]
struct Registry {
    /// The sessions registered under each id: one, or several that all said hello `verified`
    /// after the first (`protocol` module docs).
    peers: BTreeMap<PeerId, Vec<Mailbox>>,
    /// Tells registrations apart, so a stale guard never removes a newer owner of the same id.
    next_token: u64,
    /// SplitMix64 state for picking welcome peers.
    rng: u64,
}

/// The open WebSocket sessions, for `max_sessions` and `max_sessions_per_addr`.
#[derive(Debug, Default)]
struct Sessions {
    /// By session number, so the oldest comes first.
    open: BTreeMap<u64, OpenSession>,
    /// Open sessions per source, for sources that have a known address.
    per_source: HashMap<Source, usize>,
}

#[derive(Debug)]
struct OpenSession {
    source: Option<Source>,
    /// Present until the session says hello: then it can be evicted for a newer one.
    evict: Option<Arc<Notify>>,
}

/// What `max_sessions_per_addr` counts by: an IPv4 address, or the /64 prefix of an IPv6 one
/// (a host commonly owns a whole /64, so counting single IPv6 addresses would cap nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source {
    ip: IpAddr,
    loopback: bool,
}

impl Source {
    pub(crate) fn of(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_canonical();
        let loopback = ip.is_loopback();
        let ip = match ip {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
            v4 => v4,
        };
        Self { ip, loopback }
    }
}

/// Why [`SignalingState::open_session`] refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_sessions` sessions are open, each said hello.
    Sessions,
    /// The source's `max_sessions_per_addr` sessions are open, each said hello.
    Address,
}

#[derive(Debug)]
struct Mailbox {
    token: u64,
    sender: mpsc::Sender<Signal>,
}

/// A registration under an id some session already holds is refused unless it is `verified`
/// and the introducer shares verified ids ([`SignalingConfig::share_verified_ids`]).
fn admits(held: Option<&Vec<Mailbox>>, verified: bool, share: bool) -> bool {
    (verified && share) || held.is_none_or(Vec::is_empty)
}

impl SignalingState {
    pub fn new(config: SignalingConfig) -> Self {
        // Per-process seed without a `rand` dependency; welcome picks need spread, not secrecy.
        let seed = RandomState::new().hash_one(0x5167_6e61_6c69_6e67_u64);
        Self {
            inner: Arc::new(Inner {
                config,
                registry: Mutex::new(Registry {
                    peers: BTreeMap::new(),
                    next_token: 0,
                    rng: seed,
                }),
                sessions: Mutex::new(Sessions::default()),
                sessions_now: AtomicU64::new(0),
                sessions_total: AtomicU64::new(0),
                relayed: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                errors: Default::default(),
                shutdown: watch::Sender::new(false),
                session_ended: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> SignalingStats {
        let inner = &*self.inner;
        SignalingStats {
            sessions_now: inner.sessions_now.load(Ordering::Relaxed),
            sessions_total: inner.sessions_total.load(Ordering::Relaxed),
            peers_now: self.registry().peers.len() as u64,
            relayed: inner.relayed.load(Ordering::Relaxed),
            evicted: inner.evicted.load(Ordering::Relaxed),
            errors: ErrorCode::ALL
                .iter()
                .zip(&inner.errors)
                .map(|(code, count)| (*code, count.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Registers the embedding process as peer `peer`, as if it had said `hello`: it appears in
    /// welcomes, and signals addressed to it arrive on the returned [`LocalReceiver`]. It sends
    /// with the returned [`LocalSender`]. Dropping the receiver unregisters the peer.
    ///
    /// Fails with [`SignalingError::DuplicatePeer`] if `peer` is already live and with
    /// [`SignalingError::ShutDown`] after [`Self::shutdown`].
    pub fn local_session(
        &self,
        peer: PeerId,
    ) -> Result<(LocalSender, LocalReceiver), SignalingError> {
        let (registration, mailbox) = self.register(peer, false)?;
        let sender = LocalSender {
            state: self.clone(),
            from: peer,
        };
        Ok((
            sender,
            LocalReceiver {
                mailbox,
                _registration: registration,
            },
        ))
    }

    /// Closes every WebSocket session (with a close frame), refuses new ones, and unregisters
    /// every peer, so every [`LocalReceiver::recv`] returns `None`. Call before stopping the
    /// HTTP server: its graceful shutdown does not wait for upgraded connections otherwise.
    pub fn shutdown(&self) {
        let mut registry = self.registry();
        self.inner.shutdown.send_replace(true);
        // Dropping the senders ends every local receiver; sessions also watch the flag.
        registry.peers.clear();
    }

    /// Resolves once no WebSocket session is open. After [`Self::shutdown`], awaiting this
    /// (with a timeout of your choice) lets every session flush its close frame before the
    /// process exits.
    pub async fn sessions_closed(&self) {
        loop {
            // Registered before the check, so a session ending in between still wakes us.
            let ended = self.inner.session_ended.notified();
            if self.inner.sessions_now.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    pub(crate) fn watch_shutdown(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Claims a session slot for a client at `source` (if known). When its address, or the
    /// whole introducer, is full, the oldest session there that has not said hello yet is
    /// evicted (told through its [`SessionSlot::evicted`]) to make room: a peer says hello at
    /// once, so a full house of silent sessions cannot keep it out. Refused only when every
    /// session in the way has said hello.
    pub(crate) fn open_session(&self, source: Option<SocketAddr>) -> Result<SessionSlot, Full> {
        let config = &self.inner.config;
        let source = source.map(Source::of);
        let capped = source.filter(|s| config.cap_loopback || !s.loopback);
        let mut sessions = self.sessions();
        if let Some(capped) = capped
            && sessions.per_source.get(&capped).copied().unwrap_or(0)
                >= config.max_sessions_per_addr
        {
            let oldest_waiting = sessions
                .open
                .iter()
                .find(|(_, s)| s.evict.is_some() && s.source == Some(capped))
                .map(|(number, _)| *number);
            match oldest_waiting {
                Some(number) => self.evict(&mut sessions, number),
                None => return Err(Full::Address),
            }
        }
        if sessions.open.len() >= config.max_sessions {
            let oldest_waiting = sessions
                .open
                .iter()
                .find(|(_, s)| s.evict.is_some())
                .map(|(number, _)| *number);
            match oldest_waiting {
                Some(number) => self.evict(&mut sessions, number),
                None => return Err(Full::Sessions),
            }
        }
        let number = self.inner.sessions_total.fetch_add(1, Ordering::Relaxed) + 1;
        let evicted = Arc::new(Notify::new());
        sessions.open.insert(
            number,
            OpenSession {
                source,
                evict: Some(evicted.clone()),
            },
        );
        if let Some(source) = source {
            *sessions.per_source.entry(source).or_default() += 1;
        }
        self.inner
            .sessions_now
            .store(sessions.open.len() as u64, Ordering::Release);
        Ok(SessionSlot {
            state: self.clone(),
            number,
            evicted,
        })
    }

    /// Removes session `number` from the count now and tells it to close.
    fn evict(&self, sessions: &mut Sessions, number: u64) {
        if let Some(evict) = sessions.forget(number) {
            evict.notify_one();
            self.inner.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // Every update is a few inserts and removes done before any can panic.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `peer` to the registry with a fresh mailbox; beside the sessions already holding
    /// the id if `verified` (`protocol` module docs), else only if none does.
    pub(crate) fn register(
        &self,
        peer: PeerId,
        verified: bool,
    ) -> Result<(Registration, mpsc::Receiver<Signal>), SignalingError> {
        let mut registry = self.registry();
        // Checked under the lock that `shutdown` clears the registry under, so no registration
        // slips in after the clear.
        if self.is_shut_down() {
            return Err(SignalingError::ShutDown);
        }
        let share = self.inner.config.share_verified_ids;
        if !admits(registry.peers.get(&peer), verified, share) {
            return Err(SignalingError::DuplicatePeer(peer));
        }
        let (sender, receiver) = mpsc::channel(MAILBOX_CAPACITY);
        let token = registry.next_token;
        registry.next_token += 1;
        registry
            .peers
            .entry(peer)
            .or_default()
            .push(Mailbox { token, sender });
        let registration = Registration {
            state: self.clone(),
            peer,
            token,
        };
        Ok((registration, receiver))
    }

    /// Every live peer (remote sessions that said hello and local sessions), sorted. An
    /// embedding peer uses it to learn who bootstraps through it (`node-native`'s driver: a
    /// ring of one merges with them).
    pub fn live_peers(&self) -> Vec<PeerId> {
        self.registry().peers.keys().copied().collect()
    }

    /// Up to `welcome_peers` live peers other than `me`, picked uniformly at random, sorted.
    pub(crate) fn welcome_peers(&self, me: PeerId) -> Vec<PeerId> {
        let mut registry = self.registry();
        let mut others: Vec<PeerId> = registry
            .peers
            .keys()
            .copied()
            .filter(|p| *p != me)
            .collect();
        let wanted = self.inner.config.welcome_peers.min(others.len());
        // Partial Fisher-Yates: the first `wanted` slots become a uniform sample.
        for slot in 0..wanted {
            let remaining = (others.len() - slot) as u64;
            let pick = slot + (registry.next_random() % remaining) as usize;
            others.swap(slot, pick);
        }
        others.truncate(wanted);
        others.sort_unstable();
        others
    }

    /// Pushes a signal into `to`'s mailbox without waiting.
    pub(crate) fn relay(
        &self,
        from: PeerId,
        to: PeerId,
        payload: String,
    ) -> Result<(), SignalingError> {
        let senders: Vec<mpsc::Sender<Signal>> = match self.registry().peers.get(&to) {
            Some(mailboxes) if !mailboxes.is_empty() => {
                mailboxes.iter().map(|m| m.sender.clone()).collect()
            }
            _ => return Err(SignalingError::UnknownTarget(to)),
        };
        // Every session under the id gets it (several only for a verified id); delivered if
        // one took it.
        let mut outcome = Err(SignalingError::UnknownTarget(to));
        for sender in senders {
            match sender.try_send(Signal {
                from,
                payload: payload.clone(),
            }) {
                Ok(()) => outcome = Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) if outcome.is_err() => {
                    outcome = Err(SignalingError::TargetBusy(to));
                }
                // Full beside a delivery, or the session is ending (its registration is about
                // to go).
                Err(_) => {}
            }
        }
        if outcome.is_ok() {
            self.inner.relayed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    pub(crate) fn count_error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.inner.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sessions {
    /// Drops session `number` from the counts; its eviction handle if it had not said hello.
    fn forget(&mut self, number: u64) -> Option<Arc<Notify>> {
        let session = self.open.remove(&number)?;
        if let Some(source) = session.source
            && let Some(count) = self.per_source.get_mut(&source)
        {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
        session.evict
    }
}

impl Registry {
    fn next_random(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea, Flood 2014).
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// An open WebSocket session's place under `max_sessions` and `max_sessions_per_addr`;
/// released on drop, or earlier when the session is evicted.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    state: SignalingState,
    number: u64,
    evicted: Arc<Notify>,
}

impl SessionSlot {
    /// 1 for the first session accepted, 2 for the next, ...: names the session in logs.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Resolves once this session has been evicted to make room (only possible before
    /// [`Self::said_hello`]); its slot is already released then, so the session should close.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Marks the session as having said hello, so it is no longer evicted for newcomers.
    /// False if it was evicted already (then it must not register).
    pub(crate) fn said_hello(&self) -> bool {
        let mut sessions = self.state.sessions();
        match sessions.open.get_mut(&self.number) {
            Some(session) => {
                session.evict = None;
                true
            }
            None => false,
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut sessions = self.state.sessions();
        // Absent if evicted: its counts were released then.
        sessions.forget(self.number);
        self.state
            .inner
            .sessions_now
            .store(sessions.open.len() as u64, Ordering::Release);
        drop(sessions);
        self.state.inner.session_ended.notify_waiters();
    }
}

/// A peer id's entry in the registry; removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    state: SignalingState,
    peer: PeerId,
    token: u64,
}

impl Registration {
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.state.registry();
        if let Some(mailboxes) = registry.peers.get_mut(&self.peer) {
            mailboxes.retain(|m| m.token != self.token);
            if mailboxes.is_empty() {
                registry.peers.remove(&self.peer);
            }
        }
    }
}

/// Sends signals as a local peer (see [`SignalingState::local_session`]). Cloneable; keeps
/// working after the receiver is dropped, though replies then find no one.
#[derive(Debug, Clone)]
pub struct LocalSender {
    state: SignalingState,
    from: PeerId,
}

impl LocalSender {
    /// The local peer's id, the `from` of every signal it sends.
    pub fn peer(&self) -> PeerId {
        self.from
    }

    /// Relays `payload` to `to` (a remote session or another local peer) without waiting.
    /// Fails with [`SignalingError::UnknownTarget`] or [`SignalingError::TargetBusy`].
    pub fn send(&self, to: PeerId, payload: impl Into<String>) -> Result<(), SignalingError> {
        self.state.relay(self.from, to, payload.into())
    }
}

/// Signals addressed to a local peer. Dropping it unregisters the peer.
#[derive(Debug)]
pub struct LocalReceiver {
    mailbox: mpsc::Receiver<Signal>,
    _registration: Registration,
}

impl LocalReceiver {
    /// The next signal; `None` once the introducer is shut down. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.mailbox.recv().await
    }

    /// The next signal if one is waiting.
    pub fn try_recv(&mut self) -> Option<Signal> {
        self.mailbox.try_recv().ok()
    }
}
