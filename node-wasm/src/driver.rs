//! The browser driver: owns the sans-IO [`Peer`] (node-core's peer session: the node,
//! signalling paths, the join plan, group commit), feeds it inputs and carries out its outputs.
//!
//! JavaScript is single-threaded and event-driven, so the driver is a [`Shared`] cell that every
//! callback (data channel, WebSocket, timer, API call) enters through [`with_driver`]: borrow,
//! hand the input to the core, drain the core's outputs, re-arm the one `setTimeout` at the
//! core's next deadline, release, then deliver queued application events. No callback into
//! user code runs while the driver is borrowed, so a user's `onEvent` handler may call back into
//! the peer.
//!
//! Signaling paths are the peer session's (`node_core::peer::session`), as for the native
//! peer: an SDP payload goes through the ring as soon as this peer holds any open link, through
//! the introducer only for the first link or when the ring reports no route; answers go back
//! the way the offer came.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};

use futures_channel::oneshot;
use node_core::node::{Config, Event, OpId, OpOutcome, Output};
use node_core::peer::budget::{BudgetStep, ConnectionBudget, TAB_CONNECTION_LIMIT};
use node_core::peer::commit::Batch;
use node_core::peer::join::Retry;
use node_core::signal_path::SignalPath;
use node_core::{Id, Node, Peer, PeerOutput, Time};
use serde_json::{Value, json};
use signaling::{ClientMessage, PeerId as SigPeer, ServerMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::introducer::Introducer;
use crate::js;
use crate::links::Links;

/// What a command resolves to: the outcome or a JS `Error`.
pub type Reply = Result<OpOutcome, JsValue>;

/// Why `start` failed: (code, message).
pub type StartError = (&'static str, String);

/// Parsed `ChordPeer.start` options.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub introducer: String,
    pub ice_servers: Vec<String>,
    pub id: Option<Id>,
    /// Persist the store in IndexedDB (default) or keep it in memory only.
    pub persist: bool,
    pub replicas: Option<usize>,
    pub read_quorum: Option<usize>,
    pub write_quorum: Option<usize>,
    /// Peer connections this tab may create in its lifetime (`connectionLimit`; Chromium's
    /// cap by default).
    pub connection_limit: u64,
    /// What this peer says it is in ring walks (`agent`); by default derived from
    /// `navigator.userAgent` (`chromium 131`, `firefox 128`, see `node_core::agent`).
    pub agent: Option<String>,
    /// Prove this tab's id by its links' certificate and refuse peers that do not prove theirs
    /// (`verifyIds`, node-core's `peer::identity`; identity.rs). Excludes `id`.
    pub verify_ids: bool,
}

impl StartOptions {
    pub fn from_js(options: &JsValue) -> Result<Self, String> {
        let text = js_sys::JSON::stringify(options)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or("options must be an object")?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("bad options: {e}"))?;
        let introducer = v["introducer"]
            .as_str()
            .ok_or("options.introducer is required (ws://host:port/ws or page:<room>)")?
            .to_string();
        if !(introducer.starts_with("ws://")
            || introducer.starts_with("wss://")
            || introducer.starts_with("page:"))
        {
            return Err(format!(
                "introducer {introducer:?} must start with ws://, wss:// or page:"
            ));
        }
        let ice_servers = match &v["iceServers"] {
            Value::Null => Vec::new(),
            Value::Array(list) => list
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "iceServers must be a list of URL strings".to_string())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("iceServers must be a list of URL strings".into()),
        };
        let id =
            match &v["id"] {
                Value::Null => None,
                Value::String(s) if s.len() == 8 => Some(Id(u32::from_str_radix(s, 16)
                    .map_err(|_| format!("id {s:?} is not 8 hex digits"))?)),
                other => return Err(format!("id {other} is not 8 hex digits")),
            };
        let verify_ids = match &v["verifyIds"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("verifyIds must be true or false".into()),
        };
        if verify_ids && id.is_some() {
            return Err(
                "verifyIds and id exclude each other: a verifying tab's id is the one its \
                 certificate proves"
                    .into(),
            );
        }
        let persist = match v["storage"].as_str() {
            None | Some("indexeddb") => true,
            Some("memory") => false,
            Some(other) => {
                return Err(format!(
                    "storage {other:?} must be \"indexeddb\" or \"memory\""
                ));
            }
        };
        let count = |name: &str| -> Result<Option<usize>, String> {
            match &v[name] {
                Value::Null => Ok(None),
                x => x
                    .as_u64()
                    .filter(|n| (1..=16).contains(n))
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| format!("{name} must be a number from 1 to 16")),
            }
        };
        Ok(Self {
            introducer,
            ice_servers,
            id,
            persist,
            replicas: count("replicas")?,
            read_quorum: count("readQuorum")?,
            write_quorum: count("writeQuorum")?,
            connection_limit: match &v["connectionLimit"] {
                Value::Null => TAB_CONNECTION_LIMIT,
                x => x
                    .as_u64()
                    .filter(|n| (2..=TAB_CONNECTION_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("connectionLimit must be a number from 2 to {TAB_CONNECTION_LIMIT}")
                    })?,
            },
            agent: match &v["agent"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => return Err("agent must be a string".into()),
            },
            verify_ids,
        })
    }
}

