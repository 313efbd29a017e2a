//! WebRTC links in the browser: one RTCPeerConnection with one data channel per remote peer.
//!
//! The rules are the native peer's (node-native/src/rtc.rs), so a tab and a native process
//! link either way:
//! - one ordered, reliable data channel labelled `chord`, created by the offerer; binary frames;
//! - **non-trickle ICE**: a description is signalled once ICE gathering is complete, as JSON
//!   `{"type":"offer"|"answer","sdp":"..."}`; no candidate messages;
//! - **glare, re-offers, duplicates**: decided by node-core's signalling rules
//!   (`node_core::peer::signal`), the functions the native peer and the simulator apply too: the
//!   lower id wins glare; an offer for a peer we hold a link with replaces it (reported down if
//!   it was open), except on the lower-id side holding an open link it offered (ignored); the
//!   very offer the current answerer link answers is answered again while that link is not
//!   open, ignored once it is; an offer with no answer goes again every `OFFER_RETRY_MS`;
//! - a link not open within [`CONNECT_TIMEOUT_MS`] is closed and reported down.
//! - **ids proven by certificates** (issue 11, item 4; `verifyIds`, identity.rs): every
//!   connection presents the tab's one certificate (`certificates` in its `RTCConfiguration`),
//!   and node-core's link table (`LinkTable::verify_ids`) refuses, before anything is built,
//!   an offer or answer whose SHA-256 fingerprint does not prove its sender's id
//!   (`identity_refused`).
//! - **bounds** (issue 11, item 3): an offer is answered only within node-core's
//!   pending-answer bounds (`peer::table::PendingBounds`, 2 per peer and 64 in all; a tab
//!   closes a replaced connection at once, so only the current ones count), and a frame is
//!   not handed to a channel whose `bufferedAmount` is at or above
//!   `peer::table::BUFFERED_HIGH_WATER` (1 MiB): it is dropped, counted in `frames_dropped`, and
//!   the driver reports it to the core (`Input::SendFailed`). No `bufferedAmountLowThreshold`
//!   is set: nothing waits for the buffer to drain, the core's retries and anti-entropy resend
//!   what matters.
//!
//! Every callback carries the link's generation, and acts only if that link is still the
//! current one for its peer, so events of a replaced link never reach the core.

use std::rc::Weak;

use js_sys::Uint8Array;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{
    RtcDataChannel, RtcDataChannelEvent, RtcDataChannelState, RtcDataChannelType,
    RtcIceGatheringState, RtcPeerConnection, RtcPeerConnectionState, RtcSdpType,
    RtcSessionDescriptionInit,
};

use node_core::peer::signal::{self, Description, Role};
use node_core::peer::table::{LinkTable, OnOffer, below_high_water};

use crate::driver::{Driver, Handle, Shared, with_weak};

/// The label of the one data channel per link (the native peer's `CHANNEL_LABEL`).
pub const CHANNEL_LABEL: &str = "chord";

/// A link that has not opened this long after it started is closed and reported down.
pub const CONNECT_TIMEOUT_MS: i32 = 15_000;

type Callback = Closure<dyn FnMut(JsValue)>;

/// How long a closed link's connection lives on after its data channel closed, so that the
/// frames sent just before reach the peer (`Stack::teardown`).
const CLOSE_FLUSH_MS: i32 = 100;

/// The browser's side of one link; node-core's link table (`peer::table`) holds it with the
/// link's generation and negotiation state.
struct Stack {
    pc: RtcPeerConnection,
    dc: Option<RtcDataChannel>,
    signalled: bool,
    callbacks: Vec<Callback>,
    timeout: Option<i32>,
}

