//! One tab of the page (`web/`) as the browser tests drive it: evaluate JavaScript in it, read
//! its ring, and the ring's expected shape.

use serde_json::Value;
use tokio::runtime::Runtime;

use crate::browser::Tab;
use crate::{hex, json, ring_order};

/// A tab running the page, with its peer's ring id.
#[allow(missing_debug_implementations)] // `Tab` holds a live connection and has no `Debug`
pub struct Page<'a> {
    pub rt: &'a Runtime,
    pub tab: Tab,
    pub id: u32,
}

impl Page<'_> {
    /// Evaluates `js` (awaiting a promise); panics with the tab's console on failure.
    pub fn eval(&self, js: &str) -> Value {
        match self.rt.block_on(self.tab.eval(js)) {
            Ok(v) => v,
            Err(e) => panic!(
                "tab {}: `{js}` failed: {e:#}\nconsole:\n{}",
                hex(self.id),
                self.tab.console_log().join("\n")
            ),
        }
    }

    pub fn try_eval(&self, js: &str) -> anyhow::Result<Value> {
        self.rt.block_on(self.tab.eval(js))
    }

    /// The ids this tab's ring walk finds, in walk order.
    pub fn walk(&self) -> Vec<String> {
        self.try_eval("window.chord.peer.walk(64).then(w => w.map(v => v.id))")
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    pub fn successor(&self) -> Option<String> {
        self.try_eval("window.chord.peer.ring().successors[0] ?? null")
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }
}

/// The true successor of `id` among `ids`, as 8 hex digits.
pub fn successor_of(ids: &[u32], id: u32) -> String {
    ring_order(ids, id)
        .get(1)
        .cloned()
        .unwrap_or_else(|| hex(id))
}

/// A native peer's successor, once it is joined.
pub fn native_successor(port: u16) -> Option<String> {
    let (_, v) = json(port, "GET", "/ring", None)?;
    (v["joined"] == true)
        .then(|| v["successors"][0].as_str().map(str::to_string))
        .flatten()
}
