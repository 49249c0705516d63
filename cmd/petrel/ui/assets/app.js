// Petrel's web console: plain JavaScript, no framework, no build step.
// Every call goes to the console's own /api, which talks to the hosts.
'use strict';

const TOKEN = document.querySelector('meta[name=petrel-token]').content;
const main = document.getElementById('main');
let cleanups = [];
let hostsCache = null;

// h builds an element: h('a', {href: '#'}, 'text', child...).
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

async function api(method, path, body, raw) {
  const opts = {method, headers: {'X-Petrel-Token': TOKEN}};
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error('petrel ui is not reachable (was it stopped?)');
  }
  if (raw && res.ok) return res;
  const data = await res.json().catch(() => ({error: res.statusText}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

// send PUTs a file with upload progress shown in a <progress>.
function send(path, file, bar) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('PUT', path);
    x.setRequestHeader('X-Petrel-Token', TOKEN);
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    if (bar) {
      bar.hidden = false; bar.max = file.size || 1; bar.value = 0;
      x.upload.onprogress = (e) => { bar.value = e.loaded; };
    }
    x.onload = () => {
      let d = {};
      try { d = JSON.parse(x.responseText); } catch (e) { d = {error: x.statusText}; }
      if (x.status >= 200 && x.status < 300) { if (bar) bar.value = bar.max; resolve(d); } else reject(new Error(d.error || x.statusText));
    };
    x.onerror = () => reject(new Error('upload failed: petrel ui is not reachable'));
    x.send(file);
  });
}

const q = (o) => new URLSearchParams(o).toString();
const enc = encodeURIComponent;

function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg; t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

function errorBox(msg) { return h('p', {class: 'error', role: 'alert'}, msg); }

