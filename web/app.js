// chord-kv browser peer page: starts the wasm peer, draws the ring, runs put/get/delete/flood,
// shows hops, latencies and the event log.
//
// Hooks for end-to-end tests:
//   window.chord = { peer, ready, state, error, config, lifecycle, budget, refresh() }
//     ready    Promise resolving to the ChordPeer (rejects with the start error, `.code` kept)
//     state    'starting' | 'ready' | 'error' | 'left' (also document.body.dataset.state; 'left'
//              after the connection budget ran out and the peer left the ring)
//     refresh  walks the ring now and redraws; resolves to the number of drawn peers
//     lifecycle  the Page Lifecycle events this page saw (visibility, freeze, resume, ...)
//     budget   the connection_budget steps seen, in order ({state: 'low' | 'exhausted', created,
//              limit, at}; `at` is the page's Date.now())
//   #ring-svg  holds one <g class="peer" data-id="8hex" data-kind="native|chromium|firefox|other">
//              per drawn peer (data-peer-count too); the kind is what the peer's walk entry says
// URL parameters: ?introducer=ws://host:port/ws  ?id=8hex  ?ice=stun:a,stun:b  ?walk=64
//                 ?on-freeze=leave|stay  what the tab does when the browser freezes it (below)
//                 ?connections=N  this tab's budget of peer connections (2..500; default 500)
//
// Background and frozen tabs (docs/design.md, "Background and frozen tabs"): a hidden tab with
// open data channels keeps its timers at one wake-up a second (Chromium spares pages using
// WebRTC its one-a-minute throttling), enough for the 2 s heartbeat, so it stays a ring member. A frozen tab (Page Lifecycle `freeze`) runs nothing until `resume`, so
// by default (`leave`) it leaves the ring gracefully on `freeze` (peer.stop(): goodbyes to its
// neighbours, its store flushed to IndexedDB) and on `resume` reloads: the same id comes back
// with its IndexedDB store and joins again. `stay` does nothing and leaves it to the ring's
// failure detection (for comparison in tests/tests/frozen_tab.rs).

import {
  LIMITS, normId, isHexId, idAngle, replicaSet, jsonEscapedLen, formatBytes, formatMs, formatValue,
  clockTime, percentiles, truncate, h, idCode, plain, kindOfAgent,
} from './util.js';
import { createRingView } from './ring.js';
import { renderHopChart, renderLatencyTable } from './charts.js';

const WALK_EVERY_MS = 3000;
const RING_EVERY_MS = 1000;
const METRICS_EVERY_MS = 2000;
const LOG_MAX = 200;
const HISTORY_MAX = 8;
const TAB_KEYS_MAX = 500;
const LATENCY_SAMPLES_MAX = 2000;
const FAILED_HIDE_MS = 20000;

const $ = (id) => document.getElementById(id);
// The kinds a walk reports (`WalkEntry.kind`); the ring draws each with its own shape.
const PEER_KINDS = new Set(['native', 'chromium', 'firefox', 'other']);

// ---------------------------------------------------------------------------------------------
// Configuration from the URL

const params = new URLSearchParams(location.search);
const config = (() => {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const introducer = params.get('introducer') || `${scheme}//${location.host}/ws`;
  const ice = params.get('ice');
  // The wasm peer takes ICE servers as a list of URL strings (stun:host:port, turn:...).
  const iceServers = ice ? ice.split(',').map((s) => s.trim()).filter(Boolean) : [];
  const id = params.get('id') || undefined;
  const walkLimit = Math.max(1, Math.min(1024, Number(params.get('walk')) || 64));
  const onFreeze = params.get('on-freeze') === 'stay' ? 'stay' : 'leave';
  // `?connections=N`: this tab's lifetime budget of peer connections (`connectionLimit`,
  // 2..500; Chromium's cap of 500 when absent). Smaller only to see the budget run out.
  const connections = Number(params.get('connections')) || undefined;
  // `?verify=1`: prove this tab's id by its links' certificate and refuse peers that do not
  // (`verifyIds`); the id then comes from the certificate, so `?id=` is an error with it.
  const verifyIds = params.get('verify') === '1';
  return { introducer, iceServers, id, walkLimit, onFreeze, connections, verifyIds };
})();

// ---------------------------------------------------------------------------------------------
// State

const state = {
  phase: 'starting',
  peer: null,
  selfId: config.id ? normId(config.id) : null,
  ringView: null, // peer.ring()
  walk: new Map(), // id -> {id, predecessor, successors}, from the last walk
  walkAt: 0,
  failed: new Map(), // id -> when it was reported failed (hidden for a while unless linked)
  introducer: 'connecting',
  metrics: null,
  metricsAt: 0,
  keys: new Map(), // key -> {key, id, value, ts, writer_id, deleted, local, tab, touched}
  keyIds: new Map(), // key -> ring id cache
  selected: null, // key string whose replica set is pinned
  tabHops: new Map(), // hops -> count, from this tab's put/get/delete results
  tabLatency: { put: [], get: [] },
  history: [],
  replicas: 3,
  watches: new Map(), // key -> {event, count}: keys this tab watches (peer.watch), latest change
  budget: null, // the last connection_budget step (showBudget)
};

let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {}); // the page shows the error itself; keep the console clean

window.chord = {
  peer: null,
  ready,
  state: 'starting',
  error: null,
  config,
  lifecycle: [], // Page Lifecycle events seen: visibility, freeze, resume, rejoined_after_freeze
  budget: [], // connection_budget steps, in order: {state: 'low' | 'exhausted', created, limit, at}
  refresh: async () => {
    await walkNow();
    refreshLocal();
    renderNow();
    return document.querySelectorAll('#ring-svg g.peer').length;
  },
};

function setPhase(phase) {
  state.phase = phase;
  window.chord.state = phase;
  document.body.dataset.state = phase;
  renderStatus();
}

// ---------------------------------------------------------------------------------------------
// Views

const ringView = createRingView($('ring-svg'), $('ring-info'), {
  onSelectKey: (key) => selectKey(key, { fillForm: true }),
  onSelectPeer: () => {},
});

