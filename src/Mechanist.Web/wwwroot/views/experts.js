// Expert routing of a mixture-of-experts model: for every layer and token, the experts chosen and their weights.
import { api, esc } from '../util.js';

const colours = ['#3056d3', '#e8590c', '#2b8a3e', '#ae3ec9', '#f08c00', '#0c8599', '#c2255c', '#5c940d'];
const colour = e => colours[e % colours.length];

export async function render(root, s) {
  const r = await api('/api/experts', { model: s.model, prompt: s.prompt });
  root.innerHTML = `<h2>Expert routing <span class="muted">(${r.expertCount} experts, top-${r.topK}; cell: the chosen experts, width = weight)</span></h2>
    <table id="routing"><tr><th>layer</th>${r.tokens.map(t => `<th class="tok">${esc(JSON.stringify(t))}</th>`).join('')}<th>load per expert</th></tr>
    ${r.layers.map(l => `<tr><th>L${l.layer}</th>${l.experts.map((es, p) => `<td class="route">${es.map((e, k) =>
      `<span class="expert" data-expert="${e}" style="background:${colour(e)};opacity:${(0.35 + 0.65 * l.weights[p][k]).toFixed(2)}" title="expert ${e}, weight ${l.weights[p][k].toFixed(3)}">${e}</span>`).join('')}</td>`).join('')}
      <td class="tok">${l.load.map((n, e) => `<span style="color:${colour(e)}">${e}:${n}</span>`).join(' ')}</td></tr>`).join('')}
    </table>`;
}
