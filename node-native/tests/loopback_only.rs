//! A host whose only interface is `lo` (a namespace with nothing else): three `chord-node`
//! processes with default WebRTC flags still form a ring, over loopback ICE candidates.
//!
//! Between native peers on one Linux host a wildcard candidate (`0.0.0.0`) happens to work too
//! (the kernel sends to 0.0.0.0 locally), so a ring alone does not show the fallback; a browser
//! on the same host cannot dial such a candidate. The test therefore also checks what the peers
//! bind: loopback addresses, never the wildcard (`rtc.rs`, `bind_addrs`).

use std::time::Duration;

use lab::live::{Proc, ring_converged, wait_until};

#[test]
fn loopback_only_host_forms_a_ring() {
    if !lab::netns::enter_loopback_only_netns("loopback_only_host_forms_a_ring") {
        return;
    }
    let ports = [7631u16, 7632, 7633];
    let ids = [0x1000_0000u32, 0x5000_0000, 0x9000_0000];
    // Default WebRTC flags; `--log info` only to see what the peers bind.
    let mut peers = Vec::new();
    for (i, (port, id)) in ports.iter().zip(ids).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let bootstrap = (i > 0).then_some(ports[0]);
        peers.push(Proc::peer_with(*port, id, bootstrap, &["--log", "info"]));
    }
    let ring: Vec<(u16, u32)> = ports.iter().copied().zip(ids).collect();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&ring)),
        "no ring of 3 on a loopback-only host: {}",
        peers.iter().map(Proc::log).collect::<String>()
    );
    assert!(
        lab::live::put_value(ports[0], "on-lo", "yes"),
        "put on a loopback-only ring"
    );
    assert_eq!(
        lab::live::get_value(ports[2], "on-lo").as_deref(),
        Some("yes")
    );
    for peer in &peers {
        let log = peer.log();
        let binds: Vec<&str> = log.lines().filter(|l| l.contains("WebRTC binds")).collect();
        assert!(
            !binds.is_empty()
                && binds
                    .iter()
                    .all(|l| l.contains("127.0.0.1") && !l.contains("0.0.0.0")),
            "a peer on a loopback-only host must bind loopback, not the wildcard: {binds:?}\n{log}"
        );
    }
}
