//! A hostile peer against a ring of `chord-node --verify-ids` peers, over real WebRTC inside a
//! private network namespace (issue 11, item 6; the threat model is docs/threat-model.md).
//!
//! The hostile peer is this test: a webrtc-rs link manager (`node_native::rtc`) with a
//! certificate of its own, speaking the introducer protocol over a raw WebSocket and writing
//! whatever frames it likes on its links. It tries, in turn:
//! - **forged sync**: it links (under its own, proven id) to the owner of a key and sends
//!   anti-entropy `Entries` for the owner's range carrying the key with timestamp
//!   `u64::MAX - 1`, plus a malformed frame (issue 11's opening case);
//! - **impersonation through the ring**: a routed `Signal` that claims a ring member's id as its
//!   origin, carrying an offer made with the hostile certificate, sent to another member that
//!   holds a link to the one impersonated;
//! - **replay**: an answer the victim really signalled (to the hostile peer, which offered it a
//!   link under its own id) sent to the owner as an offer from the victim: it proves the
//!   victim's id, and must still not replace the owner's open link to it;
//! - **impersonation and squatting at the introducer**: a second introducer session that says
//!   hello under a member's id (claiming a verified id, so the introducer lets it share the id)
//!   and signals an offer from it; and a session that takes the id of a peer that has not started yet (its certificate
//!   is in its data dir already, so its id is known) at the introducer that peer will join
//!   through. That peer must join all the same: its verified hello shares the id (signaling's
//!   protocol docs).
//!
//! Honest peers must keep serving: the key stays writable and readable with honest values, no
//! honest link is replaced, and every refusal is counted (`driver.rtc.identity_refused`, the
//! core's `rejected` counters).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use lab::live::{Proc, get_value, json, key_id, put_value, ring_converged, wait_until};
use node_core::Id;
use node_core::merkle::{DEFAULT_DEPTH, SyncMsg};
use node_core::peer::signal::Description;
use node_core::store::{Entry, RingRange};
use node_core::wire::{self, Body, Dest, Message, Routed};
use node_native::identity::Identity;
use node_native::rtc::{Rtc, RtcConfig, RtcEvent, RtcEvents};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PORTS: [u16; 4] = [7721, 7722, 7723, 7724];
/// The peer whose id is squatted before it starts.
const LATE: u16 = 7725;
/// Keys to choose the attacked one from (see the test).
const KEYS: [&str; 8] = [
    "apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel",
];

/// One introducer session of the hostile peer: hello as `claim`, then relays both ways
/// between the introducer and `rtc` (signals from the introducer go to `rtc`; `rtc`'s signals
/// go out unless `hold` keeps them, for the test to use otherwise).
struct Session {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Session {
    /// `verified`: the hello shares an id some session already holds (signaling's protocol
    /// docs); a hostile peer may say so too.
    async fn open(port: u16, claim: u32, verified: bool) -> Self {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .expect("introducer reachable");
        let hello = format!(r#"{{"type":"hello","peer":"{claim:08x}","verified":{verified}}}"#);
        ws.send(WsMessage::text(hello)).await.unwrap();
        let mut session = Self { ws };
        let welcome = session.next().await.expect("an answer to hello");
        assert_eq!(
            welcome["type"], "welcome",
            "hello as {claim:08x}: {welcome}"
        );
        session
    }

    async fn signal(&mut self, to: u32, payload: &str) {
        let frame =
            serde_json::json!({"type": "signal", "to": format!("{to:08x}"), "payload": payload});
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The payload of the next signal relayed to this session (an answer to an offer it sent).
    async fn next_signal_payload(&mut self, from_whom: &str) -> String {
        loop {
            let msg = self
                .next()
                .await
                .unwrap_or_else(|| panic!("{from_whom} answers a proven offer"));
            if msg["type"] == "signal" {
                return msg["payload"].as_str().unwrap().to_string();
            }
        }
    }

    /// The next JSON message from the introducer, if one comes within 2 s.
    async fn next(&mut self) -> Option<Value> {
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return None,
                msg = self.ws.next() => match msg? {
                    Ok(WsMessage::Text(text)) => return serde_json::from_str(&text).ok(),
                    Ok(_) => {}
                    Err(_) => return None,
                },
            }
        }
    }
}

/// Waits for `rtc`'s next `Signal` event (the offer or answer it made) within 10 s.
async fn next_signal(events: &mut RtcEvents) -> (u32, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(RtcEvent::Signal { peer, payload, .. })) => return (peer, payload),
            Ok(Some(_)) => {}
            _ => panic!("the hostile link manager made no description"),
        }
    }
}

