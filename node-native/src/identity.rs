//! The native peer's certificate, and the ring id it proves (`--verify-ids`; the rules are
//! node-core's `peer::identity`).
//!
//! A verifying peer presents one certificate on every WebRTC link it makes, so every description
//! it signals names the same fingerprint, and its id is that fingerprint's id. A durable peer
//! keeps the certificate in `<data-dir>/identity.pem` (the key in PKCS#8 and the certificate,
//! PEM, as webrtc-rs writes them; created with mode 0600, written to a temporary file and
//! renamed so a crash never leaves half a key), so it comes back with the same id and its
//! store; an in-memory peer makes a new one per run (a new id each start, like a new peer).

use std::path::{Path, PathBuf};

use anyhow::Context;
use node_core::Id;
use node_core::peer::identity::Fingerprint;
use webrtc::peer_connection::RTCCertificate;
use webrtc::peer_connection::crypto::{self, SignatureScheme};

/// The file a durable peer keeps its certificate in, inside its data directory.
pub const IDENTITY_FILE: &str = "identity.pem";

/// A certificate and the id it proves.
#[derive(Clone)]
pub struct Identity {
    pub certificate: RTCCertificate,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id())
            .field("fingerprint", &self.fingerprint.to_hex())
            .finish()
    }
}

impl Identity {
    /// A new ECDSA P-256 certificate (what browsers make by default).
    pub fn generate() -> anyhow::Result<Self> {
        let provider = crypto::default_provider().context("no crypto provider")?;
        let params = ::rtc::peer_connection::certificate::CertificateParams::new(vec![
            "chord-kv".to_owned(),
        ])
        .context("certificate parameters")?;
        let certificate =
            RTCCertificate::generate(provider.crypto(), SignatureScheme::EcdsaP256Sha256, params)
                .context("generating a certificate")?;
        Self::from_certificate(certificate)
    }

    /// The identity of `certificate`.
    pub fn from_certificate(certificate: RTCCertificate) -> anyhow::Result<Self> {
        let provider = crypto::default_provider().context("no crypto provider")?;
        let fingerprints = certificate
            .get_fingerprints(provider.crypto())
            .context("fingerprinting the certificate")?;
        let fingerprint = match fingerprints.as_slice() {
            [one] if one.algorithm.eq_ignore_ascii_case("sha-256") => {
                Fingerprint::parse_hex(&one.value)
            }
            _ => None,
        }
        .context("the certificate has no single sha-256 fingerprint")?;
        Ok(Self {
            certificate,
            fingerprint,
        })
    }

    /// The identity kept in `dir` ([`IDENTITY_FILE`]), made and kept there first if there is
    /// none.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => Self::from_pem(&pem).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let pem = identity
                    .certificate
                    .serialize_pem()
                    .context("serializing the certificate")?;
                write_private(&path, pem.as_bytes())?;
                Ok(identity)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let provider = crypto::default_provider().context("no crypto provider")?;
        let certificate =
            RTCCertificate::from_pem(pem, provider.crypto()).context("not a certificate PEM")?;
        Self::from_certificate(certificate)
    }

    /// The ring id this certificate proves.
    pub fn id(&self) -> Id {
        self.fingerprint.id()
    }
}

/// Writes `bytes` to `path` readable by the owner only, through a temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp: PathBuf = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_identity_comes_back_with_the_same_id_and_a_new_one_differs() {
        let dir = std::env::temp_dir().join(format!("chord-kv-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Identity::load_or_create(&dir).unwrap();
        let again = Identity::load_or_create(&dir).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.id(), again.id());
        assert_eq!(first.id(), first.fingerprint.id());
        let other = Identity::generate().unwrap();
        assert_ne!(other.fingerprint, first.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(IDENTITY_FILE), "not pem").unwrap();
        let error = Identity::load_or_create(&dir).unwrap_err();
        assert!(format!("{error:#}").contains(IDENTITY_FILE), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
