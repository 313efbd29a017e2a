//! A tab's durable store: IndexedDB, one database per peer id (`chord-kv-<id>`).
//!
//! Follows node-core's persistence contract (node-core/src/persist.rs): every `Event::Stored`
//! is written, the last version per key, every `Event::Collected` deletes its key, and a restarted peer (a reloaded tab: its id is kept in
//! `sessionStorage`, so a reload is the same peer and a new tab a new one) is restored from them
//! before it joins.
//!
//! Durability: a tab acknowledges only what its database committed. IndexedDB is asynchronous,
//! so the driver writes each drain's entries in one readwrite transaction and *holds* every
//! output the core produced after them (a replica's `ReplicateAck`, a leader's `Replicate` and
//! answer, the `OpDone` that resolves a put's Promise) until that transaction's `complete`
//! event; later outputs queue behind it, so links keep their order. The rule is node-core's
//! (node-core/src/peer/commit.rs), the native peer's too; `Driver::persist` in driver.rs carries
//! it out. So a put is acknowledged only once it is in the IndexedDB of every acknowledging tab,
//! a tab serving alone included. "Committed" is the browser's own durability
//! (`complete` with the default durability: it survives a closed or crashed tab and browser;
//! Chromium does not promise an OS crash, see the IndexedDB spec's "relaxed" durability).
//! A transaction that fails releases its outputs all the same (counted as a storage error): a
//! tab whose database is broken keeps serving as a memory replica rather than freezing.
//!
//! An unreadable database or a malformed record fails the peer's start with an error that names
//! the database and the key: a silently empty store would look like lost data.
//!
//! # Certificates (`verifyIds`)
//! A tab that proves its id (node-core's `peer::identity`; the start option `verifyIds`, see
//! identity.rs) keeps its certificate in one database shared by the origin's tabs,
//! `chord-kv-identities` (version 1), object store `certificates`: the key is the id it proves
//! (8 hex digits, as in `sessionStorage` and the store's database name), the value the
//! `RTCCertificate` itself (structured-cloneable: Chromium and Firefox ESR give back a
//! certificate whose fingerprint and `expires` are the original's). So the layout per tab is:
//! - `sessionStorage["chord-kv-peer-id"]`: the id (as without `verifyIds`);
//! - `chord-kv-identities` / `certificates` / `<id>`: the certificate that proves it;
//! - `chord-kv-<id>`: the store.
//!
//! A reload finds the id in `sessionStorage` and its certificate under that key, so it presents
//! the same certificate and is the same peer; a new tab has no id in its `sessionStorage` and
//! makes a new certificate. The certificate is written (and its transaction completed) before
//! the id goes into `sessionStorage`. A certificate under the remembered id that does not prove
//! that id is a start error (`storage_error`); a missing one, or one expiring within a day (the
//! browsers make them for at most 365 days), is replaced by a new certificate, and so a new id
//! (a new peer; the old store's database stays behind, like the database of a closed tab).
//! `storage: 'memory'` keeps neither the id nor the certificate: a new one each start.

use js_sys::{Array, Promise};
use node_core::store::Entry;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbOpenDbRequest, IdbRequest, IdbTransactionMode};

const ENTRIES: &str = "entries";
const META: &str = "meta";
const SESSION_KEY: &str = "chord-kv-peer-id";
/// The database of the tabs' certificates (module docs, "Certificates").
pub const IDENTITIES: &str = "chord-kv-identities";
const CERTIFICATES: &str = "certificates";

/// The database of one peer.
#[derive(Debug, Clone)]
pub struct Storage {
    name: String,
    db: IdbDatabase,
}

/// What the database held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<(String, Entry)>,
    pub lamport: u64,
}

/// The peer id this tab used before (a reload), from `sessionStorage`.
pub fn session_peer_id() -> Option<u32> {
    let storage = web_sys::window()?.session_storage().ok()??;
    let text = storage.get_item(SESSION_KEY).ok()??;
    u32::from_str_radix(&text, 16)
        .ok()
        .filter(|_| text.len() == 8)
}

