//! In-page peers over real RTCPeerConnections in headless Chromium (wasm-bindgen-test).
//!
//! Run: `cargo xtask wasm-test` (inside a private network namespace), or by hand inside one:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!  cargo test -p node-wasm --target wasm32-unknown-unknown`, or `wasm-pack test --headless
//! --chrome node-wasm`. Peers find each other through the in-page introducer (`page:<room>`);
//! everything after that (links, ring, store) is the real browser driver.
#![cfg(target_arch = "wasm32")]

use js_sys::{Promise, Reflect};
use node_wasm::ChordPeer;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn options(introducer: &str, id: &str) -> JsValue {
    js_sys::JSON::parse(&format!(
        r#"{{"introducer": "{introducer}", "iceServers": [], "id": "{id}", "storage": "memory"}}"#
    ))
    .unwrap()
}

/// Options for a peer that keeps its store in IndexedDB.
fn durable(introducer: &str, id: &str) -> JsValue {
    js_sys::JSON::parse(&format!(
        r#"{{"introducer": "{introducer}", "iceServers": [], "id": "{id}"}}"#
    ))
    .unwrap()
}

async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

fn field(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

fn text(value: &JsValue, name: &str) -> Option<String> {
    field(value, name).as_string()
}

fn number(value: &JsValue, name: &str) -> f64 {
    field(value, name).as_f64().unwrap_or(f64::NAN)
}

async fn start(room: &str, id: &str) -> ChordPeer {
    match ChordPeer::start(options(&format!("page:{room}"), id)).await {
        Ok(peer) => peer,
        Err(e) => panic!("peer {id} did not start: {e:?}"),
    }
}

/// The first successor each peer should have, for ids given in ring order.
fn expected_successors(ids: &[&str]) -> Vec<String> {
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    ids.iter()
        .map(|id| {
            let i = sorted.iter().position(|s| s == id).unwrap();
            sorted[(i + 1) % sorted.len()].to_string()
        })
        .collect()
}

fn successor(peer: &ChordPeer) -> Option<String> {
    let ring = peer.ring();
    let successors: js_sys::Array = field(&ring, "successors").into();
    successors.get(0).as_string()
}

/// Waits (bounded) until every peer's first successor is the true one.
async fn converge(peers: &[&ChordPeer], ids: &[&str]) {
    let want = expected_successors(ids);
    for _ in 0..300 {
        let have: Vec<Option<String>> = peers.iter().map(|p| successor(p)).collect();
        if have
            .iter()
            .zip(&want)
            .all(|(h, w)| h.as_deref() == Some(w.as_str()))
        {
            return;
        }
        sleep(100).await;
    }
    let have: Vec<Option<String>> = peers.iter().map(|p| successor(p)).collect();
    panic!("ring did not converge in 30 s: successors {have:?}, want {want:?}");
}

async fn call(promise: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

#[wasm_bindgen_test]
async fn three_peers_form_a_ring_and_read_each_others_writes() {
    let ids = ["20000000", "70000000", "c0000000"];
    let a = start("ring3", ids[0]).await;
    let b = start("ring3", ids[1]).await;
    let c = start("ring3", ids[2]).await;
    converge(&[&a, &b, &c], &ids).await;

    // Every write is read back through every other peer.
    for (i, writer) in [&a, &b, &c].iter().enumerate() {
        let key = format!("key-{i}");
        let put = call(writer.put(key.clone(), format!("value-{i}").into(), None))
            .await
            .expect("put");
        assert_eq!(field(&put, "ok").as_bool(), Some(true), "{put:?}");
        assert!(number(&put, "ts") > 0.0);
        for reader in [&a, &b, &c] {
            let got = call(reader.get(key.clone())).await.expect("get");
            assert_eq!(field(&got, "found").as_bool(), Some(true), "{got:?}");
            assert_eq!(
                text(&got, "value").as_deref(),
                Some(format!("value-{i}").as_str())
            );
            assert_eq!(text(&got, "writer_id").as_deref(), Some(ids[i]));
        }
    }

    // A delete is seen by the others; a later write wins over it.
    call(b.delete("key-0".into(), None)).await.expect("delete");
    let gone = call(c.get("key-0".into())).await.expect("get");
    assert_eq!(field(&gone, "found").as_bool(), Some(false), "{gone:?}");

    // The walk from any peer lists the whole ring, in order.
    let walk: js_sys::Array = call(c.walk(Some(16))).await.expect("walk").into();
    let walked: Vec<String> = walk.iter().filter_map(|v| text(&v, "id")).collect();
    assert_eq!(walked, vec![ids[2], ids[0], ids[1]]);

    // Links were negotiated through the ring once the first one stood.
    let metrics = c.metrics();
    let driver = field(&metrics, "driver");
    assert!(number(&driver, "links") >= 2.0, "{driver:?}");
    // The native `/metrics` document (node-core's `peer::stats`): link counters too.
    let rtc = field(&driver, "rtc");
    assert!(number(&rtc, "opened") >= 2.0, "{rtc:?}");
    assert!(
        number(&rtc, "frames_out") > 0.0 && number(&rtc, "bytes_in") > 0.0,
        "{rtc:?}"
    );
    assert_eq!(number(&rtc, "links_open"), number(&driver, "links"));
    let storage = field(&driver, "storage");
    assert_eq!(
        text(&storage, "durability").as_deref(),
        Some("in-memory"),
        "{storage:?}"
    );
    assert!(field(&field(&metrics, "kv"), "hop_histogram").is_array());
    for peer in [a, b, c] {
        peer.stop();
    }
}

#[wasm_bindgen_test]
async fn bad_frames_are_counted_and_the_peer_keeps_working() {
    let ids = ["30000000", "b0000000"];
    let a = start("bad", ids[0]).await;
    let b = start("bad", ids[1]).await;
    converge(&[&a, &b], &ids).await;

    assert!(a.send_raw_frame(ids[1], b"not json at all"));
    assert!(a.send_raw_frame(ids[1], br#"{"v":9,"m":{"t":"notify"}}"#));
    assert!(a.send_raw_frame(ids[1], &vec![b'x'; 70 * 1024]));
    let mut bad = 0.0;
    for _ in 0..50 {
        bad = number(&field(&b.metrics(), "driver"), "frames_bad");
        if bad >= 3.0 {
            break;
        }
        sleep(100).await;
    }
    assert_eq!(bad, 3.0, "every malformed frame is counted once");

    call(a.put("after".into(), "garbage".into(), None))
        .await
        .expect("put after garbage");
    let got = call(b.get("after".into()))
        .await
        .expect("get after garbage");
    assert_eq!(text(&got, "value").as_deref(), Some("garbage"));
    assert_eq!(successor(&b).as_deref(), Some(ids[0]), "the link survived");
    a.stop();
    b.stop();
}

#[wasm_bindgen_test]
async fn a_watching_peer_hears_the_others_puts_and_deletes_in_order() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::JsCast as _;
    use wasm_bindgen::closure::Closure;

    let ids = ["30000000", "80000000", "d0000000"];
    let a = start("watch3", ids[0]).await;
    let b = start("watch3", ids[1]).await;
    let c = start("watch3", ids[2]).await;
    converge(&[&a, &b, &c], &ids).await;

    let events: Rc<RefCell<Vec<JsValue>>> = Rc::default();
    let sink = Rc::clone(&events);
    let callback = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| sink.borrow_mut().push(e))
        .into_js_value()
        .unchecked_into::<js_sys::Function>();
    c.watch("watched".into(), callback.clone()).expect("watch");
    sleep(300).await;
    let put = call(a.put("watched".into(), "from a".into(), None))
        .await
        .expect("put");
    let deleted = call(b.delete("watched".into(), None))
        .await
        .expect("delete");
    let put_again = call(a.put("watched".into(), JsValue::from_f64(7.0), None))
        .await
        .expect("put");
    let wanted = number(&put_again, "ts");
    for _ in 0..100 {
        if events.borrow().iter().any(|e| number(e, "ts") == wanted) {
            break;
        }
        sleep(100).await;
    }
    let seen: Vec<(f64, JsValue, bool)> = events
        .borrow()
        .iter()
        .map(|e| {
            assert_eq!(text(e, "key").as_deref(), Some("watched"), "{e:?}");
            let deleted = field(e, "deleted").as_bool().expect("deleted");
            (number(e, "ts"), field(e, "value"), deleted)
        })
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "out of order: {seen:?}"
    );
    let find = |ts: f64| seen.iter().find(|(t, ..)| *t == ts).cloned();
    let (_, value, gone) = find(number(&put, "ts")).expect("the first put's event");
    assert_eq!(
        (value.as_string().as_deref(), gone),
        (Some("from a"), false)
    );
    let (_, value, gone) = find(number(&deleted, "ts")).expect("the delete's event");
    assert!(value.is_null() && gone, "{value:?}");
    let (_, value, gone) = find(wanted).expect("the second put's event");
    assert_eq!((value.as_f64(), gone), (Some(7.0), false));

    // Unwatched: no more calls. A key over the limits, and a stopped peer, throw with a code.
    assert!(c.unwatch("watched"));
    assert!(!c.unwatch("watched"));
    let before = events.borrow().len();
    call(b.put("watched".into(), "unheard".into(), None))
        .await
        .expect("put");
    sleep(500).await;
    assert_eq!(events.borrow().len(), before);
    let err = c
        .watch("k".repeat(2 * 1024), callback.clone())
        .expect_err("a key over the limits");
    assert_eq!(text(&err, "code").as_deref(), Some("too_large"), "{err:?}");
    c.stop();
    let err = c.watch("watched".into(), callback).expect_err("stopped");
    assert_eq!(text(&err, "code").as_deref(), Some("stopped"), "{err:?}");
    for peer in [a, b] {
        peer.stop();
    }
}

#[wasm_bindgen_test]
async fn bad_requests_reject_with_a_code() {
    let a = start("limits", "40000000").await;
    let err = call(a.put("big".into(), "x".repeat(60 * 1024).into(), None))
        .await
        .expect_err("oversize value");
    assert_eq!(text(&err, "code").as_deref(), Some("too_large"), "{err:?}");
    assert!(text(&err, "message").unwrap().contains("exceeds"));

    // A lone peer is its own ring: its writes work.
    call(a.put("solo".into(), "1".into(), None))
        .await
        .expect("put");
    let got = call(a.get("solo".into())).await.expect("get");
    assert_eq!(text(&got, "value").as_deref(), Some("1"));
    // Any JSON value comes back as itself (node_core::value), as over the native HTTP API.
    call(a.put("number".into(), JsValue::from_f64(42.0), None))
        .await
        .expect("put a number");
    let got = call(a.get("number".into())).await.expect("get a number");
    let value = js_sys::Reflect::get(&got, &"value".into()).unwrap();
    assert_eq!(value.as_f64(), Some(42.0), "{got:?}");
    let object = js_sys::JSON::parse(r#"{"a":[1,"b"]}"#).unwrap();
    call(a.put("object".into(), object, None))
        .await
        .expect("put an object");
    let got = call(a.get("object".into())).await.expect("get an object");
    let value = js_sys::Reflect::get(&got, &"value".into()).unwrap();
    assert_eq!(
        js_sys::JSON::stringify(&value)
            .unwrap()
            .as_string()
            .as_deref(),
        Some(r#"{"a":[1,"b"]}"#)
    );
    a.stop();
    let err = call(a.get("solo".into())).await.expect_err("stopped");
    assert_eq!(text(&err, "code").as_deref(), Some("stopped"));
}

#[wasm_bindgen_test]
async fn an_unreachable_introducer_is_a_clear_error() {
    let err = ChordPeer::start(options("ws://127.0.0.1:9/ws", "50000000"))
        .await
        .expect_err("nothing listens on port 9");
    assert_eq!(
        text(&err, "code").as_deref(),
        Some("introducer_unreachable"),
        "{err:?}"
    );
    let err = ChordPeer::start(options("http://x", "50000000"))
        .await
        .expect_err("not a ws URL");
    assert_eq!(text(&err, "code").as_deref(), Some("bad_config"));
}

#[wasm_bindgen_test]
async fn a_stopped_peer_loses_no_acknowledged_write() {
    let ids = ["10000000", "50000000", "90000000", "d0000000"];
    let mut peers = Vec::new();
    for id in ids {
        peers.push(start("leave", id).await);
    }
    let refs: Vec<&ChordPeer> = peers.iter().collect();
    converge(&refs, &ids).await;
    for i in 0..20 {
        call(peers[i % 4].put(format!("k{i}"), format!("v{i}").into(), None))
            .await
            .expect("put");
    }
    let gone = peers.remove(1);
    gone.stop();
    let rest = ["10000000", "90000000", "d0000000"];
    let refs: Vec<&ChordPeer> = peers.iter().collect();
    converge(&refs, &rest).await;
    for i in 0..20 {
        let got = call(peers[i % 3].get(format!("k{i}"))).await.expect("get");
        assert_eq!(
            text(&got, "value").as_deref(),
            Some(format!("v{i}").as_str()),
            "key k{i} after a peer left"
        );
    }
    for peer in peers {
        peer.stop();
    }
}

#[wasm_bindgen_test]
async fn a_restarted_peer_comes_back_with_its_store_from_indexeddb() {
    let id = "60000000";
    let first = ChordPeer::start(durable("page:persist-1", id))
        .await
        .expect("start");
    for i in 0..5 {
        call(first.put(format!("kept-{i}"), format!("v{i}").into(), None))
            .await
            .expect("put");
    }
    let ts_before = number(
        &call(first.put("clock".into(), "a".into(), None))
            .await
            .unwrap(),
        "ts",
    );
    first.stop();
    drop(first);
    sleep(200).await;

    let again = ChordPeer::start(durable("page:persist-2", id))
        .await
        .expect("restart");
    let storage = field(&field(&again.metrics(), "driver"), "storage");
    assert_eq!(number(&storage, "restored_entries"), 6.0, "{storage:?}");
    let keys: js_sys::Array = again.local_keys().into();
    assert_eq!(
        keys.length(),
        6,
        "the store is back before any peer sent anything"
    );
    for i in 0..5 {
        let got = call(again.get(format!("kept-{i}"))).await.expect("get");
        assert_eq!(
            text(&got, "value").as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    // The Lamport clock came back too: a new write never reuses a timestamp.
    let after = call(again.put("clock".into(), "b".into(), None))
        .await
        .unwrap();
    assert!(number(&after, "ts") > ts_before, "{after:?} vs {ts_before}");
    let got = call(again.get("clock".into())).await.unwrap();
    assert_eq!(text(&got, "value").as_deref(), Some("b"));
    again.stop();
}

#[wasm_bindgen_test]
async fn a_malformed_record_in_indexeddb_is_a_clear_error() {
    let id = "61000000";
    // Create the database, then corrupt one record behind the peer's back.
    let storage = node_wasm::storage::Storage::open(0x6100_0000)
        .await
        .expect("open");
    storage.close();
    let factory = web_sys::window().unwrap().indexed_db().unwrap().unwrap();
    let request = factory.open("chord-kv-61000000").unwrap();
    let db: web_sys::IdbDatabase = loop {
        if let Ok(result) = request.result() {
            break result.into();
        }
        sleep(20).await;
    };
    let tx = db
        .transaction_with_str_and_mode("entries", web_sys::IdbTransactionMode::Readwrite)
        .unwrap();
    tx.object_store("entries")
        .unwrap()
        .put_with_key(&"not an entry".into(), &"broken".into())
        .unwrap();
    sleep(100).await;
    db.close();

    let err = ChordPeer::start(durable("page:corrupt", id))
        .await
        .expect_err("a malformed record must not start an empty peer");
    assert_eq!(
        text(&err, "code").as_deref(),
        Some("storage_error"),
        "{err:?}"
    );
    let message = text(&err, "message").unwrap();
    assert!(
        message.contains("chord-kv-61000000") && message.contains("broken"),
        "{message}"
    );
}

/// Keeps a readwrite transaction open on a peer's database (chained requests) until the
/// returned flag is cleared: every later readwrite transaction of that peer waits behind it.
async fn block_database(id: &str) -> std::rc::Rc<std::cell::Cell<bool>> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    let factory = web_sys::window().unwrap().indexed_db().unwrap().unwrap();
    let request = factory.open(&format!("chord-kv-{id}")).unwrap();
    let opened = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(opened)
        .await
        .expect("open the peer's database");
    let db: web_sys::IdbDatabase = request.result().unwrap().dyn_into().unwrap();
    let transaction = db
        .transaction_with_str_and_mode("entries", web_sys::IdbTransactionMode::Readwrite)
        .unwrap();
    let store = transaction.object_store("entries").unwrap();
    let blocking = std::rc::Rc::new(std::cell::Cell::new(true));
    // Each request's success issues the next one while `blocking` holds.
    fn chain(store: web_sys::IdbObjectStore, blocking: std::rc::Rc<std::cell::Cell<bool>>) {
        let Ok(request) = store.get(&"-".into()) else {
            return;
        };
        let next = Closure::once_into_js(move || {
            if blocking.get() {
                chain(store, blocking);
            }
        });
        request.set_onsuccess(Some(next.unchecked_ref()));
    }
    chain(store, blocking.clone());
    blocking
}

/// A tab acknowledges a replica write only after its IndexedDB transaction committed: while
/// every peer's database is blocked by another transaction, a put cannot complete; once the
/// databases are free, it does, and reads back.
#[wasm_bindgen_test]
async fn a_put_is_acknowledged_only_after_indexeddb_committed() {
    let ids = ["71000000", "72000000", "73000000"];
    let mut peers = Vec::new();
    for id in ids {
        peers.push(
            ChordPeer::start(durable("page:commit", id))
                .await
                .expect("start"),
        );
    }
    let refs: Vec<&ChordPeer> = peers.iter().collect();
    converge(&refs, &ids).await;
    // A write before the block, so every set has a settled leader and replicas.
    call(peers[0].put("warm".into(), "up".into(), None))
        .await
        .expect("put before the block");

    let mut blocks = Vec::new();
    for id in ids {
        blocks.push(block_database(id).await);
    }
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let put = peers[0].put("held".into(), "after commit".into(), None);
    {
        let done = done.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = JsFuture::from(put).await;
            done.set(true);
        });
    }
    sleep(1_500).await;
    assert!(
        !done.get(),
        "the put completed while no peer could commit it to IndexedDB"
    );
    let held: f64 = peers
        .iter()
        .map(|p| {
            number(
                &field(&field(&p.metrics(), "driver"), "storage"),
                "frames_held",
            )
        })
        .sum();
    assert!(held > 0.0, "no frame waited for a transaction");
    for block in &blocks {
        block.set(false);
    }
    for _ in 0..100 {
        if done.get() {
            break;
        }
        sleep(100).await;
    }
    assert!(
        done.get(),
        "the put did not complete once the databases were free"
    );
    let got = call(peers[1].get("held".into())).await.expect("get");
    assert_eq!(text(&got, "value").as_deref(), Some("after commit"));
    for peer in &peers {
        peer.stop();
    }
}

/// A tab serving alone (a ring of one) resolves a put only after its IndexedDB transaction
/// committed: the `OpDone` of a write waits behind the write like every frame does
/// (node-core's `peer::commit`). Before, only frames waited, so the Promise resolved first.
#[wasm_bindgen_test]
async fn a_ring_of_one_resolves_a_put_only_after_indexeddb_committed() {
    let id = "74000000";
    let peer = ChordPeer::start(durable("page:commit-alone", id))
        .await
        .expect("start");
    call(peer.put("warm".into(), "up".into(), None))
        .await
        .expect("put before the block");
    let block = block_database(id).await;
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let put = peer.put("alone".into(), "after commit".into(), None);
    {
        let done = done.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = JsFuture::from(put).await;
            done.set(true);
        });
    }
    sleep(1_000).await;
    assert!(
        !done.get(),
        "the put resolved while the tab could not commit it to IndexedDB"
    );
    block.set(false);
    for _ in 0..100 {
        if done.get() {
            break;
        }
        sleep(100).await;
    }
    assert!(
        done.get(),
        "the put did not resolve once the database was free"
    );
    let got = call(peer.get("alone".into())).await.expect("get");
    assert_eq!(text(&got, "value").as_deref(), Some("after commit"));
    peer.stop();
}

