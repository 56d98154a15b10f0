// crossline operator console. Vanilla ES2020, no dependencies, no build step.
// Everything comes from the same origin: the page is built into the binary.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;

  const BACKOFF_START_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  // A socket that drops sooner than this after opening keeps its backoff,
  // so a server that accepts and closes at once isn't hammered.
  const STABLE_OPEN_MS = 3000;
  const AGE_REFRESH_MS = 30000;

  const CHANNELS = {
    web: { label: 'Web', long: 'web chat' },
    sms: { label: 'SMS', long: 'SMS' },
    whatsapp: { label: 'WhatsApp', long: 'WhatsApp' },
  };
  const ORIGINS = {
    breakout: 'From a call',
    web: 'Web chat',
    sms: 'Inbound SMS',
    whatsapp: 'Inbound WhatsApp',
    reconnect: 'Reconnect',
  };
  const ROLES = { bot: 'Bot', visitor: 'Visitor', agent: 'Operator', system: 'System' };
  // Callback outcomes (src/callback/mod.rs `outcome`), in the filter's order,
  // with the badge kind each one gets.
  const OUTCOMES = {
    queued: { label: 'Queued', kind: 'neutral' },
    ringing: { label: 'Ringing', kind: 'neutral' },
    answered: { label: 'Answered', kind: 'success' },
    completed: { label: 'Completed', kind: 'success' },
    invalid_number: { label: 'Invalid number', kind: 'danger' },
    busy: { label: 'Busy', kind: 'warning' },
    declined: { label: 'Declined', kind: 'warning' },
    no_answer: { label: 'No answer', kind: 'warning' },
    failed: { label: 'Failed', kind: 'danger' },
  };
  const ESCALATIONS_PATH = '/v1/reports/escalations';
  // The server's default page size: a full page means there may be more.
  const ESCALATIONS_LIMIT = 1000;
  const TABS = ['conversations', 'leads', 'escalations', 'queues'];
  // A viewer's token reads queues and agents only.
  const VIEWER_TABS = ['queues'];
  const QUEUES_REFRESH_MS = 2000;
  // Agent states (src/queue/acd.rs `AgentStatus`) and the badge kind of each.
  const AGENT_STATES = {
    available: { label: 'Available', kind: 'success' },
    ringing: { label: 'Ringing', kind: 'warning' },
    busy: { label: 'Busy', kind: 'danger' },
    wrap_up: { label: 'Wrap-up', kind: 'neutral' },
    paused: { label: 'Paused', kind: 'neutral' },
  };

  // ---- state ----
  const state = {
    conversations: new Map(), // id -> summary
    order: [], // ids, newest first
    unread: new Set(),
    leads: [],
    selected: null, // conversation id
    detail: null, // { conversation, bindings } of the selected one
    seqs: new Set(), // seqs rendered in #transcript
    loadToken: 0, // guards against a slow detail fetch landing after a newer selection
    busy: false, // an action (ask/reconnect) is in flight
    // Events heard on the feed, per conversation: the detail fetch reads the
    // store, which can be a write behind a live conversation, so these fill
    // in whatever it hasn't got yet.
    heard: new Map(), // id -> [message]
    escalations: [],
    escLoaded: false, // fetched at least once since sign-in
    escToken: 0, // guards against a slow report landing after a newer one
    queues: [],
    queuesToken: 0, // guards against a slow refresh landing after a newer one
    role: '', // "viewer", "operator" or "admin", from GET /v1/status
  };
  const HEARD_PER_CONVERSATION = 400;
  const HEARD_CONVERSATIONS = 200;
  let leadsTimer = 0;
  let escTimer = 0;
  let queuesTimer = 0;

  function remember(id, m) {
    let list = state.heard.get(id);
    if (!list) {
      if (state.heard.size >= HEARD_CONVERSATIONS) state.heard.delete(state.heard.keys().next().value);
      list = [];
      state.heard.set(id, list);
    }
    list.push(m);
    if (list.length > HEARD_PER_CONVERSATION) list.splice(0, list.length - HEARD_PER_CONVERSATION);
  }

  // ---- API ----

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Any 401 means the session is gone: drop back to the login form.
  async function api(method, path, payload) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (payload !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'Cannot reach the server. Check the connection and try again.');
    }
    if (res.status === 401) {
      signedOut();
      throw new AuthError('signed out');
    }
    const { data, text } = await readBody(res);
    if (!res.ok) throw new ApiError(res.status, errorText(res, data, text));
    return data;
  }

  // The body as JSON when it is JSON, and as text either way.
  async function readBody(res) {
    const text = await res.text().catch(() => '');
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    return { data, text };
  }

  // The server's refusals are {"error": "..."}; anything else (a proxy's
  // page, a plain-text rejection) is shown briefly or as its status.
  function errorText(res, data, text) {
    if (data && typeof data.error === 'string' && data.error.trim()) return data.error.trim();
    const plain = typeof text === 'string' ? text.trim() : '';
    if (plain && plain.length <= 200 && !/^\s*</.test(plain)) return plain;
    return 'HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : '');
  }

  // ---- small helpers ----

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  function channelBadge(channel, extra) {
    const key = CHANNELS[channel] ? channel : 'other';
    const b = el('span', 'badge badge-' + key);
    b.dataset.channel = String(channel || '');
    // Icon is decoration; the text carries the meaning (not colour alone).
    const icon = el('span', 'badge-icon');
    icon.setAttribute('aria-hidden', 'true');
    b.appendChild(icon);
    b.appendChild(document.createTextNode(CHANNELS[channel] ? CHANNELS[channel].label : String(channel || '?')));
    if (extra) b.appendChild(el('span', 'badge-extra', extra));
    return b;
  }

  function stateTag(live) {
    const t = el('span', 'state ' + (live ? 'state-live' : 'state-closed'));
    if (live) {
      const dot = el('span', 'state-dot');
      dot.setAttribute('aria-hidden', 'true');
      t.appendChild(dot);
    }
    t.appendChild(document.createTextNode(live ? 'Live' : 'Closed'));
    return t;
  }

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : null;
  }

  function ago(ms) {
    ms = num(ms);
    if (ms === null) return '';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 45) return 'just now';
    const m = Math.round(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.round(m / 60);
    if (h < 24) return h + ' h ago';
    const d = Math.round(h / 24);
    if (d === 1) return 'yesterday';
    if (d < 7) return d + ' days ago';
    return dateFmt(ms);
  }

  const fmt = (() => {
    const mk = (o) => {
      try {
        return new Intl.DateTimeFormat(undefined, o);
      } catch (_) {
        return null;
      }
    };
    return {
      time: mk({ hour: '2-digit', minute: '2-digit' }),
      date: mk({ day: 'numeric', month: 'short' }),
      full: mk({ dateStyle: 'medium', timeStyle: 'short' }),
    };
  })();

  function dateFmt(ms) {
    return fmt.date ? fmt.date.format(new Date(ms)) : new Date(ms).toDateString();
  }

  function fullDate(ms) {
    if (num(ms) === null) return '';
    return fmt.full ? fmt.full.format(new Date(ms)) : new Date(ms).toString();
  }

  // Time of day for today's messages; date and time for older ones.
  function stamp(ms) {
    if (num(ms) === null) return '';
    const d = new Date(ms);
    const t = fmt.time ? fmt.time.format(d) : d.toTimeString().slice(0, 5);
    return d.toDateString() === new Date().toDateString() ? t : dateFmt(ms) + ', ' + t;
  }

  function timeEl(ms, text) {
    const t = el('time', null, text);
    if (num(ms) !== null) {
      t.dateTime = new Date(ms).toISOString();
      t.title = fullDate(ms);
      t.dataset.at = String(ms);
    }
    return t;
  }

  // Plain text to nodes with http(s) URLs as links. Never innerHTML: the text is visitor input.
  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  function linkify(parent, text) {
    let last = 0;
    URL_RE.lastIndex = 0;
    let m;
    while ((m = URL_RE.exec(text)) !== null) {
      const url = m[0].replace(/[.,;:!?)'"]+$/, '');
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      let href = null;
      try {
        const u = new URL(url);
        if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
      } catch (_) {
        href = null;
      }
      if (href) {
        const a = el('a', null, url);
        a.href = href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        parent.appendChild(a);
      } else {
        parent.appendChild(document.createTextNode(url));
      }
      last = m.index + url.length;
      URL_RE.lastIndex = last;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function convName(c) {
    if (c.lead && c.lead.name) return c.lead.name;
    if (c.lead && c.lead.email) return c.lead.email;
    if (c.address) return c.address;
    return 'Visitor ' + String(c.id || '').slice(-6);
  }

  // ---- errors and status ----

  const consoleError = $('console-error');
  function showConsoleError(msg) {
    $('console-error-text').textContent = msg;
    consoleError.hidden = false;
  }
  function clearConsoleError() {
    consoleError.hidden = true;
    $('console-error-text').textContent = '';
  }
  $('console-error-close').addEventListener('click', clearConsoleError);

  // Report errors that aren't "signed out" (that one already shows the login form).
  function report(prefix, err) {
    if (err instanceof AuthError) return;
    showConsoleError(prefix + (err && err.message ? err.message : String(err)));
  }

  function setActionStatus(msg) {
    $('action-status').textContent = msg;
  }

  // ---- auth ----

  function setAuth(v) {
    body.dataset.auth = v;
  }

  // `why`: shown under the token field (e.g. the session ran out).
  function signedOut(why) {
    if (body.dataset.auth === 'out') return;
    const wasIn = body.dataset.auth === 'in';
    setAuth('out');
    stopSocket();
    clearTimeout(leadsTimer);
    clearTimeout(escTimer);
    clearTimeout(queuesTimer);
    resetData();
    clearConsoleError();
    $('login-error').textContent =
      typeof why === 'string' ? why : wasIn ? 'Your session has ended. Sign in again.' : '';
    const t = $('login-token');
    t.value = '';
    t.focus();
  }

  function resetData() {
    state.conversations.clear();
    state.order = [];
    state.unread.clear();
    state.leads = [];
    state.selected = null;
    state.detail = null;
    state.seqs.clear();
    state.heard.clear();
    state.loadToken++;
    state.escalations = [];
    state.escLoaded = false;
    state.escToken++;
    state.queues = [];
    state.queuesToken++;
    $('queues').textContent = '';
    $('queues-summary').textContent = '';
    $('queues-empty').hidden = true;
    $('waiting-count').textContent = '';
    setRole('');
    $('conversations').textContent = '';
    $('leads').textContent = '';
    escBody.textContent = '';
    $('escalations-summary').textContent = '';
    $('escalations-empty').hidden = true;
    $('esc-error').textContent = '';
    $('esc-to').removeAttribute('aria-invalid');
    // The next operator starts from a clean report.
    $('escalation-filters').reset();
    updateCsvLink();
    $('transcript').textContent = '';
    $('conv-view').hidden = true;
    $('empty-detail').hidden = false;
    body.dataset.view = 'list';
  }

  // What the signed-in token may do: a viewer gets the Queues tab only.
  function setRole(role) {
    state.role = role;
    body.dataset.role = role;
    const viewer = role === 'viewer';
    for (const t of TABS) $('tab-' + t).hidden = viewer && !VIEWER_TABS.includes(t);
  }

  // `role` from GET /v1/status; asked for when not known yet.
  async function signedIn(role) {
    if (!role) {
      try {
        const status = await api('GET', '/v1/status');
        role = status && typeof status.role === 'string' ? status.role : 'operator';
      } catch (err) {
        report('Could not read the status: ', err);
        return;
      }
    }
    setRole(role);
    setAuth('in');
    $('login-error').textContent = '';
    clearConsoleError();
    if (role === 'viewer') {
      showTab('queues');
      return;
    }
    if (body.dataset.tab === 'queues') loadQueues();
    startSocket();
    const loads = [loadConversations(), loadLeads()];
    if (body.dataset.tab === 'escalations') loads.push(loadEscalations());
    await Promise.all(loads);
  }

  $('login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('login-token');
    const btn = $('login-submit');
    const errEl = $('login-error');
    const token = input.value.trim();
    if (!token) {
      errEl.textContent = 'Enter the operator token.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    btn.disabled = true;
    errEl.textContent = '';
    clearConsoleError();
    let res;
    try {
      res = await fetch('/v1/console/session', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token }),
      });
    } catch (_) {
      errEl.textContent = 'Cannot reach the server. Try again.';
      showConsoleError('Sign-in failed: cannot reach the server.');
      btn.disabled = false;
      return;
    }
    try {
      if (!res.ok) {
        // 401: wrong token; 403: the operator API is disabled on the server
        // (no token configured); 400: a malformed request.
        const { data, text } = await readBody(res);
        const msg = errorText(res, data, text);
        errEl.textContent = res.status === 401 ? 'Wrong token.' : 'Sign-in failed.';
        showConsoleError('Sign-in failed: ' + msg);
        if (res.status === 401) {
          input.setAttribute('aria-invalid', 'true');
          input.select();
        }
        return;
      }
      input.value = '';
      input.removeAttribute('aria-invalid');
      await signedIn();
    } finally {
      btn.disabled = false;
    }
  });

  $('login-token').addEventListener('input', () => {
    $('login-token').removeAttribute('aria-invalid');
    $('login-error').textContent = '';
  });

  $('logout').addEventListener('click', async () => {
    try {
      await fetch('/v1/console/session', { method: 'DELETE', credentials: 'same-origin' });
    } catch (_) {
      /* signed out locally either way */
    }
    signedOut();
  });

  // ---- conversation list ----

  async function loadConversations() {
    try {
      const data = await api('GET', '/v1/conversations?limit=100');
      const list = data && Array.isArray(data.conversations) ? data.conversations : [];
      state.order = [];
      const fresh = new Map();
      for (const c of list) {
        if (!c || !c.id) continue;
        fresh.set(c.id, c);
        state.order.push(c.id);
      }
      state.conversations = fresh;
      renderList();
      if (state.selected && fresh.has(state.selected)) {
        // Catch up on anything missed while the socket was down.
        loadDetail(state.selected, { keep: true });
      }
    } catch (err) {
      report('Could not load conversations: ', err);
    }
  }

  function renderList() {
    const ul = $('conversations');
    const liveOnly = $('live-only').checked;
    const frag = document.createDocumentFragment();
    let shown = 0;
    let live = 0;
    for (const id of state.order) {
      const c = state.conversations.get(id);
      if (!c) continue;
      if (c.live) live++;
      if (liveOnly && !c.live) continue;
      frag.appendChild(convRow(c));
      shown++;
    }
    ul.textContent = '';
    ul.appendChild(frag);
    $('conversations-empty').hidden = shown > 0;
    $('conversations-empty').textContent = liveOnly ? 'No live conversations.' : 'No conversations yet.';
    $('live-count').textContent = live ? String(live) : '';
    $('live-count').setAttribute('aria-label', live + ' live');
  }

  function convRow(c) {
    const li = el('li', 'conv');
    li.dataset.id = c.id;
    li.dataset.live = c.live ? 'true' : 'false';
    const unread = state.unread.has(c.id);
    li.dataset.unread = unread ? 'true' : 'false';

    const btn = el('button', 'conv-open');
    btn.type = 'button';
    if (c.id === state.selected) btn.setAttribute('aria-current', 'true');

    const top = el('span', 'conv-top');
    top.appendChild(channelBadge(c.channel));
    top.appendChild(el('span', 'conv-name', convName(c)));
    if (unread) top.appendChild(el('span', 'unread', 'New'));
    top.appendChild(timeEl(c.created_at, ago(c.created_at)));
    btn.appendChild(top);

    const sub = el('span', 'conv-sub');
    sub.appendChild(stateTag(!!c.live));
    sub.appendChild(el('span', 'conv-origin', ORIGINS[c.origin] || String(c.origin || '')));
    if (c.flow) sub.appendChild(el('span', 'conv-flow', c.flow));
    btn.appendChild(sub);

    const who = [];
    if (c.lead && c.lead.name && c.lead.email) who.push(c.lead.email);
    if (c.address && convName(c) !== c.address) who.push(c.address);
    if (who.length) btn.appendChild(el('span', 'conv-who', who.join(' · ')));

    btn.addEventListener('click', () => select(c.id));
    li.appendChild(btn);
    return li;
  }

  function upsertConversation(c, { toTop } = {}) {
    if (!c || !c.id) return;
    const known = state.conversations.has(c.id);
    state.conversations.set(c.id, c);
    if (!known || toTop) {
      state.order = state.order.filter((id) => id !== c.id);
      state.order.unshift(c.id);
    }
    renderList();
    if (c.id === state.selected) {
      state.detail = state.detail || { bindings: [] };
      state.detail.conversation = c;
      renderHead();
    }
  }

  $('live-only').addEventListener('change', renderList);
  $('refresh').addEventListener('click', () => loadConversations());

  // ---- selection and detail ----

  function select(id) {
    if (!id) return;
    const changed = id !== state.selected;
    state.selected = id;
    state.unread.delete(id);
    body.dataset.view = 'detail';
    $('empty-detail').hidden = true;
    $('conv-view').hidden = false;
    if (changed) {
      state.seqs.clear();
      $('transcript').textContent = '';
      $('reply-error').textContent = '';
      $('reply-text').removeAttribute('aria-invalid');
      $('reply-text').value = '';
      setActionStatus('');
      const c = state.conversations.get(id);
      state.detail = { conversation: c || { id }, bindings: [] };
      renderHead();
    }
    renderList();
    loadDetail(id, { keep: !changed });
  }

  async function loadDetail(id, { keep } = {}) {
    const token = ++state.loadToken;
    const tr = $('transcript');
    if (!keep) tr.setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', '/v1/conversations/' + encodeURIComponent(id));
      if (token !== state.loadToken || id !== state.selected) return;
      const c = data && data.conversation ? data.conversation : state.conversations.get(id);
      state.detail = { conversation: c, bindings: Array.isArray(data.bindings) ? data.bindings : [] };
      if (c && state.conversations.has(id)) {
        state.conversations.set(id, c);
        renderList();
      }
      renderHead();
      const stick = nearBottom();
      for (const m of Array.isArray(data.messages) ? data.messages : []) addItem(m);
      for (const m of state.heard.get(id) || []) addItem(m);
      if (!keep || stick) scrollToBottom();
    } catch (err) {
      if (token === state.loadToken) report('Could not load the conversation: ', err);
    } finally {
      if (token === state.loadToken) tr.removeAttribute('aria-busy');
    }
  }

  $('back').addEventListener('click', () => {
    body.dataset.view = 'list';
    const row = document.querySelector('li.conv[data-id="' + cssEscape(state.selected || '') + '"] button');
    if (row) row.focus();
  });

  function cssEscape(s) {
    return window.CSS && CSS.escape ? CSS.escape(s) : s.replace(/["\\]/g, '\\$&');
  }

  function renderHead() {
    const d = state.detail;
    if (!d || !d.conversation) return;
    const c = d.conversation;

    $('conv-title').textContent = convName(c);
    const badge = $('conv-badge');
    badge.textContent = '';
    badge.appendChild(channelBadge(c.channel));
    const st = $('conv-state');
    st.textContent = '';
    st.dataset.live = c.live ? 'true' : 'false';
    st.appendChild(stateTag(!!c.live));

    const facts = $('conv-facts');
    facts.textContent = '';
    const fact = (label, value, node) => {
      if (!value && !node) return;
      const s = el('span', 'fact');
      s.appendChild(el('span', 'fact-label', label));
      s.appendChild(node || document.createTextNode(value));
      facts.appendChild(s);
    };
    fact('Origin', ORIGINS[c.origin] || c.origin);
    fact('Flow', c.flow);
    fact('Started', null, timeEl(c.created_at, stamp(c.created_at)));
    if (c.closed_at) fact('Closed', null, timeEl(c.closed_at, stamp(c.closed_at)));
    if (c.lead) {
      fact('Email', c.lead.email);
      fact('Phone', c.lead.phone);
    }
    if (c.address && !(c.lead && c.lead.phone)) fact('Number', c.address);

    renderBindings(d.bindings && d.bindings.length ? d.bindings : [{ channel: c.channel, address: c.address }]);
    renderActions();
    renderComposer();
  }

  // "Web → SMS +34•••456 → Web"
  function renderBindings(bindings) {
    const wrap = $('bindings');
    wrap.textContent = '';
    bindings.forEach((b, i) => {
      if (i > 0) {
        const arrow = el('span', 'arrow', '→');
        arrow.setAttribute('aria-label', 'then');
        wrap.appendChild(arrow);
      }
      const badge = channelBadge(b.channel, b.address || null);
      const when = [];
      if (num(b.started_at) !== null) when.push('from ' + fullDate(b.started_at));
      if (num(b.ended_at) !== null) when.push('until ' + fullDate(b.ended_at));
      if (when.length) badge.title = when.join(' ');
      if (i === bindings.length - 1 && b.ended_at == null) badge.classList.add('badge-current');
      wrap.appendChild(badge);
    });
  }

  // Each button says why it's disabled, visibly and in its title.
  function setAction(btn, reasonEl, reason) {
    btn.disabled = !!reason || state.busy;
    btn.title = reason || '';
    if (reasonEl) {
      reasonEl.textContent = reason || '';
      reasonEl.hidden = !reason;
    }
  }

  function renderActions() {
    const c = state.detail && state.detail.conversation;
    if (!c) return;
    let ask = '';
    if (!c.live) ask = 'The conversation is closed';
    else if (c.channel !== 'web') ask = 'Only for live web chats: this one is on ' + (CHANNELS[c.channel] || { long: c.channel }).long;
    setAction($('ask-phone-sms'), null, ask);
    setAction($('ask-phone-whatsapp'), null, ask);
    $('ask-phone-reason').textContent = ask;
    $('ask-phone-reason').hidden = !ask;

    // A chat on a phone moves to the other phone channel, or gets a web link.
    let move = '';
    if (!c.live) move = 'The conversation is closed';
    else if (c.channel === 'web' || !c.channel) move = 'Only for chats on a phone: this one is in the web chat';
    const here = 'Already on ' + (CHANNELS[c.channel] || { long: c.channel }).long;
    setAction($('move-sms'), null, move || (c.channel === 'sms' ? here : ''));
    setAction($('move-whatsapp'), null, move || (c.channel === 'whatsapp' ? here : ''));
    setAction($('move-web'), null, move);
    $('move-reason').textContent = move;
    $('move-reason').hidden = !move;

    // PH-2A: a finished web chat whose lead left a phone number.
    let rec = '';
    if (c.live) rec = 'The conversation is still live';
    else if (c.channel && c.channel !== 'web')
      rec = 'Only for web chats: this one ended on ' + (CHANNELS[c.channel] || { long: c.channel }).long;
    else if (!c.lead || !c.lead.phone) rec = 'No phone number: the lead of this chat has none';
    setAction($('reconnect-sms'), $('reconnect-reason'), rec);
  }

  function renderComposer() {
    const c = state.detail && state.detail.conversation;
    if (!c) return;
    const text = $('reply-text');
    const send = $('reply-send');
    const ch = CHANNELS[c.channel] || { long: String(c.channel) };
    const to = c.channel !== 'web' && c.address ? ' to ' + c.address : '';
    $('reply-label').textContent = c.live ? 'Reply by ' + ch.long + to : 'Reply (conversation closed)';
    text.disabled = !c.live;
    send.disabled = !c.live;
    text.placeholder = c.live ? 'Write to the visitor…' : 'This conversation is closed. Reconnect by SMS to write again.';
  }

  // ---- transcript ----

  const transcript = $('transcript');
  const jump = $('jump');

  function nearBottom() {
    return transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
  }
  function scrollToBottom() {
    transcript.scrollTop = transcript.scrollHeight;
    jump.hidden = true;
  }
  transcript.addEventListener('scroll', () => {
    if (nearBottom()) jump.hidden = true;
  });
  jump.addEventListener('click', () => {
    scrollToBottom();
    transcript.focus({ preventScroll: true });
  });

  // A visitor-chat event from the feed, in the shape of a stored message.
  function eventToMessage(ev) {
    const at = num(ev.at) !== null ? ev.at : Date.now();
    switch (ev.type) {
      case 'message':
        return { seq: ev.id, role: ev.role, kind: 'message', text: ev.text, at };
      case 'prompt':
        return {
          seq: ev.id,
          role: 'bot',
          kind: 'prompt',
          text: ev.text,
          detail: { input: ev.input, choices: ev.choices, action: ev.action },
          at,
        };
      case 'channel':
        return {
          seq: ev.id,
          role: 'system',
          kind: 'channel',
          text: ev.text,
          detail: { channel: ev.channel, address: ev.address, revert_until: ev.revert_until },
          at,
        };
      case 'closed':
        return { seq: ev.id, role: 'system', kind: 'closed', text: ev.text, at };
      default:
        return null;
    }
  }

  function addItem(m) {
    if (!m || !Number.isSafeInteger(m.seq) || state.seqs.has(m.seq)) return false;
    state.seqs.add(m.seq);
    const item = renderItem(m);
    // Keep seq order even if an event arrives before the fetch it belongs after.
    const later = Array.from(transcript.children).find((x) => Number(x.dataset.seq) > m.seq);
    transcript.insertBefore(item, later || null);
    return true;
  }

  function renderItem(m) {
    const kind = m.kind || 'message';
    const role = ROLES[m.role] ? m.role : 'bot';
    const detail = m.detail && typeof m.detail === 'object' ? m.detail : {};
    const li = el('li', 'item');
    li.dataset.seq = String(m.seq);
    li.dataset.kind = kind;
    li.dataset.role = role;
    const text = String(m.text == null ? '' : m.text);

    if (kind === 'channel') {
      li.classList.add('channel');
      const box = el('div', 'notice');
      box.appendChild(channelBadge(detail.channel, detail.address || null));
      const p = el('span', 'notice-text');
      linkify(p, text || 'Moved to ' + ((CHANNELS[detail.channel] || {}).long || detail.channel));
      box.appendChild(p);
      box.appendChild(timeEl(m.at, stamp(m.at)));
      li.appendChild(box);
      return li;
    }
    if (kind === 'closed' || role === 'system') {
      li.classList.add('system');
      if (kind === 'closed') li.classList.add('closed');
      const box = el('div', 'notice');
      const p = el('span', 'notice-text');
      linkify(p, text || (kind === 'closed' ? 'The conversation ended.' : ''));
      box.appendChild(p);
      if (num(m.at) !== null) box.appendChild(timeEl(m.at, stamp(m.at)));
      li.appendChild(box);
      return li;
    }

    li.classList.add(role);
    if (kind === 'prompt') li.classList.add('prompt');
    const meta = el('div', 'meta');
    meta.appendChild(el('span', 'who', ROLES[role]));
    meta.appendChild(timeEl(m.at, stamp(m.at)));
    li.appendChild(meta);
    const bubble = el('div', 'bubble');
    linkify(bubble, text);
    li.appendChild(bubble);

    if (kind === 'prompt') {
      const tags = el('div', 'prompt-info');
      if (detail.action === 'switch_sms' || detail.action === 'switch_whatsapp') {
        const ch = detail.action === 'switch_sms' ? 'sms' : 'whatsapp';
        tags.appendChild(el('span', 'tag tag-action', 'Operator request: move to ' + CHANNELS[ch].label));
      }
      if (detail.input) tags.appendChild(el('span', 'tag', 'Expects ' + detail.input));
      if (Array.isArray(detail.choices)) {
        for (const ch of detail.choices) {
          if (ch && typeof ch === 'object') tags.appendChild(el('span', 'tag tag-choice', ch.label || ch.value));
        }
      }
      if (tags.childNodes.length) li.appendChild(tags);
    }
    return li;
  }

  // ---- live feed ----

  let sock = null;
  let attempt = 0;
  let retryTimer = 0;
  let openedAt = 0;
  let everOpened = false;
  let wanted = false;

  function setConn(s, text) {
    const c = $('conn');
    c.dataset.state = s;
    $('conn-text').textContent = text;
  }

  function startSocket() {
    wanted = true;
    attempt = 0;
    everOpened = false;
    connect();
  }

  function stopSocket() {
    wanted = false;
    clearTimeout(retryTimer);
    if (sock) {
      const s = sock;
      sock = null;
      try {
        s.close(1000, 'logout');
      } catch (_) {
        /* already closing */
      }
    }
  }

  function connect() {
    if (!wanted) return;
    clearTimeout(retryTimer);
    setConn('connecting', everOpened ? 'Reconnecting…' : 'Connecting…');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(proto + '//' + location.host + '/v1/console/ws');
    } catch (_) {
      scheduleReconnect();
      return;
    }
    sock = ws;
    let opened = false;

    ws.onopen = () => {
      if (sock !== ws) return;
      opened = true;
      openedAt = Date.now();
      const again = everOpened;
      everOpened = true;
      setConn('open', 'Live updates on');
      // Anything that happened while we were away only shows up in a re-fetch.
      if (again) {
        loadConversations();
        loadLeads();
        if (state.escLoaded) loadEscalations();
      }
    };

    ws.onmessage = (e) => {
      if (sock !== ws || typeof e.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      try {
        handleFrame(frame);
      } catch (err) {
        console.error('console: bad frame', err, frame);
      }
    };

    ws.onclose = () => {
      if (sock !== ws) return;
      sock = null;
      if (openedAt && Date.now() - openedAt >= STABLE_OPEN_MS) attempt = 0;
      openedAt = 0;
      if (!wanted) return;
      // A refused upgrade looks like any other close: ask whether we're still signed in.
      if (!opened) {
        fetch('/v1/status', { credentials: 'same-origin' })
          .then((r) => {
            if (r.status === 401) signedOut();
          })
          .catch(() => {});
      }
      scheduleReconnect();
    };
    ws.onerror = () => {
      /* close follows */
    };
  }

  function scheduleReconnect() {
    if (!wanted) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
    const delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.8 + Math.random() * 0.4)));
    attempt++;
    setConn('down', 'Offline · retrying in ' + Math.max(1, Math.round(delay / 1000)) + ' s');
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (!wanted || sock) return;
    attempt = 0;
    connect();
  }
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });

  function handleFrame(f) {
    if (!f || typeof f !== 'object') return;
    if (f.type === 'conversation' && f.conversation) {
      const isNew = !state.conversations.has(f.conversation.id);
      upsertConversation(f.conversation, { toTop: isNew });
      // A chat that starts or ends may have left a lead behind.
      clearTimeout(leadsTimer);
      leadsTimer = setTimeout(loadLeads, 1500);
      // ...or come from (or lead to) a callback: refresh the report if it's in view.
      if (body.dataset.tab === 'escalations' && state.escLoaded) {
        clearTimeout(escTimer);
        escTimer = setTimeout(loadEscalations, 2000);
      }
      return;
    }
    if (f.type !== 'event' || !f.conversation || !f.event) return;
    const id = f.conversation;
    const ev = f.event;
    const m = eventToMessage(ev);
    if (!m) return;
    remember(id, m);

    // The feed's events change the summary too; keep it right until the next conversation frame.
    const c = state.conversations.get(id);
    if (c) {
      if (ev.type === 'channel' && CHANNELS[ev.channel]) {
        c.channel = ev.channel;
        c.address = ev.address || null;
      } else if (ev.type === 'closed') {
        c.live = false;
        if (!c.closed_at) c.closed_at = m.at;
      }
    }

    if (id === state.selected) {
      const stick = nearBottom();
      if (addItem(m)) {
        if (stick) scrollToBottom();
        else jump.hidden = false;
      }
      if (ev.type === 'channel' || ev.type === 'closed') {
        if (c) state.detail.conversation = c;
        renderHead();
        // The binding history lives on the server; fetch it rather than guess.
        loadDetail(id, { keep: true });
      }
      renderList();
    } else if (c) {
      state.unread.add(id);
      renderList();
    }
  }

  // ---- reply ----

  const replyText = $('reply-text');
  const replyErr = $('reply-error');

  replyText.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('reply').requestSubmit ? $('reply').requestSubmit() : $('reply-send').click();
    }
  });
  replyText.addEventListener('input', () => {
    if (replyText.getAttribute('aria-invalid')) {
      replyText.removeAttribute('aria-invalid');
      replyErr.textContent = '';
    }
  });

  $('reply').addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = state.selected;
    const send = $('reply-send');
    if (!id || send.disabled) return;
    const text = replyText.value.trim();
    if (!text) {
      replyText.focus();
      return;
    }
    send.disabled = true;
    replyErr.textContent = '';
    replyText.removeAttribute('aria-invalid');
    const sentAt = Date.now();
    try {
      const res = await api('POST', '/v1/conversations/' + encodeURIComponent(id) + '/messages', { text });
      // Only clear what was sent: the operator may have kept typing.
      if (replyText.value.trim() === text) replyText.value = '';
      if (id === state.selected && res && Number.isSafeInteger(res.seq)) {
        // Show it now; the feed's copy of the same seq is ignored.
        addItem({ seq: res.seq, role: 'agent', kind: 'message', text, at: sentAt });
        scrollToBottom();
      }
    } catch (err) {
      if (err instanceof AuthError) return;
      // Keep the typed text so nothing is lost.
      replyErr.textContent = 'Not sent: ' + err.message;
      replyText.setAttribute('aria-invalid', 'true');
      // 409 "closed", 404 "no live conversation": it's over; say so.
      if (err.status === 404 || (err.status === 409 && /closed/i.test(err.message))) {
        const c = state.conversations.get(id);
        if (c && c.live) {
          c.live = false;
          upsertConversation(c);
        }
      }
    } finally {
      if (id === state.selected) renderComposer();
      replyText.focus();
    }
  });

  // ---- actions ----

  async function runAction(label, fn) {
    if (state.busy) return;
    state.busy = true;
    renderActions();
    setActionStatus(label + '…');
    clearConsoleError();
    try {
      await fn();
    } catch (err) {
      setActionStatus('');
      report(label + ' failed: ', err);
    } finally {
      state.busy = false;
      renderActions();
    }
  }

  function askPhone(channel) {
    const id = state.selected;
    if (!id) return;
    runAction('Asking for the phone number', async () => {
      await api('POST', '/v1/conversations/' + encodeURIComponent(id) + '/visitor-action', {
        action: 'ask_phone',
        channel,
      });
      setActionStatus('Asked the visitor for a phone number to continue on ' + CHANNELS[channel].label + '.');
    });
  }
  $('ask-phone-sms').addEventListener('click', () => askPhone('sms'));
  $('ask-phone-whatsapp').addEventListener('click', () => askPhone('whatsapp'));

  function moveTo(channel) {
    const id = state.selected;
    if (!id) return;
    const web = channel === 'web';
    runAction(web ? 'Sending a link to the web chat' : 'Moving to ' + CHANNELS[channel].label, async () => {
      const res = await api('POST', '/v1/conversations/' + encodeURIComponent(id) + '/switch', { channel });
      if (res && res.conversation) upsertConversation(res.conversation);
      setActionStatus(
        web
          ? 'Link sent: the conversation moves to the web chat when the visitor opens it.'
          : 'Moved: the conversation continues on ' + CHANNELS[channel].label + '.'
      );
      if (id === state.selected) loadDetail(id, { keep: true });
    });
  }
  $('move-sms').addEventListener('click', () => moveTo('sms'));
  $('move-whatsapp').addEventListener('click', () => moveTo('whatsapp'));
  $('move-web').addEventListener('click', () => moveTo('web'));

  $('reconnect-sms').addEventListener('click', () => {
    const id = state.selected;
    if (!id) return;
    runAction('Reconnecting by SMS', async () => {
      const res = await api('POST', '/v1/conversations/' + encodeURIComponent(id) + '/reconnect', { channel: 'sms' });
      if (res && res.conversation) upsertConversation(res.conversation, { toTop: true });
      setActionStatus('Reconnected: the conversation is live on SMS.');
      if (id === state.selected) loadDetail(id, { keep: true });
    });
  });

  // ---- leads ----

  async function loadLeads() {
    try {
      const data = await api('GET', '/v1/leads?limit=100');
      state.leads = data && Array.isArray(data.leads) ? data.leads : [];
      renderLeads();
    } catch (err) {
      report('Could not load leads: ', err);
    }
  }

  function renderLeads() {
    const ul = $('leads');
    ul.textContent = '';
    for (const l of state.leads) {
      if (l && l.id) ul.appendChild(leadRow(l));
    }
    $('leads-empty').hidden = state.leads.length > 0;
  }

  function leadRow(l) {
    const li = el('li', 'lead');
    li.dataset.id = l.id;
    const top = el('div', 'lead-top');
    top.appendChild(el('span', 'lead-name', l.name || l.email || l.phone || 'Unnamed lead'));
    top.appendChild(timeEl(l.updated_at || l.created_at, ago(l.updated_at || l.created_at)));
    li.appendChild(top);

    const facts = el('div', 'lead-facts');
    if (l.email && l.email !== l.name) facts.appendChild(el('span', null, l.email));
    facts.appendChild(el('span', l.phone ? 'lead-phone' : 'lead-phone missing', l.phone || 'No phone'));
    li.appendChild(facts);

    const actions = el('div', 'lead-actions');
    const btn = el('button', 'btn btn-small btn-primary reconnect', 'Reconnect by SMS');
    btn.type = 'button';
    actions.appendChild(btn);
    if (l.conversation_id) {
      const open = el('button', 'btn btn-small btn-quiet open-conv', 'Open chat');
      open.type = 'button';
      open.addEventListener('click', () => {
        showTab('conversations');
        select(l.conversation_id);
      });
      actions.appendChild(open);
    }
    li.appendChild(actions);

    // Every row has its .reason; it says something only when the button is off.
    const reason = el('p', 'reason');
    reason.id = 'lead-reason-' + l.id;
    li.appendChild(reason);
    if (!l.phone) {
      reason.textContent = 'No phone number in this lead';
      btn.disabled = true;
      btn.title = reason.textContent;
      btn.setAttribute('aria-describedby', reason.id);
    } else {
      reason.hidden = true;
      btn.setAttribute('aria-label', 'Reconnect by SMS with ' + (l.name || l.email || l.phone));
      btn.addEventListener('click', () => reconnectLead(l, btn));
    }
    return li;
  }

  async function reconnectLead(l, btn) {
    if (btn.disabled) return;
    btn.disabled = true;
    clearConsoleError();
    try {
      const res = await api('POST', '/v1/leads/' + encodeURIComponent(l.id) + '/reconnect', { channel: 'sms' });
      if (res && res.conversation) {
        upsertConversation(res.conversation, { toTop: true });
        showTab('conversations');
        select(res.conversation.id);
        setActionStatus('Reconnected with ' + (l.name || l.email || 'the lead') + ' by SMS.');
      }
    } catch (err) {
      report('Reconnect by SMS failed: ', err);
    } finally {
      btn.disabled = false;
    }
  }

  $('refresh-leads').addEventListener('click', () => loadLeads());

  // ---- escalations (callbacks report) ----

  const escBody = $('escalations').tBodies[0];
  const escForm = $('escalation-filters');

  // The report's query for what the filter form says now; null (with the
  // reason shown) when it can't be asked.
  function escQuery() {
    const p = new URLSearchParams();
    const bot = $('esc-bot').value.trim();
    const flow = $('esc-flow').value.trim();
    const from = $('esc-from').value;
    const to = $('esc-to').value;
    const outcome = $('esc-outcome').value;
    if (bot) p.set('bot', bot);
    if (flow) p.set('flow', flow);
    if (from) p.set('from', from);
    if (to) p.set('to', to);
    if (outcome && OUTCOMES[outcome]) p.set('outcome', outcome);
    return p;
  }

  // "From" after "To" matches nothing: say so rather than show an empty report.
  function escValid() {
    const from = $('esc-from').value;
    const to = $('esc-to').value;
    const bad = from && to && from > to;
    $('esc-error').textContent = bad ? '"From" is after "To": pick a From date on or before the To date.' : '';
    if (bad) $('esc-to').setAttribute('aria-invalid', 'true');
    else $('esc-to').removeAttribute('aria-invalid');
    return !bad;
  }

  function updateCsvLink() {
    const p = escQuery();
    p.set('format', 'csv');
    $('esc-csv').href = ESCALATIONS_PATH + '?' + p.toString();
  }

  async function loadEscalations() {
    clearTimeout(escTimer);
    if (!escValid()) return;
    const token = ++state.escToken;
    const q = escQuery().toString();
    const table = $('escalations');
    table.setAttribute('aria-busy', 'true');
    if (!state.escLoaded) $('escalations-summary').textContent = 'Loading…';
    try {
      const data = await api('GET', ESCALATIONS_PATH + (q ? '?' + q : ''));
      if (token !== state.escToken) return;
      state.escalations = data && Array.isArray(data.escalations) ? data.escalations : [];
      state.escLoaded = true;
      renderEscalations();
    } catch (err) {
      if (token !== state.escToken) return;
      // Keep the last good report on screen; drop only the "Loading…".
      if (!state.escLoaded) $('escalations-summary').textContent = '';
      report('Could not load escalations: ', err);
    } finally {
      if (token === state.escToken) table.removeAttribute('aria-busy');
    }
  }

  function escSummary(rows) {
    const counts = new Map();
    for (const r of rows) {
      const o = OUTCOMES[r.outcome] ? r.outcome : 'failed';
      counts.set(o, (counts.get(o) || 0) + 1);
    }
    const order = Object.keys(OUTCOMES);
    const parts = [rows.length + (rows.length === 1 ? ' escalation' : ' escalations')];
    for (const [o, n] of Array.from(counts).sort((a, b) => b[1] - a[1] || order.indexOf(a[0]) - order.indexOf(b[0]))) {
      parts.push(n + ' ' + OUTCOMES[o].label.toLowerCase());
    }
    let text = parts.join(' · ');
    if (rows.length >= ESCALATIONS_LIMIT) text += ' (the newest ' + ESCALATIONS_LIMIT + '; narrow the filters for more)';
    return text;
  }

  function renderEscalations() {
    // A refresh rebuilds the rows: keep keyboard focus on the same row's button.
    const active = document.activeElement;
    const focusedRow = active && escBody.contains(active) ? active.closest('tr.escalation') : null;
    const focusedId = focusedRow ? focusedRow.dataset.id : null;

    const rows = state.escalations.filter((r) => r && r.id);
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.appendChild(escalationRow(r));
    escBody.textContent = '';
    escBody.appendChild(frag);
    $('escalations-empty').hidden = rows.length > 0;
    $('escalations-summary').textContent = escSummary(rows);

    if (focusedId !== null) {
      const row = escBody.querySelector('tr.escalation[data-id="' + cssEscape(focusedId) + '"]');
      const target = row && row.querySelector('button');
      if (target) target.focus({ preventScroll: true });
    }
  }

  function none() {
    // A dash to see, a word to hear.
    const s = el('span', 'na');
    const dash = el('span', null, '—');
    dash.setAttribute('aria-hidden', 'true');
    s.appendChild(dash);
    s.appendChild(el('span', 'visually-hidden', 'none'));
    return s;
  }

  function secsCell(v) {
    const td = el('td', 'num');
    v = num(v);
    if (v === null) td.appendChild(none());
    else td.textContent = v.toFixed(1);
    return td;
  }

  function outcomeBadge(outcome) {
    const o = OUTCOMES[outcome];
    const b = el('span', 'badge outcome outcome-' + (o ? o.kind : 'neutral'), o ? o.label : String(outcome || 'Unknown'));
    b.dataset.outcome = String(outcome || '');
    return b;
  }

  function escalationRow(r) {
    const tr = el('tr', 'escalation');
    tr.dataset.id = String(r.id);
    tr.dataset.outcome = String(r.outcome || '');

    const when = el('td', 'esc-when');
    when.appendChild(timeEl(r.created_at, fullDate(r.created_at)));
    tr.appendChild(when);

    const bot = el('td', 'esc-bot');
    if (r.bot) bot.textContent = r.bot;
    else bot.appendChild(none());
    tr.appendChild(bot);

    const route = el('td', 'esc-route');
    if (r.flow) route.appendChild(el('span', 'esc-flow', r.flow));
    if (r.target) {
      if (r.flow) route.appendChild(document.createTextNode(' '));
      route.appendChild(el('span', r.flow ? 'esc-target muted' : 'esc-target', (r.flow ? '→ ' : '') + r.target));
    }
    if (!r.flow && !r.target) route.appendChild(none());
    tr.appendChild(route);

    const phone = el('td', 'esc-phone');
    if (r.phone) phone.textContent = r.phone;
    else phone.appendChild(none());
    tr.appendChild(phone);

    const outcome = el('td', 'esc-outcome');
    outcome.appendChild(outcomeBadge(r.outcome));
    if (r.reason && r.reason !== r.outcome) outcome.appendChild(el('span', 'esc-reason', String(r.reason).replace(/_/g, ' ')));
    tr.appendChild(outcome);

    const sip = el('td', 'num esc-sip');
    if (num(r.sip_status) !== null) sip.textContent = String(r.sip_status);
    else sip.appendChild(none());
    tr.appendChild(sip);

    tr.appendChild(secsCell(r.wait_secs));
    tr.appendChild(secsCell(r.talk_secs));

    const chat = el('td', 'esc-chat');
    if (r.conversation_id) {
      const open = el('button', 'btn btn-small btn-quiet open-conv', 'Open chat');
      open.type = 'button';
      open.setAttribute('aria-label', 'Open chat of the escalation to ' + (r.phone || 'the visitor') + ', ' + fullDate(r.created_at));
      open.addEventListener('click', () => {
        showTab('conversations');
        select(r.conversation_id);
        transcript.focus({ preventScroll: true });
      });
      chat.appendChild(open);
    }
    tr.appendChild(chat);
    return tr;
  }

  escForm.addEventListener('submit', (e) => {
    e.preventDefault();
    loadEscalations();
  });
  escForm.addEventListener('input', () => {
    updateCsvLink();
    if ($('esc-error').textContent) escValid();
  });
  escForm.addEventListener('change', updateCsvLink);
  $('esc-csv').addEventListener('click', (e) => {
    updateCsvLink();
    if (!escValid()) e.preventDefault();
  });
  $('esc-refresh').addEventListener('click', () => loadEscalations());
  updateCsvLink();

  // ---- queues and agents ----

  // 75 -> "1:15", 3725 -> "1:02:05".
  function duration(secs) {
    const s = Math.max(0, Math.floor(num(secs) || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const two = (n) => String(n).padStart(2, '0');
    return h ? h + ':' + two(m) + ':' + two(s % 60) : m + ':' + two(s % 60);
  }

  function queuesOpen() {
    return body.dataset.auth === 'in' && body.dataset.tab === 'queues';
  }

  // Fetch and show; while the tab stays open, again every few seconds.
  async function loadQueues() {
    clearTimeout(queuesTimer);
    const token = ++state.queuesToken;
    try {
      const data = await api('GET', '/v1/queues');
      if (token !== state.queuesToken) return;
      state.queues = data && Array.isArray(data.queues) ? data.queues : [];
      renderQueues();
    } catch (err) {
      if (token !== state.queuesToken) return;
      report('Could not load the queues: ', err);
    }
    if (token === state.queuesToken && queuesOpen()) queuesTimer = setTimeout(loadQueues, QUEUES_REFRESH_MS);
  }

  function renderQueues() {
    // A refresh rebuilds the cards: keep keyboard focus on the same button.
    const active = document.activeElement;
    const wrap = $('queues');
    const focused = active && wrap.contains(active) && active.dataset.action ? active : null;
    const frag = document.createDocumentFragment();
    let waiting = 0;
    for (const q of state.queues) {
      if (!q || typeof q.name !== 'string') continue;
      waiting += num(q.waiting) || 0;
      frag.appendChild(queueCard(q));
    }
    wrap.textContent = '';
    wrap.appendChild(frag);
    $('queues-empty').hidden = state.queues.length > 0;
    $('queues-summary').textContent =
      state.queues.length + (state.queues.length === 1 ? ' queue' : ' queues') + ' · ' + waiting + ' waiting';
    $('waiting-count').textContent = waiting ? String(waiting) : '';
    $('waiting-count').setAttribute('aria-label', waiting + ' waiting');
    if (focused) {
      const again = Array.from(wrap.querySelectorAll('button[data-action]')).find(
        (b) => b.dataset.queue === focused.dataset.queue && b.dataset.target === focused.dataset.target,
      );
      if (again) again.focus({ preventScroll: true });
    }
  }

  function stat(dl, key, label, value) {
    const d = el('div', 'q-stat');
    d.dataset.stat = key;
    d.appendChild(el('dt', null, label));
    d.appendChild(el('dd', null, value));
    dl.appendChild(d);
  }

  function queueCard(q) {
    const card = el('section', 'q-card');
    card.dataset.queue = q.name;
    const head = el('h3', 'q-name', q.name);
    head.id = 'queue-' + q.name.replace(/[^A-Za-z0-9_-]/g, '_');
    card.setAttribute('aria-labelledby', head.id);
    card.appendChild(head);

    const dl = el('dl', 'q-stats');
    const answered = num(q.answered) || 0;
    const within = num(q.answered_within_sla) || 0;
    stat(dl, 'waiting', 'Waiting', String(num(q.waiting) || 0) + (num(q.max_callers) !== null ? ' of ' + q.max_callers : ''));
    stat(dl, 'longest_wait', 'Longest wait', duration(q.longest_wait_secs));
    stat(
      dl,
      'sla',
      'Answered within ' + (num(q.sla_secs) !== null ? q.sla_secs + ' s' : 'SLA'),
      within + ' of ' + answered + (answered ? ' (' + Math.round((100 * within) / answered) + ' %)' : ''),
    );
    stat(dl, 'abandoned', 'Abandoned', String(num(q.abandoned) || 0));
    stat(dl, 'average_handle', 'Average handle time', duration(q.average_handle_secs));
    card.appendChild(dl);

    const table = el('table', 'esc-table q-agents');
    table.appendChild(el('caption', null, 'Agents of ' + q.name));
    const hr = el('tr');
    for (const h of ['Agent', 'State', 'In state', 'Answered']) {
      const th = el('th', h === 'In state' || h === 'Answered' ? 'num' : null, h);
      th.scope = 'col';
      hr.appendChild(th);
    }
    const operator = state.role === 'operator' || state.role === 'admin';
    if (operator) {
      const th = el('th', null);
      th.scope = 'col';
      th.appendChild(el('span', 'visually-hidden', 'Actions'));
      hr.appendChild(th);
    }
    table.createTHead().appendChild(hr);
    const tb = table.createTBody();
    for (const a of Array.isArray(q.agents) ? q.agents : []) {
      if (a && typeof a.target === 'string') tb.appendChild(agentRow(q, a, operator));
    }
    card.appendChild(table);
    return card;
  }

  function agentRow(q, a, operator) {
    const tr = el('tr', 'agent');
    tr.dataset.target = a.target;
    tr.dataset.state = String(a.state || '');
    const name = el('th', 'agent-name');
    name.scope = 'row';
    if (typeof a.display_name === 'string' && a.display_name) {
      name.appendChild(el('span', 'agent-display', a.display_name));
      name.appendChild(el('span', 'agent-target', a.target));
    } else {
      name.textContent = a.target;
    }
    tr.appendChild(name);
    const st = AGENT_STATES[a.state];
    const cell = el('td', 'agent-state');
    cell.appendChild(el('span', 'badge outcome outcome-' + (st ? st.kind : 'neutral'), st ? st.label : String(a.state || '?')));
    tr.appendChild(cell);
    tr.appendChild(el('td', 'num agent-time', duration(a.state_secs)));
    tr.appendChild(el('td', 'num', String(num(a.answered) || 0)));
    if (operator) {
      const td = el('td', 'agent-actions');
      const paused = a.state === 'paused';
      const btn = el('button', 'btn btn-small' + (paused ? ' btn-primary' : ''), paused ? 'Resume' : 'Pause');
      btn.type = 'button';
      btn.dataset.action = paused ? 'resume' : 'pause';
      btn.dataset.queue = q.name;
      btn.dataset.target = a.target;
      btn.setAttribute('aria-label', (paused ? 'Resume ' : 'Pause ') + (a.display_name || a.target));
      // A call in progress goes on; pausing waits until the agent is free.
      if (a.state === 'ringing' || a.state === 'busy') {
        btn.disabled = true;
        btn.title = 'On a call: pause when it ends';
      }
      btn.addEventListener('click', () => setAgentState(a.target, paused ? 'available' : 'paused', btn));
      td.appendChild(btn);
      tr.appendChild(td);
    }
    return tr;
  }

  async function setAgentState(target, wanted, btn) {
    if (btn.disabled) return;
    btn.disabled = true;
    clearConsoleError();
    try {
      await api('POST', '/v1/agents/state', { target, state: wanted });
    } catch (err) {
      report((wanted === 'paused' ? 'Pause' : 'Resume') + ' failed: ', err);
      btn.disabled = false;
      return;
    }
    loadQueues();
  }

  $('queues-refresh').addEventListener('click', () => loadQueues());

  // ---- tabs ----

  function showTab(name) {
    if (!TABS.includes(name)) return;
    if (state.role === 'viewer' && !VIEWER_TABS.includes(name)) return;
    body.dataset.tab = name;
    for (const t of TABS) {
      const on = t === name;
      const tab = $('tab-' + t);
      tab.setAttribute('aria-selected', on ? 'true' : 'false');
      tab.tabIndex = on ? 0 : -1;
      $('panel-' + t).hidden = !on;
    }
    if (name !== 'conversations') body.dataset.view = 'list';
    if (name === 'queues' && body.dataset.auth === 'in') loadQueues();
    else clearTimeout(queuesTimer);
    // The report is fetched when first looked at, not at sign-in.
    if (name === 'escalations' && !state.escLoaded && body.dataset.auth === 'in') loadEscalations();
  }
  for (const t of TABS) $('tab-' + t).addEventListener('click', () => showTab(t));
  // Arrow keys (and Home/End) move between tabs, as the tabs pattern expects.
  document.querySelector('.tabs').addEventListener('keydown', (e) => {
    const i = Math.max(0, TABS.indexOf(body.dataset.tab));
    let next;
    if (e.key === 'ArrowRight') next = TABS[(i + 1) % TABS.length];
    else if (e.key === 'ArrowLeft') next = TABS[(i - 1 + TABS.length) % TABS.length];
    else if (e.key === 'Home') next = TABS[0];
    else if (e.key === 'End') next = TABS[TABS.length - 1];
    else return;
    showTab(next);
    $('tab-' + next).focus();
    e.preventDefault();
  });

  // ---- ages tick ----

  setInterval(() => {
    if (body.dataset.auth !== 'in') return;
    for (const t of document.querySelectorAll('.conv time[data-at], .lead time[data-at]')) {
      t.textContent = ago(Number(t.dataset.at));
    }
  }, AGE_REFRESH_MS);

  // ---- start ----

  async function boot() {
    let res;
    try {
      res = await fetch('/v1/status', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch (_) {
      signedOut('Cannot reach the server. Reload to try again.');
      showConsoleError('Cannot reach the server. Reload to try again.');
      return;
    }
    if (res.status === 401) {
      signedOut('');
      return;
    }
    if (!res.ok) {
      // 403: the operator API is disabled (no token configured); 5xx: trouble.
      const { data, text } = await readBody(res);
      signedOut('');
      showConsoleError('The console is unavailable: ' + errorText(res, data, text));
      return;
    }
    const { data } = await readBody(res);
    await signedIn(data && typeof data.role === 'string' ? data.role : '');
  }

  boot();
})();
