// The ring drawing: peers at their angle, successor arcs, finger chords, keys and replica sets.
//
// The whole SVG is rebuilt from a plain model on every change (a few hundred elements at most),
// which keeps it stateless: hover and selection are part of the model, not of the DOM.

import { idAngle, escapeHtml, strictlyBetween, replicaSet, h, idCode, truncate, KIND_NAMES } from './util.js';

const R = 180; // ring radius in SVG units (viewBox is 500 x 500 around the centre)
const MAX_KEYS_DRAWN = 1000;

function pt(angleDeg, r) {
  const a = (angleDeg * Math.PI) / 180;
  return [r * Math.sin(a), -r * Math.cos(a)];
}

const f = (n) => (Math.round(n * 10) / 10).toString();

/** An arc along a circle of radius r, clockwise from angle a1 to a2 (degrees). */
function arcPath(a1, a2, r) {
  let delta = a2 - a1;
  while (delta < 0) delta += 360;
  while (delta >= 360) delta -= 360;
  const [x1, y1] = pt(a1, r);
  const [x2, y2] = pt(a1 + delta, r);
  const large = delta > 180 ? 1 : 0;
  return `M${f(x1)},${f(y1)} A${r},${r} 0 ${large} 1 ${f(x2)},${f(y2)}`;
}

/**
 * The mark of a peer of `kind` with radius about `r`: Chromium tabs are circles, native peers
 * squares, Firefox tabs triangles, anything else hexagons (shapes, so that colour keeps saying
 * self / linked / via walk). The shapes have about the circle's area.
 */
function peerMark(kind, r) {
  if (kind === 'native') {
    const s = r * 0.89;
    return `<rect class="dot" x="${f(-s)}" y="${f(-s)}" width="${f(2 * s)}" height="${f(2 * s)}" rx="${f(r * 0.2)}"/>`;
  }
  if (kind === 'firefox') {
    const t = r * 1.35;
    const pts = [0, 120, 240].map((a) => pt(a, t).map(f).join(',')).join(' ');
    return `<polygon class="dot" points="${pts}" transform="translate(0,${f(r * 0.15)})"/>`;
  }
  if (kind === 'other') {
    const pts = [0, 60, 120, 180, 240, 300].map((a) => pt(a + 30, r * 1.1).map(f).join(',')).join(' ');
    return `<polygon class="dot" points="${pts}"/>`;
  }
  return `<circle class="dot" r="${r}"/>`;
}

/** A peer's kind and agent: its walk entry's, this peer's own ring view's, else unknown. */
function kindOf(model, id) {
  const w = model.walk.get(id);
  if (w?.kind) return { kind: w.kind, agent: w.agent || '' };
  if (id === model.selfId) return { kind: model.selfKind || 'other', agent: model.selfAgent || '' };
  return { kind: 'other', agent: '' };
}

/**
 * Creates the view over `svg` (the #ring-svg element) and `info` (a live region describing
 * what is hovered or selected). `onSelectKey(key|null)` is called when a key mark is clicked.
 */
