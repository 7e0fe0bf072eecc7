import { api, fmt, esc, show, heatTable, heatLegend } from '../util.js';

export async function render(root, s) {
  const r = await api('/api/lens', { model: s.model, prompt: s.prompt, target: s.target || null, topK: 3, decoder: s.decoder || null });
  const layers = r.layers.map(l => l.label);
  const targetMode = r.target != null;
  // Probability of the layer's top token (or of the target) per cell.
  const values = r.layers.map(l => l.positions.map(c => targetMode ? c.targetProb : c.top[0].prob));
  const table = heatTable(layers, r.tokens.map((t, i) => `${i}:${show(t)}`), values, {
    max: 1,
    cell: (li, p) => {
      const c = r.layers[li].positions[p];
      return targetMode ? `#${c.targetRank} ${(100 * c.targetProb).toFixed(0)}%` : `${esc(show(c.top[0].token))} ${(100 * c.top[0].prob).toFixed(0)}%`;
    },
  });
  root.innerHTML = `<h2>Logit lens ${targetMode ? `· target ${esc(show(r.target))} (rank and probability)` : '· top token and probability'}</h2>
    <p class="muted">Rows: the residual stream read at each depth (L_pre: before block L; final_post: after the final norm) through the unembedding;
      columns: position:token; ${targetMode ? `cell: the target's rank among all tokens (#1 = the lens's top token) and its probability` : 'cell: the lens\'s top next token and its probability'}.</p>
    ${heatLegend(targetMode ? `probability of ${show(r.target)}` : 'probability of the top token', { percent: true })}
    <div id="lens-table" style="overflow-x:auto">${table}</div>
    <p class="muted">Loss against the ${esc(r.lossTarget ?? 'next token')} per layer: ${r.layers.map(l => `${l.label} ${fmt(l.loss)}`).join(' · ')}</p>`;
}