pub fn remember_session_peer_id(id: u32) {
    if let Some(Ok(Some(storage))) = web_sys::window().map(|w| w.session_storage()) {
        let _ = storage.set_item(SESSION_KEY, &format!("{id:08x}"));
    }
}

/// Resolves when `request` succeeds (to its result) or rejects with its error.
async fn done(request: &IdbRequest) -> Result<JsValue, JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(promise).await?;
    request.result()
}

fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}

/// Opens (creating if needed, with these object stores) version 1 of database `name`.
async fn open_database(name: &str, stores: &'static [&'static str]) -> Result<IdbDatabase, String> {
    let factory = web_sys::window()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or_else(|| format!("IndexedDB is not available here (database {name})"))?;
    let request: IdbOpenDbRequest = factory
        .open_with_u32(name, 1)
        .map_err(|e| format!("cannot open IndexedDB database {name}: {}", describe(&e)))?;
    let upgrade = {
        let request = request.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Ok(db) = request.result().and_then(|r| r.dyn_into::<IdbDatabase>()) {
                for store in stores {
                    let _ = db.create_object_store(store);
                }
            }
        })
    };
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = done(&request)
        .await
        .map_err(|e| format!("cannot open IndexedDB database {name}: {}", describe(&e)))?;
    request.set_onupgradeneeded(None);
    drop(upgrade);
    db.dyn_into()
        .map_err(|_| format!("IndexedDB database {name} did not open"))
}

/// The certificate kept for id `id` (module docs, "Certificates"), if any.
pub async fn load_certificate(id: u32) -> Result<Option<JsValue>, String> {
    let db = open_database(IDENTITIES, &[CERTIFICATES]).await?;
    let fail = |e: &JsValue| {
        format!(
            "cannot read the certificate of {id:08x} from IndexedDB database {IDENTITIES}: {}",
            describe(e)
        )
    };
    let request = db
        .transaction_with_str(CERTIFICATES)
        .and_then(|t| t.object_store(CERTIFICATES))
        .and_then(|store| store.get(&format!("{id:08x}").into()))
        .map_err(|e| fail(&e));
    let result = match request {
        Ok(request) => done(&request).await.map_err(|e| fail(&e)),
        Err(e) => Err(e),
    };
    db.close();
    result.map(|value| (!value.is_undefined()).then_some(value))
}

/// Keeps `certificate` under id `id`; resolves once the transaction completed.
pub async fn keep_certificate(id: u32, certificate: &JsValue) -> Result<(), String> {
    let db = open_database(IDENTITIES, &[CERTIFICATES]).await?;
    let fail = |e: &JsValue| {
        format!(
            "cannot keep the certificate of {id:08x} in IndexedDB database {IDENTITIES}: {}",
            describe(e)
        )
    };
    let result = async {
        let transaction = db
            .transaction_with_str_and_mode(CERTIFICATES, IdbTransactionMode::Readwrite)
            .map_err(|e| fail(&e))?;
        transaction
            .object_store(CERTIFICATES)
            .and_then(|store| store.put_with_key(certificate, &format!("{id:08x}").into()))
            .map_err(|e| fail(&e))?;
        let committed = Promise::new(&mut |resolve, reject| {
            transaction.set_oncomplete(Some(&resolve));
            transaction.set_onabort(Some(&reject));
        });
        JsFuture::from(committed)
            .await
            .map_err(|_| fail(&"the transaction aborted".into()))?;
        Ok(())
    }
    .await;
    db.close();
    result
}

