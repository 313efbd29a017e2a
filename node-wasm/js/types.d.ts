// chord-kv's JS API types. wasm-bindgen copies this file verbatim into the generated
// `node_wasm.d.ts` (`typescript_custom_section` in node-wasm/src/lib.rs), next to the
// `ChordPeer` class whose methods name these types (`unchecked_return_type`,
// `unchecked_param_type`). Every shape here is what node-wasm builds with `json!` (lib.rs,
// driver.rs, js.rs) or node-core serializes (peer/stats.rs); node-wasm's `types` unit test
// checks that every event type and error code in the Rust sources is named here, and
// `cargo xtask test` type-checks node-wasm/types-test against the built package.

/** A ring id: 8 lowercase hex digits, e.g. `"0a1b2c3d"` (node-core's `Id` display). */
export type PeerId = string;

/** What `put` stores and `get` gives back: any JSON value (see README, "How values are stored"). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A replication factor or quorum size: `start` accepts 1 to 16. */
export type QuorumSize = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 16;

/** The options of `ChordPeer.start`. */
export interface StartOptions {
  /**
   * The introducer of the first link: the signaling server or any chord-node's `/ws`
   * (`ws://host:port/ws`, `wss://...`), or `page:<room>` for an in-page introducer shared by
   * the peers of one page.
   */
  introducer: `ws://${string}` | `wss://${string}` | `page:${string}`;
  /** ICE server URLs, e.g. `['stun:stun.example.org:3478']`; default none. */
  iceServers?: string[];
  /**
   * This peer's id (8 hex digits); default the tab's id from `sessionStorage`, else random.
   * Not with `verifyIds`.
   */
  id?: PeerId;
  /** `'indexeddb'` (default: one database per peer id) or `'memory'` (keeps nothing). */
  storage?: 'indexeddb' | 'memory';
  /** Replication factor k: the key's owner and its next k-1 successors hold it. */
  replicas?: QuorumSize;
  /** Replicas that must answer a `get`. */
  readQuorum?: QuorumSize;
  /** Replicas that must acknowledge a `put` or `delete`. */
  writeQuorum?: QuorumSize;
  /**
   * Peer connections this tab may create in its lifetime, 2 to 500 (default 500, Chromium's
   * per-tab cap). A `connection_budget` event says when 80% are used; at 98% the peer leaves
   * the ring gracefully and stops.
   */
  connectionLimit?: number;
  /**
   * What this peer says it is in ring walks (`WalkEntry.agent`), at most 64 bytes (longer text
   * is cut); default derived from `navigator.userAgent`: `'chromium 131'`, `'firefox 128'`,
   * `'safari 18'` or `'browser'`.
   */
  agent?: string;
  /**
   * Prove this peer's id by the certificate of its links, and refuse peers that do not prove
   * theirs (`metrics().driver.rtc.identity_refused`): the id is derived from an ECDSA P-256
   * certificate kept in IndexedDB (`chord-kv-identities`; a reload keeps it, `storage:
   * 'memory'` makes a new one each start). Default false; with `id` a `bad_config` error.
   */
  verifyIds?: boolean;
}

/** `put` and `delete` resolve with this: the write's Lamport timestamp and its route. */
export interface WriteResult {
  ok: true;
  /** The version's Lamport timestamp. */
  ts: number;
  /** Hops from this peer to the key's leader. */
  hops: number;
  /** Milliseconds from the call to the answer. */
  latency_ms: number;
}

/** `get` of a key that holds a value. */
export interface GetFound {
  found: true;
  /** The value as it was put (`null` if `null` was put). */
  value: JsonValue;
  ts: number;
  /** Who wrote it (`put`'s `writerId`, default the writer's peer id). */
  writer_id: string;
  hops: number;
  latency_ms: number;
}

/** `get` of a key that was never put or was deleted. */
export interface GetNotFound {
  found: false;
  value: null;
  ts: null;
  writer_id: null;
  hops: number;
  latency_ms: number;
}

/** What `get` resolves with; narrow on `found`. */
export type GetResult = GetFound | GetNotFound;

/** One holder of the key a `flood` found. */
export interface FloodMatch {
  peer: PeerId;
  /** The holder's HTTP address when it reported one (native peers); `null` for tabs. */
  addr: string | null;
}