/// A tab whose peer-connection budget runs out says so and leaves the ring gracefully, before
/// the browser's cap would make it fail silently (node-core's `peer::budget`): with
/// `connectionLimit: 4` it links to the first two peers, and the link to a third newcomer
/// crosses both steps; it stops, and the others' ring closes over it at once.
#[wasm_bindgen_test]
async fn a_tab_out_of_connections_says_so_and_leaves() {
    let ids = ["81000000", "82000000", "83000000", "84000000"];
    let a = start("budget", ids[0]).await;
    let b = start("budget", ids[1]).await;
    converge(&[&a, &b], &ids[..2]).await;
    let limited = js_sys::JSON::parse(&format!(
        r#"{{"introducer": "page:budget", "iceServers": [], "id": "{}", "storage": "memory", "connectionLimit": 4}}"#,
        ids[2]
    ))
    .unwrap();
    let c = ChordPeer::start(limited)
        .await
        .expect("start the limited peer");
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        let callback =
            wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                if text(&event, "type").as_deref() == Some("connection_budget") {
                    seen.borrow_mut()
                        .push(text(&event, "state").unwrap_or_default());
                }
            });
        let function: &js_sys::Function = wasm_bindgen::JsCast::unchecked_ref(callback.as_ref());
        c.on_event(function.clone());
        callback.forget();
    }
    converge(&[&a, &b, &c], &ids[..3]).await;
    assert!(
        seen.borrow().is_empty(),
        "2 of 4 connections: no warning yet"
    );
    let d = start("budget", ids[3]).await;
    for _ in 0..300 {
        if seen.borrow().len() == 2 {
            break;
        }
        sleep(100).await;
    }
    assert_eq!(*seen.borrow(), vec!["low", "exhausted"]);
    // It left: the others form a ring without it, and the limited peer is stopped.
    let rest = [ids[0], ids[1], ids[3]];
    converge(&[&a, &b, &d], &rest).await;
    let stopped = call(c.get("anything".into())).await;
    let code = stopped.err().map(|e| text(&e, "code"));
    assert_eq!(
        code,
        Some(Some("stopped".to_string())),
        "the limited peer stopped"
    );
    for peer in [a, b, d] {
        peer.stop();
    }
}

