//! Ring ids bound to the certificate of a peer's WebRTC links (issue 11, item 4).
//!
//! Every WebRTC link runs DTLS, and each side's session description names the SHA-256
//! fingerprint of the certificate that side will present (`a=fingerprint:sha-256 AB:CD:...`).
//! Both stacks (webrtc-rs, and the browser's) close a handshake whose certificate does not hash
//! to the fingerprint of the remote description. So a peer that derives its id from its own
//! certificate's fingerprint, [`Fingerprint::id`] (the first 32 bits of SHA-1 over the 32
//! fingerprint bytes, the same hash as every ring id), can prove its id on every link it
//! makes: the receiver reads the fingerprint from the offer or answer ([`sdp_fingerprint`]) and
//! compares the id it yields with the id the signal claims ([`check`]). A link whose
//! description does not prove its claimed id is never built; the driver counts it
//! (`LinkStats::identity_refused`).
//!
//! # The rules
//! - Only `sha-256` fingerprints count, and a description must name exactly one (every
//!   `a=fingerprint` line, session or media level, the same `sha-256` value). A description with
//!   another algorithm, two different values, or none proves nothing: a DTLS stack that accepts
//!   the remote certificate when *any* listed fingerprint matches would otherwise let an
//!   attacker list the victim's fingerprint beside its own. Every line any stack could read as
//!   a fingerprint counts (`a= fingerprint:`, `a=FINGERPRINT:`, ...; [`sdp_fingerprint`]).
//! - A verifying table never lets an offer replace an *open* link
//!   ([`super::table::LinkTable::verify_ids`]): a certificate is kept for good, so every
//!   description a peer ever signalled proves its id forever, and anyone who saw one (a relay,
//!   a peer it linked to) could replay it to tear that peer's links down. A restarted peer's new
//!   offer is answered once the old link's failure is detected (heartbeats), as the lower-id
//!   side of a link already does (`super::signal`). A replayed *answer* can still spoil one
//!   attempt of ours (we take it, ICE then fails, and we offer again); that costs a retry.
//! - 32 bits are few: DTLS stacks check that the remote holds the key of its certificate, not
//!   the certificate's self-signature, so a grinder can vary certificate bytes under one key
//!   until the fingerprint yields a given id, about 2^32 hash evaluations (minutes to hours on
//!   one machine). So a verifying table also remembers the fingerprint each id was proven with
//!   (trust on first use, the 4096 most recent ids) and refuses a description proving a known
//!   id with another one ([`IdProof::Changed`]). A ground certificate then passes only with
//!   peers that never saw the true holder; an honest peer never changes fingerprint under one
//!   id (its certificate is kept, and a new one means a new id).
//! - Verification is a ring policy the driver turns on in its link table
//!   ([`super::table::LinkTable::verify_ids`], from `--verify-ids` or the tab's `verifyIds`): a
//!   verifying peer derives its own id from its certificate and
//!   refuses every description that does not prove its sender's id. Ids chosen by hand
//!   (`--id`, the default SHA-1 of `host:port` the original project uses, a tab's `id`) cannot
//!   be proven, so a ring that verifies consists of verifying peers only; see
//!   docs/threat-model.md, "Identities".
//! - 32 bits are not a cryptographic strength. Proving an id costs the prover one certificate;
//!   taking over one given id costs about 2^32 certificates (days of one core). Choosing *some*
//!   id in a range (grinding a ring position) stays cheap, as the threat model says.

use crate::id::Id;

/// The SHA-256 fingerprint of a DTLS certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// `AB:CD:...` (32 colon-separated hex bytes, either case) as SDP writes it.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Self(bytes))
    }

    /// The ring id this fingerprint proves: the first 32 bits of SHA-1 over its 32 bytes.
    pub fn id(&self) -> Id {
        Id::of(&self.0)
    }

    /// `AB:CD:...`, as SDP writes it.
    pub fn to_hex(&self) -> String {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }
}

