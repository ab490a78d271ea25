// dvsp console: one page over the service's own /v1 API. The API key is kept in this tab's
// sessionStorage only and sent as `Authorization: Bearer`; every error the API returns is
// shown with its message. Routes live in the URL fragment (#/subjects, #/verify, ...).
import { html, render, useState, useEffect, useRef, useErrorBoundary } from './vendor/htm-preact.mjs';

const KEY = 'dvsp.key';
const GALLERY = 'dvsp.gallery';

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Calls the API with the session's key; JSON replies are parsed, images come back as Blobs,
// and a non-2xx reply throws an ApiError carrying the API's own message.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY);
  const gallery = sessionStorage.getItem(GALLERY);
  if (key) headers.set('Authorization', 'Bearer ' + key);
  if (gallery) headers.set('x-gallery', gallery);
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(0, 'network_error', 'the service could not be reached (' + e.message + ')');
  }
  const type = res.headers.get('content-type') || '';
  if (!res.ok) {
    let body = null;
    if (type.includes('json')) {
      try { body = await res.json(); } catch (_) { body = null; }
    }
    throw new ApiError(res.status, (body && body.error) || 'http_' + res.status,
      (body && body.message) || res.status + ' ' + res.statusText);
  }
  if (res.status === 204) return null;
  if (type.includes('application/json')) return res.json();
  return res.blob();
}

const upload = (path, file) => api(path, {
  method: 'POST',
  headers: { 'content-type': file.type || 'application/octet-stream' },
  body: file,
});

const has = (who, role) => who.roles.includes(role) || who.roles.includes('admin');
const reason = (who, role) => has(who, role) ? null
  : 'Needs the ' + role + ' role; this key has ' + who.roles.join(', ') + '.';
const fmt = (x, digits = 4) => (x === null || x === undefined) ? '–' : Number(x).toFixed(digits);
const when = ms => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');

function ErrorBox({ error }) {
  if (!error) return null;
  const status = error.status ? error.status + ' ' : '';
  return html`<div class="error" role="alert"><strong>${status}${error.code || 'error'}</strong>: ${error.message}</div>`;
}

// A control disabled for this key, with the reason beside it.
function Reason({ id, text }) {
  return text ? html`<p class="reason" id=${id}>${text}</p>` : null;
}

// Runs `fn`, keeping its result or error and whether it is running. Only the latest run
// counts: a slow reply to an earlier one never overwrites a newer one. `reset` forgets.
function useAction() {
  const empty = { busy: false, error: null, result: null };
  const [state, setState] = useState(empty);
  const latest = useRef(0);
  const run = async fn => {
    const mine = ++latest.current;
    setState({ busy: true, error: null, result: null });
    try {
      const result = await fn();
      if (mine === latest.current) setState({ busy: false, error: null, result });
      return result;
    } catch (error) {
      if (mine === latest.current) setState({ busy: false, error, result: null });
      return undefined;
    }
  };
  const reset = () => { latest.current++; setState(empty); };
  return [state, run, reset];
}

// A destructive action's confirmation: focuses its confirm button when it appears; Cancel
// hands the focus back to the button that opened it (found by `back`, a CSS selector).
function Confirm({ label, text, confirm, onConfirm, onCancel, back }) {
  const button = useRef(null);
  useEffect(() => { if (button.current) button.current.focus(); }, []);
  const cancel = () => {
    onCancel();
    setTimeout(() => { const b = document.querySelector(back); if (b) b.focus(); }, 0);
  };
  return html`<div class="confirm" role="group" aria-label=${label}>
    <p>${text}</p>
    <button type="button" class="danger" ref=${button} onClick=${onConfirm}>${confirm}</button>
    ${' '}<button type="button" class="secondary" onClick=${cancel}>Cancel</button>
  </div>`;
}

