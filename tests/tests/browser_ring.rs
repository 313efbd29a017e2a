//! One ring of browser tabs and native peers, inside a private network namespace: the signaling
//! server serves the page, 4 headless-Chromium tabs (each a wasm peer) and 2 `chord-node`
//! processes form one ring over real WebRTC; writes cross between tabs and native peers both
//! ways; a closed tab loses no acknowledged key; with the introducer gone the tabs keep serving.
//! The page with the ring drawn is saved as `target/e2e-browser-ring.png`.
//!
//! Needs the page's wasm package (`cargo xtask wasm`; `cargo xtask test` builds it first),
//! Chromium at /usr/bin/chromium, and the release or debug `signaling`/`chord-node` binaries.

use std::time::Duration;

use e2e::browser::{Browser, LaunchOptions};
use e2e::page::{Page, native_successor, successor_of};
use e2e::{Proc, get_value, hex, put_value, ring_order, wait_until};
use serde_json::Value;
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7500;
const NATIVE: [(u16, u32); 2] = [(7501, 0x2000_0000), (7502, 0xa000_0000)];
const TABS: [u32; 4] = [0x4000_0000, 0x6000_0000, 0xc000_0000, 0xe000_0000];

/// What this test asks of a tab beyond `e2e::page::Page`.
trait TabOps {
    fn put(&self, key: &str, value: &str);
    fn get(&self, key: &str) -> Option<String>;
}

impl TabOps for Page<'_> {
    fn put(&self, key: &str, value: &str) {
        let v = self.eval(&format!(
            "window.chord.peer.put({}, {}, undefined)",
            Value::from(key),
            Value::from(value)
        ));
        assert_eq!(v["ok"], true, "put {key} from tab {}: {v}", hex(self.id));
    }

    fn get(&self, key: &str) -> Option<String> {
        let v = self.eval(&format!("window.chord.peer.get({})", Value::from(key)));
        v["value"].as_str().map(str::to_string)
    }
}