function ringModel() {
  if (state.phase !== 'ready') {
    // No ring to draw before the peer has joined (or after it failed to start).
    return { selfId: null, peers: [], succOf: new Map(), linked: new Set(), fingers: [], predecessor: null, walk: new Map(), keys: [], selected: null, k: state.replicas };
  }
  const selfId = state.selfId;
  const rv = state.ringView || {};
  const links = new Set((rv.links || []).map(normId).filter(Boolean));
  const ids = new Set();
  if (selfId) ids.add(selfId);
  for (const id of state.walk.keys()) ids.add(id);
  for (const id of rv.successors || []) ids.add(normId(id));
  if (rv.predecessor) ids.add(normId(rv.predecessor));
  for (const id of rv.fingers || []) if (id) ids.add(normId(id));
  for (const id of links) ids.add(id);
  const now = Date.now();
  for (const [id, at] of state.failed) {
    if (now - at > FAILED_HIDE_MS) state.failed.delete(id);
    else if (!links.has(id) && id !== selfId) ids.delete(id);
  }
  ids.delete(null);
  const peers = [...ids].sort();

  const succOf = new Map();
  for (const [id, w] of state.walk) {
    const s = normId((w.successors || [])[0]);
    if (s) succOf.set(id, s);
  }
  const selfSucc = normId((rv.successors || [])[0]);
  if (selfId && selfSucc) succOf.set(selfId, selfSucc);

  const keys = [...state.keys.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let selected = null;
  if (state.selected) {
    selected = state.keys.get(state.selected) || { key: state.selected, id: keyIdOf(state.selected), local: false, preview: true };
    if (!selected.id) selected = null;
  }
  return {
    selfId,
    peers,
    succOf,
    linked: links,
    fingers: (rv.fingers || []).map((x) => (x ? normId(x) : null)),
    predecessor: normId(rv.predecessor),
    walk: state.walk,
    selfAgent: typeof rv.agent === 'string' ? rv.agent : '',
    selfKind: kindOfAgent(rv.agent),
    keys,
    selected,
    k: state.replicas,
  };
}

// Renders are coalesced with a short timer, not requestAnimationFrame: background tabs get no
// animation frames, and a test driving several tabs must still see each one's ring drawn.
let renderTimer = null;
function renderAll() {
  if (renderTimer !== null) return;
  renderTimer = setTimeout(renderNow, 16);
}

function renderNow() {
  clearTimeout(renderTimer);
  renderTimer = null;
  const model = ringModel();
  state.lastModel = model;
  ringView.update(model);
  renderStatus(model);
  renderKeyList(model);
  renderKeyHint(model);
}

function pill(text, kind, title) {
  return h('span', { class: `pill pill-${kind}`, title }, text);
}

function renderStatus(model = state.lastModel) {
  const rv = state.ringView;
  $('st-id').replaceChildren(state.selfId ? h('code', { class: 'id id-self' }, state.selfId) : h('code', {}, '—'));
  if (state.selfId) $('st-id').title = `ring position ${idAngle(state.selfId).toFixed(1)}°`;

  let st;
  if (state.phase === 'starting') st = pill('starting', 'starting', 'Starting the peer and joining the ring');
  else if (state.phase === 'error') st = pill('error', 'error', window.chord.error?.message);
  else if (state.phase === 'left') st = pill('left', 'warn', 'This peer left the ring (see the banner)');
  else if (rv && rv.joined === false) st = pill('not joined', 'warn', 'The peer is running but not (or no longer) in the ring');
  else st = pill('joined', 'ok', 'This peer is a member of the ring');
  $('st-state').replaceChildren(st);

  $('st-peers').textContent = state.phase === 'ready' && model ? `${model.peers.length} peer${model.peers.length === 1 ? '' : 's'}` : '—';

  if (rv) {
    const d = state.metrics?.driver || {};
    const n = (rv.links || []).length;
    const created = d.connections_created;
    const limit = state.budget?.limit ?? config.connections ?? 500;
    $('st-links').replaceChildren(String(n),
      created !== undefined ? h('span', { class: 'muted' }, ` · ${created}/${limit} made`) : '');
    $('st-links').title = `open data channels: ${n}` +
      (created !== undefined ? ` · peer connections this tab created: ${created} of the ${limit} it may create` : '') +
      (d.overlay_links !== undefined ? ` · negotiated over the ring: ${d.overlay_links}` : '') +
      (d.introducer_links !== undefined ? ` · via introducer: ${d.introducer_links}` : '');
  } else {
    $('st-links').textContent = '—';
  }

  const intro = state.introducer;
  const introTitle = `${config.introducer}${state.introducerReason ? ` — ${state.introducerReason}` : ''}`;
  const kind = intro === 'connected' ? 'ok' : intro === 'error' ? 'error' : intro === 'connecting' ? 'starting' : 'muted';
  $('st-introducer').replaceChildren(intro === '—' ? '—' : pill(intro, kind, introTitle));
}

function renderKeyHint(model) {
  const hint = $('kv-key-hint');
  const key = $('kv-key').value;
  if (!key || !state.peer) {
    hint.textContent = 'Enter runs a get.';
    return;
  }
  const id = keyIdOf(key);
  if (!id) {
    hint.textContent = 'Enter runs a get.';
    return;
  }
  const reps = replicaSet(id, model.peers, state.replicas);
  hint.replaceChildren('id ', idCode(id), ' → replicas ', ...reps.flatMap((r, i) => [i ? ', ' : '', idCode(r, state.selfId)]), ' · Enter runs a get.');
}

let keyListSignature = '';
function renderKeyList(model) {
  const filter = $('keys-filter').value.trim().toLowerCase();
  const all = model.keys;
  const shown = filter ? all.filter((k) => k.key.toLowerCase().includes(filter) || k.id.includes(filter)) : all;
  const sig = JSON.stringify([filter, state.selected, shown.slice(0, 200).map((k) => [k.key, k.ts, k.deleted, k.local, k.value?.length])]);
  $('keys-count').textContent = all.length ? String(all.length) : '';
  if (sig === keyListSignature) return;
  keyListSignature = sig;
  const list = $('key-list');
  if (!all.length) {
    list.replaceChildren(h('li', { class: 'empty' }, state.phase === 'ready' ? 'No keys yet. Put one above.' : '—'));
    return;
  }
  if (!shown.length) {
    list.replaceChildren(h('li', { class: 'empty' }, 'No key matches the filter.'));
    return;
  }
  const items = shown.slice(0, 200).map((k) =>
    h(
      'li',
      {},
      h(
        'button',
        {
          type: 'button',
          class: `key-row${state.selected === k.key ? ' selected' : ''}${k.deleted ? ' deleted' : ''}`,
          'aria-pressed': state.selected === k.key ? 'true' : 'false',
          dataset: { key: k.key },
          title: `${k.key}\nid ${k.id}${k.ts !== undefined && k.ts !== null ? `\nts ${k.ts} by ${k.writer_id ?? '?'}` : ''}`,
        },
        h('i', { class: `kmark ${k.local ? 'local' : 'remote'}${k.deleted ? ' deleted' : ''}`, 'aria-hidden': 'true' }),
        h('span', { class: 'k-name' }, truncate(k.key, 48)),
        h('span', { class: 'k-value' }, k.deleted ? 'deleted' : k.value === undefined || k.value === null ? (k.missing ? 'not found' : '') : truncate(valueText(k.value), 40)),
        h('code', { class: 'k-id' }, k.id),
      ),
    ),
  );
  if (shown.length > 200) items.push(h('li', { class: 'empty' }, `…and ${shown.length - 200} more (use the filter)`));
  list.replaceChildren(...items);
}

$('key-list').addEventListener('click', (e) => {
  const b = e.target.closest('button.key-row');
  if (!b) return;
  const key = b.dataset.key;
  selectKey(state.selected === key ? null : key, { fillForm: true });
});
$('keys-filter').addEventListener('input', () => renderAll());

// A stored value as text: strings as they are, other JSON values (put over the HTTP API or the
// JS API, see README "How values are stored") as JSON.
function valueText(value) {
  return typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value);
}

