// Attribution-graph explorer: nodes by layer × position on a canvas, edges by weight (width) and sign (colour),
// hover highlights neighbours, click opens the feature's card, pins, supernodes, thresholds, interventions.
import { api, esc, fmt, num } from '../util.js';
import { setState, state } from '../state.js';
import { card } from './features.js';

// Row of a node: embeddings at the bottom, then layers, logits on top.
function rowOf(n, layers) {
  if (n.feature_type === 'embedding') return 0;
  if (n.feature_type === 'logit') return layers + 1;
  return Number(n.layer) + 1;
}

// Chip layout: a cell (row × position) stacks its nodes in lines of CHIP width, ROWS lines deep, then wraps into another
// sub-column, so a crowded cell widens its own column instead of spilling into the next token's.
// The depth is the least (from 6) at which a line is at least 11 px tall when the graph fits a view of viewWidth pixels.
const CHIP = 100, LINE = 14, GAP = 22, MAX_VIEW_HEIGHT = 900;

// The zoom at which a graph of width × height fits a view viewWidth wide and at most MAX_VIEW_HEIGHT tall (never above 1).
export function fitScale(viewWidth, width, height) { return Math.min(1, (viewWidth - 70) / width, (MAX_VIEW_HEIGHT - 40) / height); }

// Parses a graph file (ours or circuit-tracer's) into drawable arrays, laid out for a view viewWidth pixels wide.
export function prepare(graph, viewWidth = 1000) {
  const nodes = graph.nodes.map((n, i) => ({ ...n, i, influence: n.influence == null ? 0 : num(n.influence) }));
  const byId = new Map(nodes.map(n => [n.node_id, n]));
  const layers = Math.max(0, ...nodes.filter(n => !['embedding', 'logit'].includes(n.feature_type)).map(n => Number(n.layer))) + 1;
  const positions = Math.max(...nodes.map(n => n.ctx_idx)) + 1;
  // Nodes of one (row, position) cell in lines, most influential first.
  const cells = new Map();
  for (const n of nodes) {
    n.row = rowOf(n, layers);
    const key = `${n.row}:${n.ctx_idx}`;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  }
  const fullest = new Array(positions).fill(1);
  for (const [key, list] of cells) {
    list.sort((a, b) => a.influence - b.influence);
    list.forEach((n, k) => { n.slot = k; });
    const col = Number(key.split(':')[1]);
    fullest[col] = Math.max(fullest[col], list.length);
  }
  const most = Math.max(...fullest);
  const scaleAt = rows => fitScale(viewWidth, fullest.reduce((w, n) => w + Math.ceil(n / rows) * CHIP + GAP, 0),
    (layers + 1) * (Math.min(rows, most) * LINE + 20) + 60);
  let ROWS = 6;
  for (let r = 8; r <= 24 && LINE * scaleAt(ROWS) < 11 && r <= most + 1; r += 2) if (scaleAt(r) > scaleAt(ROWS)) ROWS = r;
  const perColumn = fullest.map(n => Math.ceil(n / ROWS)), deepest = Math.min(ROWS, Math.max(...fullest));
  const band = deepest * LINE + 20, colX = [0];
  for (let c = 0; c < positions; c++) colX.push(colX[c] + perColumn[c] * CHIP + GAP);
  for (const n of nodes) {
    n.x = colX[n.ctx_idx] + 8 + Math.floor(n.slot / ROWS) * CHIP;
    n.y = (layers + 1 - n.row) * band + 14 + (n.slot % ROWS) * LINE;
  }
  const links = [], ins = new Map(), outs = new Map();
  for (const l of graph.links) {
    const s = byId.get(l.source), t = byId.get(l.target);
    if (!s || !t) continue;
    const link = { s, t, w: num(l.weight), heads: Array.isArray(l.head_loadings) ? l.head_loadings : null };
    links.push(link);
    if (!outs.has(s)) outs.set(s, []);
    if (!ins.has(t)) ins.set(t, []);
    outs.get(s).push(link); ins.get(t).push(link);
  }
  const width = colX[positions], height = (layers + 1) * band + 60;
  // QK attributions (ours; circuit-tracer's files have none) by layer:head:query:key.
  const qk = new Map((Array.isArray(graph.qk_attributions) ? graph.qk_attributions : []).map(r => [`${r.layer}:${r.head}:${r.query}:${r.key}`, r]));
  return { qk, graph, nodes, byId, links, ins, outs, layers, positions, colX, band, rows: ROWS, width, height };
}

// The explorer: owns the canvas, the view transform and the selection.
export class Explorer {
  constructor(canvas, data, callbacks) {
    this.canvas = canvas; this.ctx = canvas.getContext('2d'); this.data = data; this.cb = callbacks;
    this.scale = fitScale(canvas.clientWidth, data.width, data.height); this.tx = 56; this.ty = 10;
    this.nodeThreshold = 1; this.edgeQuantile = 0; this.pinned = new Set(); this.supernodes = []; this.pinnedOnly = false;
    this.hover = null; this.selected = null; this.labels = {}; this.marked = new Set();
    this.filter();
    this.bind();
  }

