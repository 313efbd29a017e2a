//! A native peer joins a ring that only tabs hold (issue 12): the signaling server serves the
//! page; native peer A joins through it; 3 headless-Chromium tabs with the browser's default
//! WebRTC settings (no `--allow-loopback-in-peer-connection`: their candidates are what a user's
//! browser offers) join; 60 keys are put through A; then, round after round, the only native
//! peer is killed with -9 and a new one (a new id, `--in-memory`, `--bootstrap` the signaling
//! server) joins through the introducer and must read every key. Each round is a newcomer
//! meeting a ring of tabs whose introducer still lists the dead native peer.
//!
//! `CHORD_NATIVE_JOIN_ROUNDS` sets the number of rounds (default 10).
//!
//! Needs the page's wasm package (`cargo xtask wasm`; `cargo xtask test` builds it first),
//! Chromium at /usr/bin/chromium, and the release or debug `signaling`/`chord-node` binaries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::browser::{Browser, LaunchOptions, Tab};
use e2e::{Proc, hex, json, put_value, wait_until};
use serde_json::Value;
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7700;
const FIRST_NATIVE: u16 = 7701;
const TABS: [u32; 3] = [0x3000_0000, 0x8000_0000, 0xd000_0000];
const KEYS: usize = 60;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The id of the native peer of round `round`: spread over the ring, never a tab's id.
fn native_id(round: usize) -> u32 {
    0x1000_0000u32
        .wrapping_add((round as u32).wrapping_mul(0x9e37_79b9))
        .wrapping_add(0x0123_4567)
}

fn ring(port: u16) -> Option<Value> {
    json(port, "GET", "/ring", None).map(|(_, v)| v)
}

fn open_tab(rt: &Runtime, browser: &Browser, id: u32) -> Tab {
    let url = format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(id));
    let tab = rt.block_on(browser.open_tab(&url)).expect("open tab");
    let ready = rt.block_on(tab.eval("window.chord.ready.then(p => p.id)"));
    assert_eq!(
        ready.as_ref().ok().and_then(|v| v.as_str()),
        Some(hex(id).as_str()),
        "tab {} did not start: {ready:?}\nconsole:\n{}",
        hex(id),
        tab.console_log().join("\n")
    );
    tab
}

fn tab_successor(rt: &Runtime, tab: &Tab) -> Option<String> {
    rt.block_on(tab.eval("window.chord.peer.ring().successors[0] ?? null"))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

/// Every tab's successor is the true one among `ids`, and its ring walk lists all of `ids` in
/// ring order.
fn tabs_agree(rt: &Runtime, tabs: &[Tab], ids: &[u32]) -> bool {
    TABS.iter().zip(tabs).all(|(id, tab)| {
        let order = e2e::ring_order(ids, *id);
        let walk: Vec<String> = rt
            .block_on(tab.eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))"))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        tab_successor(rt, tab).as_deref() == order.get(1).map(String::as_str) && walk == order
    })
}

#[test]
fn a_native_peer_joins_a_ring_of_tabs() {
    if !lab::netns::enter_private_netns("a_native_peer_joins_a_ring_of_tabs") {
        return;
    }
    let rounds: usize = std::env::var("CHORD_NATIVE_JOIN_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let _signaling = e2e::serve_page(SIGNALING);

    let mut native_port = FIRST_NATIVE;
    let mut id = native_id(0);
    let mut native = Proc::peer_with(native_port, id, Some(SIGNALING), &["--log", "info"]);
    assert!(
        wait_until(Duration::from_secs(20), || e2e::joined_with_successor(
            native_port,
            id,
            &[id]
        )),
        "the first native peer did not start a ring"
    );

    let rt = Runtime::new().expect("tokio runtime");
    let profiles = root().join("target/e2e-chromium");
    let browser = rt
        .block_on(Browser::launch(LaunchOptions::new(&profiles)))
        .expect("launch headless Chromium");
    let tabs: Vec<Tab> = TABS.iter().map(|t| open_tab(&rt, &browser, *t)).collect();
    let mut all: Vec<u32> = TABS.to_vec();
    all.push(id);
    assert!(
        wait_until(Duration::from_secs(60), || e2e::joined_with_successor(
            native_port,
            id,
            &all
        )),
        "the tabs and the first native peer did not form a ring: {:?}",
        ring(native_port)
    );

    for k in 0..KEYS {
        assert!(
            put_value(native_port, &format!("k{k}"), &format!("v{k}")),
            "put k{k} through the first native peer"
        );
    }

    let mut failures = Vec::new();
    for round in 1..=rounds {
        native.kill();
        native_port += 1;
        id = native_id(round);
        let started = Instant::now();
        native = Proc::peer_with(native_port, id, Some(SIGNALING), &["--log", "info"]);
        let mut ids: Vec<u32> = TABS.to_vec();
        ids.push(id);
        // Joined, and the ring has noticed: every tab's successor is the true one (the dead
        // peer's keys are led by live peers again; until then a read of a key the dead peer
        // led waits for the failure detector, see README "Consistency").
        let joined = wait_until(Duration::from_secs(60), || {
            e2e::joined_with_successor(native_port, id, &ids) && tabs_agree(&rt, &tabs, &ids)
        });
        let join_ms = started.elapsed().as_millis();
        // Every key through the new peer, with the answer of each read that did not return
        // the value written.
        let missing: Vec<(usize, String)> = if joined {
            (0..KEYS)
                .filter_map(|k| {
                    let body = format!(r#"{{"key":"k{k}"}}"#);
                    let answer = json(native_port, "POST", "/get", Some(&body));
                    let ok = answer.as_ref().is_some_and(|(s, v)| {
                        *s == 200 && v["value"].as_str() == Some(format!("v{k}").as_str())
                    });
                    (!ok).then(|| (k, format!("{answer:?}")))
                })
                .collect()
        } else {
            Vec::new()
        };
        println!(
            "round {round}: native peer {} joined={joined} after {join_ms} ms, {} of {KEYS} keys \
             missing",
            hex(id),
            missing.len()
        );
        if !joined || !missing.is_empty() {
            failures.push(format!(
                "round {round}: peer {} joined={joined}, missing keys (with the answers) {missing:?}, /ring {:?}, tab successors {:?}\nlog:\n{}",
                hex(id),
                ring(native_port),
                tabs.iter()
                    .map(|t| tab_successor(&rt, t))
                    .collect::<Vec<_>>(),
                native.log()
            ));
            failures.push(format!(
                "native /metrics: {:?}\ntab metrics: {:?}",
                json(native_port, "GET", "/metrics", None).map(|(_, v)| v),
                tabs.iter()
                    .map(|t| rt
                        .block_on(t.eval("JSON.stringify(window.chord.peer.metrics())"))
                        .ok())
                    .collect::<Vec<_>>()
            ));
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "a native peer did not join the ring of tabs:\n{}",
        failures.join("\n")
    );
    drop(tabs);
    rt.block_on(browser.close()).expect("close Chromium");
}
