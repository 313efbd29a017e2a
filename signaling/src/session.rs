//! One WebSocket session: the upgrade handler and the loop that reads client frames, answers
//! them, and writes signals relayed to this session's peer.
//!
//! Checks run in this order on every data frame: rate (token bucket), size, JSON shape, then the
//! message's own rules. A rejected frame gets one `error` frame and changes nothing else.
//!
//! Beside frames, a session ends on time: without a `hello` within `hello_timeout` of the
//! upgrade (`hello_timeout`), after `idle_timeout` without any frame from the client, pongs to
//! the server's pings (sent every `ping_interval`) included (`idle_timeout`), and when a newer
//! session takes its slot before it said hello (`too_many_sessions`, see
//! `SignalingState::open_session` in state.rs). A write the client does not take within
//! [`SEND_TIMEOUT`] ends the session too, so a client that stops reading cannot pin it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::Extensions;
use axum::response::Response;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info};

use crate::protocol::{ClientMessage, ErrorCode, PeerId, ServerMessage, parse_client_message};
use crate::rate::TokenBucket;
use crate::state::{Full, Registration, SessionSlot, Signal, SignalingError, SignalingState};

/// Frames up to this many times `max_frame_bytes` are read and answered with `oversize`; the
/// WebSocket layer refuses longer ones outright (that ends the session), which bounds memory.
const TRANSPORT_LIMIT_FACTOR: usize = 4;

/// Longest one write to a client may wait for room in its socket before the session ends.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /ws` (its `Host` and `Origin` were checked by the router, lib.rs).
pub(crate) async fn upgrade(
    State(state): State<SignalingState>,
    extensions: Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let transport_limit = state
        .config()
        .max_frame_bytes
        .saturating_mul(TRANSPORT_LIMIT_FACTOR);
    let source = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    // Claimed before the upgrade so that concurrent handshakes cannot overshoot the limit.
    let slot = state.open_session(source);
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| async move {
            match slot {
                Ok(slot) => {
                    let span = tracing::info_span!("session", n = slot.number());
                    Session::new(state, slot).run(socket).instrument(span).await;
                }
                Err(full) => reject_full(&state, socket, full).await,
            }
        })
}

/// Tells a client over `max_sessions` or `max_sessions_per_addr` why, then closes.
async fn reject_full(state: &SignalingState, mut socket: WebSocket, full: Full) {
    let config = state.config();
    let (code, reason) = match full {
        Full::Sessions => (
            ErrorCode::TooManySessions,
            format!(
                "the introducer already has {} sessions; try another or later",
                config.max_sessions
            ),
        ),
        Full::Address => (
            ErrorCode::TooManyFromAddress,
            format!(
                "your address already has {} sessions open here; close one or try later",
                config.max_sessions_per_addr
            ),
        ),
    };
    debug!(%code, "session refused: {reason}");
    state.count_error(code);
    let error = ServerMessage::error(code, reason);
    if send(&mut socket, Message::Text(error.to_json().into())).await {
        let _ = send(&mut socket, close(close_code::AGAIN, "too many sessions")).await;
    }
}

/// Writes one frame, waiting at most [`SEND_TIMEOUT`]; false if the session should end.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

struct Session {
    state: SignalingState,
    slot: SessionSlot,
    bucket: TokenBucket,
    /// Set by a successful `hello`; dropping it unregisters the peer.
    registration: Option<Registration>,
    /// A `hello` found this session already evicted for a newer one: it closes.
    evicted_before_hello: bool,
}

impl Session {
    fn new(state: SignalingState, slot: SessionSlot) -> Self {
        let config = state.config();
        let bucket = TokenBucket::new(config.max_msgs_per_sec, config.rate_burst, Instant::now());
        Self {
            state,
            slot,
            bucket,
            registration: None,
            evicted_before_hello: false,
        }
    }

