import { api, esc, show } from '../util.js';
import { setState } from '../state.js';

// One model run per (model, prompt, decoder) for the grid of every head, whose patterns come block-averaged to at most THUMB
// cells a side; the selected head's full pattern is fetched on its own when the prompt is longer than that.
const THUMB = 48;
let last = { key: null, stacks: null };
const fullPatterns = new Map();

const titles = { self: 'Self-attention', encoder: 'Encoder self-attention', decoder: 'Decoder self-attention', cross: 'Cross-attention (decoder queries, encoder keys)' };

async function stacks(s) {
  const key = JSON.stringify([s.model, s.prompt, s.decoder]);
  if (last.key !== key) {
    const r = await api('/api/attention', { model: s.model, prompt: s.prompt, decoder: s.decoder || null, thumbnail: THUMB });
    last = { key, stacks: asStacks(r) };
    fullPatterns.clear();
  }
  return last.stacks;
}

// A decoder-only or encoder model has one stack, over its own tokens; an encoder-decoder has three.
const asStacks = r => r.stacks ?? [{ name: 'self', hook: 'blocks.L.attn.hook_pattern', queries: r.tokens, keys: r.tokens, causal: r.causal, layers: r.layers, headsPerLayer: r.headsPerLayer, heads: r.heads }];

async function fullPattern(s, st, layer, head, thumb) {
  if (st.queries.length <= THUMB && st.keys.length <= THUMB) return thumb;
  const key = JSON.stringify([last.key, st.name, layer, head]);
  if (!fullPatterns.has(key)) {
    const r = await api('/api/attention', { model: s.model, prompt: s.prompt, decoder: s.decoder || null, layers: [layer], heads: [head] });
    fullPatterns.set(key, asStacks(r).find(x => x.name === st.name).heads.find(h => h.layer === layer && h.head === head).pattern);
  }
  return fullPatterns.get(key);
}

