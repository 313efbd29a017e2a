//! Client histories of the store and the checker of what chord-kv promises about them.
//!
//! A [`History`] records every client operation the way Jepsen and Porcupine do: what was
//! invoked (key, arguments), when, when the call returned and with what (an acknowledgement with
//! its timestamp, a value, "not found", a failure, or nothing at all when the client stopped
//! waiting: an *unknown* outcome). [`check`] then judges the history per key, against the
//! real-time order of the calls, never against the store's internal versions:
//!
//! - **The promise (MUST).** Once `put(k, v)` is acknowledged, every `get(k)` that *starts* after
//!   that acknowledgement returns `v` or the value of a write that had not been acknowledged
//!   before `put(k, v)` started; a delete the same with "not found"; and two gets ordered in real
//!   time never go backwards (the later one never returns a write that was acknowledged before
//!   the earlier one's write started). A value that no client ever wrote is an anomaly too.
//!   Violations are [`Anomaly`]s.
//! - **Linearizability (GOAL).** A Wing & Gong search with Lowe's memoisation (as Porcupine
//!   does) for an order of each key's operations that respects real time and the register's
//!   semantics; a write whose outcome is unknown or failed may take effect at any point after its
//!   invocation, or never. The search is bounded ([`LINEARIZABILITY_BUDGET`] states per key); a
//!   key whose search runs out is reported as undecided, never as passed.
//!
//! Writes are told apart by their values: a history whose puts of one key reuse a value is still
//! checked (a read of that value may come from any of them), but the workloads of the harness
//! write unique values so every read names exactly one write.

use crate::Time;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Put { value: String },
    Delete,
    Get,
}

/// What the call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// A put or delete was acknowledged with this Lamport timestamp.
    Stored {
        ts: u64,
    },
    Found {
        value: String,
        ts: u64,
        writer: String,
    },
    NotFound,
    /// The call returned an error: a write may or may not have taken effect.
    Failed {
        error: String,
    },
    /// The call never returned (the client's peer crashed or the client gave up waiting).
    Unknown,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Position in the history (invocation order).
    pub index: usize,
    /// Who issued it (the peer the client talked to).
    pub client: String,
    pub key: String,
    pub call: Call,
    pub invoke: Time,
    /// When the call returned; `None` while it has not (and for [`Ret::Unknown`]).
    pub complete: Option<Time>,
    pub ret: Ret,
    /// For a get recorded by the simulator: the newest version (Lamport timestamp, 0 for
    /// none) of the key that the live ring members held, the lower of its value when the get
    /// was invoked and when it returned. Not part of the promise; it tells a stale read the
    /// protocol could have avoided from one that no peer could have answered, because every
    /// holder of the newer write was down or had lost it by then.
    pub newest_live: Option<u64>,
}

impl Op {
    fn is_write(&self) -> bool {
        !matches!(self.call, Call::Get)
    }

    /// An acknowledged write: its effect is promised.
    fn acked_at(&self) -> Option<Time> {
        match (&self.ret, self.complete) {
            (Ret::Stored { .. }, Some(at)) if self.is_write() => Some(at),
            _ => None,
        }
    }

    /// A read that returned something.
    fn read_ok(&self) -> bool {
        matches!(self.call, Call::Get) && matches!(self.ret, Ret::Found { .. } | Ret::NotFound)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = match &self.call {
            Call::Put { value } => format!("put({:?}, {value:?})", self.key),
            Call::Delete => format!("delete({:?})", self.key),
            Call::Get => format!("get({:?})", self.key),
        };
        let ret = match &self.ret {
            Ret::Stored { ts } => format!("ok ts={ts}"),
            Ret::Found { value, ts, writer } => format!("{value:?} ts={ts} writer={writer}"),
            Ret::NotFound => "not found".to_string(),
            Ret::Failed { error } => format!("failed: {error}"),
            Ret::Unknown => "unknown".to_string(),
        };
        let complete = self
            .complete
            .map_or_else(|| "?".to_string(), |t| t.to_string());
        write!(
            f,
            "#{} [{}..{}] ms at {}: {call} -> {ret}",
            self.index, self.invoke, complete, self.client
        )
    }
}

