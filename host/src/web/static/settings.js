// The settings page: fields appear and disappear with the toggles and choices, hidden
// fields are disabled (so they are neither sent, checked nor saved), and small helpers.
(function () {
  'use strict';
  const form = document.getElementById('settings');
  if (!form) return;
  const value = (id) => {
    const el = document.getElementById(id);
    if (!el) return '';
    return el.type === 'checkbox' ? (el.checked ? 'on' : '') : el.value;
  };
  // "a b=c" holds when checkbox a is on and select b has the value c.
  const holds = (condition) => condition.split(/\s+/).filter(Boolean).every((term) => {
    const [id, want] = term.split('=');
    return want === undefined ? value(id) === 'on' : value(id) === want;
  });
  const setShown = (el, shown) => {
    el.hidden = !shown;
    el.querySelectorAll('input, select, textarea').forEach((input) => {
      // An input inside a group hidden by an outer condition stays disabled too.
      input.disabled = !shown || !!input.closest('[hidden]');
    });
  };
  const update = () => {
    // Outer groups first, so inner ones see whether they sit in a hidden group.
    const groups = Array.from(form.querySelectorAll('[data-when]'));
    groups.sort((a, b) => depth(a) - depth(b));
    groups.forEach((el) => setShown(el, holds(el.dataset.when)));
    form.querySelectorAll('[data-when-not]').forEach((el) => { el.hidden = holds(el.dataset.whenNot); });
    portWarning();
    expiryWarning();
  };
  const depth = (el) => { let d = 0; for (let p = el.parentElement; p; p = p.parentElement) d++; return d; };

  const portWarning = () => {
    const el = document.getElementById('port-warning');
    const port = value('smtp_port');
    const ssl = value('ssl') === 'on';
    let text = '';
    if (ssl && port === '587') text = 'Enable SSL is on with port 587, which expects STARTTLS: turn Enable SSL off, or use port 465.';
    if (!ssl && port === '465') text = 'Enable SSL is off (STARTTLS) with port 465, which expects SSL from the first byte: turn Enable SSL on, or use port 587.';
    el.textContent = text;
    el.hidden = text === '';
  };

  const expiryWarning = () => {
    const el = document.getElementById('secret-expiry-warning');
    const when = value('client_secret_expires');
    el.hidden = true;
    if (!when) return;
    const days = Math.floor((new Date(when + 'T00:00:00Z') - Date.now()) / 86400000);
    if (days < 0) { el.textContent = 'The client secret expired ' + (-days) + ' day(s) ago: create a new one in the app registration.'; el.hidden = false; }
    else if (days <= 30) { el.textContent = 'The client secret expires in ' + days + ' day(s): create a new one before then.'; el.hidden = false; }
  };

  // The redirect URL is this server's callback, as the browser reaches it.
  const redirect = document.getElementById('redirect_url');
  if (redirect && !redirect.value) redirect.value = window.location.origin + '/oauth/callback';
  const copy = document.getElementById('redirect-copy');
  if (copy) copy.addEventListener('click', () => {
    if (navigator.clipboard) navigator.clipboard.writeText(redirect.value);
    copy.textContent = 'Copied';
  });

  const tenant = document.getElementById('tenant-fill');
  if (tenant) tenant.addEventListener('click', () => {
    const id = value('tenant_id').trim();
    if (!id) return;
    const base = 'https://login.microsoftonline.com/' + encodeURIComponent(id) + '/oauth2/v2.0';
    document.getElementById('auth_url').value = base + '/authorize';
    document.getElementById('token_url').value = base + '/token';
  });

  // After Save & Authorize the consent runs in another tab; this tab shows the account's
  // new state as soon as the callback stored the tokens, without a reload.
  const watchAuthorization = () => {
    const name = (document.querySelector('input[name=account]') || {}).value;
    if (!name) return;
    const started = Date.now();
    const poll = async () => {
      try {
        const r = await fetch('/settings/smtp/state?account=' + encodeURIComponent(name), { credentials: 'same-origin' });
        if (r.ok) {
          const state = await r.json();
          const t = state.tokens;
          if (state.state === 'active' && t && t.authorized) {
            let note = document.getElementById('notice');
            if (!note) {
              note = document.createElement('p');
              note.id = 'notice';
              note.className = 'notice';
              form.parentElement.insertBefore(note, form);
            }
            note.textContent = 'SMTP Settings Authorized as ' + t.authorized_as + '.';
            const who = document.getElementById('token-authorized');
            if (who) who.textContent = 'yes, as ' + t.authorized_as;
            const reauth = document.getElementById('token-reauth');
            if (reauth) reauth.hidden = true;
            return;
          }
        }
      } catch (e) { /* tried again below */ }
      if (Date.now() - started < 10 * 60 * 1000) setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  };
  ['authorize-button', 'reauthorize-button'].forEach((id) => {
    const button = document.getElementById(id);
    if (button) button.addEventListener('click', watchAuthorization);
  });

  form.addEventListener('change', update);
  form.addEventListener('input', (e) => { if (e.target.id === 'smtp_port') portWarning(); });
  update();
})();
