//! Ids proven by link certificates across both drivers and both browsers (issue 11, item 4): a
//! native peer with `--verify-ids`, two headless-Chromium tabs and a headless-Firefox tab with
//! `?verify=1` (`verifyIds`) form one ring through the signaling server, each checking every
//! other's offers and answers against the certificate fingerprint in them (node-core's
//! `peer::identity`); puts read back across native, Chromium and Firefox. Then a native peer
//! that claims an id by hand (`--id`, no certificate behind it) tries to join: its offers are
//! refused and counted (`driver.rtc.identity_refused`) and it never becomes a member. Last, a
//! tab is reloaded: it comes back with the same certificate and id, and the ring takes it back.
//!
//! Needs the page's wasm package (`cargo xtask wasm`), Chromium at /usr/bin/chromium, Firefox
//! ESR at /usr/bin/firefox-esr and geckodriver (`cargo xtask setup`), and the
//! `signaling`/`chord-node` binaries (`cargo build -p node-native --bin chord-node -p
//! signaling`).

use std::path::PathBuf;
use std::time::Duration;

use e2e::browser::{Browser, LaunchOptions, Tab};
use e2e::webdriver::Firefox;
use e2e::{Proc, json, wait_until};
use serde_json::Value;
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7800;
const NATIVE: u16 = 7801;
const IMPOSTOR: u16 = 7802;
const GECKODRIVER: u16 = 7810;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn ring(port: u16) -> Option<Value> {
    json(port, "GET", "/ring", None).map(|(_, v)| v)
}

fn identity_refused(port: u16) -> u64 {
    json(port, "GET", "/metrics", None)
        .and_then(|(_, v)| v.pointer("/driver/rtc/identity_refused")?.as_u64())
        .unwrap_or(0)
}

fn tab_eval(rt: &Runtime, tab: &Tab, expression: &str) -> Value {
    rt.block_on(tab.eval(expression)).unwrap_or(Value::Null)
}

fn tab_refused(rt: &Runtime, tab: &Tab) -> u64 {
    tab_eval(
        rt,
        tab,
        "window.chord.peer.metrics().driver.rtc.identity_refused",
    )
    .as_u64()
    .unwrap_or(0)
}

/// A page with `?verify=1`: its id is the one its certificate proves.
fn open_verifying_tab(rt: &Runtime, browser: &Browser) -> (Tab, u32) {
    let url = format!("http://127.0.0.1:{SIGNALING}/?verify=1");
    let tab = rt.block_on(browser.open_tab(&url)).expect("open tab");
    let ready = rt.block_on(tab.eval("window.chord.ready.then(p => p.id)"));
    let id = ready
        .as_ref()
        .ok()
        .and_then(|v| v.as_str())
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .unwrap_or_else(|| {
            panic!(
                "a verifying tab did not start: {ready:?}\nconsole:\n{}",
                tab.console_log().join("\n")
            )
        });
    (tab, id)
}