function Login({ onSignedIn, message }) {
  const [error, setError] = useState(message || null);
  const [busy, setBusy] = useState(false);
  const submit = async e => {
    e.preventDefault();
    const form = e.currentTarget;
    const key = form.elements.key.value.trim();
    const gallery = form.elements.gallery.value.trim();
    sessionStorage.setItem(KEY, key);
    if (gallery) sessionStorage.setItem(GALLERY, gallery); else sessionStorage.removeItem(GALLERY);
    setBusy(true);
    try {
      onSignedIn(await api('/v1/whoami'));
    } catch (err) {
      sessionStorage.removeItem(KEY);
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main>
    <h1>dvsp console</h1>
    <form onSubmit=${submit} aria-labelledby="signin-title">
      <h2 id="signin-title">Sign in with an API key</h2>
      <div class="row">
        <div class="field">
          <label for="key">API key</label>
          <input id="key" name="key" type="password" autocomplete="off" required placeholder="dvsp_..." />
        </div>
        <div class="field">
          <label for="gallery">Gallery (global admin keys only; default: default)</label>
          <input id="gallery" name="gallery" type="text" autocomplete="off" />
        </div>
        <button type="submit" disabled=${busy}>Sign in</button>
      </div>
      <p class="reason">The key stays in this tab (sessionStorage) and is sent only to this service.</p>
    </form>
    <${ErrorBox} error=${error} />
  </main>`;
}

const PAGES = [
  ['subjects', 'Subjects'],
  ['verify', 'Verify'],
  ['identify', 'Identify'],
  ['model', 'Model'],
  ['health', 'Health'],
];

function route() {
  const decode = p => { try { return decodeURIComponent(p); } catch (_) { return p; } };
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decode);
  return { page: parts[0] || 'subjects', arg: parts[1] || null };
}

function Shell({ who, onSignOut }) {
  const [r, setR] = useState(route());
  useEffect(() => {
    const on = () => setR(route());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  let page;
  switch (r.page) {
    case 'subjects': page = r.arg ? html`<${SubjectPage} key=${r.arg} who=${who} id=${r.arg} />` : html`<${Subjects} who=${who} />`; break;
    case 'verify': page = html`<${Verify} who=${who} />`; break;
    case 'identify': page = html`<${Identify} who=${who} />`; break;
    case 'model': page = html`<${Model} />`; break;
    case 'health': page = html`<${Health} who=${who} />`; break;
    default: page = html`<main><h1>Not found</h1><p>No console page ${r.page}.</p></main>`;
  }
  return html`<div>
    <header>
      <span class="brand">dvsp</span>
      <nav aria-label="Console pages"><ul>
        ${PAGES.map(([p, name]) => html`<li><a href=${'#/' + p} aria-current=${r.page === p ? 'page' : null}>${name}</a></li>`)}
      </ul></nav>
      <div class="who">
        <span>gallery <code>${who.gallery_id}</code></span>
        <span>key <code>${who.key_id}</code> (${who.roles.join(', ')}; scores ${who.scores})</span>
        <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    ${page}
  </div>`;
}

function Subjects({ who }) {
  const [prefix, setPrefix] = useState('');
  const [cursors, setCursors] = useState([null]);
  const [list, runList] = useAction();
  const [created, runCreate] = useAction();
  const [deleted, runDelete] = useAction();
  const [confirm, setConfirm] = useState(null);
  const after = cursors[cursors.length - 1];
  const load = () => {
    if (!has(who, 'read')) return;
    const q = new URLSearchParams({ limit: '20' });
    if (after) q.set('after', after);
    if (prefix) q.set('prefix', prefix);
    runList(() => api('/v1/subjects?' + q));
  };
  useEffect(load, [prefix, after]);
  const search = e => {
    e.preventDefault();
    setPrefix(e.currentTarget.elements.prefix.value.trim());
    setCursors([null]);
  };
  const create = async e => {
    e.preventDefault();
    const form = e.currentTarget;
    const body = {};
    const id = form.elements.id.value.trim();
    const name = form.elements.name.value.trim();
    if (id) body.id = id;
    if (name) body.name = name;
    const s = await runCreate(() => api('/v1/subjects', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    }));
    if (s) { form.reset(); load(); }
  };
  const remove = async id => {
    setConfirm(null);
    const done = await runDelete(async () => { await api('/v1/subjects/' + encodeURIComponent(id), { method: 'DELETE' }); return id; });
    if (done) load();
  };
  const noRead = reason(who, 'read'), noEnroll = reason(who, 'enroll'), noAdmin = reason(who, 'admin');
  const page = list.result;
  return html`<main>
    <h1>Subjects</h1>
    <form onSubmit=${search} role="search">
      <div class="row">
        <div class="field">
          <label for="prefix">Search by id prefix</label>
          <input id="prefix" name="prefix" type="search" disabled=${!!noRead} aria-describedby="no-read" />
        </div>
        <button type="submit" disabled=${!!noRead} aria-describedby="no-read">Search</button>
      </div>
      <${Reason} id="no-read" text=${noRead} />
    </form>
    <${ErrorBox} error=${list.error} />
    <${ErrorBox} error=${deleted.error} />
    ${deleted.result && html`<div class="notice" role="status">Deleted subject <code>${deleted.result}</code> and its templates.</div>`}
    ${page && html`<div class="table-wrap"><table id="subjects">
      <caption class="visually-hidden">Subjects${prefix ? ' whose id starts with ' + prefix : ''}</caption>
      <thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>
        ${page.subjects.length === 0 && html`<tr><td colspan="4">No subjects${prefix ? ' whose id starts with ' + prefix : ''}.</td></tr>`}
        ${page.subjects.map(s => html`<tr key=${s.id}>
          <td><a href=${'#/subjects/' + encodeURIComponent(s.id)}><code>${s.id}</code></a></td>
          <td>${s.name || ''}</td>
          <td>${when(s.created_at)}</td>
          <td>${confirm === s.id
            ? html`<${Confirm} label=${'Confirm deleting ' + s.id}
                text=${'Delete subject ' + s.id + ' and all its templates? This cannot be undone.'}
                confirm=${'Delete ' + s.id} onConfirm=${() => remove(s.id)} onCancel=${() => setConfirm(null)}
                back=${'button[aria-label="Delete ' + s.id + '"]'} />`
            : html`<button type="button" class="secondary" disabled=${!!noAdmin} aria-describedby="no-admin" aria-label=${'Delete ' + s.id} onClick=${() => setConfirm(s.id)}>Delete</button>`}
          </td>
        </tr>`)}
      </tbody>
    </table></div>
    <div class="pager">
      <button type="button" class="secondary" disabled=${cursors.length === 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
      <button type="button" class="secondary" disabled=${!page.next_after} onClick=${() => setCursors([...cursors, page.next_after])}>Next page</button>
      <span>page ${cursors.length}</span>
    </div>
    <${Reason} id="no-admin" text=${noAdmin && 'Deleting needs the admin role; this key has ' + who.roles.join(', ') + '.'} />`}
    <form onSubmit=${create}>
      <h2>Create a subject</h2>
      <div class="row">
        <div class="field">
          <label for="new-id">Id (empty: a generated UUID)</label>
          <input id="new-id" name="id" type="text" maxlength="128" disabled=${!!noEnroll} aria-describedby="no-enroll" />
        </div>
        <div class="field">
          <label for="new-name">Name (optional)</label>
          <input id="new-name" name="name" type="text" maxlength="256" disabled=${!!noEnroll} aria-describedby="no-enroll" />
        </div>
        <button type="submit" disabled=${!!noEnroll || created.busy} aria-describedby="no-enroll">Create subject</button>
      </div>
      <${Reason} id="no-enroll" text=${noEnroll} />
    </form>
    <${ErrorBox} error=${created.error} />
    ${created.result && html`<div class="notice" role="status">Created subject <a href=${'#/subjects/' + encodeURIComponent(created.result.id)}><code>${created.result.id}</code></a>.</div>`}
  </main>`;
}

// The uploaded photo, with the box of the face the model took (face models).
function Photo({ file, face, label }) {
  const [img, setImg] = useState(null);
  useEffect(() => {
    setImg(null);
    const url = URL.createObjectURL(file);
    const probe = new Image();
    probe.onload = () => setImg({ url, w: probe.naturalWidth, h: probe.naturalHeight });
    probe.src = url;
    return () => URL.revokeObjectURL(url);
  }, [file]);
  if (!img) return null;
  return html`<svg class="photo" viewBox=${'0 0 ' + img.w + ' ' + img.h} role="img" aria-label=${label}>
    <image href=${img.url} width=${img.w} height=${img.h} />
    ${face && html`<rect class="box" x=${face.x} y=${face.y} width=${face.width} height=${face.height} />`}
  </svg>`;
}

// Files from an <input type=file multiple> or dropped on the zone.
function DropZone({ id, label, multiple, disabled, describedBy, onFiles }) {
  const [over, setOver] = useState(false);
  const drop = e => {
    e.preventDefault();
    setOver(false);
    if (!disabled && e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  };
  return html`<div class=${'drop' + (over ? ' over' : '')}
      onDragOver=${e => { e.preventDefault(); setOver(true); }}
      onDragLeave=${() => setOver(false)} onDrop=${drop}>
    <label for=${id}>${label}</label>
    <p class="reason">Choose ${multiple ? 'files' : 'a file'} or drop ${multiple ? 'them' : 'it'} here (PNG, JPEG, BMP, WebP).</p>
    <input id=${id} type="file" accept="image/png,image/jpeg,image/bmp,image/webp" multiple=${multiple}
      disabled=${disabled} aria-describedby=${describedBy}
      onChange=${e => { const f = [...e.currentTarget.files]; if (f.length) onFiles(f); }} />
  </div>`;
}

function SubjectPage({ who, id }) {
  const [detail, runDetail] = useAction();
  const [model, setModel] = useState(null);
  const [modelError, setModelError] = useState(null);
  const [results, setResults] = useState([]);
  const [uploading, setUploading] = useState(false);
  const [removed, runRemove] = useAction();
  const [confirm, setConfirm] = useState(null);
  const path = '/v1/subjects/' + encodeURIComponent(id);
  const load = () => { if (has(who, 'read')) runDetail(() => api(path)); };
  useEffect(load, [id]);
  useEffect(() => { api('/v1/model').then(setModel, setModelError); }, []);
  const enroll = async files => {
    const out = files.map(file => ({ file, state: 'waiting' }));
    setUploading(true);
    setResults([...out]);
    for (const r of out) {
      try {
        r.reply = await upload(path + '/templates', r.file);
        r.state = 'ok';
      } catch (e) {
        r.error = e;
        r.state = 'failed';
      }
      setResults([...out]);
    }
    setUploading(false);
    load();
  };
  const removeTemplate = async tid => {
    setConfirm(null);
    const done = await runRemove(async () => { await api(path + '/templates/' + encodeURIComponent(tid), { method: 'DELETE' }); return tid; });
    if (done) load();
  };
  const noEnroll = reason(who, 'enroll'), noAdmin = reason(who, 'admin'), noRead = reason(who, 'read');
  const d = detail.result;
  return html`<main>
    <p><a href="#/subjects">← Subjects</a></p>
    <h1>Subject <code>${id}</code></h1>
    <${Reason} id="no-read" text=${noRead} />
    <${ErrorBox} error=${detail.error} />
    <${ErrorBox} error=${modelError} />
    ${d && html`<dl class="facts">
      <dt>Name</dt><dd>${d.name || '–'}</dd>
      <dt>Created</dt><dd>${when(d.created_at)}</dd>
      <dt>Templates</dt><dd>${d.templates.length}</dd>
    </dl>
    <h2>Templates</h2>
    <${ErrorBox} error=${removed.error} />
    <div class="table-wrap"><table id="templates">
      <thead><tr><th scope="col">Template</th><th scope="col">Model</th><th scope="col" class="num">Quality r(x)</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>
        ${d.templates.length === 0 && html`<tr><td colspan="5">No templates yet: enroll a photo below.</td></tr>`}
        ${d.templates.map(t => html`<tr key=${t.id}>
          <td><code>${t.id}</code></td>
          <td><code>${t.model_id}</code>${model && t.model_id !== model.card.model_id ? (t.model_id === model.previous_model_id ? ' (the previous model)' : ' (not the served model)') : ''}${t.image_retained ? ' · image kept' : ''}</td>
          <td class="num">${fmt(t.quality)}</td>
          <td>${when(t.created_at)}</td>
          <td>${confirm === t.id
            ? html`<${Confirm} label="Confirm deleting the template" text="Delete this template? This cannot be undone."
                confirm="Delete template" onConfirm=${() => removeTemplate(t.id)} onCancel=${() => setConfirm(null)}
                back=${'button[aria-label="Delete template ' + t.id + '"]'} />`
            : html`<button type="button" class="secondary" disabled=${!!noAdmin} aria-describedby="no-admin" aria-label=${'Delete template ' + t.id} onClick=${() => setConfirm(t.id)}>Delete</button>`}</td>
        </tr>`)}
      </tbody>
    </table></div>
    <${Reason} id="no-admin" text=${noAdmin && 'Deleting templates needs the admin role; this key has ' + who.roles.join(', ') + '.'} />`}
    <h2>Enroll</h2>
    <${DropZone} id="enroll-files" label="Photos to enroll" multiple=${true} disabled=${!!noEnroll || uploading}
      describedBy="no-enroll" onFiles=${enroll} />
    <${Reason} id="no-enroll" text=${noEnroll} />
    <div aria-live="polite">${results.length > 0 && html`<ul class="results" id="enroll-results">
      ${results.map(r => html`<li>
        <${Photo} file=${r.file} face=${r.reply && r.reply.face} label=${'Uploaded ' + r.file.name} />
        <span><strong>${r.file.name}</strong>: ${r.state === 'waiting' ? 'waiting…'
          : r.state === 'ok' ? html`<span class="ok">enrolled as <code>${r.reply.template_id}</code>, quality ${fmt(r.reply.quality)}</span>`
          : html`<span class="bad">${r.error.status ? r.error.status + ' ' : ''}${r.error.message}</span>`}</span>
      </li>`)}
    </ul>`}</div>
  </main>`;
}

// The similarity s = 1 - D (eq. 1) on [-1, 1] with the threshold 1 - T marked: a match is at
// or right of the mark.
function SimilarityBar({ similarity, threshold }) {
  const W = 520, pad = 14;
  const x = s => pad + (Math.max(-1, Math.min(1, s)) + 1) / 2 * (W - 2 * pad);
  const t = 1 - threshold;
  return html`<svg class="bar" viewBox=${'0 0 ' + W + ' 72'} role="img"
      aria-label=${'similarity ' + fmt(similarity, 3) + ' against the threshold ' + fmt(t, 3)}>
    <rect class="track" x=${pad} y="24" width=${W - 2 * pad} height="20" rx="3" />
    <rect class="fill" x=${pad} y="24" width=${x(similarity) - pad} height="20" rx="3" />
    <line class="threshold" x1=${x(t)} x2=${x(t)} y1="18" y2="50" />
    <text x=${pad} y="66">-1</text>
    <text x=${x(0)} y="66" text-anchor="middle">0</text>
    <text x=${W - pad} y="66" text-anchor="end">1</text>
    <text x=${x(t)} y="13" text-anchor="middle">threshold ${fmt(t, 3)}</text>
  </svg>`;
}

function Scores({ reply }) {
  if (reply.similarity === undefined) {
    return html`<p class="reason">This key's score policy hides the similarity (decision only).</p>`;
  }
  return html`<div>
    <${SimilarityBar} similarity=${reply.similarity} threshold=${reply.threshold} />
    <p>similarity <strong>${fmt(reply.similarity)}</strong> (distance D = ${fmt(reply.distance)};
      match when D ≤ T = ${fmt(reply.threshold)})</p>
  </div>`;
}

function Verify({ who }) {
  const [file, setFile] = useState(null);
  const [subject, setSubject] = useState('');
  const [verdict, run, reset] = useAction();
  const submit = e => {
    e.preventDefault();
    const id = e.currentTarget.elements.subject.value.trim();
    setSubject(id);
    if (!file) return;
    run(() => upload('/v1/subjects/' + encodeURIComponent(id) + '/verify', file));
  };
  const no = reason(who, 'verify');
  const v = verdict.result;
  return html`<main>
    <h1>Verify</h1>
    <form onSubmit=${submit}>
      <div class="row">
        <div class="field">
          <label for="subject">Subject id</label>
          <input id="subject" name="subject" type="text" required disabled=${!!no} aria-describedby="no-verify" />
        </div>
      </div>
      <${DropZone} id="probe" label="Probe photo" multiple=${false} disabled=${!!no}
        describedBy="no-verify" onFiles=${f => { reset(); setFile(f[0]); }} />
      <button type="submit" disabled=${!!no || !file || verdict.busy} aria-describedby="no-verify">Verify</button>
      <${Reason} id="no-verify" text=${no} />
    </form>
    ${file && html`<${Photo} file=${file} face=${v && v.face} label="Probe photo" />`}
    <div aria-live="polite">
    <${ErrorBox} error=${verdict.error} />
    ${v && html`<section class="panel" aria-label="Decision">
      <p id="decision" class=${'decision ' + (v.match ? 'match' : 'nomatch')}>${v.match ? 'Match' : 'No match'}</p>
      <p>against subject <code>${subject}</code>, best of ${v.templates_compared} template${v.templates_compared === 1 ? '' : 's'} (model <code>${v.model_id}</code>)</p>
      ${v.migrating && html`<p id="migrating">Verified with the previous model: this subject has no template of the serving model yet. Re-embed it (<code>dvsp reembed</code>) or enroll it again.</p>`}
      <${Scores} reply=${v} />
      <p>quality: posterior spread r(x) = ${fmt(v.quality)} (eq. 14; lower is more certain)</p>
    </section>`}
    </div>
  </main>`;
}

function Identify({ who }) {
  const [file, setFile] = useState(null);
  const [found, run, reset] = useAction();
  const submit = e => {
    e.preventDefault();
    const k = e.currentTarget.elements.topk.value;
    if (file) run(() => upload('/v1/identify?top_k=' + encodeURIComponent(k), file));
  };
  const no = reason(who, 'identify');
  const r = found.result;
  return html`<main>
    <h1>Identify</h1>
    <form onSubmit=${submit}>
      <${DropZone} id="identify-probe" label="Probe photo" multiple=${false} disabled=${!!no}
        describedBy="no-identify" onFiles=${f => { reset(); setFile(f[0]); }} />
      <div class="row">
        <div class="field">
          <label for="topk">Candidates to show (top k, 1–100)</label>
          <input id="topk" name="topk" type="number" min="1" max="100" value="5" disabled=${!!no} />
        </div>
        <button type="submit" disabled=${!!no || !file || found.busy} aria-describedby="no-identify">Identify</button>
      </div>
      <${Reason} id="no-identify" text=${no} />
    </form>
    ${file && html`<${Photo} file=${file} face=${r && r.face} label="Probe photo" />`}
    <div aria-live="polite">
    <${ErrorBox} error=${found.error} />
    ${r && html`<section class="panel" aria-label="Candidates">
      <p id="identify-decision" class=${'decision ' + (r.match ? 'match' : 'nomatch')}>${r.match ? 'Match: ' + r.candidates[0].subject_id : 'No match'}</p>
      <p>${r.gallery_templates} templates searched; threshold T = ${fmt(r.threshold)}${r.withheld ? '; ' + r.withheld + ' candidates withheld (attempt budget spent)' : ''}</p>
      <div class="table-wrap"><table id="candidates">
        <thead><tr><th scope="col" class="num">Rank</th><th scope="col">Subject</th><th scope="col" class="num">Similarity</th><th scope="col" class="num">Distance</th><th scope="col">Match</th></tr></thead>
        <tbody>${r.candidates.map((c, i) => html`<tr>
          <td class="num">${i + 1}</td>
          <td><a href=${'#/subjects/' + encodeURIComponent(c.subject_id)}><code>${c.subject_id}</code></a></td>
          <td class="num">${fmt(c.similarity)}</td><td class="num">${fmt(c.distance)}</td>
          <td>${c.match ? 'yes' : 'no'}</td>
        </tr>`)}</tbody>
      </table></div>
    </section>`}
    </div>
  </main>`;
}

const PLOT_TITLES = {
  det: 'DET curve (FNMR against FMR)',
  heatmap: 'Robustness heat map H(k, l)',
  adversarial: 'Adversarial examples (Figure 5)',
  ri_vs_budget: 'RI against the attack budget (convergence)',
  attack_pair: 'An attack on one pair',
};

function Plot({ name }) {
  const [url, setUrl] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let u = null;
    let live = true;
    api('/v1/model/plots/' + encodeURIComponent(name)).then(b => {
      if (!live) return;
      u = URL.createObjectURL(b);
      setUrl(u);
    }, e => { if (live) setError(e); });
    return () => { live = false; if (u) URL.revokeObjectURL(u); };
  }, [name]);
  const stem = name.replace(/\.png$/, '');
  const title = (PLOT_TITLES[stem.replace(/_fmr.*$/, '')] || stem)
    + (stem.includes('_fmr=') ? ' at ' + stem.replace(/^.*_fmr=/, 'FMR ') : '');
  return html`<figure>
    <${ErrorBox} error=${error} />
    ${url && html`<img src=${url} alt=${title} data-plot=${name} />`}
    <figcaption>${title} (<code>${name}</code>)</figcaption>
  </figure>`;
}