  // Visible nodes and edges under the thresholds (tokens and logits always shown), and the edge buckets drawn each frame.
  // The pinned subgraph keeps the tokens and logits and draws each supernode as one node whose edges sum its members'.
  filter() {
    const d = this.data;
    const io = n => n.feature_type === 'embedding' || n.feature_type === 'logit';
    let edges;
    if (this.pinnedOnly) {
      const members = this.members();
      const reps = this.supernodes.map((g, k) => {
        const ms = g.slice(1).map(id => d.byId.get(id)).filter(Boolean);
        if (ms.length === 0) return null;
        const mean = f => ms.reduce((a, n) => a + f(n), 0) / ms.length;
        return { node_id: `supernode:${k}`, isSupernode: true, feature_type: 'supernode', name: g[0], members: ms, x: mean(n => n.x), y: mean(n => n.y),
          ctx_idx: ms[0].ctx_idx, layer: ms[0].layer, influence: Math.min(...ms.map(n => n.influence)) };
      });
      const rep = n => { const k = members.get(n.node_id); return k !== undefined && reps[k] ? reps[k] : n; };
      const kept = n => io(n) || this.pinned.has(n.node_id) || members.has(n.node_id);
      this.visible = new Set(d.nodes.filter(kept).map(rep));
      const sums = new Map();
      for (const l of d.links) {
        if (!kept(l.s) || !kept(l.t)) continue;
        const s = rep(l.s), t = rep(l.t);
        if (s === t) continue;
        const key = `${s.node_id}>${t.node_id}`;
        if (sums.has(key)) sums.get(key).w += l.w; else sums.set(key, { s, t, w: l.w });
      }
      edges = [...sums.values()];
    } else {
      this.visible = new Set(d.nodes.filter(n => io(n) || n.influence <= this.nodeThreshold + 1e-12));
      edges = d.links.filter(l => this.visible.has(l.s) && this.visible.has(l.t));
    }
    if (this.edgeQuantile > 0 && edges.length > 0) {
      const mags = edges.map(l => Math.abs(l.w)).sort((a, b) => a - b);
      const cut = mags[Math.min(mags.length - 1, Math.floor(this.edgeQuantile * mags.length))];
      edges = edges.filter(l => Math.abs(l.w) >= cut);
    }
    this.edges = edges;
    const maxW = Math.max(1e-12, ...edges.map(l => Math.abs(l.w)));
    // 6 width buckets × 2 signs: a dozen Path2D strokes per frame, whatever the edge count.
    this.buckets = [];
    for (let sign = 0; sign < 2; sign++) for (let b = 0; b < 6; b++) this.buckets.push({ path: new Path2D(), width: 0.4 + b * 0.9, color: sign ? '#d9480f' : '#1c7ed6' });
    for (const l of edges) {
      const b = Math.min(5, Math.floor(6 * Math.sqrt(Math.abs(l.w) / maxW)));
      const p = this.buckets[(l.w < 0 ? 6 : 0) + b].path;
      p.moveTo(l.s.x, l.s.y); p.lineTo(l.t.x, l.t.y);
    }
    this.nodePath = new Path2D(); this.errorPath = new Path2D();
    for (const n of this.visible) {
      if (n.feature_type === 'mlp reconstruction error') this.errorPath.rect(n.x - 3.5, n.y - 3.5, 7, 7);
      else { this.nodePath.moveTo(n.x + 4, n.y); this.nodePath.arc(n.x, n.y, 4, 0, 2 * Math.PI); }
    }
    // A grid for hover look-ups.
    this.grid = new Map();
    for (const n of this.visible) {
      const key = `${Math.floor(n.x / 20)}:${Math.floor(n.y / 20)}`;
      if (!this.grid.has(key)) this.grid.set(key, []);
      this.grid.get(key).push(n);
    }
    this.neighbours = new Map();
    for (const l of edges) {
      if (!this.neighbours.has(l.s)) this.neighbours.set(l.s, []);
      if (!this.neighbours.has(l.t)) this.neighbours.set(l.t, []);
      this.neighbours.get(l.s).push(l); this.neighbours.get(l.t).push(l);
    }
    this.invalidate();
  }