export function createRingView(svg, info, { onSelectKey, onSelectPeer }) {
  let model = null;
  let hover = null; // {kind: 'peer'|'key', id}

  svg.setAttribute('viewBox', '-258 -258 516 516');

  svg.addEventListener('pointerover', (e) => {
    const g = e.target.closest('g.peer, g.key');
    const next = g ? (g.classList.contains('peer') ? { kind: 'peer', id: g.dataset.id } : { kind: 'key', id: g.dataset.key }) : null;
    if (JSON.stringify(next) !== JSON.stringify(hover)) {
      hover = next;
      render();
    }
  });
  svg.addEventListener('pointerleave', () => {
    if (hover) {
      hover = null;
      render();
    }
  });
  svg.addEventListener('click', (e) => {
    const g = e.target.closest('g.peer, g.key');
    if (g && g.classList.contains('key')) onSelectKey(g.dataset.key);
    else if (g && g.classList.contains('peer')) onSelectPeer?.(g.dataset.id);
    else onSelectKey(null);
  });

  function update(next) {
    model = next;
    render();
  }

  function keyById(key) {
    return model.keys.find((k) => k.key === key) || null;
  }

  function render() {
    if (!model) return;
    const { selfId, peers, succOf, linked, fingers, k } = model;
    const n = peers.length;
    const peerR = n <= 16 ? 8 : n <= 48 ? 6 : 4;
    const showAllLabels = n <= 20;

    // The key whose replica set is highlighted: hovered key first, else the selected one.
    let focusKey = null;
    if (hover?.kind === 'key') focusKey = keyById(hover.id);
    if (!focusKey && model.selected) focusKey = model.selected;
    const replicas = focusKey ? replicaSet(focusKey.id, peers, k) : [];
    const replicaIndex = new Map(replicas.map((id, i) => [id, i]));

    const hoveredPeer = hover?.kind === 'peer' ? hover.id : null;
    const fingerSet = new Set((fingers || []).filter((x) => x && x !== selfId));
    const selfSucc = succOf.get(selfId);
    const selfPred = model.predecessor;

    const out = [];
    out.push(`<defs>
      <marker id="arrow-succ" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow-succ"/></marker>
      <marker id="arrow-skip" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow-skip"/></marker>
    </defs>`);

    // The track and a few orientation ticks (0, 1/4, 1/2, 3/4 of the id space).
    out.push(`<circle class="track" r="${R}"/>`);
    for (let a = 0; a < 360; a += 45) {
      const [x1, y1] = pt(a, R + 3);
      const [x2, y2] = pt(a, R + (a % 90 === 0 ? 9 : 6));
      out.push(`<line class="tick" x1="${f(x1)}" y1="${f(y1)}" x2="${f(x2)}" y2="${f(y2)}"/>`);
    }
    out.push(`<text class="tick-label" x="0" y="${-(R + 44)}" text-anchor="middle">0 · 2³²</text>`);

    // Replica range: the stretch of ring from the key's id to its last replica.
    if (focusKey && replicas.length) {
      const last = replicas[replicas.length - 1];
      out.push(`<path class="replica-arc" d="${arcPath(idAngle(focusKey.id), idAngle(last), R)}"/>`);
    }

    // Finger chords from self, curved towards the centre so they do not hide the arcs.
    if (selfId) {
      const [sx, sy] = pt(idAngle(selfId), R);
      for (const id of fingerSet) {
        const [fx, fy] = pt(idAngle(id), R);
        const cx = (sx + fx) * 0.3;
        const cy = (sy + fy) * 0.3;
        const cls = hoveredPeer === id ? 'finger finger-hot' : 'finger';
        out.push(`<path class="${cls}" d="M${f(sx)},${f(sy)} Q${f(cx)},${f(cy)} ${f(fx)},${f(fy)}"/>`);
      }
    }

    // Successor arcs. An arc that jumps over a peer we know of means the ring has not
    // converged yet (or we know a peer that already left): drawn as "skip".
    const gap = ((peerR + 4) / R) * (180 / Math.PI);
    for (const id of peers) {
      const s = succOf.get(id);
      if (!s || s === id || !peers.includes(s)) continue;
      const skips = peers.some((p) => strictlyBetween(id, p, s));
      const a1 = idAngle(id);
      let a2 = idAngle(s);
      while (a2 <= a1) a2 += 360;
      if (a2 - a1 <= 2 * gap) continue;
      const cls = `succ${skips ? ' skip' : ''}${id === selfId ? ' succ-self' : ''}`;
      const marker = skips ? 'arrow-skip' : 'arrow-succ';
      out.push(`<path class="${cls}" marker-end="url(#${marker})" d="${arcPath(a1 + gap, a2 - gap, skips ? R - 7 : R)}"><title>${id} → successor ${s}</title></path>`);
    }

    // Lines from the focused key to its replicas.
    if (focusKey) {
      const [kx, ky] = pt(idAngle(focusKey.id), R - 16);
      for (const id of replicas) {
        const [px, py] = pt(idAngle(id), R);
        out.push(`<line class="replica-line" x1="${f(kx)}" y1="${f(ky)}" x2="${f(px)}" y2="${f(py)}"/>`);
      }
    }

    // Keys, stacked inwards when several fall at nearly the same angle.
    const stacks = new Map();
    const drawn = model.keys.slice(0, MAX_KEYS_DRAWN);
    if (model.selected && !drawn.some((x) => x.key === model.selected.key)) drawn.push({ ...model.selected, preview: true });
    for (const key of drawn) {
      const a = idAngle(key.id);
      const bucket = Math.round(a / 2.5);
      const level = stacks.get(bucket) || 0;
      stacks.set(bucket, level + 1);
      const r = R - 16 - Math.min(level, 8) * 8;
      const [x, y] = pt(a, r);
      const cls = ['key'];
      if (key.local) cls.push('local');
      if (!key.local) cls.push('remote');
      if (key.deleted) cls.push('deleted');
      if (key.preview) cls.push('preview');
      if (focusKey && focusKey.key === key.key) cls.push('focus');
      out.push(
        `<g class="${cls.join(' ')}" data-key="${escapeHtml(key.key)}" transform="translate(${f(x)},${f(y)}) rotate(${f(a)})">` +
          `<circle class="hit" r="7"/><path d="M0,-5 L3.4,0 L0,5 L-3.4,0 Z"/></g>`,
      );
    }

    // Labels of peers that sit close together alternate between three radii. Near the top and
    // bottom labels are side by side, so they need more room than on the left and right.
    const labelLevel = new Map();
    const tooClose = (a, b) => {
      const rad = (b * Math.PI) / 180;
      const needPx = Math.abs(Math.sin(rad)) * 14 + Math.abs(Math.cos(rad)) * 62;
      return ((b - a) * Math.PI * R) / 180 < needPx;
    };
    const wantsLabel = (id) =>
      showAllLabels || id === selfId || hoveredPeer === id || replicaIndex.has(id) || id === selfSucc || id === selfPred;
    const labeled = peers.filter(wantsLabel);
    {
      let prevAngle = -1e9;
      let level = 0;
      for (const id of labeled) {
        const a = idAngle(id);
        level = tooClose(prevAngle, a) ? (level + 1) % 3 : 0;
        labelLevel.set(id, level);
        prevAngle = a;
      }
      const first = labeled[0];
      const last = labeled[labeled.length - 1];
      if (labeled.length > 1 && labelLevel.get(first) === 0 && labelLevel.get(last) === 0 && tooClose(idAngle(last) - 360, idAngle(first))) {
        labelLevel.set(first, 1);
      }
    }

    // Peers.
    for (const id of peers) {
      const a = idAngle(id);
      const [x, y] = pt(a, R);
      const cls = ['peer'];
      const isSelf = id === selfId;
      if (isSelf) cls.push('self');
      if (linked.has(id)) cls.push('linked');
      else if (!isSelf) cls.push('unlinked');
      if (fingerSet.has(id)) cls.push('finger-peer');
      if (replicaIndex.has(id)) cls.push(replicaIndex.get(id) === 0 ? 'replica owner' : 'replica');
      if (hoveredPeer === id) cls.push('hot');
      const r = isSelf ? peerR + 2 : peerR;
      let label = '';
      if (labelLevel.has(id)) {
        const sin = Math.sin((a * Math.PI) / 180);
        const cos = Math.cos((a * Math.PI) / 180);
        const [lx, ly0] = pt(a, R + r + 9);
        // Crowded labels step vertically: near the top and bottom away from the centre, on the
        // sides in the clockwise direction (down on the right, up on the left), away from the
        // previous label.
        const dir = Math.abs(cos) > 0.7 ? (cos > 0 ? -1 : 1) : sin >= 0 ? 1 : -1;
        const ly = ly0 + labelLevel.get(id) * 17 * dir;
        const anchor = sin > 0.3 ? 'start' : sin < -0.3 ? 'end' : 'middle';
        const baseline = cos > 0.3 ? 'auto' : cos < -0.3 ? 'hanging' : 'middle';
        label = `<text class="peer-label" x="${f(lx - x)}" y="${f(ly - y)}" text-anchor="${anchor}" dominant-baseline="${baseline}">${id}</text>`;
      }
      const halo = isSelf ? `<circle class="halo" r="${r + 6}"/>` : '';
      const badge = replicaIndex.has(id) ? `<circle class="replica-ring" r="${r + 4}"/>` : '';
      const status = isSelf ? 'this peer' : linked.has(id) ? 'linked' : 'known via walk';
      const { kind, agent } = kindOf(model, id);
      cls.push(`kind-${kind}`);
      const says = agent ? ` · ${escapeHtml(agent)}` : ' · kind unknown';
      out.push(
        `<g class="${cls.join(' ')}" data-id="${id}" data-kind="${kind}" transform="translate(${f(x)},${f(y)})">` +
          `<title>${id} (${status})${says}</title>${halo}${badge}<circle class="hit" r="${r + 6}"/>${peerMark(kind, r)}${label}</g>`,
      );
    }

    // Centre: a summary readable from across the room (the page shows a placeholder before).
    if (n > 0) out.push(`<text class="center-big" x="0" y="-4" text-anchor="middle">${n}</text>`);
    if (n > 0) out.push(`<text class="center-small" x="0" y="20" text-anchor="middle">${n === 1 ? 'peer' : 'peers'} · k = ${k}</text>`);
    if (n > 0 && model.keys.length) {
      out.push(`<text class="center-small" x="0" y="38" text-anchor="middle">${model.keys.length} key${model.keys.length === 1 ? '' : 's'}</text>`);
    }

    svg.innerHTML = out.join('');
    svg.dataset.peerCount = String(n);
    svg.setAttribute('aria-label', `Chord ring with ${n} peer${n === 1 ? '' : 's'}${selfId ? `; this peer is ${selfId}` : ''}`);
    renderInfo(focusKey, replicas, hoveredPeer);
  }

  function renderInfo(focusKey, replicas, hoveredPeer) {
    const { selfId } = model;
    info.replaceChildren();
    if (hoveredPeer) {
      const w = model.walk.get(hoveredPeer);
      const fingerIdx = (model.fingers || []).map((x, i) => (x === hoveredPeer ? i : -1)).filter((i) => i >= 0);
      const role = hoveredPeer === selfId ? 'this peer' : model.linked.has(hoveredPeer) ? 'open data channel' : 'known via ring walk';
      const { kind, agent } = kindOf(model, hoveredPeer);
      // `h` sets text, never HTML: the agent is another peer's untrusted text.
      const says = agent ? `${KIND_NAMES[kind] || kind} (${truncate(agent, 64)})` : 'kind unknown';
      info.append(
        h('div', { class: 'info-title' }, 'Peer ', idCode(hoveredPeer, selfId), h('span', { class: 'muted' }, ` ${idAngle(hoveredPeer).toFixed(1)}° · ${role} · ${says}`)),
        h(
          'div',
          { class: 'info-row' },
          'successor ',
          idCode(model.succOf.get(hoveredPeer), selfId),
          ' · predecessor ',
          idCode(hoveredPeer === selfId ? model.predecessor : w?.predecessor, selfId),
          fingerIdx.length ? ` · finger${fingerIdx.length > 1 ? 's' : ''} ${compactRanges(fingerIdx)} of this peer` : '',
        ),
      );
      return;
    }
    if (focusKey) {
      info.append(
        h(
          'div',
          { class: 'info-title' },
          'Key ',
          h('strong', { class: 'key-name' }, truncate(focusKey.key, 60)),
          ' → ',
          idCode(focusKey.id),
          h('span', { class: 'muted' }, ` ${idAngle(focusKey.id).toFixed(1)}°${focusKey.preview ? ' · not stored here' : focusKey.local ? ' · stored on this peer' : ''}`),
        ),
        h('div', { class: 'info-row' }, 'replica set: ', replicas.flatMap((id, i) => [i ? ', ' : '', idCode(id, selfId), i === 0 ? ' (owner)' : ''])),
      );
      return;
    }
    info.append(h('div', { class: 'muted' }, 'Hover a peer or a key; click a key to pin its replica set.'));
  }

  return { update, render };
}

/** [0,1,2,5,7,8] -> "0–2, 5, 7–8". */
function compactRanges(xs) {
  const parts = [];
  for (let i = 0; i < xs.length; i++) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    parts.push(i === j ? `${xs[i]}` : `${xs[i]}–${xs[j]}`);
    i = j;
  }
  return parts.join(', ');
}