/** The flood's own counters. */
export interface FloodStats {
  /** TTL the query went out with (after lowering to the ring's maximum). */
  ttl: number;
  /** Hits that reached this peer in time (a holder answering twice counts twice). */
  hits_received: number;
  /** Links to the holder whose hit came first (0 if this peer holds the key); null: no hit. */
  hops_to_first_hit: number | null;
  /** Milliseconds to the first hit (0 if this peer holds the key); null: no hit. */
  ms_to_first_hit: number | null;
  /** Neighbours this peer sent the query to. */
  neighbors_asked: number;
  /** Query messages of the whole flood that this peer knows of. */
  forwarded: number;
}

/** What `flood` resolves with (the Gnutella-style baseline). */
export interface FloodResult {
  key: string;
  /** Holders whose hits arrived, sorted by id, without duplicates. */
  matches: FloodMatch[];
  stats: FloodStats;
  latency_ms: number;
}

/** What `lookup` resolves with: the owner of the key's id, as a routed Chord lookup found it. */
export interface LookupResult {
  /** The key's ring id (SHA-1, first 32 bits), as `keyId` gives it. */
  key_id: PeerId;
  owner: PeerId;
  hops: number;
  latency_ms: number;
}

/** What `ring()` returns: this peer's pointers. */
export interface RingView {
  id: PeerId;
  joined: boolean;
  predecessor: PeerId | null;
  successors: PeerId[];
  /** `fingers[i]`: the believed owner of `id + 2^i`, `null` while unknown. */
  fingers: (PeerId | null)[];
  /** Peers with an open link. */
  links: PeerId[];
  /** What this peer says it is in ring walks (see `WalkEntry.agent`). */
  agent: string;
}

/**
 * The kind of a peer, from its agent: a native `chord-node`, a Chromium-based tab, a Firefox
 * tab, or anything else (another browser, an unknown agent, a peer that reports none).
 */
export type PeerKind = 'native' | 'chromium' | 'firefox' | 'other';

/** One peer of a `walk`: its pointers and self-description as it answered. */
export interface WalkEntry {
  id: PeerId;
  predecessor: PeerId | null;
  successors: PeerId[];
  /** Hops the request took to reach the peer. */
  hops: number;
  /**
   * What the peer says it is: `'native 0.1.0'`, `'chromium 131'`, `'firefox 128'`, ... (`''`
   * from peers that predate agents). Untrusted display text from another peer, at most 64
   * bytes without control characters: show it as text, never as HTML.
   */
  agent: string;
  /** `agent`'s kind. */
  kind: PeerKind;
}

/** A live entry of `localKeys()`. */
export interface LocalValue {
  key: string;
  key_id: PeerId;
  value: JsonValue;
  ts: number;
  writer_id: string;
  deleted: false;
}

/** A tombstone of `localKeys()` (a delete, kept until collected). */
export interface LocalTombstone {
  key: string;
  key_id: PeerId;
  value: null;
  ts: number;
  writer_id: string;
  deleted: true;
}

/** One entry of this peer's store; narrow on `deleted`. */
export type LocalEntry = LocalValue | LocalTombstone;

/** A watched key took a new value (`watch`'s callback). */
export interface WatchPut {
  key: string;
  /** The value that was put (any JSON value). */
  value: JsonValue;
  /** Its Lamport timestamp: per key, events only go up (by `ts`, then `writer_id`). */
  ts: number;
  writer_id: string;
  deleted: false;
}

/** A watched key was deleted (`watch`'s callback). */
export interface WatchDelete {
  key: string;
  value: null;
  ts: number;
  writer_id: string;
  deleted: true;
}

/** One change of a watched key, the shape `GET /watch` streams too; narrow on `deleted`. */
export type WatchEvent = WatchPut | WatchDelete;

// ----- metrics ---------------------------------------------------------------------------------