/// Counters of the driver itself: node-core's shape, the same the native peer reports.
use node_core::peer::stats::DriverStats;

/// The cell every callback enters through.
pub struct Shared {
    id: Id,
    driver: RefCell<Driver>,
    events: RefCell<VecDeque<Value>>,
    callback: RefCell<Option<js_sys::Function>>,
    /// `peer.watch` callbacks by key, and the changes waiting for them (delivered like
    /// `events`, never while the driver is borrowed).
    watchers: RefCell<std::collections::BTreeMap<String, js_sys::Function>>,
    watch_events: RefCell<VecDeque<(String, Value)>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({})", self.id)
    }
}

pub type Handle = Rc<Shared>;

impl Shared {
    pub fn id(&self) -> Id {
        self.id
    }

    pub fn set_callback(&self, callback: js_sys::Function) {
        *self.callback.borrow_mut() = Some(callback);
    }

    /// Watches `key` with `callback` (`peer.watch`; a second watch of a key replaces its
    /// callback). Errors: the core's (`too_large`, `busy`) or `stopped`.
    pub fn watch(self: &Rc<Self>, key: String, callback: js_sys::Function) -> Result<(), JsValue> {
        with_driver(self, |d, shared| {
            if d.stopped {
                return Err(js::error("stopped", "this peer was stopped"));
            }
            let now = d.now();
            d.peer
                .node_mut()
                .watch(&key, now)
                .map_err(|e| js::error(e.code(), &e.to_string()))?;
            shared.watchers.borrow_mut().insert(key, callback);
            Ok(())
        })
    }

    /// Stops watching `key` (`peer.unwatch`); false when it was not watched.
    pub fn unwatch(self: &Rc<Self>, key: &str) -> bool {
        with_driver(self, |d, shared| {
            let now = d.now();
            d.peer.node_mut().unwatch(key, now);
            shared.watchers.borrow_mut().remove(key).is_some()
        })
    }

    /// Delivers queued events to the user's callback (never while the driver is borrowed).
    fn flush_events(&self) {
        loop {
            let Some((key, event)) = self.watch_events.borrow_mut().pop_front() else {
                break;
            };
            let callback = self.watchers.borrow().get(&key).cloned();
            if let Some(callback) = callback {
                let _ = callback.call1(&JsValue::NULL, &js::value(&event));
            }
        }
        loop {
            let Some(event) = self.events.borrow_mut().pop_front() else {
                return;
            };
            let callback = self.callback.borrow().clone();
            if let Some(callback) = callback {
                let _ = callback.call1(&JsValue::NULL, &js::value(&event));
            }
        }
    }
}

/// The driver's state; only [`with_driver`] touches it.
pub struct Driver {
    /// The node and the policy both drivers share (node-core's peer session).
    pub peer: Peer,
    origin_ms: f64,
    pub(crate) me: Weak<Shared>,
    pub links: Links,
    introducer: Option<Introducer>,
    introducer_url: String,
    pending: HashMap<OpId, oneshot::Sender<Reply>>,
    started: Option<oneshot::Sender<Result<(), StartError>>>,
    /// Connections this tab may still create (node-core's `peer::budget`).
    budget: ConnectionBudget,
    /// Cut off from the ring after start (`Event::Isolated`): joining again, without limit.
    rejoining: bool,
    waiting_welcome: bool,
    timer: Option<(i32, Time)>,
    timer_callback: Closure<dyn FnMut()>,
    stats: DriverStats,
    stopped: bool,
    storage: Option<crate::storage::Storage>,
    /// IndexedDB transactions of the peer session's batches (node-core's `peer::commit`: the
    /// outputs after a batch wait until its transaction completed), by batch id.
    transactions_pending: std::collections::BTreeMap<u64, (f64, usize)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({})", self.peer.id())
    }
}

