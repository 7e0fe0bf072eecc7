import { api, esc, show } from '../util.js';
import { setState } from '../app.js';

// One model run per (model, prompt): clicking a head only redraws from the patterns already here.
let last = { key: null, result: null };

async function patterns(s) {
  const key = JSON.stringify([s.model, s.prompt]);
  if (last.key !== key) last = { key, result: await api('/api/attention', { model: s.model, prompt: s.prompt }) };
  return last.result;
}

function drawPattern(canvas, pattern, size) {
  const n = pattern.length, ctx = canvas.getContext('2d');
  canvas.width = canvas.height = n; canvas.style.width = canvas.style.height = size + 'px';
  const img = ctx.createImageData(n, n);
  for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
    const v = pattern[q][k], o = 4 * (q * n + k), a = Math.round(255 * (1 - Math.sqrt(v)));
    img.data[o] = a; img.data[o + 1] = a; img.data[o + 2] = 255; img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

export async function render(root, s) {
  const r = await patterns(s);
  const byLayer = [];
  for (const h of r.heads) (byLayer[h.layer] ??= [])[h.head] = h.pattern;
  const layer = Math.min(+s.layer || 0, r.layers - 1), head = Math.min(+s.head || 0, r.headsPerLayer - 1);
  root.innerHTML = `<h2>Attention patterns <span class="muted">(rows: queries, columns: keys; click a head)</span></h2>
    <div id="grid">${byLayer.map((heads, l) => `<div class="heads-grid"><b style="width:4rem">L${l}</b>${heads.map((_, h) =>
      `<div class="head-cell${l === layer && h === head ? ' selected' : ''}" data-l="${l}" data-h="${h}"><canvas></canvas><div>L${l}H${h}</div></div>`).join('')}</div>`).join('')}</div>
    <h2>L${layer}H${head}: hover a token to see where it attends (blue) and who attends to it (orange)</h2>
    <div class="tokens" id="attn-tokens">${r.tokens.map((t, i) => `<span class="token" data-i="${i}">${esc(show(t))}</span>`).join('')}</div>`;
  root.querySelectorAll('.head-cell').forEach(cell => {
    const l = +cell.dataset.l, h = +cell.dataset.h;
    drawPattern(cell.querySelector('canvas'), byLayer[l][h], 90);
    cell.addEventListener('click', () => setState({ layer: l, head: h }));
  });
  const pattern = byLayer[layer][head], spans = [...root.querySelectorAll('#attn-tokens .token')];
  spans.forEach((span, i) => {
    span.addEventListener('mouseenter', () => spans.forEach((o, k) => {
      const from = pattern[i][k] ?? 0, to = pattern[k]?.[i] ?? 0;
      o.style.background = k <= i ? `rgba(48,86,211,${from})` : `rgba(232,89,12,${to})`;
      o.title = `attends ${(100 * from).toFixed(1)}% · receives ${(100 * to).toFixed(1)}%`;
    }));
    span.addEventListener('mouseleave', () => spans.forEach(o => { o.style.background = ''; }));
  });
}
