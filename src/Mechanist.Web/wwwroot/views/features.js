// Feature pages: search a feature store, then one feature's dashboard (examples with token shading, histogram, logits, label).
import { api, esc, fmt, num } from '../util.js';
import { setState } from '../state.js';

// One example: each token shaded by the feature's activation there (relative to the feature's max), the firing token outlined.
export function exampleHtml(e, max) {
  return `<div class="example"><span class="act">${fmt(e.activation, 3)}</span><span class="ctx">${e.tokens.map((t, i) => {
    const a = num(e.acts[i]), alpha = max > 0 ? Math.min(1, Math.max(0, a / max)) : 0;
    return `<span class="tk${i === e.maxIndex ? ' max' : ''}" style="background:rgba(234,88,12,${alpha.toFixed(3)})" title="${fmt(a, 3)}">${esc(t)}</span>`;
  }).join('')}</span></div>`;
}

function histogramSvg(bins, width = 460, height = 140) {
  if (bins.length === 0) return '<p class="muted">never fired</p>';
  const pad = 28, peak = Math.max(...bins.map(b => b.count)), w = (width - 2 * pad) / bins.length;
  let svg = `<svg width="${width}" height="${height}" role="img" aria-label="activation histogram" class="histogram">`;
  bins.forEach((b, i) => {
    const h = (height - 2 * pad) * b.count / peak;
    svg += `<rect x="${pad + i * w}" y="${height - pad - h}" width="${Math.max(1, w - 1)}" height="${h}" fill="#ea580c"><title>${fmt(b.low, 3)} – ${fmt(b.high, 3)}: ${b.count}</title></rect>`;
  });
  svg += `<text x="${pad}" y="${height - 8}">${fmt(bins[0].low, 3)}</text><text x="${width - pad - 40}" y="${height - 8}">${fmt(bins[bins.length - 1].high, 3)}</text>`;
  svg += `<text x="${pad}" y="14">activations (log scale, quarter octaves); peak ${peak}</text>`;
  return svg + '</svg>';
}

function logitsTable(title, list) {
  return `<table class="logits"><tr><th colspan="2">${esc(title)}</th></tr>${list.map(t =>
    `<tr><td class="tok">${esc(JSON.stringify(t.token))}</td><td>${fmt(t.value, 3)}</td></tr>`).join('')}</table>`;
}

export async function render(root, s) {
  const stores = await api('/api/features');
  if (stores.length === 0) {
    root.innerHTML = '<p class="muted">No feature store is loaded. Build one with <code>mechanist features build --out DIR</code> and start the workbench with <code>mechanist serve --features DIR</code>.</p>';
    return;
  }
  const store = Math.min(Number(s.store || 0), stores.length - 1), info = stores[store].info;
  root.innerHTML = `<h2>Features <span class="muted">${esc(stores[store].name)} (${esc(info.dictionaryKind)}, ${info.layers.length} layer(s) × ${info.dDict} features, ${info.tokens.toLocaleString()} tokens of ${esc(info.model.split('/').pop())})</span></h2>
    <form id="feature-search" class="inline">
      <select id="feature-store">${stores.map(st => `<option value="${st.id}"${st.id === store ? ' selected' : ''}>${esc(st.name)}</option>`).join('')}</select>
      <input id="feature-query" placeholder="token, text or LAYER:FEATURE" value="${esc(s.q)}" size="30">
      <button type="submit">Search</button>
    </form>
    <div class="row"><div id="feature-list"></div><div id="feature-card" class="grow"></div></div>`;
  root.querySelector('#feature-search').addEventListener('submit', e => {
    e.preventDefault();
    const q = root.querySelector('#feature-query').value.trim();
    setState({ store: root.querySelector('#feature-store').value, q, feature: /^\d+\s*[:/]\s*\d+$/.test(q) ? q.replace(/\s/g, '').replace('/', ':') : s.feature });
  });
  const hits = await api(`/api/features/${store}/search?q=${encodeURIComponent(s.q || '')}&limit=40`);
  root.querySelector('#feature-list').innerHTML = `<table id="feature-hits"><tr><th>feature</th><th>label</th><th>freq.</th></tr>${hits.map(h =>
    `<tr data-feature="${h.layer}:${h.feature}" class="hit"><td>L${h.layer}/${h.feature}</td><td class="tok">${esc(h.label)}</td><td>${(num(h.frequency) * 100).toFixed(2)}%</td></tr>`).join('')}</table>
    ${hits.length === 0 ? '<p class="muted">no feature matches</p>' : ''}`;
  root.querySelectorAll('#feature-hits tr.hit').forEach(tr => tr.addEventListener('click', () => setState({ feature: tr.dataset.feature })));
  const chosen = s.feature || (hits[0] ? `${hits[0].layer}:${hits[0].feature}` : '');
  if (chosen) await card(root.querySelector('#feature-card'), store, chosen);
}

