//! Browser-ring benchmark: N headless-Chromium tabs (default 8) plus one native peer, through
//! the signaling server serving the page. Prints how long each page took to become a ring
//! member, how long after the last tab opened the ring converged (every tab's walk lists the
//! whole ring in order, every successor right), tab-to-tab get latency percentiles, and watch
//! latency: every other tab watches a key (`peer.watch`) that the last tab opened (the one in
//! front: background tabs' timers are throttled) puts `WATCH_PUTS` times, one after the other;
//! the delay from each put's acknowledgement in the writer to the callback in each other tab, on
//! the browser's shared clock (`performance.timeOrigin + performance.now()`).
//!
//!
//! With `--firefox N` (issue 14, "Performance") the ring is mixed: N headless Firefox tabs
//! (each its own Firefox through geckodriver, `e2e::webdriver`) join beside the Chromium tabs,
//! the kinds interleaved around the ring and in joining order. The bench then also prints time
//! to ready per kind and get latency percentiles per (writer kind, reader kind) pair: one tab of
//! each kind and the native peer each put `PAIR_KEYS` keys, every other peer reads them
//! (`PAIR_GETS` gets per writer); and the same gets grouped by (reader kind, kind of the key's
//! owner), since a get is answered by the key's owner, not by its writer. A tab's get latency
//! is measured in the page (`latency_ms`); the native peer's, by this process around
//! `POST /get` on loopback (so it includes one HTTP request).
//!
//! Run it inside a private network namespace, release build (or `cargo xtask browser-bench`):
//! `cargo build --release -p signaling -p node-native --bins && scripts/in-netns.sh \
//!  cargo run --release -p e2e --example browser_bench -- [TABS] [GETS] [--firefox N]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::browser::{Browser, LaunchOptions, Tab};
use e2e::webdriver::Firefox;
use e2e::{Proc, hex, http, json, ring_order, wait_until};
use serde_json::Value;

const SIGNALING: u16 = 7600;
const NATIVE: (u16, u32) = (7601, 0x0800_0000);
/// geckodriver of the i-th Firefox tab listens on `FIREFOX_DRIVER + i`.
const FIREFOX_DRIVER: u16 = 7620;
/// Keys each writer (one tab of each kind, the native peer) puts for the per-pair gets.
const PAIR_KEYS: usize = 20;
/// Gets each reader makes of each writer's keys.
const PAIR_GETS: usize = 40;

/// A browser tab of either kind.
enum Page {
    Chromium(Tab),
    Firefox(Firefox),
}

impl Page {
    fn kind(&self) -> &'static str {
        match self {
            Self::Chromium(_) => "chromium",
            Self::Firefox(_) => "firefox",
        }
    }

    async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        match self {
            Self::Chromium(tab) => tab.eval(js).await,
            // Blocking, on this thread; the Chromium connections' tasks run on the workers.
            Self::Firefox(browser) => browser.eval(js),
        }
    }

    async fn eval_with_timeout(&self, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        match self {
            Self::Chromium(tab) => tab.eval_with_timeout(js, timeout).await,
            // geckodriver's script timeout (120 s) bounds it.
            Self::Firefox(browser) => browser.eval(js),
        }
    }
}

