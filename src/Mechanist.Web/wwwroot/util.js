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

// Line chart of several series over an index.
export function lineChart(series, { width = 420, height = 220, title = '', xLabels } = {}) {
  const pad = 36, all = Object.values(series).flat().filter(Number.isFinite);
  const lo = Math.min(0, ...all), hi = Math.max(...all, 1e-9);
  const n = Math.max(...Object.values(series).map(s => s.length));
  const x = i => pad + (width - 2 * pad) * (n <= 1 ? 0.5 : i / (n - 1));
  const y = v => height - pad - (height - 2 * pad) * ((v - lo) / (hi - lo || 1));
  const colours = ['#3056d3', '#e8590c', '#2b8a3e', '#ae3ec9'];
  let svg = `<svg width="${width}" height="${height}" role="img" aria-label="${esc(title)}"><text x="${pad}" y="14">${esc(title)}</text>`;
  svg += `<line x1="${pad}" y1="${height - pad}" x2="${width - pad}" y2="${height - pad}" stroke="#999"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${height - pad}" stroke="#999"/>`;
  svg += `<text x="2" y="${y(hi) + 4}">${hi.toFixed(2)}</text><text x="2" y="${y(lo) + 4}">${lo.toFixed(2)}</text>`;
  for (let i = 0; i < n; i++) svg += `<text x="${x(i) - 4}" y="${height - pad + 14}">${esc(xLabels ? xLabels[i] ?? '' : i)}</text>`;
  Object.entries(series).forEach(([name, values], k) => {
    const pts = values.map((v, i) => Number.isFinite(v) ? `${x(i)},${y(v)}` : null).filter(Boolean).join(' ');
    svg += `<polyline fill="none" stroke="${colours[k % 4]}" stroke-width="2" points="${pts}"/>`;
    svg += `<text x="${width - pad - 120}" y="${pad + 14 * k}" style="fill:${colours[k % 4]}">${esc(name)}</text>`;
  });
  return svg + '</svg>';
}