  // Paints the whole graph in world coordinates onto ctx (grid, edges, nodes, labels); the focus is drawn by draw() on top.
  paint(ctx) {
    const d = this.data, band = d.band, bottom = (d.layers + 1) * band + 24;
    // Column and band rules, band names on the left, each column's token under it (clipped to its column).
    ctx.strokeStyle = '#eef0f4'; ctx.lineWidth = 1 / this.scale;
    for (let c = 1; c < d.positions; c++) { ctx.beginPath(); ctx.moveTo(d.colX[c] - GAP / 2, 0); ctx.lineTo(d.colX[c] - GAP / 2, bottom); ctx.stroke(); }
    for (let r = 1; r <= d.layers; r++) { ctx.beginPath(); ctx.moveTo(0, r * band); ctx.lineTo(d.width, r * band); ctx.stroke(); }
    const small = Math.max(10, 10 / this.scale);
    ctx.fillStyle = '#6b7280'; ctx.font = `${small}px system-ui`; ctx.textAlign = 'right';
    for (let r = 0; r <= d.layers + 1; r++) ctx.fillText(r === 0 ? 'tokens' : r === d.layers + 1 ? 'logits' : `L${r - 1}`, -6, (d.layers + 1 - r) * band + 18);
    ctx.textAlign = 'left'; ctx.fillStyle = '#1d2330'; ctx.font = `600 ${Math.max(12, 11 / this.scale)}px system-ui`;
    (d.graph.metadata?.prompt_tokens ?? []).forEach((t, c) => {
      if (c >= d.positions) return;
      ctx.fillText(fit(ctx, String(t), d.colX[c + 1] - d.colX[c] - GAP / 2 - 8), d.colX[c] + 2, bottom + 14);
    });
    ctx.globalAlpha = 0.75; ctx.lineCap = 'round';
    for (const b of this.buckets) { ctx.strokeStyle = b.color; ctx.lineWidth = b.width / Math.sqrt(this.scale); ctx.stroke(b.path); }
    ctx.globalAlpha = 1;
    ctx.fillStyle = '#495057'; ctx.fill(this.nodePath);
    ctx.fillStyle = '#adb5bd'; ctx.fill(this.errorPath);
    const members = this.members();
    for (const n of this.visible) {
      const pinned = this.pinned.has(n.node_id), group = n.isSupernode ? Number(n.node_id.split(':')[1]) : members.get(n.node_id);
      if (!pinned && group === undefined && n.feature_type !== 'logit' && n.feature_type !== 'embedding') continue;
      ctx.beginPath(); ctx.arc(n.x, n.y, n.isSupernode ? 7 : 5.5, 0, 2 * Math.PI);
      ctx.fillStyle = n.feature_type === 'logit' ? '#2b8a3e' : n.feature_type === 'embedding' ? '#868e96' : group !== undefined ? GROUP_COLOURS[group % 4] : '#e8590c';
      ctx.fill();
    }
    // A label on every node, at least 9 px on screen, cut to its chip; a supernode's members are named once, by the group.
    ctx.fillStyle = '#1d2330'; ctx.font = `${Math.max(9.5, 9 / this.scale)}px system-ui`;
    const named = new Set();
    for (const n of this.visible) {
      const group = n.isSupernode ? null : members.get(n.node_id);
      if (group !== undefined && group !== null) {
        if (named.has(group)) continue;
        named.add(group);
        ctx.fillText(fit(ctx, `[${this.supernodes[group][0]}]`, CHIP - 12), n.x + 7, n.y + 3.5);
        continue;
      }
      const text = this.labelOf(n);
      if (text) ctx.fillText(fit(ctx, text, n.feature_type === 'logit' ? 2 * CHIP : CHIP - 12), n.x + 7, n.y + 3.5);
    }
  }

  members() {
    const m = new Map();
    this.supernodes.forEach((g, k) => g.slice(1).forEach(id => m.set(id, k)));
    return m;
  }

  // The painted graph is kept as a bitmap at the current zoom, so panning and hovering only copy it (a repaint of tens of
  // thousands of edges happens on zoom, threshold, pin or label changes).
  invalidate() { this.cache = null; this.draw(); }

