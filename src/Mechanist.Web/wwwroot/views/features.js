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

// Firings per bin, with a count axis (0, half, peak) and the activation range under it.
function histogramSvg(bins, scale, width = 480, height = 160) {
  if (bins.length === 0) return '<p class="muted">never fired</p>';
  const left = 46, right = 12, top = 24, bottom = 28, peak = Math.max(1, ...bins.map(b => b.count)), w = (width - left - right) / bins.length;
  const y = v => height - bottom - (height - top - bottom) * v / peak;
  let svg = `<svg width="${width}" height="${height}" role="img" aria-label="activation histogram" class="histogram">`;
  for (const v of [0, peak / 2, peak]) {
    svg += `<line x1="${left - 4}" x2="${width - right}" y1="${y(v)}" y2="${y(v)}" stroke="${v === 0 ? '#999' : '#e5e7eb'}"/>`;
    svg += `<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" class="tick">${Math.round(v).toLocaleString()}</text>`;
  }
  bins.forEach((b, i) => {
    svg += `<rect x="${left + i * w}" y="${y(b.count)}" width="${Math.max(1, w - 1)}" height="${y(0) - y(b.count)}" fill="#ea580c"><title>${fmt(b.low, 3)} – ${fmt(b.high, 3)}: ${b.count}</title></rect>`;
  });
  svg += `<text x="${left}" y="${height - 8}">${fmt(bins[0].low, 3)}</text><text x="${width - right}" y="${height - 8}" text-anchor="end">${fmt(bins[bins.length - 1].high, 3)}</text>`;
  svg += `<text x="${left}" y="14">firings by activation (${scale === 'equal-width' ? 'equal-width bins' : 'log scale, quarter octaves'})</text>`;
  return svg + '</svg>';
}

function logitsTable(title, list) {
  return `<table class="logits"><tr><th colspan="2">${esc(title)}</th></tr>${list.map(t =>
    `<tr><td class="tok">${esc(JSON.stringify(t.token))}</td>${Number.isFinite(num(t.value)) ? `<td>${fmt(t.value, 3)}</td>` : ''}</tr>`).join('')}</table>`;
}

// The stores' summaries (which served model, if any, steers each one's features), fetched once.
let summaries = null;
const storeSummaries = () => (summaries ??= api('/api/features'));

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
  let hits;
  try { hits = await api(`/api/features/${store}/search?q=${encodeURIComponent(s.q || '')}&limit=40`); }
  catch (err) { hits = []; root.querySelector('#feature-list').innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  if (!root.querySelector('#feature-list .error')) root.querySelector('#feature-list').innerHTML = `<table id="feature-hits"><tr><th>feature</th><th>label</th><th>freq.</th></tr>${hits.map(h =>
    `<tr data-feature="${h.layer}:${h.feature}" class="hit"><td>L${h.layer}/${h.feature}</td><td class="tok">${esc(h.label)}</td><td>${(num(h.frequency) * 100).toFixed(2)}%</td></tr>`).join('')}</table>
    ${hits.length === 0 ? '<p class="muted">no feature matches</p>' : ''}`;
  root.querySelectorAll('#feature-hits tr.hit').forEach(tr => tr.addEventListener('click', () => setState({ feature: tr.dataset.feature })));
  const chosen = s.feature || (hits[0] ? `${hits[0].layer}:${hits[0].feature}` : '');
  if (chosen) await card(root.querySelector('#feature-card'), store, chosen);
}