function selectKey(key, { fillForm = false } = {}) {
  state.selected = key || null;
  if (key && fillForm) {
    $('kv-key').value = key;
    syncWatchButton();
    $('flood-key').value = key;
    const entry = state.keys.get(key);
    if (entry && !entry.deleted && typeof entry.value === 'string') {
      $('kv-value').value = entry.value;
      updateSize();
    }
  }
  renderAll();
}

function keyIdOf(key) {
  if (state.keyIds.has(key)) return state.keyIds.get(key);
  if (!state.peer) return null;
  let id = null;
  try {
    id = normId(state.peer.keyId(key));
  } catch {
    id = null;
  }
  if (state.keyIds.size > 5000) state.keyIds.clear();
  state.keyIds.set(key, id);
  return id;
}

// ---------------------------------------------------------------------------------------------
// Refreshing from the peer

function refreshLocal() {
  const peer = state.peer;
  if (!peer) return;
  try {
    state.ringView = plain(peer.ring());
    if (state.ringView?.id) state.selfId = normId(state.ringView.id) || state.selfId;
  } catch (err) {
    console.warn('ring() failed', err);
  }
  try {
    const local = plain(peer.localKeys()) || [];
    const seen = new Set();
    for (const e of local) {
      if (typeof e?.key !== 'string') continue;
      seen.add(e.key);
      const id = normId(e.key_id) || keyIdOf(e.key);
      if (!id) continue;
      if (!state.keyIds.has(e.key)) state.keyIds.set(e.key, id);
      const prev = state.keys.get(e.key) || { key: e.key, tab: false };
      state.keys.set(e.key, { ...prev, id, value: e.value, ts: e.ts, writer_id: e.writer_id, deleted: !!e.deleted, local: true, missing: false });
    }
    for (const [key, e] of state.keys) {
      if (e.local && !seen.has(key)) {
        if (e.tab) e.local = false;
        else state.keys.delete(key);
      }
    }
  } catch (err) {
    console.warn('localKeys() failed', err);
  }
}

async function refreshMetrics() {
  const peer = state.peer;
  if (!peer) return;
  try {
    state.metrics = plain(await peer.metrics());
    state.metricsAt = Date.now();
  } catch (err) {
    console.warn('metrics() failed', err);
  }
  renderStats();
}

let walking = null;
function walkNow() {
  if (!state.peer) return Promise.resolve();
  if (walking) return walking;
  walking = (async () => {
    try {
      const nodes = plain(await state.peer.walk(config.walkLimit));
      const next = new Map();
      for (const n of nodes || []) {
        const id = normId(n?.id);
        if (!id) continue;
        next.set(id, {
          id,
          predecessor: normId(n.predecessor),
          successors: (n.successors || []).map(normId).filter(Boolean),
          // What the peer says it is (untrusted text: the ring escapes it) and its kind.
          agent: typeof n.agent === 'string' ? n.agent : '',
          kind: PEER_KINDS.has(n.kind) ? n.kind : 'other',
        });
        state.failed.delete(id);
      }
      state.walk = next;
      state.walkAt = Date.now();
    } catch (err) {
      // A walk can fail while the ring repairs; keep drawing the previous one.
      console.debug('walk failed', err);
    } finally {
      walking = null;
    }
    renderAll();
  })();
  return walking;
}

let walkTimer = null;
function scheduleWalk(delay = 400) {
  clearTimeout(walkTimer);
  walkTimer = setTimeout(walkNow, delay);
}

let localTimer = null;
function scheduleLocal(delay = 300) {
  if (localTimer) return;
  localTimer = setTimeout(() => {
    localTimer = null;
    refreshLocal();
    renderAll();
  }, delay);
}

// ---------------------------------------------------------------------------------------------
// Event log

const logEl = $('event-log');
$('log-filter').addEventListener('change', (e) => {
  logEl.dataset.filter = e.target.value;
});
$('log-clear').addEventListener('click', () => logEl.replaceChildren());

const EVENT_CATEGORY = {
  joined: 'ring', successor: 'ring', predecessor: 'ring', peer_failed: 'ring',
  leader: 'leader', link_up: 'link', link_down: 'link', introducer: 'link', stored: 'store',
  connection_budget: 'link',
};

function log(cat, type, parts, { level = '', atMs, title } = {}) {
  const li = h(
    'li',
    { class: `ev cat-${cat}${level ? ` ${level}` : ''}`, dataset: { type } },
    h('time', { title: atMs !== undefined ? `at_ms ${atMs}` : undefined }, clockTime()),
    h('span', { class: 'tag', title: type }, type.replaceAll('_', ' ')),
    h('span', { class: 'msg', title }, parts),
  );
  logEl.prepend(li);
  while (logEl.childElementCount > LOG_MAX) logEl.lastElementChild.remove();
  return li;
}

let storedBatch = null; // {li, count, keys, at}
function logStored(ev) {
  const now = Date.now();
  const label = `${ev.deleted ? 'tombstone ' : ''}“${truncate(ev.key, 32)}”`;
  if (storedBatch && now - storedBatch.at < 1500 && logEl.firstElementChild === storedBatch.li) {
    storedBatch.count++;
    storedBatch.at = now;
    if (storedBatch.keys.length < 3) storedBatch.keys.push(label);
    const msg = storedBatch.li.querySelector('.msg');
    msg.replaceChildren(`stored ${storedBatch.count} versions: ${storedBatch.keys.join(', ')}${storedBatch.count > storedBatch.keys.length ? ', …' : ''}`);
    storedBatch.li.querySelector('time').textContent = clockTime();
    return;
  }
  const li = log('store', 'stored', [`stored ${label} · ts ${formatValue(ev.ts)} by `, idOrText(ev.writer_id)], { atMs: ev.at_ms });
  storedBatch = { li, count: 1, keys: [label], at: now };
}

