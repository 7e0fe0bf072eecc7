import { esc } from '../util.js';
import { getModels } from '../state.js';

export async function render(root) {
  root.innerHTML = getModels().map(m => `
    <h2>${esc(m.name)}</h2>
    <p>${esc(m.architecture)} · ${esc(m.kind)} · ${m.kind === 'encoder-decoder' ? `${m.encoderLayers} encoder + ${m.layers} decoder layers` : `${m.layers} layers`}
      · d_model ${m.dModel} · ${m.heads} heads (${m.kvHeads} kv) × ${m.dHead}
      · ${m.dMlp ? 'd_mlp ' + m.dMlp : 'attention only'} · vocabulary ${m.vocab} · ${m.context ? 'context ' + m.context : 'relative positions (no context limit)'} · ${m.parameters.toLocaleString()} parameters</p>
    <details><summary>${m.hooks.length} hook points</summary>
      <table><tr><th class="tok">hook point</th><th class="tok">shape</th></tr>
      ${m.hooks.map(h => `<tr><td class="tok">${esc(h.name)}</td><td class="tok">${esc(h.shape)}</td></tr>`).join('')}</table>
    </details>`).join('');
}
