//! Live updates in browsers (issue 14 item 5), inside a private network namespace: a Chromium
//! tab watches a key (`peer.watch`) while a native peer and a Firefox tab put it; then the
//! key's leader (the native peer) is killed and a new native peer joins as the key's owner,
//! and puts from a Firefox tab and another Chromium tab still reach the watcher. Every
//! acknowledged put arrives, and the events come in strictly increasing version order. The
//! page's "Watch" toggle shows a change made by a native peer.
//!
//! Needs the page's wasm package (`cargo xtask wasm`), Chromium, Firefox ESR and geckodriver
//! (`cargo xtask setup`), and the `signaling` and `chord-node` binaries.

use std::path::PathBuf;
use std::time::Duration;

use e2e::browser::{Browser, LaunchOptions};
use e2e::webdriver::Firefox;
use e2e::{Proc, hex, json, key_id, ring_order, wait_until};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7790;
/// The watcher (Chromium), then a Firefox tab, a Chromium tab and the native peer. A key in
/// `(WATCHER, FIREFOX]` has the set {FIREFOX, CHROMIUM, NATIVE}, whose Bully leader (the
/// highest id) is the native peer.
const WATCHER: u32 = 0x2000_0000;
const FIREFOX: (u16, u32) = (7795, 0x6000_0000);
const CHROMIUM: u32 = 0xa000_0000;
const NATIVE: (u16, u32) = (7791, 0xe000_0000);
/// Joins between the watcher and the key: the key's new owner.
const NEWCOMER: (u16, u32) = (7792, 0x4000_0000);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A key owned by the newcomer once it joins (its id in `(WATCHER, NEWCOMER]`).
fn key() -> String {
    (0..)
        .map(|i| format!("watched-{i}"))
        .find(|k| (WATCHER + 1..=NEWCOMER.1).contains(&key_id(k)))
        .expect("some key hashes there")
}

fn put_json(js_put: &Value) -> Option<u64> {
    (js_put["ok"] == true)
        .then(|| js_put["ts"].as_u64())
        .flatten()
}