impl Stack {
    /// Detaches every handler and closes the connection. The closures are dropped in a later
    /// task: this may run inside one of them.
    fn teardown(self) {
        self.pc.set_onicecandidate(None);
        self.pc.set_onicegatheringstatechange(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_ondatachannel(None);
        let mut flushing = false;
        if let Some(dc) = &self.dc {
            dc.set_onopen(None);
            dc.set_onmessage(None);
            dc.set_onclose(None);
            // Closing the channel still sends what is buffered; closing the connection does
            // not. A frame sent just before (node-core's `Leaving` goodbye, queued right before
            // it asks to close every link) needs a moment on the wire.
            flushing = dc.ready_state() == RtcDataChannelState::Open;
            dc.close();
        }
        match web_sys::window().filter(|_| flushing) {
            Some(window) => {
                let pc = self.pc.clone();
                // Freed when called: by the timer, or here if the timer cannot be set.
                let close: js_sys::Function =
                    Closure::once_into_js(move || pc.close()).unchecked_into();
                if window
                    .set_timeout_with_callback_and_timeout_and_arguments_0(&close, CLOSE_FLUSH_MS)
                    .is_err()
                {
                    let _ = close.call0(&JsValue::NULL);
                }
            }
            None => self.pc.close(),
        }
        if let (Some(handle), Some(window)) = (self.timeout, web_sys::window()) {
            window.clear_timeout_with_handle(handle);
        }
        let callbacks = self.callbacks;
        spawn_local(async move { drop(callbacks) });
    }
}

/// Counters of the link layer: node-core's shape, the same the native peer reports.
pub use node_core::peer::stats::LinkStats;

/// What a signalling payload led to, for the driver to carry out.
#[derive(Debug, Default)]
pub struct SignalOutcome {
    /// An open link to the peer was replaced (the driver reports it down).
    pub replaced_open: bool,
    /// Send this payload (our answer, again) back to the peer.
    pub reply: Option<String>,
}

/// Every link of one peer.
pub struct Links {
    ice_servers: Vec<String>,
    /// The `RTCCertificate` every connection presents when this tab proves its id
    /// (`verifyIds`, identity.rs); `None`: the browser makes one per connection.
    certificate: Option<JsValue>,
    table: LinkTable<Stack>,
    /// Frames and bytes (the table counts the rest).
    frames: LinkStats,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("me", &self.table.me())
            .field("open", &self.table.open_peers())
            .finish()
    }
}

impl Links {
    /// The links of peer `me`; with a `certificate` (`verifyIds`) every connection presents it
    /// and the table refuses offers and answers that do not prove their sender's id.
    pub fn new(me: u32, ice_servers: Vec<String>, certificate: Option<JsValue>) -> Self {
        let table = LinkTable::new(me);
        Self {
            ice_servers,
            table: if certificate.is_some() {
                table.verify_ids()
            } else {
                table
            },
            certificate,
            frames: LinkStats::default(),
        }
    }

    pub fn any_open(&self) -> bool {
        self.table.open_count() > 0
    }

    pub fn open_count(&self) -> usize {
        self.table.open_count()
    }

    /// Sends one frame; false (the frame is dropped) when no open channel leads to `peer`, or
    /// its `bufferedAmount` is at the high-water mark (module docs), or the browser refuses it.
    pub fn send(&mut self, peer: u32, bytes: &[u8]) -> bool {
        let sent = match self.table.get(peer) {
            Some(link) if link.open => link.handle.dc.as_ref().is_some_and(|dc| {
                below_high_water(u64::from(dc.buffered_amount()))
                    && dc.send_with_u8_array(bytes).is_ok()
            }),
            _ => false,
        };
        if sent {
            self.frames.frames_out += 1;
            self.frames.bytes_out += bytes.len() as u64;
        } else {
            self.frames.frames_dropped += 1;
        }
        sent
    }

    /// Counts a frame received on a current link.
    pub fn received(&mut self, bytes: usize) {
        self.frames.frames_in += 1;
        self.frames.bytes_in += bytes as u64;
    }

