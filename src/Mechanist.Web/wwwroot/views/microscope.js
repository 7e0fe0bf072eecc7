import { api, esc, show, heatTable, heatLegend, lineChart } from '../util.js';

export async function render(root, s) {
  const r = await api('/api/microscope', { model: s.model, prompt: s.prompt });
  const pairs = r.linearity.map((_, i) => `${r.depths[i]}→${r.depths[i + 1]}`);
  const cols = r.tokens.map((t, i) => `${i}:${show(t)}`);
  const peak = rows => Math.max(1e-9, ...rows.flat().filter(Number.isFinite).map(Math.abs));
  const nonMax = peak(r.nonlinearity), lossMax = peak(r.lensLoss);
  root.innerHTML = `<div class="row">
      <div>${lineChart({ linearity: r.linearity }, { title: 'Layer linearity (model corpus)', xLabels: pairs, xTitle: 'depth → next depth', yTitle: 'linearity score' })}</div>
      <div>${lineChart({ 'intrinsic dim': r.intrinsicDimension }, { title: 'Intrinsic dimension (TwoNN)', xLabels: r.depths, xTitle: 'depth', yTitle: 'dimension' })}</div>
      <div>${lineChart({ anisotropy: r.anisotropy }, { title: 'Anisotropy', xLabels: r.depths, xTitle: 'depth', yTitle: 'mean cosine' })}</div>
    </div>
    <h2>Per-token nonlinearity (error of the layer-to-layer linear map)</h2>
    ${heatLegend('normalised error', { max: nonMax })}
    <div id="nonlinearity" style="overflow-x:auto">${heatTable(pairs, cols, r.nonlinearity, { max: nonMax })}</div>
    <h2>Logit-lens loss per token (nats)</h2>
    ${heatLegend('loss (nats)', { max: lossMax, digits: 1 })}
    <div style="overflow-x:auto">${heatTable(r.depths, cols, r.lensLoss, { digits: 1, max: lossMax })}</div>
    <p class="muted">Token classes: ${r.classes.map((c, i) => `${esc(show(r.tokens[i]))}=${esc(c)}`).join(' ')}</p>`;
}
