//! Hand-written JSON for the frames that make up nearly all ring traffic (stabilize, notify,
//! hello, heartbeats, link close, lookups and overlay signaling, and the anti-entropy rounds of
//! replicas that agree), byte for byte what serde_json writes for them.
//!
//! The simulator spent about a quarter of its time in serde_json for these small frames. The
//! fast paths never change what goes over the wire or what a frame means:
//! - [`encode`] writes exactly the bytes `serde_json::to_vec` writes (the tests compare them), and
//!   answers `None` for any other message, or a string with control characters;
//! - [`decode`] accepts only that canonical form (fields in serde's order, no whitespace, no
//!   escapes but `\"` and `\\`, numbers without leading zeros and in range) and answers `None` for anything else,
//!   which then goes through serde_json as before. A frame it accepts is the canonical encoding
//!   of the message it returns, which serde_json decodes to the same message.

use super::{Body, Dest, MAX_LIST_LEN, Message, PROTOCOL_VERSION, Routed};
use crate::id::Id;
use crate::merkle::{NodeHash, NodeRef, SyncHashes, SyncMsg};
use crate::store::RingRange;
use crate::store::tree::Digest;

// ----- encode -----------------------------------------------------------------------------

struct Out(Vec<u8>);

impl Out {
    fn raw(&mut self, s: &[u8]) {
        self.0.extend_from_slice(s);
    }

    fn num(&mut self, mut n: u64) {
        // Two digits a step from a table, as the `itoa` crate that serde_json uses does.
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
            2021222324252627282930313233343536373839\
            4041424344454647484950515253545556575859\
            6061626364656667686970717273747576777879\
            8081828384858687888990919293949596979899";
        // The digits fill the front of a 20-byte buffer, all of which is appended and the
        // rest cut off: a copy of a fixed size is a few moves, where appending a slice of
        // varying length called memcpy for every number (1.4% of the simulator's time).
        let len = n.checked_ilog10().map_or(1, |digits| digits as usize + 1);
        let mut digits = [0u8; 20];
        let mut i = len;
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            i -= 1;
            digits[i] = b'0' + n as u8;
        }
        debug_assert_eq!(i, 0);
        let start = self.0.len();
        self.0.extend_from_slice(&digits);
        self.0.truncate(start + len);
    }

    /// `{"range":{"from":..,"to":..},"depth":..` (the object left open).
    fn range_depth(&mut self, range: RingRange, depth: u8) {
        self.raw(b"{\"range\":{\"from\":");
        self.num(u64::from(range.from));
        self.raw(b",\"to\":");
        self.num(u64::from(range.to));
        self.raw(b"},\"depth\":");
        self.num(u64::from(depth));
    }

    /// A digest as its `Display` writes it: 32 lowercase hex digits.
    fn hex(&mut self, digest: Digest) {
        let mut digits = [0u8; 32];
        for (i, d) in digits.iter_mut().enumerate() {
            let nibble = (digest.0 >> (124 - 4 * i)) as u8 & 0xf;
            *d = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        self.raw(&digits);
    }

    fn id(&mut self, id: Id) {
        self.num(u64::from(id.0));
    }

    fn opt_id(&mut self, id: Option<Id>) {
        match id {
            Some(id) => self.id(id),
            None => self.raw(b"null"),
        }
    }

    fn ids(&mut self, ids: &[Id]) {
        self.raw(b"[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.id(*id);
        }
        self.raw(b"]");
    }

    /// A string as serde_json writes it when its only escapes are `\"` and `\\` (a signalling
    /// payload is JSON itself, so quotes are common); `None` for control characters, which
    /// serde_json escapes in several ways.
    fn str(&mut self, s: &str) -> Option<()> {
        if s.bytes().any(|b| b < 0x20) {
            return None;
        }
        self.raw(b"\"");
        let mut rest = s.as_bytes();
        while let Some(i) = rest.iter().position(|&b| b == b'"' || b == b'\\') {
            self.raw(&rest[..i]);
            self.raw(&[b'\\', rest[i]]);
            rest = &rest[i + 1..];
        }
        self.raw(rest);
        self.raw(b"\"");
        Some(())
    }
}

