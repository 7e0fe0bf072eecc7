// Measures the workbench's attribution-graph explorer on a synthetic graph in headless Chromium (Debian's /usr/bin/chromium):
// time from the graph's JSON text to the first drawn frame (parse, layout, edge buckets, draw), and the time of each frame while
// panning (script time of pan + redraw, and the interval between animation frames). Writes its section of BENCHMARKS.md.
//   dotnet run --project bench/GraphExplorer -c Release -- [--nodes 5000] [--edges 50000] [--markdown BENCHMARKS.md]
using System.Globalization;
using System.Text;
using Mechanist.Models;
using Mechanist.Web;
using Microsoft.Playwright;

int nodes = 5000, edges = 50000; string? markdown = null;
for (int i = 0; i < args.Length; i++)
    switch (args[i])
    {
        case "--nodes": nodes = int.Parse(args[++i]); break;
        case "--edges": edges = int.Parse(args[++i]); break;
        case "--markdown": markdown = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
string repo = AppContext.BaseDirectory;
while (!File.Exists(Path.Combine(repo, "Mechanist.sln"))) repo = Path.GetDirectoryName(repo) ?? throw new DirectoryNotFoundException("repository root");
string chromium = Environment.GetEnvironmentVariable("MECHANIST_CHROMIUM") ?? "/usr/bin/chromium";
if (!File.Exists(chromium)) { Console.Error.WriteLine($"Chromium not found at {chromium}: apt-get install chromium (or set MECHANIST_CHROMIUM)"); return 2; }

await using var server = WorkbenchServer.Create(new[] { HookedTransformer.Load(Path.Combine(repo, "models", "toy-4l")) }, new WorkbenchOptions { Port = 0 });
await server.StartAsync();
using var playwright = await Playwright.CreateAsync();
await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
{
    ExecutablePath = chromium, Headless = true, Args = new[] { "--no-sandbox", "--no-first-run", "--disable-background-networking" },
});
var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1600, Height = 1000 } });
await page.GotoAsync($"{server.Url}/#view=graph");
await page.WaitForSelectorAsync("#graph-message", new PageWaitForSelectorOptions { State = WaitForSelectorState.Attached });

// A deterministic synthetic graph in circuit-tracer's format: 20 layers × 50 positions of features, plus tokens and logits;
// edges from lower to higher rows (or the same row), weights of both signs.
var result = await page.EvaluateAsync<double[]>(@"async ([N, E]) => {
  let seed = 12345; const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const P = 50, L = 20, nodes = [], links = [];
  for (let p = 0; p < P; p++) nodes.push({ node_id: `E_${p}_${p}`, feature: p, layer: 'E', ctx_idx: p, feature_type: 'embedding', influence: 0, activation: null, clerp: '' });
  for (let k = 0; k < 10; k++) nodes.push({ node_id: `L_${k}_${P - 1}`, feature: k, layer: String(L), ctx_idx: P - 1, feature_type: 'logit', influence: null, activation: null, clerp: `Output ${k}` });
  for (let i = nodes.length; i < N; i++) {
    const l = Math.floor(rand() * L), p = Math.floor(rand() * P);
    nodes.push({ node_id: `${l}_${i}_${p}`, feature: i, layer: String(l), ctx_idx: p, feature_type: 'cross layer transcoder', influence: rand(), activation: rand() * 5, clerp: '' });
  }
  const rank = n => n.feature_type === 'embedding' ? -1 : n.feature_type === 'logit' ? L : Number(n.layer);
  while (links.length < E) {
    const a = nodes[Math.floor(rand() * N)], b = nodes[Math.floor(rand() * N)];
    if (rank(a) >= rank(b) || a.ctx_idx > b.ctx_idx) continue;
    links.push({ source: a.node_id, target: b.node_id, weight: (rand() - 0.4) * (rand() ** 3) * 10 });
  }
  const text = JSON.stringify({ metadata: { slug: 'synthetic', scan: 'synthetic', prompt_tokens: Array.from({ length: P }, (_, i) => `t${i}`), prompt: 'synthetic' },
    qParams: { pinnedIds: [], supernodes: [] }, nodes, links });
  const t0 = performance.now();
  await window.mechanistGraph.open(JSON.parse(text));
  await new Promise(r => requestAnimationFrame(() => r()));
  const first = performance.now() - t0;
  const x = window.mechanistGraph.explorer;
  // Panning: 120 animation frames, each moving the view and redrawing every visible node and edge.
  const script = [], interval = [];
  let last = performance.now();
  await new Promise(done => {
    let k = 0;
    const step = now => {
      interval.push(now - last); last = now;
      const s = performance.now(); x.pan(k % 60 < 30 ? 4 : -4, 1); script.push(performance.now() - s);
      if (++k < 120) requestAnimationFrame(step); else done();
    };
    requestAnimationFrame(step);
  });
  const sorted = a => [...a].sort((p, q) => p - q), mean = a => a.reduce((p, q) => p + q, 0) / a.length;
  const s = sorted(script), iv = sorted(interval.slice(1));
  return [first, mean(s), s[Math.floor(0.95 * s.length)], s[s.length - 1], mean(iv), iv[Math.floor(0.95 * iv.length)], x.visible.size, x.edges.length, text.length];
}", new[] { nodes, edges });
string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
var md = new StringBuilder();
md.AppendLine("## Graph explorer (workbench, headless Chromium)");
md.AppendLine();
md.AppendLine($"A synthetic attribution graph of {result[6]:N0} nodes and {result[7]:N0} edges ({result[8] / 1e6:F1} MB of graph JSON) in the workbench's explorer, in Debian's Chromium {browser.Version}, headless, software rendering, 1600 × 1000 ({Environment.ProcessorCount} cores). `dotnet run --project bench/GraphExplorer -c Release -- --markdown BENCHMARKS.md` regenerates it.");
md.AppendLine();
md.AppendLine("| measure | value |");
md.AppendLine("|---|---:|");
md.AppendLine($"| time to first render (JSON text → parse → layout → edge buckets → drawn frame) | {F(result[0])} ms |");
md.AppendLine($"| frame while panning: script (pan: the painted graph's bitmap copied at the new offset), mean / p95 / max | {F(result[1])} / {F(result[2])} / {F(result[3])} ms |");
md.AppendLine($"| interval between animation frames while panning, mean / p95 | {F(result[4])} / {F(result[5])} ms |");
md.AppendLine();
md.AppendLine("The graph is painted once per zoom level, threshold or pin change (edges as a dozen Path2D buckets: 6 widths × 2 signs) into a bitmap; panning and hovering copy that bitmap and draw only the hovered node's edges on top, so a frame costs the same whatever the edge count (the animation-frame interval is the display's 60 Hz). Hover finds nodes through a 20-pixel grid. A repaint (zoom, thresholds) costs about the first render's drawing part.");
Console.WriteLine(md.ToString());
if (markdown is not null)
{
    const string start = "<!-- bench suite graph-explorer -->", end = "<!-- end of bench suite graph-explorer -->";
    string old = File.Exists(markdown) ? File.ReadAllText(markdown) : "";
    string block = start + "\n" + md.ToString().TrimEnd() + "\n" + end;
    int a = old.IndexOf(start, StringComparison.Ordinal), b = old.IndexOf(end, StringComparison.Ordinal);
    string next = a >= 0 && b > a ? old[..a] + block + old[(b + end.Length)..] : old.TrimEnd() + "\n\n" + block + "\n";
    Mechanist.IO.AtomicFile.WriteText(markdown, next);
    Console.Error.WriteLine($"wrote the graph-explorer section of {markdown}");
}
return 0;
