import { api, fmt, heat, textColor } from '../util.js';

export async function render(root, s) {
  const r = await api('/api/heads', { model: s.model });
  const cell = v => `<td style="background:${heat(v)};color:${textColor(v)}">${fmt(v)}</td>`;
  root.innerHTML = `<h2>Head detection <span class="muted">(repeated random tokens, ${r.batch} × 2 × ${r.sequenceLength})</span></h2>
    <table id="heads-table"><tr><th>head</th><th>previous-token</th><th>duplicate-token</th><th>induction (detector)</th><th>induction score</th></tr>
    ${r.heads.map(h => `<tr><th>L${h.layer}H${h.head}</th>${cell(h.previousToken)}${cell(h.duplicateToken)}${cell(h.induction)}${cell(h.inductionStripe)}</tr>`).join('')}
    </table>
    <p>Loss on the random half ${fmt(r.firstHalfLoss)} → on the repeated half ${fmt(r.secondHalfLoss)} nats/token.</p>`;
}