/// The frame of `message` as serde_json writes it, or `None` when this module does not cover it.
pub(super) fn encode(message: &Message) -> Option<Vec<u8>> {
    if matches!(message, Message::Neighbors { fence: Some(_), .. }) {
        return None; // rare: serde_json writes it
    }
    // Room for the whole frame at once: growing the buffer cost more than writing it.
    let room = match message {
        Message::Neighbors { succs, preds, .. } => 96 + 11 * (succs.len() + preds.len()),
        Message::Route(Routed {
            body: Body::Signal { payload },
            ..
        }) => 192 + 2 * payload.len(),
        Message::Sync(SyncMsg::Hashes(hashes)) => 96 + 56 * hashes.nodes.len(),
        _ => 192,
    };
    let mut o = Out(Vec::with_capacity(room));
    o.raw(b"{\"v\":");
    o.num(u64::from(PROTOCOL_VERSION));
    o.raw(b",\"m\":{\"t\":\"");
    match message {
        Message::Hello { joined } => {
            o.raw(b"hello\",\"c\":{\"joined\":");
            o.raw(if *joined { b"true" } else { b"false" });
            o.raw(b"}");
        }
        Message::Ping { nonce } | Message::Pong { nonce } => {
            o.raw(match message {
                Message::Ping { .. } => b"ping",
                _ => b"pong",
            });
            o.raw(b"\",\"c\":{\"nonce\":");
            o.num(*nonce);
            o.raw(b"}");
        }
        Message::GetNeighbors { nonce, clock } => {
            o.raw(b"get_neighbors\",\"c\":{\"nonce\":");
            o.num(*nonce);
            if *clock != 0 {
                o.raw(b",\"clock\":");
                o.num(*clock);
            }
            o.raw(b"}");
        }
        Message::Neighbors {
            nonce,
            pred,
            succs,
            preds,
            clock,
            fence: _,
        } => {
            o.raw(b"neighbors\",\"c\":{\"nonce\":");
            o.num(*nonce);
            o.raw(b",\"pred\":");
            o.opt_id(*pred);
            o.raw(b",\"succs\":");
            o.ids(succs);
            if !preds.is_empty() {
                o.raw(b",\"preds\":");
                o.ids(preds);
            }
            if *clock != 0 {
                o.raw(b",\"clock\":");
                o.num(*clock);
            }
            o.raw(b"}");
        }
        Message::Notify => o.raw(b"notify\""),
        Message::Bye => o.raw(b"bye\""),
        Message::Keep => o.raw(b"keep\""),
        Message::Close => o.raw(b"close\""),
        Message::Route(routed) => {
            o.raw(b"route\",\"c\":{\"dest\":{\"k\":\"");
            match routed.dest {
                Dest::Owner { key } => {
                    o.raw(b"owner\",\"c\":{\"key\":");
                    o.id(key);
                }
                Dest::Peer { id, via } => {
                    o.raw(b"peer\",\"c\":{\"id\":");
                    o.id(id);
                    if let Some(via) = via {
                        o.raw(b",\"via\":");
                        o.id(via);
                    }
                }
            }
            o.raw(b"}},\"origin\":");
            o.id(routed.origin);
            if let Some(via) = routed.origin_via {
                o.raw(b",\"origin_via\":");
                o.id(via);
            }
            o.raw(b",\"hops\":");
            o.num(u64::from(routed.hops));
            o.raw(b",\"body\":{\"b\":\"");
            match &routed.body {
                Body::FindSuccessor { op } => {
                    o.raw(b"find_successor\",\"c\":{\"op\":");
                    o.num(*op);
                }
                Body::FoundSuccessor { op, owner, hops } => {
                    o.raw(b"found_successor\",\"c\":{\"op\":");
                    o.num(*op);
                    o.raw(b",\"owner\":");
                    o.id(*owner);
                    o.raw(b",\"hops\":");
                    o.num(u64::from(*hops));
                }
                Body::Signal { payload } => {
                    o.raw(b"signal\",\"c\":{\"payload\":");
                    o.str(payload)?;
                }
                _ => return None,
            }
            o.raw(b"}}}");
        }
        Message::Sync(sync) => {
            o.raw(b"sync\",\"c\":{\"s\":\"");
            match sync {
                SyncMsg::Hashes(hashes) => {
                    o.raw(b"hashes\",\"c\":");
                    o.range_depth(hashes.range, hashes.depth);
                    o.raw(b",\"nodes\":[");
                    for (i, node) in hashes.nodes.iter().enumerate() {
                        if i > 0 {
                            o.raw(b",");
                        }
                        o.raw(b"[");
                        o.num(u64::from(node.node.level));
                        o.raw(b",");
                        o.num(u64::from(node.node.index));
                        o.raw(b",\"");
                        o.hex(node.hash);
                        o.raw(b"\"]");
                    }
                    o.raw(b"]}");
                }
                SyncMsg::Equal { range, depth } => {
                    o.raw(b"equal\",\"c\":");
                    o.range_depth(*range, *depth);
                    o.raw(b"}");
                }
                _ => return None,
            }
            o.raw(b"}");
        }
        _ => return None,
    }
    o.raw(b"}}");
    Some(o.0)
}

