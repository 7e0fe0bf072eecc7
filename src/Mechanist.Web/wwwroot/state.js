// The workbench's shared state: the URL hash (view, model, prompt, ...) and the served models. Views and the shell import
// this module; views never import the shell.
const defaults = { view: 'run', prompt: 'When Mary and John went to the store, John gave a drink to', target: '' };
const keys = ['view', 'model', 'prompt', 'target', 'clean', 'corrupt', 'answer', 'wrong', 'what', 'layer', 'head', 'store', 'q', 'feature', 'graph', 'gprompt',
  'pinned', 'groups', 'nt', 'et', 'sub', 'decoder', 'stack', 'pos', 'budget'];

export function state() {
  const p = new URLSearchParams(location.hash.slice(1));
  return Object.fromEntries(keys.map(k => [k, p.get(k) ?? defaults[k] ?? '']));
}

let rerenderSame = () => {};
// What setState calls to re-render when the hash it writes is the one already shown (no hashchange event fires then).
export function onStateUnchanged(fn) { rerenderSame = fn; }

export function setState(changes, rerender = true) {
  const next = { ...state(), ...changes };
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(next)) if (v !== '' && v != null) p.set(k, v);
  const hash = '#' + p.toString();
  if (location.hash === hash) { if (rerender) rerenderSame(); return; }
  if (rerender) location.hash = hash; else history.replaceState(null, '', hash);
}

let modelList = [];
export const getModels = () => modelList;
export function setModels(list) { modelList = list; }
