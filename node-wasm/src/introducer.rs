//! The introducer session: how a peer finds its first ring member.
//!
//! Two transports speak the same protocol (docs/design.md section 7, frames from the
//! `signaling` crate): a WebSocket to the `signaling` server or any native peer's `/ws`, or an
//! in-page registry (`page:<room>`) through which several peers in one page find each other,
//! for tests and single-page demos. Either way the session ends quietly when the peer no longer
//! needs it; an introducer that goes away after the join costs nothing, since later links are
//! negotiated through the ring.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};

use signaling::{ClientMessage, ErrorCode, PeerId as SigPeer, ServerMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::driver::{Handle, Shared, with_weak};

/// Peers a `welcome` names at most (the signaling server's default too).
const WELCOME_PEERS: usize = 8;

thread_local! {
    /// In-page rooms: room -> peer id -> the peer.
    static ROOMS: RefCell<HashMap<String, BTreeMap<u32, Weak<Shared>>>> =
        RefCell::new(HashMap::new());
}

type Callback = Closure<dyn FnMut(JsValue)>;

pub enum Introducer {
    WebSocket {
        socket: WebSocket,
        callbacks: Vec<Callback>,
    },
    InPage {
        room: String,
        me: u32,
        peer: Weak<Shared>,
    },
}

impl std::fmt::Debug for Introducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WebSocket { socket, .. } => write!(f, "Introducer({})", socket.url()),
            Self::InPage { room, .. } => write!(f, "Introducer(page:{room})"),
        }
    }
}

impl Introducer {
    /// Opens a session and says `hello`; the driver hears back through `on_introducer*`.
    /// `verified`: this tab proves its id on its links (`verifyIds`), so its hello may share
    /// the id with a squatter (signaling's protocol docs).
    pub fn open(shared: &Handle, url: &str, verified: bool) -> Self {
        let me = shared.id().0;
        if let Some(room) = url.strip_prefix("page:") {
            return open_in_page(shared, room.to_string(), me);
        }
        let weak = Rc::downgrade(shared);
        let socket = match WebSocket::new(url) {
            Ok(socket) => socket,
            Err(e) => {
                let reason = format!("{e:?}");
                spawn_local(async move {
                    with_weak(&weak, |d, _| d.on_introducer_closed(&reason));
                });
                return Self::InPage {
                    room: String::new(),
                    me,
                    peer: Weak::new(),
                };
            }
        };
        socket.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let socket = socket.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let hello = ClientMessage::Hello {
                    peer: SigPeer::new(me),
                    verified,
                };
                let _ = socket.send_with_str(&hello.to_json());
            })
        };
        let on_message = {
            let weak = weak.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let event: MessageEvent = event.unchecked_into();
                let Some(text) = event.data().as_string() else {
                    return;
                };
                match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => with_weak(&weak, |d, _| d.on_introducer(message)),
                    Err(e) => with_weak(&weak, |d, _| {
                        d.on_introducer(ServerMessage::error(
                            ErrorCode::BadJson,
                            format!("bad frame from the introducer: {e}"),
                        ));
                    }),
                }
            })
        };
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let reason = event
                .dyn_ref::<web_sys::CloseEvent>()
                .map(|c| format!("closed, code {}", c.code()))
                .unwrap_or_else(|| "connection failed".to_string());
            with_weak(&weak, |d, _| d.on_introducer_closed(&reason));
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // An unreachable server fires `error` then `close`; `close` alone carries the outcome.
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Self::WebSocket {
            socket,
            callbacks: vec![on_open, on_message, on_close],
        }
    }

    pub fn send(&self, message: &ClientMessage) {
        match self {
            Self::WebSocket { socket, .. } => {
                let _ = socket.send_with_str(&message.to_json());
            }
            Self::InPage { room, me, peer } => in_page_send(room, *me, peer, message),
        }
    }

    /// Ends the session without reporting it.
    pub fn close(self) {
        match self {
            Self::WebSocket { socket, callbacks } => {
                socket.set_onopen(None);
                socket.set_onmessage(None);
                socket.set_onclose(None);
                let _ = socket.close();
                spawn_local(async move { drop(callbacks) });
            }
            Self::InPage { room, me, .. } => ROOMS.with(|rooms| {
                if let Some(members) = rooms.borrow_mut().get_mut(&room) {
                    members.remove(&me);
                }
            }),
        }
    }
}

fn open_in_page(shared: &Handle, room: String, me: u32) -> Introducer {
    let peer = Rc::downgrade(shared);
    let introducer = Introducer::InPage {
        room: room.clone(),
        me,
        peer: peer.clone(),
    };
    introducer.send(&ClientMessage::Hello {
        peer: SigPeer::new(me),
        verified: false,
    });
    introducer
}

/// The in-page registry's side of the protocol; replies are delivered in a later task, as a
/// server's would be.
fn in_page_send(room: &str, me: u32, sender: &Weak<Shared>, message: &ClientMessage) {
    let reply = ROOMS.with(|rooms| {
        let mut rooms = rooms.borrow_mut();
        let members = rooms.entry(room.to_string()).or_default();
        members.retain(|_, peer| peer.strong_count() > 0);
        match message {
            ClientMessage::Hello { .. } => {
                if members.contains_key(&me) {
                    return Some(ServerMessage::error(
                        ErrorCode::DuplicatePeer,
                        format!("{me:08x} is already in room {room}"),
                    ));
                }
                let peers = members
                    .keys()
                    .take(WELCOME_PEERS)
                    .map(|p| SigPeer::new(*p))
                    .collect();
                members.insert(me, sender.clone());
                Some(ServerMessage::Welcome { peers })
            }
            ClientMessage::Signal { to, payload } => match members.get(&to.as_u32()) {
                Some(target) => {
                    let target = target.clone();
                    let signal = ServerMessage::Signal {
                        from: SigPeer::new(me),
                        payload: payload.clone(),
                    };
                    spawn_local(async move {
                        with_weak(&target, |d, _| d.on_introducer(signal));
                    });
                    None
                }
                None => Some(ServerMessage::error(
                    ErrorCode::UnknownTarget,
                    format!("no peer {to} in room {room}"),
                )),
            },
            _ => None,
        }
    });
    if let Some(reply) = reply {
        let sender = sender.clone();
        spawn_local(async move {
            with_weak(&sender, |d, _| d.on_introducer(reply));
        });
    }
}