function idOrText(x) {
  return isHexId(x) ? idCode(normId(x), state.selfId) : h('code', {}, String(x ?? '—'));
}

function handleEvent(raw) {
  const ev = plain(raw);
  if (!ev || typeof ev !== 'object') return;
  const type = String(ev.type || 'event');
  const cat = EVENT_CATEGORY[type] || 'ring';
  const at = ev.at_ms;
  const you = (id) => (normId(id) === state.selfId ? ' (you)' : '');
  switch (type) {
    case 'joined':
      log(cat, type, ['joined the ring; successor ', idOrText(ev.successor)], { atMs: at, level: 'good' });
      break;
    case 'successor':
      log(cat, type, ['successor is now ', idOrText(ev.successor)], { atMs: at });
      break;
    case 'predecessor':
      log(cat, type, ev.predecessor ? ['predecessor is now ', idOrText(ev.predecessor)] : ['predecessor cleared (it failed or left)'], { atMs: at });
      break;
    case 'peer_failed': {
      const id = normId(ev.peer);
      if (id) state.failed.set(id, Date.now());
      log(cat, type, ['peer ', idOrText(ev.peer), ' failed; the ring repairs around it'], { atMs: at, level: 'bad' });
      break;
    }
    case 'leader': {
      const set = Array.isArray(ev.set) ? ev.set : [];
      log(cat, type, ['leader ', idOrText(ev.leader), you(ev.leader), ' elected for replica set ', ...set.flatMap((id, i) => [i ? ', ' : '', idOrText(id)])], { atMs: at });
      break;
    }
    case 'connection_budget':
      log(cat, type, [`${ev.created} of ${ev.limit} peer connections this tab may create are used`, ev.state === 'exhausted' ? '; leaving the ring now, while links still work (reload the tab to join again)' : ''], { atMs: at, level: 'bad' });
      showBudget(ev);
      break;
    case 'link_up':
      log(cat, type, ['link up to ', idOrText(ev.peer), ev.via ? ` via ${ev.via}` : ''], { atMs: at, level: 'good' });
      break;
    case 'link_down':
      log(cat, type, ['link down to ', idOrText(ev.peer), ev.reason ? ` (${ev.reason})` : ''], { atMs: at });
      break;
    case 'introducer':
      state.introducer = ev.state || 'unknown';
      state.introducerReason = ev.reason || '';
      log(cat, type, [`introducer ${ev.state}${ev.code ? ` (${ev.code})` : ''}${ev.reason ? `: ${ev.reason}` : ''}`, ev.state === 'closed' ? ' (the ring keeps working; only new joins need it)' : ''], {
        atMs: at,
        level: ev.state === 'connected' ? 'good' : ev.state === 'error' ? 'bad' : '',
      });
      break;
    case 'stored':
      logStored(ev);
      break;
    default: {
      const { type: _t, at_ms: _a, ...rest } = ev;
      log(cat, type, [formatValue(rest)], { atMs: at });
    }
  }
  // Bursts of events (a repair storing hundreds of keys) cost one refresh, not hundreds.
  scheduleLocal(type === 'stored' ? 300 : 50);
  if (type !== 'stored' && type !== 'leader') scheduleWalk();
  renderAll();
}

// ---------------------------------------------------------------------------------------------
// Operations

const ERROR_TEXT = {
  too_large: ['Too large', 'Values are limited to 48 KiB (49,152 bytes counted JSON-escaped), keys to 1 KiB and writer ids to 128 bytes.'],
  timeout: ['Timed out', 'No answer in time. The ring may be repairing after a peer left; try again in a few seconds.'],
  not_joined: ['Not in the ring', 'This peer has not joined the ring (yet). Wait until the header shows “joined”, or reload the page.'],
  no_route: ['No route', 'No open link leads towards the key’s owner right now; links are still being set up. Retry shortly.'],
  busy: ['Peer busy', 'Too many operations are in flight. Wait for some to finish and retry.'],
  bad_input: ['Invalid input', 'Check the key, value and writer id.'],
  id_in_use: ['Id in use', 'Another ring member already has this id. Start with another id, or leave the id option out.'],
  stopped: ['Peer stopped', 'This peer was stopped. Reload the page to start a new one.'],
};

function errorBox(err, fallbackTitle = 'Operation failed') {
  const code = err?.code;
  const [title, advice] = ERROR_TEXT[code] || [fallbackTitle, ''];
  const message = err?.message || String(err);
  return h(
    'div',
    { class: 'res res-error', dataset: { code: code || 'error' } },
    h('div', { class: 'res-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '!'), title),
    h('p', { class: 'res-message' }, message),
    advice ? h('p', { class: 'res-advice' }, advice) : null,
    code ? h('p', { class: 'res-code' }, 'code ', h('code', {}, code)) : null,
  );
}

function chip(label, value, cls = '') {
  return h('span', { class: `chip ${cls}` }, h('span', { class: 'chip-label' }, label), h('span', { class: 'chip-value' }, value));
}

function hopsText(n) {
  return Number(n) === 1 ? '1 hop' : `${formatValue(n)} hops`;
}

function clientError(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

function checkKey(key) {
  if (!key) return clientError('bad_input', 'Enter a key first.');
  const n = jsonEscapedLen(key);
  if (n > LIMITS.key) return clientError('too_large', `key of ${n} bytes exceeds the ${LIMITS.key}-byte limit`);
  return null;
}

function updateSize() {
  const n = jsonEscapedLen($('kv-value').value);
  const el = $('kv-size');
  if (n > LIMITS.value) el.textContent = `${n.toLocaleString('en-US')} B: over the 48 KiB limit`;
  else if (n > LIMITS.value * 0.9) el.textContent = `${n.toLocaleString('en-US')} of ${LIMITS.value.toLocaleString('en-US')} B`;
  else el.textContent = `${formatBytes(n)} of 48 KiB`;
  el.title = `${n.toLocaleString('en-US')} of ${LIMITS.value.toLocaleString('en-US')} bytes (JSON-escaped)`;
  el.classList.toggle('over', n > LIMITS.value);
  el.classList.toggle('near', n <= LIMITS.value && n > LIMITS.value * 0.9);
  $('kv-value').setAttribute('aria-invalid', n > LIMITS.value ? 'true' : 'false');
}
$('kv-value').addEventListener('input', updateSize);

$('kv-key').addEventListener('input', () => {
  const key = $('kv-key').value;
  state.selected = key ? key : null;
  renderAll();
});
$('kv-key').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    e.preventDefault();
    runKv('get');
  }
});