pub(crate) async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Milliseconds from `performance.now()` (monotonic).
pub fn performance_now() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or_else(js_sys::Date::now, |p| p.now())
}

/// `navigator.userAgent` (a window's or a worker's), empty when there is none.
fn user_agent() -> String {
    js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|n| js_sys::Reflect::get(&n, &"userAgent".into()))
        .ok()
        .and_then(|ua| ua.as_string())
        .unwrap_or_default()
}

/// 64 random bits from `crypto.getRandomValues`.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
        .ok()
        .and_then(|c| c.dyn_into::<web_sys::Crypto>().ok());
    match crypto {
        Some(crypto) if crypto.get_random_values_with_u8_array(&mut bytes).is_ok() => {
            u64::from_le_bytes(bytes)
        }
        // No Web Crypto: fall back to the clock (ids only need to differ between tabs).
        _ => (js_sys::Math::random() * 2f64.powi(53)) as u64 ^ performance_now().to_bits(),
    }
}

/// Creates the peer, restores its store, starts its introducer session and waits until it is
/// a ring member.
pub async fn start(options: StartOptions) -> Result<Handle, StartError> {
    let seed = random_u64();
    // A verifying tab's id is the one its certificate proves (identity.rs; `verifyIds`
    // excludes `id`).
    let identity = if options.verify_ids {
        Some(crate::identity::load_or_create(options.persist).await?)
    } else {
        None
    };
    let remembered = if options.persist {
        crate::storage::session_peer_id()
    } else {
        None
    };
    let id = match &identity {
        Some(identity) => identity.id(),
        None => options
            .id
            .or(remembered.map(Id))
            .unwrap_or(Id((seed >> 32) as u32)),
    };
    if options.persist && options.id.is_none() {
        crate::storage::remember_session_peer_id(id.0);
    }
    let mut config = Config::with_seed(seed);
    config.agent = options
        .agent
        .clone()
        .unwrap_or_else(|| node_core::agent::of_user_agent(&user_agent()));
    if let Some(k) = options.replicas {
        config.replicas = k;
    }
    if let Some(r) = options.read_quorum {
        config.read_quorum = r;
    }
    if let Some(w) = options.write_quorum {
        config.write_quorum = w;
    }
    // A tab may create only so many peer connections in its lifetime: node-core's link
    // policy for a budgeted peer.
    node_core::peer::budget::budgeted_links(&mut config);
    let (started_tx, started_rx) = oneshot::channel();
    let origin_ms = performance_now();
    let shared = Rc::new_cyclic(|me: &Weak<Shared>| {
        let timer_me = me.clone();
        let timer_callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(shared) = timer_me.upgrade() {
                with_driver(&shared, |d, _| {
                    d.timer = None;
                    let now = d.now();
                    d.peer.handle_timeout(now);
                });
            }
        });
        Shared {
            id,
            driver: RefCell::new(Driver {
                peer: {
                    // A tab has no address to give, but its forwarding counts in the origin's
                    // whole-flood total (node_core::flood, reports).
                    let mut node = Node::new(config, id, 0);
                    node.report_floods(None);
                    Peer::new(node, options.persist)
                },
                origin_ms,
                me: me.clone(),
                links: Links::new(
                    id.0,
                    options.ice_servers.clone(),
                    identity.map(|i| i.certificate),
                ),
                introducer: None,
                introducer_url: options.introducer.clone(),
                pending: HashMap::new(),
                started: Some(started_tx),
                budget: ConnectionBudget::new(options.connection_limit),
                rejoining: false,
                waiting_welcome: true,
                timer: None,
                timer_callback,
                stats: DriverStats::default(),
                stopped: false,
                storage: None,
                transactions_pending: std::collections::BTreeMap::new(),
            }),
            events: RefCell::new(VecDeque::new()),
            callback: RefCell::new(None),
            watchers: RefCell::new(std::collections::BTreeMap::new()),
            watch_events: RefCell::new(VecDeque::new()),
        }
    });
    if options.persist {
        let began = performance_now();
        let storage = crate::storage::Storage::open(id.0)
            .await
            .map_err(|e| ("storage_error", e))?;
        let loaded = storage.load().await.map_err(|e| ("storage_error", e))?;
        with_driver(&shared, |d, _| {
            let now = d.now();
            let restored = d
                .peer
                .node_mut()
                .restore(loaded.entries, loaded.lamport, now)
                .map_err(|e| ("storage_error", e.to_string()))?;
            d.stats.storage.restored_entries = restored.entries as u64;
            d.stats.storage.restore_ms = performance_now() - began;
            d.storage = Some(storage);
            Ok::<_, StartError>(())
        })?;
    }
    with_driver(&shared, |d, h| {
        d.introducer = Some(Introducer::open(h, &options.introducer, options.verify_ids));
        d.peer.set_remote(true);
    });
    match started_rx.await {
        Ok(Ok(())) => Ok(shared),
        Ok(Err(e)) => {
            stop(&shared);
            Err(e)
        }
        Err(_) => Err(("stopped", "the peer stopped while starting".to_string())),
    }
}