async fn walk(tab: &Page) -> Vec<String> {
    tab.eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))")
        .await
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Whether the i-th of `total` browser tabs is a Firefox tab: `firefox` of them, spread evenly.
fn is_firefox(i: usize, total: usize, firefox: usize) -> bool {
    (i + 1) * firefox / total > i * firefox / total
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var_os("CHORD_KV_PRIVATE_NETNS_SHELL").is_some(),
        "run me inside scripts/in-netns.sh (WebRTC must stay off the real interfaces)"
    );
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut firefox = 0usize;
    if let Some(at) = args.iter().position(|a| a == "--firefox") {
        anyhow::ensure!(at + 1 < args.len(), "--firefox needs a count");
        firefox = args[at + 1].parse()?;
        args.drain(at..at + 2);
    }
    let tabs: usize = args.first().map_or(Ok(8), |a| a.parse())?;
    let gets: usize = args.get(1).map_or(Ok(200), |a| a.parse())?;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf();
    let web = root.join("web");
    anyhow::ensure!(
        web.join("pkg/node_wasm.js").exists(),
        "run `cargo xtask wasm` first"
    );
    let _signaling = Proc::signaling_with(SIGNALING, &["--static-dir", &web.to_string_lossy()]);
    anyhow::ensure!(wait_until(Duration::from_secs(10), || http(
        SIGNALING, "GET", "/healthz", None
    )
    .is_some()));
    let _native = Proc::peer(NATIVE.0, NATIVE.1, Some(SIGNALING));
    anyhow::ensure!(wait_until(Duration::from_secs(10), || json(
        NATIVE.0, "GET", "/ring", None
    )
    .is_some_and(|(_, v)| v["joined"] == true)));

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let browser = Browser::launch(LaunchOptions::new(root.join("target/bench-chromium"))).await?;
        let total = tabs + firefox;
        let ids: Vec<u32> = (0..total)
            .map(|i| 0x1000_0000u32.wrapping_add((i as u32).wrapping_mul(0xf000_0000 / total as u32)))
            .collect();
        let mut pages: Vec<(Page, u32)> = Vec::new();
        let mut ready_by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        println!("tab       ready_ms (navigation start -> ring member)");
        for (i, id) in ids.iter().enumerate() {
            let url = format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(*id));
            let page = if is_firefox(i, total, firefox) {
                let driver = FIREFOX_DRIVER + pages.iter().filter(|(p, _)| p.kind() == "firefox").count() as u16;
                let browser = Firefox::launch(driver)?;
                browser.open(&url)?;
                Page::Firefox(browser)
            } else {
                Page::Chromium(browser.open_tab(&url).await?)
            };
            let ready = page
                .eval("window.chord.ready.then(() => performance.now())")
                .await?
                .as_f64()
                .unwrap_or(f64::NAN);
            if firefox == 0 {
                println!("{}  {:>8.0}", hex(*id), ready);
            } else {
                println!("{}  {:>8.0}  {}", hex(*id), ready, page.kind());
            }
            ready_by_kind.entry(page.kind()).or_default().push(ready);
            pages.push((page, *id));
        }
        if firefox > 0 {
            for (kind, ready) in &mut ready_by_kind {
                ready.sort_by(f64::total_cmp);
                println!(
                    "{kind} tabs: {} ready, p50 {:.0} ms, max {:.0} ms",
                    ready.len(),
                    percentile(ready, 0.5),
                    ready.last().copied().unwrap_or(f64::NAN)
                );
            }
        }
        let last_opened = Instant::now();
        let mut all = ids.clone();
        all.push(NATIVE.1);
        let mut converged_after = None;
        while last_opened.elapsed() < Duration::from_secs(120) {
            let mut ok = true;
            for (tab, id) in &pages {
                if walk(tab).await != ring_order(&all, *id) {
                    ok = false;
                    break;
                }
            }
            if ok {
                converged_after = Some(last_opened.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match converged_after {
            Some(t) if firefox == 0 => println!(
                "ring of {} tabs + 1 native peer converged {:.2} s after the last tab was ready",
                tabs,
                t.as_secs_f64()
            ),
            Some(t) => println!(
                "ring of {tabs} Chromium tabs + {firefox} Firefox tabs + 1 native peer converged \
                 {:.2} s after the last tab was ready",
                t.as_secs_f64()
            ),
            None => println!("ring did NOT converge within 120 s"),
        }

        // Tab 0 writes, every other tab reads: latency measured in the page (performance.now).
        let keys = 50.min(gets);
        for k in 0..keys {
            pages[0]
                .0
                .eval(&format!("window.chord.peer.put('bench-{k}', 'v{k}')"))
                .await?;
        }
        let mut latencies = Vec::new();
        let mut hops = Vec::new();
        let mut wrong = 0;
        let per_tab = gets.div_ceil(pages.len().saturating_sub(1).max(1));
        for (tab, _) in pages.iter().skip(1) {
            let script = format!(
                "(async () => {{ const out = []; for (let i = 0; i < {per_tab}; i++) {{
                   const k = 'bench-' + (i % {keys});
                   const r = await window.chord.peer.get(k);
                   out.push([r.latency_ms, r.hops, r.value === 'v' + (i % {keys})]); }}
                   return out; }})()"
            );
            let rows: Vec<Value> = serde_json::from_value(tab.eval(&script).await?)?;
            for row in rows {
                latencies.push(row[0].as_f64().unwrap_or(f64::NAN));
                hops.push(row[1].as_f64().unwrap_or(f64::NAN));
                if row[2] != true {
                    wrong += 1;
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let mean_hops = hops.iter().sum::<f64>() / hops.len().max(1) as f64;
        println!(
            "tab-to-tab gets: {} (wrong {wrong}), latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; mean hops {mean_hops:.2}",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        );

        if firefox > 0 {
            pair_latency(&pages).await?;
        }

        // Watch latency: the front tab puts, every other tab's callback records when each
        // version came.
        const WATCH_PUTS: usize = 100;
        let (writer, watchers) = pages.split_last().expect("tabs");
        for (tab, _) in watchers {
            tab.eval(
                "(window.__watched = [], window.chord.peer.watch('watch-bench', e => \
                 window.__watched.push([e.ts, performance.timeOrigin + performance.now()])), true)",
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let script = format!(
            "(async () => {{ const out = []; for (let i = 0; i < {WATCH_PUTS}; i++) {{
               const start = performance.timeOrigin + performance.now();
               const r = await window.chord.peer.put('watch-bench', 'w' + i);
               out.push([r.ts, start, performance.timeOrigin + performance.now()]); }}
               return out; }})()"
        );
        let puts: Vec<(u64, f64, f64)> = serde_json::from_value(
            writer
                .0
                .eval_with_timeout(&script, Duration::from_secs(120))
                .await?,
        )?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut from_ack, mut from_start, mut missed, mut early) = (Vec::new(), Vec::new(), 0, 0);
        for (tab, _) in watchers {
            let seen: Vec<(u64, f64)> =
                serde_json::from_value(tab.eval("window.__watched").await?)?;
            for (ts, start, acked) in &puts {
                match seen.iter().find(|(t, _)| t == ts) {
                    Some((_, at)) => {
                        from_ack.push(at - acked);
                        from_start.push(at - start);
                        early += usize::from(at < acked);
                    }
                    None => missed += 1,
                }
            }
        }
        from_ack.sort_by(f64::total_cmp);
        from_start.sort_by(f64::total_cmp);
        println!(
            "watch: {} puts in one tab x {} watching tabs, {} callbacks ({missed} versions not seen, \
             superseded or lost; {early} callbacks before the put's acknowledgement): put \
             acknowledgement -> callback p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; put start -> \
             callback p50 {:.2} ms, p99 {:.2} ms",
            puts.len(),
            watchers.len(),
            from_ack.len(),
            percentile(&from_ack, 0.5),
            percentile(&from_ack, 0.99),
            from_ack.last().copied().unwrap_or(f64::NAN),
            percentile(&from_start, 0.5),
            percentile(&from_start, 0.99),
        );
        drop(pages);
        browser.close().await?;
        Ok::<_, anyhow::Error>(())
    })
}