#[test]
fn a_tab_watches_native_and_firefox_puts_through_a_leader_crash_and_a_join() {
    if !lab::netns::enter_private_netns(
        "a_tab_watches_native_and_firefox_puts_through_a_leader_crash_and_a_join",
    ) {
        return;
    }
    let _signaling = e2e::serve_page(SIGNALING);
    let mut native = Proc::peer(NATIVE.0, NATIVE.1, Some(SIGNALING));
    assert!(
        wait_until(Duration::from_secs(30), || json(
            NATIVE.0, "GET", "/ring", None
        )
        .is_some_and(|(_, v)| v["joined"] == true)),
        "the native peer did not start a ring"
    );

    let rt = Runtime::new().expect("tokio runtime");
    let chromium = rt
        .block_on(Browser::launch(LaunchOptions::new(
            root().join("target/e2e-chromium-watch"),
        )))
        .expect("launch headless Chromium");
    let url = |id: u32| format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(id));
    let watcher = rt
        .block_on(chromium.open_tab(&url(WATCHER)))
        .expect("open the watcher's tab");
    let w_eval = |js: &str| -> Value {
        rt.block_on(watcher.eval(js))
            .unwrap_or_else(|e| panic!("watcher: `{js}` failed: {e:#}"))
    };
    assert_eq!(
        w_eval("window.chord.ready.then(p => p.id)"),
        json!(hex(WATCHER))
    );
    let firefox = Firefox::launch(FIREFOX.0).expect("launch headless Firefox");
    firefox
        .open(&url(FIREFOX.1))
        .expect("open the page in Firefox");
    assert_eq!(
        firefox
            .eval("window.chord.ready.then(p => p.id)")
            .expect("Firefox tab starts"),
        json!(hex(FIREFOX.1))
    );
    let other = rt
        .block_on(chromium.open_tab(&url(CHROMIUM)))
        .expect("open the other Chromium tab");
    assert_eq!(
        rt.block_on(other.eval("window.chord.ready.then(p => p.id)"))
            .expect("the other tab starts"),
        json!(hex(CHROMIUM))
    );
    let walk_from_watcher = || -> Vec<String> {
        rt.block_on(watcher.eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))"))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    };
    let mut all = vec![WATCHER, FIREFOX.1, CHROMIUM, NATIVE.1];
    assert!(
        wait_until(Duration::from_secs(90), || walk_from_watcher()
            == ring_order(&all, WATCHER)),
        "no ring of four: the watcher walks {:?}",
        walk_from_watcher()
    );

    let key = key();
    let k = Value::from(key.as_str());
    w_eval(&format!(
        "window.__watched = []; window.chord.peer.watch({k}, e => window.__watched.push(e)); true"
    ));
    std::thread::sleep(Duration::from_secs(1));
    let events = || -> Vec<Value> {
        serde_json::from_value(w_eval("window.__watched")).expect("a list of events")
    };
    let mut acked: Vec<(u64, Value, &str)> = Vec::new();
    let mut expect_event = |ts: u64, value: Value, what: &'static str| {
        acked.push((ts, value, what));
        assert!(
            wait_until(Duration::from_secs(30), || events()
                .iter()
                .any(|e| e["ts"] == ts)),
            "the watcher never saw the {what} (ts {ts}): {:?}",
            events()
        );
    };

    // A native peer's put, then a Firefox tab's.
    let (status, put) = json(
        NATIVE.0,
        "POST",
        "/put",
        Some(&json!({"key": key, "value": {"from": "native"}, "writer_id": "native"}).to_string()),
    )
    .expect("a put answer");
    assert_eq!(status, 200, "{put}");
    expect_event(
        put["ts"].as_u64().expect("ts"),
        json!({"from": "native"}),
        "native put",
    );
    let firefox_put = |value: &str| -> Option<u64> {
        let put = firefox.eval(&format!(
            "window.chord.peer.put({k}, {}, 'firefox')",
            Value::from(value)
        ));
        put.ok().as_ref().and_then(put_json)
    };
    let ts = firefox_put("from firefox").expect("the Firefox put is acknowledged");
    expect_event(ts, json!("from firefox"), "Firefox put");

    // The key's leader crashes; a Firefox put (retried while the ring repairs) still arrives.
    native.kill();
    all.retain(|id| *id != NATIVE.1);
    let mut ts = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            ts = firefox_put("after the leader crashed");
            ts.is_some()
        }),
        "no Firefox put acknowledged after the leader crashed"
    );
    expect_event(
        ts.expect("acked"),
        json!("after the leader crashed"),
        "put after the crash",
    );

    // A native peer joins as the key's new owner; a put from the other Chromium tab arrives.
    let _newcomer = Proc::peer(NEWCOMER.0, NEWCOMER.1, Some(SIGNALING));
    all.push(NEWCOMER.1);
    assert!(
        wait_until(Duration::from_secs(90), || walk_from_watcher()
            == ring_order(&all, WATCHER)),
        "the newcomer did not join: the watcher walks {:?}",
        walk_from_watcher()
    );
    // Past a renewal (5 s), so the newcomer holds the subscription too.
    std::thread::sleep(Duration::from_secs(6));
    let mut ts = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            ts = rt
                .block_on(other.eval(&format!(
                    "window.chord.peer.put({k}, 'after the join', 'chromium')"
                )))
                .ok()
                .as_ref()
                .and_then(put_json);
            ts.is_some()
        }),
        "no Chromium put acknowledged after the join"
    );
    expect_event(
        ts.expect("acked"),
        json!("after the join"),
        "put after the join",
    );
    let (status, put) = json(
        NEWCOMER.0,
        "POST",
        "/put",
        Some(&json!({"key": key, "value": "from the newcomer"}).to_string()),
    )
    .expect("a put answer");
    assert_eq!(status, 200, "{put}");
    expect_event(
        put["ts"].as_u64().expect("ts"),
        json!("from the newcomer"),
        "newcomer's put",
    );

    // In order, each acknowledged put with its value, and nothing else.
    let seen = events();
    let version = |e: &Value| {
        (
            e["ts"].as_u64().expect("ts"),
            e["writer_id"].as_str().expect("writer").to_string(),
        )
    };
    assert!(
        seen.windows(2).all(|w| version(&w[0]) < version(&w[1])),
        "events out of order: {seen:?}"
    );
    for (ts, value, what) in &acked {
        let e = seen
            .iter()
            .find(|e| e["ts"] == *ts)
            .expect("seen (checked above)");
        assert_eq!(
            (&e["value"], &e["deleted"], &e["key"]),
            (value, &json!(false), &json!(key)),
            "{what}"
        );
    }
    println!("the watcher saw {} events: {seen:?}", seen.len());

    // The page's Watch toggle shows a native peer's put as it arrives.
    let page_key = "watched-on-the-page";
    w_eval(&format!(
        "(() => {{ const i = document.getElementById('kv-key'); i.value = {}; \
         i.dispatchEvent(new Event('input')); document.getElementById('btn-watch').click(); \
         return document.getElementById('btn-watch').getAttribute('aria-pressed'); }})()",
        Value::from(page_key)
    ));
    std::thread::sleep(Duration::from_secs(1));
    let (status, _) = json(
        NEWCOMER.0,
        "POST",
        "/put",
        Some(&json!({"key": page_key, "value": "shown on the page"}).to_string()),
    )
    .expect("a put answer");
    assert_eq!(status, 200);
    let shown = || -> String {
        w_eval("document.getElementById('watch-list').textContent")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        wait_until(Duration::from_secs(30), || shown()
            .contains("shown on the page")),
        "the page's watch list shows {:?}",
        shown()
    );

    firefox.close();
    let _ = rt.block_on(chromium.close());
}