// ----- decode -----------------------------------------------------------------------------

struct In<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> In<'a> {
    /// Consumes `s` if the input continues with it.
    #[inline(always)]
    fn eat(&mut self, s: &[u8]) -> bool {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            true
        } else {
            false
        }
    }

    #[inline(always)]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        self.eat(s).then_some(())
    }

    /// An optional `,"clock":N` as serde writes it: absent for 0, never `0` itself.
    fn clock(&mut self) -> Option<u64> {
        if !self.eat(b",\"clock\":") {
            return Some(0);
        }
        self.num().filter(|n| *n != 0)
    }

    /// A canonical unsigned integer (no sign, no leading zero, no fraction or exponent).
    fn num(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.b[start] == b'0') {
            return None;
        }
        // `1.5`, `1e3`: not canonical for an integer field; let serde_json judge.
        if matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    fn u8(&mut self) -> Option<u8> {
        u8::try_from(self.num()?).ok()
    }

    fn id(&mut self) -> Option<Id> {
        Some(Id(u32::try_from(self.num()?).ok()?))
    }

    fn opt_id(&mut self) -> Option<Option<Id>> {
        if self.eat(b"null") {
            Some(None)
        } else {
            self.id().map(Some)
        }
    }

    fn ids(&mut self) -> Option<Vec<Id>> {
        self.lit(b"[")?;
        if self.eat(b"]") {
            return Some(Vec::new());
        }
        // As many as the list holds (up to the limit's first excess), in one allocation.
        let rest = &self.b[self.i..];
        let end = rest.iter().position(|&c| c == b']').unwrap_or(rest.len());
        let commas = rest[..end].iter().filter(|&&c| c == b',').count();
        let mut ids = Vec::with_capacity((commas + 1).min(MAX_LIST_LEN + 1));
        loop {
            ids.push(self.id()?);
            if ids.len() > MAX_LIST_LEN {
                return None; // serde_json's path reports the error
            }
            if self.eat(b"]") {
                return Some(ids);
            }
            self.lit(b",")?;
        }
    }

    /// A string without control characters whose only escapes are `\"` and `\\` (what [`Out::str`]
    /// writes), as valid UTF-8.
    fn str(&mut self) -> Option<String> {
        self.lit(b"\"")?;
        let mut s = Vec::with_capacity(self.b.len() - self.i);
        loop {
            let start = self.i;
            let len = self.b[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            s.extend_from_slice(&self.b[start..start + len]);
            self.i = start + len + 1;
            match self.b[start + len] {
                b'"' => break,
                b'\\' => match self.b.get(self.i) {
                    Some(&c @ (b'"' | b'\\')) => {
                        s.push(c);
                        self.i += 1;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        String::from_utf8(s).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.num()?).ok()
    }

    /// What [`Out::range_depth`] writes.
    fn range_depth(&mut self) -> Option<(RingRange, u8)> {
        self.lit(b"{\"range\":{\"from\":")?;
        let from = self.u32()?;
        self.lit(b",\"to\":")?;
        let to = self.u32()?;
        self.lit(b"},\"depth\":")?;
        Some((RingRange::new(from, to), self.u8()?))
    }

    /// 32 lowercase hex digits (what [`Out::hex`] writes), read as `Digest::from_hex` reads them.
    fn hex(&mut self) -> Option<Digest> {
        let digits = self.b.get(self.i..self.i + 32)?;
        if !digits
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        self.i += 32;
        Digest::from_hex(std::str::from_utf8(digits).ok()?)
    }

    /// A tag's name and its closing quote.
    fn tag(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        let len = self.b[start..].iter().position(|&c| c == b'"')?;
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }
}

/// The message of a canonical frame of a kind [`encode`] writes; `None` for anything else.
pub(super) fn decode(bytes: &[u8]) -> Option<Message> {
    let mut c = In { b: bytes, i: 0 };
    c.lit(b"{\"v\":1,\"m\":{\"t\":\"")?;
    let message = match c.tag()? {
        b"notify" => Message::Notify,
        b"bye" => Message::Bye,
        b"keep" => Message::Keep,
        b"close" => Message::Close,
        b"hello" => {
            c.lit(b",\"c\":{\"joined\":")?;
            let joined = if c.eat(b"true") {
                true
            } else {
                c.lit(b"false")?;
                false
            };
            c.lit(b"}")?;
            Message::Hello { joined }
        }
        tag @ (b"ping" | b"pong" | b"get_neighbors") => {
            c.lit(b",\"c\":{\"nonce\":")?;
            let nonce = c.num()?;
            let clock = if tag == b"get_neighbors" {
                c.clock()?
            } else {
                0
            };
            c.lit(b"}")?;
            match tag {
                b"ping" => Message::Ping { nonce },
                b"pong" => Message::Pong { nonce },
                _ => Message::GetNeighbors { nonce, clock },
            }
        }
        b"neighbors" => {
            c.lit(b",\"c\":{\"nonce\":")?;
            let nonce = c.num()?;
            c.lit(b",\"pred\":")?;
            let pred = c.opt_id()?;
            c.lit(b",\"succs\":")?;
            let succs = c.ids()?;
            let preds = if c.eat(b",\"preds\":") {
                let preds = c.ids()?;
                if preds.is_empty() {
                    return None; // serde_json never writes an empty `preds`
                }
                preds
            } else {
                Vec::new()
            };
            let clock = c.clock()?;
            c.lit(b"}")?;
            Message::Neighbors {
                nonce,
                pred,
                succs,
                preds,
                clock,
                fence: None,
            }
        }
        b"route" => {
            c.lit(b",\"c\":{\"dest\":{\"k\":\"")?;
            let dest = match c.tag()? {
                b"owner" => {
                    c.lit(b",\"c\":{\"key\":")?;
                    Dest::Owner { key: c.id()? }
                }
                b"peer" => {
                    c.lit(b",\"c\":{\"id\":")?;
                    let id = c.id()?;
                    let via = if c.eat(b",\"via\":") {
                        Some(c.id()?)
                    } else {
                        None
                    };
                    Dest::Peer { id, via }
                }
                _ => return None,
            };
            c.lit(b"}},\"origin\":")?;
            let origin = c.id()?;
            let origin_via = if c.eat(b",\"origin_via\":") {
                Some(c.id()?)
            } else {
                None
            };
            c.lit(b",\"hops\":")?;
            let hops = c.u8()?;
            c.lit(b",\"body\":{\"b\":\"")?;
            let body = match c.tag()? {
                b"find_successor" => {
                    c.lit(b",\"c\":{\"op\":")?;
                    Body::FindSuccessor { op: c.num()? }
                }
                b"found_successor" => {
                    c.lit(b",\"c\":{\"op\":")?;
                    let op = c.num()?;
                    c.lit(b",\"owner\":")?;
                    let owner = c.id()?;
                    c.lit(b",\"hops\":")?;
                    let hops = c.u8()?;
                    Body::FoundSuccessor { op, owner, hops }
                }
                b"signal" => {
                    c.lit(b",\"c\":{\"payload\":")?;
                    Body::Signal { payload: c.str()? }
                }
                _ => return None,
            };
            c.lit(b"}}}")?;
            Message::Route(Routed {
                dest,
                origin,
                origin_via,
                hops,
                body,
            })
        }
        b"sync" => {
            c.lit(b",\"c\":{\"s\":\"")?;
            let sync = match c.tag()? {
                b"hashes" => {
                    c.lit(b",\"c\":")?;
                    let (range, depth) = c.range_depth()?;
                    c.lit(b",\"nodes\":[")?;
                    let mut nodes = Vec::new();
                    if !c.eat(b"]") {
                        loop {
                            c.lit(b"[")?;
                            let level = c.u8()?;
                            c.lit(b",")?;
                            let index = c.u32()?;
                            c.lit(b",\"")?;
                            let hash = c.hex()?;
                            c.lit(b"\"]")?;
                            nodes.push(NodeHash {
                                node: NodeRef::new(level, index),
                                hash,
                            });
                            if c.eat(b"]") {
                                break;
                            }
                            c.lit(b",")?;
                        }
                    }
                    c.lit(b"}")?;
                    SyncMsg::Hashes(SyncHashes {
                        range,
                        depth,
                        nodes,
                    })
                }
                b"equal" => {
                    c.lit(b",\"c\":")?;
                    let (range, depth) = c.range_depth()?;
                    c.lit(b"}")?;
                    SyncMsg::Equal { range, depth }
                }
                _ => return None,
            };
            c.lit(b"}")?;
            Message::Sync(sync)
        }
        _ => return None,
    };
    c.lit(b"}}")?;
    (c.i == bytes.len()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn ids(rng: &mut Rng, max: u64) -> Vec<Id> {
        (0..rng.below(max + 1)).map(|_| id(rng)).collect()
    }

    fn id(rng: &mut Rng) -> Id {
        // Small and large values: one digit, leading digits, u32::MAX.
        Id(match rng.below(4) {
            0 => rng.below(10) as u32,
            1 => u32::MAX,
            _ => rng.next_u32(),
        })
    }

    fn num(rng: &mut Rng) -> u64 {
        match rng.below(4) {
            0 => rng.below(10),
            1 => u64::MAX,
            _ => rng.next_u64() >> rng.below(64),
        }
    }

    fn opt(rng: &mut Rng) -> Option<Id> {
        rng.chance(0.5).then(|| id(rng))
    }

    fn payload(rng: &mut Rng) -> String {
        let pool = [
            "offer",
            "answer",
            "",
            "é ü ∑ 🎉",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{7f}",
            "\u{1}",
        ];
        pool[rng.below(pool.len() as u64) as usize].to_string()
    }

    fn sync(rng: &mut Rng) -> SyncMsg {
        let range = RingRange::new(id(rng).0, id(rng).0);
        let depth = rng.below(256) as u8;
        match rng.below(3) {
            0 => SyncMsg::Equal { range, depth },
            1 => SyncMsg::Hashes(SyncHashes {
                range,
                depth,
                nodes: (0..rng.below(4))
                    .map(|_| NodeHash {
                        node: NodeRef::new(rng.below(256) as u8, id(rng).0),
                        hash: Digest(match rng.below(3) {
                            0 => 0,
                            1 => u128::MAX,
                            _ => (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
                        }),
                    })
                    .collect(),
            }),
            _ => SyncMsg::Want {
                range,
                depth,
                keys: vec![payload(rng)],
            },
        }
    }

    fn message(rng: &mut Rng) -> Message {
        match rng.below(13) {
            12 => Message::Sync(sync(rng)),
            0 => Message::Hello {
                joined: rng.chance(0.5),
            },
            1 => Message::Ping { nonce: num(rng) },
            2 => Message::Pong { nonce: num(rng) },
            3 => Message::GetNeighbors {
                nonce: num(rng),
                clock: if rng.chance(0.5) { 0 } else { num(rng) },
            },
            4 => Message::Neighbors {
                nonce: num(rng),
                pred: opt(rng),
                succs: ids(rng, 8),
                preds: ids(rng, 3),
                clock: if rng.chance(0.5) { 0 } else { num(rng) },
                fence: None,
            },
            5 => Message::Notify,
            6 => Message::Bye,
            7 => Message::Keep,
            8 => Message::Close,
            _ => Message::Route(Routed {
                dest: if rng.chance(0.5) {
                    Dest::Owner { key: id(rng) }
                } else {
                    Dest::Peer {
                        id: id(rng),
                        via: opt(rng),
                    }
                },
                origin: id(rng),
                origin_via: opt(rng),
                hops: rng.below(256) as u8,
                body: match rng.below(4) {
                    0 => Body::FindSuccessor { op: num(rng) },
                    1 => Body::FoundSuccessor {
                        op: num(rng),
                        owner: id(rng),
                        hops: rng.below(256) as u8,
                    },
                    2 => Body::Signal {
                        payload: payload(rng),
                    },
                    _ => Body::GetView { op: num(rng) },
                },
            }),
        }
    }

    fn serde_encode(m: &Message) -> Vec<u8> {
        serde_json::to_vec(&super::super::FrameOut {
            v: PROTOCOL_VERSION,
            m,
        })
        .unwrap()
    }

    #[test]
    fn encode_writes_what_serde_json_writes_and_decode_reads_it_back() {
        let mut rng = Rng::new(7);
        let mut covered = 0;
        for _ in 0..20_000 {
            let m = message(&mut rng);
            let canonical = serde_encode(&m);
            match encode(&m) {
                Some(bytes) => {
                    assert_eq!(
                        String::from_utf8_lossy(&bytes),
                        String::from_utf8_lossy(&canonical)
                    );
                    covered += 1;
                    assert_eq!(decode(&canonical).as_ref(), Some(&m), "{m:?}");
                }
                None => assert_eq!(decode(&canonical), None, "{m:?}"),
            }
            // The public codec round-trips whichever path it takes.
            assert_eq!(super::super::decode(&canonical), Ok(m));
        }
        assert!(covered > 16_000, "{covered}");
    }

    #[test]
    fn decode_leaves_non_canonical_frames_to_serde_json() {
        for frame in [
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":01}}}"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":1.0}}}"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":1e2}}}"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":-1}}}"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":18446744073709551616}}}"#,
            r#"{"v":1,"m":{"t":"ping", "c":{"nonce":1}}}"#,
            r#"{"v":1,"m":{"c":{"nonce":1},"t":"ping"}}"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":1}}} "#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":1}}}x"#,
            r#"{"v":1,"m":{"t":"ping","c":{"nonce":1}}"#,
            r#"{"v":2,"m":{"t":"notify"}}"#,
            r#"{"v":1,"m":{"t":"notify","c":null}}"#,
            r#"{"v":1,"m":{"t":"neighbors","c":{"nonce":1,"pred":null,"succs":[],"preds":[]}}}"#,
            r#"{"v":1,"m":{"t":"neighbors","c":{"nonce":1,"pred":4294967296,"succs":[]}}}"#,
            r#"{"v":1,"m":{"t":"neighbors","c":{"nonce":1,"pred":null,"succs":[1,]}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"owner","c":{"key":1}},"origin":2,"origin_via":null,"hops":0,"body":{"b":"find_successor","c":{"op":1}}}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"owner","c":{"key":1}},"origin":2,"hops":256,"body":{"b":"find_successor","c":{"op":1}}}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"peer","c":{"id":1}},"origin":2,"hops":0,"body":{"b":"signal","c":{"payload":"a\nb"}}}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"peer","c":{"id":1}},"origin":2,"hops":0,"body":{"b":"signal","c":{"payload":"a\u0041"}}}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"peer","c":{"id":1}},"origin":2,"hops":0,"body":{"b":"signal","c":{"payload":"a\/b"}}}}}"#,
            r#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"peer","c":{"id":1}},"origin":2,"hops":0,"body":{"b":"signal","c":{"payload":"a\"}}}}}"#,
            r#"{"v":1,"m":{"t":"sync","c":{"s":"equal","c":{"range":{"from":1,"to":2},"depth":256}}}}"#,
            r#"{"v":1,"m":{"t":"sync","c":{"s":"hashes","c":{"range":{"from":1,"to":2},"depth":3,"nodes":[[0,0,"0000000000000000000000000000000A"]]}}}}"#,
            r#"{"v":1,"m":{"t":"sync","c":{"s":"hashes","c":{"range":{"from":1,"to":2},"depth":3,"nodes":[[0,0,"000000000000000000000000000000a"]]}}}}"#,
            r#"{"v":1,"m":{"t":"sync","c":{"s":"hashes","c":{"range":{"from":1,"to":2},"depth":3,"nodes":[[0,0,"0000000000000000000000000000000a"],]}}}}"#,
        ] {
            assert_eq!(decode(frame.as_bytes()), None, "{frame}");
        }
        // Invalid UTF-8 in a string.
        let mut frame = br#"{"v":1,"m":{"t":"route","c":{"dest":{"k":"peer","c":{"id":1}},"origin":2,"hops":0,"body":{"b":"signal","c":{"payload":"#.to_vec();
        frame.extend_from_slice(b"\"\xff\"}}}}}");
        assert_eq!(decode(&frame), None);
        // A list longer than the limit is refused by the public codec, as before.
        let long = (0..=MAX_LIST_LEN)
            .map(|i| i.to_string())
            .collect::<Vec<_>>();
        let frame = format!(
            r#"{{"v":1,"m":{{"t":"neighbors","c":{{"nonce":1,"pred":null,"succs":[{}]}}}}}}"#,
            long.join(",")
        );
        assert_eq!(decode(frame.as_bytes()), None);
        assert!(matches!(
            super::super::decode(frame.as_bytes()),
            Err(super::super::DecodeError::ListTooLong { .. })
        ));
    }
}