function mb(n) { return n >= 1024 ? (n / 1024).toFixed(n % 1024 ? 1 : 0) + ' GB' : n + ' MB'; }
function bytes(n) { return n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + ' GB' : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MB' : n >= 1024 ? (n / 1024).toFixed(1) + ' KB' : n + ' B'; }
function when(ns) { return ns ? new Date(ns / 1e6).toLocaleString() : '-'; }
function duration(s) {
  if (s < 60) return Math.floor(s) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + Math.floor(s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h' + Math.floor(s % 3600 / 60) + 'm';
  return Math.floor(s / 86400) + 'd' + Math.floor(s % 86400 / 3600) + 'h';
}
function uptime(vm) { return vm.state === 'running' && vm.started_ns ? duration((Date.now() * 1e6 - vm.started_ns) / 1e9) : '-'; }
function exitText(vm) { return !vm.has_exit ? '-' : vm.exit_signal ? 'signal ' + vm.exit_signal : String(vm.exit_code); }
function stateEl(s) { return h('span', {class: 'state-' + s}, s); }
function csvInts(s, what) {
  const out = [];
  for (const p of s.split(/[\s,]+/).filter(Boolean)) {
    if (!/^\d+$/.test(p)) throw new Error(what + ' "' + p + '" is not a number');
    out.push(parseInt(p, 10));
  }
  return out;
}

function bar(label, used, limit, fmt) {
  fmt = fmt || String;
  const pct = limit > 0 ? Math.min(100, used * 100 / limit) : (used > 0 ? 100 : 0);
  const fill = h('div', {class: 'fill' + (pct >= 90 ? ' hi' : '')});
  fill.style.width = pct + '%';
  return h('div', {class: 'bar'},
    h('div', {class: 'lbl'}, h('span', {}, label), h('span', {}, fmt(used) + ' of ' + (limit === null || limit === undefined ? 'no limit' : fmt(limit)))),
    h('div', {class: 'track', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': limit || 0, 'aria-valuenow': used}, fill));
}

async function hosts(refresh) {
  if (!hostsCache || refresh) hostsCache = await api('GET', '/api/hosts');
  return hostsCache;
}

// currentHost is the host forms act on, remembered across pages.
function currentHost(list) {
  const saved = localStorage.getItem('petrel.host');
  const found = list.find((x) => x.name === saved);
  return (found || list[0] || {}).name;
}

function hostPicker(list, onchange) {
  const sel = h('select', {id: 'host', onchange: (e) => { localStorage.setItem('petrel.host', e.target.value); onchange(e.target.value); }},
    list.map((x) => h('option', {value: x.name, selected: x.name === currentHost(list)}, x.name + (x.domain && x.domain !== ':' ? ' (' + x.domain + ')' : ''))));
  return h('div', {class: 'row'}, h('label', {for: 'host'}, 'Host'), sel);
}

function every(ms, f) { const id = setInterval(f, ms); cleanups.push(() => clearInterval(id)); }

function setPage(title, ...kids) {
  document.title = title + ' · Petrel';
  main.replaceChildren(h('h1', {}, title), ...kids);
}

// ---------- Fleet ----------

async function fleet() {
  setPage('Fleet', h('p', {class: 'muted'}, 'Loading hosts…'));
  const list = await hosts(true);
  const cards = h('div', {class: 'cards'});
  setPage('Fleet', list.length ? cards : h('p', {}, 'No hosts yet: add one on the ', h('a', {href: '#/hosts'}, 'Hosts'), ' page.'));
  for (const hv of list) {
    const card = h('section', {class: 'card', 'aria-label': 'Host ' + hv.name});
    cards.append(card);
    const draw = async () => {
      const head = h('h2', {}, hv.name, ' ', h('span', {class: 'muted'}, hv.kind === 'remote' ? hv.destination + ' as ' + (hv.domain || '?') : hv.socket));
      if (hv.error) { card.replaceChildren(head, errorBox(hv.error)); return; }
      let o;
      try { o = await api('GET', '/api/overview?' + q({host: hv.name})); } catch (e) { card.replaceChildren(head, errorBox(e.message)); return; }
      card.replaceChildren(head, ...overviewParts(hv, o));
    };
    await draw();
    every(10000, draw);
  }
}

function overviewParts(hv, o) {
  const parts = [h('p', {class: 'muted'}, 'petreld ' + hv.version)];
  const by = {};
  for (const vm of o.vms) by[vm.state] = (by[vm.state] || 0) + 1;
  parts.push(h('div', {class: 'chips', 'aria-label': 'VMs by state'},
    h('a', {class: 'chip', href: '#/vms?' + q({host: hv.name})}, o.vms.length + (o.vms.length === 1 ? ' VM' : ' VMs')),
    Object.keys(by).sort().map((s) => h('span', {class: 'chip state-' + s}, by[s] + ' ' + s))));
  if (o.errors.vms) parts.push(errorBox(o.errors.vms));
  const top = o.policies.find((p) => p.path === o.domain) || o.policies[0];
  if (top) {
    const cpus = new Set();
    for (const vm of o.vms) if (vm.state === 'running') for (const c of vm.cpus) cpus.add(c);
    parts.push(h('h3', {}, 'Capacity of ' + (top.path === ':' ? 'the host' : top.path)),
      bar('VMs', top.used_vms, top.vms), bar('Memory', top.used_memory_mb, top.memory_mb, mb),
      bar('Block storage', top.used_block_mb, top.block_mb === null ? 0 : top.block_mb, mb),
      bar('Image storage', top.used_images_mb, top.images_mb === null ? top.memory_mb : top.images_mb, mb),
      h('p', {class: 'muted'}, 'CPUs allowed: ' + (top.cpus.length ? top.cpus.join(', ') : 'any') + '; pinned by running VMs: ' + ([...cpus].join(', ') || 'none')));
  } else if (o.errors.policies) parts.push(errorBox(o.errors.policies));
  if (o.host_stats) {
    const hs = o.host_stats;
    parts.push(bar('Host memory in use', hs.memory_total - hs.memory_available, hs.memory_total, bytes),
      h('p', {class: 'muted'}, hs.cpus + ' CPUs, load ' + hs.load1.toFixed(2)));
  }
  parts.push(h('h3', {}, 'Plugins'));
  if (o.errors.plugins) parts.push(h('p', {class: 'muted'}, 'Not shown: ' + o.errors.plugins));
  else parts.push(h('ul', {}, o.plugins.map((p) => h('li', {}, h('strong', {}, p.name), ' ' + p.kind + ' ',
    h('span', {class: p.health === 'healthy' ? 'state-running' : 'state-failed'}, p.health),
    p.restarts ? ' (' + p.restarts + ' restarts)' : '', p.problems.length ? ' — ' + p.problems.join('; ') : ''))));
  if (!o.errors.plugins && o.plugins_summary) {
    parts.push(h('p', {class: 'muted'}, 'Health summary: versions, restarts and what plugins miss are reserved to the host\'s owner.'));
  }
  parts.push(h('h3', {}, 'Recent events'));
  parts.push(o.events.length ? h('ul', {class: 'events'}, o.events.slice(-15).reverse().map(eventItem)) : h('p', {class: 'muted'}, 'None since the console started.'));
  return parts;
}

function eventItem(e) {
  return h('li', {}, h('span', {class: 'muted'}, new Date(e.t / 1e6).toLocaleTimeString()), ' ', h('strong', {}, e.type), ' ', e.name,
    e.message ? ' — ' + e.message : '');
}

// ---------- VMs ----------

async function vmsPage(params) {
  const list = await hosts();
  const filter = h('input', {type: 'search', id: 'filter', placeholder: 'name, state, backend…', value: params.get('q') || ''});
  const hostSel = h('select', {id: 'hostfilter'}, h('option', {value: ''}, 'all hosts'),
    list.map((x) => h('option', {value: x.name, selected: params.get('host') === x.name}, x.name)));
  const body = h('tbody');
  const status = h('div');
  setPage('VMs', h('div', {class: 'row'}, h('label', {for: 'filter'}, 'Filter'), filter, h('label', {for: 'hostfilter'}, 'Host'), hostSel),
    status, h('div', {class: 'table-wrap'}, h('table', {id: 'vms'},
      h('thead', {}, h('tr', {}, ['Name', 'Host', 'State', 'Backend', 'Memory', 'CPUs', 'Uptime', 'Restarts', 'Exit', 'Image'].map((t) => h('th', {scope: 'col'}, t)))),
      body)));
  let rows = [];
  const render = () => {
    const f = filter.value.trim().toLowerCase();
    body.replaceChildren(...rows.filter(({hn, vm}) => (!hostSel.value || hn === hostSel.value) &&
      (!f || [vm.name, vm.state, vm.backend, vm.image].some((s) => (s || '').toLowerCase().includes(f))))
      .map(({hn, vm}) => h('tr', {},
        h('td', {}, h('a', {href: '#/vm/' + enc(hn) + '/' + enc(vm.name)}, vm.name)), h('td', {}, hn), h('td', {}, stateEl(vm.state)),
        h('td', {}, vm.backend), h('td', {}, mb(vm.memory_mb)), h('td', {}, vm.cpus.join(',') || '-'), h('td', {}, uptime(vm)),
        h('td', {}, vm.restarts), h('td', {}, exitText(vm)), h('td', {class: 'mono', title: vm.image_sha256}, (vm.image ? vm.image + ' ' : '') + vm.image_sha256.slice(0, 12)))));
  };
  filter.addEventListener('input', render);
  hostSel.addEventListener('change', render);
  const load = async () => {
    const errs = [];
    const all = await Promise.all(list.map(async (x) => {
      try { return (await api('GET', '/api/vms?' + q({host: x.name}))).map((vm) => ({hn: x.name, vm})); } catch (e) { errs.push(x.name + ': ' + e.message); return []; }
    }));
    rows = all.flat();
    status.replaceChildren(...errs.map(errorBox));
    render();
  };
  await load();
  every(5000, load);
}

// ---------- VM page ----------

async function vmPage(hn, name) {
  const settings = h('div', {class: 'card'});
  const charts = h('div', {class: 'charts'});
  const out = h('pre', {class: 'console', id: 'console', tabindex: 0, 'aria-label': 'Console of ' + name, 'aria-live': 'off'});
  const follow = h('input', {type: 'checkbox', id: 'follow', checked: true});
  const search = h('input', {type: 'search', id: 'search', placeholder: 'search the console'});
  const found = h('span', {class: 'muted'});
  const msg = h('div');
  const lines = [];
  const actions = h('div', {class: 'row'},
    h('button', {id: 'restart', onclick: () => act('restart')}, 'Restart'),
    h('button', {class: 'secondary', id: 'update', onclick: () => updateForm.hidden = !updateForm.hidden}, 'Update…'),
    h('button', {class: 'danger', id: 'destroy', onclick: () => act('destroy')}, 'Destroy'));
  const updateForm = h('form', {class: 'grid', hidden: true});
  setPage(name, h('p', {class: 'muted'}, 'on host ' + hn), msg, actions, updateForm, h('h2', {}, 'Settings'), settings,
    h('h2', {}, 'Console'),
    h('div', {class: 'row'}, h('label', {}, follow, ' Follow'), h('label', {for: 'search'}, 'Search'), search, found,
      h('a', {href: '/api/console?' + q({host: hn, name, download: 1}), download: name.replace(/:/g, '_') + '-console.txt'}, 'Download')),
    out, h('h2', {}, 'Last hour'), charts);
  let vm;
  async function act(what) {
    if (what === 'destroy' && !confirm('Destroy ' + name + ' on ' + hn + '? It is stopped and removed.')) return;
    msg.replaceChildren();
    try {
      await api('POST', '/api/vm/' + what + '?' + q({host: hn}), {name});
      toast(what === 'destroy' ? 'Destroyed ' + name : 'Restarted ' + name);
      if (what === 'destroy') { location.hash = '#/vms'; return; }
      load();
    } catch (e) { msg.replaceChildren(errorBox(e.message)); }
  }
  const paint = () => {
    const term = search.value.toLowerCase();
    let n = 0;
    out.replaceChildren(...lines.filter((l) => !term || l.toLowerCase().includes(term)).map((l) => { n++; return l + '\n'; }));
    found.textContent = term ? n + ' matching lines' : '';
    if (follow.checked) out.scrollTop = out.scrollHeight;
  };
  search.addEventListener('input', paint);
  const es = new EventSource('/api/console?' + q({host: hn, name}));
  cleanups.push(() => es.close());
  es.onmessage = (e) => {
    const l = JSON.parse(e.data);
    lines.push(l.dropped ? '[' + l.dropped + ' lines dropped]' : new Date(l.t / 1e6).toISOString().slice(11, 23) + ' ' + l.text);
    if (lines.length > 5000) lines.splice(0, lines.length - 5000);
    paint();
  };
  es.addEventListener('problem', (e) => msg.replaceChildren(errorBox(JSON.parse(e.data).error)));
  const load = async () => {
    let d;
    try { d = await api('GET', '/api/vm?' + q({host: hn, name})); } catch (e) { msg.replaceChildren(errorBox(e.message)); return; }
    vm = d.vm;
    settings.replaceChildren(h('dl', {class: 'kv', id: 'settings'},
      ...[['State', stateEl(vm.state)], ['Backend', vm.backend], ['Memory', mb(vm.memory_mb)], ['CPUs', vm.cpus.join(', ') || 'any allowed'],
        ['Arguments', vm.args.join(' ') || '-'], ['Image', (vm.image || '') + ' ' + vm.image_sha256], ['Pid', vm.pid || '-'],
        ['Uptime', uptime(vm)], ['Restarts', vm.restarts], ['Exit', exitText(vm)],
        ['Restart on failure', vm.restart_on_fail ? 'yes' + (vm.restart_exit_codes.length ? ' (codes ' + vm.restart_exit_codes.join(', ') + ')' : '') : 'no'],
        ['Networks', vm.nets.map((n) => n.name + ' on ' + n.bridge + (n.host_if ? ' (' + n.host_if + ')' : '')).join(', ') || '-'],
        ['Block devices', vm.blocks.map((b) => b.name + ' on ' + (b.device || b.name)).join(', ') || '-'],
        ['Created', when(vm.created_ns)], ['Started', when(vm.started_ns)], ['Exited', when(vm.exited_ns)], ['Message', vm.message || '-']]
        .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
    drawCharts(charts, d.series);
    if (!updateForm.firstChild) fillUpdate();
  };
  const fillUpdate = () => {
    const mem = h('input', {type: 'text', id: 'u-mem', value: vm.memory_mb + 'M'});
    const args = h('textarea', {id: 'u-args'}, vm.args.join('\n'));
    const rof = h('input', {type: 'checkbox', id: 'u-rof', checked: vm.restart_on_fail});
    const err = h('div', {class: 'full'});
    updateForm.append(h('p', {class: 'full muted'}, 'Replaces the VM with the same image and these settings (it restarts).'),
      h('label', {for: 'u-mem'}, 'Memory'), mem, h('label', {for: 'u-args'}, 'Arguments, one per line'), args,
      h('label', {for: 'u-rof'}, 'Restart on failure'), rof, err, h('div', {class: 'full'}, h('button', {type: 'submit'}, 'Update')));
    updateForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      err.replaceChildren();
      try {
        await api('POST', '/api/vm/create?' + q({host: hn}), {name, image_sha256: vm.image_sha256, image_name: vm.image, backend: vm.backend,
          memory: mem.value, cpus: vm.cpus, args: args.value.split('\n').filter((s) => s !== ''), restart_on_fail: rof.checked,
          exit_codes: vm.restart_exit_codes, startup: vm.startup, force: true,
          nets: vm.nets.map((n) => ({name: n.name, bridge: n.bridge, mac: n.mac || ''})),
          blocks: vm.blocks.map((b) => ({name: b.name, device: b.device || '', sector_size: b.sector_size || 0}))});
        toast('Updated ' + name);
        updateForm.hidden = true;
        load();
      } catch (ex) { err.replaceChildren(errorBox(ex.message)); }
    });
  };
  await load();
  every(5000, load);
}

function chart(title, pts, fmt) {
  const svgNS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('viewBox', '0 0 300 100');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const last = pts.length ? pts[pts.length - 1][1] : null;
  svg.setAttribute('aria-label', title + (last === null ? ': no samples yet' : ': now ' + fmt(last)));
  if (pts.length) {
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    const top = Math.max(...pts.map((p) => p[1]), 1e-9);
    const line = document.createElementNS(svgNS, 'polyline');
    line.setAttribute('points', pts.map(([t, v]) => ((t - t0) / (t1 - t0) * 300).toFixed(1) + ',' + (98 - v / top * 94).toFixed(1)).join(' '));
    svg.append(line);
  }
  return h('figure', {class: 'chart', 'data-points': pts.length}, h('figcaption', {}, title + (last === null ? '' : ' — ' + fmt(last))), svg);
}

function drawCharts(el, series) {
  const cpu = [], mem = [], rx = [], tx = [];
  for (let i = 0; i < series.length; i++) {
    const p = series[i];
    mem.push([p.t, p.rss]);
    if (i > 0) {
      const a = series[i - 1], dt = (p.t - a.t) / 1e9;
      if (dt > 0) {
        cpu.push([p.t, Math.max(0, (p.cpu_ns - a.cpu_ns) / 1e9 / dt * 100)]);
        rx.push([p.t, Math.max(0, (p.rx - a.rx) / dt)]);
        tx.push([p.t, Math.max(0, (p.tx - a.tx) / dt)]);
      }
    }
  }
  el.replaceChildren(chart('CPU', cpu, (v) => v.toFixed(1) + '%'), chart('Memory (resident)', mem, bytes),
    chart('Network received', rx, (v) => bytes(v) + '/s'), chart('Network sent', tx, (v) => bytes(v) + '/s'));
  el.dataset.samples = series.length;
}

// ---------- Deploy ----------

async function deployPage() {
  const list = await hosts();
  if (!list.length) { setPage('Deploy', h('p', {}, 'Add a host on the ', h('a', {href: '#/hosts'}, 'Hosts'), ' page first.')); return; }
  let hn = currentHost(list);
  const prefix = h('span', {class: 'mono'});
  const f = {
    name: h('input', {type: 'text', id: 'd-name', required: true, autocomplete: 'off', placeholder: 'web'}),
    image: h('input', {type: 'file', id: 'd-image'}),
    ref: h('input', {type: 'text', id: 'd-ref', placeholder: 'registry.example.org/team/web:1.4', autocomplete: 'off'}),
    backend: h('input', {type: 'text', id: 'd-backend', list: 'backends', placeholder: "the host's default"}),
    memory: h('input', {type: 'text', id: 'd-memory', placeholder: '32M (MB, or 512M, 2G, 1Gi)'}),
    cpus: h('input', {type: 'text', id: 'd-cpus', placeholder: 'e.g. 0,1 (empty: as the policies allow)'}),
    args: h('textarea', {id: 'd-args', placeholder: 'one argument per line'}),
    rof: h('input', {type: 'checkbox', id: 'd-rof'}),
    codes: h('input', {type: 'text', id: 'd-codes', placeholder: 'e.g. 2,3 (empty: any but 1 and 60-64)'}),
    startup: h('input', {type: 'number', id: 'd-startup', value: 0}),
    force: h('input', {type: 'checkbox', id: 'd-force'}),
  };
  const nets = h('div', {class: 'rows full', id: 'd-nets'});
  const blocks = h('div', {class: 'rows full', id: 'd-blocks'});
  let bridges = [], devices = [];
  const loadHostData = async () => {
    const hv = list.find((x) => x.name === hn) || {};
    prefix.textContent = hv.domain && hv.domain !== ':' ? hv.domain + ':' : '';
    bridges = await api('GET', '/api/bridges?' + q({host: hn})).catch(() => []);
    devices = await api('GET', '/api/blocks?' + q({host: hn})).catch(() => []);
  };
  const netRow = () => nets.append(h('div', {class: 'row'},
    h('input', {type: 'text', 'aria-label': 'Network device name in the manifest', placeholder: 'device (e.g. service0)'}),
    h('select', {'aria-label': 'Bridge'}, bridges.length ? bridges.map((b) => h('option', {value: b.name}, b.name)) : h('option', {value: ''}, 'no bridges on this host')),
    h('input', {type: 'text', 'aria-label': 'MAC address (optional)', placeholder: 'MAC (optional)'}),
    h('button', {type: 'button', class: 'secondary', onclick: (e) => e.target.parentNode.remove()}, 'Remove')));
  const blockRow = () => blocks.append(h('div', {class: 'row'},
    h('input', {type: 'text', 'aria-label': 'Block device name in the manifest', placeholder: 'device (e.g. storage)'}),
    h('select', {'aria-label': 'Block device'}, devices.length ? devices.map((b) => h('option', {value: b.name.split(':').pop()}, b.name + ' (' + mb(b.size_mb) + ')')) : h('option', {value: ''}, 'no block devices')),
    h('input', {type: 'number', 'aria-label': 'Sector size (optional)', placeholder: 'sector size', min: 0}),
    h('button', {type: 'button', class: 'secondary', onclick: (e) => e.target.parentNode.remove()}, 'Remove')));
  const progress = h('progress', {hidden: true, id: 'd-progress', 'aria-label': 'Upload progress'});
  const err = h('div', {class: 'full', id: 'd-error'});
  const form = h('form', {class: 'grid', id: 'deploy'},
    h('div', {class: 'full'}, hostPicker(list, async (v) => { hn = v; await loadHostData(); })),
    h('label', {for: 'd-name'}, 'Name'), h('div', {class: 'row'}, prefix, f.name),
    h('label', {for: 'd-image'}, 'Image file'), h('div', {}, f.image, progress),
    h('label', {for: 'd-ref'}, 'or registry reference'), f.ref,
    h('label', {for: 'd-memory'}, 'Memory'), f.memory,
    h('label', {for: 'd-backend'}, 'Backend'), h('div', {}, f.backend, h('datalist', {id: 'backends'}, ['hvt', 'spt', 'qemu'].map((b) => h('option', {value: b})))),
    h('label', {for: 'd-cpus'}, 'CPUs'), f.cpus,
    h('label', {for: 'd-args'}, 'Arguments'), f.args,
    h('h2', {class: 'full'}, 'Networks'), nets, h('div', {class: 'full'}, h('button', {type: 'button', class: 'secondary', onclick: netRow}, 'Add a network')),
    h('h2', {class: 'full'}, 'Block devices'), blocks, h('div', {class: 'full'}, h('button', {type: 'button', class: 'secondary', onclick: blockRow}, 'Add a block device')),
    h('h2', {class: 'full'}, 'Restarts'),
    h('label', {for: 'd-rof'}, 'Restart on failure'), h('div', {}, f.rof, h('span', {class: 'muted'}, ' never after a signal, exit 1 or 60–64')),
    h('label', {for: 'd-codes'}, 'Only on exit codes'), f.codes,
    h('label', {for: 'd-startup'}, 'Startup order'), f.startup,
    h('label', {for: 'd-force'}, 'Replace a VM of that name'), f.force,
    err, h('div', {class: 'full'}, h('button', {type: 'submit', id: 'd-submit'}, 'Deploy')));
  setPage('Deploy', form);
  await loadHostData();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.replaceChildren();
    const btn = document.getElementById('d-submit');
    btn.disabled = true;
    try {
      const file = f.image.files[0];
      const ref = f.ref.value.trim();
      if (!file && !ref) throw new Error('choose an image file, or give a registry reference');
      if (file && ref) throw new Error('give an image file or a registry reference, not both');
      const body = {
        name: prefix.textContent + f.name.value.trim(), image_name: file ? file.name : '', image_ref: ref, backend: f.backend.value, memory: f.memory.value,
        cpus: csvInts(f.cpus.value, 'CPU'), args: f.args.value.split('\n').filter((s) => s !== ''),
        restart_on_fail: f.rof.checked, exit_codes: csvInts(f.codes.value, 'exit code'), startup: parseInt(f.startup.value || '0', 10), force: f.force.checked,
        nets: [...nets.children].map((r) => ({name: r.children[0].value.trim(), bridge: r.children[1].value, mac: r.children[2].value.trim()})),
        blocks: [...blocks.children].map((r) => ({name: r.children[0].value.trim(), device: r.children[1].value, sector_size: parseInt(r.children[2].value || '0', 10)})),
      };
      if (file) body.image_sha256 = (await send('/api/image?' + q({host: hn, name: file.name}), file, progress)).sha256;
      const vm = await api('POST', '/api/vm/create?' + q({host: hn}), body);
      toast('Deployed ' + vm.name);
      location.hash = '#/vm/' + enc(hn) + '/' + enc(vm.name);
    } catch (ex) {
      err.replaceChildren(errorBox(ex.message));
    } finally { btn.disabled = false; }
  });
}

// ---------- Block devices ----------

async function blocksPage() {
  const list = await hosts();
  let hn = currentHost(list);
  const body = h('tbody');
  const msg = h('div');
  const name = h('input', {type: 'text', id: 'b-name', required: true, placeholder: 'disk'});
  const size = h('input', {type: 'text', id: 'b-size', required: true, placeholder: '64M (MB, or 512M, 2G)'});
  const prefix = h('span', {class: 'mono'});
  const uploaded = {};
  const create = h('form', {class: 'grid', id: 'block-create'}, h('label', {for: 'b-name'}, 'Name'), h('div', {class: 'row'}, prefix, name),
    h('label', {for: 'b-size'}, 'Size'), size, h('div', {class: 'full'}, h('button', {type: 'submit'}, 'Create')));
  const load = async () => {
    const hv = list.find((x) => x.name === hn) || {};
    prefix.textContent = hv.domain && hv.domain !== ':' ? hv.domain + ':' : '';
    let devs;
    try { devs = await api('GET', '/api/blocks?' + q({host: hn})); } catch (e) { msg.replaceChildren(errorBox(e.message)); body.replaceChildren(); return; }
    body.replaceChildren(...devs.map((d) => {
      const file = h('input', {type: 'file', 'aria-label': 'File to upload to ' + d.name});
      const prog = h('progress', {hidden: true, 'aria-label': 'Upload progress of ' + d.name});
      return h('tr', {'data-name': d.name}, h('td', {}, d.name), h('td', {}, mb(d.size_mb)), h('td', {}, d.in_use_by || '-'),
        h('td', {}, h('div', {class: 'row'}, file, h('button', {type: 'button', class: 'secondary', onclick: async () => {
          if (!file.files[0]) { toast('Choose a file first'); return; }
          try {
            await send('/api/block/upload?' + q({host: hn, name: d.name}), file.files[0], prog);
            uploaded[d.name] = 'uploaded ' + bytes(file.files[0].size) + ' from ' + file.files[0].name + ', checksum verified';
            toast('Uploaded to ' + d.name); load();
          } catch (e) { msg.replaceChildren(errorBox(e.message)); }
        }}, 'Upload'), prog, h('span', {class: 'status muted'}, uploaded[d.name] || ''))),
        h('td', {}, h('a', {href: '/api/block/download?' + q({host: hn, name: d.name}), download: d.name.replace(/:/g, '_') + '.img'}, 'Download')),
        h('td', {}, h('button', {type: 'button', class: 'danger', onclick: async () => {
          if (!confirm('Destroy block device ' + d.name + '? Its content is lost.')) return;
          try { await api('POST', '/api/block/destroy?' + q({host: hn}), {name: d.name}); toast('Destroyed ' + d.name); load(); } catch (e) { msg.replaceChildren(errorBox(e.message)); }
        }}, 'Destroy')));
    }));
  };
  create.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.replaceChildren();
    try { await api('POST', '/api/block/create?' + q({host: hn}), {name: prefix.textContent + name.value.trim(), size: size.value}); toast('Created ' + name.value); name.value = ''; load(); } catch (ex) { msg.replaceChildren(errorBox(ex.message)); }
  });
  setPage('Block devices', hostPicker(list, (v) => { hn = v; load(); }), msg,
    h('div', {class: 'table-wrap'}, h('table', {id: 'blocks'}, h('thead', {}, h('tr', {}, ['Name', 'Size', 'In use by', 'Upload', 'Download', ''].map((t) => h('th', {scope: 'col'}, t)))), body)),
    h('h2', {}, 'Create a block device'), create);
  await load();
}

// ---------- Policies ----------

function policyFields(p) {
  const f = {
    vms: h('input', {type: 'number', id: p + 'vms', min: 0, required: true}),
    memory: h('input', {type: 'text', id: p + 'mem', required: true, placeholder: '512M'}),
    cpus: h('input', {type: 'text', id: p + 'cpus', placeholder: 'e.g. 0,1'}),
    block: h('input', {type: 'text', id: p + 'block', placeholder: 'none'}),
    images: h('input', {type: 'text', id: p + 'images', placeholder: 'as much as memory'}),
    bridges: h('input', {type: 'text', id: p + 'bridges', placeholder: 'e.g. br0'}),
  };
  const els = [h('label', {for: p + 'vms'}, 'VMs'), f.vms, h('label', {for: p + 'mem'}, 'Memory'), f.memory, h('label', {for: p + 'cpus'}, 'CPUs'), f.cpus,
    h('label', {for: p + 'block'}, 'Block storage'), f.block, h('label', {for: p + 'images'}, 'Image storage'), f.images, h('label', {for: p + 'bridges'}, 'Bridges'), f.bridges];
  const value = () => ({vms: parseInt(f.vms.value || '0', 10), memory: f.memory.value, cpus: csvInts(f.cpus.value, 'CPU'), block: f.block.value, images: f.images.value,
    bridges: f.bridges.value.split(/[\s,]+/).filter(Boolean)});
  return {els, value};
}

async function policiesPage() {
  const list = await hosts();
  let hn = currentHost(list);
  const body = h('tbody');
  const msg = h('div');
  const extra = h('div');
  const load = async () => {
    const hv = list.find((x) => x.name === hn) || {};
    let ps;
    try { ps = await api('GET', '/api/policies?' + q({host: hn})); } catch (e) { msg.replaceChildren(errorBox(e.message)); body.replaceChildren(); return; }
    msg.replaceChildren();
    const dom = hv.domain || ':';
    body.replaceChildren(...ps.map((p) => {
      const depth = p.path === ':' ? 0 : p.path.split(':').length;
      const name = h('td', {}, p.path);
      name.style.paddingLeft = (8 + depth * 16) + 'px';
      const below = p.path !== dom && (dom === ':' || p.path.startsWith(dom + ':'));
      return h('tr', {}, name, h('td', {}, bar('VMs', p.used_vms, p.vms)), h('td', {}, bar('Memory', p.used_memory_mb, p.memory_mb, mb)),
        h('td', {}, bar('Block', p.used_block_mb, p.block_mb === null ? 0 : p.block_mb, mb)),
        h('td', {}, bar('Images', p.used_images_mb, p.images_mb === null ? p.memory_mb : p.images_mb, mb)),
        h('td', {}, p.cpus.join(',') || 'any'), h('td', {}, p.bridges.join(',') || '-'),
        h('td', {}, [p.local && 'host', p.certificate && 'certificate'].filter(Boolean).join(' + ') || '-'),
        h('td', {}, below ? h('button', {type: 'button', class: 'danger', onclick: async () => {
          if (!confirm('Remove the policy of ' + p.path + '?')) return;
          try { await api('POST', '/api/policy/remove?' + q({host: hn}), {name: p.path}); load(); } catch (e) { msg.replaceChildren(errorBox(e.message)); }
        }}, 'Remove') : ''));
    }));
    drawExtra(hv);
  };
  const drawExtra = (hv) => {
    const parts = [];
    const path = h('input', {type: 'text', id: 'p-path', required: true, placeholder: (hv.domain && hv.domain !== ':' ? hv.domain + ':' : '') + 'team'});
    const pf = policyFields('p-');
    const perr = h('div', {class: 'full'});
    const add = h('form', {class: 'grid', id: 'policy-add'}, h('label', {for: 'p-path'}, 'Path'), path, ...pf.els, perr,
      h('div', {class: 'full'}, h('button', {type: 'submit'}, 'Set policy')));
    add.addEventListener('submit', async (e) => {
      e.preventDefault(); perr.replaceChildren();
      try { await api('POST', '/api/policy/add?' + q({host: hn}), Object.assign(pf.value(), {path: path.value.trim()})); toast('Policy of ' + path.value + ' set'); load(); } catch (ex) { perr.replaceChildren(errorBox(ex.message)); }
    });
    parts.push(h('h2', {}, 'Set a policy'), add);
    if (hv.can_sign) {
      const csr = h('input', {type: 'file', id: 's-csr', required: true});
      const days = h('input', {type: 'number', id: 's-days', value: 365, min: 1});
      const sf = policyFields('s-');
      const serr = h('div', {class: 'full'});
      const sign = h('form', {class: 'grid', id: 'sign'}, h('p', {class: 'full muted'}, 'Sign a sub-tenant\'s request (from petrel ca csr) into a sub-CA carrying this policy, with ' + hv.ca + '. A policy beyond your own is refused.'),
        h('label', {for: 's-csr'}, 'Request (CSR)'), csr, ...sf.els, h('label', {for: 's-days'}, 'Valid for days'), days, serr,
        h('div', {class: 'full'}, h('button', {type: 'submit'}, 'Sign')));
      sign.addEventListener('submit', async (e) => {
        e.preventDefault(); serr.replaceChildren();
        try {
          if (!csr.files[0]) throw new Error('choose the request file');
          const r = await api('POST', '/api/ca/sign?' + q({host: hn}), {csr: await csr.files[0].text(), days: parseInt(days.value, 10), policy: sf.value()});
          const url = URL.createObjectURL(new Blob([r.pem], {type: 'application/x-pem-file'}));
          serr.replaceChildren(h('p', {}, 'Signed ' + r.name + ' (' + r.policy + '), valid until ' + r.until + ': ', h('a', {href: url, download: r.name + '.pem', id: 's-result'}, 'download ' + r.name + '.pem')));
        } catch (ex) { serr.replaceChildren(errorBox(ex.message)); }
      });
      parts.push(h('h2', {}, 'Delegate: sign a sub-CA'), sign);
    }
    if (hv.revocations) {
      const cert = h('input', {type: 'file', id: 'r-cert', required: true});
      const rerr = h('div', {class: 'full'});
      const rev = h('form', {class: 'grid', id: 'revoke'}, h('p', {class: 'full muted'}, 'Revoke a certificate, and everything it signed, in ' + hv.revocations + '.'),
        h('label', {for: 'r-cert'}, 'Certificate'), cert, rerr, h('div', {class: 'full'}, h('button', {type: 'submit', class: 'danger'}, 'Revoke')));
      rev.addEventListener('submit', async (e) => {
        e.preventDefault(); rerr.replaceChildren();
        try {
          if (!cert.files[0]) throw new Error('choose the certificate file');
          if (!confirm('Revoke ' + cert.files[0].name + '? Every chain it is part of stops working at once.')) return;
          const r = await api('POST', '/api/ca/revoke?' + q({host: hn}), {pem: await cert.files[0].text()});
          rerr.replaceChildren(h('p', {}, 'Revoked ' + r.revoked + ' (serial ' + r.serial + ').'));
        } catch (ex) { rerr.replaceChildren(errorBox(ex.message)); }
      });
      parts.push(h('h2', {}, 'Revoke'), rev);
    }
    extra.replaceChildren(...parts);
  };
  setPage('Policies', hostPicker(list, (v) => { hn = v; load(); }), msg,
    h('div', {class: 'table-wrap'}, h('table', {id: 'policies'}, h('thead', {}, h('tr', {}, ['Path', 'VMs', 'Memory', 'Block', 'Images', 'CPUs', 'Bridges', 'Set by', ''].map((t) => h('th', {scope: 'col'}, t)))), body)),
    extra);
  await load();
}

// ---------- Hosts ----------

async function hostsPage() {
  const list = await hosts(true);
  const cfg = await api('GET', '/api/config');
  const msg = h('div');
  const save = async (next) => {
    msg.replaceChildren();
    try { await api('PUT', '/api/config', next); hostsCache = null; toast('Host list saved'); route(); } catch (e) { msg.replaceChildren(errorBox(e.message)); }
  };
  const rows = list.map((x) => h('tr', {}, h('td', {}, x.name), h('td', {}, x.kind === 'remote' ? x.destination : x.socket), h('td', {}, x.domain || '-'),
    h('td', {}, x.error ? h('span', {class: 'state-failed'}, x.error) : h('span', {class: 'state-running'}, 'petreld ' + x.version)),
    h('td', {}, h('button', {type: 'button', class: 'danger', onclick: () => {
      if (confirm('Remove ' + x.name + ' from the list? Nothing changes on the host.')) save({hosts: cfg.hosts.filter((y) => y.name !== x.name)});
    }}, 'Remove'))));
  const fields = ['name', 'socket', 'destination', 'ca', 'ca_key', 'server_ca', 'server_name', 'revocations'];
  const help = {name: 'a short label, e.g. prod', socket: 'petreld socket, for a local host', destination: 'HOST[:PORT] of petrel-endpoint',
    ca: 'your CA chain file (--ca)', ca_key: 'its key file (--ca-key)', server_ca: "the endpoint's CA file (--server-ca)", server_name: 'optional', revocations: "optional: the owner's revoked.json"};
  const inputs = Object.fromEntries(fields.map((k) => [k, h('input', {type: 'text', id: 'h-' + k, placeholder: help[k]})]));
  const add = h('form', {class: 'grid', id: 'host-add'}, ...fields.flatMap((k) => [h('label', {for: 'h-' + k}, k.replace('_', ' ')), inputs[k]]),
    h('div', {class: 'full'}, h('button', {type: 'submit'}, 'Add host')));
  add.addEventListener('submit', (e) => {
    e.preventDefault();
    const hc = {};
    for (const k of fields) if (inputs[k].value.trim()) hc[k] = inputs[k].value.trim();
    save({hosts: cfg.hosts.concat([hc])});
  });
  setPage('Hosts', msg, h('div', {class: 'table-wrap'}, h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Address', 'Domain', 'Status', ''].map((t) => h('th', {scope: 'col'}, t)))), h('tbody', {}, rows))),
    h('h2', {}, 'Add a host'), h('p', {class: 'muted'}, 'Give a socket for a local petreld, or a destination with your certificate files for a remote one. Key files stay on this machine.'), add);
}

// ---------- Router ----------

async function route() {
  for (const c of cleanups) c();
  cleanups = [];
  const [path, query] = location.hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  const parts = (path || '/').split('/').filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll('nav a')) {
    const target = a.getAttribute('href').slice(2);
    if ((parts[0] || '') === target || (parts[0] === 'vm' && target === 'vms')) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  try {
    switch (parts[0]) {
      case undefined: await fleet(); break;
      case 'vms': await vmsPage(params); break;
      case 'vm': await vmPage(parts[1], parts.slice(2).join('/')); break;
      case 'deploy': await deployPage(); break;
      case 'blocks': await blocksPage(); break;
      case 'policies': await policiesPage(); break;
      case 'hosts': await hostsPage(); break;
      default: setPage('Not found', h('p', {}, 'No such page. ', h('a', {href: '#/'}, 'Back to the fleet')));
    }
  } catch (e) {
    setPage('Error', errorBox(e.message));
  }
  main.dataset.ready = location.hash;
}

window.addEventListener('hashchange', () => { route(); main.focus(); });
route();
