// The status page: refreshed from /status.json every few seconds, without a reload.
(function () {
  'use strict';
  const body = document.getElementById('status-body');
  if (!body) return;
  const cell = (text) => { const td = document.createElement('td'); td.textContent = text; return td; };
  const ago = (secs) => secs === null || secs === undefined ? 'never' : secs + 's ago';
  const refresh = async () => {
    try {
      const r = await fetch('/status.json', { credentials: 'same-origin' });
      if (!r.ok) return;
      const all = await r.json();
      body.replaceChildren(...all.triggers.map((t) => {
        const tr = document.createElement('tr');
        tr.dataset.workflow = t.workflow;
        tr.append(cell(t.workflow + ' (' + t.account + ')'), cell(t.health.toUpperCase()),
          cell(t.mode), cell(ago(t.last_ok_secs_ago)), cell(t.last_error || 'none'),
          cell(String(t.waiting_for_retry)), cell(String(t.dead_letters)), cell(t.paused || ''));
        return tr;
      }));
      const sends = document.getElementById('sends-body');
      if (sends) sends.replaceChildren(...all.sends.map((s) => {
        const tr = document.createElement('tr');
        tr.append(cell(s.at), cell(s.workflow), cell(s.outcome), cell(s.detail));
        return tr;
      }));
      const outbox = document.getElementById('outbox-body');
      if (outbox) outbox.replaceChildren(...all.outbox.map((o) => {
        const tr = document.createElement('tr');
        tr.append(cell(o.data_center), cell(o.status), cell(String(o.count)),
          cell(o.oldest_secs === null || o.oldest_secs === undefined ? '' : o.oldest_secs + 's'));
        return tr;
      }));
      const failures = document.getElementById('outbox-failures');
      if (failures) failures.replaceChildren(...all.outbox_failures.map((f) => {
        const li = document.createElement('li');
        li.textContent = 'message ' + f.id + ' of ' + f.account + ' failed after ' + f.attempts +
          ' attempt(s): ' + f.error;
        return li;
      }));
      document.getElementById('status-updated').textContent = new Date().toLocaleTimeString();
    } catch (e) { /* the next round tries again */ }
  };
  setInterval(refresh, 3000);
  refresh();
})();
