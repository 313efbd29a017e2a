// A program against the `chord-kv` package (web/pkg, built by `cargo xtask wasm`), type-checked
// by `cargo xtask test` with `tsc --strict` and never run. It uses every call, result, event and
// error code of the JS API with the types it documents; each `// @ts-expect-error` line must be a
// type error, so a definition that loses precision (a result typed `any`, an open string where
// the README lists values) leaves that directive unused and fails the check. xtask also checks
// copies of the package in which one documented type at a time is replaced by `any`, and expects
// every one of them to fail.

import init, {
  ChordPeer,
  type ChordError,
  type ErrorCode,
  type GetResult,
  type JsonValue,
  type LocalEntry,
  type Metrics,
  type OpError,
  type PeerEvent,
  type PeerEventType,
  type PeerId,
  type PeerKind,
  type StartError,
  type StartOptions,
  type WatchDelete,
  type WatchEvent,
  type WatchPut,
  type WriteResult,
} from 'chord-kv';

/** Fails to compile when a case of a discriminated union is not handled. */
function unreachable(value: never): never {
  throw new Error(`unhandled ${JSON.stringify(value)}`);
}

/** How the page draws each kind of peer (every kind handled). */
function kindShape(kind: PeerKind): string {
  switch (kind) {
    case 'native':
      return 'square';
    case 'chromium':
      return 'circle';
    case 'firefox':
      return 'triangle';
    case 'other':
      return 'hexagon';
    default:
      return unreachable(kind);
  }
}

await init();

// ----- start options ---------------------------------------------------------------------------

const options: StartOptions = {
  introducer: 'ws://127.0.0.1:8080/ws',
  iceServers: ['stun:stun.example.org:3478'],
  id: '0a1b2c3d',
  storage: 'indexeddb',
  replicas: 3,
  readQuorum: 2,
  writeQuorum: 2,
  connectionLimit: 500,
};
const inPage = await ChordPeer.start({ introducer: 'page:room', storage: 'memory' });
// @ts-expect-error start resolves with a ChordPeer, which has no `join`
inPage.join();
await ChordPeer.start({ introducer: 'wss://example.org/ws' });
// @ts-expect-error introducer is required
await ChordPeer.start({ iceServers: [] });
// @ts-expect-error the introducer is ws://, wss:// or page:
await ChordPeer.start({ introducer: 'http://127.0.0.1:8080/ws' });
// @ts-expect-error storage is 'indexeddb' or 'memory'
await ChordPeer.start({ introducer: 'page:x', storage: 'disk' });
// @ts-expect-error quorum sizes run from 1 to 16
await ChordPeer.start({ introducer: 'page:x', replicas: 0 });
// @ts-expect-error readQuorum is a number
await ChordPeer.start({ introducer: 'page:x', readQuorum: '2' });
// @ts-expect-error iceServers are URL strings
await ChordPeer.start({ introducer: 'page:x', iceServers: [{ urls: 'stun:x' }] });
const verifying = await ChordPeer.start({ introducer: 'page:x', verifyIds: true });
// @ts-expect-error verifyIds is true or false
await ChordPeer.start({ introducer: 'page:x', verifyIds: 1 });
// @ts-expect-error no such option
await ChordPeer.start({ introducer: 'page:x', replication: 3 });

let peer: ChordPeer;
try {
  peer = await ChordPeer.start(options);
} catch (e) {
  const error = e as StartError;
  switch (error.code) {
    case 'introducer_unreachable':
    case 'introducer_error':
    case 'join_timeout':
    case 'storage_error':
    case 'bad_config':
    case 'stopped':
      console.error(error.code, error.message);
      break;
    // @ts-expect-error start does not reject with an operation's code
    case 'no_route':
      break;
    default:
      unreachable(error.code);
  }
  throw error;
}

// ----- the peer --------------------------------------------------------------------------------

const me: PeerId = peer.id;
const k: number = peer.replicas;
const keyId: PeerId = peer.keyId('k');
// @ts-expect-error keyId gives 8 hex digits as a string
const keyIdNumber: number = peer.keyId('k');
// @ts-expect-error id is read-only
peer.id = 'ffffffff';

