//! Next-hop choice for recursive routing over open links.
//!
//! A browser cannot open a socket to an arbitrary address, so every hop must already hold a data
//! channel: the candidates are the node's open links to ring members (fingers, successors,
//! predecessor, and peers that linked to it). Toward a key, the next hop is the candidate that most
//! closely precedes the key (Chord's `closest_preceding_node`, restricted to live links). Toward a
//! specific peer, a direct link wins, then a link to the peer's `via` (a member linked to a peer not
//! yet in the ring), then the greedy rule toward the peer's id, and, when the node itself is the
//! closest preceding member, its first linked successor (which usually has the target as a fresh
//! predecessor).

use crate::id::{Id, closest_preceding};

/// Candidates lying in `(me, key)`, best (closest to `key`) first.
pub fn preceding_candidates(me: Id, key: Id, peers: impl IntoIterator<Item = Id>) -> Vec<Id> {
    let mut candidates: Vec<Id> = peers.into_iter().filter(|p| p.in_open(me, key)).collect();
    candidates.sort_unstable_by_key(|p| std::cmp::Reverse(me.distance_to(*p)));
    candidates
}

/// Next hop toward the exact peer `target`.
pub fn next_hop_to_peer(
    me: Id,
    predecessor: Option<Id>,
    target: Id,
    via: Option<Id>,
    successors: &[Id],
    is_up: impl Fn(Id) -> bool,
    peers: impl IntoIterator<Item = Id>,
) -> Option<Id> {
    if is_up(target) {
        return Some(target);
    }
    let mut aim = target;
    // A relay that is not (or no longer) linked to the target falls back to the greedy rule.
    if let Some(via) = via.filter(|v| *v != me) {
        if is_up(via) {
            return Some(via);
        }
        aim = via;
    }
    // The target would sit between our predecessor and us, yet is not linked to us: it is not
    // a ring member we know of (dead, or gone). Going on would circle the ring.
    if let Some(p) = predecessor
        && aim.in_open(p, me)
    {
        return None;
    }
    closest_preceding(me, aim, peers).or_else(|| successors.iter().copied().find(|s| is_up(*s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_closest_preceding() {
        let c = preceding_candidates(Id(0), Id(100), vec![Id(10), Id(90), Id(150), Id(50)]);
        assert_eq!(c, vec![Id(90), Id(50), Id(10)]);
    }

    #[test]
    fn peer_routing_uses_via() {
        let up = |p: Id| p == Id(7) || p == Id(50);
        assert_eq!(
            next_hop_to_peer(
                Id(0),
                None,
                Id(30),
                Some(Id(7)),
                &[Id(50)],
                up,
                vec![Id(50)]
            ),
            Some(Id(7))
        );
        assert_eq!(
            next_hop_to_peer(Id(0), None, Id(30), None, &[Id(50)], up, vec![Id(50)]),
            Some(Id(50))
        );
    }
}