/// Every tab's walk lists the whole ring in order and every peer's successor is the true one.
fn converged(pages: &[Page<'_>], natives: &[(u16, u32)], ids: &[u32]) -> bool {
    pages.iter().all(|p| {
        p.successor().as_deref() == Some(successor_of(ids, p.id).as_str())
            && p.walk() == ring_order(ids, p.id)
    }) && natives.iter().all(|(port, id)| {
        native_successor(*port).as_deref() == Some(successor_of(ids, *id).as_str())
    })
}

#[test]
fn tabs_and_native_peers_form_one_ring() {
    if !lab::netns::enter_private_netns("tabs_and_native_peers_form_one_ring") {
        return;
    }
    let mut signaling = e2e::serve_page(SIGNALING);
    let natives: Vec<Proc> = NATIVE
        .iter()
        .map(|(port, id)| {
            let p = Proc::peer(*port, *id, Some(SIGNALING));
            std::thread::sleep(Duration::from_millis(300));
            p
        })
        .collect();
    let native_ids: Vec<u32> = NATIVE.iter().map(|(_, id)| *id).collect();
    assert!(
        wait_until(Duration::from_secs(30), || NATIVE.iter().all(
            |(port, id)| {
                native_successor(*port).as_deref() == Some(successor_of(&native_ids, *id).as_str())
            }
        )),
        "the two native peers did not form a ring"
    );

    let rt = Runtime::new().expect("tokio runtime");
    let profiles = e2e::repo_root().join("target/e2e-chromium");
    let browser = rt
        .block_on(Browser::launch(
            LaunchOptions::new(&profiles).arg("--window-size=1280,900"),
        ))
        .expect("launch headless Chromium");
    let mut pages: Vec<Page<'_>> = TABS
        .iter()
        .map(|id| {
            let url = format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(*id));
            let tab = rt.block_on(browser.open_tab(&url)).expect("open tab");
            let page = Page {
                rt: &rt,
                tab,
                id: *id,
            };
            let ready = page.try_eval("window.chord.ready.then(p => p.id)");
            assert_eq!(
                ready.as_ref().ok().and_then(|v| v.as_str()),
                Some(hex(*id).as_str()),
                "tab {} did not start: {ready:?}\nconsole:\n{}",
                hex(*id),
                page.tab.console_log().join("\n")
            );
            page
        })
        .collect();

    // One ring of 6: each tab's walk lists all 6 in ring order; every successor is right.
    let mut all: Vec<u32> = native_ids.clone();
    all.extend(TABS);
    assert!(
        wait_until(Duration::from_secs(60), || converged(&pages, &NATIVE, &all)),
        "tabs and native peers did not converge to one ring: walks {:?}",
        pages.iter().map(Page::walk).collect::<Vec<_>>()
    );

    // A put from tab 1 is read from a native peer and from tab 4; a put from a native peer is
    // read from a tab.
    pages[0].put("from-tab-1", "hello from a tab");
    assert_eq!(
        get_value(NATIVE[0].0, "from-tab-1").as_deref(),
        Some("hello from a tab")
    );
    assert_eq!(
        pages[3].get("from-tab-1").as_deref(),
        Some("hello from a tab")
    );
    assert!(put_value(
        NATIVE[1].0,
        "from-native",
        "hello from a process"
    ));
    assert_eq!(
        pages[1].get("from-native").as_deref(),
        Some("hello from a process")
    );

    // The page draws all 6 peers; keep a screenshot for people to look at.
    let drawn = pages[0].eval("window.chord.refresh()");
    assert_eq!(drawn, 6, "peers drawn on the page");
    pages[0].eval("document.querySelector('#kv-key').value = 'from-tab-1'; document.querySelector('#btn-get').click(); true");
    std::thread::sleep(Duration::from_millis(500));
    let shot = e2e::repo_root().join("target/e2e-browser-ring.png");
    rt.block_on(pages[0].tab.screenshot_png(&shot))
        .expect("screenshot");
    println!("screenshot: {}", shot.display());

    // Tab 2 reloads: the same peer (same id) comes back with its store from IndexedDB before
    // it joins, and serves it.
    for k in 0..30 {
        pages[0].put(&format!("pre-{k}"), "before the reload");
    }
    let held: Vec<String> = serde_json::from_value(
        pages[1].eval("window.chord.peer.localKeys().filter(e => !e.deleted).map(e => e.key)"),
    )
    .expect("key list");
    assert!(
        !held.is_empty(),
        "tab 2 holds no key to test the reload with"
    );
    rt.block_on(pages[1].tab.reload()).expect("reload tab 2");
    let ready = pages[1].try_eval("window.chord.ready.then(p => p.id)");
    assert_eq!(
        ready.as_ref().ok().and_then(|v| v.as_str()),
        Some(hex(pages[1].id).as_str()),
        "tab 2 after the reload: {ready:?}"
    );
    let restored = pages[1].eval("window.chord.peer.metrics().driver.storage.restored_entries");
    assert!(
        restored.as_u64().is_some_and(|n| n as usize >= held.len()),
        "restored {restored} entries, held {} before the reload",
        held.len()
    );
    let after: Vec<String> = serde_json::from_value(
        pages[1].eval("window.chord.peer.localKeys().filter(e => !e.deleted).map(e => e.key)"),
    )
    .expect("key list");
    for key in &held {
        assert!(after.contains(key), "{key} not on tab 2 after its reload");
    }
    assert!(
        wait_until(Duration::from_secs(60), || converged(&pages, &NATIVE, &all)),
        "the ring did not take the reloaded tab back"
    );
    for key in &held {
        assert!(
            pages[1].get(key).is_some(),
            "{key} not served after the reload"
        );
    }

    // Tab 3 writes 20 keys, then closes: every one stays readable, and the ring repairs.
    for k in 0..20 {
        pages[2].put(&format!("tab3-{k}"), &format!("v{k}"));
    }
    let closed = pages.remove(2);
    rt.block_on(closed.tab.close()).expect("close tab 3");
    let rest: Vec<u32> = all.iter().copied().filter(|i| *i != closed.id).collect();
    assert!(
        wait_until(Duration::from_secs(60), || converged(
            &pages, &NATIVE, &rest
        )),
        "the ring did not repair after tab {} closed",
        hex(closed.id)
    );
    for k in 0..20 {
        let key = format!("tab3-{k}");
        let want = format!("v{k}");
        assert_eq!(
            pages[k % 3].get(&key).as_deref(),
            Some(want.as_str()),
            "{key} from a tab"
        );
        assert_eq!(
            get_value(NATIVE[k % 2].0, &key).as_deref(),
            Some(want.as_str()),
            "{key} from a native peer"
        );
    }

    // The introducer stops: tabs keep answering puts and gets.
    signaling.kill();
    for k in 0..10 {
        let key = format!("late-{k}");
        pages[k % 3].put(&key, "after the introducer");
        assert_eq!(
            pages[(k + 1) % 3].get(&key).as_deref(),
            Some("after the introducer")
        );
        assert_eq!(
            get_value(NATIVE[k % 2].0, &key).as_deref(),
            Some("after the introducer")
        );
    }
    let errors: Vec<String> = pages
        .iter()
        .flat_map(|p| p.tab.console_log())
        .filter(|l| l.starts_with("[exception]"))
        .collect();
    assert!(
        errors.is_empty(),
        "uncaught exceptions in the pages: {errors:?}"
    );

    drop(pages);
    rt.block_on(browser.close()).expect("close Chromium");
    drop(natives);
}