/// Runs `f` on the driver, then drains the core, re-arms the timer and delivers events.
pub fn with_driver<R>(shared: &Handle, f: impl FnOnce(&mut Driver, &Handle) -> R) -> R {
    let result = {
        let mut d = shared.driver.borrow_mut();
        let result = f(&mut d, shared);
        d.drain(shared);
        d.arm_timer();
        result
    };
    shared.flush_events();
    result
}

/// Runs `f` on the driver of a peer held weakly (callbacks hold weak references so a stopped,
/// dropped peer is freed).
pub fn with_weak(me: &Weak<Shared>, f: impl FnOnce(&mut Driver, &Handle)) {
    if let Some(shared) = me.upgrade() {
        with_driver(&shared, f);
    }
}

/// Starts a command and waits for its result; returns (result, latency in ms).
pub async fn command(shared: &Handle, f: impl FnOnce(&mut Node, Time) -> OpId) -> (Reply, f64) {
    let begin = performance_now();
    let (tx, rx) = oneshot::channel();
    with_driver(shared, |d, _| {
        if d.stopped {
            let _ = tx.send(Err(js::error("stopped", "this peer was stopped")));
            return;
        }
        let now = d.now();
        let op = f(d.peer.node_mut(), now);
        d.pending.insert(op, tx);
    });
    let reply = rx
        .await
        .unwrap_or_else(|_| Err(js::error("stopped", "this peer was stopped")));
    let ms = ((performance_now() - begin) * 1000.0).round() / 1000.0;
    (reply, ms)
}

/// Walks successor pointers from this peer; stops at the start, a failure, or `limit` peers.
pub async fn walk(shared: &Handle, limit: usize) -> Vec<Value> {
    let me = shared.id();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut at = me;
    while out.len() < limit && seen.insert(at) {
        let (reply, _) = command(shared, |n, now| n.peer_view(at, now)).await;
        let Ok(OpOutcome::View(view)) = reply else {
            break;
        };
        out.push(js::peer_view(&view));
        match view.successors.iter().find(|s| !seen.contains(*s)) {
            Some(next) if *next != me => at = *next,
            _ => break,
        }
    }
    out
}

/// Leaves the ring, closes every link and the introducer; pending commands fail `stopped`.
pub fn stop(shared: &Handle) {
    with_driver(shared, |d, _| {
        if d.stopped {
            return;
        }
        let now = d.now();
        if d.peer.node().is_joined() {
            d.peer.node_mut().leave(now);
        }
        // Let the core's `Leaving` frames out before closing the channels.
        d.drain_frames_only();
        d.stopped = true;
        d.links.close_all();
        if let Some(introducer) = d.introducer.take() {
            introducer.close();
        }
        d.peer.set_remote(false);
        if let Some(storage) = d.storage.take() {
            storage.close();
        }
        for (_, tx) in d.pending.drain() {
            let _ = tx.send(Err(js::error("stopped", "this peer was stopped")));
        }
        if let Some((handle, _)) = d.timer.take()
            && let Some(window) = web_sys::window()
        {
            window.clear_timeout_with_handle(handle);
        }
    });
}

impl Driver {
    pub fn now(&self) -> Time {
        (performance_now() - self.origin_ms).max(0.0) as Time
    }

    fn emit(&self, event: Value) {
        if let Some(shared) = self.me.upgrade() {
            let mut event = event;
            event["at_ms"] = json!(self.now());
            shared.events.borrow_mut().push_back(event);
        }
    }