  draw() {
    const { ctx, canvas } = this, dpr = window.devicePixelRatio || 1, pad = 80;
    if (canvas.width !== canvas.clientWidth * dpr || canvas.height !== canvas.clientHeight * dpr) { canvas.width = canvas.clientWidth * dpr; canvas.height = canvas.clientHeight * dpr; }
    const focus = this.hover || this.selected;
    if (!this.cache || this.cache.scale !== this.scale) {
      const s = this.scale * dpr, w = Math.ceil((this.data.width + 2 * pad) * s), h = Math.ceil((this.data.height + 2 * pad) * s);
      this.cache = null;
      if (w * h <= 24e6) {
        const c = document.createElement('canvas'); c.width = w; c.height = h;
        const cc = c.getContext('2d');
        cc.setTransform(s, 0, 0, s, pad * s, pad * s);
        this.paint(cc);
        this.cache = { canvas: c, scale: this.scale, offset: pad * s };
      }
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (focus) ctx.globalAlpha = 0.4;
    if (this.cache) ctx.drawImage(this.cache.canvas, this.tx * dpr - this.cache.offset, this.ty * dpr - this.cache.offset);
    else { ctx.setTransform(dpr * this.scale, 0, 0, dpr * this.scale, dpr * this.tx, dpr * this.ty); this.paint(ctx); }
    ctx.globalAlpha = 1;
    ctx.setTransform(dpr * this.scale, 0, 0, dpr * this.scale, dpr * this.tx, dpr * this.ty);
    if (focus) {
      for (const l of this.neighbours.get(focus) ?? []) {
        ctx.strokeStyle = l.w < 0 ? '#d9480f' : '#1c7ed6'; ctx.lineWidth = 2 / Math.sqrt(this.scale);
        ctx.beginPath(); ctx.moveTo(l.s.x, l.s.y); ctx.lineTo(l.t.x, l.t.y); ctx.stroke();
      }
      ctx.beginPath(); ctx.arc(focus.x, focus.y, 7, 0, 2 * Math.PI); ctx.fillStyle = '#3056d3'; ctx.fill();
      ctx.fillStyle = '#1d2330'; ctx.font = `${11 / Math.max(0.6, this.scale)}px system-ui`;
      ctx.fillText(this.labelOf(focus).slice(0, 40), focus.x + 8, focus.y - 8);
    }
    // Nodes marked from a side panel (a QK pair's two sides): rings on top.
    for (const id of this.marked) {
      const n = this.data.byId.get(id);
      if (!n) continue;
      ctx.beginPath(); ctx.arc(n.x, n.y, 9, 0, 2 * Math.PI); ctx.strokeStyle = '#c2255c'; ctx.lineWidth = 3 / this.scale; ctx.stroke();
    }
    this.frames = (this.frames || 0) + 1;
  }

  // A node's name: the store's label, else the file's clerp, else L{layer}/{feature}; errors, supernodes and logits by kind.
  labelOf(n) {
    if (n.feature_type === 'logit') return n.clerp || 'logit';
    if (n.feature_type === 'embedding') return '';
    if (n.isSupernode) return `[${n.name}]`;
    if (n.feature_type === 'mlp reconstruction error') return `error L${n.layer}`;
    const f = featureOf(n);
    if (!f) return n.clerp || n.node_id;
    return this.labels[`${f.layer}:${f.feature}`] || n.clerp || `L${f.layer}/${f.feature}`;
  }

  // The edges into and out of a node, strongest first: the file's own for a node, the summed ones for a supernode.
  edgesOf(n) {
    if (n.isSupernode) return { in: this.edges.filter(l => l.t === n), out: this.edges.filter(l => l.s === n) };
    const byMag = list => [...(list ?? [])].sort((a, b) => Math.abs(b.w) - Math.abs(a.w));
    return { in: byMag(this.data.ins.get(n)), out: byMag(this.data.outs.get(n)) };
  }

  at(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    const x = (clientX - r.left - this.tx) / this.scale, y = (clientY - r.top - this.ty) / this.scale;
    let best = null, bestD = (10 / this.scale) ** 2;
    for (let gx = Math.floor(x / 20) - 1; gx <= Math.floor(x / 20) + 1; gx++)
      for (let gy = Math.floor(y / 20) - 1; gy <= Math.floor(y / 20) + 1; gy++)
        for (const n of this.grid.get(`${gx}:${gy}`) ?? []) {
          const dd = (n.x - x) ** 2 + (n.y - y) ** 2;
          if (dd < bestD) { best = n; bestD = dd; }
        }
    return best;
  }

  pan(dx, dy) { this.tx += dx; this.ty += dy; this.draw(); }

  bind() {
    const c = this.canvas;
    let drag = null, moved = false;
    c.addEventListener('mousedown', e => { drag = { x: e.clientX, y: e.clientY }; moved = false; });
    window.addEventListener('mouseup', () => { drag = null; });
    c.addEventListener('mousemove', e => {
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 2) moved = true;
        drag = { x: e.clientX, y: e.clientY };
        this.pan(dx, dy);
        return;
      }
      const n = this.at(e.clientX, e.clientY);
      if (n !== this.hover) { this.hover = n; this.draw(); this.cb.hover?.(n); }
    });
    c.addEventListener('mouseleave', () => { this.hover = null; this.draw(); this.cb.hover?.(null); });
    c.addEventListener('click', e => {
      if (moved) return;
      const n = this.at(e.clientX, e.clientY);
      if (!n) return;
      if (e.shiftKey) this.togglePin(n.node_id); else { this.selected = n; this.draw(); this.cb.select?.(n); }
    });
    c.addEventListener('wheel', e => {
      e.preventDefault();
      const r = c.getBoundingClientRect(), k = Math.exp(-e.deltaY * 0.0015);
      const px = e.clientX - r.left, py = e.clientY - r.top;
      this.tx = px - (px - this.tx) * k; this.ty = py - (py - this.ty) * k; this.scale *= k;
      this.draw();
    }, { passive: false });
  }

  togglePin(id) {
    if (this.pinned.has(id)) this.pinned.delete(id); else this.pinned.add(id);
    if (this.pinnedOnly) this.filter(); else this.invalidate();
    this.cb.changed?.();
  }
}

const GROUP_COLOURS = ['#ae3ec9', '#f08c00', '#0c8599', '#5c940d'];

// Text cut with an ellipsis to fit a width in the context's current font.
function fit(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (ctx.measureText(text.slice(0, mid) + '…').width <= width) lo = mid; else hi = mid - 1; }
  return text.slice(0, lo) + '…';
}

// The feature of a feature node ("L_F_P"), or null.
export function featureOf(n) {
  if (n.feature_type !== 'cross layer transcoder') return null;
  const [layer, feature] = n.node_id.split('_').map(Number);
  return Number.isFinite(layer) && Number.isFinite(feature) && feature >= 0 ? { layer, feature, position: n.ctx_idx } : null;
}

