// The workbench shell: the shared prompt form and view dispatch (views share state through state.js, never through this file).
import { api, esc } from './util.js';
import { state, setState, getModels, setModels, onStateUnchanged } from './state.js';
import * as models from './views/models.js';
import * as run from './views/run.js';
import * as attention from './views/attention.js';
import * as lens from './views/lens.js';
import * as microscope from './views/microscope.js';
import * as heads from './views/heads.js';
import * as patch from './views/patch.js';
import * as features from './views/features.js';
import * as graph from './views/graph.js';
import * as steer from './views/steer.js';
import * as experts from './views/experts.js';

const views = { models, run, attention, lens, microscope, heads, patch, features, graph, steer, experts };
// Views a model kind does not have (greyed out; opened, they show the server's message naming the kind): an encoder-decoder (T5)
// has only these five; an encoder (BERT) neither generates (Steering) nor has next tokens for the microscope.
const encoderDecoderViews = ['models', 'run', 'attention', 'lens', 'patch'];
// Expert routing needs a mixture-of-experts model.
const unsupported = (model, view) => {
  const kind = model?.kind;
  if (kind === 'encoder-decoder') return !encoderDecoderViews.includes(view);
  return (kind === 'encoder' && ['microscope', 'steer'].includes(view)) || (view === 'experts' && !(model?.experts > 0));
};

async function render() {
  const s = state();
  const modelList = getModels();
  document.querySelectorAll('#nav a').forEach(a => a.classList.toggle('active', a.dataset.view === s.view));
  document.getElementById('prompt').value = s.prompt;
  document.getElementById('target').value = s.target;
  document.getElementById('model').value = s.model || modelList[0]?.name || '';
  const model = modelList.find(m => m.name === (s.model || modelList[0]?.name));
  const kind = model?.kind;
  const encoderDecoder = kind === 'encoder-decoder';
  document.querySelectorAll('#nav a').forEach(a => {
    const off = unsupported(model, a.dataset.view);
    a.classList.toggle('unsupported', off);
    a.title = !off ? '' : a.dataset.view === 'experts' && kind !== 'encoder-decoder' ? 'needs a mixture-of-experts model' : `not available for an ${kind} model`;
  });
  document.getElementById('decoder').value = s.decoder;
  document.getElementById('decoder-label').style.display = encoderDecoder && ['run', 'attention', 'lens', 'patch'].includes(s.view) ? '' : 'none';
  document.getElementById('target-label').style.display = s.view === 'lens' ? '' : 'none';
  document.getElementById('prompt-form').style.display = ['features', 'graph', 'steer'].includes(s.view) ? 'none' : '';
  const view = views[s.view] ?? views.run;
  const root = document.getElementById('view');
  root.innerHTML = '<p class="muted">Computing…</p>';
  try {
    await view.render(root, { ...s, model: s.model || modelList[0]?.name });
  } catch (e) {
    root.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function start() {
  setModels(await api('/api/models'));
  const modelList = getModels();
  onStateUnchanged(render);
  const select = document.getElementById('model');
  select.innerHTML = modelList.map(m => `<option>${esc(m.name)}</option>`).join('');
  document.querySelectorAll('#nav a').forEach(a => a.addEventListener('click', () => setState({ view: a.dataset.view })));
  document.getElementById('prompt-form').addEventListener('submit', e => {
    e.preventDefault();
    setState({ prompt: document.getElementById('prompt').value, target: document.getElementById('target').value, decoder: document.getElementById('decoder').value, model: select.value });
  });
  select.addEventListener('change', () => setState({ model: select.value }));
  window.addEventListener('hashchange', render);
  await render();
}

start().catch(e => { document.getElementById('view').innerHTML = `<p class="error">${esc(e.message)}</p>`; });