function Model() {
  const [m, run] = useAction();
  useEffect(() => { run(() => api('/v1/model')); }, []);
  const info = m.result;
  const card = info && info.card;
  const rob = card && card.robustness;
  return html`<main>
    <h1>Model</h1>
    <${ErrorBox} error=${m.error} />
    ${info && html`<dl class="facts" id="model-facts">
      <dt>Model id</dt><dd><code>${card.model_id}</code></dd>
      <dt>Method</dt><dd>${card.net.method}</dd>
      <dt>Threshold T</dt><dd>${fmt(info.threshold)} (${info.operating_point}; match when D ≤ T)</dd>
      <dt>Built from</dt><dd>dvsp ${card.dvsp_version}, commit <code>${card.git_commit}</code>, ${card.created}</dd>
    </dl>
    <h2>Operating points</h2>
    ${Object.keys(card.metrics).length === 0 && html`<p>No evaluation yet: run <code>dvsp eval</code>.</p>`}
    ${Object.entries(card.metrics).map(([set, r]) => html`<div class="table-wrap"><table>
      <caption>${set}: EER ${fmt(100 * r.eer, 3)}% at T = ${fmt(r.eer_threshold)} (${r.genuine_pairs} genuine, ${r.impostor_pairs} impostor pairs)</caption>
      <thead><tr><th scope="col" class="num">FMR target</th><th scope="col" class="num">Threshold T</th><th scope="col" class="num">FMR</th><th scope="col" class="num">FNMR</th></tr></thead>
      <tbody>${r.at_fmr.map(p => html`<tr><td class="num">${p.target}</td><td class="num">${fmt(p.threshold)}</td><td class="num">${fmt(p.fmr, 5)}</td><td class="num">${fmt(p.fnmr, 5)}</td></tr>`)}</tbody>
    </table></div>`)}
    <h2>Robustness</h2>
    ${rob ? html`<dl class="facts">
        <dt>RI (eq. 17)</dt><dd>${fmt(rob.ri)} (an upper bound: the smallest perturbation the attacks found)</dd>
        <dt>RI at 8 bits</dt><dd>${fmt(rob.ri_8bit)}</dd>
        <dt>Converged</dt><dd>${rob.converged === null || rob.converged === undefined ? '–' : rob.converged ? 'yes' : 'no'} (1x / largest budget ${fmt(rob.convergence_ratio)})</dd>
        <dt>Threshold</dt><dd>${fmt(rob.threshold)} at ${rob.threshold_at}, ${rob.pairs_per_class_pair} pairs per class pair</dd>
      </dl>`
      : html`<p>No audit yet: run <code>dvsp audit</code>.</p>`}
    <h2>Plots</h2>
    ${info.plots.length === 0 && html`<p>No plots in the model directory.</p>`}
    ${info.plots.map(p => html`<${Plot} name=${p} key=${p} />`)}`}
  </main>`;
}