/// A routed `Signal` frame to `to` carrying `payload`, claiming `origin` as its sender.
fn signal_as(origin: u32, to: u32, payload: &str) -> Vec<u8> {
    let routed = Message::Route(Routed {
        dest: Dest::Peer {
            id: Id(to),
            via: None,
        },
        origin: Id(origin),
        origin_via: None,
        hops: 0,
        body: Body::Signal {
            payload: payload.to_string(),
        },
    });
    wire::encode(&routed).unwrap()
}

fn rtc_stat(port: u16, name: &str) -> u64 {
    json(port, "GET", "/metrics", None)
        .and_then(|(_, v)| v["driver"]["rtc"][name].as_u64())
        .unwrap_or_else(|| panic!("no driver.rtc.{name} at {port}"))
}

/// The sum of the core's `rejected` counters at `port` (wherever the document keeps them).
fn rejected(port: u16) -> u64 {
    fn find(v: &Value) -> Option<&Value> {
        match v {
            Value::Object(map) => map.get("rejected").or_else(|| map.values().find_map(find)),
            _ => None,
        }
    }
    let (_, doc) = json(port, "GET", "/metrics", None).expect("metrics");
    find(&doc)
        .and_then(Value::as_object)
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn ring(port: u16) -> Value {
    json(port, "GET", "/ring", None).expect("/ring").1
}

fn links(port: u16) -> Vec<String> {
    ring(port)["links"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_hostile_peer_cannot_forge_sync_impersonate_or_squat_in_a_verifying_ring() {
    if !lab::netns::enter_private_netns(
        "a_hostile_peer_cannot_forge_sync_impersonate_or_squat_in_a_verifying_ring",
    ) {
        return;
    }
    let root = std::env::temp_dir().join(format!("chord-kv-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let start = |port: u16, bootstrap: bool| {
        let dir = root.join(port.to_string()).display().to_string();
        Proc::verified_peer(port, bootstrap.then_some(PORTS[0]), &["--data-dir", &dir])
    };
    let mut peers = Vec::new();
    for (i, port) in PORTS.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        peers.push(start(*port, i > 0));
    }
    let logs = |peers: &[Proc]| peers.iter().map(Proc::log).collect::<String>();
    // Ids come from the certificates the peers made in their data dirs.
    assert!(
        wait_until(Duration::from_secs(20), || PORTS
            .iter()
            .all(|p| json(*p, "GET", "/ring", None).is_some())),
        "peers did not start: {}",
        logs(&peers)
    );
    let ids: Vec<(u16, u32)> = PORTS
        .iter()
        .map(|p| {
            let id = ring(*p)["id"].as_str().unwrap().to_string();
            let kept = Identity::load_or_create(&root.join(p.to_string())).unwrap();
            assert_eq!(id, kept.id().to_string(), "the id is the certificate's");
            (*p, u32::from_str_radix(&id, 16).unwrap())
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&ids)),
        "no ring of {}: {}",
        PORTS.len(),
        logs(&peers)
    );
    // The attacked key: one whose owner holds a link to a member with a lower id (the
    // victim). An offer from a lower id replaces an open link whichever side offered it
    // (`node_core::peer::signal`), so a forged offer taken at its word would show.
    let mut sorted: Vec<(u16, u32)> = ids.clone();
    sorted.sort_by_key(|(_, id)| *id);
    let pick = || {
        KEYS.iter().find_map(|key| {
            let k = key_id(key);
            let at = sorted.iter().position(|(_, id)| *id >= k).unwrap_or(0);
            let owner = sorted[at].1;
            links(sorted[at].0)
                .iter()
                .map(|s| u32::from_str_radix(s, 16).unwrap())
                .find(|v| *v < owner)
                .map(|v| (*key, at, v))
        })
    };
    // Links keep opening for a while after the ring is right.
    assert!(
        wait_until(Duration::from_secs(20), || pick().is_some()),
        "no key whose owner links to a lower id: {:?}",
        PORTS.map(links)
    );
    let (key, owner_at, victim) = pick().unwrap();
    let (owner_port, owner) = sorted[owner_at];
    let (_, pred) = sorted[(owner_at + sorted.len() - 1) % sorted.len()];
    let victim_port = ids.iter().find(|(_, id)| *id == victim).unwrap().0;
    assert!(put_value(PORTS[1], key, "honest-1"), "first put");
    let refused_before = rtc_stat(owner_port, "identity_refused");
    let failures_before = rtc_stat(owner_port, "failures");
    let rejected_before = rejected(owner_port);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let failures_during_attack = rt.block_on(async {
        let hostile = Identity::generate().unwrap();
        let me = hostile.id().0;
        let config = RtcConfig {
            certificate: Some(hostile.certificate.clone()),
            verify_ids: true,
            connect_timeout: Duration::from_secs(10),
            ..RtcConfig::default()
        };
        let (rtc, mut events) = Rtc::new(me, config);

        // 1. Forged sync from a linked peer outside every set (its own id, proven).
        let mut session = Session::open(owner_port, me, false).await;
        rtc.connect(owner).await;
        let (to, offer) = next_signal(&mut events).await;
        assert_eq!(to, owner);
        session.signal(owner, &offer).await;
        let answer = session.next_signal_payload("the owner").await;
        rtc.on_signal(owner, &answer).await;
        let opened = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match events.recv().await {
                    Some(RtcEvent::Open { peer }) if peer == owner => return,
                    Some(_) => {}
                    None => panic!("events ended"),
                }
            }
        })
        .await;
        assert!(opened.is_ok(), "the hostile link to the owner did not open");
        let forged = Message::Sync(SyncMsg::Entries {
            range: RingRange {
                from: pred,
                to: owner,
            },
            depth: DEFAULT_DEPTH,
            entries: vec![(
                key.to_string(),
                Entry::live("\"forged\"", u64::MAX - 1, "evil"),
            )],
        });
        let forged = wire::encode(&forged).unwrap();
        for _ in 0..5 {
            assert!(rtc.send(owner, forged.clone()));
            assert!(rtc.send(owner, b"{\"v\":1,\"m\":garbage".to_vec()));
        }

        // 2. Impersonation through the ring: an offer made with the hostile certificate,
        // routed to the owner under the id of a member it is linked to.
        rtc.connect(victim).await;
        let (_, spoofed_offer) = next_signal(&mut events).await;
        assert!(rtc.send(owner, signal_as(victim, owner, &spoofed_offer)));

        // 3. Impersonation at the introducer: a hello under the victim's id, claiming a
        // verified id so that it is taken even where the victim holds a session; the offer it
        // carries is not.
        let mut squat = Session::open(owner_port, victim, true).await;
        squat.signal(owner, &spoofed_offer).await;
        // Whatever comes back to the squatter, no link under the victim's id is built.
        let _ = squat.next().await;

        // 3b. Hijack of an id the owner holds no link to: a second link manager with a
        // certificate of its own offers under a made-up id through the introducer; without
        // the check the owner would build a link it takes for that id's.
        let phantom_rtc_id = victim ^ 0x8000_0001;
        let phantom_identity = Identity::generate().unwrap();
        let (phantom, mut phantom_events) = Rtc::new(
            phantom_rtc_id,
            RtcConfig {
                certificate: Some(phantom_identity.certificate.clone()),
                connect_timeout: Duration::from_secs(5),
                ..RtcConfig::default()
            },
        );
        let mut phantom_session = Session::open(owner_port, phantom_rtc_id, false).await;
        phantom.connect(owner).await;
        let (_, phantom_offer) = next_signal(&mut phantom_events).await;
        phantom_session.signal(owner, &phantom_offer).await;
        if let Some(msg) = phantom_session.next().await
            && msg["type"] == "signal"
        {
            phantom
                .on_signal(owner, msg["payload"].as_str().unwrap())
                .await;
        }
        let phantom_opened = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match phantom_events.recv().await {
                    Some(RtcEvent::Open { .. }) => return true,
                    Some(RtcEvent::Closed { .. }) | None => return false,
                    Some(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false);
        assert!(
            !phantom_opened,
            "the owner built a link for {phantom_rtc_id:08x} with a certificate that is not its"
        );
        phantom.close_all().await;

        // 4. Replay: a description the victim really signalled proves its id. The hostile
        // peer gets one by offering a link to the victim (under its own id) and keeps the
        // answer; sent to the owner as an offer from the victim, it must not replace the
        // owner's open link to the victim.
        let mut to_victim = Session::open(victim_port, me, false).await;
        to_victim.signal(victim, &spoofed_offer).await;
        let victims_answer = to_victim.next_signal_payload("the victim").await;
        let Some(Description::Answer(victims_sdp)) = Description::parse(&victims_answer) else {
            panic!("not an answer: {victims_answer}");
        };
        let replayed = Description::Offer(victims_sdp).encode();
        assert!(rtc.send(owner, signal_as(victim, owner, &replayed)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Read before the hostile link closes: the owner counts that close as a failure too.
        let failures = rtc_stat(owner_port, "failures");
        rtc.close_all().await;
        failures
    });

    // The owner refused both forged offers, counted them, and kept its link to the victim.
    let refused = rtc_stat(owner_port, "identity_refused") - refused_before;
    println!(
        "owner {owner:08x}: identity_refused +{refused}, rejected +{}",
        rejected(owner_port) - rejected_before
    );
    assert!(
        refused >= 3,
        "identity_refused grew by {refused}, expected the routed, the introducer and the made-up id's offer"
    );
    // A forged offer taken for the victim's would have replaced the open link to it (counted as
    // a failure; the core links again soon after, so the link list alone would not show it).
    assert_eq!(
        failures_during_attack, failures_before,
        "a link of the owner failed or was replaced during the attack"
    );
    assert!(
        links(owner_port).contains(&format!("{victim:08x}")),
        "the owner's link to {victim:08x} was replaced: {:?}",
        links(owner_port)
    );
    // The forged sync was refused by the core, and the malformed frames by the codec.
    assert!(
        rejected(owner_port) > rejected_before,
        "the forged Entries were not counted as rejected"
    );
    // 4. Squatting before a peer starts: the late peer's id is taken at the introducer it
    // joins through; it joins all the same, and the squatter's session stays open meanwhile.
    let late_id = Identity::load_or_create(&root.join(LATE.to_string()))
        .unwrap()
        .id()
        .0;
    let (squat, squat_held, late_peer) = rt.block_on(async {
        let mut squat = Session::open(PORTS[0], late_id, false).await;
        let late_peer = start(LATE, true);
        // The squatter reads what comes (signals meant for the late peer) for a while, and
        // keeps its session open until the late peer is in the ring.
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if squat.next().await.is_some() {
                seen += 1;
            }
        }
        (squat, seen, late_peer)
    });
    peers.push(late_peer);
    let mut all = ids.clone();
    all.push((LATE, late_id));
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&all)),
        "the peer whose id was squatted did not join: {}",
        logs(&peers)
    );
    // Kept nobody out: the late peer's hello was never refused (a refusal is an introducer
    // error, after which it would have tried again until the squatter left).
    let refused_hellos = json(LATE, "GET", "/metrics", None)
        .and_then(|(_, v)| v["driver"]["introducer_errors"].as_u64())
        .expect("the late peer's metrics");
    assert_eq!(refused_hellos, 0, "the late peer's hello was refused");
    rt.block_on(async move { drop(squat) });
    println!("the squatter received {squat_held} signals meant for {late_id:08x}");

    // The key stays writable and readable with honest values, through every peer.
    assert_eq!(get_value(PORTS[2], key).as_deref(), Some("honest-1"));
    assert!(put_value(PORTS[3], key, "honest-2"), "put after the attack");
    for port in PORTS.into_iter().chain([LATE]) {
        assert_eq!(
            get_value(port, key).as_deref(),
            Some("honest-2"),
            "get through {port} after the attack"
        );
    }
    assert!(ring_converged(&all), "the ring broke: {}", logs(&peers));
    for p in &mut peers {
        p.kill();
    }
    let _ = std::fs::remove_dir_all(&root);
}