/// Issue 11 (bounds): a tab never hands a data channel more than `BUFFERED_HIGH_WATER` (1 MiB)
/// of unsent bytes. 40 frames of 64 KiB handed to A's channel to B in one task (2.5 MiB): within
/// one task `bufferedAmount` only grows (the browser lowers it in later tasks), so the driver
/// must take about the first 16 and refuse the rest, counting each refusal in `frames_dropped`
/// (what the core's sends do on a refusal, `Input::SendFailed`, is `node-core/tests/send_failed.rs`).
/// Without the check the browser queues all 40. The link survives: once it drained, a put through
/// A reads back through B.
#[wasm_bindgen_test]
async fn a_burst_over_the_channel_buffer_is_refused_counted_and_the_link_survives() {
    let ids = ["48000000", "c8000000"];
    let a = start("burst", ids[0]).await;
    let b = start("burst", ids[1]).await;
    converge(&[&a, &b], &ids).await;

    let dropped_before = number(
        &field(&field(&a.metrics(), "driver"), "rtc"),
        "frames_dropped",
    );
    let frame = vec![b' '; 64 * 1024];
    let sent = (0..40).filter(|_| a.send_raw_frame(ids[1], &frame)).count();
    let dropped = number(
        &field(&field(&a.metrics(), "driver"), "rtc"),
        "frames_dropped",
    ) - dropped_before;
    assert!(
        (15..40).contains(&sent),
        "2.5 MiB in one task: about 1 MiB is taken, the rest refused (taken {sent} of 40)"
    );
    assert_eq!(
        dropped,
        (40 - sent) as f64,
        "every refused frame is counted in frames_dropped"
    );

    // The channel drains; the link and the ring keep working.
    sleep(500).await;
    call(a.put("after-burst".into(), "drained".into(), None))
        .await
        .expect("put after the burst");
    let got = call(b.get("after-burst".into()))
        .await
        .expect("get after the burst");
    assert_eq!(text(&got, "value").as_deref(), Some("drained"));
    assert_eq!(successor(&b).as_deref(), Some(ids[0]), "the link survived");
    a.stop();
    b.stop();
}