/// A recorded history.
#[derive(Debug, Clone, Default)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation; returns its index for [`History::complete`].
    pub fn invoke(&mut self, client: &str, key: &str, call: Call, at: Time) -> usize {
        let index = self.ops.len();
        self.ops.push(Op {
            index,
            client: client.to_string(),
            key: key.to_string(),
            call,
            invoke: at,
            complete: None,
            ret: Ret::Unknown,
            newest_live: None,
        });
        index
    }

    /// Records what the live ring held of the op's key at one moment of the call (see
    /// [`Op::newest_live`]); the lowest of the moments noted is kept.
    pub fn note_newest_live(&mut self, index: usize, ts: u64) {
        if let Some(op) = self.ops.get_mut(index) {
            op.newest_live = Some(op.newest_live.map_or(ts, |seen| seen.min(ts)));
        }
    }

    /// Records what the call returned and when (ignored for an unknown index or a second
    /// completion).
    pub fn complete(&mut self, index: usize, at: Time, ret: Ret) {
        if let Some(op) = self.ops.get_mut(index)
            && op.complete.is_none()
            && !matches!(ret, Ret::Unknown)
        {
            op.complete = Some(at.max(op.invoke));
            op.ret = ret;
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn get(&self, index: usize) -> Option<&Op> {
        self.ops.get(index)
    }

    /// Whether the call at `index` has returned.
    pub fn is_complete(&self, index: usize) -> bool {
        self.ops.get(index).is_some_and(|op| op.complete.is_some())
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What kind of promise a history broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// A get returned a write older than one acknowledged before the get started.
    StaleRead,
    /// A get returned an older write than an earlier get (in real time) had returned.
    ReadBackwards,
    /// A get returned a value no client wrote.
    PhantomRead,
    /// No linearization of the key's history exists (only with the GOAL check).
    NotLinearizable,
}

impl AnomalyKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::StaleRead => "stale-read",
            Self::ReadBackwards => "read-backwards",
            Self::PhantomRead => "phantom-read",
            Self::NotLinearizable => "not-linearizable",
        }
    }
}

/// One violation, with the operations that show it, in invocation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub key: String,
    pub ops: Vec<Op>,
    pub explanation: String,
    /// A stale read during which, at its start or at its end, no live ring member held the
    /// write it missed (every peer that stored it had crashed, lost its disk or not yet come
    /// back): more than k - 1 failures of one replica set, beyond what a quorum of k = 3
    /// tolerates. Still a violation; counted
    /// apart so that the ones the protocol could have avoided stand out.
    pub all_holders_down: bool,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} on key {:?}: {}",
            self.kind.name(),
            self.key,
            self.explanation
        )?;
        if self.all_holders_down {
            writeln!(
                f,
                "    (when the get started or returned, no live ring member held the missed write)"
            )?;
        }
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// The checker's verdict on a history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub ops: usize,
    pub acked_writes: usize,
    /// Acknowledged writes that the *last* read of their key does not reflect (it returned a
    /// write acknowledged before them).
    pub acked_writes_lost: usize,
    /// Violations of the promise (MUST).
    pub anomalies: Vec<Anomaly>,
    /// Keys whose history has no linearization (GOAL), with the reason.
    pub not_linearizable: Vec<Anomaly>,
    /// Keys whose linearizability search ran out of budget.
    pub undecided_keys: usize,
}

impl Report {
    /// Anomalies that started when every holder of the missed write was down
    /// ([`Anomaly::all_holders_down`]).
    pub fn all_holders_down(&self) -> usize {
        self.anomalies.iter().filter(|a| a.all_holders_down).count()
    }

    /// Whether the promise held.
    pub fn holds(&self) -> bool {
        self.anomalies.is_empty() && self.acked_writes_lost == 0
    }
}

/// States the linearizability search may visit per key before it gives up (undecided).
pub const LINEARIZABILITY_BUDGET: usize = 200_000;

/// A write a read may have observed: one of the key's writes, or the initial "nothing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Initial,
    Write(usize),
}

