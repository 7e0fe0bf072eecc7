// Shared helpers: API calls, escaping, colours, small SVG charts.
export async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

// Numbers as the API writes them: NaN and ±Infinity arrive as the strings "NaN", "Infinity", "-Infinity".
export function num(v) { return typeof v === 'string' ? Number(v) : v; }
export function fmt(v, digits = 2) { const n = num(v); return Number.isFinite(n) ? n.toFixed(digits) : String(n); }

export function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

export function show(token) { return JSON.stringify(token); }

// White → blue for [0, 1]; white → red for negatives in diverging mode.
export function heat(v, max = 1, diverging = false) {
  if (!Number.isFinite(v)) return '#eee';
  const t = Math.max(-1, Math.min(1, v / (max || 1)));
  if (diverging && t < 0) { const a = Math.round(255 * (1 + t)); return `rgb(255,${a},${a})`; }
  const a = Math.round(255 * (1 - Math.abs(t)));
  return `rgb(${a},${a},255)`;
}

export function textColor(v, max = 1) { return Math.abs(v / (max || 1)) > 0.6 ? '#fff' : '#1d2330'; }

export function tokensHtml(tokens, bos) {
  return `<div class="tokens">${tokens.map((t, i) =>
    `<span class="token${bos && i === 0 ? ' bos' : ''}" title="position ${i}">${esc(show(t))}<small>${i}</small></span>`).join('')}</div>`;
}

// A heatmap table: rows × columns of numbers with labels.
export function heatTable(rowLabels, colLabels, values, { max, diverging = false, digits = 2, cell } = {}) {
  const m = max ?? Math.max(1e-9, ...values.flat().filter(Number.isFinite).map(Math.abs));
  let html = '<table><tr><th></th>' + colLabels.map(c => `<th class="tok">${esc(c)}</th>`).join('') + '</tr>';
  values.forEach((row, r) => {
    html += `<tr><th>${esc(rowLabels[r])}</th>` + row.map((v, c) => {
      const content = cell ? cell(r, c, v) : (Number.isFinite(v) ? v.toFixed(digits) : '');
      return `<td class="cell" style="background:${heat(v, m, diverging)};color:${textColor(v, m)}">${content}</td>`;
    }).join('') + '</tr>';
  });
  return html + '</table>';
}

// A colour scale for heatTable: the gradient from 0 (or −max) to max, with its ends and middle labelled.
export function heatLegend(label, { max = 1, diverging = false, digits = 2, percent = false } = {}) {
  const f = v => percent ? `${Math.round(100 * v)}%` : v.toFixed(digits);
  const stops = diverging ? `${heat(-max, max, true)}, #fff, ${heat(max, max, true)}` : `#fff, ${heat(max, max)}`;
  return `<div class="heat-legend"><span class="muted">${esc(label)}</span><span>${f(diverging ? -max : 0)}</span>
    <span class="bar" style="background:linear-gradient(to right, ${stops})"></span><span>${f(max)}</span></div>`;
}

// Ticks for [lo, hi]: about five round steps (1, 2 or 5 × 10^k).
function niceTicks(lo, hi) {
  const raw = (hi - lo) / 5 || 1, mag = 10 ** Math.floor(Math.log10(raw)), step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
  for (let k = first; k <= Math.max(last, first + 1); k++) ticks.push(+(k * step).toFixed(10));
  return ticks;
}

// Line chart of several series over an index: y axis with round ticks and grid lines, every x label, a legend above the plot.
export function lineChart(series, { width = 420, height = 230, title = '', xLabels, xTitle = '', yTitle = '' } = {}) {
  const left = 48, right = 14, top = 38, bottom = 44, all = Object.values(series).flat().filter(Number.isFinite);
  const ticks = niceTicks(Math.min(0, ...all), Math.max(...all, 1e-9));
  const lo = ticks[0], hi = ticks[ticks.length - 1];
  const n = Math.max(...Object.values(series).map(s => s.length));
  const x = i => left + (width - left - right) * (n <= 1 ? 0.5 : i / (n - 1));
  const y = v => height - bottom - (height - top - bottom) * ((v - lo) / (hi - lo || 1));
  const colours = ['#3056d3', '#e8590c', '#2b8a3e', '#ae3ec9'];
  let svg = `<svg width="${width}" height="${height}" role="img" aria-label="${esc(title)}" class="chart"><text x="${left}" y="14" class="title">${esc(title)}</text>`;
  for (const t of ticks) svg += `<line x1="${left}" x2="${width - right}" y1="${y(t)}" y2="${y(t)}" stroke="${t === lo ? '#999' : '#eceff3'}"/><text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${+t.toPrecision(4)}</text>`;
  svg += `<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#999"/>`;
  for (let i = 0; i < n; i++) svg += `<line x1="${x(i)}" x2="${x(i)}" y1="${height - bottom}" y2="${height - bottom + 4}" stroke="#999"/><text x="${x(i)}" y="${height - bottom + 16}" text-anchor="middle">${esc(xLabels ? xLabels[i] ?? '' : i)}</text>`;
  if (xTitle) svg += `<text x="${(left + width - right) / 2}" y="${height - 6}" text-anchor="middle" class="muted">${esc(xTitle)}</text>`;
  if (yTitle) svg += `<text transform="translate(12 ${(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle" class="muted">${esc(yTitle)}</text>`;
  Object.entries(series).forEach(([name, values], k) => {
    const pts = values.map((v, i) => Number.isFinite(v) ? `${x(i)},${y(v)}` : null).filter(Boolean).join(' ');
    svg += `<polyline fill="none" stroke="${colours[k % 4]}" stroke-width="2" points="${pts}"/>`;
    values.forEach((v, i) => { if (Number.isFinite(v)) svg += `<circle cx="${x(i)}" cy="${y(v)}" r="2.5" fill="${colours[k % 4]}"><title>${esc(name)} ${esc(xLabels ? xLabels[i] ?? i : i)}: ${+v.toPrecision(4)}</title></circle>`; });
    svg += `<line x1="${width - right - 110}" x2="${width - right - 96}" y1="${26 - 14 * k}" y2="${26 - 14 * k}" stroke="${colours[k % 4]}" stroke-width="2"/><text x="${width - right - 92}" y="${30 - 14 * k}">${esc(name)}</text>`;
  });
  return svg + '</svg>';
}