function Health({ who }) {
  const [ready, setReady] = useState(null);
  const [status, setStatus] = useState(null);
  const [rate, setRate] = useState(null);
  const [error, setError] = useState(null);
  const last = useRef(null);
  const global = who.global && has(who, 'admin');
  useEffect(() => {
    const tick = async () => {
      try {
        setReady(await api('/readyz'));
      } catch (e) {
        setReady({ status: 'not ready', message: e.message });
      }
      if (!global) return;
      try {
        const s = await api('/v1/status');
        const now = performance.now();
        if (last.current) {
          const dt = (now - last.current.at) / 1000;
          setRate((s.requests_total - last.current.requests) / dt);
        }
        last.current = { at: now, requests: s.requests_total };
        setStatus(s);
        setError(null);
      } catch (e) {
        setError(e);
      }
    };
    tick();
    const timer = setInterval(tick, 2000);
    return () => clearInterval(timer);
  }, []);
  return html`<main>
    <h1>Health</h1>
    <p id="readiness" class=${'decision ' + (ready && ready.status === 'ready' ? 'match' : 'nomatch')}>
      ${ready ? (ready.status === 'ready' ? 'Ready' : 'Not ready: ' + (ready.message || '')) : '…'}</p>
    <${ErrorBox} error=${error} />
    ${!global && html`<p class="reason">The replica's counters need a global admin key: they cover every gallery.</p>`}
    ${status && html`<dl class="facts" id="status">
      <dt>Model</dt><dd><code>${status.model_id}</code></dd>
      <dt>Inference queue</dt><dd>${status.queue_depth} waiting</dd>
      <dt>Request rate</dt><dd>${rate === null ? 'measuring…' : rate.toFixed(1) + ' requests/s'} (this page's own polls included)</dd>
      <dt>Requests answered</dt><dd>${status.requests_total} (${status.server_errors_total} with 5xx)</dd>
      <dt>Templates in the index</dt><dd>${status.index_templates}</dd>
      <dt>Up for</dt><dd>${Math.round(status.uptime_seconds)} s</dd>
    </dl>`}
  </main>`;
}

// A fault in the console itself shows as a message, never as a blank page.
function Boundary({ children }) {
  const [error, reset] = useErrorBoundary();
  if (!error) return children;
  return html`<main><div class="error" role="alert"><strong>console error</strong>: ${String(error.message || error)}
    ${' '}<button type="button" class="secondary" onClick=${reset}>Try again</button></div></main>`;
}

function Console() {
  const [who, setWho] = useState(null);
  const [checked, setChecked] = useState(false);
  const [message, setMessage] = useState(null);
  useEffect(() => {
    if (!sessionStorage.getItem(KEY)) { setChecked(true); return; }
    api('/v1/whoami').then(setWho, e => { sessionStorage.removeItem(KEY); setMessage(e); })
      .finally(() => setChecked(true));
  }, []);
  const signOut = () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(GALLERY);
    setWho(null);
    setMessage(null);
  };
  if (!checked) return html`<main><p>Checking the key…</p></main>`;
  return html`<${Boundary}>${who ? html`<${Shell} who=${who} onSignOut=${signOut} />`
    : html`<${Login} onSignedIn=${setWho} message=${message} />`}<//>`;
}

render(html`<${Console} />`, document.getElementById('app'));