export async function card(el, store, spec) {
  const [layer, feature] = spec.split(':').map(Number);
  const [d, all, scores] = await Promise.all([api(`/api/features/${store}/${layer}/${feature}`), storeSummaries(), api(`/api/features/${store}/${layer}/${feature}/scores`)]);
  const sm = d.summary, max = num(sm.max), steerModel = all[store]?.model;
  const firstExample = d.top[0] ? d.top[0].tokens.slice(0, d.top[0].maxIndex + 1).filter(t => !['<bos>', '<s>', '<|endoftext|>', '<|begin_of_text|>', '[CLS]'].includes(t.trim())).join('').trim() : '';
  el.innerHTML = `<div class="feature-card" data-feature="${layer}:${feature}">
    <h2>L${layer}/${feature} <span id="feature-label">${esc(sm.label)}</span></h2>
    <form id="label-form" class="inline"><input id="label-input" size="40" value="${esc(sm.userLabel ?? '')}" placeholder="${esc(sm.autoLabel)}"><button type="submit">Save label</button>
      <span class="muted">automatic: ${esc(sm.autoLabel)}</span></form>
    ${sm.explanation ? `<p><b>Explanation:</b> ${esc(sm.explanation)}</p>` : ''}
    ${scores.length ? `<p id="feature-scores" title="balanced accuracy of a language model predicting from the explanation where the feature fires (features score)">${scores.map(s =>
      `<b>${esc(s.method)}:</b> ${fmt(s.balancedAccuracy, 3)} <span class="muted">(${s.truePositives}/${s.positives} firing, ${s.trueNegatives}/${s.negatives} not; ${esc(s.model)})</span>`).join(' &nbsp; ')}</p>` : ''}
    <p>${sm.tokens > 0 ? `Fires on <b>${sm.count.toLocaleString()}</b> of ${sm.tokens.toLocaleString()} tokens (${(num(sm.frequency) * 100).toFixed(3)}%), max ${fmt(sm.max, 3)}, mean ${fmt(sm.mean, 3)}.`
      : `Fires on <b>${(num(sm.frequency) * 100).toFixed(3)}%</b> of tokens, max ${fmt(sm.max, 3)}, mean of percentiles ${fmt(sm.mean, 3)} <span class="muted">(published features keep no token counts)</span>.`}</p>
    <div class="row">${histogramSvg(d.histogram, d.histogramScale)}${logitsTable('promotes', d.topLogits)}${logitsTable('suppresses', d.bottomLogits)}
      ${d.decoderNorms ? `<table class="logits"><tr><th colspan="2">decoder norm per layer</th></tr>${d.decoderNorms.map((v, i) => `<tr><td>L${i}</td><td>${fmt(v, 3)}</td></tr>`).join('')}</table>` : ''}
      ${d.similar?.length ? `<table class="logits" id="similar-features"><tr><th colspan="2" title="cosine of the features' output directions (a CLT feature: the sum of its decoders)">similar features</th></tr>${d.similar.map(n =>
        `<tr><td><a href="#view=features&store=${encodeURIComponent(store)}&feature=${n.layer}:${n.feature}" class="similar" data-feature="${n.layer}:${n.feature}">${n.layer}:${n.feature}</a></td><td>${fmt(n.cosine, 2)}</td></tr>`).join('')}</table>` : ''}</div>
    <h2>Top activations</h2><div id="top-examples">${d.top.map(e => exampleHtml(e, max)).join('')}</div>
    ${d.intervals.map(iv => `<details class="interval"><summary>${iv.name ? esc(iv.name) : `activations ${fmt(iv.low, 3)} – ${fmt(iv.high, 3)}: ${iv.count.toLocaleString()} firings`} (${iv.examples.length} ${iv.name ? 'examples' : 'sampled'})</summary>${iv.examples.map(e => exampleHtml(e, max)).join('')}</details>`).join('')}
    ${steerModel ? `<h2>Steer with this feature <span class="muted">on ${esc(steerModel)}</span></h2>
    <form id="feature-steer" class="inline"><label class="grow">prompt <input id="fs-prompt" value="${esc(firstExample)}"></label>
      <label title="the feature's activation at every position (a number), or xK to scale it where it fires">value <input id="fs-value" size="6" value="${fmt(2 * max, 2)}"></label>
      <label>generate <input id="fs-generate" size="3" value="12"></label><button type="submit">Steer</button></form><div id="fs-result"></div>` : ''}
  </div>`;
  el.querySelector('#feature-steer')?.addEventListener('submit', async e => {
    e.preventDefault();
    const out = el.querySelector('#fs-result');
    out.innerHTML = '<p class="muted">Running…</p>';
    try {
      const r = await api('/api/intervene', { model: steerModel, prompt: el.querySelector('#fs-prompt').value, set: [`${layer}:*:${feature}=${el.querySelector('#fs-value').value.trim()}`],
        generate: Number(el.querySelector('#fs-generate').value) || 0, topK: 5 });
      const table = (title, list) => `<table class="logits"><tr><th colspan="2">${title}</th></tr>${list.map(t => `<tr><td class="tok">${esc(JSON.stringify(t.token))}</td><td>${(num(t.prob) * 100).toFixed(1)}%</td></tr>`).join('')}</table>`;
      out.innerHTML = `<div class="row">${table('next token before', r.before)}${table('after', r.after)}</div>
        ${r.generated ? `<p><b>before:</b> <span id="fs-before">${esc(r.generated.clean.join(' '))}</span><br><b>steered:</b> <span id="fs-after">${esc(r.generated.intervened.join(' '))}</span></p>` : ''}`;
    } catch (err) { out.innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  });
  el.querySelector('#label-form').addEventListener('submit', async e => {
    e.preventDefault();
    try {
      const updated = await api(`/api/features/${store}/${layer}/${feature}/label`, { label: el.querySelector('#label-input').value });
      el.querySelector('#feature-label').textContent = updated.label;
    } catch (err) { el.querySelector('#feature-label').textContent = err.message; }
  });
}