// ---------------------------------------------------------------------------------------------
// Live updates: the form's "Watch" toggle calls peer.watch / peer.unwatch on its key; every
// change (from any peer) lands in the watch list and the event log as it arrives.

function syncWatchButton() {
  const watched = state.watches.has($('kv-key').value);
  const b = $('btn-watch');
  b.setAttribute('aria-pressed', String(watched));
  b.textContent = watched ? 'Unwatch' : 'Watch';
}

function renderWatches(freshKey) {
  $('watch-list').replaceChildren(
    ...[...state.watches].map(([key, w]) => {
      const ev = w.event;
      const value = !ev ? 'waiting for a change…' : ev.deleted ? 'deleted' : valueText(ev.value);
      return h(
        'li',
        { class: key === freshKey ? 'fresh' : '', dataset: { key } },
        h('span', { class: 'w-key' }, `👁 “${truncate(key, 28)}”`),
        h('span', { class: 'w-value' }, truncate(value, 60)),
        h('span', { class: 'w-meta' }, ev ? `ts ${formatValue(ev.ts)} · ${w.count} change${w.count === 1 ? '' : 's'}` : ''),
      );
    }),
  );
}

function onWatchEvent(ev) {
  const w = state.watches.get(ev.key);
  if (!w) return;
  w.event = ev;
  w.count++;
  const what = ev.deleted ? 'deleted' : `= ${truncate(valueText(ev.value), 40)}`;
  log('watch', 'watch', [`“${truncate(ev.key, 32)}” ${what} · ts ${formatValue(ev.ts)} by `, idOrText(ev.writer_id)]);
  rememberKey(ev.key, { value: ev.deleted ? undefined : ev.value, ts: ev.ts, writer_id: ev.writer_id, deleted: ev.deleted, missing: false });
  renderWatches(ev.key);
}

$('btn-watch').addEventListener('click', () => {
  const key = $('kv-key').value;
  const result = $('kv-result');
  let err = checkKey(key);
  if (!err && !state.peer) err = clientError('not_joined', 'The peer has not started yet.');
  if (err) {
    result.replaceChildren(errorBox(err));
    return;
  }
  if (state.watches.has(key)) {
    state.peer.unwatch(key);
    state.watches.delete(key);
  } else {
    try {
      state.peer.watch(key, (ev) => onWatchEvent(plain(ev)));
      state.watches.set(key, { event: null, count: 0 });
    } catch (e) {
      result.replaceChildren(errorBox(e));
      return;
    }
  }
  syncWatchButton();
  renderWatches();
});
$('kv-key').addEventListener('input', syncWatchButton);

$('kv-form').addEventListener('submit', (e) => {
  e.preventDefault();
  runKv(e.submitter?.value || 'get');
});

function recordTab(op, res) {
  const hops = Number(res?.hops);
  if (Number.isFinite(hops) && hops >= 0) state.tabHops.set(hops, (state.tabHops.get(hops) || 0) + 1);
  const lat = Number(res?.latency_ms);
  const bucket = op === 'get' ? 'get' : op === 'put' ? 'put' : null;
  if (bucket && Number.isFinite(lat)) {
    const arr = state.tabLatency[bucket];
    arr.push(lat);
    if (arr.length > LATENCY_SAMPLES_MAX) arr.shift();
  }
}

function rememberKey(key, patch) {
  const id = keyIdOf(key);
  if (!id) return;
  const prev = state.keys.get(key) || { key, local: false };
  state.keys.set(key, { ...prev, ...patch, id, key, tab: true, touched: Date.now() });
  const tabOnly = [...state.keys.values()].filter((k) => k.tab && !k.local).sort((a, b) => a.touched - b.touched);
  while (tabOnly.length > TAB_KEYS_MAX) state.keys.delete(tabOnly.shift().key);
}

function pushHistory(entry) {
  state.history.unshift(entry);
  state.history.length = Math.min(state.history.length, HISTORY_MAX);
  const ol = $('op-history');
  ol.replaceChildren(
    ...state.history.map((x) =>
      h(
        'li',
        { class: x.ok ? 'ok' : 'err' },
        h('button', { type: 'button', class: 'hist-row', dataset: { key: x.key }, title: 'Load this key into the form' },
          h('span', { class: `op-badge op-${x.op}` }, x.op),
          h('span', { class: 'h-key' }, truncate(x.key, 28)),
          h('span', { class: 'h-out' }, x.outcome),
          h('span', { class: 'h-meta' }, x.meta),
        ),
      ),
    ),
  );
}
$('op-history').addEventListener('click', (e) => {
  const b = e.target.closest('button.hist-row');
  if (b) selectKey(b.dataset.key, { fillForm: true });
});

