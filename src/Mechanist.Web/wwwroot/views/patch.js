import { api, esc, fmt, heatTable, heatLegend } from '../util.js';
import { setState, getModels } from '../state.js';

const example = { clean: 'When Mary and John went to the store, John gave a drink to', corrupt: 'When Mary and John went to the store, Mary gave a drink to', answer: ' Mary', wrong: ' John' };
let targets = null;

export async function render(root, s) {
  targets ??= await api('/api/patch-targets');
  const q = { clean: s.clean || example.clean, corrupt: s.corrupt || example.corrupt, answer: s.answer || example.answer, wrong: s.wrong || example.wrong, what: s.what || 'resid' };
  // An encoder-decoder patches its encoder input into the residual streams of both stacks; the answer is its next decoder token.
  const encoderDecoder = getModels().find(m => m.name === s.model)?.kind === 'encoder-decoder';
  const choices = encoderDecoder ? ['resid'] : targets;
  root.innerHTML = `<h2>Activation patching</h2>
    <form id="patch-form" class="row">
      <label class="grow">Clean <input name="clean" value="${esc(q.clean)}" size="60"></label>
      <label class="grow">Corrupted <input name="corrupt" value="${esc(q.corrupt)}" size="60"></label>
      <label>Answer <input name="answer" value="${esc(q.answer)}" size="8"></label>
      <label>Wrong <input name="wrong" value="${esc(q.wrong)}" size="8"></label>
      ${encoderDecoder ? '' : `<label title="the position whose logits the metric reads (negative from the end); empty: the last, or a masked LM's [MASK]">Position <input name="pos" value="${esc(s.pos)}" size="4"></label>`}
      <label>Patch <select name="what">${choices.map(w => `<option${w === q.what ? ' selected' : ''}>${esc(w)}</option>`).join('')}</select></label>
      <button type="submit">Patch</button>
    </form><div id="grid"><p class="muted">Computing…</p></div>`;
  root.querySelector('#patch-form').addEventListener('submit', e => {
    e.preventDefault();
    setState(Object.fromEntries(new FormData(e.target)));
  });
  const report = await api('/api/patch', { model: s.model, ...q,
    ...(encoderDecoder ? { what: 'resid', decoder: s.decoder || null } : { position: s.pos !== '' && Number.isInteger(+s.pos) ? +s.pos : null }) });
  root.querySelector('#grid').innerHTML = report.grids.map(g => `<p>${esc(g.method)} patching, ${esc(g.metric)}: clean ${fmt(g.cleanMetric, 3)}, corrupted ${fmt(g.corruptedMetric, 3)}; 1 = clean behaviour restored.</p>
    ${heatLegend('share of clean behaviour restored', { diverging: true })}
    <div style="overflow-x:auto">${heatTable(g.rowLabels, g.columnLabels, g.scores.map(row => row.map(Number)), { max: 1, diverging: true })}</div>`).join('');
}