    /// The counters, with the links open now.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            frames_in: self.frames.frames_in,
            frames_out: self.frames.frames_out,
            bytes_in: self.frames.bytes_in,
            bytes_out: self.frames.bytes_out,
            frames_dropped: self.frames.frames_dropped,
            ..self.table.stats()
        }
    }

    /// Closes the link to `peer` without reporting it (the core asked for it).
    pub fn close(&mut self, peer: u32) {
        if let Some(link) = self.table.close(peer) {
            link.handle.teardown();
        }
    }

    pub fn close_all(&mut self) {
        for (_, link) in self.table.drain() {
            link.handle.teardown();
        }
    }

    fn is_current(&self, peer: u32, generation: u64) -> bool {
        self.table.is_current(peer, generation)
    }

    /// Marks the link open; true if it is the current link and was not open yet.
    fn mark_open(&mut self, peer: u32, generation: u64) -> bool {
        let Some(link) = self.table.mark_open(peer, generation) else {
            return false;
        };
        if let (Some(handle), Some(window)) = (link.handle.timeout.take(), web_sys::window()) {
            window.clear_timeout_with_handle(handle);
        }
        true
    }

    /// Removes a failed current link; `Some(was_open)` when it was the current one.
    fn fail(&mut self, peer: u32, generation: u64) -> Option<bool> {
        let link = self.table.fail(peer, generation)?;
        let was_open = link.open;
        link.handle.teardown();
        Some(was_open)
    }

    /// Starts a link to `peer` as the offerer (nothing if one exists or is being made).
    pub fn connect(&mut self, shared: &Handle, peer: u32) {
        let (servers, certificate) = (&self.ice_servers, self.certificate.as_ref());
        let Some(generation) = self.table.start(peer, Role::Offerer, None, |generation| {
            new_stack(servers, certificate, shared, peer, generation)
        }) else {
            return;
        };
        let Some(link) = self.table.current_mut(peer, generation) else {
            return;
        };
        // The W3C defaults: ordered and reliable.
        let dc = link.handle.pc.create_data_channel(CHANNEL_LABEL);
        attach_channel(
            &mut link.handle,
            generation,
            &dc,
            Rc::downgrade(shared),
            peer,
        );
        let pc = link.handle.pc.clone();
        let me = Rc::downgrade(shared);
        spawn_local(async move {
            let result = async {
                let offer = JsFuture::from(pc.create_offer()).await?;
                let offer: RtcSessionDescriptionInit = offer.unchecked_into();
                JsFuture::from(pc.set_local_description(&offer)).await?;
                Ok::<_, JsValue>(())
            }
            .await;
            after_local_description(&me, peer, generation, result, "creating the offer");
        });
    }

    /// Handles a signalling payload from `peer` (an offer is answered, an answer applied).
    pub fn on_signal(&mut self, shared: &Handle, peer: u32, payload: &str) -> SignalOutcome {
        let Some(description) = Description::parse(payload) else {
            self.table.count_bad_signal();
            return SignalOutcome::default();
        };
        match description {
            Description::Answer(sdp) => {
                // (An answer nobody waits for is counted by the table.)
                if let Some(link) = self.table.accept_answer(peer, &sdp) {
                    let pc = link.handle.pc.clone();
                    let generation = link.generation;
                    let me = Rc::downgrade(shared);
                    spawn_local(async move {
                        let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
                        init.set_sdp(&sdp);
                        if let Err(e) = JsFuture::from(pc.set_remote_description(&init)).await {
                            fail_link(&me, peer, generation, &describe("applying the answer", &e));
                        }
                    });
                }
                SignalOutcome::default()
            }
            Description::Offer(sdp) => {
                let replaced_open = match self.table.on_offer(peer, &sdp) {
                    // Refused: beyond the pending-answer bounds, or not proving its sender's id
                    // (counted by the table).
                    OnOffer::Ignore(_) | OnOffer::Refused | OnOffer::WrongIdentity(_) => {
                        return SignalOutcome::default();
                    }
                    // Our answer again, or (glare won by us while our offer waits) our offer
                    // again; not yet gathered (`None`): it goes out when it is.
                    OnOffer::Reoffer(reply) | OnOffer::Reanswer(reply) => {
                        return SignalOutcome {
                            replaced_open: false,
                            reply,
                        };
                    }
                    OnOffer::Answer { replaced } => replaced.is_some_and(|old| {
                        let was_open = old.open;
                        old.handle.teardown();
                        was_open
                    }),
                };
                self.answer(shared, peer, sdp);
                SignalOutcome {
                    replaced_open,
                    reply: None,
                }
            }
        }
    }

    fn answer(&mut self, shared: &Handle, peer: u32, sdp: String) {
        let (servers, certificate) = (&self.ice_servers, self.certificate.as_ref());
        let Some(generation) =
            self.table
                .start(peer, Role::Answerer, Some(sdp.clone()), |generation| {
                    new_stack(servers, certificate, shared, peer, generation)
                })
        else {
            return;
        };
        let Some(link) = self.table.current_mut(peer, generation) else {
            return;
        };
        let me = Rc::downgrade(shared);
        let on_channel = {
            let me = me.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let event: RtcDataChannelEvent = event.unchecked_into();
                let dc = event.channel();
                with_weak(&me, |d, h| d.links.adopt_channel(h, peer, generation, dc));
            })
        };
        link.handle
            .pc
            .set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        link.handle.callbacks.push(on_channel);
        let pc = link.handle.pc.clone();
        spawn_local(async move {
            let result = async {
                let offer = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
                offer.set_sdp(&sdp);
                JsFuture::from(pc.set_remote_description(&offer)).await?;
                let answer = JsFuture::from(pc.create_answer()).await?;
                let answer: RtcSessionDescriptionInit = answer.unchecked_into();
                JsFuture::from(pc.set_local_description(&answer)).await?;
                Ok::<_, JsValue>(())
            }
            .await;
            after_local_description(&me, peer, generation, result, "answering the offer");
        });
    }

    /// The answerer got the offerer's channel.
    fn adopt_channel(&mut self, shared: &Handle, peer: u32, generation: u64, dc: RtcDataChannel) {
        let Some(link) = self.table.current_mut(peer, generation) else {
            dc.close();
            return;
        };
        if link.handle.dc.is_some() || dc.label() != CHANNEL_LABEL {
            dc.close();
            return;
        }
        attach_channel(
            &mut link.handle,
            generation,
            &dc,
            Rc::downgrade(shared),
            peer,
        );
        if dc.ready_state() == RtcDataChannelState::Open {
            // Already open: no `open` event will come.
            let me = Rc::downgrade(shared);
            spawn_local(async move { channel_opened(&me, peer, generation) });
        }
    }
}

