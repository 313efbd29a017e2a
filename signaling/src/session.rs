//! One WebSocket session: the upgrade handler and the loop that reads client frames, answers
//! them, and writes signals relayed to this session's peer.
//!
//! Checks run in this order on every data frame: rate (token bucket), size, JSON shape, then the
//! message's own rules. A rejected frame gets one `error` frame and changes nothing else.

use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info};

use crate::protocol::{ClientMessage, ErrorCode, PeerId, ServerMessage, parse_client_message};
use crate::rate::TokenBucket;
use crate::state::{Registration, SessionSlot, Signal, SignalingError, SignalingState};

/// Frames up to this many times `max_frame_bytes` are read and answered with `oversize`; the
/// WebSocket layer refuses longer ones outright (that ends the session), which bounds memory.
const TRANSPORT_LIMIT_FACTOR: usize = 4;

/// `GET /ws`.
pub(crate) async fn upgrade(State(state): State<SignalingState>, ws: WebSocketUpgrade) -> Response {
    let transport_limit = state
        .config()
        .max_frame_bytes
        .saturating_mul(TRANSPORT_LIMIT_FACTOR);
    // Claimed before the upgrade so that concurrent handshakes cannot overshoot the limit.
    let slot = state.open_session();
    ws.max_message_size(transport_limit)
        .max_frame_size(transport_limit)
        .on_upgrade(move |socket| async move {
            match slot {
                Some(slot) => {
                    let span = tracing::info_span!("session", n = slot.number());
                    Session::new(state, slot).run(socket).instrument(span).await;
                }
                None => reject_full(&state, socket).await,
            }
        })
}

/// Tells a client over `max_sessions` why, then closes.
async fn reject_full(state: &SignalingState, mut socket: WebSocket) {
    let max = state.config().max_sessions;
    debug!(max, "session refused: too many sessions");
    state.count_error(ErrorCode::TooManySessions);
    let error = ServerMessage::error(
        ErrorCode::TooManySessions,
        format!("the introducer already has {max} sessions; try another or later"),
    );
    if socket
        .send(Message::Text(error.to_json().into()))
        .await
        .is_ok()
    {
        let _ = socket
            .send(close(close_code::AGAIN, "too many sessions"))
            .await;
    }
}

struct Session {
    state: SignalingState,
    _slot: SessionSlot,
    bucket: TokenBucket,
    /// Set by a successful `hello`; dropping it unregisters the peer.
    registration: Option<Registration>,
}

impl Session {
    fn new(state: SignalingState, slot: SessionSlot) -> Self {
        let config = state.config();
        let bucket = TokenBucket::new(config.max_msgs_per_sec, config.rate_burst, Instant::now());
        Self {
            state,
            _slot: slot,
            bucket,
            registration: None,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let mut mailbox: Option<mpsc::Receiver<Signal>> = None;
        let mut shutdown = self.state.watch_shutdown();
        if self.state.is_shut_down() {
            let _ = socket.send(going_away()).await;
            return;
        }
        loop {
            tokio::select! {
                inbound = socket.recv() => {
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
                        // tungstenite answers pings itself.
                        Message::Ping(_) | Message::Pong(_) => None,
                        Message::Close(_) => break,
                    };
                    if let Some(reply) = reply
                        && socket.send(Message::Text(reply.to_json().into())).await.is_err()
                    {
                        break;
                    }
                }
                Some(signal) = next_signal(&mut mailbox) => {
                    let frame = ServerMessage::Signal { from: signal.from, payload: signal.payload };
                    if socket.send(Message::Text(frame.to_json().into())).await.is_err() {
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = socket.send(going_away()).await;
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
        if socket
            .send(Message::Text(error.to_json().into()))
            .await
            .is_ok()
        {
            let _ = socket.send(close(close_code::SIZE, "frame too long")).await;
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
            ClientMessage::Hello { peer } => Some(self.on_hello(peer, mailbox)),
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
        mailbox: &mut Option<mpsc::Receiver<Signal>>,
    ) -> ServerMessage {
        if let Some(registration) = &self.registration {
            let reason = format!("this session already said hello as {}", registration.peer());
            return self.error(ErrorCode::DuplicatePeer, reason);
        }
        match self.state.register(peer) {
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

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn going_away() -> Message {
    close(close_code::AWAY, "introducer shutting down")
}