/// The one `sha-256` fingerprint a session description names (module docs, "The rules").
///
/// Lines are read the most lenient way any stack reads them, so that no stack can see a
/// fingerprint this check does not: webrtc-rs trims what follows `a=` (`a= fingerprint:` is a
/// fingerprint to it) and takes the first line it finds at each level, and a browser may match
/// the attribute name without regard to case. Every line whose attribute is `fingerprint` in
/// any of these spellings counts, and all of them must name the same `sha-256` value.
pub fn sdp_fingerprint(sdp: &str) -> Option<Fingerprint> {
    let mut found: Option<Fingerprint> = None;
    for line in sdp.split(['\n', '\r']) {
        let line = line.trim();
        let Some(attribute) = line
            .get(..2)
            .filter(|t| t.eq_ignore_ascii_case("a="))
            .map(|_| line[2..].trim_start())
        else {
            continue;
        };
        let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
        if !name.trim().eq_ignore_ascii_case("fingerprint") {
            continue;
        }
        let mut parts = value.split_whitespace();
        let (Some(algorithm), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        if !algorithm.eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let fingerprint = Fingerprint::parse_hex(hex)?;
        if found.is_some_and(|f| f != fingerprint) {
            return None;
        }
        found = Some(fingerprint);
    }
    found
}

/// Whether a description proves the id its sender claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdProof {
    /// Its fingerprint yields the claimed id.
    Proven,
    /// Its fingerprint yields another id.
    Mismatch { proven: Id },
    /// It names no usable fingerprint (module docs, "The rules").
    NoFingerprint,
    /// Its fingerprint yields the claimed id, but this peer saw the id proven by another
    /// fingerprint before (module docs, "The rules": a ground certificate).
    Changed,
}

/// Checks the description `sdp` signalled under the claimed id `claimed`.
pub fn check(claimed: Id, sdp: &str) -> IdProof {
    proving_fingerprint(claimed, sdp).map_or_else(|why| why, |_| IdProof::Proven)
}

/// The fingerprint of `sdp` if it proves `claimed`, else why not ([`check`]).
pub fn proving_fingerprint(claimed: Id, sdp: &str) -> Result<Fingerprint, IdProof> {
    match sdp_fingerprint(sdp) {
        None => Err(IdProof::NoFingerprint),
        Some(f) if f.id() == claimed => Ok(f),
        Some(f) => Err(IdProof::Mismatch { proven: f.id() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "6B:8B:28:1A:4C:D2:5E:9F:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01:02:03:04:05:06:07:08";

    fn sdp(lines: &[&str]) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s
    }

    #[test]
    fn a_fingerprint_round_trips_and_yields_the_sha1_prefix_of_its_bytes() {
        let f = Fingerprint::parse_hex(FP).unwrap();
        assert_eq!(f.to_hex(), FP);
        assert_eq!(Fingerprint::parse_hex(&FP.to_lowercase()), Some(f));
        assert_eq!(f.id(), Id::of(&f.0));
        for bad in [
            "",
            "6B",
            &FP[3..],
            &format!("{FP}:09"),
            &FP.replace("6B", "6G"),
        ] {
            assert_eq!(Fingerprint::parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_sha256_value_counts_and_anything_ambiguous_proves_nothing() {
        let f = Fingerprint::parse_hex(FP).unwrap();
        let line = format!("a=fingerprint:sha-256 {FP}");
        // Session and media level, the same value: fine.
        let both = sdp(&[
            &line,
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            &line,
        ]);
        assert_eq!(sdp_fingerprint(&both), Some(f));
        assert_eq!(check(f.id(), &both), IdProof::Proven);
        assert_eq!(
            check(Id(f.id().0 ^ 1), &both),
            IdProof::Mismatch { proven: f.id() }
        );
        let other = FP.replace("6B", "6C");
        for bad in [
            sdp(&[]),
            sdp(&[&format!("a=fingerprint:sha-1 {}", &FP[..59])]),
            sdp(&[&line, &format!("a=fingerprint:sha-1 {}", &FP[..59])]),
            sdp(&[&line, &format!("a=fingerprint:sha-256 {other}")]),
            sdp(&["a=fingerprint:sha-256"]),
            sdp(&["a=fingerprint:sha-256 zz"]),
            // Spellings some stack reads as a fingerprint: each one counts, so the victim's
            // value beside the attacker's proves nothing.
            sdp(&[&format!("a= fingerprint:sha-256 {other}"), &line]),
            sdp(&[&line, &format!("a=FINGERPRINT:sha-256 {other}")]),
            sdp(&[&line, &format!("A=fingerprint:sha-256 {other}")]),
            sdp(&[&line, &format!("a=fingerprint :SHA-256  {other} ")]),
            sdp(&[&line, &format!("  a=Fingerprint:sha-256\t{other}")]),
            sdp(&[&line, "a=fingerprint"]),
            sdp(&[&line, &format!("a=fingerprint:sha-256 {FP} extra")]),
        ] {
            assert_eq!(check(f.id(), &bad), IdProof::NoFingerprint, "{bad}");
        }
    }
}