/// Get latency per (writer kind, reader kind) and per (reader kind, owner kind): the first tab
/// of each kind and the native peer each put `PAIR_KEYS` keys; every other peer gets each
/// writer's keys `PAIR_GETS` times.
async fn pair_latency(pages: &[(Page, u32)]) -> anyhow::Result<()> {
    let mut writers: Vec<(&'static str, Option<usize>)> = Vec::new();
    for kind in ["chromium", "firefox"] {
        if let Some(i) = pages.iter().position(|(p, _)| p.kind() == kind) {
            writers.push((kind, Some(i)));
        }
    }
    writers.push(("native", None));
    let key = |writer: &str, k: usize| format!("pair-{writer}-{k}");
    // Each key's owner, as one tab's routed lookup finds it.
    let kind_of = |id: &str| -> &'static str {
        if id == hex(NATIVE.1) {
            return "native";
        }
        pages
            .iter()
            .find(|(_, i)| hex(*i) == id)
            .map_or("unknown", |(p, _)| p.kind())
    };
    let mut owner: BTreeMap<String, &'static str> = BTreeMap::new();
    for (writer, at) in &writers {
        for k in 0..PAIR_KEYS {
            let key = key(writer, k);
            let value = format!("{key}-value");
            match at {
                Some(i) => {
                    let r = pages[*i]
                        .0
                        .eval(&format!(
                            "window.chord.peer.put({}, {})",
                            Value::from(key.as_str()),
                            Value::from(value.as_str())
                        ))
                        .await?;
                    anyhow::ensure!(r["ok"] == true, "put {key} from {writer}: {r}");
                }
                None => {
                    anyhow::ensure!(e2e::put_value(NATIVE.0, &key, &value), "put {key} natively")
                }
            }
            let found = pages[0]
                .0
                .eval(&format!(
                    "window.chord.peer.lookup({}).then(r => r.owner)",
                    Value::from(key.as_str())
                ))
                .await?;
            owner.insert(key, kind_of(found.as_str().unwrap_or_default()));
        }
    }
    // (writer kind, reader kind) -> latencies; (reader kind, owner kind) -> latencies.
    let mut by_writer: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut by_owner: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut wrong = 0;
    let mut record = |writer: &'static str, reader: &'static str, key: &str, ms: f64| {
        by_writer.entry((writer, reader)).or_default().push(ms);
        by_owner
            .entry((reader, owner.get(key).copied().unwrap_or("unknown")))
            .or_default()
            .push(ms);
    };
    for &(writer, at) in &writers {
        for (i, (page, _)) in pages.iter().enumerate() {
            if at == Some(i) {
                continue;
            }
            let script = format!(
                "(async () => {{ const out = []; for (let i = 0; i < {PAIR_GETS}; i++) {{
                   const k = 'pair-{writer}-' + (i % {PAIR_KEYS});
                   const r = await window.chord.peer.get(k);
                   out.push([k, r.latency_ms, r.value === k + '-value']); }}
                   return out; }})()"
            );
            let rows: Vec<(String, f64, bool)> = serde_json::from_value(
                page.eval_with_timeout(&script, Duration::from_secs(120))
                    .await?,
            )?;
            for (key, ms, right) in rows {
                wrong += usize::from(!right);
                record(writer, page.kind(), &key, ms);
            }
        }
        if at.is_some() {
            for i in 0..PAIR_GETS {
                let key = key(writer, i % PAIR_KEYS);
                let start = Instant::now();
                let got = e2e::get_value(NATIVE.0, &key);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                wrong += usize::from(got.as_deref() != Some(format!("{key}-value").as_str()));
                record(writer, "native", &key, ms);
            }
        }
    }
    println!(
        "get latency per pair ({PAIR_KEYS} keys per writer, {PAIR_GETS} gets per reader and \
         writer; wrong {wrong}; native reads timed around POST /get):"
    );
    let show = |title: &str, rows: &mut BTreeMap<(&str, &str), Vec<f64>>| {
        println!(
            "  {title:<22} {:>5} {:>9} {:>9} {:>9}",
            "gets", "p50 ms", "p99 ms", "max ms"
        );
        for ((a, b), v) in rows.iter_mut() {
            v.sort_by(f64::total_cmp);
            println!(
                "  {:<22} {:>5} {:>9.2} {:>9.2} {:>9.2}",
                format!("{a}->{b}"),
                v.len(),
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN)
            );
        }
    };
    show("writer->reader", &mut by_writer);
    show("reader->owner", &mut by_owner);
    Ok(())
}
