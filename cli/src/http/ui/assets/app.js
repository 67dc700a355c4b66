// jobd dashboard: live updates from /events (Server-Sent Events), controls and
// submits through the JSON routes. The pages work without this file for reading;
// with it they stay current without reloads.
//
// Every value from a job goes into the page through textContent or an attribute,
// never as markup. The only markup inserted is the server's own rendering of the
// list rows (escaped there), fetched from this origin.
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const banner = $('#banner');
  const table = $('#jobs');
  const job = $('#job');
  let daemonDown = banner && !banner.hidden;
  let bannerTimer = null;

  function showBanner(kind, text, hideAfterMs) {
    if (!banner) return;
    clearTimeout(bannerTimer);
    banner.className = 'banner ' + kind;
    banner.textContent = text;
    banner.hidden = false;
    banner.dataset.kind = kind;
    if (hideAfterMs) {
      bannerTimer = setTimeout(() => {
        banner.hidden = true;
        banner.dataset.kind = '';
      }, hideAfterMs);
    }
  }

  function setDaemon(up) {
    if (!up) {
      daemonDown = true;
      showBanner('warn', 'The daemon is unavailable: what you see may be out of date. ' +
        'This page reconnects by itself.');
    } else if (daemonDown || (banner && banner.dataset.kind === 'warn')) {
      daemonDown = false;
      showBanner('ok', 'The daemon is back.', 5000);
    }
  }

  // Throughput, measured from the changes seen: units per second per job.
  const meters = new Map();

  function measure(info) {
    const handled = info.processed + info.failed;
    const t = Date.parse(info.updated_at);
    const m = meters.get(info.id);
    if (info.state !== 'running') {
      meters.delete(info.id);
      return null;
    }
    if (!m) {
      meters.set(info.id, { t, handled, rate: null });
      return null;
    }
    const dt = (t - m.t) / 1000;
    if (dt >= 0.2) {
      const now = (handled - m.handled) / dt;
      m.rate = m.rate === null ? now : 0.6 * m.rate + 0.4 * now;
      m.t = t;
      m.handled = handled;
    }
    return m.rate;
  }

  function fmtRate(r) {
    if (r === null || !isFinite(r)) return '–';
    return (r >= 100 ? Math.round(r) : r.toFixed(1)) + '/s';
  }

  function fmtEta(info, rate) {
    if (info.state !== 'running' || info.total === null || !rate) return '–';
    const left = info.total - info.processed - info.failed;
    if (left <= 0) return '–';
    let s = Math.round(left / rate);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return m + ' min ' + s + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function fmtTime(iso) {
    return iso.slice(0, 10) + ' ' + iso.slice(11, 19) + ' UTC';
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function setText(root, name, text) {
    const el = field(root, name);
    if (el && el.textContent !== text) el.textContent = text;
  }

  // Shows a job's figures in `root` (a list row or the job page).
  function apply(root, info, rate) {
    root.dataset.state = info.state;
    const state = field(root, 'state');
    if (state) {
      state.textContent = info.state;
      state.className = 'state state-' + info.state;
    }
    const total = info.total === null ? '?' : String(info.total);
    setText(root, 'count', info.processed + '/' + total);
    setText(root, 'processed', String(info.processed));
    setText(root, 'failed', String(info.failed));
    setText(root, 'total', total);
    const bar = field(root, 'bar');
    if (bar && info.total !== null) {
      bar.max = Math.max(info.total, 1);
      bar.value = Math.min(info.processed + info.failed, bar.max);
      bar.textContent = Math.floor(100 * bar.value / bar.max) + '%';
    }
    if (rate !== undefined) {
      setText(root, 'rate', fmtRate(rate));
      setText(root, 'eta', fmtEta(info, rate));
    } else if (info.state !== 'running') {
      setText(root, 'eta', '–');
    }
    const updated = field(root, 'updated');
    if (updated) {
      updated.dateTime = info.updated_at;
      updated.textContent = updated.closest('tr') ? fmtTime(info.updated_at) : info.updated_at;
    }
    const error = field(root, 'error');
    if (error) {
      error.textContent = info.error || '';
      error.hidden = !info.error;
    }
    const output = field(root, 'output');
    if (output) output.hidden = !(info.kind === 'createExport' && info.state === 'completed');
  }

  // ---- The list --------------------------------------------------------------

  let resyncTimer = null;

  function resyncSoon() {
    if (resyncTimer) return;
    resyncTimer = setTimeout(() => {
      resyncTimer = null;
      resync();
    }, 100);
  }

  function listMatches(info) {
    return table.dataset.page === '1' &&
      (!table.dataset.state || table.dataset.state === info.state) &&
      (!table.dataset.kind || table.dataset.kind === info.kind);
  }

  function onListJob(info) {
    const rate = measure(info);
    const row = table.querySelector('tr[data-id="' + CSS.escape(info.id) + '"]');
    if (row) {
      apply(row, info, rate);
    } else if (listMatches(info)) {
      resyncSoon();
    }
  }

  // ---- One job ----------------------------------------------------------------

  const samples = [];

  function drawSpark() {
    const line = $('#spark polyline');
    if (!line) return;
    // Headroom above the highest sample, so a steady rate is a visible line.
    const max = Math.max(1, ...samples) * 1.25;
    const n = samples.length;
    line.setAttribute('points', samples.map((v, i) =>
      (n === 1 ? 300 : (300 * i / (n - 1))).toFixed(1) + ',' + (46 - 44 * v / max).toFixed(1)
    ).join(' '));
  }

  function updateButtons(state) {
    const finished = ['completed', 'failed', 'terminated', 'reverted'].includes(state);
    const set = (name, enabled) => {
      const b = document.querySelector('button[data-control="' + name + '"]');
      if (b) b.disabled = !enabled;
    };
    set('stop', state === 'running' || state === 'queued');
    set('start', state === 'paused');
    set('terminate', !finished);
    set('revert', job.dataset.kind !== 'createExport' &&
      (state === 'completed' || state === 'failed'));
  }

  function onJobPage(info) {
    if (info.id !== job.dataset.id) return;
    const rate = measure(info);
    if (rate !== null) {
      samples.push(rate);
      if (samples.length > 60) samples.shift();
      drawSpark();
    }
    // Without a live figure, the server's average stays.
    apply(job, info, rate === null ? undefined : rate);
    job.dataset.state = info.state;
    updateButtons(info.state);
  }

  // ---- Reading everything again (after a gap) ---------------------------------

  async function resync() {
    try {
      if (table) {
        const q = table.dataset.query;
        const r = await fetch('/ui/rows' + (q ? '?' + q : ''), { headers: { Accept: 'text/html' } });
        if (r.ok) $('#job-rows').innerHTML = await r.text();
      } else if (job) {
        const r = await fetch('/jobs/' + encodeURIComponent(job.dataset.id));
        if (r.ok) onJobPage(await r.json());
      }
    } catch (e) {
      // The stream's own error handling shows the banner.
    }
  }

  // ---- The stream ---------------------------------------------------------------

  let source = null;

  function connect() {
    source = new EventSource('/events');
    source.addEventListener('hello', (e) => {
      const hello = JSON.parse(e.data);
      // `connecting`: the first listener; a `daemon` event follows.
      if (hello.daemon !== 'connecting') setDaemon(hello.daemon === 'up');
      resync();
    });
    source.addEventListener('daemon', (e) => {
      const up = JSON.parse(e.data).up;
      setDaemon(up);
      if (up) resync();
    });
    source.addEventListener('resync', resync);
    source.addEventListener('job', (e) => {
      const info = JSON.parse(e.data);
      if (table) onListJob(info);
      if (job) onJobPage(info);
    });
    source.onerror = () => {
      showBanner('warn', 'jobd-http cannot be reached: what you see may be out of date. ' +
        'Reconnecting…');
      daemonDown = true;
      if (source.readyState === EventSource.CLOSED) {
        // A refused reconnection (503, 401) closes the source for good: retry.
        setTimeout(connect, 2000);
      }
    };
  }

  // ---- Submits and controls -------------------------------------------------------

  async function errorOf(r) {
    try {
      const body = await r.json();
      return body.errorType || ('HTTP ' + r.status);
    } catch (e) {
      return 'HTTP ' + r.status;
    }
  }

  function say(el, text, isError) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle('error', !!isError);
  }

  function link(id) {
    const a = document.createElement('a');
    a.href = '/ui/jobs/' + encodeURIComponent(id);
    a.textContent = id;
    return a;
  }

  async function submit(form, body, headers) {
    const status = $('#submit-status');
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    say(status, 'Submitting…');
    try {
      const r = await fetch('/jobs', { method: 'POST', body, headers });
      if (r.status === 201) {
        const info = await r.json();
        status.textContent = 'Submitted ';
        status.classList.remove('error');
        status.append(link(info.id), '.');
        form.reset();
        if (table && listMatches(info)) resyncSoon();
      } else {
        say(status, 'Not submitted: ' + await errorOf(r), true);
      }
    } catch (e) {
      say(status, 'Not submitted: jobd-http cannot be reached.', true);
    } finally {
      button.disabled = false;
    }
  }

  const upload = $('#upload-form');
  if (upload) {
    upload.addEventListener('submit', (e) => {
      e.preventDefault();
      // Field order is kept: kind and rate reach the server before the file.
      submit(upload, new FormData(upload), {});
    });
  }
  const exportForm = $('#export-form');
  if (exportForm) {
    exportForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = new FormData(exportForm);
      const body = { from: f.get('from'), to: f.get('to') };
      if (f.get('rate')) body.rate = Number(f.get('rate'));
      submit(exportForm, JSON.stringify(body), { 'Content-Type': 'application/json' });
    });
  }

  async function control(action) {
    const status = $('#control-status');
    const doing = { stop: 'Stopping…', start: 'Starting…', terminate: 'Terminating…', revert: 'Reverting…' };
    say(status, doing[action] || '');
    try {
      const r = await fetch('/jobs/' + encodeURIComponent(job.dataset.id) + '/' + action,
        { method: 'POST' });
      if (r.ok) {
        onJobPage(await r.json());
        say(status, '');
      } else {
        say(status, action + ': ' + await errorOf(r), true);
      }
    } catch (e) {
      say(status, action + ': jobd-http cannot be reached.', true);
    }
  }

  if (job) {
    // The actions that ask first, each with its dialog.
    const dialogs = { terminate: $('#confirm-dialog'), revert: $('#revert-dialog') };
    document.querySelectorAll('.controls form').forEach((form) => {
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const action = form.dataset.action;
        const dialog = dialogs[action];
        if (dialog && dialog.showModal) {
          dialog.returnValue = '';
          dialog.showModal();
        } else {
          control(action);
        }
      });
    });
    Object.entries(dialogs).forEach(([action, dialog]) => {
      if (dialog) {
        dialog.addEventListener('close', () => {
          if (dialog.returnValue === 'confirm') control(action);
        });
      }
    });
    updateButtons(job.dataset.state);
  }

  if (table || job) connect();
})();