/** Percentiles of a histogram (node-core's `metrics::Percentiles`). */
export interface Percentiles {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** `[[value, count], ...]` of a histogram's non-empty buckets. */
export type HopHistogram = [value: number, count: number][];

export interface KvMetrics {
  total_puts: number;
  total_gets: number;
  total_get_hits: number;
  total_get_misses: number;
  avg_put_latency_sec: number;
  avg_get_latency_sec: number;
  put_latency_ms: Percentiles;
  get_latency_ms: Percentiles;
  hops: Percentiles;
  failed: number;
  read_repairs: number;
  quorum_failures: number;
  elections_started: number;
  elections_won: number;
  keys_stored: number;
  anti_entropy_rounds: number;
  anti_entropy_bytes: number;
  hop_histogram: HopHistogram;
}

export interface ChordMetrics {
  total_lookups: number;
  avg_hops: number;
  hops: Percentiles;
  lookups_failed: number;
  links_up: number;
  bad_frames: number;
  hop_histogram: HopHistogram;
  /** Frames the link layer refused to send (`Input::SendFailed`). */
  send_failures: number;
  /** Links closed after a streak of refused sends. */
  send_failure_closes: number;
}

export interface GnutellaMetrics {
  total_queries: number;
  avg_forwarded: number;
  /** The original project's name for `avg_forwarded`. */
  avg_forwarded_per_query: number;
  duplicates_dropped: number;
}

/** Counters of the link layer (`RTCPeerConnection` in a tab). */
export interface RtcMetrics {
  links_open: number;
  attempts: number;
  opened: number;
  failures: number;
  frames_in: number;
  frames_out: number;
  bytes_in: number;
  bytes_out: number;
  frames_dropped: number;
  /** Received frames dropped because the driver's inbound queue was full (native only). */
  frames_in_dropped: number;
  /** Offers refused by the pending-connection bounds (2 per peer, 64 in all). */
  offers_refused: number;
  /** Offers and answers refused because their certificate does not prove their sender's id. */
  identity_refused: number;
  bad_signals: number;
  ignored_signals: number;
  reanswers: number;
  offer_retries: number;
}

/** Counters of the tab's store (IndexedDB, or none). */
export interface StorageMetrics {
  durability: 'indexeddb' | 'in-memory';
  /** The IndexedDB database name (empty in memory). */
  path: string;
  entries_persisted: number;
  commits: number;
  durable_commits: number;
  errors: number;
  frames_held: number;
  last_commit_ms: number;
  mean_commit_ms: number;
  max_commit_ms: number;
  /** Commits that took at most 0.1, 0.5, 1, 2, 5, 10, 50 ms, and longer. */
  commit_ms_histogram: [number, number, number, number, number, number, number, number];
  restored_entries: number;
  restore_ms: number;
}

/** The driver's own counters (node-core's `peer::stats::DriverStats`). */
export interface DriverMetrics {
  overlay_links: number;
  introducer_links: number;
  signals_via_ring: number;
  signals_via_introducer: number;
  links: number;
  /** Peer connections created since start (Chromium allows 500 per tab lifetime). */
  connections_created: number;
  rtc: RtcMetrics;
  introducer_connected: boolean;
  introducer_errors: number;
  frames_without_channel: number;
  frames_bad: number;
  storage: StorageMetrics;
}

/** Frames refused by the receiver-side checks, by reason (node-core `metrics::Rejected`). */
export interface RejectedMetrics {
  sync_not_replica: number;
  sync_bad_range: number;
  kv_not_member: number;
  answer_not_asked: number;
  spoofed_origin: number;
  bad_set: number;
  ts_out_of_bounds: number;
  rate_limited: number;
  elections_full: number;
}

/** What `metrics()` returns: the native `/metrics` document's shape (node-core `peer::stats`). */
export interface Metrics {
  kv: KvMetrics;
  chord: ChordMetrics;
  gnutella: GnutellaMetrics;
  driver: DriverMetrics;
  rejected: RejectedMetrics;
}

// ----- events ----------------------------------------------------------------------------------

/** Every event carries `at_ms`: milliseconds since the peer started. */
interface EventBase {
  at_ms: number;
}

/** This peer became a ring member (the first of a new ring: `successor` is itself). */
export interface JoinedEvent extends EventBase {
  type: 'joined';
  successor: PeerId;
}

/** A join attempt failed; the next goes through `via`. */
export interface JoinRetryEvent extends EventBase {
  type: 'join_retry';
  reason: string;
  via: PeerId;
}

export interface SuccessorEvent extends EventBase {
  type: 'successor';
  successor: PeerId;
}

export interface PredecessorEvent extends EventBase {
  type: 'predecessor';
  predecessor: PeerId | null;
}

/** Every successor failed: the peer joins again through the introducer's members. */
export interface IsolatedEvent extends EventBase {
  type: 'isolated';
}

/** The tab's peer-connection budget: `low` at 80% of `limit`, `exhausted` just before it (the
 * peer then leaves the ring gracefully and stops). */
export interface ConnectionBudgetEvent extends EventBase {
  type: 'connection_budget';
  state: 'low' | 'exhausted';
  created: number;
  limit: number;
}

export interface PeerFailedEvent extends EventBase {
  type: 'peer_failed';
  peer: PeerId;
}

/** A replica set this peer belongs to elected `leader`. */
export interface LeaderEvent extends EventBase {
  type: 'leader';
  set: PeerId[];
  leader: PeerId;
}

/** This peer stored a version of `key` (a write, a replica, a repair). */
export interface StoredEvent extends EventBase {
  type: 'stored';
  key: string;
  ts: number;
  writer_id: string;
  deleted: boolean;
}

/** A data channel to `peer` opened; its SDP went through the ring or the introducer. */
export interface LinkUpEvent extends EventBase {
  type: 'link_up';
  peer: PeerId;
  via: 'ring' | 'introducer';
}

/** A link closed, or failed to open (`was_open: false`). */
export interface LinkDownEvent extends EventBase {
  type: 'link_down';
  peer: PeerId;
  reason: string;
  was_open: boolean;
}

/** The error codes of the signaling protocol (signaling's `ErrorCode::as_str`). */
export type IntroducerErrorCode =
  | 'bad_json'
  | 'bad_peer_id'
  | 'not_hello'
  | 'duplicate_peer'
  | 'unknown_target'
  | 'target_busy'
  | 'oversize'
  | 'too_many_sessions'
  | 'rate_limited'
  | 'too_many_from_address'
  | 'hello_timeout'
  | 'idle_timeout'
  | 'bad_host'
  | 'bad_origin';

export interface IntroducerConnectedEvent extends EventBase {
  type: 'introducer';
  state: 'connected';
}

export interface IntroducerErrorEvent extends EventBase {
  type: 'introducer';
  state: 'error';
  code: IntroducerErrorCode;
  reason: string;
}

/** The introducer session ended; the ring keeps working, only new joins need it. */
export interface IntroducerClosedEvent extends EventBase {
  type: 'introducer';
  state: 'closed';
  reason: string;
}

export type IntroducerEvent = IntroducerConnectedEvent | IntroducerErrorEvent | IntroducerClosedEvent;

/** What `onEvent`'s callback receives; narrow on `type` (and on `state` for `introducer`). */
export type PeerEvent =
  | JoinedEvent
  | JoinRetryEvent
  | SuccessorEvent
  | PredecessorEvent
  | IsolatedEvent
  | ConnectionBudgetEvent
  | PeerFailedEvent
  | LeaderEvent
  | StoredEvent
  | LinkUpEvent
  | LinkDownEvent
  | IntroducerEvent;

/** Every value of `PeerEvent['type']`. */
export type PeerEventType = PeerEvent['type'];

// ----- errors ----------------------------------------------------------------------------------

/** Codes of failed operations: node-core's `OpError::code`, as the native HTTP API answers. */
export type OpErrorCode =
  | 'too_large'
  | 'bad_input'
  | 'timeout'
  | 'not_joined'
  | 'no_route'
  | 'busy'
  | 'id_in_use';

/** Codes only `ChordPeer.start` rejects with. */
export type StartErrorCode =
  | 'introducer_unreachable'
  | 'introducer_error'
  | 'join_timeout'
  | 'storage_error'
  | 'bad_config';

/**
 * Every code an `Error` of this API carries: `stopped` when the peer was stopped (before or
 * during the call), `internal` for an outcome the driver did not expect (a bug).
 */
export type ErrorCode = OpErrorCode | StartErrorCode | 'stopped' | 'internal';

/** The `Error` a failed call rejects with; `code` says why. */
export interface ChordError<C extends ErrorCode = ErrorCode> extends Error {
  code: C;
}

/** What `put`, `get`, `delete`, `flood` and `lookup` reject with. */
export type OpError = ChordError<OpErrorCode | 'stopped' | 'internal'>;

/** What `ChordPeer.start` rejects with. */
export type StartError = ChordError<StartErrorCode | 'stopped'>;
