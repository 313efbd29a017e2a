// Hop histogram (SVG bars) and latency percentile table.

import { formatMs, formatValue, h } from './util.js';

/**
 * Draws the hop histogram into `svg`: for each hop count, the share of this tab's operations
 * and the share of the peer's lookups (from metrics) side by side, so the two series compare
 * even when their totals differ by orders of magnitude.
 *
 * `tab` is a Map hops -> count; `peer` is [[hops, count], ...] or null.
 */
export function renderHopChart(svg, legend, { tab, peer, peerSummary, ringSize }) {
  const W = 400;
  const H = 150;
  const top = 14;
  const bottom = 22;
  const left = 30;
  const plotH = H - top - bottom;
  const tabTotal = [...tab.values()].reduce((a, b) => a + b, 0);
  const peerMap = new Map((peer || []).map(([k, c]) => [Number(k), Number(c)]));
  const peerTotal = [...peerMap.values()].reduce((a, b) => a + b, 0);
  const maxHop = Math.max(4, ...tab.keys(), ...peerMap.keys());
  const groups = maxHop + 1;
  const gw = (W - left - 4) / groups;
  const share = (c, total) => (total ? c / total : 0);
  let maxShare = 0;
  for (let i = 0; i <= maxHop; i++) {
    maxShare = Math.max(maxShare, share(tab.get(i) || 0, tabTotal), share(peerMap.get(i) || 0, peerTotal));
  }
  // Round the top of the scale to 20, 40, 60, 80 or 100% so the half-way grid line is a whole number.
  const scaleTop = maxShare === 0 ? 1 : Math.min(1, Math.ceil(maxShare * 5 - 1e-9) / 5);
  const y = (s) => top + plotH - (s / scaleTop) * plotH;

  const out = [];
  for (let g = 0; g <= 4; g++) {
    const s = (scaleTop * g) / 4;
    out.push(`<line class="grid" x1="${left}" x2="${W - 2}" y1="${y(s).toFixed(1)}" y2="${y(s).toFixed(1)}"/>`);
    if (g % 2 === 0) out.push(`<text class="axis" x="${left - 4}" y="${(y(s) + 3).toFixed(1)}" text-anchor="end">${Math.round(s * 100)}%</text>`);
  }
  const bw = Math.min(16, gw * 0.36);
  for (let i = 0; i <= maxHop; i++) {
    const cx = left + gw * i + gw / 2;
    const tc = tab.get(i) || 0;
    const pc = peerMap.get(i) || 0;
    if (tc) {
      const ys = y(share(tc, tabTotal));
      out.push(`<rect class="bar bar-tab" x="${(cx - bw - 1).toFixed(1)}" y="${ys.toFixed(1)}" width="${bw.toFixed(1)}" height="${(top + plotH - ys).toFixed(1)}" rx="2"><title>${i} hops: ${tc} of ${tabTotal} operations from this tab</title></rect>`);
      out.push(`<text class="bar-label" x="${(cx - bw / 2 - 1).toFixed(1)}" y="${(ys - 3).toFixed(1)}" text-anchor="middle">${tc}</text>`);
    }
    if (pc) {
      const ys = y(share(pc, peerTotal));
      out.push(`<rect class="bar bar-peer" x="${(cx + 1).toFixed(1)}" y="${ys.toFixed(1)}" width="${bw.toFixed(1)}" height="${(top + plotH - ys).toFixed(1)}" rx="2"><title>${i} hops: ${pc} of ${peerTotal} lookups by this peer</title></rect>`);
    }
    out.push(`<text class="axis" x="${cx.toFixed(1)}" y="${H - 8}" text-anchor="middle">${i}</text>`);
  }
  out.push(`<line class="baseline" x1="${left}" x2="${W - 2}" y1="${top + plotH}" y2="${top + plotH}"/>`);
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.innerHTML = out.join('');

  const mean = (m) => {
    let s = 0;
    let t = 0;
    for (const [k, c] of m) {
      s += k * c;
      t += c;
    }
    return t ? s / t : null;
  };
  const tabMean = mean(tab);
  const peerMean = peerMap.size ? mean(peerMap) : peerSummary?.mean;
  const peerCount = peerMap.size ? peerTotal : peerSummary?.count;
  const expected = ringSize > 1 ? 0.5 * Math.log2(ringSize) : null;
  legend.replaceChildren(
    h('span', { class: 'legend-item' }, h('i', { class: 'sw sw-tab' }), `this tab: ${tabTotal} op${tabTotal === 1 ? '' : 's'}, mean ${tabMean === null ? '—' : tabMean.toFixed(2)}`),
    h(
      'span',
      { class: 'legend-item' },
      h('i', { class: 'sw sw-peer' }),
      `peer lookups: ${formatValue(peerCount)}, mean ${peerMean === null || peerMean === undefined ? '—' : Number(peerMean).toFixed(2)}`,
      peerSummary && peerSummary.p99 !== undefined ? `, p99 ${formatValue(peerSummary.p99)}` : '',
    ),
    expected !== null ? h('span', { class: 'legend-item muted', title: 'Chord paper: mean path length ≈ ½·log₂ N' }, `½·log₂N = ${expected.toFixed(2)}`) : '',
  );
}

/**
 * Fills the latency table body. `rows` is a list of {op, source, p} with p = {count, p50, p90,
 * p99, max} or null/partial; missing fields show as an em dash. The spread bar shows p50..p99
 * (tick at p90) on a scale shared by all rows.
 */
export function renderLatencyTable(tbody, rows) {
  const num = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null : Number(v));
  const scaleMax = Math.max(1, ...rows.map((r) => num(r.p?.p99) ?? num(r.p?.max) ?? 0));
  tbody.replaceChildren(
    ...rows.map((r) => {
      // With no samples the percentiles are zeros, not measurements: show dashes.
      const p = r.p && Number(r.p.count) === 0 ? { count: 0 } : r.p || {};
      const p50 = num(p.p50);
      const p90 = num(p.p90);
      const p99 = num(p.p99);
      let spread = h('span', { class: 'muted' }, '—');
      if (p50 !== null && p99 !== null) {
        const x = (v) => `${((v / scaleMax) * 100).toFixed(1)}%`;
        spread = h(
          'span',
          { class: 'spread', title: `p50 ${formatMs(p50)} · p90 ${formatMs(p90)} · p99 ${formatMs(p99)}` },
          h('span', { class: 'spread-range', style: `left:${x(p50)};width:calc(${x(p99 - p50)} + 2px)` }),
          p90 !== null ? h('span', { class: 'spread-tick', style: `left:${x(p90)}` }) : null,
        );
      }
      return h(
        'tr',
        { dataset: { op: r.op, source: r.source } },
        h('th', { scope: 'row' }, h('span', { class: `op-badge op-${r.op}` }, r.op), ' ', h('span', { class: 'muted src' }, r.source)),
        h('td', { class: 'num' }, formatValue(num(p.count))),
        h('td', { class: 'num' }, formatMs(p50)),
        h('td', { class: 'num' }, formatMs(p90)),
        h('td', { class: 'num' }, formatMs(p99)),
        h('td', { class: 'spread-cell' }, spread),
      );
    }),
  );
}
