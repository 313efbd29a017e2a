//! A newcomer reads every key right after the ring has taken it in, while the peer it replaces
//! has just been killed (issue 12, the native-only twin of `native_joins_tabs.rs`): 3 native
//! peers hold 60 keys written through a fourth; 6 times the fourth is killed with -9 and a new
//! peer (a new id) joins; once every peer's successor is right, a get of every key through the
//! newcomer must return the value written. Before successor lists forgot peers whose links had
//! failed, a dead peer kept circulating in the lists of this small ring (each peer adopts its
//! successor's list, which wraps around the whole ring): replica sets with a dead member never
//! settled and requests for its range looped between two peers, so some gets timed out.

use std::time::Duration;

use e2e::{Proc, hex, json, put_value, wait_until};

const HOLDERS: [(u16, u32); 3] = [
    (7801, 0x3000_0000),
    (7802, 0x8000_0000),
    (7803, 0xd000_0000),
];

#[test]
fn a_newcomer_reads_every_key_after_a_kill() {
    if !lab::netns::enter_private_netns("a_newcomer_reads_every_key_after_a_kill") {
        return;
    }
    let _holders: Vec<Proc> = HOLDERS
        .iter()
        .enumerate()
        .map(|(i, (port, id))| {
            let p = Proc::peer(*port, *id, (i > 0).then_some(HOLDERS[0].0));
            std::thread::sleep(Duration::from_millis(500));
            p
        })
        .collect();
    let holder_ids: Vec<u32> = HOLDERS.iter().map(|h| h.1).collect();
    let mut port = 7810u16;
    let mut id = 0x1123_4567u32;
    let mut newcomer = Proc::peer(port, id, Some(HOLDERS[0].0));
    let mut ids = holder_ids.clone();
    ids.push(id);
    assert!(
        wait_until(Duration::from_secs(30), || e2e::joined_with_successor(
            port, id, &ids
        )),
        "the first ring of 4 did not form"
    );
    for k in 0..60 {
        assert!(
            put_value(port, &format!("k{k}"), &format!("v{k}")),
            "put k{k}"
        );
    }
    for round in 1..=6u32 {
        newcomer.kill();
        port += 1;
        // Round 3's newcomer (ebc9b292) comes right after a killed peer whose range another
        // peer takes over: the case that failed.
        id = 0x1000_0000u32
            .wrapping_add(round.wrapping_mul(0x9e37_79b9))
            .wrapping_add(0x0123_4567);
        newcomer = Proc::peer(port, id, Some(HOLDERS[0].0));
        let mut ids = holder_ids.clone();
        ids.push(id);
        assert!(
            wait_until(Duration::from_secs(60), || e2e::joined_with_successor(
                port, id, &ids
            ) && HOLDERS
                .iter()
                .all(|(p, h)| e2e::joined_with_successor(*p, *h, &ids))),
            "round {round}: newcomer {} not taken in within 60 s",
            hex(id)
        );
        let wrong: Vec<String> = (0..60)
            .filter_map(|k| {
                let body = format!(r#"{{"key":"k{k}"}}"#);
                let answer = json(port, "POST", "/get", Some(&body));
                let ok = answer.as_ref().is_some_and(|(s, v)| {
                    *s == 200 && v["value"].as_str() == Some(format!("v{k}").as_str())
                });
                (!ok).then(|| format!("k{k}: {answer:?}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "round {round}: newcomer {} read {} keys wrong: {wrong:?}",
            hex(id),
            wrong.len()
        );
    }
}