/// The browser's objects for link `generation` to `peer`: the peer connection with its
/// handlers and the connect timeout (`None` when the browser refused to make one). With a
/// `certificate` (`verifyIds`) the connection presents it, so its descriptions prove our id.
fn new_stack(
    ice_servers: &[String],
    certificate: Option<&JsValue>,
    shared: &Handle,
    peer: u32,
    generation: u64,
) -> Option<Stack> {
    {
        let config = web_sys::RtcConfiguration::new();
        let servers = js_sys::Array::new();
        if !ice_servers.is_empty() {
            let server = js_sys::Object::new();
            let urls: js_sys::Array = ice_servers.iter().map(JsValue::from).collect();
            let _ = js_sys::Reflect::set(&server, &"urls".into(), &urls);
            servers.push(&server);
        }
        let _ = js_sys::Reflect::set(&config, &"iceServers".into(), &servers);
        if let Some(certificate) = certificate {
            let _ = js_sys::Reflect::set(
                &config,
                &"certificates".into(),
                &js_sys::Array::of1(certificate),
            );
        }
        let pc = RtcPeerConnection::new_with_configuration(&config).ok()?;
        let me = Rc::downgrade(shared);
        let mut callbacks = Vec::new();

        let gathering = {
            let me = me.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                with_weak(&me, |d, _| maybe_signal(d, peer, generation));
            })
        };
        pc.set_onicegatheringstatechange(Some(gathering.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(gathering.as_ref().unchecked_ref()));
        callbacks.push(gathering);

        let state = {
            let me = me.clone();
            let pc = pc.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let state = pc.connection_state();
                if matches!(
                    state,
                    RtcPeerConnectionState::Failed
                        | RtcPeerConnectionState::Closed
                        | RtcPeerConnectionState::Disconnected
                ) {
                    fail_link(&me, peer, generation, &format!("connection {state:?}"));
                }
            })
        };
        pc.set_onconnectionstatechange(Some(state.as_ref().unchecked_ref()));
        callbacks.push(state);

        let timeout_callback = {
            let me = me.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                fail_link(&me, peer, generation, "not open within the connect timeout");
            })
        };
        let timeout = web_sys::window().and_then(|w| {
            w.set_timeout_with_callback_and_timeout_and_arguments_0(
                timeout_callback.as_ref().unchecked_ref(),
                CONNECT_TIMEOUT_MS,
            )
            .ok()
        });
        callbacks.push(timeout_callback);

        Some(Stack {
            pc,
            dc: None,
            signalled: false,
            callbacks,
            timeout,
        })
    }
}

