//! A peer's self-description ("agent"): what kind of peer it is, for tools and the page.
//!
//! A driver sets [`crate::Config::agent`]: `native 0.1.0` for `chord-node`, `chromium 131` or
//! `firefox 128` for a browser tab ([`of_user_agent`]). A peer reports it in its answer to a
//! ring walk (`Body::View`, `node/walk.rs`), so a walk names every peer's kind.
//!
//! It is display text, nothing more: no protocol decision depends on it, and a peer may claim
//! anything. What a peer receives is untrusted, so [`bounded`] is applied on both ends: at most
//! [`MAX_AGENT_BYTES`] bytes, cut at a character boundary, without control or bidirectional
//! formatting characters (a label that reorders or hides the text around it). Pages must still
//! escape it like any other text.

/// Longest agent string a node sends or keeps from an answer (bytes of UTF-8).
pub const MAX_AGENT_BYTES: usize = 64;

/// Characters dropped from agent strings: control characters and the Unicode bidirectional
/// formatting characters.
fn is_dropped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` made safe to keep and show: without control and bidi formatting characters, spaces
/// trimmed at both ends, at most [`MAX_AGENT_BYTES`] bytes (longer text is cut at a character
/// boundary).
pub fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_AGENT_BYTES));
    for c in text.trim().chars().filter(|c| !is_dropped(*c)) {
        if out.len() + c.len_utf8() > MAX_AGENT_BYTES {
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// The agent string of a browser tab from its `navigator.userAgent`: `firefox <major>`,
/// `chromium <major>` (Chrome, Edge, Opera and the other Chromium-based browsers), `safari
/// <major>`, or `browser` when none of these is recognized.
pub fn of_user_agent(ua: &str) -> String {
    // Order matters: Chromium's user agent also names Safari, and some embed "Firefox" nowhere
    // but say "FxiOS" (Firefox on iOS, WebKit underneath; reported as firefox too).
    let major = |token: &str| -> Option<String> {
        let at = ua.find(token)? + token.len();
        let digits: String = ua[at..].chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    };
    let agent = if let Some(v) = major("Firefox/").or_else(|| major("FxiOS/")) {
        format!("firefox {v}")
    } else if let Some(v) = major("Chrome/")
        .or_else(|| major("Chromium/"))
        .or_else(|| major("CriOS/"))
    {
        format!("chromium {v}")
    } else if ua.contains("Safari/")
        && let Some(v) = major("Version/")
    {
        format!("safari {v}")
    } else {
        "browser".to_string()
    };
    bounded(&agent)
}

/// What kind of peer an agent string names (the page's legend: native, Chromium tab, Firefox
/// tab, other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Native,
    Chromium,
    Firefox,
    /// Any other browser, an unknown agent, or none (a peer that predates agents).
    Other,
}

impl Kind {
    pub fn of(agent: &str) -> Self {
        match agent.split_whitespace().next() {
            Some("native") => Self::Native,
            Some("chromium") => Self::Chromium,
            Some("firefox") => Self::Firefox,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Chromium => "chromium",
            Self::Firefox => "firefox",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_text_at_a_character_boundary() {
        let long = "é".repeat(100); // 2 bytes each
        let cut = bounded(&long);
        assert_eq!(cut.len(), MAX_AGENT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("a{}", "€".repeat(40)); // 1 + 3 * n bytes
        let cut = bounded(&odd);
        assert!(cut.len() <= MAX_AGENT_BYTES && cut.len() > MAX_AGENT_BYTES - 3);
        assert_eq!(bounded("native 0.1.0"), "native 0.1.0");
        assert_eq!(bounded(&"x".repeat(10_000)).len(), MAX_AGENT_BYTES);
    }

    #[test]
    fn bounded_drops_control_and_bidi_characters() {
        assert_eq!(
            bounded("  fire\u{0}fox\n 1\u{1b}[31m28 \t"),
            "firefox 1[31m28"
        );
        assert_eq!(bounded("\u{202E}evitan\u{2066}"), "evitan");
        assert_eq!(bounded("\u{7}\u{7}"), "");
    }

    #[test]
    fn user_agents_of_the_browsers_we_test() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "firefox 128",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 HeadlessChrome/131.0.0.0 Safari/537.36",
                "chromium 131",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                 Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
                "chromium 131",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like \
                 Gecko) Version/18.1 Safari/605.1.15",
                "safari 18",
            ),
            ("curl/8.0", "browser"),
            ("", "browser"),
        ];
        for (ua, want) in cases {
            assert_eq!(of_user_agent(ua), want, "{ua}");
        }
    }

    #[test]
    fn kinds_of_agents() {
        assert_eq!(Kind::of("native 0.1.0"), Kind::Native);
        assert_eq!(Kind::of("chromium 131"), Kind::Chromium);
        assert_eq!(Kind::of("firefox 128"), Kind::Firefox);
        assert_eq!(Kind::of("safari 18"), Kind::Other);
        assert_eq!(Kind::of(""), Kind::Other);
        assert_eq!(Kind::of("nativeish"), Kind::Other);
    }
}