function drawPattern(canvas, pattern, size) {
  const rows = pattern.length, cols = pattern[0]?.length ?? 0, ctx = canvas.getContext('2d');
  canvas.width = cols; canvas.height = rows;
  const scale = size / Math.max(rows, cols, 1);
  canvas.style.width = cols * scale + 'px'; canvas.style.height = rows * scale + 'px';
  const img = ctx.createImageData(cols, rows);
  for (let q = 0; q < rows; q++) for (let k = 0; k < cols; k++) {
    const v = pattern[q][k], o = 4 * (q * cols + k), a = Math.round(255 * (1 - Math.sqrt(v)));
    img.data[o] = a; img.data[o + 1] = a; img.data[o + 2] = 255; img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

// The selected head at full size: key tokens along the top, query tokens down the left (every k-th when cells are small), and the
// colour scale (shade ∝ √weight, so the bar's ticks sit at √v).
const SIZE = 360;
function figure(queries, keys) {
  const cell = SIZE / Math.max(queries.length, keys.length, 1), every = Math.max(1, Math.ceil(9 / cell)), font = Math.min(11, Math.max(8, cell - 1));
  const label = t => esc(String(t).length > 12 ? String(t).slice(0, 11) + '…' : String(t));
  const keyLabels = keys.map((t, k) => k % every ? '' : `<span class="attn-key" style="left:${(k + 0.5) * cell}px;font-size:${font}px" title="key ${k}">${label(t)}</span>`).join('');
  const queryLabels = queries.map((t, q) => q % every ? '' : `<span class="attn-query" style="top:${q * cell}px;height:${cell * every}px;line-height:${Math.min(cell * every, 14)}px;font-size:${font}px" title="query ${q}">${label(t)}</span>`).join('');
  const ticks = [0, 0.05, 0.25, 0.5, 1].map(v => `<span style="bottom:${Math.sqrt(v) * 100}%">${v}</span>`).join('');
  return `<div class="attn-figure"><div class="attn-keys">${keyLabels}</div><div class="attn-body"><div class="attn-queries">${queryLabels}</div>
    <canvas id="attn-selected" title="the selected head, every query (row) and key (column)"></canvas>
    <div class="attn-scale" title="attention weight (shade ∝ √weight)"><div class="bar"></div><div class="ticks">${ticks}</div></div></div>
    <p class="muted">rows: queries · columns: keys · colour: attention weight</p></div>`;
}

const tokenRow = (id, tokens) => `<div class="tokens" id="${id}">${tokens.map((t, i) => `<span class="token" data-i="${i}">${esc(show(t))}</span>`).join('')}</div>`;

// Causal self-attention: one row of tokens; hovering one shades the keys it attends to (blue, earlier) and the queries that attend to it (orange, later).
function hoverCausal(root, pattern) {
  const spans = [...root.querySelectorAll('#attn-tokens .token')];
  spans.forEach((span, i) => {
    span.addEventListener('mouseenter', () => spans.forEach((o, k) => {
      const from = pattern[i][k] ?? 0, to = pattern[k]?.[i] ?? 0;
      o.style.background = k <= i ? `rgba(48,86,211,${from})` : `rgba(232,89,12,${to})`;
      o.title = `attends ${(100 * from).toFixed(1)}% · receives ${(100 * to).toFixed(1)}%`;
    }));
    span.addEventListener('mouseleave', () => spans.forEach(o => { o.style.background = ''; }));
  });
}

// Bidirectional or cross-attention: queries above, keys below; a query shades the keys it attends to (blue), a key the queries that attend to it (orange).
function hoverTwoRows(root, pattern) {
  const queries = [...root.querySelectorAll('#attn-queries .token')], keys = [...root.querySelectorAll('#attn-keys .token')];
  const clear = () => [...queries, ...keys].forEach(o => { o.style.background = ''; });
  queries.forEach((span, q) => {
    span.addEventListener('mouseenter', () => keys.forEach((o, k) => {
      const v = pattern[q][k] ?? 0;
      o.style.background = `rgba(48,86,211,${v})`; o.title = `receives ${(100 * v).toFixed(1)}% of query ${q}`;
    }));
    span.addEventListener('mouseleave', clear);
  });
  keys.forEach((span, k) => {
    span.addEventListener('mouseenter', () => queries.forEach((o, q) => {
      const v = pattern[q]?.[k] ?? 0;
      o.style.background = `rgba(232,89,12,${v})`; o.title = `gives ${(100 * v).toFixed(1)}% to key ${k}`;
    }));
    span.addEventListener('mouseleave', clear);
  });
}

export async function render(root, s) {
  const all = await stacks(s);
  const st = all.find(x => x.name === s.stack) ?? all[0];
  const byLayer = [];
  for (const h of st.heads) (byLayer[h.layer] ??= [])[h.head] = h.pattern;
  const layer = Math.min(+s.layer || 0, st.layers - 1), head = Math.min(+s.head || 0, st.headsPerLayer - 1);
  const pattern = await fullPattern(s, st, layer, head, byLayer[layer][head]);
  const tabs = all.length > 1 ? `<div class="row" id="attn-stacks">${all.map(x =>
    `<button type="button" data-stack="${esc(x.name)}"${x === st ? ' class="selected"' : ''}>${esc(titles[x.name] ?? x.name)}</button>`).join('')}</div>` : '';
  const detail = (st.causal && st.queries === st.keys
    ? `<h2>L${layer}H${head}: hover a token to see where it attends (blue) and who attends to it (orange)</h2>${tokenRow('attn-tokens', st.queries)}`
    : `<h2>L${layer}H${head}: hover a query to see the keys it attends to (blue), or a key to see the queries attending to it (orange)</h2>
       <p class="muted">queries</p>${tokenRow('attn-queries', st.queries)}<p class="muted">keys</p>${tokenRow('attn-keys', st.keys)}`)
    + figure(st.queries, st.keys);
  const pooled = st.queries.length > THUMB || st.keys.length > THUMB ? `; thumbnails averaged over blocks to ${THUMB} cells a side` : '';
  root.innerHTML = `<h2>${esc(titles[st.name] ?? st.name)} <span class="muted">(${esc(st.hook)}; rows: queries, columns: keys; click a head${pooled})</span></h2>${tabs}
    <div id="grid">${byLayer.map((heads, l) => `<div class="heads-grid"><b style="width:4rem">L${l}</b>${heads.map((_, h) =>
      `<div class="head-cell${l === layer && h === head ? ' selected' : ''}" data-l="${l}" data-h="${h}"><canvas></canvas><div>L${l}H${h}</div></div>`).join('')}</div>`).join('')}</div>
    ${detail}`;
  root.querySelectorAll('#attn-stacks button').forEach(b => b.addEventListener('click', () => setState({ stack: b.dataset.stack })));
  root.querySelectorAll('.head-cell').forEach(cell => {
    const l = +cell.dataset.l, h = +cell.dataset.h;
    drawPattern(cell.querySelector('canvas'), byLayer[l][h], 90);
    cell.addEventListener('click', () => setState({ layer: l, head: h }));
  });
  drawPattern(root.querySelector('#attn-selected'), pattern, SIZE);
  if (root.querySelector('#attn-tokens')) hoverCausal(root, pattern); else hoverTwoRows(root, pattern);
}
