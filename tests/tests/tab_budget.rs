//! The 500-connection cap (issue 14 item 3), in a real headless Chromium inside a private
//! network namespace: a tab counts the peer connections it creates, says when its budget runs
//! low, and leaves the ring cleanly before the cap instead of failing silently.
//!
//! `a_tab_out_of_connections_says_so_and_leaves_cleanly` opens the page with a budget of
//! [`LIMIT`] (`?connections=`, the `connectionLimit` start option; node-core's `peer::budget`
//! warns at 80% and leaves at 98%) in a ring of native peers, then replaces native peers one by
//! one (each newcomer links to the tab) until the budget runs out. Checked: the page showed
//! both steps in order (banner, `window.chord.budget`) and says `left`; the natives' ring closed
//! over the tab sooner than failure detection could (a graceful leave, as in
//! tests/tests/frozen_tab.rs); every write acknowledged before, the tab's included, reads back
//! from the natives.
//!
//! `measure_tab_connections_under_churn` (ignored, a few minutes) measures connections created
//! per hour by a tab with the default budget while native peers around it crash and are
//! replaced: `TAB_CHURN_SECONDS` (default 300) of churn, one crash and one fresh join every
//! `TAB_CHURN_EVERY_MS` (default 10000), among `TAB_CHURN_NATIVES` (default 6) natives. Run it
//! with `cargo test -p e2e --test tab_budget -- --ignored --nocapture`.
//!
//! Needs the page's wasm package (`cargo xtask wasm`), Chromium at /usr/bin/chromium and the
//! `signaling`/`chord-node` binaries, like tests/tests/browser_ring.rs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::browser::{Browser, LaunchOptions};
use e2e::page::Page;
use e2e::{Proc, get_value, hex, json, put_value, wait_until};
use serde_json::Value;
use tokio::runtime::Runtime;

const SIGNALING: u16 = 7600;
/// Ports of the native peers, first to last (each churn step starts the next one).
const FIRST_NATIVE: u16 = 7601;
const TAB: u32 = 0x8000_0000;
/// The tab's budget in the enforcement test: warns at 12, leaves at 14.
const LIMIT: u64 = 15;
/// node-core's `Config::default().heartbeat_timeout_ms`.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(6_000);

struct Ring {
    _signaling: Proc,
    rt: Runtime,
    browser: Option<Browser>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(browser) = self.browser.take() {
            let _ = self.rt.block_on(browser.close());
        }
    }
}

fn start_ring(name: &str) -> Ring {
    let signaling = e2e::serve_page(SIGNALING);
    let rt = Runtime::new().expect("tokio runtime");
    let browser = rt
        .block_on(Browser::launch(LaunchOptions::new(
            e2e::repo_root().join("target/e2e-chromium").join(name),
        )))
        .expect("launch headless Chromium");
    Ring {
        _signaling: signaling,
        rt,
        browser: Some(browser),
    }
}

/// A native peer on `port` with ring id `id`, introduced by the page's introducer; waits
/// until it is joined.
fn native(port: u16, id: u32) -> Proc {
    let peer = Proc::peer(port, id, Some(SIGNALING));
    assert!(
        wait_until(Duration::from_secs(30), || json(port, "GET", "/ring", None)
            .is_some_and(|(_, v)| v["joined"] == true)),
        "native peer {} did not join",
        hex(id)
    );
    peer
}

fn open_page<'a>(ring: &'a Ring, extra: &str) -> Page<'a> {
    let url = format!("http://127.0.0.1:{SIGNALING}/?id={}{extra}", hex(TAB));
    let browser = ring.browser.as_ref().expect("browser");
    let tab = ring.rt.block_on(browser.open_tab(&url)).expect("open tab");
    let page = Page {
        rt: &ring.rt,
        tab,
        id: TAB,
    };
    let ready = page.try_eval("window.chord.ready.then(p => p.id)");
    assert_eq!(
        ready.as_ref().ok().and_then(|v| v.as_str()),
        Some(hex(TAB).as_str()),
        "the tab did not start: {ready:?}\nconsole:\n{}",
        page.tab.console_log().join("\n")
    );
    page
}

/// Peer connections the tab created so far (`driver.connections_created`).
fn created(page: &Page<'_>) -> Option<u64> {
    page.try_eval("window.chord.peer.metrics().driver.connections_created")
        .ok()
        .and_then(|v| v.as_u64())
}