#[test]
fn verifying_tabs_and_a_verifying_native_peer_form_one_ring() {
    if !lab::netns::enter_private_netns("verifying_tabs_and_a_verifying_native_peer_form_one_ring")
    {
        return;
    }
    let _signaling = e2e::serve_page(SIGNALING);
    let args = |port: u16, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--in-memory",
            "--bootstrap",
            &format!("127.0.0.1:{SIGNALING}"),
            "--log",
            "info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let native = Proc::chord_node("verified-native", &args(NATIVE, &["--verify-ids"]), NATIVE);
    assert!(
        wait_until(Duration::from_secs(20), || ring(NATIVE)
            .is_some_and(|r| r["joined"] == true)),
        "the verifying native peer did not start a ring:\n{}",
        native.log()
    );
    let native_id = ring(NATIVE)
        .and_then(|r| u32::from_str_radix(r["id"].as_str()?, 16).ok())
        .expect("the native peer's id");

    let rt = Runtime::new().expect("tokio runtime");
    let profiles = root().join("target/e2e-chromium");
    let browser = rt
        .block_on(Browser::launch(LaunchOptions::new(&profiles)))
        .expect("launch headless Chromium");
    let (tab_a, a) = open_verifying_tab(&rt, &browser);
    let (tab_b, b) = open_verifying_tab(&rt, &browser);
    // A Firefox tab too: its certificate (Firefox's stack) is checked by Chromium's tabs and
    // the native peer, and theirs by it.
    let firefox = Firefox::launch(GECKODRIVER).expect("launch headless Firefox");
    firefox
        .open(&format!("http://127.0.0.1:{SIGNALING}/?verify=1"))
        .expect("open the page in Firefox");
    let f = firefox
        .eval("window.chord.ready.then(p => p.id)")
        .ok()
        .and_then(|v| u32::from_str_radix(v.as_str()?, 16).ok())
        .expect("the verifying Firefox tab did not start");
    let ff_eval = |js: &str| firefox.eval(js).unwrap_or(Value::Null);
    let ids = [native_id, a, b, f];
    let distinct: std::collections::BTreeSet<u32> = ids.into_iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:x?}");
    let successor_js = "window.chord.peer.ring().successors[0] ?? null";
    let tabs_agree = || {
        let true_successor = |id: u32| e2e::ring_order(&ids, id).get(1).cloned();
        [(&tab_a, a), (&tab_b, b)].iter().all(|(tab, id)| {
            tab_eval(&rt, tab, successor_js)
                .as_str()
                .map(str::to_string)
                == true_successor(*id)
        }) && ff_eval(successor_js).as_str().map(str::to_string) == true_successor(f)
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            e2e::joined_with_successor(NATIVE, native_id, &ids) && tabs_agree()
        }),
        "the verifying peers did not form a ring: native {:?}, tabs {:?}\nnative log:\n{}",
        ring(NATIVE),
        [&tab_a, &tab_b].map(|t| tab_eval(&rt, t, "JSON.stringify(window.chord.peer.ring())")),
        native.log()
    );

    // Both ways across the two drivers.
    assert!(
        e2e::put_value(NATIVE, "from-native", "n"),
        "put through the native peer"
    );
    let got = tab_eval(
        &rt,
        &tab_a,
        "window.chord.peer.get('from-native').then(r => r.value)",
    );
    assert_eq!(got.as_str(), Some("n"), "read through a tab");
    let put = tab_eval(
        &rt,
        &tab_b,
        "window.chord.peer.put('from-tab', 't').then(r => r.ok)",
    );
    assert_eq!(put, Value::Bool(true), "put through a tab");
    let got = json(NATIVE, "POST", "/get", Some(r#"{"key":"from-tab"}"#));
    assert!(
        got.as_ref()
            .is_some_and(|(s, v)| *s == 200 && v["value"] == "t"),
        "read through the native peer: {got:?}"
    );
    assert_eq!(identity_refused(NATIVE), 0, "nothing refused yet");
    for tab in [&tab_a, &tab_b] {
        assert_eq!(tab_refused(&rt, tab), 0, "nothing refused yet");
    }
    let ff_refused = || {
        ff_eval("window.chord.peer.metrics().driver.rtc.identity_refused")
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(ff_refused(), 0, "nothing refused yet");
    let put = ff_eval("window.chord.peer.put('from-firefox', 'f').then(r => r.ok)");
    assert_eq!(put, Value::Bool(true), "put through Firefox");
    let got = tab_eval(
        &rt,
        &tab_a,
        "window.chord.peer.get('from-firefox').then(r => r.value)",
    );
    assert_eq!(got.as_str(), Some("f"), "read through a Chromium tab");

    // A peer whose id is only claimed: every member it reaches refuses it.
    let claimed = 0x5555_5555u32;
    let impostor = Proc::chord_node(
        "verified-impostor",
        &args(IMPOSTOR, &["--id", &format!("{claimed:08x}")]),
        IMPOSTOR,
    );
    let refused = || {
        identity_refused(NATIVE)
            + tab_refused(&rt, &tab_a)
            + tab_refused(&rt, &tab_b)
            + ff_refused()
    };
    assert!(
        wait_until(Duration::from_secs(30), || refused() >= 2),
        "the impostor's offers were not refused: {} refused\nimpostor log:\n{}",
        refused(),
        impostor.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let impostor_ring = ring(IMPOSTOR);
    assert!(
        impostor_ring
            .as_ref()
            .is_none_or(|r| r["joined"] != true || r["links"].as_array().is_none_or(Vec::is_empty)),
        "the impostor joined or linked: {impostor_ring:?}"
    );
    let native_ring = ring(NATIVE).expect("native /ring");
    assert!(
        !native_ring.to_string().contains(&format!("{claimed:08x}")),
        "the native peer knows the impostor: {native_ring}"
    );
    assert!(
        e2e::joined_with_successor(NATIVE, native_id, &ids) && tabs_agree(),
        "the verifying ring is unchanged: {native_ring}"
    );
    drop(impostor);
    std::thread::sleep(Duration::from_secs(1));
    let refused_native = identity_refused(NATIVE);

    // A reload is the same peer: the page finds its id in sessionStorage and the certificate
    // that proves it in IndexedDB, and rejoins with both; the ring takes it back.
    rt.block_on(tab_a.reload()).expect("reload tab a");
    let again = tab_eval(&rt, &tab_a, "window.chord.ready.then(p => p.id)");
    assert_eq!(
        again.as_str(),
        Some(format!("{a:08x}").as_str()),
        "a reload keeps the certificate and so the id\nconsole:\n{}",
        tab_a.console_log().join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(60), || {
            e2e::joined_with_successor(NATIVE, native_id, &ids) && tabs_agree()
        }),
        "the reloaded tab did not rejoin: native {:?}",
        ring(NATIVE)
    );
    let got = tab_eval(
        &rt,
        &tab_a,
        "window.chord.peer.get('from-tab').then(r => r.value)",
    );
    assert_eq!(got.as_str(), Some("t"), "read through the reloaded tab");
    assert_eq!(
        identity_refused(NATIVE),
        refused_native,
        "the reloaded tab proves its id"
    );
    drop((tab_a, tab_b));
    firefox.close();
    rt.block_on(browser.close()).expect("close Chromium");
}