// Ids proven by link certificates (issue 11, item 4; `verifyIds`, node-wasm/src/identity.rs).

/// Options for a tab that proves its id, keeping its store (and certificate) in IndexedDB or not.
fn verifying(introducer: &str, storage: &str) -> JsValue {
    js_sys::JSON::parse(&format!(
        r#"{{"introducer": "{introducer}", "iceServers": [], "storage": "{storage}", "verifyIds": true}}"#
    ))
    .unwrap()
}

/// Replaces the page's `RTCPeerConnection` (once) by a subclass that records, per connection,
/// whether its configuration names certificates and the SDP of its local and remote
/// descriptions, in `window.__chordLinks`; returns that list, emptied. This is what the
/// browser itself puts on the wire, read beside the driver rather than through it.
fn record_descriptions() -> js_sys::Array {
    let install = js_sys::Function::new_no_args(
        r#"
        if (!window.__chordLinks) {
          window.__chordLinks = [];
          const Base = window.RTCPeerConnection;
          window.RTCPeerConnection = class extends Base {
            constructor(config) {
              super(config);
              this.__record = {
                certificates: (config && config.certificates || []).length,
                local: null,
                remote: null,
              };
              window.__chordLinks.push(this.__record);
            }
            async setLocalDescription(d) {
              const r = await super.setLocalDescription(d);
              this.__record.local = this.localDescription.sdp;
              return r;
            }
            async setRemoteDescription(d) {
              const r = await super.setRemoteDescription(d);
              this.__record.remote = this.remoteDescription.sdp;
              return r;
            }
          };
        }
        window.__chordLinks.length = 0;
        return window.__chordLinks;
        "#,
    );
    install.call0(&JsValue::NULL).unwrap().into()
}