/// Whether the native peer on `port` names the tab as a neighbour.
fn native_sees_tab(port: u16) -> bool {
    let Some((_, v)) = json(port, "GET", "/ring", None) else {
        return false;
    };
    let tab = hex(TAB);
    v["predecessor"].as_str() == Some(tab.as_str())
        || v["successors"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(tab.as_str())))
}

/// A fresh native id that is not `TAB` and not in use, spread around the ring.
fn fresh_id(step: u32) -> u32 {
    0x1357_9bdf_u32.wrapping_mul(step + 1) | 1
}

#[test]
fn a_tab_out_of_connections_says_so_and_leaves_cleanly() {
    if !lab::netns::enter_private_netns("a_tab_out_of_connections_says_so_and_leaves_cleanly") {
        return;
    }
    let ring = start_ring("tab-budget");
    // Three natives that stay: the tab's two neighbours (its goodbye goes to them) and one
    // more. The churned natives join in 0x03000000..0x60000000, never next to the tab: a peer
    // that joins next to a leaving one learns of it before its goodbye and waits out a connect
    // timeout, whatever the reason for the leave.
    let mut natives: Vec<(u16, u32, Proc)> = Vec::new();
    for (i, id) in [0x2000_0000u32, 0x7000_0000, 0x9000_0000]
        .into_iter()
        .enumerate()
    {
        let port = FIRST_NATIVE + i as u16;
        natives.push((port, id, native(port, id)));
    }
    // `%26`: Chromium's `/json/new?<url>` ends the URL at a plain `&`.
    let page = open_page(&ring, &format!("%26connections={LIMIT}"));
    assert!(
        wait_until(Duration::from_secs(60), || natives
            .iter()
            .all(|(port, _, _)| native_sees_tab(*port))),
        "the natives never adopted the tab"
    );

    // Writes through the tab and the natives, some held by the tab.
    let mut acked = Vec::new();
    for k in 0..30 {
        let (key, value) = (format!("budget-{k}"), format!("v{k}"));
        let ok = if k % 2 == 0 {
            page.eval(&format!(
                "window.chord.peer.put({}, {}, undefined).then(r => r.ok, () => false)",
                Value::from(key.as_str()),
                Value::from(value.as_str())
            )) == true
        } else {
            put_value(natives[0].0, &key, &value)
        };
        assert!(ok, "put {key}");
        acked.push((key, value));
    }
    let held: u64 = page
        .eval("window.chord.peer.localKeys().filter(e => !e.deleted).length")
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "before churn: the tab created {:?} connections and holds {held} keys",
        created(&page)
    );

    // Replace a churned native at a time: every newcomer links to the tab (a ring this small
    // is in every successor list). Stop once the tab says it is leaving.
    let exhausted = |p: &Page<'_>| {
        p.try_eval("window.chord.budget.some(s => s.state === 'exhausted')")
            .is_ok_and(|v| v == true)
    };
    let mut step = 0u32;
    let mut next_port = FIRST_NATIVE + 3;
    loop {
        if exhausted(&page) {
            break;
        }
        assert!(
            step < 18,
            "{step} churn steps and the tab's budget of {LIMIT} never ran out: created {:?}, steps {}",
            created(&page),
            page.eval("JSON.stringify(window.chord.budget)")
        );
        let id = 0x0300_0000 + step * 0x0500_0000;
        let port = next_port;
        next_port += 1;
        // Counted before the newcomer starts: the tab may link to it before it says it joined.
        let before = created(&page).unwrap_or(0);
        natives.push((port, id, native(port, id)));
        // One churned native at a time: the previous one leaves (SIGTERM, a graceful leave
        // that hands its keys on, so the writes stay whatever the pace).
        if natives.len() > 4 {
            let (_, _, mut old) = natives.remove(3);
            old.terminate();
            old.wait_exit(Duration::from_secs(15));
        }
        let waited = Instant::now();
        wait_until(Duration::from_secs(15), || {
            exhausted(&page) || created(&page).is_some_and(|c| c > before)
        });
        eprintln!(
            "churn step {step}: native {} joined; the tab created {:?} connections {:?} later",
            hex(id),
            created(&page),
            waited.elapsed()
        );
        step += 1;
    }
    let steps: Value = serde_json::from_str(
        page.eval("JSON.stringify(window.chord.budget)")
            .as_str()
            .unwrap(),
    )
    .expect("budget steps");
    eprintln!("after {step} churn steps the tab's budget steps were {steps}");
    let states: Vec<&str> = steps
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(states, ["low", "exhausted"], "both steps, in order, once");
    assert_eq!(
        page.eval("document.getElementById('banner').dataset.code"),
        "connection_budget_exhausted",
        "the banner says the tab left"
    );
    assert!(
        wait_until(Duration::from_secs(5), || page.eval("window.chord.state")
            == "left"),
        "the page's state is {}, not left",
        page.eval("window.chord.state")
    );

    // It left cleanly: the natives closed the ring over it sooner than failure detection
    // could have, and every acknowledged write, the tab's included, reads back from them.
    let ports: Vec<u16> = natives.iter().map(|(p, _, _)| *p).collect();
    assert!(
        wait_until(Duration::from_secs(30), || ports
            .iter()
            .all(|p| !native_sees_tab(*p))),
        "the natives still name the tab"
    );
    // The page stamps each step with its `Date.now()`; same machine, same wall clock.
    let left_at_ms = steps[1]["at"].as_u64().expect("the step's time");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let closed_in = Duration::from_millis(now_ms.saturating_sub(left_at_ms));
    eprintln!("the natives' ring closed over the tab {closed_in:?} after it said it was leaving");
    assert!(
        closed_in < HEARTBEAT_TIMEOUT,
        "the ring took {closed_in:?} to close over the tab: it did not leave gracefully \
         (failure detection alone needs {HEARTBEAT_TIMEOUT:?})"
    );
    for (key, value) in &acked {
        assert!(
            wait_until(Duration::from_secs(20), || get_value(natives[0].0, key)
                .as_deref()
                == Some(value.as_str())),
            "{key}: {:?} from a native after the tab left, want {value}\n{}",
            get_value(natives[0].0, key),
            natives_state(&ports)
        );
    }
}

