//! One ring of Chromium tabs, Firefox tabs and a native peer, inside a private network
//! namespace (issue 14, "Firefox"): every peer's walk lists all of them in ring order; a value
//! put from each kind is read from each other kind; a value of the store's maximum size
//! (`Limits::DEFAULT_MAX_VALUE_BYTES`, 48 KiB, in frames of up to 64 KiB) put from each kind is
//! read back whole by every peer, so it crosses Chromium<->Firefox and browser<->native links;
//! every walk (each tab's `peer.walk()`, the native peer's `GET /walk`) names each peer's kind
//! (`native`, `chromium`, `firefox`) and agent, and each page draws every peer by that kind.
//!
//! Needs the page's wasm package (`cargo xtask wasm`), Chromium at /usr/bin/chromium, Firefox
//! ESR at /usr/bin/firefox-esr and geckodriver (`cargo xtask setup`), and the `signaling` and
//! `chord-node` binaries.

use std::path::PathBuf;
use std::time::Duration;

use e2e::browser::{Browser, LaunchOptions, Tab};
use e2e::webdriver::Firefox;
use e2e::{Proc, get_value, hex, json, put_value, ring_order, wait_until};
use serde_json::Value;
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7520;
const NATIVE: (u16, u32) = (7521, 0x1000_0000);
const CHROMIUM: [u32; 2] = [0x5000_0000, 0x9000_0000];
const FIREFOX: [(u16, u32); 2] = [(7531, 0x3000_0000), (7532, 0xd000_0000)];
/// The store's largest value (node-core `Limits::DEFAULT_MAX_VALUE_BYTES`).
const MAX_VALUE: usize = 48 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A browser peer of either kind.
enum Peer<'a> {
    Chromium { rt: &'a Runtime, tab: Tab, id: u32 },
    Firefox { browser: Firefox, id: u32 },
}

impl Peer<'_> {
    fn id(&self) -> u32 {
        match self {
            Self::Chromium { id, .. } | Self::Firefox { id, .. } => *id,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Chromium { .. } => "Chromium",
            Self::Firefox { .. } => "Firefox",
        }
    }

    fn try_eval(&self, js: &str) -> anyhow::Result<Value> {
        match self {
            Self::Chromium { rt, tab, .. } => rt.block_on(tab.eval(js)),
            Self::Firefox { browser, .. } => browser.eval(js),
        }
    }

    fn eval(&self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| {
            panic!(
                "{} tab {}: `{}` failed: {e:#}",
                self.kind(),
                hex(self.id()),
                short(js)
            )
        })
    }

    fn put(&self, key: &str, value: &str) {
        let v = self.eval(&format!(
            "window.chord.peer.put({}, {}, undefined)",
            Value::from(key),
            Value::from(value)
        ));
        assert_eq!(
            v["ok"],
            true,
            "put {key} from {} {}: {v}",
            self.kind(),
            hex(self.id())
        );
    }

    fn get(&self, key: &str) -> Option<String> {
        let v = self.eval(&format!("window.chord.peer.get({})", Value::from(key)));
        v["value"].as_str().map(str::to_string)
    }

    /// What this kind of peer reports as its agent's first word (`node_core::agent::Kind`).
    fn agent_kind(&self) -> &'static str {
        match self {
            Self::Chromium { .. } => "chromium",
            Self::Firefox { .. } => "firefox",
        }
    }

    /// `(id, kind, agent)` of every entry of this tab's walk.
    fn walk_kinds(&self) -> Vec<(String, String, String)> {
        let v = self.eval("window.chord.peer.walk(64)");
        entries(&v)
    }

    /// `id -> data-kind` of every peer the page draws, after a fresh walk.
    fn drawn_kinds(&self) -> Value {
        self.eval(
            "window.chord.refresh().then(() => Object.fromEntries(\
             [...document.querySelectorAll('#ring-svg g.peer')]\
             .map(g => [g.dataset.id, g.dataset.kind])))",
        )
    }

    fn walk(&self) -> Vec<String> {
        self.try_eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))")
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

/// `(id, kind, agent)` of every entry of a walk (JS `WalkEntry[]` or `GET /walk`).
fn entries(walk: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    walk.as_array()
        .unwrap_or_else(|| panic!("a walk is a list: {walk}"))
        .iter()
        .map(|e| (text(&e["id"]), text(&e["kind"]), text(&e["agent"])))
        .collect()
}