impl Storage {
    /// Opens (creating if needed) the database of peer `id`.
    pub async fn open(id: u32) -> Result<Self, String> {
        let name = format!("chord-kv-{id:08x}");
        let db = open_database(&name, &[ENTRIES, META]).await?;
        Ok(Self { name, db })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything stored, for `Node::restore`. A record that does not parse is an error.
    pub async fn load(&self) -> Result<Loaded, String> {
        let name = &self.name;
        let fail = |what: &str, e: &JsValue| {
            format!(
                "cannot read {what} of IndexedDB database {name}: {}",
                describe(e)
            )
        };
        let transaction = self
            .db
            .transaction_with_str_sequence(&Array::of2(&ENTRIES.into(), &META.into()))
            .map_err(|e| fail("a transaction", &e))?;
        let entries = transaction
            .object_store(ENTRIES)
            .map_err(|e| fail("entries", &e))?;
        let keys = entries.get_all_keys().map_err(|e| fail("keys", &e))?;
        let values = entries.get_all().map_err(|e| fail("entries", &e))?;
        let lamport = transaction
            .object_store(META)
            .and_then(|meta| meta.get(&"lamport".into()))
            .map_err(|e| fail("the clock", &e))?;
        let keys: Array = done(&keys).await.map_err(|e| fail("keys", &e))?.into();
        let values: Array = done(&values).await.map_err(|e| fail("entries", &e))?.into();
        let lamport = done(&lamport).await.map_err(|e| fail("the clock", &e))?;
        let mut loaded = Loaded {
            entries: Vec::with_capacity(keys.length() as usize),
            lamport: lamport.as_f64().map_or(0, |v| v as u64),
        };
        for (key, value) in keys.iter().zip(values.iter()) {
            let key = key
                .as_string()
                .ok_or_else(|| format!("IndexedDB database {name}: a key is not a string"))?;
            let entry = value
                .as_string()
                .and_then(|text| serde_json::from_str::<Entry>(&text).ok())
                .ok_or_else(|| {
                    format!("IndexedDB database {name}: the record of key {key:?} is malformed")
                })?;
            loaded.entries.push((key, entry));
        }
        Ok(loaded)
    }

    /// Queues one transaction with these changes, in order (`Some` = `Event::Stored`, put;
    /// `None` = `Event::Collected`, delete), and the clock, and calls `done(committed)` once it
    /// completed (true) or failed (false). Returns false, without calling `done`, if IndexedDB
    /// refused the transaction at once (the driver counts it).
    pub fn write(
        &self,
        entries: &[(String, Option<Entry>)],
        lamport: u64,
        done: impl FnOnce(bool) + 'static,
    ) -> bool {
        let Ok(transaction) = self.db.transaction_with_str_sequence_and_mode(
            &Array::of2(&ENTRIES.into(), &META.into()),
            IdbTransactionMode::Readwrite,
        ) else {
            return false;
        };
        let (Ok(store), Ok(meta)) = (
            transaction.object_store(ENTRIES),
            transaction.object_store(META),
        ) else {
            return false;
        };
        let mut ok = true;
        for (key, entry) in entries {
            let Some(entry) = entry else {
                ok &= store.delete(&JsValue::from(key.as_str())).is_ok();
                continue;
            };
            let Ok(text) = serde_json::to_string(entry) else {
                ok = false;
                continue;
            };
            ok &= store
                .put_with_key(&JsValue::from(text), &JsValue::from(key.as_str()))
                .is_ok();
        }
        ok &= meta
            .put_with_key(&JsValue::from(lamport as f64), &"lamport".into())
            .is_ok();
        // One of complete / abort fires (an error aborts the transaction); `done` runs once.
        let done = std::rc::Rc::new(std::cell::RefCell::new(Some(done)));
        let on = |committed: bool| {
            let done = done.clone();
            Closure::once_into_js(move || {
                if let Some(done) = done.borrow_mut().take() {
                    done(committed);
                }
            })
        };
        transaction.set_oncomplete(Some(on(true).unchecked_ref()));
        transaction.set_onabort(Some(on(false).unchecked_ref()));
        ok
    }

    pub fn close(&self) {
        self.db.close();
    }
}
