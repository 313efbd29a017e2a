//! Browser-ring benchmark: N headless-Chromium tabs (default 8) plus one native peer, through
//! the signaling server serving the page. Prints how long each page took to become a ring
//! member, how long after the last tab opened the ring converged (every tab's walk lists the
//! whole ring in order, every successor right), tab-to-tab get latency percentiles, and watch
//! latency: every other tab watches a key (`peer.watch`) that the last tab opened (the one in
//! front: background tabs' timers are throttled) puts `WATCH_PUTS` times, one after the other;
//! the delay from each put's acknowledgement in the writer to the callback in each other tab, on
//! the browser's shared clock (`performance.timeOrigin + performance.now()`).
//!
//! Run it inside a private network namespace, release build (or `cargo xtask browser-bench`):
//! `cargo build --release -p signaling -p node-native --bins && scripts/in-netns.sh \
//!  cargo run --release -p e2e --example browser_bench -- [TABS] [GETS]`

use std::time::{Duration, Instant};

use e2e::browser::{Browser, LaunchOptions, Tab};
use e2e::{Proc, hex, http, json, ring_order, wait_until};
use serde_json::Value;

const SIGNALING: u16 = 7600;
const NATIVE: (u16, u32) = (7601, 0x0800_0000);

async fn walk(tab: &Tab) -> Vec<String> {
    tab.eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))")
        .await
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
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
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        let ids: Vec<u32> = (0..tabs)
            .map(|i| 0x1000_0000u32.wrapping_add((i as u32).wrapping_mul(0xf000_0000 / tabs as u32)))
            .collect();
        let mut pages = Vec::new();
        println!("tab       ready_ms (navigation start -> ring member)");
        for id in &ids {
            let tab = browser
                .open_tab(&format!("http://127.0.0.1:{SIGNALING}/?id={}", hex(*id)))
                .await?;
            let ready = tab
                .eval("window.chord.ready.then(() => performance.now())")
                .await?;
            println!("{}  {:>8.0}", hex(*id), ready.as_f64().unwrap_or(f64::NAN));
            pages.push((tab, *id));
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
            Some(t) => println!(
                "ring of {} tabs + 1 native peer converged {:.2} s after the last tab was ready",
                tabs,
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

        // Watch latency: the front tab puts, every other tab's callback records when each
        // version came.
        const WATCH_PUTS: usize = 100;
        let (writer, watchers) = pages.split_last().expect("tabs");
        for (tab, _) in watchers {
            tab.eval(
                "window.__watched = []; window.chord.peer.watch('watch-bench', e => \
                 window.__watched.push([e.ts, performance.timeOrigin + performance.now()])); true",
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
