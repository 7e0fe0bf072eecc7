// Steering playground: activation addition (a direction from contrasting texts) or feature steering (transcoder features set
// at every position), with the unsteered and steered continuations side by side.
import { api, esc } from '../util.js';

const lines = s => s.split('\n').map(x => x.trim()).filter(Boolean);

export async function render(root, s) {
  root.innerHTML = `<h2>Steering</h2>
    <form id="steer-form">
      <div class="inline"><label>Prompt <input id="steer-prompt" size="50" value="Alice went to the"></label>
        <label>tokens <input id="steer-generate" size="3" value="12"></label>
        <label><input type="radio" name="steer-mode" value="vector" checked> activation addition</label>
        <label><input type="radio" name="steer-mode" value="feature"> feature steering</label></div>
      <div id="vector-inputs" class="inline">
        <label>positive texts (one per line)<br><textarea id="steer-positive" rows="3" cols="30">Alice went to the forest</textarea></label>
        <label>negative texts<br><textarea id="steer-negative" rows="3" cols="30">Alice went to the market</textarea></label>
        <label>layer <input id="steer-layer" size="3" value="1"></label><label>coefficient <input id="steer-coef" size="4" value="4"></label>
      </div>
      <div id="feature-inputs" class="inline" style="display:none">
        <label>features (LAYER:FEATURE=VALUE per line, set at every position; xK scales)<br><textarea id="steer-features" rows="3" cols="40">2:570=14</textarea></label>
      </div>
      <button type="submit">Generate</button>
    </form>
    <div id="steer-result"></div>`;
  const mode = () => root.querySelector('input[name=steer-mode]:checked').value;
  root.querySelectorAll('input[name=steer-mode]').forEach(r => r.addEventListener('change', () => {
    root.querySelector('#vector-inputs').style.display = mode() === 'vector' ? '' : 'none';
    root.querySelector('#feature-inputs').style.display = mode() === 'feature' ? '' : 'none';
  }));
  root.querySelector('#steer-form').addEventListener('submit', async e => {
    e.preventDefault();
    const out = root.querySelector('#steer-result');
    out.innerHTML = '<p class="muted">Generating…</p>';
    const prompt = root.querySelector('#steer-prompt').value, generate = Number(root.querySelector('#steer-generate').value) || 12;
    try {
      let before, after, note;
      if (mode() === 'vector') {
        const r = await api('/api/steer', { model: s.model, prompt, positive: lines(root.querySelector('#steer-positive').value), negative: lines(root.querySelector('#steer-negative').value),
          layer: Number(root.querySelector('#steer-layer').value), coefficient: Number(root.querySelector('#steer-coef').value), generate });
        before = r.samples[0].unsteered; after = r.samples[0].steered; note = `vector norm ${r.vectorNorm.toFixed(2)} at layer ${r.layer}, × ${r.coefficient}`;
      } else {
        const set = lines(root.querySelector('#steer-features').value).map(x => { const [lf, v] = x.split('='); const [l, f] = lf.split(':'); return `${l.trim()}:*:${f.trim()}=${(v ?? 'x2').trim()}`; });
        const r = await api('/api/intervene', { model: s.model, prompt, set, generate });
        before = r.generated.clean.join(' '); after = r.generated.intervened.join(' '); note = `${r.interventions.length} feature setting(s)`;
      }
      out.innerHTML = `<p class="muted">${esc(note)}</p><div class="steer-columns"><div><h3>unsteered</h3><p id="steer-before">${esc(prompt)} <b>${esc(before)}</b></p></div>
        <div><h3>steered</h3><p id="steer-after">${esc(prompt)} <b>${esc(after)}</b></p></div></div>`;
    } catch (err) { out.innerHTML = `<p class="error">${esc(err.message)}</p>`; }
  });
}