use std::rc::Rc;

/// Wires a data channel's events to the driver.
fn attach_channel(
    link: &mut Stack,
    generation: u64,
    dc: &RtcDataChannel,
    me: Weak<Shared>,
    peer: u32,
) {
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    let on_open = {
        let me = me.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| channel_opened(&me, peer, generation))
    };
    let on_message = {
        let me = me.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let event: web_sys::MessageEvent = event.unchecked_into();
            let data = event.data();
            let bytes = if let Some(text) = data.as_string() {
                text.into_bytes()
            } else {
                Uint8Array::new(&data).to_vec()
            };
            with_weak(&me, |d, _| {
                if d.links.is_current(peer, generation) {
                    d.link_frame(peer, &bytes);
                }
            });
        })
    };
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        fail_link(&me, peer, generation, "data channel closed");
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    link.callbacks.extend([on_open, on_message, on_close]);
    link.dc = Some(dc.clone());
}

fn channel_opened(me: &Weak<Shared>, peer: u32, generation: u64) {
    with_weak(me, |d, _| {
        if d.links.mark_open(peer, generation) {
            d.link_opened(peer);
        }
    });
}

fn fail_link(me: &Weak<Shared>, peer: u32, generation: u64, reason: &str) {
    with_weak(me, |d, _| {
        if let Some(was_open) = d.links.fail(peer, generation) {
            d.link_closed(peer, was_open, reason);
        }
    });
}

fn after_local_description(
    me: &Weak<Shared>,
    peer: u32,
    generation: u64,
    result: Result<(), JsValue>,
    step: &str,
) {
    match result {
        Ok(()) => with_weak(me, |d, _| maybe_signal(d, peer, generation)),
        Err(e) => fail_link(me, peer, generation, &describe(step, &e)),
    }
}

/// Signals the local description once gathering is complete (non-trickle), exactly once.
fn maybe_signal(d: &mut Driver, peer: u32, generation: u64) {
    let Some(link) = d.links.table.current_mut(peer, generation) else {
        return;
    };
    if link.handle.signalled
        || link.handle.pc.ice_gathering_state() != RtcIceGatheringState::Complete
    {
        return;
    }
    let Some(local) = link.handle.pc.local_description() else {
        return;
    };
    link.handle.signalled = true;
    let offer = local.type_() == RtcSdpType::Offer;
    let payload = if offer {
        Description::Offer(local.sdp())
    } else {
        Description::Answer(local.sdp())
    }
    .encode();
    link.local_payload = Some(payload.clone());
    d.send_signal(peer, payload);
    if offer {
        retry_offer_later(d.me.clone(), peer, generation);
    }
}

/// node-core's signalling rules, "Retries": while the offer of link `generation` has no answer,
/// it goes again every `OFFER_RETRY_MS`, through the introducer when there is one.
fn retry_offer_later(me: Weak<Shared>, peer: u32, generation: u64) {
    spawn_local(async move {
        crate::driver::sleep_ms(signal::OFFER_RETRY_MS as i32).await;
        with_weak(&me, |d, _| {
            // Still current, unanswered and not open: node-core's table decides.
            let Some(payload) = d.links.table.retry_payload(peer, generation) else {
                return;
            };
            d.send_signal_retry(peer, payload);
            retry_offer_later(d.me.clone(), peer, generation);
        });
    });
}

fn describe(step: &str, error: &JsValue) -> String {
    let detail = error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"));
    format!("{step}: {detail}")
}
