//! A peer that served alone hands what it acknowledged to the ring it then joins (issue 12: "a
//! peer alone serves as a ring of one and merges when others appear"; replication.rs, "Merging
//! a ring of one"). A ring of 3 to 8 peers holds keys of its own; a lone peer, cut off from it,
//! creates its own ring and acknowledges 30 other keys alone; the cut heals and the lone peer
//! joins the ring through one of its members. Every key acknowledged on either side must then
//! read back, through every peer, and the history must keep the store's promise.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, pick, seeds, wait_call};
use node_core::sim::history::{Ret, check};

const TEST: &str = "merge_handover";

#[test]
fn writes_acknowledged_alone_survive_the_merge() {
    for seed in seeds(13_000, 12) {
        let n = pick(seed, 7, 3, 8) as usize;
        let mut sim = converged_ring(seed, n, TEST);
        let members = sim.truth();
        let mut written = Vec::new();
        for k in 0..10 {
            let (key, value) = (format!("ring{k}"), format!("r{k}"));
            let put = sim.client_put(members[k % n], &key, &value).expect("alive");
            if matches!(wait_call(&mut sim, put), Ret::Stored { .. }) {
                written.push((key, value));
            }
        }

        // The lone peer: cut off from the ring, it serves alone.
        let lone = sim.fresh_id();
        // (Its join through a member, started by `add_node`, cannot open a link across the cut.)
        sim.add_node(lone);
        sim.partition(move |id| u8::from(id == lone));
        sim.with_node(lone, |node, now| node.create_ring(now));
        sim.run_for(1_000);
        let mut alone = 0;
        for k in 0..30 {
            let (key, value) = (format!("lone{k}"), format!("l{k}"));
            let put = sim.client_put(lone, &key, &value).expect("alive");
            if matches!(wait_call(&mut sim, put), Ret::Stored { .. }) {
                alone += 1;
                written.push((key, value));
            }
        }
        assert_seed(
            alone == 30,
            seed,
            TEST,
            format!("the lone peer acknowledged {alone} of 30 puts alone"),
        );

        // The cut heals; the lone peer joins the ring through a member.
        sim.heal();
        let via = members[pick(seed, 11, 0, n as u64 - 1) as usize];
        sim.with_node(lone, |node, now| node.join(via, now));
        let converged = sim.run_until_converged(120_000);
        assert_seed(converged, seed, TEST, "no single ring after the merge");
        sim.run_for(10_000);
        let handed = sim
            .node(lone)
            .map_or(0, |node| node.metrics().kv.handed_over);

        let mut wrong = Vec::new();
        for peer in sim.truth() {
            for (key, value) in &written {
                let get = sim.client_get(peer, key).expect("alive");
                let ret = wait_call(&mut sim, get);
                if !matches!(&ret, Ret::Found { value: v, .. } if v == value) {
                    wrong.push(format!("{key} through {peer}: {ret:?}"));
                }
            }
        }
        let report = check(sim.history());
        assert_seed(
            wrong.is_empty() && report.holds(),
            seed,
            TEST,
            format!(
                "{} reads wrong after the merge ({handed} keys handed over): {:?}; anomalies {:?}",
                wrong.len(),
                wrong.iter().take(8).collect::<Vec<_>>(),
                report.anomalies.iter().take(3).collect::<Vec<_>>()
            ),
        );
    }
}
