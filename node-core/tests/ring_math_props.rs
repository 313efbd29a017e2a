//! Property tests of the pure parts: interval math, successor search, closest preceding peer,
//! and finger selection against a brute-force truth.

use node_core::Id;
use node_core::id::{ID_BITS, closest_preceding, successor_in};
use node_core::ring::RingState;
use proptest::prelude::*;

fn brute_successor(ids: &[Id], key: Id) -> Id {
    *ids.iter().min_by_key(|id| key.distance_to(**id)).unwrap()
}

proptest! {
    #[test]
    fn half_open_intervals_partition_the_ring(x: u32, a: u32, b: u32) {
        let (x, a, b) = (Id(x), Id(a), Id(b));
        prop_assume!(a != b);
        // Every point lies in exactly one of (a, b] and (b, a].
        prop_assert!(x.in_half_open(a, b) ^ x.in_half_open(b, a));
        prop_assert_eq!(x.in_open(a, b), x.in_half_open(a, b) && x != b);
        prop_assert_eq!(x.in_closed(a, b), x == a || x.in_half_open(a, b));
    }

    #[test]
    fn whole_ring_when_ends_meet(x: u32, a: u32) {
        prop_assert!(Id(x).in_half_open(Id(a), Id(a)));
        prop_assert_eq!(Id(x).in_open(Id(a), Id(a)), x != a);
    }

    #[test]
    fn successor_search_matches_brute_force(mut ids in prop::collection::vec(any::<u32>(), 1..60), key: u32) {
        ids.sort_unstable();
        ids.dedup();
        let ids: Vec<Id> = ids.into_iter().map(Id).collect();
        prop_assert_eq!(successor_in(&ids, Id(key)), Some(brute_successor(&ids, Id(key))));
    }

    #[test]
    fn closest_preceding_is_closest(me: u32, target: u32, cands in prop::collection::vec(any::<u32>(), 0..40)) {
        let (me, target) = (Id(me), Id(target));
        let cands: Vec<Id> = cands.into_iter().map(Id).collect();
        match closest_preceding(me, target, cands.iter().copied()) {
            Some(best) => {
                prop_assert!(best.in_open(me, target));
                for c in &cands {
                    prop_assert!(!c.in_open(best, target) || !c.in_open(me, target));
                }
            }
            None => prop_assert!(cands.iter().all(|c| !c.in_open(me, target))),
        }
    }

    /// A node whose successor list and fingers are the truth names the true owner of every key
    /// it claims to know, and every finger equals the successor of its start.
    #[test]
    fn finger_selection_matches_truth(mut ids in prop::collection::vec(any::<u32>(), 2..80), me_index: prop::sample::Index, keys in prop::collection::vec(any::<u32>(), 1..50)) {
        ids.sort_unstable();
        ids.dedup();
        prop_assume!(ids.len() >= 2);
        let ids: Vec<Id> = ids.into_iter().map(Id).collect();
        let i = me_index.index(ids.len());
        let me = ids[i];
        let mut ring = RingState::new(me, 4);
        let succs: Vec<Id> = (1..ids.len().min(5)).map(|k| ids[(i + k) % ids.len()]).collect();
        ring.set_successors(succs[0], &succs[1..]);
        ring.offer_predecessor(ids[(i + ids.len() - 1) % ids.len()]);
        // Fill the finger table the way a sweep does.
        let mut f = 0;
        while f < ID_BITS {
            let owner = successor_in(&ids, me.finger_start(f)).unwrap();
            let (next, _) = ring.set_finger(f, owner);
            prop_assert!(next > f);
            f = next;
        }
        for f in 0..ID_BITS {
            let owner = successor_in(&ids, me.finger_start(f)).unwrap();
            prop_assert_eq!(ring.finger(f), (owner != me).then_some(owner));
        }
        for k in keys {
            if let Some(owner) = ring.known_owner(Id(k), true) {
                prop_assert_eq!(owner, brute_successor(&ids, Id(k)));
            }
        }
    }
}
