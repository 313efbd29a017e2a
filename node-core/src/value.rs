//! How a JSON value of the HTTP and JavaScript APIs is kept in the store's `String` values.
//!
//! The original project's `/put` took any JSON value and `/get` gave the same value back, while
//! the core's values are strings. The encoding keeps a plain string readable as itself and makes
//! every other value round-trip exactly:
//!
//! - a string that does not begin with U+001E (RECORD SEPARATOR) is stored as it is;
//! - anything else (a number, `true`/`false`, `null`, an array, an object, or a string that
//!   does begin with U+001E) is stored as U+001E followed by the value's compact JSON text.
//!
//! U+001E is the prefix RFC 7464 ("JSON Text Sequences") puts before each JSON text, and a
//! control character that typed or pasted text does not contain, so in practice every user
//! string is stored unchanged. Decoding is the inverse: a value beginning with U+001E whose rest
//! parses as JSON is that JSON value; any other stored string (including a malformed one
//! written by some other client) reads back as a string. Both the native HTTP API and the
//! browser peer's JavaScript API use these functions, so a number put over HTTP is read as a
//! number in a tab and the other way round.

use serde_json::Value;

/// The first character of an encoded non-string value.
pub const JSON_MARKER: char = '\u{1e}';

/// The store string for `value`.
pub fn encode(value: &Value) -> String {
    match value {
        Value::String(text) if !text.starts_with(JSON_MARKER) => text.clone(),
        other => format!("{JSON_MARKER}{other}"),
    }
}

/// The JSON value a store string stands for.
pub fn decode(stored: &str) -> Value {
    stored
        .strip_prefix(JSON_MARKER)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| Value::String(stored.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_strings_are_stored_as_they_are() {
        assert_eq!(encode(&json!("hello")), "hello");
        assert_eq!(encode(&json!("")), "");
        assert_eq!(encode(&json!("{\"a\": 1}")), "{\"a\": 1}");
        assert_eq!(decode("hello"), json!("hello"));
        assert_eq!(decode("42"), json!("42"));
    }

    #[test]
    fn other_values_round_trip_exactly() {
        let values = [
            json!(42),
            json!(-1.5),
            json!(true),
            json!(null),
            json!([1, "two", {"three": 3}]),
            json!({"nested": {"list": [null, false]}, "s": "x"}),
            json!("\u{1e}starts with the marker"),
            json!("\u{1e}"),
        ];
        for value in values {
            let stored = encode(&value);
            assert!(stored.starts_with(JSON_MARKER), "{stored:?}");
            assert_eq!(decode(&stored), value);
        }
        assert_eq!(encode(&json!(42)), "\u{1e}42");
    }

    #[test]
    fn a_malformed_encoding_reads_as_the_string_it_is() {
        assert_eq!(decode("\u{1e}not json"), json!("\u{1e}not json"));
    }
}