    /// Carries out every output of the peer until it only asks to be woken later; a batch of
    /// writes goes to IndexedDB, and what waits for it comes out once its transaction
    /// completed ([`Driver::transaction_done`]).
    fn drain(&mut self, shared: &Handle) {
        if self.stopped {
            // Nothing leaves a stopped peer; its core is only drained to free the queue.
            while !matches!(self.peer.poll_output(), PeerOutput::Timeout(_)) {}
            return;
        }
        loop {
            match self.peer.poll_output() {
                PeerOutput::Timeout(_) => return,
                PeerOutput::Persist(batch) => self.persist(*batch),
                output => self.carry_out(shared, output),
            }
        }
    }

    fn carry_out(&mut self, shared: &Handle, output: PeerOutput) {
        match output {
            // The guard sends the frame. Not sent (no open channel, or its buffer is full): the
            // core counts it, and a streak of them closes the link.
            PeerOutput::Send { to, bytes } if !self.links.send(to.0, &bytes) => {
                self.stats.frames_without_channel += 1;
                let now = self.now();
                self.peer.send_failed(to, now);
            }
            PeerOutput::Connect(peer) => {
                self.links.connect(shared, peer.0);
                self.check_budget();
            }
            PeerOutput::Disconnect(peer) => self.links.close(peer.0),
            PeerOutput::Deliver { from, payload } => {
                self.incoming_signal(from.0, &payload, SignalPath::Ring);
            }
            PeerOutput::Introducer { to, payload, .. } => {
                if let Some(introducer) = &self.introducer {
                    introducer.send(&ClientMessage::Signal {
                        to: SigPeer::new(to.0),
                        payload,
                    });
                }
            }
            PeerOutput::Joined { successor } => {
                self.rejoining = false;
                self.emit(json!({"type": "joined", "successor": successor.to_string()}));
                self.finish_start(Ok(()));
            }
            // A join through one member can fail for reasons of that member (its link to us
            // did not open, it left, our previous incarnation still holds our id): the join
            // plan says when to try the next one the introducer named (the peer session's
            // timer brings `JoinDue`), and when to give up.
            PeerOutput::JoinFailed { error, retry } => match retry {
                Retry::At { through, .. } => self.emit(json!({
                    "type": "join_retry",
                    "reason": error.to_string(),
                    "via": through.to_string(),
                })),
                Retry::GiveUp => self.finish_start(Err(("join_timeout", error.to_string()))),
            },
            PeerOutput::JoinDue { through } => self.join_through(through.0),
            PeerOutput::OpDone { op, result } => {
                if let Some(tx) = self.pending.remove(&op) {
                    let reply =
                        (*result).map_err(|e| js::error(crate::error_code(&e), &e.to_string()));
                    let _ = tx.send(reply);
                }
            }
            PeerOutput::Event(event) => self.on_event(*event),
            _ => {}
        }
    }

    /// After a link was started: says when the tab's connection budget runs low, and leaves
    /// the ring gracefully (`stop`) before the browser's cap would make it fail silently.
    fn check_budget(&mut self) {
        let created = self.links.stats().attempts;
        for step in self.budget.created(created) {
            self.emit(json!({
                "type": "connection_budget",
                "state": step.as_str(),
                "created": created,
                "limit": self.budget.limit(),
            }));
            if step == BudgetStep::Exhausted {
                let me = self.me.clone();
                spawn_local(async move {
                    if let Some(shared) = me.upgrade() {
                        stop(&shared);
                    }
                });
            }
        }
    }

    /// Sends the frames the core has queued (a leave's goodbyes) and nothing else.
    fn drain_frames_only(&mut self) {
        loop {
            match self.peer.node_mut().poll_output() {
                Output::Timeout(_) => return,
                Output::Send { to, bytes } => {
                    self.links.send(to.0, &bytes);
                }
                _ => {}
            }
        }
    }