// ----- put / get / delete ----------------------------------------------------------------------

const written = await peer.put('k', 'v');
await peer.put('k', { nested: [1, true, null, 'x'] }, 'writer-1');
await peer.put('k', 42);
const wrote: true = written.ok;
const ts: number = written.ts;
const hops: number = written.hops + written.latency_ms;
// @ts-expect-error a write's ts is a number
const tsText: string = written.ts;
// @ts-expect-error a write result has no `found`
written.found;
// @ts-expect-error values are JSON: not undefined
await peer.put('k', undefined);
// @ts-expect-error values are JSON: not functions
await peer.put('k', () => 1);
// @ts-expect-error writerId is a string
await peer.put('k', 'v', 7);

const deleted = await peer.delete('k');
await peer.delete('k', 'writer-1');
// @ts-expect-error a delete's hops are a number
const deletedHops: string = deleted.hops;

const got = await peer.get('k');
const value: JsonValue = got.value;
// @ts-expect-error the value is any JSON value (or null), not necessarily a number
const asNumber: number = got.value;
if (got.found) {
  const writer: string = got.writer_id;
  const version: number = got.ts;
  const found: JsonValue = got.value;
} else {
  const nothing: null = got.value;
  const noVersion: null = got.ts;
  // @ts-expect-error a missing key has no writer
  const noWriter: string = got.writer_id;
}
// @ts-expect-error before narrowing on `found`, ts may be null
const version: number = got.ts;
// @ts-expect-error a get result has no `ok`
got.ok;

// ----- flood / lookup --------------------------------------------------------------------------

const flood = await peer.flood('k', 4);
for (const match of flood.matches) {
  const holder: PeerId = match.peer;
  const addr: string | null = match.addr;
  // @ts-expect-error a tab reports no address: addr may be null
  const addrText: string = match.addr;
}
const firstHit: number | null = flood.stats.hops_to_first_hit;
const floodCounters: number =
  flood.stats.ttl + flood.stats.hits_received + flood.stats.neighbors_asked + flood.stats.forwarded;
const floodMs: number | null = flood.stats.ms_to_first_hit;
const floodKey: string = flood.key;
// @ts-expect-error hops_to_first_hit is null when no hit arrived
const firstHitNumber: number = flood.stats.hops_to_first_hit;
// @ts-expect-error flood's ttl is a number
await peer.flood('k', '4');

const lookup = await peer.lookup('k');
const owner: PeerId = lookup.owner;
const lookupId: PeerId = lookup.key_id;
const lookupCost: number = lookup.hops + lookup.latency_ms;
// @ts-expect-error a lookup names one owner, not a list
lookup.owner.map((o: string) => o);

// ----- ring / walk / localKeys -----------------------------------------------------------------

const ring = peer.ring();
const joined: boolean = ring.joined;
const predecessor: PeerId | null = ring.predecessor;
const successors: PeerId[] = ring.successors;
const fingers: (PeerId | null)[] = ring.fingers;
const links: PeerId[] = ring.links;
const ringId: PeerId = ring.id;
// @ts-expect-error the predecessor may be unknown (null)
const predecessorId: PeerId = ring.predecessor;
// @ts-expect-error `joined` is a boolean
const joinedText: string = ring.joined;

for (const view of await peer.walk(64)) {
  const id: PeerId = view.id;
  const next: PeerId[] = view.successors;
  const back: PeerId | null = view.predecessor;
  const reachedIn: number = view.hops;
  const agent: string = view.agent;
  const shape: string = kindShape(view.kind);
  // @ts-expect-error a walk entry has no fingers
  view.fingers;
}
// @ts-expect-error a peer's kind is one of four
const safari: PeerKind = 'safari';
// @ts-expect-error the agent is text
const agentNumber: number = ring.agent;
await peer.walk();
// @ts-expect-error walk's limit is a number
await peer.walk('64');

const entries = peer.localKeys();
for (const entry of entries) {
  const key: string = entry.key;
  const id: PeerId = entry.key_id;
  const writer: string = entry.writer_id;
  const at: number = entry.ts;
  if (entry.deleted) {
    const gone: null = entry.value;
  } else {
    const live: JsonValue = entry.value;
  }
  // @ts-expect-error a tombstone's value is null
  const text: string = entry.value;
}