    /// Sends a counted `error` frame with `code`, then a close frame (policy violation).
    async fn close_with(&self, socket: &mut WebSocket, code: ErrorCode, reason: impl Into<String>) {
        let error = self.error(code, reason);
        if send(socket, Message::Text(error.to_json().into())).await {
            let _ = send(socket, close(close_code::POLICY, code.as_str())).await;
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let mut mailbox: Option<mpsc::Receiver<Signal>> = None;
        let mut shutdown = self.state.watch_shutdown();
        if self.state.is_shut_down() {
            let _ = send(&mut socket, going_away()).await;
            return;
        }
        let config = self.state.config();
        let (hello_timeout, idle_timeout) = (config.hello_timeout, config.idle_timeout);
        let ping_interval = config.ping_interval;
        let opened = tokio::time::Instant::now();
        let hello_deadline = tokio::time::sleep_until(opened + hello_timeout);
        let idle = tokio::time::sleep_until(opened + idle_timeout);
        let mut pings = tokio::time::interval_at(opened + ping_interval, ping_interval);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(hello_deadline, idle);
        loop {
            tokio::select! {
                inbound = socket.recv() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    let frame = match inbound {
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => {
                            debug!(%err, "session read failed");
                            if is_over_transport_limit(&err) {
                                self.refuse_huge_frame(&mut socket).await;
                            }
                            break;
                        }
                        None => break,
                    };
                    let reply = match frame {
                        Message::Text(text) => self.on_text(text.as_str(), &mut mailbox),
                        Message::Binary(bytes) => self.on_binary(bytes.len()),
                        // tungstenite answers pings itself; a pong only shows the client lives.
                        Message::Ping(_) | Message::Pong(_) => None,
                        Message::Close(_) => break,
                    };
                    if self.evicted_before_hello {
                        self.close_with(&mut socket, ErrorCode::TooManySessions, evicted_reason()).await;
                        break;
                    }
                    if let Some(reply) = reply
                        && !send(&mut socket, Message::Text(reply.to_json().into())).await
                    {
                        break;
                    }
                }
                Some(signal) = next_signal(&mut mailbox) => {
                    let frame = ServerMessage::Signal { from: signal.from, payload: signal.payload };
                    if !send(&mut socket, Message::Text(frame.to_json().into())).await {
                        break;
                    }
                }
                () = self.slot.evicted(), if self.registration.is_none() => {
                    self.close_with(&mut socket, ErrorCode::TooManySessions, evicted_reason()).await;
                    break;
                }
                () = &mut hello_deadline, if self.registration.is_none() => {
                    let reason = format!("no hello within {hello_timeout:?} of connecting; closing");
                    self.close_with(&mut socket, ErrorCode::HelloTimeout, reason).await;
                    break;
                }
                () = &mut idle => {
                    let reason = format!("nothing received for {idle_timeout:?}; closing");
                    self.close_with(&mut socket, ErrorCode::IdleTimeout, reason).await;
                    break;
                }
                _ = pings.tick() => {
                    if !send(&mut socket, Message::Ping(Default::default())).await {
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = send(&mut socket, going_away()).await;
                    break;
                }
            }
        }
        if let Some(registration) = &self.registration {
            info!(peer = %registration.peer(), "peer left");
        }
    }

    /// A frame over the transport limit cannot be skipped (the rest of it is still on the wire),
    /// so the session ends; the client is told why first.
    async fn refuse_huge_frame(&self, socket: &mut WebSocket) {
        let max = self.state.config().max_frame_bytes;
        let error = self.error(
            ErrorCode::Oversize,
            format!("frame far over the limit of {max} bytes; closing"),
        );
        if send(socket, Message::Text(error.to_json().into())).await {
            let _ = send(socket, close(close_code::SIZE, "frame too long")).await;
        }
    }

    fn on_text(
        &mut self,
        text: &str,
        mailbox: &mut Option<mpsc::Receiver<Signal>>,
    ) -> Option<ServerMessage> {
        if let Err(error) = self.admit(text.len()) {
            return Some(error);
        }
        let message = match parse_client_message(text) {
            Ok(message) => message,
            Err(err) => return Some(self.error(err.code, err.reason)),
        };
        match message {
            ClientMessage::Hello { peer, verified } => Some(self.on_hello(peer, verified, mailbox)),
            ClientMessage::Signal { to, payload } => self.on_signal(to, payload),
        }
    }

    fn on_binary(&mut self, len: usize) -> Option<ServerMessage> {
        if let Err(error) = self.admit(len) {
            return Some(error);
        }
        Some(self.error(
            ErrorCode::BadJson,
            "binary frames are not accepted; send JSON text frames",
        ))
    }

    /// Rate and size checks shared by every data frame.
    fn admit(&mut self, len: usize) -> Result<(), ServerMessage> {
        if !self.bucket.try_take(Instant::now()) {
            let per_sec = self.state.config().max_msgs_per_sec;
            return Err(self.error(
                ErrorCode::RateLimited,
                format!("more than {per_sec} frames per second; frame dropped"),
            ));
        }
        let max = self.state.config().max_frame_bytes;
        if len > max {
            return Err(self.error(
                ErrorCode::Oversize,
                format!("frame of {len} bytes exceeds the limit of {max}; frame dropped"),
            ));
        }
        Ok(())
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        verified: bool,
        mailbox: &mut Option<mpsc::Receiver<Signal>>,
    ) -> ServerMessage {
        if let Some(registration) = &self.registration {
            let reason = format!("this session already said hello as {}", registration.peer());
            return self.error(ErrorCode::DuplicatePeer, reason);
        }
        if !self.slot.said_hello() {
            // Evicted for a newer session a moment ago; the loop closes it (the error is sent
            // there, counted once).
            self.evicted_before_hello = true;
            return ServerMessage::error(ErrorCode::TooManySessions, evicted_reason());
        }
        match self.state.register(peer, verified) {
            Ok((registration, receiver)) => {
                info!(%peer, "peer joined");
                self.registration = Some(registration);
                *mailbox = Some(receiver);
                ServerMessage::Welcome {
                    peers: self.state.welcome_peers(peer),
                }
            }
            Err(err) => self.relay_error(err),
        }
    }

    fn on_signal(&mut self, to: PeerId, payload: String) -> Option<ServerMessage> {
        let Some(from) = self.registration.as_ref().map(Registration::peer) else {
            return Some(self.error(ErrorCode::NotHello, "send hello before signal"));
        };
        match self.state.relay(from, to, payload) {
            Ok(()) => {
                debug!(%from, %to, "signal relayed");
                None
            }
            Err(err) => Some(self.relay_error(err)),
        }
    }

    fn relay_error(&self, err: SignalingError) -> ServerMessage {
        // `ShutDown` never reaches a client: the session closes on the same flag.
        let code = err.code().unwrap_or(ErrorCode::UnknownTarget);
        self.error(code, err.to_string())
    }

    /// An `error` frame, counted and logged.
    fn error(&self, code: ErrorCode, reason: impl Into<String>) -> ServerMessage {
        let reason = reason.into();
        debug!(%code, %reason, "frame rejected");
        self.state.count_error(code);
        ServerMessage::error(code, reason)
    }
}

fn is_over_transport_limit(err: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    // If axum ever moves to another tungstenite, the downcast fails and the session just
    // closes without the `oversize` frame; a test checks for the frame.
    std::error::Error::source(err)
        .and_then(|inner| inner.downcast_ref::<WsError>())
        .is_some_and(|inner| matches!(inner, WsError::Capacity(_)))
}

/// The next relayed signal, or never if this session has no mailbox yet.
async fn next_signal(mailbox: &mut Option<mpsc::Receiver<Signal>>) -> Option<Signal> {
    match mailbox {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

fn evicted_reason() -> String {
    "the introducer is full; this session, which had not said hello, was closed for a newer \
     one: send hello right after connecting"
        .into()
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn going_away() -> Message {
    close(close_code::AWAY, "introducer shutting down")
}
