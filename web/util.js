// Small pure helpers shared by the page's modules: ring math, sizes, formatting, DOM.

/** Number of points on the identifier ring (32-bit ids). */
export const RING_SIZE = 2 ** 32;

/** Store limits, in JSON-escaped bytes (node-core `store::Limits` defaults). */
export const LIMITS = Object.freeze({ key: 1024, value: 48 * 1024, writer: 128 });

const HEX8 = /^[0-9a-f]{8}$/;

/** Lower-case 8-hex id, or null when `id` is not one. */
export function normId(id) {
  if (typeof id !== 'string') return null;
  const s = id.trim().toLowerCase();
  return HEX8.test(s) ? s : null;
}

export function isHexId(id) {
  return normId(id) !== null;
}

/** Position of an id on the ring as a number in [0, 2^32). */
export function idValue(id) {
  return parseInt(id, 16);
}

/** Clockwise angle in degrees from the top of the ring. */
export function idAngle(id) {
  return (idValue(id) / RING_SIZE) * 360;
}

/** Clockwise distance from `a` to `b` on the ring, in ids. */
export function ringDistance(a, b) {
  const d = idValue(b) - idValue(a);
  return d < 0 ? d + RING_SIZE : d;
}

/** Whether `x` lies strictly inside the clockwise interval (a, b). */
export function strictlyBetween(a, x, b) {
  if (a === b) return x !== a;
  const ab = ringDistance(a, b);
  const ax = ringDistance(a, x);
  return ax > 0 && ax < ab;
}

/**
 * The key's replica set: the first `k` peers at or after `keyId` clockwise among `sortedIds`
 * (ascending, distinct). This is Chord's successor(key) followed by its next successors.
 */
export function replicaSet(keyId, sortedIds, k) {
  const n = sortedIds.length;
  if (n === 0) return [];
  let start = sortedIds.findIndex((id) => id >= keyId);
  if (start < 0) start = 0;
  const out = [];
  for (let i = 0; i < Math.min(k, n); i++) out.push(sortedIds[(start + i) % n]);
  return out;
}

/**
 * Length of `s` once JSON-escaped, in bytes, exactly as node-core's `json_escaped_len`
 * counts it (UTF-8 bytes; quote, backslash and \b \f \n \r \t take 2; other control bytes 6).
 */
const encoder = new TextEncoder();
export function jsonEscapedLen(s) {
  let n = 0;
  for (const b of encoder.encode(s)) {
    if (b === 0x22 || b === 0x5c || b === 0x08 || b === 0x0c || b === 0x0a || b === 0x0d || b === 0x09) n += 2;
    else if (b < 0x20) n += 6;
    else n += 1;
  }
  return n;
}

export function formatBytes(n) {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const kib = n / 1024;
  return `${kib < 10 ? kib.toFixed(1) : Math.round(kib)} KiB`;
}

/** Milliseconds, readable at a glance: 0.4 ms, 12 ms, 1.25 s. */
export function formatMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(Number(ms))) return '—';
  const v = Number(ms);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 10) return `${v.toFixed(1)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
}

/** A metric value for display: numbers trimmed, missing as an em dash. */
export function formatValue(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return '—';
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2);
  }
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'string') return v;
  try {
    const s = JSON.stringify(v);
    return s.length > 120 ? `${s.slice(0, 117)}…` : s;
  } catch {
    return String(v);
  }
}

export function clockTime(date = new Date()) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}.${p(date.getMilliseconds(), 3)}`;
}

/** Percentiles by nearest rank over a list of numbers (as node-core's histogram does). */
export function percentiles(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  const sum = s.reduce((a, b) => a + b, 0);
  return { count: s.length, mean: sum / s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1] };
}

/**
 * A peer's kind from its agent string, as node-core's `agent::Kind::of` decides it (the walk
 * reports `kind` itself; this serves this peer's own `ring().agent`).
 */
export function kindOfAgent(agent) {
  const first = String(agent ?? '').trim().split(/\s+/)[0];
  return first === 'native' || first === 'chromium' || first === 'firefox' ? first : 'other';
}

/** Legend names of the peer kinds. */
export const KIND_NAMES = { native: 'native peer', chromium: 'Chromium tab', firefox: 'Firefox tab', other: 'other' };

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

/** Shortens long text for one-line display. */
export function truncate(s, n) {
  const str = String(s ?? '');
  return str.length > n ? `${str.slice(0, n - 1)}…` : str;
}

/**
 * Builds an element: h('div', {class: 'x', dataset: {id}}, child, 'text', ...).
 * Attributes starting with "on" become listeners; children may be nodes, strings or arrays.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  appendChildren(el, children);
  return el;
}

function appendChildren(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) appendChildren(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An id rendered as monospace code, with a title for the full value. */
export function idCode(id, selfId) {
  if (!id) return h('span', { class: 'muted' }, '—');
  return h('code', { class: id === selfId ? 'id id-self' : 'id', title: `ring position ${idAngle(id).toFixed(1)}°` }, id);
}

/**
 * Converts what the wasm peer returns into plain objects and arrays: serde-wasm-bindgen turns
 * maps (e.g. a serde_json::Value object) into JS `Map`s, which property access cannot read.
 */
export function plain(x) {
  if (x instanceof Map) return Object.fromEntries([...x].map(([k, v]) => [String(k), plain(v)]));
  if (Array.isArray(x)) return x.map(plain);
  if (x && typeof x === 'object' && Object.getPrototypeOf(x) === Object.prototype) {
    const out = {};
    for (const [k, v] of Object.entries(x)) out[k] = plain(v);
    return out;
  }
  return typeof x === 'bigint' ? Number(x) : x;
}