/// The ring id the one `a=fingerprint:sha-256` value of `sdp` proves: parsed here, by hand,
/// not by node-core's `sdp_fingerprint` (which the driver uses), then `Id::of` its 32 bytes.
fn id_in_sdp(sdp: &str) -> String {
    let values: std::collections::BTreeSet<Vec<u8>> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:sha-256 "))
        .map(|hex| {
            hex.trim()
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(values.len(), 1, "one sha-256 fingerprint in {sdp}");
    let bytes = values.into_iter().next().unwrap();
    assert_eq!(bytes.len(), 32);
    node_core::Id::of(&bytes).to_string()
}

async fn identity_refused(peer: &ChordPeer) -> f64 {
    number(
        &field(&field(&peer.metrics(), "driver"), "rtc"),
        "identity_refused",
    )
}

/// Two tabs that prove their ids form a ring, and a put through one reads back through the
/// other. Each tab's id is the one the fingerprint in the descriptions its connections put on
/// the wire proves: every connection of theirs names a certificate, its own description proves
/// one tab's id and the remote description the other's, and both ids are proven.
#[wasm_bindgen_test]
async fn verifying_tabs_prove_their_ids_and_form_a_ring() {
    let links = record_descriptions();
    let a = ChordPeer::start(verifying("page:verify-ring", "memory"))
        .await
        .expect("start a");
    let b = ChordPeer::start(verifying("page:verify-ring", "memory"))
        .await
        .expect("start b");
    let ids = [a.id(), b.id()];
    assert_ne!(ids[0], ids[1], "two certificates, two ids");
    converge(&[&a, &b], &[ids[0].as_str(), ids[1].as_str()]).await;

    let put = call(a.put("proven".into(), "yes".into(), None))
        .await
        .expect("put through a");
    assert_eq!(field(&put, "ok").as_bool(), Some(true), "{put:?}");
    let got = call(b.get("proven".into())).await.expect("get through b");
    assert_eq!(text(&got, "value").as_deref(), Some("yes"), "{got:?}");

    let mut proven = std::collections::BTreeSet::new();
    let mut negotiated = 0;
    for record in links.iter() {
        assert_eq!(
            number(&record, "certificates"),
            1.0,
            "every connection names the tab's certificate"
        );
        let (Some(local), Some(remote)) = (text(&record, "local"), text(&record, "remote")) else {
            continue;
        };
        negotiated += 1;
        let (mine, theirs) = (id_in_sdp(&local), id_in_sdp(&remote));
        assert!(ids.contains(&mine), "{mine} is neither tab's id {ids:?}");
        assert!(
            ids.contains(&theirs),
            "{theirs} is neither tab's id {ids:?}"
        );
        assert_ne!(mine, theirs, "a link joins the two tabs");
        proven.insert(mine);
    }
    assert!(negotiated >= 2, "both ends of a link were recorded");
    assert_eq!(proven.len(), 2, "both tabs' descriptions prove their ids");
    for peer in [&a, &b] {
        assert_eq!(identity_refused(peer).await, 0.0, "nothing refused");
    }
    a.stop();
    b.stop();
}

/// A tab with an id chosen by hand cannot prove it: a verifying tab refuses its offers (through
/// the introducer, and again on every retry), counts them, and no link opens.
#[wasm_bindgen_test]
async fn a_tab_that_cannot_prove_its_id_is_refused() {
    let v = ChordPeer::start(verifying("page:verify-refuse", "memory"))
        .await
        .expect("start the verifying tab");
    assert_eq!(identity_refused(&v).await, 0.0);
    // Not awaited: it cannot join, and gives up by itself (node-core's join plan).
    let claimed = "40000000";
    wasm_bindgen_futures::spawn_local(async move {
        if let Ok(peer) = ChordPeer::start(options("page:verify-refuse", claimed)).await {
            peer.stop();
            panic!("a tab that cannot prove its id joined a verifying tab");
        }
    });
    let mut refused = 0.0;
    for _ in 0..200 {
        refused = identity_refused(&v).await;
        if refused >= 2.0 {
            break;
        }
        sleep(100).await;
    }
    assert!(
        refused >= 2.0,
        "the offer and its retry are refused and counted: {refused}"
    );
    let rtc = field(&field(&v.metrics(), "driver"), "rtc");
    assert_eq!(number(&rtc, "opened"), 0.0, "no link opened: {rtc:?}");
    assert_eq!(number(&rtc, "links_open"), 0.0, "{rtc:?}");
    let ring = js_sys::JSON::stringify(&v.ring()).unwrap();
    assert!(
        !String::from(ring.clone()).contains(claimed),
        "the verifying tab does not know the impostor: {ring:?}"
    );
    v.stop();
}

/// A verifying tab keeps its certificate in IndexedDB: started again in the same tab (a reload:
/// the id is in `sessionStorage`) it has the same id, and a new tab (no id in `sessionStorage`)
/// gets a new certificate and id. `verifyIds` with `id` is a configuration error.
#[wasm_bindgen_test]
async fn a_reloaded_verifying_tab_keeps_its_id() {
    let session = web_sys::window()
        .unwrap()
        .session_storage()
        .unwrap()
        .unwrap();
    session.remove_item("chord-kv-peer-id").unwrap();
    let first = ChordPeer::start(verifying("page:verify-reload-1", "indexeddb"))
        .await
        .expect("start");
    let id = first.id();
    assert_eq!(
        session.get_item("chord-kv-peer-id").unwrap().as_deref(),
        Some(id.as_str())
    );
    first.stop();
    drop(first);
    sleep(200).await;

    let again = ChordPeer::start(verifying("page:verify-reload-2", "indexeddb"))
        .await
        .expect("restart");
    assert_eq!(again.id(), id, "a reload presents the same certificate");
    again.stop();
    drop(again);

    session.remove_item("chord-kv-peer-id").unwrap();
    let other = ChordPeer::start(verifying("page:verify-reload-3", "indexeddb"))
        .await
        .expect("a new tab");
    assert_ne!(other.id(), id, "a new tab makes a new certificate");
    other.stop();
    session.remove_item("chord-kv-peer-id").unwrap();

    let both = js_sys::JSON::parse(
        r#"{"introducer": "page:verify-bad", "id": "12345678", "verifyIds": true}"#,
    )
    .unwrap();
    let error = ChordPeer::start(both).await.expect_err("verifyIds with id");
    assert_eq!(text(&error, "code").as_deref(), Some("bad_config"));
}
