//! A tab's certificate, and the ring id it proves (the start option `verifyIds`; the rules are
//! node-core's `peer::identity`, the native peer's side is node-native/src/identity.rs).
//!
//! A verifying tab presents one ECDSA P-256 certificate on every link it makes (every
//! `RTCConfiguration` it builds names it in `certificates`, links.rs), so every description it
//! signals names that certificate's SHA-256 fingerprint, and its id is that fingerprint's id
//! (`Fingerprint::id`). The certificate is made with `RTCPeerConnection.generateCertificate`
//! for [`CERTIFICATE_LIFETIME_MS`] (365 days; Chromium and Firefox ESR both cut a longer
//! `expires` to that, without an error) and kept in IndexedDB so that a reload is the same
//! peer (storage.rs, "Certificates").
//!
//! The fingerprint comes from `RTCCertificate.getFingerprints()`, which Chromium and Firefox
//! ESR both have: it names exactly one `sha-256` value, the one their offers and answers carry
//! in `a=fingerprint`. That costs no peer connection (a throwaway offer to read the fingerprint
//! from its SDP would spend one of the tab's lifetime budget, node-core's `peer::budget`). A
//! browser without `getFingerprints`, or whose certificate has no single `sha-256` fingerprint,
//! cannot start a verifying peer (`bad_config`).

use js_sys::{Array, Function, Object, Reflect};
use node_core::Id;
use node_core::peer::identity::Fingerprint;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::driver::StartError;
use crate::storage;

/// The lifetime asked for a new certificate: 365 days, the longest Chromium and Firefox ESR give.
pub const CERTIFICATE_LIFETIME_MS: f64 = 365.0 * 24.0 * 3600.0 * 1000.0;

/// A kept certificate expiring sooner than this is replaced at start (a new id): a link cannot be
/// made with an expired certificate, and a tab may run for hours after its start.
pub const RENEW_BEFORE_MS: f64 = 24.0 * 3600.0 * 1000.0;

/// A certificate and the id it proves.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `RTCCertificate`.
    pub certificate: JsValue,
    pub fingerprint: Fingerprint,
}

impl Identity {
    pub fn id(&self) -> Id {
        self.fingerprint.id()
    }

    /// The identity of `certificate`, from `getFingerprints()` (module docs).
    pub fn of(certificate: JsValue) -> Result<Self, StartError> {
        let get = Reflect::get(&certificate, &"getFingerprints".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
            .ok_or((
                "bad_config",
                "verifyIds needs RTCCertificate.getFingerprints, which this browser lacks"
                    .to_string(),
            ))?;
        let list: Array = get
            .call0(&certificate)
            .map_err(|e| ("bad_config", format!("getFingerprints failed: {e:?}")))?
            .dyn_into()
            .map_err(|_| ("bad_config", "getFingerprints gave no list".to_string()))?;
        let sha256: Vec<String> = list
            .iter()
            .filter(|f| {
                Reflect::get(f, &"algorithm".into())
                    .ok()
                    .and_then(|a| a.as_string())
                    .is_some_and(|a| a.eq_ignore_ascii_case("sha-256"))
            })
            .filter_map(|f| Reflect::get(&f, &"value".into()).ok()?.as_string())
            .collect();
        let fingerprint = match sha256.as_slice() {
            [one] => Fingerprint::parse_hex(one),
            _ => None,
        }
        .ok_or((
            "bad_config",
            format!("the certificate has no single sha-256 fingerprint: {sha256:?}"),
        ))?;
        Ok(Self {
            certificate,
            fingerprint,
        })
    }

    /// A new ECDSA P-256 certificate.
    pub async fn generate() -> Result<Self, StartError> {
        let unavailable = |detail: String| {
            (
                "bad_config",
                format!("verifyIds: cannot make a certificate here: {detail}"),
            )
        };
        let class = Reflect::get(&js_sys::global(), &"RTCPeerConnection".into())
            .ok()
            .filter(|c| !c.is_undefined())
            .ok_or_else(|| unavailable("no RTCPeerConnection".into()))?;
        let generate: Function = Reflect::get(&class, &"generateCertificate".into())
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| unavailable("no RTCPeerConnection.generateCertificate".into()))?;
        let algorithm = Object::new();
        for (name, value) in [
            ("name", JsValue::from("ECDSA")),
            ("namedCurve", JsValue::from("P-256")),
            ("expires", JsValue::from(CERTIFICATE_LIFETIME_MS)),
        ] {
            let _ = Reflect::set(&algorithm, &name.into(), &value);
        }
        let promise: js_sys::Promise = generate
            .call1(&class, &algorithm)
            .map_err(|e| unavailable(format!("{e:?}")))?
            .dyn_into()
            .map_err(|_| unavailable("generateCertificate gave no Promise".into()))?;
        let certificate = JsFuture::from(promise)
            .await
            .map_err(|e| unavailable(format!("{e:?}")))?;
        Self::of(certificate)
    }

    /// Milliseconds since the epoch at which the certificate expires (`expires`).
    fn expires(&self) -> f64 {
        Reflect::get(&self.certificate, &"expires".into())
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    }
}

/// The tab's identity: with `persist`, the certificate kept for the id this tab used before (a
/// reload), else a new one, kept (storage.rs, "Certificates"); without, a new one each start.
/// The caller remembers the id in `sessionStorage` after this returns.
pub async fn load_or_create(persist: bool) -> Result<Identity, StartError> {
    if !persist {
        return Identity::generate().await;
    }
    if let Some(id) = storage::session_peer_id()
        && let Some(certificate) = storage::load_certificate(id)
            .await
            .map_err(|e| ("storage_error", e))?
    {
        let identity = Identity::of(certificate).map_err(|(_, e)| {
            (
                "storage_error",
                format!(
                    "IndexedDB database {}: the certificate of {id:08x}: {e}",
                    storage::IDENTITIES
                ),
            )
        })?;
        if identity.id() != Id(id) {
            return Err((
                "storage_error",
                format!(
                    "IndexedDB database {}: the certificate kept for {id:08x} proves {}",
                    storage::IDENTITIES,
                    identity.id()
                ),
            ));
        }
        if identity.expires() > js_sys::Date::now() + RENEW_BEFORE_MS {
            return Ok(identity);
        }
    }
    let identity = Identity::generate().await?;
    storage::keep_certificate(identity.id().0, &identity.certificate)
        .await
        .map_err(|e| ("storage_error", e))?;
    Ok(identity)
}
