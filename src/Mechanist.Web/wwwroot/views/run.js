import { api, esc, show, tokensHtml } from '../util.js';

export async function render(root, s) {
  const r = await api('/api/run', { model: s.model, prompt: s.prompt, topK: 10 });
  root.innerHTML = `<h2>Tokens</h2>${tokensHtml(r.tokens, r.bos)}
    <p class="muted">ids: ${r.ids.join(', ')}</p>
    <h2>Next token</h2>
    <table id="next-token"><tr><th>rank</th><th class="tok">token</th><th>id</th><th>probability</th><th>logit</th></tr>
    ${r.top.map((t, i) => `<tr><td>${i + 1}</td><td class="tok">${esc(show(t.token))}</td><td>${t.id}</td><td>${(100 * t.prob).toFixed(2)}%</td><td>${t.logit.toFixed(3)}</td></tr>`).join('')}
    </table>`;
}