/// Whether `agent` is `<kind> <major version>` (`chromium 131`, `firefox 128`, `native 0.1.0`).
fn agent_names(agent: &str, kind: &str) -> bool {
    agent
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|version| version.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

fn short(js: &str) -> String {
    js.chars().take(120).collect()
}

fn native_successor(port: u16) -> Option<String> {
    let (_, v) = json(port, "GET", "/ring", None)?;
    (v["joined"] == true)
        .then(|| v["successors"][0].as_str().map(str::to_string))
        .flatten()
}

fn native_walk_ok(port: u16, id: u32, all: &[u32]) -> bool {
    native_successor(port).as_deref() == ring_order(all, id).get(1).map(String::as_str)
}

#[test]
fn chromium_firefox_and_native_peers_form_one_ring() {
    if !lab::netns::enter_private_netns("chromium_firefox_and_native_peers_form_one_ring") {
        return;
    }
    let _signaling = e2e::serve_page(SIGNALING);
    let _native = Proc::peer(NATIVE.0, NATIVE.1, Some(SIGNALING));
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
            root().join("target/e2e-chromium-mixed"),
        )))
        .expect("launch headless Chromium");
    let url = |id: u32| format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(id));
    let mut peers: Vec<Peer<'_>> = Vec::new();
    // Interleave the kinds, so each joins a ring that holds the other.
    for i in 0..2 {
        let id = CHROMIUM[i];
        let tab = rt.block_on(chromium.open_tab(&url(id))).expect("open tab");
        peers.push(Peer::Chromium { rt: &rt, tab, id });
        let (port, id) = FIREFOX[i];
        let browser = Firefox::launch(port).expect("launch headless Firefox");
        browser.open(&url(id)).expect("open the page in Firefox");
        peers.push(Peer::Firefox { browser, id });
        for peer in &peers[peers.len() - 2..] {
            let ready = peer.try_eval("window.chord.ready.then(p => p.id)");
            assert_eq!(
                ready.as_ref().ok().and_then(|v| v.as_str()),
                Some(hex(peer.id()).as_str()),
                "{} tab {} did not start: {ready:?}",
                peer.kind(),
                hex(peer.id())
            );
        }
    }

    let mut all: Vec<u32> = peers.iter().map(Peer::id).collect();
    all.push(NATIVE.1);
    let converged = |peers: &[Peer<'_>]| {
        peers.iter().all(|p| p.walk() == ring_order(&all, p.id()))
            && native_walk_ok(NATIVE.0, NATIVE.1, &all)
    };
    assert!(
        wait_until(Duration::from_secs(90), || converged(&peers)),
        "Chromium tabs, Firefox tabs and the native peer did not converge to one ring: walks {:?}",
        peers
            .iter()
            .map(|p| (p.kind(), hex(p.id()), p.walk()))
            .collect::<Vec<_>>()
    );

    // Every walk names each peer's kind, from what the peer says about itself: the tabs derive
    // theirs from navigator.userAgent, chord-node says `native <version>`.
    let expected_kind = |id: &str| -> &'static str {
        if id == hex(NATIVE.1) {
            return "native";
        }
        peers
            .iter()
            .find(|p| hex(p.id()) == id)
            .map_or("unknown", Peer::agent_kind)
    };
    let check_walk = |from: String, walk: Vec<(String, String, String)>| {
        assert_eq!(walk.len(), all.len(), "the walk from {from}: {walk:?}");
        for (id, kind, agent) in &walk {
            let want = expected_kind(id);
            assert!(
                kind == want && agent_names(agent, want),
                "the walk from {from} says {id} is {kind} ({agent:?}), not {want}: {walk:?}"
            );
        }
    };
    for peer in &peers {
        check_walk(
            format!("{} tab {}", peer.kind(), hex(peer.id())),
            peer.walk_kinds(),
        );
    }
    let native_walk = || {
        json(NATIVE.0, "GET", "/walk", None)
            .filter(|(status, _)| *status == 200)
            .map(|(_, walk)| entries(&walk))
            .unwrap_or_default()
    };
    // The native peer's successor is right already; its walk may still meet a tab that has not.
    wait_until(Duration::from_secs(30), || native_walk().len() == all.len());
    check_walk("the native peer".into(), native_walk());
    // And each page draws every peer by that kind.
    for peer in &peers {
        let drawn = peer.drawn_kinds();
        for id in &all {
            let id = hex(*id);
            assert_eq!(
                drawn[&id].as_str(),
                Some(expected_kind(&id)),
                "{} tab {} draws {id} as {}: {drawn}",
                peer.kind(),
                hex(peer.id()),
                drawn[&id]
            );
        }
    }

    // A value put from each kind is read from each other kind.
    let chromium_tab = &peers[0];
    let firefox_tab = &peers[1];
    chromium_tab.put("from-chromium", "put in Chromium");
    firefox_tab.put("from-firefox", "put in Firefox");
    assert!(put_value(NATIVE.0, "from-native", "put by a process"));
    for reader in [chromium_tab, firefox_tab] {
        for (key, value) in [
            ("from-chromium", "put in Chromium"),
            ("from-firefox", "put in Firefox"),
            ("from-native", "put by a process"),
        ] {
            assert_eq!(
                reader.get(key).as_deref(),
                Some(value),
                "{key} read in {}",
                reader.kind()
            );
        }
    }
    assert_eq!(
        get_value(NATIVE.0, "from-chromium").as_deref(),
        Some("put in Chromium")
    );
    assert_eq!(
        get_value(NATIVE.0, "from-firefox").as_deref(),
        Some("put in Firefox")
    );

    // Values of the largest size, put from each kind, read back whole by every peer: each
    // read's answer comes from the key's leader, so the values cross every pair of kinds.
    let big = |tag: char| -> String { std::iter::repeat_n(tag, MAX_VALUE).collect() };
    chromium_tab.put("big-chromium", &big('c'));
    firefox_tab.put("big-firefox", &big('f'));
    assert!(put_value(NATIVE.0, "big-native", &big('n')));
    for (key, tag) in [
        ("big-chromium", 'c'),
        ("big-firefox", 'f'),
        ("big-native", 'n'),
    ] {
        for reader in &peers {
            let got = reader.get(key);
            assert!(
                got.as_deref() == Some(big(tag).as_str()),
                "{key} read in {} {}: {:?} bytes",
                reader.kind(),
                hex(reader.id()),
                got.map(|v| v.len())
            );
        }
        let got = get_value(NATIVE.0, key);
        assert_eq!(got.map(|v| v.len()), Some(MAX_VALUE), "{key} read natively");
    }
    // No frame was dropped or refused on the way.
    for peer in &peers {
        let rtc = peer.eval("window.chord.peer.metrics().driver.rtc");
        assert_eq!(
            rtc["frames_dropped"],
            0,
            "{} {}: {rtc}",
            peer.kind(),
            hex(peer.id())
        );
    }

    for peer in peers {
        if let Peer::Firefox { browser, .. } = peer {
            browser.close();
        }
    }
    let _ = rt.block_on(chromium.close());
}
