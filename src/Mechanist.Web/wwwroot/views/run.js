import { api, esc, show, tokensHtml } from '../util.js';

const nextTable = top => `<table id="next-token"><tr><th>rank</th><th class="tok">token</th><th>id</th><th>probability</th><th>logit</th></tr>
    ${top.map((t, i) => `<tr><td>${i + 1}</td><td class="tok">${esc(show(t.token))}</td><td>${t.id}</td><td>${(100 * t.prob).toFixed(2)}%</td><td>${t.logit.toFixed(3)}</td></tr>`).join('')}
    </table>`;

export async function render(root, s) {
  const r = await api('/api/run', { model: s.model, prompt: s.prompt, topK: 10, decoder: s.decoder || null });
  if (r.generated) {
    // An encoder-decoder: the encoder's input, the decoder's tokens so far, its next token and its greedy output.
    root.innerHTML = `<h2>Encoder input</h2>${tokensHtml(r.input)}
      <h2>Decoder input</h2>${tokensHtml(r.decoder, true)}
      <h2>Next decoder token</h2>${nextTable(r.top)}
      <h2>Greedy output</h2><div id="generated">${tokensHtml(r.generated, true)}</div>`;
    return;
  }
  root.innerHTML = `<h2>Tokens</h2>${tokensHtml(r.tokens, r.bos)}
    <p class="muted">ids: ${r.ids.join(', ')}</p>
    <h2>${r.position != null && r.position !== r.ids.length - 1 ? `Predicted at position ${r.position} (the mask token)` : 'Next token'}</h2>${nextTable(r.top)}`;
}
