//! Keeps js/types.d.ts (the package's TypeScript shapes) in step with the Rust sources: every
//! event type the driver emits, every error code the API rejects with, node-core's
//! `OpError::code` values, the signaling protocol's error codes and the metrics document's
//! fields are named there, and nothing else is. `tsc` (cargo xtask test) checks that the types
//! are precise; this checks that they are complete and current.

use std::collections::BTreeSet;

const TYPES: &str = include_str!("../js/types.d.ts");
const DRIVER: &str = include_str!("driver.rs");
const LIB: &str = include_str!("lib.rs");
const JS: &str = include_str!("js.rs");
const CORE_API: &str = include_str!("../../node-core/src/api.rs");

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The `'literal'` members of `export type NAME = ...;` in types.d.ts.
fn union(name: &str) -> BTreeSet<String> {
    let start = TYPES
        .find(&format!("export type {name} ="))
        .unwrap_or_else(|| panic!("types.d.ts has no `export type {name}`"));
    let body = &TYPES[start..];
    let body = &body[..body.find(';').expect("the union ends with ;")];
    body.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every `"literal"` in `source` that follows `prefix` (whitespace between them allowed).
fn literals_after(source: &str, prefix: &str) -> BTreeSet<String> {
    source
        .match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = source[at + prefix.len()..].trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .filter(|s| is_code(s))
        .collect()
}

#[test]
fn the_connection_budget_states_are_node_cores() {
    use node_core::peer::budget::BudgetStep;
    let start = TYPES
        .find("export interface ConnectionBudgetEvent")
        .expect("the budget event");
    let body = &TYPES[start..];
    let line = &body[body.find("state:").expect("its state")..];
    let line = &line[..line.find(';').expect("one line")];
    for step in [BudgetStep::Low, BudgetStep::Exhausted] {
        assert!(line.contains(&format!("'{}'", step.as_str())), "{line}");
    }
}

#[test]
fn every_event_type_the_driver_emits_is_in_the_event_union() {
    let emitted = literals_after(DRIVER, "\"type\":");
    let typed: BTreeSet<String> = literals_after(&TYPES.replace('\'', "\""), "type:");
    assert!(!emitted.is_empty());
    assert_eq!(
        emitted, typed,
        "driver.rs events vs PeerEvent in js/types.d.ts"
    );
    let states = literals_after(DRIVER, "\"state\":");
    let start = TYPES
        .find("export interface IntroducerConnectedEvent")
        .expect("the introducer events");
    let end = TYPES
        .find("export type IntroducerEvent")
        .expect("their union");
    let typed_states = literals_after(&TYPES[start..end].replace('\'', "\""), "state:");
    assert_eq!(states, typed_states, "introducer event states");
}

#[test]
fn op_error_codes_are_node_cores() {
    let start = CORE_API.find("pub fn code(&self)").expect("OpError::code");
    let end = start
        + CORE_API[start..]
            .find("pub fn http_status")
            .expect("after code");
    let core: BTreeSet<String> = CORE_API[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| is_code(s))
        .map(str::to_string)
        .collect();
    assert!(core.contains("too_large"), "{core:?}");
    assert_eq!(core, union("OpErrorCode"), "OpError::code vs OpErrorCode");
}

#[test]
fn every_error_code_this_crate_rejects_with_is_typed() {
    let sources = [DRIVER, LIB, JS].concat();
    let mut raised = BTreeSet::new();
    for prefix in ["error(", "Err((", "| ("] {
        raised.extend(literals_after(&sources, prefix));
    }
    let all = union("ErrorCode");
    let start_codes = union("StartErrorCode");
    let op_codes = union("OpErrorCode");
    let typed: BTreeSet<String> = all
        .iter()
        .chain(&start_codes)
        .chain(&op_codes)
        .cloned()
        .collect();
    for code in &raised {
        assert!(
            typed.contains(code),
            "{code:?} is raised but not in js/types.d.ts"
        );
    }
    // And nothing typed that this crate never raises (node-core's codes come from OpError).
    for code in all.iter().chain(&start_codes) {
        assert!(
            raised.contains(code),
            "{code:?} is in js/types.d.ts but never raised"
        );
    }
}

#[test]
fn introducer_error_codes_are_the_signaling_protocols() {
    let wire: BTreeSet<String> = signaling::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(wire, union("IntroducerErrorCode"));
}

#[test]
fn peer_kinds_are_node_cores() {
    use node_core::agent::Kind;
    let kinds = [Kind::Native, Kind::Chromium, Kind::Firefox, Kind::Other];
    let expected: BTreeSet<String> = kinds.iter().map(|k| k.as_str().to_string()).collect();
    assert_eq!(union("PeerKind"), expected);
    // Every kind is reachable from some agent.
    for kind in kinds {
        let agent = match kind {
            Kind::Other => "safari 18",
            k => k.as_str(),
        };
        assert_eq!(Kind::of(agent), kind);
    }
}