/// Checks every key's history: the promise, then linearizability.
pub fn check(history: &History) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history.ops() {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = Report {
        ops: history.len(),
        ..Report::default()
    };
    for (key, ops) in by_key {
        let k = KeyCheck { key, ops: &ops };
        report.acked_writes += ops.iter().filter(|o| o.acked_at().is_some()).count();
        k.promise(&mut report);
        match k.linearizable(LINEARIZABILITY_BUDGET) {
            Some(true) => {}
            Some(false) => report.not_linearizable.push(Anomaly {
                kind: AnomalyKind::NotLinearizable,
                key: key.to_string(),
                ops: ops.iter().map(|o| (*o).clone()).collect(),
                explanation: "no order of these operations respects both real time and the \
                              register's semantics"
                    .to_string(),
                all_holders_down: false,
            }),
            None => report.undecided_keys += 1,
        }
    }
    report
}

struct KeyCheck<'a> {
    key: &'a str,
    ops: &'a [&'a Op],
}

impl KeyCheck<'_> {
    fn op(&self, source: Source) -> Option<&Op> {
        match source {
            Source::Initial => None,
            Source::Write(i) => Some(self.ops[i]),
        }
    }

    /// Every write this read may have observed.
    fn sources(&self, read: &Op) -> Vec<Source> {
        match &read.ret {
            Ret::Found { value, .. } => self
                .ops
                .iter()
                .enumerate()
                .filter(|(_, o)| matches!(&o.call, Call::Put { value: v } if v == value))
                .map(|(i, _)| Source::Write(i))
                .collect(),
            Ret::NotFound => std::iter::once(Source::Initial)
                .chain(
                    self.ops
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| matches!(o.call, Call::Delete))
                        .map(|(i, _)| Source::Write(i)),
                )
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `a` was acknowledged before `b` was invoked (so `a` is older than `b` in every
    /// linearization). The initial state is older than every write.
    fn known_older(&self, a: Source, b: Source) -> bool {
        match (a, b) {
            (Source::Initial, Source::Write(_)) => true,
            (_, Source::Initial) => false,
            (Source::Write(a), Source::Write(b)) => self.ops[a]
                .acked_at()
                .is_some_and(|at| at < self.ops[b].invoke),
        }
    }

    /// Whether `read` may have observed `source`, given the writes acknowledged before it
    /// started.
    fn may_observe(&self, read: &Op, source: Source) -> bool {
        let from_future = self
            .op(source)
            .is_some_and(|w| read.complete.is_some_and(|c| w.invoke > c));
        if from_future {
            return false;
        }
        self.ops.iter().enumerate().all(|(i, w)| {
            let acked_before = w.acked_at().is_some_and(|at| at < read.invoke);
            !acked_before
                || source == Source::Write(i)
                || !self.known_older(source, Source::Write(i))
        })
    }

    fn promise(&self, report: &mut Report) {
        let reads: Vec<&Op> = self.ops.iter().copied().filter(|o| o.read_ok()).collect();
        let mut valid: Vec<Vec<Source>> = Vec::with_capacity(reads.len());
        for read in &reads {
            let sources = self.sources(read);
            if sources.is_empty() {
                report.anomalies.push(Anomaly {
                    kind: AnomalyKind::PhantomRead,
                    key: self.key.to_string(),
                    ops: vec![(*read).clone()],
                    explanation: "the value returned was never written".to_string(),
                    all_holders_down: false,
                });
                valid.push(Vec::new());
                continue;
            }
            let ok: Vec<Source> = sources
                .iter()
                .copied()
                .filter(|s| self.may_observe(read, *s))
                .collect();
            if ok.is_empty() {
                // Name the newest write acknowledged before the read that it missed.
                let missed = self
                    .ops
                    .iter()
                    .filter(|w| w.acked_at().is_some_and(|at| at < read.invoke))
                    .max_by_key(|w| w.acked_at());
                let all_holders_down = match (missed.map(|w| &w.ret), read.newest_live) {
                    (Some(Ret::Stored { ts }), Some(live)) => live < *ts,
                    _ => false,
                };
                let mut ops: Vec<Op> = missed.into_iter().map(|o| (*o).clone()).collect();
                ops.extend(sources.iter().filter_map(|s| self.op(*s)).cloned());
                ops.push((*read).clone());
                ops.sort_by_key(|o| o.index);
                ops.dedup_by_key(|o| o.index);
                report.anomalies.push(Anomaly {
                    kind: AnomalyKind::StaleRead,
                    key: self.key.to_string(),
                    ops,
                    explanation: "the get started after a newer write was acknowledged, yet \
                                  returned an older one"
                        .to_string(),
                    all_holders_down,
                });
            }
            valid.push(ok);
        }
        // Reads ordered in real time never go backwards.
        for (i, first) in reads.iter().enumerate() {
            for (j, later) in reads.iter().enumerate() {
                let ordered = first.complete.is_some_and(|c| c < later.invoke);
                if !ordered || valid[i].is_empty() || valid[j].is_empty() {
                    continue;
                }
                let backwards = valid[j].iter().all(|s2| {
                    valid[i]
                        .iter()
                        .all(|s1| s1 != s2 && self.known_older(*s2, *s1))
                });
                if backwards {
                    let mut ops = vec![(*first).clone(), (*later).clone()];
                    ops.extend(valid[i].iter().filter_map(|s| self.op(*s)).cloned());
                    ops.extend(valid[j].iter().filter_map(|s| self.op(*s)).cloned());
                    ops.sort_by_key(|o| o.index);
                    ops.dedup_by_key(|o| o.index);
                    report.anomalies.push(Anomaly {
                        kind: AnomalyKind::ReadBackwards,
                        key: self.key.to_string(),
                        ops,
                        explanation: format!(
                            "get #{} returned a write acknowledged before the write that the \
                             earlier get #{} returned had started",
                            later.index, first.index
                        ),
                        all_holders_down: false,
                    });
                }
            }
        }
        // Lost: acknowledged writes the key's last read does not reflect.
        if let Some((li, last)) = reads
            .iter()
            .enumerate()
            .filter(|(_, r)| r.complete.is_some())
            .max_by_key(|(_, r)| (r.invoke, r.index))
        {
            let seen = &valid[li];
            let sources = if seen.is_empty() {
                self.sources(last)
            } else {
                seen.clone()
            };
            report.acked_writes_lost += self
                .ops
                .iter()
                .enumerate()
                .filter(|(_, w)| w.acked_at().is_some_and(|at| at < last.invoke))
                .filter(|(i, _)| {
                    sources
                        .iter()
                        .all(|s| *s != Source::Write(*i) && self.known_older(*s, Source::Write(*i)))
                })
                .count();
        }
    }

    /// Wing & Gong's search with Lowe's memoisation of (operations placed, register value).
    /// `None` when the budget ran out.
    fn linearizable(&self, budget: usize) -> Option<bool> {
        // The operations that take part: writes (acknowledged ones must be placed, the others
        // may be, anywhere after their invocation), and reads that returned something.
        struct Item {
            invoke: Time,
            end: Time,
            must: bool,
            /// For a write: the value it leaves (`None` = deleted). For a read: what it saw.
            value: Option<usize>,
            is_read: bool,
        }
        let mut values: BTreeMap<String, usize> = BTreeMap::new();
        let mut intern = |v: &String| {
            let next = values.len();
            *values.entry(v.clone()).or_insert(next)
        };
        let mut items: Vec<Item> = Vec::new();
        for op in self.ops {
            let (value, is_read) = match (&op.call, &op.ret) {
                (Call::Put { value }, _) => (Some(intern(value)), false),
                (Call::Delete, _) => (None, false),
                (Call::Get, Ret::Found { value, .. }) => (Some(intern(value)), true),
                (Call::Get, Ret::NotFound) => (None, true),
                (Call::Get, _) => continue,
            };
            let (must, end) = match (is_read, op.acked_at()) {
                (true, _) => (true, op.complete.unwrap_or(Time::MAX)),
                (false, Some(at)) => (true, at),
                (false, None) => (false, Time::MAX),
            };
            items.push(Item {
                invoke: op.invoke,
                end,
                must,
                value,
                is_read,
            });
        }
        let n = items.len();
        let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let mut done = vec![0u64; n.div_ceil(64).max(1)];
        let mut seen: HashSet<(Vec<u64>, Option<usize>)> = HashSet::new();
        // DFS frames: (register before the placement, where to resume, the item placed).
        let mut stack: Vec<(Option<usize>, usize, usize)> = Vec::new();
        let mut state: Option<usize> = None;
        let mut cursor = 0usize;
        let mut visited = 0usize;
        loop {
            if (0..n).all(|i| is_done(&done, i) || !items[i].must) {
                return Some(true);
            }
            // An operation may go next only if no unplaced one returned before it was invoked.
            let min_end = (0..n)
                .filter(|&i| !is_done(&done, i))
                .map(|i| items[i].end)
                .min()
                .unwrap_or(Time::MAX);
            let mut placed = None;
            while cursor < n {
                let i = cursor;
                cursor += 1;
                let item = &items[i];
                if is_done(&done, i) || item.invoke > min_end {
                    continue;
                }
                if item.is_read && item.value != state {
                    continue;
                }
                let next_state = if item.is_read { state } else { item.value };
                let mut next_done = done.clone();
                next_done[i / 64] |= 1 << (i % 64);
                if !seen.insert((next_done, next_state)) {
                    continue;
                }
                visited += 1;
                if visited > budget {
                    return None;
                }
                placed = Some((i, next_state));
                break;
            }
            match placed {
                Some((i, next_state)) => {
                    stack.push((state, cursor, i));
                    done[i / 64] |= 1 << (i % 64);
                    state = next_state;
                    cursor = 0;
                }
                None => {
                    let Some((prev_state, prev_cursor, i)) = stack.pop() else {
                        return Some(false);
                    };
                    done[i / 64] &= !(1 << (i % 64));
                    state = prev_state;
                    cursor = prev_cursor;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a history from `(call, invoke, complete, ret)` rows on key "k".
    fn history(rows: &[(Call, Time, Option<Time>, Ret)]) -> History {
        let mut h = History::new();
        for (call, invoke, complete, ret) in rows {
            let i = h.invoke("c", "k", call.clone(), *invoke);
            if let Some(at) = complete {
                h.complete(i, *at, ret.clone());
            }
        }
        h
    }

    fn put(v: &str) -> Call {
        Call::Put {
            value: v.to_string(),
        }
    }

    fn found(v: &str) -> Ret {
        Ret::Found {
            value: v.to_string(),
            ts: 0,
            writer: "w".to_string(),
        }
    }

    const OK: Ret = Ret::Stored { ts: 0 };

    fn kinds(report: &Report) -> Vec<AnomalyKind> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn sequential_history_passes() {
        let h = history(&[
            (put("a"), 0, Some(10), OK),
            (Call::Get, 20, Some(30), found("a")),
            (put("b"), 40, Some(50), OK),
            (Call::Get, 60, Some(70), found("b")),
            (Call::Delete, 80, Some(90), OK),
            (Call::Get, 100, Some(110), Ret::NotFound),
        ]);
        let r = check(&h);
        assert!(r.holds(), "{:?}", r.anomalies);
        assert!(r.not_linearizable.is_empty());
        assert_eq!((r.acked_writes, r.acked_writes_lost), (3, 0));
    }

    #[test]
    fn a_stale_read_is_told_apart_when_every_holder_was_down() {
        for (newest_live, down) in [(Some(2), true), (Some(3), false), (None, false)] {
            let mut h = history(&[
                (put("a"), 0, Some(10), Ret::Stored { ts: 2 }),
                (put("b"), 20, Some(30), Ret::Stored { ts: 3 }),
                (Call::Get, 40, Some(50), found("a")),
            ]);
            if let Some(ts) = newest_live {
                h.note_newest_live(2, ts);
            }
            let r = check(&h);
            // Counted as an anomaly either way; only the label differs.
            assert_eq!(kinds(&r), vec![AnomalyKind::StaleRead]);
            assert_eq!(r.all_holders_down(), usize::from(down), "{newest_live:?}");
        }
    }

    #[test]
    fn stale_read_and_lost_write_are_found() {
        let h = history(&[
            (put("a"), 0, Some(10), OK),
            (put("b"), 20, Some(30), OK),
            (Call::Get, 40, Some(50), found("a")),
        ]);
        let r = check(&h);
        assert_eq!(kinds(&r), vec![AnomalyKind::StaleRead]);
        assert_eq!(r.acked_writes_lost, 1);
        assert_eq!(r.not_linearizable.len(), 1);
        // The report names the missed write, the write read, and the read, in order.
        let shown: Vec<usize> = r.anomalies[0].ops.iter().map(|o| o.index).collect();
        assert_eq!(shown, vec![0, 1, 2]);
    }

    #[test]
    fn a_read_of_nothing_after_an_acknowledged_put_is_stale() {
        let h = history(&[
            (put("a"), 0, Some(10), OK),
            (Call::Get, 20, Some(30), Ret::NotFound),
        ]);
        let r = check(&h);
        assert_eq!(kinds(&r), vec![AnomalyKind::StaleRead]);
        assert_eq!(r.acked_writes_lost, 1);
    }

    #[test]
    fn a_delete_is_a_write_too() {
        let h = history(&[
            (put("a"), 0, Some(10), OK),
            (Call::Delete, 20, Some(30), OK),
            (Call::Get, 40, Some(50), found("a")),
        ]);
        assert_eq!(kinds(&check(&h)), vec![AnomalyKind::StaleRead]);
    }

    #[test]
    fn reads_going_backwards_are_found() {
        // b is still in flight, so the second read's "a" is not stale by itself; but the first
        // read already saw b, and a was acknowledged before b started.
        let h = history(&[
            (put("a"), 0, Some(10), OK),
            (put("b"), 20, Some(100), OK),
            (Call::Get, 30, Some(40), found("b")),
            (Call::Get, 50, Some(60), found("a")),
        ]);
        let r = check(&h);
        assert_eq!(kinds(&r), vec![AnomalyKind::ReadBackwards]);
        assert_eq!(r.not_linearizable.len(), 1);
    }

    #[test]
    fn a_value_nobody_wrote_is_a_phantom() {
        let h = history(&[(Call::Get, 0, Some(10), found("zz"))]);
        assert_eq!(kinds(&check(&h)), vec![AnomalyKind::PhantomRead]);
    }

    #[test]
    fn concurrent_writes_may_be_seen_in_either_order() {
        let h = history(&[
            (put("a"), 0, Some(50), OK),
            (put("b"), 10, Some(60), OK),
            (Call::Get, 20, Some(30), found("b")),
            (Call::Get, 40, Some(70), found("a")),
        ]);
        let r = check(&h);
        assert!(r.holds(), "{:?}", r.anomalies);
        assert!(r.not_linearizable.is_empty());
    }

    #[test]
    fn an_unknown_write_may_or_may_not_take_effect() {
        let took_effect = history(&[
            (put("a"), 0, Some(10), OK),
            (put("b"), 20, None, Ret::Unknown),
            (Call::Get, 100, Some(110), found("b")),
        ]);
        let r = check(&took_effect);
        assert!(r.holds() && r.not_linearizable.is_empty());
        let did_not = history(&[
            (put("a"), 0, Some(10), OK),
            (
                put("b"),
                20,
                Some(25),
                Ret::Failed {
                    error: "timeout".to_string(),
                },
            ),
            (Call::Get, 100, Some(110), found("a")),
        ]);
        let r = check(&did_not);
        assert!(r.holds() && r.not_linearizable.is_empty());
        // But once a read saw it, an older write cannot come back.
        let mut flip = took_effect.clone();
        let i = flip.invoke("c", "k", Call::Get, 120);
        flip.complete(i, 130, found("a"));
        assert_eq!(kinds(&check(&flip)), vec![AnomalyKind::ReadBackwards]);
    }

    #[test]
    fn linearizability_is_stricter_than_the_promise() {
        // Two concurrent writes seen as a, b, a: no read goes back to a write acknowledged
        // before another started (the promise holds), yet a cannot take effect twice.
        let h = history(&[
            (put("a"), 0, Some(100), OK),
            (put("b"), 0, Some(100), OK),
            (Call::Get, 10, Some(20), found("a")),
            (Call::Get, 30, Some(40), found("b")),
            (Call::Get, 50, Some(60), found("a")),
        ]);
        let r = check(&h);
        assert!(r.holds(), "{:?}", r.anomalies);
        assert_eq!(r.not_linearizable.len(), 1);
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = History::new();
        let a = h.invoke("c", "x", put("1"), 0);
        h.complete(a, 10, OK);
        let b = h.invoke("c", "y", Call::Get, 20);
        h.complete(b, 30, Ret::NotFound);
        let r = check(&h);
        assert!(r.holds() && r.not_linearizable.is_empty());
    }
}