    fn arm_timer(&mut self) {
        if self.stopped {
            return;
        }
        let at = self.peer.next_timeout();
        if let Some((handle, armed_at)) = self.timer {
            if armed_at == at {
                return;
            }
            if let Some(window) = web_sys::window() {
                window.clear_timeout_with_handle(handle);
            }
            self.timer = None;
        }
        if at == Time::MAX {
            return;
        }
        let delay = at.saturating_sub(self.now()).min(i32::MAX as u64) as i32;
        if let Some(window) = web_sys::window()
            && let Ok(handle) = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                self.timer_callback.as_ref().unchecked_ref(),
                delay,
            )
        {
            self.timer = Some((handle, at));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::SuccessorChanged { successor } => {
                self.emit(json!({"type": "successor", "successor": successor.to_string()}));
            }
            Event::Isolated => {
                // Every successor failed: join again through the members the introducer
                // named rather than serve as a ring of one.
                // The peer session's join plan started a round without patience; its timer
                // brings the attempts (`JoinDue`).
                self.emit(json!({"type": "isolated"}));
                if self.peer.plan().retry_at().is_some() {
                    self.rejoining = true;
                }
            }
            Event::PredecessorChanged { predecessor } => {
                self.emit(json!({
                    "type": "predecessor",
                    "predecessor": predecessor.map(|p| p.to_string()),
                }));
            }
            Event::PeerFailed { peer } => {
                self.emit(json!({"type": "peer_failed", "peer": peer.to_string()}));
            }
            Event::LeaderElected { set, leader } => {
                self.emit(json!({
                    "type": "leader",
                    "set": set.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "leader": leader.to_string(),
                }));
            }
            Event::Watch {
                key,
                value,
                ts,
                writer,
            } => {
                if let Some(shared) = self.me.upgrade() {
                    let event = node_core::watch::event_json(&key, value.as_deref(), ts, &writer);
                    shared.watch_events.borrow_mut().push_back((key, event));
                }
            }
            Event::Stored { key, entry } => {
                self.emit(json!({
                    "type": "stored",
                    "key": key,
                    "ts": entry.version.ts,
                    "writer_id": entry.version.writer,
                    "deleted": entry.value.is_none(),
                }));
            }
            _ => {}
        }
    }

    /// Writes the drain's writes to IndexedDB in one transaction; the outputs held for it
    /// are carried out when it completes (see [`crate::storage`], "Durability").
    fn persist(&mut self, batch: Batch) {
        let Some(storage) = &self.storage else {
            return;
        };
        let entries: Vec<(String, Option<node_core::store::Entry>)> = batch
            .stored
            .into_iter()
            .map(|(key, entry)| (key, Some(entry)))
            .chain(batch.collected.into_iter().map(|key| (key, None)))
            .collect();
        let transaction = batch.id;
        self.transactions_pending
            .insert(transaction, (performance_now(), entries.len()));
        let me = self.me.clone();
        let queued = storage.write(&entries, self.peer.node().lamport(), move |committed| {
            with_weak(&me, |d, shared| {
                d.transaction_done(shared, transaction, committed)
            });
        });
        if !queued {
            let me = self.me.clone();
            spawn_local(async move {
                with_weak(&me, |d, shared| {
                    d.transaction_done(shared, transaction, false)
                });
            });
        }
    }

    /// A transaction completed (or failed: counted, and its outputs are carried out all the
    /// same: the tab cannot stop being a peer; its store is then behind, as after a crash).
    fn transaction_done(&mut self, shared: &Handle, transaction: u64, committed: bool) {
        match self.transactions_pending.remove(&transaction) {
            Some((queued_at, entries)) if committed => {
                let took = performance_now() - queued_at;
                self.stats.storage.record_commit(took, entries, true);
            }
            Some(_) => self.stats.storage.errors += 1,
            None => {}
        }
        if self.stopped {
            return;
        }
        // What waited for it comes out of the drain `with_driver` runs next.
        let _ = shared;
        self.peer.committed(transaction);
    }

    fn finish_start(&mut self, result: Result<(), StartError>) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(result);
        }
    }

    // ----- links ----------------------------------------------------------------------------

    /// An SDP payload for `peer` from [`Links`]: the peer session sends it the way its
    /// signalling paths choose.
    pub fn send_signal(&mut self, peer: u32, payload: String) {
        let now = self.now();
        self.peer.send_signal(Id(peer), payload, now);
    }

    /// Sends an offer again for want of an answer (the peer session chooses the way).
    pub fn send_signal_retry(&mut self, peer: u32, payload: String) {
        let now = self.now();
        self.peer.send_signal_retry(Id(peer), payload, now);
    }

    /// A signalling payload from `peer` that came by `path` (answers go back the same way).
    fn incoming_signal(&mut self, peer: u32, payload: &str, path: SignalPath) {
        let Some(shared) = self.me.upgrade() else {
            return;
        };
        // First: a reply goes back the way this payload came.
        self.peer.heard(Id(peer), path);
        let outcome = self.links.on_signal(&shared, peer, payload);
        self.check_budget();
        if outcome.replaced_open {
            self.link_closed(peer, true, "replaced by a new offer (the peer restarted)");
            // Closing forgot the peer's path; the answer to its new offer goes back its way.
            self.peer.heard(Id(peer), path);
        }
        if let Some(reply) = outcome.reply {
            self.send_signal(peer, reply);
        }
    }

    pub fn link_opened(&mut self, peer: u32) {
        let now = self.now();
        let via = if self.peer.link_opened(Id(peer), now) {
            "ring"
        } else {
            "introducer"
        };
        self.emit(json!({"type": "link_up", "peer": format!("{peer:08x}"), "via": via}));
    }

    pub fn link_frame(&mut self, peer: u32, bytes: &[u8]) {
        self.links.received(bytes.len());
        let now = self.now();
        self.peer.frame(Id(peer), bytes, now);
    }

    /// A link closed or failed to open (whichever side started it).
    pub fn link_closed(&mut self, peer: u32, was_open: bool, reason: &str) {
        self.emit(json!({
            "type": "link_down", "peer": format!("{peer:08x}"), "reason": reason,
            "was_open": was_open,
        }));
        let now = self.now();
        self.peer.link_dropped(Id(peer), now);
    }

    // ----- introducer -----------------------------------------------------------------------

    pub fn on_introducer(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Welcome { peers } => {
                self.stats.introducer_connected = true;
                self.emit(json!({"type": "introducer", "state": "connected"}));
                if !std::mem::take(&mut self.waiting_welcome) {
                    return;
                }
                let now = self.now();
                let me = self.peer.id();
                self.peer
                    .plan_mut()
                    .set_candidates(peers.iter().map(|p| Id(p.as_u32())), me, 0);
                match self.peer.plan_mut().attempt(now) {
                    Some(first) => self.join_through(first.0),
                    None => {
                        self.peer.node_mut().create_ring(now);
                        self.emit(json!({"type": "joined", "successor": me.to_string()}));
                        self.finish_start(Ok(()));
                    }
                }
            }
            ServerMessage::Signal { from, payload } => {
                self.incoming_signal(from.as_u32(), &payload, SignalPath::Remote);
            }
            ServerMessage::Error { code, reason } => {
                self.stats.introducer_errors += 1;
                self.emit(json!({
                    "type": "introducer", "state": "error", "code": code.as_str(), "reason": reason,
                }));
                if self.waiting_welcome {
                    self.finish_start(Err(("introducer_error", format!("{code}: {reason}"))));
                }
            }
            _ => {}
        }
    }

    /// Joins the ring through `bootstrap` (the first time, or after a failed attempt).
    fn join_through(&mut self, bootstrap: u32) {
        let node = self.peer.node();
        let rejoin = self.rejoining && (!node.is_joined() || node.is_isolated());
        if self.stopped || !rejoin && (node.is_joined() || self.started.is_none()) {
            return;
        }
        let now = self.now();
        self.peer
            .join_through(Id(bootstrap), SignalPath::Remote, now);
    }

    /// The introducer session ended (or never opened).
    pub fn on_introducer_closed(&mut self, reason: &str) {
        self.introducer = None;
        self.peer.set_remote(false);
        self.stats.introducer_connected = false;
        self.emit(json!({"type": "introducer", "state": "closed", "reason": reason}));
        if self.waiting_welcome {
            self.finish_start(Err((
                "introducer_unreachable",
                format!(
                    "cannot reach the introducer at {} ({reason}); is it running \
                     (`cargo xtask demo`) and is the URL right?",
                    self.introducer_url
                ),
            )));
        }
    }

    /// The metrics document (node-core's `peer::stats`, the native `/metrics` shape).
    pub fn metrics_json(&self) -> Value {
        let mut driver = self.stats.clone();
        driver.signaling = self.peer.signal_stats();
        driver.rtc = self.links.stats();
        driver.storage.frames_held = self.peer.items_held();
        match &self.storage {
            Some(storage) => {
                driver.storage.durability = "indexeddb".into();
                driver.storage.path = storage.name().to_string();
            }
            None => driver.storage.durability = "in-memory".into(),
        }
        let node = self.peer.node();
        node_core::peer::stats::document(&node.metrics(), node.store().len(), &driver)
    }
}
