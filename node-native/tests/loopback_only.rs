//! A host whose only interface is `lo` (a namespace with nothing else): three `chord-node`
//! processes with default WebRTC flags still form a ring, over loopback ICE candidates.

use std::time::Duration;

use node_native::live::{Proc, ring_converged, wait_until};

#[test]
fn loopback_only_host_forms_a_ring() {
    if !node_native::netns::enter_loopback_only_netns("loopback_only_host_forms_a_ring") {
        return;
    }
    let ports = [7631u16, 7632, 7633];
    let ids = [0x1000_0000u32, 0x5000_0000, 0x9000_0000];
    let (peers, ring) = node_native::live::start_peers(&ports, &ids);
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&ring)),
        "no ring of 3 on a loopback-only host: {}",
        peers.iter().map(Proc::log).collect::<String>()
    );
    assert!(
        node_native::live::put_value(ports[0], "on-lo", "yes"),
        "put on a loopback-only ring"
    );
    assert_eq!(
        node_native::live::get_value(ports[2], "on-lo").as_deref(),
        Some("yes")
    );
}