// Supernodes in the URL: name:id+id|name:id+id.
function encodeGroups(groups) { return groups.map(g => `${g[0].replace(/[|:+]/g, ' ')}:${g.slice(1).join('+')}`).join('|'); }
function decodeGroups(s) { return s ? s.split('|').map(g => { const [name, ids] = g.split(':'); return [name, ...(ids ?? '').split('+').filter(Boolean)]; }).filter(g => g.length > 1) : []; }

let current = null;
// Exposed for the benchmark and for scripting: the explorer on screen.
window.mechanistGraph = {
  get explorer() { return current; },
  prepare,
  // Shows a graph object as "open JSON" does (for scripts and the benchmark); resolves once it is drawn.
  async open(graph) { await show(document.getElementById('view'), state(), graph, null); },
};

export async function render(root, s) {
  const saved = await api('/api/graphs');
  root.innerHTML = `<h2>Attribution graph</h2>
    <form id="graph-form" class="inline">
      <input id="graph-prompt" size="50" value="${esc(s.gprompt || 'The capital of the state containing Dallas is')}">
      <label title="features visited in order of estimated influence (the CLI's trace visits every active feature unless --max-feature-nodes)">feature budget <input id="graph-budget" type="number" min="1" max="5000" value="${esc(s.budget || '400')}" style="width:5em"></label>
      <button type="submit">Trace</button>
      <select id="graph-saved"><option value="">saved graphs…</option>${saved.graphs.map(g => `<option value="${esc(g.slug)}"${g.slug === s.graph ? ' selected' : ''}>${esc(g.prompt ?? g.slug)}</option>`).join('')}</select>
      <label class="file">open JSON <input id="graph-file" type="file" accept=".json,application/json"></label>
    </form>
    <div class="inline" id="graph-controls">
      <label>nodes: cumulative influence ≤ <input id="node-threshold" type="range" min="0.05" max="1" step="0.01" value="${s.nt || 1}"> <span id="nt-value"></span></label>
      <label>edges: strongest <input id="edge-threshold" type="range" min="0" max="0.99" step="0.01" value="${s.et || 0}"> <span id="et-value"></span></label>
      <label><input id="pinned-only" type="checkbox"${s.sub === '1' ? ' checked' : ''}> pinned subgraph only</label>
      <span class="muted">drag to pan, wheel to zoom, click a node for its card, shift+click to pin</span>
    </div>
    <div class="row"><div class="graph-wrap"><canvas id="graph-canvas"></canvas><div id="graph-tip" class="tip"></div>
      <div id="graph-legend" class="legend"><span><i class="edge pos"></i> edge raises its target</span><span><i class="edge neg"></i> lowers it</span>
        <span class="muted">width ∝ √|weight|</span><span><i class="dot"></i> feature</span><span><i class="dot err"></i> MLP error</span>
        <span><i class="dot tok"></i> token</span><span><i class="dot logit"></i> logit</span><span><i class="dot pin"></i> pinned</span><span><i class="dot group"></i> supernode</span></div></div>
      <div id="graph-side"><div id="graph-message"></div><div id="graph-pins"></div><div id="graph-intervene"></div><div id="graph-card"></div></div></div>`;
  const form = root.querySelector('#graph-form');
  form.addEventListener('submit', async e => {
    e.preventDefault();
    const prompt = root.querySelector('#graph-prompt').value;
    root.querySelector('#graph-message').innerHTML = '<p class="muted">Tracing…</p>';
    try {
      const budget = Number(root.querySelector('#graph-budget').value) || 400;
      const g = await api('/api/graph', { model: s.model, prompt, maxFeatureNodes: budget });
      setState({ graph: g.metadata.slug, gprompt: prompt, budget: String(budget), pinned: '', groups: '' });
    } catch (err) { root.querySelector('#graph-message').innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  });
  root.querySelector('#graph-saved').addEventListener('change', e => { if (e.target.value) setState({ graph: e.target.value, pinned: '', groups: '' }); });
  root.querySelector('#graph-file').addEventListener('change', async e => {
    const file = e.target.files[0];
    if (!file) return;
    try { await show(root, s, JSON.parse(await file.text()), null); } catch (err) { root.querySelector('#graph-message').innerHTML = `<p class="error">not a graph file: ${esc(err.message)}</p>`; }
  });
  if (!s.graph) { root.querySelector('#graph-message').innerHTML = '<p class="muted">Trace a prompt, pick a saved graph, or open a graph JSON file (ours or circuit-tracer\'s).</p>'; return; }
  show(root, s, await api(`/api/graphs/${encodeURIComponent(s.graph)}`), s.graph);
}

async function show(root, s, graph, slug) {
  if (!Array.isArray(graph?.nodes) || !Array.isArray(graph?.links)) throw new Error('a graph file has "nodes" and "links" arrays');
  const meta = graph.metadata ?? {};
  const features = graph.nodes.filter(n => featureOf(n)).length;
  root.querySelector('#graph-message').innerHTML = `<p class="muted" id="graph-budget-note">${features} feature nodes shown; traced ${meta.max_feature_nodes ? `with a budget of ${esc(String(meta.max_feature_nodes))} feature nodes` : 'over every active feature (no budget recorded)'}</p>`;
  const canvas = root.querySelector('#graph-canvas');
  const data = prepare(graph, canvas.clientWidth);
  canvas.style.height = Math.min(MAX_VIEW_HEIGHT, Math.max(420, data.height * fitScale(canvas.clientWidth, data.width, data.height) + 40)) + 'px';
  const stores = await api('/api/features');
  const store = 0; // the first feature store labels the nodes and shows their cards
  const side = root.querySelector('#graph-side'), tip = root.querySelector('#graph-tip');
  const x = new Explorer(canvas, data, {
    hover: n => {
      if (!n) { tip.style.display = 'none'; return; }
      tip.style.display = 'block';
      tip.style.left = (n.x * x.scale + x.tx + 12) + 'px'; tip.style.top = (n.y * x.scale + x.ty + 12) + 'px';
      tip.textContent = `${n.node_id} ${x.labelOf(n)} infl ${fmt(n.influence, 3)}${n.activation != null ? ' act ' + fmt(n.activation, 3) : ''}`;
    },
    select: async n => {
      const f = featureOf(n), el = side.querySelector('#graph-card');
      const what = n.isSupernode ? `supernode of ${n.members.length} features` : `${n.feature_type} at position ${n.ctx_idx}, influence ${fmt(n.influence, 3)}`;
      el.innerHTML = `<p><b>${esc(n.isSupernode ? n.name : n.node_id)}</b> ${esc(what)}
        ${n.isSupernode ? '' : `<button id="pin-button" type="button">${x.pinned.has(n.node_id) ? 'Unpin' : 'Pin'}</button>`}</p>
        <div id="node-edges" class="row">${edgeTable('incoming', x.edgesOf(n).in, l => l.s)}${edgeTable('outgoing', x.edgesOf(n).out, l => l.t)}</div><div id="qk-panel"></div><div id="node-card"></div>`;
      el.querySelectorAll('#node-edges a[data-qk]').forEach(a => a.addEventListener('click', e => { e.preventDefault(); e.stopPropagation(); qkPanel(el.querySelector('#qk-panel'), a.dataset.qk); }));
      el.querySelector('#pin-button')?.addEventListener('click', () => { x.togglePin(n.node_id); x.cb.select(n); });
      el.querySelectorAll('#node-edges tr[data-node]').forEach(tr => tr.addEventListener('click', () => {
        const other = [...x.visible].find(m => m.node_id === tr.dataset.node) ?? data.byId.get(tr.dataset.node);
        if (other) { x.selected = other; x.draw(); x.cb.select(other); }
      }));
      if (f && stores.length > 0) {
        try { await card(el.querySelector('#node-card'), store, `${f.layer}:${f.feature}`); } catch (err) { el.querySelector('#node-card').innerHTML = `<p class="muted">${esc(err.message)}</p>`; }
      }
    },
    changed: () => { pins(); remember(); },
  });
  current = x;
  // A node's strongest edges (ten each way, the rest counted), each row opening the node at its other end.
  // A node's strongest edges (ten each way, the rest counted), each row opening the node at its other end; an edge between two
  // positions names the head that carried most of it ("via"), which opens that attention score's QK terms.
  const tokenOf = p => String(graph.metadata?.prompt_tokens?.[p] ?? p);
  const via = l => {
    if (!l.heads?.length) return '<td></td>';
    const h = l.heads[0], key = `${h.layer}:${h.head}:${h.query}:${l.s.ctx_idx}`;
    const share = l.w !== 0 ? Math.round(100 * num(h.value) / l.w) : 0;
    return `<td class="via"><a href="#" data-qk="${key}" title="${esc(l.heads.map(x => `L${x.layer}H${x.head}→${x.query}: ${fmt(x.value, 3)}`).join('\n'))}">L${h.layer}H${h.head}→${h.query} ${share}%</a></td>`;
  };
  const edgeTable = (title, list, other) => `<table class="edges"><tr><th colspan="4">${title} (${list.length})</th></tr>${list.slice(0, 10).map(l => {
    const o = other(l);
    return `<tr data-node="${esc(o.node_id)}"><td class="tok">${esc(o.isSupernode ? o.name : o.node_id)}</td><td class="tok lbl">${esc(x.labelOf(o) || (o.feature_type === 'embedding' ? tokenOf(o.ctx_idx) : ''))}</td><td class="${l.w < 0 ? 'neg' : 'pos'}">${fmt(l.w, 3)}</td>${via(l)}</tr>`;
  }).join('')}${list.length > 10 ? `<tr><td colspan="4" class="muted">${list.length - 10} more</td></tr>` : ''}</table>`;
  // One attention score's QK terms: which query-side and key-side components made the head attend there; hovering a row marks both.
  const qkPanel = (el, key) => {
    const r = data.qk.get(key), [layer, head, query, k] = key.split(':').map(Number);
    const name = id => { const n = data.byId.get(id); return n ? x.labelOf(n) || (n.feature_type === 'embedding' ? tokenOf(n.ctx_idx) : '') : ''; };
    el.innerHTML = !r ? `<p class="muted">No QK attribution for L${layer}H${head} ${query} → ${k} in this file (trace it again, or see mechanist qk).</p>`
      : `<h3>Why L${layer}H${head} attends from ${esc(tokenOf(query))} (${query}) to ${esc(tokenOf(k))} (${k})</h3>
        <p class="muted">score ${fmt(r.score, 3)}${num(r.softcapped) !== num(r.score) ? ` (soft-capped ${fmt(r.softcapped, 3)})` : ''} = ${r.term_count} terms; the largest:</p>
        <table class="edges" id="qk-terms"><tr><th>query side</th><th>key side</th><th>value</th><th>share</th></tr>${r.terms.map(t =>
          `<tr data-q="${esc(t.query)}" data-k="${esc(t.key)}"><td class="tok">${esc(t.query)} <span class="lbl">${esc(name(t.query))}</span></td><td class="tok">${esc(t.key)} <span class="lbl">${esc(name(t.key))}</span></td><td class="${num(t.value) < 0 ? 'neg' : 'pos'}">${fmt(t.value, 3)}</td><td>${Math.round(100 * num(t.value) / num(r.score))}%</td></tr>`).join('')}
          <tr><td colspan="2" class="muted">${r.term_count - r.terms.length} more</td><td>${fmt(r.rest, 3)}</td><td></td></tr></table>`;
    el.querySelectorAll('#qk-terms tr[data-q]').forEach(tr => {
      tr.addEventListener('mouseenter', () => { x.marked = new Set([tr.dataset.q, tr.dataset.k]); x.draw(); });
      tr.addEventListener('mouseleave', () => { x.marked = new Set(); x.draw(); });
    });
  };
  const q = graph.qParams ?? {};
  const pinnedIds = s.pinned ? s.pinned.split(',') : (q.pinnedIds ?? []);
  pinnedIds.forEach(id => data.byId.has(id) && x.pinned.add(id));
  x.supernodes = s.groups ? decodeGroups(s.groups) : (q.supernodes ?? []).filter(g => Array.isArray(g) && g.length > 1);
  x.nodeThreshold = Number(s.nt || 1); x.edgeQuantile = Number(s.et || 0); x.pinnedOnly = s.sub === '1';
  if (stores.length > 0) {
    const ids = [...new Set(data.nodes.map(featureOf).filter(Boolean).map(f => `${f.layer}:${f.feature}`))].slice(0, 5000);
    try { x.labels = await api(`/api/features/${store}/labels?ids=${ids.join(',')}`); } catch { x.labels = {}; }
  }
  x.filter();
  const nt = root.querySelector('#node-threshold'), et = root.querySelector('#edge-threshold');
  const shown = () => {
    root.querySelector('#nt-value').textContent = `${fmt(x.nodeThreshold, 2)} (${x.visible.size} nodes)`;
    root.querySelector('#et-value').textContent = `${Math.round(100 - x.edgeQuantile * 100)}% (${x.edges.length} edges)`;
  };
  nt.addEventListener('input', () => { x.nodeThreshold = Number(nt.value); x.filter(); shown(); remember(); });
  et.addEventListener('input', () => { x.edgeQuantile = Number(et.value); x.filter(); shown(); remember(); });
  root.querySelector('#pinned-only').addEventListener('change', e => { x.pinnedOnly = e.target.checked; x.filter(); shown(); remember(); });
  shown();

  // The state lives in the URL (without re-rendering); "Save" also writes it into the graph file on the server.
  function remember() {
    setState({ pinned: [...x.pinned].join(','), groups: encodeGroups(x.supernodes), nt: x.nodeThreshold === 1 ? '' : String(x.nodeThreshold),
      et: x.edgeQuantile === 0 ? '' : String(x.edgeQuantile), sub: x.pinnedOnly ? '1' : '' }, false);
  }

  function pins() {
    const el = side.querySelector('#graph-pins');
    const grouped = new Set(x.supernodes.flatMap(g => g.slice(1)));
    el.innerHTML = `<h3>Pinned (${x.pinned.size})</h3>
      <div id="pin-list">${[...x.pinned].map(id => { const n = data.byId.get(id); return `<label class="pin"><input type="checkbox" value="${esc(id)}"${grouped.has(id) ? ' disabled' : ''}> ${esc(id)} <span class="muted">${esc(n ? x.labelOf(n) : '')}</span></label>`; }).join('')}</div>
      <form id="group-form" class="inline"><input id="group-name" placeholder="supernode name" size="16"><button type="submit">Group checked</button></form>
      <div id="supernodes">${x.supernodes.map((g, k) => `<div class="supernode" data-k="${k}"><b>${esc(g[0])}</b>: ${g.slice(1).map(esc).join(', ')} <button type="button" data-ungroup="${k}">ungroup</button></div>`).join('')}</div>
      ${slug ? '<button id="save-state" type="button">Save pins and supernodes</button> <span id="save-status" class="muted"></span>' : ''}`;
    el.querySelector('#group-form').addEventListener('submit', e => {
      e.preventDefault();
      const ids = [...el.querySelectorAll('#pin-list input:checked')].map(i => i.value);
      const name = el.querySelector('#group-name').value.trim() || `group ${x.supernodes.length + 1}`;
      if (ids.length === 0) return;
      x.supernodes.push([name, ...ids]); x.invalidate(); pins(); intervene(); remember();
    });
    el.querySelectorAll('[data-ungroup]').forEach(b => b.addEventListener('click', () => { x.supernodes.splice(Number(b.dataset.ungroup), 1); x.invalidate(); pins(); intervene(); remember(); }));
    el.querySelector('#save-state')?.addEventListener('click', async () => {
      try {
        await api(`/api/graphs/${encodeURIComponent(slug)}/state`, { pinnedIds: [...x.pinned], supernodes: x.supernodes });
        el.querySelector('#save-status').textContent = 'saved';
      } catch (err) { el.querySelector('#save-status').textContent = err.message; }
    });
    intervene();
  }

  // Interventions on pinned features and supernodes: one value each (xK scales the activation, a number sets it).
  function intervene() {
    const el = side.querySelector('#graph-intervene');
    const grouped = new Set(x.supernodes.flatMap(g => g.slice(1)));
    const targets = [
      ...x.supernodes.map(g => ({ name: g[0], ids: g.slice(1) })),
      ...[...x.pinned].filter(id => !grouped.has(id) && data.byId.get(id) && featureOf(data.byId.get(id))).map(id => ({ name: id, ids: [id] })),
    ].filter(t => t.ids.some(id => data.byId.get(id) && featureOf(data.byId.get(id))));
    const positions = (graph.metadata?.prompt_tokens ?? []).length;
    if (!data.nodes.some(n => featureOf(n))) {
      // An attention-only model's graph: tokens and logits only, nothing to set or swap.
      el.innerHTML = '<h3>Intervene</h3><p class="muted" id="intervene-none">This graph has no features (an attention-only model: its edges run from the tokens through the frozen attention). Click an edge\'s head to see why that head attended there.</p>';
      return;
    }
    el.innerHTML = `<h3>Intervene</h3>${targets.length === 0 ? '<p class="muted">Pin features (shift+click) to set them, or swap a position with another prompt\'s.</p>' : ''}
      <form id="intervene-form" class="inline">${targets.map((t, k) =>
      `<label class="pin">${esc(t.name)} <input data-target="${k}" size="6" value="x0" title="xK scales the activation; a number sets it"></label>`).join('')}
      <label>generate <input id="intervene-generate" size="3" value="8"></label> ${targets.length ? '<button type="submit">Run</button>' : ''}</form>
      <form id="swap-form" class="inline"><label>swap position <input id="swap-position" size="3" value="${Math.max(0, positions - 1)}"></label>
        <label>with the last token of <input id="swap-prompt" size="30" placeholder="The capital of Oregon is"></label>
        <label>layers <input id="swap-layers" size="6" placeholder="all"></label><button type="submit">Swap</button></form>
      <div id="intervene-result"></div>`;
    const report = r => {
      const out = el.querySelector('#intervene-result');
      const table = (title, list) => `<table class="logits"><tr><th colspan="2">${title}</th></tr>${list.map(t => `<tr><td class="tok">${esc(JSON.stringify(t.token))}</td><td>${(num(t.prob) * 100).toFixed(1)}%</td></tr>`).join('')}</table>`;
      out.innerHTML = `<p class="muted">${r.interventions.length} feature setting(s)</p><div class="row">${table('before', r.before)}${table('after', r.after)}</div>
        ${r.generated ? `<p><b>without:</b> <span id="gen-before">${esc(r.generated.clean.join(' '))}</span><br><b>with:</b> <span id="gen-after">${esc(r.generated.intervened.join(' '))}</span></p>` : ''}`;
      out.dataset.after = r.after[0].token;
    };
    const run = async body => {
      const out = el.querySelector('#intervene-result');
      out.innerHTML = '<p class="muted">Running…</p>';
      // The graph's own token ids when it carries them: display text need not tokenize back into the traced prompt.
      const ids = Array.isArray(graph.metadata.prompt_token_ids) ? graph.metadata.prompt_token_ids : undefined;
      try { report(await api('/api/intervene', { model: state().model || undefined, prompt: graph.metadata.prompt, tokens: ids, generate: Number(el.querySelector('#intervene-generate').value) || 0, topK: 5, ...body })); }
      catch (err) { out.innerHTML = `<p class="error">${esc(err.message)}</p>`; }
    };
    el.querySelector('#swap-form').addEventListener('submit', e => {
      e.preventDefault();
      const layers = el.querySelector('#swap-layers').value.split(',').map(x => x.trim()).filter(Boolean).map(Number);
      run({ swapPrompt: el.querySelector('#swap-prompt').value, swapPosition: Number(el.querySelector('#swap-position').value), swapLayers: layers.length ? layers : undefined });
    });
    if (targets.length === 0) return;
    el.querySelector('#intervene-form').addEventListener('submit', async e => {
      e.preventDefault();
      const set = [];
      targets.forEach((t, k) => {
        const v = el.querySelector(`[data-target="${k}"]`).value.trim();
        if (!v) return;
        for (const id of t.ids) { const f = featureOf(data.byId.get(id)); if (f) set.push(`${f.layer}:${f.position}:${f.feature}=${v}`); }
      });
      run({ set });
    });
  }

  pins();
}