export async function card(el, store, spec) {
  const [layer, feature] = spec.split(':').map(Number);
  const d = await api(`/api/features/${store}/${layer}/${feature}`);
  const sm = d.summary, max = num(sm.max);
  el.innerHTML = `<div class="feature-card" data-feature="${layer}:${feature}">
    <h2>L${layer}/${feature} <span id="feature-label">${esc(sm.label)}</span></h2>
    <form id="label-form" class="inline"><input id="label-input" size="40" value="${esc(sm.userLabel ?? '')}" placeholder="${esc(sm.autoLabel)}"><button type="submit">Save label</button>
      <span class="muted">automatic: ${esc(sm.autoLabel)}</span></form>
    ${sm.explanation ? `<p><b>Explanation:</b> ${esc(sm.explanation)}</p>` : ''}
    <p>Fires on <b>${sm.count.toLocaleString()}</b> of ${sm.tokens.toLocaleString()} tokens (${(num(sm.frequency) * 100).toFixed(3)}%), max ${fmt(sm.max, 3)}, mean ${fmt(sm.mean, 3)}.</p>
    <div class="row">${histogramSvg(d.histogram)}${logitsTable('promotes', d.topLogits)}${logitsTable('suppresses', d.bottomLogits)}
      ${d.decoderNorms ? `<table class="logits"><tr><th colspan="2">decoder norm per layer</th></tr>${d.decoderNorms.map((v, i) => `<tr><td>L${i}</td><td>${fmt(v, 3)}</td></tr>`).join('')}</table>` : ''}
      ${d.similar?.length ? `<table class="logits" id="similar-features"><tr><th colspan="2" title="cosine of the features' output directions (a CLT feature: the sum of its decoders)">similar features</th></tr>${d.similar.map(n =>
        `<tr><td><a href="#view=features&store=${encodeURIComponent(store)}&feature=${n.layer}:${n.feature}" class="similar" data-feature="${n.layer}:${n.feature}">${n.layer}:${n.feature}</a></td><td>${fmt(n.cosine, 2)}</td></tr>`).join('')}</table>` : ''}</div>
    <h2>Top activations</h2><div id="top-examples">${d.top.map(e => exampleHtml(e, max)).join('')}</div>
    ${d.intervals.map(iv => `<details class="interval"><summary>activations ${fmt(iv.low, 3)} – ${fmt(iv.high, 3)}: ${iv.count.toLocaleString()} firings (${iv.examples.length} sampled)</summary>${iv.examples.map(e => exampleHtml(e, max)).join('')}</details>`).join('')}
  </div>`;
  el.querySelector('#label-form').addEventListener('submit', async e => {
    e.preventDefault();
    try {
      const updated = await api(`/api/features/${store}/${layer}/${feature}/label`, { label: el.querySelector('#label-input').value });
      el.querySelector('#feature-label').textContent = updated.label;
    } catch (err) { el.querySelector('#feature-label').textContent = err.message; }
  });
}