/// Each native's view of the ring and its fence counters, for a failure message.
fn natives_state(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|port| {
            let ring = json(*port, "GET", "/ring", None).map(|(_, v)| v);
            let kv = json(*port, "GET", "/metrics", None).map(|(_, v)| v["raw"]["kv"].clone());
            let field = |v: &Option<Value>, name: &str| {
                v.as_ref().map_or(Value::Null, |v| v[name].clone())
            };
            format!(
                "native :{port}: id {} predecessor {} successors {} fences {} fenced requests {} expired {}",
                field(&ring, "id"),
                field(&ring, "predecessor"),
                field(&ring, "successors"),
                field(&kv, "fences"),
                field(&kv, "fenced_requests"),
                field(&kv, "fences_expired"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a measurement of several minutes; run with --ignored --nocapture"]
fn measure_tab_connections_under_churn() {
    if !lab::netns::enter_private_netns("measure_tab_connections_under_churn") {
        return;
    }
    let seconds = env_or("TAB_CHURN_SECONDS", 300);
    let every = Duration::from_millis(env_or("TAB_CHURN_EVERY_MS", 10_000));
    let count = env_or("TAB_CHURN_NATIVES", 6) as u32;
    let ring = start_ring("tab-budget-measure");
    let mut natives: Vec<(u16, u32, Proc)> = Vec::new();
    let mut next_port = FIRST_NATIVE;
    let mut step = 0u32;
    for _ in 0..count {
        let id = fresh_id(step);
        step += 1;
        natives.push((next_port, id, native(next_port, id)));
        next_port += 1;
    }
    let page = open_page(&ring, "");
    std::thread::sleep(Duration::from_secs(20));
    let start = created(&page).expect("connections created");
    let began = Instant::now();
    let mut events = 0;
    let mut victim = 0usize;
    while began.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(every);
        // A crash (SIGKILL) of a pseudo-random native, and a fresh one joins.
        victim = (victim * 7 + 3) % natives.len();
        let (_, _, mut old) = natives.remove(victim);
        old.kill();
        let id = fresh_id(step);
        step += 1;
        natives.push((next_port, id, Proc::peer(next_port, id, Some(SIGNALING))));
        next_port += 1;
        events += 2;
        assert!(
            page.eval("window.chord.state") == "ready",
            "the tab is no longer a ring member"
        );
    }
    let elapsed = began.elapsed();
    let end = created(&page).expect("connections created");
    let per_hour = (end - start) as f64 * 3600.0 / elapsed.as_secs_f64();
    let links = page.eval("window.chord.peer.ring().links.length");
    eprintln!(
        "tab among {count} natives, {events} churn events (a crash and a join every {every:?}) \
         in {elapsed:?}: the tab created {} connections ({start} before, {end} after): \
         {per_hour:.0} per hour; {links} links open now",
        end - start
    );
}
