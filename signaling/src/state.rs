//! The introducer's shared state: configuration, the registry of live peers (their mailboxes),
//! counters, and the local-session handle for an embedding process.
//!
//! Every live peer, remote (a WebSocket session) or local (the embedding process), has one
//! bounded mailbox of [`Signal`]s. Relaying is a non-blocking push into the target's mailbox: a
//! slow reader loses signals (`target_busy`) instead of stalling the sender.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, watch};

use crate::protocol::{ErrorCode, PeerId};

/// Signals a peer's mailbox holds before further ones are refused with `target_busy`.
const MAILBOX_CAPACITY: usize = 256;

/// Limits of one introducer. Every field has a default ([`SignalingConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingConfig {
    /// Open WebSocket sessions at once (said hello or not); one more gets `too_many_sessions`.
    /// Default 1024.
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
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            max_frame_bytes: 64 * 1024,
            max_msgs_per_sec: 50,
            rate_burst: 100,
            welcome_peers: 8,
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
    /// Peers registered now: remote sessions that said hello plus local sessions.
    pub peers_now: u64,
    /// Signals delivered into a peer's mailbox.
    pub relayed: u64,
    /// `error` frames sent, by code; every code is present, zeros included.
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
    sessions_now: AtomicU64,
    sessions_total: AtomicU64,
    relayed: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    shutdown: watch::Sender<bool>,
    /// Woken whenever a session ends, for [`SignalingState::sessions_closed`].
    session_ended: Notify,
}

#[derive(Debug)]
struct Registry {
    peers: BTreeMap<PeerId, Mailbox>,
    /// Tells registrations apart, so a stale guard never removes a newer owner of the same id.
    next_token: u64,
    /// SplitMix64 state for picking welcome peers.
    rng: u64,
}

#[derive(Debug)]
struct Mailbox {
    token: u64,
    sender: mpsc::Sender<Signal>,
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
                sessions_now: AtomicU64::new(0),
                sessions_total: AtomicU64::new(0),
                relayed: AtomicU64::new(0),
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
        let (registration, mailbox) = self.register(peer)?;
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

    /// Claims a session slot if fewer than `max_sessions` are open.
    pub(crate) fn open_session(&self) -> Option<SessionSlot> {
        let max = self.inner.config.max_sessions as u64;
        self.inner
            .sessions_now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        let number = self.inner.sessions_total.fetch_add(1, Ordering::Relaxed) + 1;
        Some(SessionSlot {
            state: self.clone(),
            number,
        })
    }

    /// Adds `peer` to the registry with a fresh mailbox.
    pub(crate) fn register(
        &self,
        peer: PeerId,
    ) -> Result<(Registration, mpsc::Receiver<Signal>), SignalingError> {
        let mut registry = self.registry();
        // Checked under the lock that `shutdown` clears the registry under, so no registration
        // slips in after the clear.
        if self.is_shut_down() {
            return Err(SignalingError::ShutDown);
        }
        if registry.peers.contains_key(&peer) {
            return Err(SignalingError::DuplicatePeer(peer));
        }
        let (sender, receiver) = mpsc::channel(MAILBOX_CAPACITY);
        let token = registry.next_token;
        registry.next_token += 1;
        registry.peers.insert(peer, Mailbox { token, sender });
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
        let sender = match self.registry().peers.get(&to) {
            Some(mailbox) => mailbox.sender.clone(),
            None => return Err(SignalingError::UnknownTarget(to)),
        };
        match sender.try_send(Signal { from, payload }) {
            Ok(()) => {
                self.inner.relayed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(SignalingError::TargetBusy(to)),
            // The target's session is ending; its registration is about to go.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SignalingError::UnknownTarget(to)),
        }
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

/// An open WebSocket session's place under `max_sessions`; released on drop.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    state: SignalingState,
    number: u64,
}

impl SessionSlot {
    /// 1 for the first session accepted, 2 for the next, ...: names the session in logs.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.state.inner.sessions_now.fetch_sub(1, Ordering::AcqRel);
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
        if registry
            .peers
            .get(&self.peer)
            .is_some_and(|m| m.token == self.token)
        {
            registry.peers.remove(&self.peer);
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