// ----- watch -----------------------------------------------------------------------------------

peer.watch('k', (event: WatchEvent) => {
  const key: string = event.key;
  const at: number = event.ts;
  const writer: string = event.writer_id;
  if (event.deleted) {
    const gone: null = event.value;
  } else {
    const now: JsonValue = event.value;
  }
  // @ts-expect-error a delete's value is null
  const text: string = event.value;
  // @ts-expect-error a watch event carries no hops
  event.hops;
});
// @ts-expect-error the callback gets a WatchEvent, not a string
peer.watch('k', (event: string) => event);
// @ts-expect-error watch needs a callback
peer.watch('k');
const wasWatched: boolean = peer.unwatch('k');
// @ts-expect-error unwatch answers a boolean
const unwatchText: string = peer.unwatch('k');
function onPut(change: WatchPut): JsonValue {
  return change.value;
}
function onDelete(change: WatchDelete): null {
  return change.value;
}
onPut({ key: 'k', value: { n: 1 }, ts: 1, writer_id: 'w', deleted: false });
onDelete({ key: 'k', value: null, ts: 2, writer_id: 'w', deleted: true });
// @ts-expect-error a put's event is not a delete
onPut({ key: 'k', value: 1, ts: 1, writer_id: 'w', deleted: true });
// @ts-expect-error a delete's event carries no value
onDelete({ key: 'k', value: 1, ts: 1, writer_id: 'w', deleted: true });

// ----- metrics ---------------------------------------------------------------------------------

const metrics = peer.metrics();
const kv: number =
  metrics.kv.total_puts + metrics.kv.total_gets + metrics.kv.keys_stored + metrics.kv.put_latency_ms.p99;
const histogram: [number, number][] = metrics.kv.hop_histogram;
const chord: number = metrics.chord.avg_hops + metrics.chord.hops.p50 + metrics.chord.links_up;
const gnutella: number = metrics.gnutella.avg_forwarded_per_query;
const durability: 'indexeddb' | 'in-memory' = metrics.driver.storage.durability;
const commitBuckets: number = metrics.driver.storage.commit_ms_histogram[7];
const rtc: number = metrics.driver.rtc.links_open + metrics.driver.rtc.offer_retries;
const introducerUp: boolean = metrics.driver.introducer_connected;
const created: number = metrics.driver.connections_created;
const overlay: number = metrics.driver.overlay_links + metrics.driver.signals_via_ring;
// @ts-expect-error a tab's store is IndexedDB or in memory, never redb's `strict`
const strict: 'strict' = metrics.driver.storage.durability;
// @ts-expect-error the commit histogram has 8 buckets
metrics.driver.storage.commit_ms_histogram[8];
// @ts-expect-error percentiles are numbers
const p99: string = metrics.kv.get_latency_ms.p99;
// @ts-expect-error a tab has no HTTP section (only the native peer does)
metrics.http;
// @ts-expect-error histogram buckets are [value, count] pairs
const flat: number[] = metrics.kv.hop_histogram;
// @ts-expect-error counters are numbers
const failedLookups: string = metrics.chord.lookups_failed;
// @ts-expect-error counters are numbers
const queries: string = metrics.gnutella.total_queries;
// @ts-expect-error the open links count is `links_open` in `rtc` (and `links` in `driver`)
metrics.driver.rtc.links;
const refusals: number = metrics.rejected.kv_not_member + metrics.rejected.ts_out_of_bounds;
// @ts-expect-error refusals are counted by reason, as numbers
const refusedByBudget: string = metrics.rejected.rate_limited;
const refusedSends: number = metrics.chord.send_failures + metrics.driver.rtc.offers_refused;
const droppedIn: number = metrics.driver.rtc.frames_in_dropped;
const unproven: number = metrics.driver.rtc.identity_refused;

// ----- events ----------------------------------------------------------------------------------