let kvBusy = false;
async function runKv(op) {
  if (kvBusy) return;
  const result = $('kv-result');
  const key = $('kv-key').value;
  const value = $('kv-value').value;
  const writer = $('kv-writer').value.trim() || undefined;

  let err = checkKey(key);
  if (!err && op === 'put') {
    const n = jsonEscapedLen(value);
    if (n > LIMITS.value) {
      err = clientError('too_large', `value of ${n.toLocaleString('en-US')} bytes exceeds the ${LIMITS.value}-byte limit (not sent)`);
    }
  }
  if (!err && writer && jsonEscapedLen(writer) > LIMITS.writer) {
    err = clientError('too_large', `writer id of ${jsonEscapedLen(writer)} bytes exceeds the ${LIMITS.writer}-byte limit`);
  }
  if (!err && !state.peer) err = clientError('not_joined', 'The peer has not started yet.');
  if (err) {
    result.replaceChildren(errorBox(err));
    if (err.code === 'bad_input') $('kv-key').focus();
    return;
  }

  kvBusy = true;
  const form = $('kv-form');
  form.setAttribute('aria-busy', 'true');
  for (const b of form.querySelectorAll('button')) b.disabled = true;
  const verb = { put: 'Putting', get: 'Getting', delete: 'Deleting' }[op];
  result.replaceChildren(h('div', { class: 'res res-pending' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `${verb} “${truncate(key, 40)}”…`));
  state.selected = key;
  renderAll();

  const t0 = performance.now();
  try {
    let res;
    if (op === 'put') res = await state.peer.put(key, value, writer);
    else if (op === 'delete') res = await state.peer.delete(key, writer);
    else res = await state.peer.get(key);
    res = plain(res);
    const ms = res?.latency_ms ?? performance.now() - t0;
    recordTab(op, { ...res, latency_ms: ms });
    const meta = [chip('hops', formatValue(res?.hops)), chip('latency', formatMs(ms))];
    if (op === 'get') {
      if (res?.found) {
        rememberKey(key, { value: res.value, ts: res.ts, writer_id: res.writer_id, deleted: false, missing: false });
        result.replaceChildren(
          h('div', { class: 'res res-ok', dataset: { op, found: 'true' } },
            h('div', { class: 'res-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '✓'), 'Found ', h('strong', { class: 'key-name' }, `“${truncate(key, 60)}”`)),
            h('pre', { class: 'res-value' }, valueText(res.value)),
            h('div', { class: 'chips' }, chip('ts', formatValue(res.ts)), chip('writer', String(res.writer_id ?? '—')), ...meta),
          ),
        );
        pushHistory({ op, key, ok: true, outcome: truncate(valueText(res.value), 24), meta: `${hopsText(res.hops)} · ${formatMs(ms)}` });
      } else {
        rememberKey(key, { value: undefined, deleted: false, missing: true });
        result.replaceChildren(
          h('div', { class: 'res res-miss', dataset: { op, found: 'false' } },
            h('div', { class: 'res-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '∅'), 'Not found: ', h('strong', { class: 'key-name' }, `“${truncate(key, 60)}”`)),
            h('p', { class: 'res-advice' }, 'No replica holds a live value for this key (never written, or deleted).'),
            h('div', { class: 'chips' }, ...meta),
          ),
        );
        pushHistory({ op, key, ok: true, outcome: 'not found', meta: `${hopsText(res?.hops)} · ${formatMs(ms)}` });
      }
    } else {
      const deleted = op === 'delete';
      rememberKey(key, { value: deleted ? undefined : value, ts: res?.ts, writer_id: writer || state.selfId, deleted, missing: false });
      result.replaceChildren(
        h('div', { class: 'res res-ok', dataset: { op } },
          h('div', { class: 'res-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '✓'), deleted ? 'Deleted ' : 'Stored ', h('strong', { class: 'key-name' }, `“${truncate(key, 60)}”`)),
          h('div', { class: 'chips' }, chip('ts', formatValue(res?.ts)), ...meta),
        ),
      );
      pushHistory({ op, key, ok: true, outcome: `ts ${formatValue(res?.ts)}`, meta: `${hopsText(res?.hops)} · ${formatMs(ms)}` });
    }
    log('op', op, [`${op} “${truncate(key, 32)}” · ${hopsText(res?.hops)} · ${formatMs(ms)}`]);
  } catch (e) {
    result.replaceChildren(errorBox(e));
    pushHistory({ op, key, ok: false, outcome: e?.code || 'error', meta: truncate(e?.message || '', 40) });
    log('op', op, [`${op} “${truncate(key, 32)}” failed: ${e?.message || e}`], { level: 'bad' });
  } finally {
    kvBusy = false;
    form.removeAttribute('aria-busy');
    for (const b of form.querySelectorAll('button')) b.disabled = false;
    refreshLocal();
    renderAll();
    renderStats();
  }
}

let floodBusy = false;
$('flood-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (floodBusy) return;
  const out = $('flood-result');
  const key = $('flood-key').value;
  const ttl = Number($('flood-ttl').value);
  let err = checkKey(key);
  if (!err && !(Number.isInteger(ttl) && ttl >= 1 && ttl <= 16)) err = clientError('bad_input', 'TTL must be a whole number from 1 to 16.');
  if (!err && !state.peer) err = clientError('not_joined', 'The peer has not started yet.');
  if (err) {
    out.replaceChildren(errorBox(err));
    return;
  }
  floodBusy = true;
  $('btn-flood').disabled = true;
  out.replaceChildren(h('div', { class: 'res res-pending' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `Flooding “${truncate(key, 40)}” with TTL ${ttl}…`));
  const t0 = performance.now();
  try {
    const res = plain(await state.peer.flood(key, ttl));
    const ms = res?.latency_ms ?? performance.now() - t0;
    const matches = Array.isArray(res?.matches) ? res.matches : [];
    const stats = res?.stats && typeof res.stats === 'object' ? res.stats : {};
    // Render whatever the peer reports: columns only for fields some match carries.
    const cols = ['hops', 'value', 'ts'].filter((c) => matches.some((m) => m && m[c] !== undefined && m[c] !== null));
    const statChips = Object.entries(stats)
      .filter(([k, v]) => k !== 'ttl' && (typeof v !== 'object' || v === null))
      .map(([k, v]) => chip(k.replaceAll('_', ' '), k.startsWith('ms_') ? formatMs(v) : formatValue(v)));
    out.replaceChildren(
      h('div', { class: `res ${matches.length ? 'res-ok' : 'res-miss'}`, dataset: { op: 'flood', matches: String(matches.length) } },
        h('div', { class: 'res-title' },
          h('span', { class: 'res-icon', 'aria-hidden': 'true' }, matches.length ? '✓' : '∅'),
          `${matches.length} ${matches.length === 1 ? 'peer holds' : 'peers hold'} `, h('strong', { class: 'key-name' }, `“${truncate(key, 40)}”`)),
        h('div', { class: 'chips' }, chip('ttl', String(stats.ttl ?? ttl)), chip('latency', formatMs(ms)), statChips),
        matches.length && !cols.length
          ? h('p', { class: 'match-peers' }, 'on ', matches.slice(0, 50).flatMap((m, i) => [i ? ', ' : '', idOrText(m?.peer ?? m)]), matches.length > 50 ? ', …' : '')
          : matches.length
          ? h('div', { class: 'table-wrap' },
              h('table', { class: 'matches' },
                h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'peer'), cols.map((c) => h('th', { scope: 'col', class: c === 'value' ? '' : 'num' }, c)))),
                h('tbody', {}, matches.slice(0, 50).map((m) =>
                  h('tr', {}, h('td', {}, idOrText(m?.peer ?? m)),
                    cols.map((c) => (c === 'value'
                      ? h('td', { class: 'val' }, truncate(m[c] ?? '—', 60))
                      : h('td', { class: 'num' }, formatValue(m[c])))))))))
          : h('p', { class: 'res-advice' }, 'No peer within the TTL holds this key. Raise the TTL to reach further (at the cost of more messages).'),
      ),
    );
    log('op', 'flood', [`flood “${truncate(key, 32)}” ttl ${ttl}: ${matches.length} peer${matches.length === 1 ? '' : 's'} hold it · ${formatMs(ms)}`]);
  } catch (e2) {
    out.replaceChildren(errorBox(e2, 'Flood failed'));
    log('op', 'flood', [`flood “${truncate(key, 32)}” failed: ${e2?.message || e2}`], { level: 'bad' });
  } finally {
    floodBusy = false;
    $('btn-flood').disabled = false;
    refreshMetrics();
  }
});

// ---------------------------------------------------------------------------------------------
// Stats

const METRIC_HEADLINES = {
  kv: ['total_puts', 'total_gets', 'total_get_hits', 'total_get_misses', 'failed', 'read_repairs', 'elections_started', 'elections_won', 'keys_stored', 'anti_entropy_rounds'],
  chord: ['total_lookups', 'avg_hops', 'lookups_failed', 'links_up'],
  gnutella: ['total_queries', 'avg_forwarded', 'duplicates_dropped'],
  driver: ['links', 'connections_created', 'overlay_links', 'introducer_links', 'frames_bad'],
};

function renderStats() {
  const m = state.metrics || {};
  const hops = m.chord?.hops;
  const model = state.lastModel;
  const histogram = [hops?.histogram, m.chord?.hop_histogram, m.kv?.hop_histogram].find(Array.isArray) || null;
  renderHopChart($('hop-chart'), $('hop-legend'), {
    tab: state.tabHops,
    peer: histogram,
    peerSummary: hops && typeof hops === 'object' ? hops : null,
    ringSize: model ? model.peers.length : 0,
  });
  renderLatencyTable($('latency-table').tBodies[0], [
    { op: 'put', source: 'this tab', p: percentiles(state.tabLatency.put) },
    { op: 'put', source: 'peer', p: m.kv?.put_latency_ms },
    { op: 'get', source: 'this tab', p: percentiles(state.tabLatency.get) },
    { op: 'get', source: 'peer', p: m.kv?.get_latency_ms },
  ]);
  $('metrics-age').textContent = state.metricsAt ? `metrics at ${clockTime(new Date(state.metricsAt)).slice(0, 8)}` : '';
  if ($('metrics-all').closest('details').open || !$('metrics-all').childElementCount) renderAllMetrics(m);
}

function formatFull(v) {
  if (v === null || v === undefined) return undefined;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function renderAllMetrics(m) {
  const sections = [];
  const names = [...new Set([...Object.keys(METRIC_HEADLINES), ...Object.keys(m || {})])];
  for (const name of names) {
    const sec = m?.[name];
    const rows = [];
    const seen = new Set();
    for (const field of METRIC_HEADLINES[name] || []) {
      seen.add(field);
      rows.push([field, sec?.[field]]);
    }
    if (sec && typeof sec === 'object') {
      for (const [k, v] of Object.entries(sec)) {
        if (seen.has(k)) continue;
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          for (const [k2, v2] of Object.entries(v)) rows.push([`${k}.${k2}`, v2]);
        } else rows.push([k, v]);
      }
    } else if (sec !== undefined && !METRIC_HEADLINES[name]) {
      rows.push([name, sec]);
    }
    sections.push(
      h('section', { class: 'metric-section' },
        h('h4', {}, name),
        h('dl', { class: 'kv-grid' }, rows.flatMap(([k, v]) => [h('dt', { title: k }, k.replaceAll('_', ' ')), h('dd', { title: formatFull(v) }, formatValue(v))]))),
    );
  }
  $('metrics-all').replaceChildren(...sections);
}
$('metrics-all').closest('details').addEventListener('toggle', () => renderAllMetrics(state.metrics || {}));

// ---------------------------------------------------------------------------------------------
// Start-up and errors

// The browser lets a tab create only so many peer connections (Chromium: 500 in its
// lifetime); node-core's `peer::budget` warns at 80% and has the driver leave the ring cleanly
// shortly before the cap. Both steps show in the banner; after the second the peer is stopped.
function showBudget(ev) {
  const exhausted = ev.state === 'exhausted';
  state.budget = { state: ev.state, created: ev.created, limit: ev.limit, at: Date.now() };
  window.chord.budget.push(state.budget);
  const banner = $('banner');
  banner.replaceChildren(
    h('div', { class: 'banner-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '!'),
      exhausted ? 'This tab left the ring: it is out of peer connections' : 'This tab is running low on peer connections'),
    h('p', { class: 'banner-detail' },
      `It created ${ev.created} of the ${ev.limit} peer connections a browser tab may create in its lifetime. `,
      exhausted
        ? 'It handed its keys to its neighbours and left the ring while its links still worked. Reload the tab to join again with a fresh budget.'
        : `At ${ev.limit - Math.max(1, Math.floor(ev.limit / 50))} it will leave the ring cleanly; reloading the tab starts a fresh budget.`),
    exhausted ? h('button', { type: 'button', class: 'btn primary', onclick: () => location.reload() }, 'Reload') : '',
  );
  banner.dataset.code = `connection_budget_${ev.state}`;
  banner.hidden = false;
  if (exhausted) setPhase('left');
  renderStatus();
}

function showStartError(err) {
  const code = err?.code || 'error';
  const message = err?.message || String(err);
  const banner = $('banner');
  const urlForm = () => {
    const input = h('input', { id: 'introducer-url', type: 'url', value: config.introducer, spellcheck: 'false' });
    return h('form', {
      class: 'banner-form',
      onsubmit: (e) => {
        e.preventDefault();
        const u = new URL(location.href);
        u.searchParams.set('introducer', input.value.trim());
        location.href = u.toString();
      },
    },
    h('label', { for: 'introducer-url' }, 'Introducer URL'),
    input,
    h('button', { type: 'submit', class: 'btn primary' }, 'Connect'),
    h('button', { type: 'button', class: 'btn', onclick: () => location.reload() }, 'Retry'));
  };
  let title;
  let body;
  if (code === 'introducer_unreachable') {
    title = 'Can’t reach the introducer';
    body = [
      h('p', {}, 'This peer needs an introducer to join the ring, and none answered at ', h('code', {}, config.introducer), '.'),
      h('ul', {},
        h('li', {}, 'Start a ring: ', h('code', {}, 'cargo xtask demo'), ' (or run ', h('code', {}, 'signaling'), ' / a ', h('code', {}, 'chord-node'), '), then retry.'),
        h('li', {}, 'Check the URL: the introducer defaults to the server that served this page; override it with ', h('code', {}, '?introducer=ws://host:port/ws'), '.')),
      urlForm(),
    ];
  } else if (code === 'introducer_error') {
    title = 'The introducer turned this peer away';
    body = [
      h('p', {}, 'The introducer at ', h('code', {}, config.introducer), ' answered with an error (shown above).'),
      h('ul', {},
        h('li', {}, 'If the id is already taken, drop ', h('code', {}, '?id='), ' or pick another 8-hex id.'),
        h('li', {}, 'If it is busy or rate-limiting, retry in a few seconds, or use another introducer (any native peer serves one at ', h('code', {}, '/ws'), ').')),
      urlForm(),
    ];
  } else if (code === 'join_timeout') {
    title = 'Joining the ring timed out';
    body = [
      h('p', {}, 'The introducer answered, but no ring peer completed a connection in time. WebRTC may be blocked between this browser and the ring, or the ring is busy.'),
      h('ul', {},
        h('li', {}, 'Retry in a few seconds.'),
        h('li', {}, 'Across networks, add a STUN server: ', h('code', {}, '?ice=stun:stun.example.org:3478'), '.')),
      urlForm(),
    ];
  } else if (code === 'bad_config') {
    title = 'The peer’s configuration was rejected';
    body = [
      h('p', {}, 'Check the page’s URL parameters: ', h('code', {}, '?id='), ' (8 hex digits), ', h('code', {}, '?ice='), ' (comma-separated stun:/turn: URLs), ', h('code', {}, '?introducer='), ' (a ws:// or wss:// URL).'),
      urlForm(),
    ];
  } else if (code === 'wasm_missing') {
    title = 'The WebAssembly peer did not load';
    body = [
      h('p', {}, h('code', {}, 'pkg/node_wasm.js'), ' is missing or failed to load next to this page. Build the wasm package into ', h('code', {}, 'web/pkg/'), ' (see the README), then reload.'),
    ];
  } else {
    title = 'The peer could not start';
    body = [h('p', {}, 'Reload to try again.'), urlForm()];
  }
  banner.replaceChildren(
    h('div', { class: 'banner-title' }, h('span', { class: 'res-icon', 'aria-hidden': 'true' }, '!'), title),
    h('p', { class: 'banner-detail' }, message, code !== 'error' ? h('span', { class: 'muted' }, ` (${code})`) : ''),
    ...body,
  );
  banner.dataset.code = code;
  banner.hidden = false;
  $('ring-placeholder-text').textContent = title;
}

function fail(err) {
  const e = err instanceof Error ? err : Object.assign(new Error(String(err?.message || err)), { code: err?.code });
  window.chord.error = { code: e.code || 'error', message: e.message };
  if (state.introducer === 'connecting') state.introducer = e.code === 'introducer_unreachable' ? 'error' : e.code === 'wasm_missing' ? '—' : 'closed';
  setPhase('error');
  showStartError(e);
  log('ring', 'start', [`could not start: ${e.message}`], { level: 'bad' });
  rejectReady(e);
}

async function start() {
  setPhase('starting');
  $('footer-introducer').replaceChildren('introducer ', h('code', {}, config.introducer));
  $('ring-placeholder-via').textContent = `via ${config.introducer}`;
  renderStats();
  let mod;
  try {
    mod = await import('./pkg/node_wasm.js');
    await mod.default();
  } catch (err) {
    const e = new Error(`could not load the wasm package: ${err?.message || err}`);
    e.code = 'wasm_missing';
    fail(e);
    return;
  }
  let peer;
  try {
    const opts = { introducer: config.introducer, iceServers: config.iceServers };
    if (config.id) opts.id = config.id;
    if (config.connections) opts.connectionLimit = config.connections;
    if (config.verifyIds) opts.verifyIds = true;
    peer = await mod.ChordPeer.start(opts);
  } catch (err) {
    fail(err);
    return;
  }

  state.peer = peer;
  window.chord.peer = peer;
  try {
    state.selfId = normId(peer.id) || state.selfId;
  } catch {
    /* keep the requested id */
  }
  const k = Number(peer.replicas);
  if (Number.isInteger(k) && k > 0) state.replicas = k;
  if (state.introducer === 'connecting') state.introducer = 'connected';
  peer.onEvent((ev) => {
    try {
      handleEvent(ev);
    } catch (err) {
      console.error('event handler failed', err, ev);
    }
  });

  refreshLocal();
  const succ = normId(state.ringView?.successors?.[0]);
  if (!succ || succ === state.selfId) {
    log('ring', 'joined', ['this peer ', idOrText(state.selfId), ' started a new ring (the introducer knew no other peer)'], { level: 'good' });
  } else {
    log('ring', 'joined', ['this peer ', idOrText(state.selfId), ' joined the ring; successor ', idOrText(succ)], { level: 'good' });
  }
  $('ring-placeholder').hidden = true;
  setPhase('ready');
  renderNow();
  resolveReady(peer);
  refreshMetrics();
  walkNow();

  setInterval(() => {
    refreshLocal();
    renderAll();
  }, RING_EVERY_MS);
  setInterval(walkNow, WALK_EVERY_MS);
  setInterval(refreshMetrics, METRICS_EVERY_MS);
  window.addEventListener('pagehide', () => {
    try {
      peer.stop();
    } catch {
      /* already stopped */
    }
  });
  watchLifecycle(peer);
}

// The key (sessionStorage, per tab) that tells a reload it follows a leave on `freeze`.
const FROZE_KEY = 'chord-kv:left-on-freeze';

// Page Lifecycle: leave the ring on `freeze`, come back on `resume` (see the header).
function watchLifecycle(peer) {
  const left = sessionStorage.getItem(FROZE_KEY);
  if (left !== null) {
    sessionStorage.removeItem(FROZE_KEY);
    const restored = peer.metrics()?.driver?.storage?.restored_entries ?? 0;
    window.chord.lifecycle.push({ type: 'rejoined_after_freeze', left_at: Number(left), restored });
    log('ring', 'resumed', [`back after a freeze: rejoined with ${restored} entries from IndexedDB`], { level: 'good' });
  }
  document.addEventListener('visibilitychange', () => {
    window.chord.lifecycle.push({ type: 'visibility', state: document.visibilityState, at: Date.now() });
    log('ring', 'visibility', [`tab ${document.visibilityState}; the peer keeps running`]);
  });
  document.addEventListener('freeze', () => {
    window.chord.lifecycle.push({ type: 'freeze', policy: config.onFreeze, at: Date.now() });
    if (config.onFreeze !== 'leave') return;
    try {
      sessionStorage.setItem(FROZE_KEY, String(Date.now()));
      peer.stop();
    } catch {
      /* already stopped */
    }
    log('ring', 'frozen', ['the browser froze this tab: left the ring; it rejoins on resume']);
  });
  document.addEventListener('resume', () => {
    window.chord.lifecycle.push({ type: 'resume', at: Date.now() });
    if (config.onFreeze !== 'leave') return;
    // A reload starts the same id again from its IndexedDB store (?id= or the session's id).
    location.reload();
  });
}

updateSize();
renderAll();
start().catch((err) => {
  console.error(err);
  fail(err);
});
