import { api, esc, show, heatTable, lineChart } from '../util.js';

export async function render(root, s) {
  const r = await api('/api/microscope', { model: s.model, prompt: s.prompt });
  const pairs = r.linearity.map((_, i) => `${r.depths[i]}→${r.depths[i + 1]}`);
  const cols = r.tokens.map((t, i) => `${i}:${show(t)}`);
  root.innerHTML = `<div class="row">
      <div>${lineChart({ linearity: r.linearity }, { title: 'Layer linearity (model corpus)', xLabels: pairs })}</div>
      <div>${lineChart({ 'intrinsic dim': r.intrinsicDimension }, { title: 'Intrinsic dimension (TwoNN)', xLabels: r.depths })}</div>
      <div>${lineChart({ anisotropy: r.anisotropy }, { title: 'Anisotropy', xLabels: r.depths })}</div>
    </div>
    <h2>Per-token nonlinearity (error of the layer-to-layer linear map)</h2>
    <div id="nonlinearity" style="overflow-x:auto">${heatTable(pairs, cols, r.nonlinearity)}</div>
    <h2>Logit-lens loss per token (nats)</h2>
    <div style="overflow-x:auto">${heatTable(r.depths, cols, r.lensLoss, { digits: 1 })}</div>
    <p class="muted">Token classes: ${r.classes.map((c, i) => `${esc(show(r.tokens[i]))}=${esc(c)}`).join(' ')}</p>`;
}