peer.onEvent((event) => {
  const at: number = event.at_ms;
  switch (event.type) {
    case 'joined':
    case 'successor': {
      const successor: PeerId = event.successor;
      break;
    }
    case 'join_retry': {
      const via: PeerId = event.via;
      const reason: string = event.reason;
      break;
    }
    case 'predecessor': {
      const p: PeerId | null = event.predecessor;
      // @ts-expect-error the predecessor may be null
      const q: PeerId = event.predecessor;
      break;
    }
    case 'isolated':
      // @ts-expect-error an isolated event names no peer
      event.peer;
      break;
    case 'connection_budget': {
      const budget: 'low' | 'exhausted' = event.state;
      const used: number = event.created / event.limit;
      // @ts-expect-error the budget's state is low or exhausted
      const full: 'full' = event.state;
      break;
    }
    case 'peer_failed': {
      const failed: PeerId = event.peer;
      break;
    }
    case 'leader': {
      const set: PeerId[] = event.set;
      const leader: PeerId = event.leader;
      break;
    }
    case 'stored': {
      const key: string = event.key;
      const ts: number = event.ts;
      const writer: string = event.writer_id;
      const tombstone: boolean = event.deleted;
      // @ts-expect-error a stored event carries no value
      event.value;
      break;
    }
    case 'link_up': {
      const via: 'ring' | 'introducer' = event.via;
      // @ts-expect-error a link comes up through the ring or the introducer only
      const direct: 'direct' = event.via;
      break;
    }
    case 'link_down': {
      const peerId: PeerId = event.peer;
      const wasOpen: boolean = event.was_open;
      const reason: string = event.reason;
      break;
    }
    case 'introducer':
      switch (event.state) {
        case 'connected':
          // @ts-expect-error only an error event has a code
          event.code;
          break;
        case 'error': {
          const reason: string = event.reason;
          switch (event.code) {
            case 'bad_json':
            case 'bad_peer_id':
            case 'not_hello':
            case 'duplicate_peer':
            case 'unknown_target':
            case 'target_busy':
            case 'oversize':
            case 'too_many_sessions':
            case 'rate_limited':
            case 'too_many_from_address':
            case 'hello_timeout':
            case 'idle_timeout':
            case 'bad_host':
            case 'bad_origin':
              break;
            // @ts-expect-error not a signaling protocol code
            case 'timeout':
              break;
            default:
              unreachable(event.code);
          }
          break;
        }
        case 'closed': {
          const reason: string = event.reason;
          break;
        }
        default:
          unreachable(event);
      }
      break;
    // @ts-expect-error not an event type
    case 'link_open':
      break;
    default:
      unreachable(event);
  }
});
const storedType: PeerEventType = 'stored';
// @ts-expect-error not an event type
const misspelled: PeerEventType = 'store';
// @ts-expect-error the callback gets an event object, not a string
peer.onEvent((event: string) => event);

// The named types, for code that passes results around.
function describe(result: GetResult, write: WriteResult, event: PeerEvent, keys: LocalEntry[], m: Metrics): string {
  return `${result.found} ${write.ts} ${event.type} ${keys.length} ${m.kv.total_puts}`;
}
describe(got, written, { type: 'isolated', at_ms: 0 }, entries, metrics);
// @ts-expect-error an event needs its type's fields
describe(got, written, { type: 'peer_failed', at_ms: 0 }, entries, metrics);

// ----- errors ----------------------------------------------------------------------------------

async function put(key: string, value: JsonValue): Promise<WriteResult | OpError['code']> {
  try {
    return await peer.put(key, value);
  } catch (e) {
    const error = e as OpError;
    switch (error.code) {
      case 'too_large':
      case 'bad_input':
      case 'timeout':
      case 'not_joined':
      case 'no_route':
      case 'busy':
      case 'id_in_use':
      case 'stopped':
      case 'internal':
        return error.code;
      // @ts-expect-error operations do not reject with start's codes
      case 'introducer_unreachable':
        return 'internal';
      default:
        return unreachable(error.code);
    }
  }
}
const anyCode: ErrorCode = 'join_timeout';
const generic: ChordError = Object.assign(new Error('x'), { code: anyCode });
// @ts-expect-error not an error code
const badCode: ErrorCode = 'not_found';
await put('k', 'v');

peer.stop();
peer.free();
