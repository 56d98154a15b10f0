// crossline web chat client. Vanilla ES2020, no dependencies, no build step.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const body = document.body;
  const logEl = $('log');
  const scroller = $('scroller');
  const typingEl = $('typing');
  const statusEl = $('status');
  const form = $('composer');
  const input = $('composer-input');
  const label = $('composer-label');
  const sendBtn = $('composer-send');
  const errorEl = $('composer-error');
  const choicesEl = $('choices');

  const meta = document.querySelector('meta[name="crossline-conversation"]');
  const conversationId = meta ? meta.content : '';

  const BACKOFF_START_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const CONNECT_TIMEOUT_MS = 10000;
  // An answer with no echo after this long is assumed lost or rejected; let the user retry.
  const PENDING_TIMEOUT_MS = 6000;
  // A socket that closes sooner than this after opening doesn't reset the backoff,
  // so a server that accepts and immediately drops us isn't hammered.
  const STABLE_OPEN_MS = 3000;

  const VALIDATORS = {
    email: {
      test: (v) => /^[^\s@]+@[^\s@]+\.[^\s@]{2,}$/.test(v),
      message: 'Please enter a valid email address, like name@example.com.',
    },
    phone: {
      test: (v) => {
        if (!/^\+?[\d\s\-.()]+$/.test(v)) return false;
        const digits = v.replace(/\D/g, '').length;
        return digits >= 7 && digits <= 15;
      },
      message: 'Please enter a valid phone number (7 to 15 digits).',
    },
    number: {
      test: (v) => /^-?\d+([.,]\d+)?$/.test(v),
      message: 'Please enter a number, like 42 or 3.5.',
    },
    text: {
      test: (v) => v.length > 0,
      message: 'Please type an answer.',
    },
  };

  // ---- state ----
  const seen = new Set(); // ids already rendered (replays repeat events)
  let lastId = 0; // highest rendered id, sent in "resume"
  let maxVisitorId = 0; // a prompt is answered once a visitor message has a larger id
  let lastPrompt = null; // highest-id prompt seen
  let activePromptId = null; // prompt the composer is currently set up for
  let finished = false; // a "closed" event arrived: no more input, no reconnects
  let pending = null; // { prompt, timer } while waiting for the echo of an answer

  let sock = null;
  let everOpened = false;
  let attempt = 0;
  let retryTimer = 0;
  let connectTimer = 0;
  let openedAt = 0;
  const queue = []; // frames typed while disconnected, sent after the next resume

  // ---- rendering ----

  const timeFmt = (() => {
    try {
      return new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
    } catch (_) {
      return null;
    }
  })();

  function formatTime(ms) {
    if (typeof ms !== 'number' || !isFinite(ms) || !timeFmt) return '';
    try {
      return timeFmt.format(new Date(ms));
    } catch (_) {
      return '';
    }
  }

  // Plain text -> DOM nodes with http(s) URLs turned into safe links. Never uses innerHTML.
  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

  function appendLinkified(parent, text) {
    let last = 0;
    URL_RE.lastIndex = 0;
    let m;
    while ((m = URL_RE.exec(text)) !== null) {
      let url = m[0];
      // Trailing punctuation usually belongs to the sentence, not the URL.
      let trimmed = url.replace(/[.,;:!?'"]+$/, '');
      // Drop an unbalanced closing paren, e.g. "(see https://x.example/a)".
      while (trimmed.endsWith(')') && count(trimmed, '(') < count(trimmed, ')')) {
        trimmed = trimmed.slice(0, -1);
      }
      url = trimmed;
      const start = m.index;
      const end = start + url.length;
      let href = null;
      try {
        const u = new URL(url);
        if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
      } catch (_) {
        href = null;
      }
      if (start > last) parent.appendChild(document.createTextNode(text.slice(last, start)));
      if (href) {
        const a = document.createElement('a');
        a.href = href;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        a.textContent = url;
        parent.appendChild(a);
      } else {
        parent.appendChild(document.createTextNode(url));
      }
      last = end;
      URL_RE.lastIndex = end;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function count(s, ch) {
    let n = 0;
    for (const c of s) if (c === ch) n++;
    return n;
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  // Insert keeping id order, so a late/out-of-order event still lands in the right place.
  function insertById(el, id) {
    if (id > lastId || !logEl.lastElementChild) {
      logEl.appendChild(el);
      return;
    }
    const later = Array.from(logEl.children).find((c) => Number(c.dataset.id) > id);
    logEl.insertBefore(el, later || null);
  }

  function renderBubble(id, role, text, at, extraClass) {
    const el = document.createElement('div');
    el.className = 'msg ' + role + (extraClass ? ' ' + extraClass : '');
    el.dataset.id = String(id);
    const t = formatTime(at);
    if (t) el.dataset.time = t;
    const bubble = document.createElement('div');
    bubble.className = 'bubble';
    appendLinkified(bubble, String(text == null ? '' : text));
    el.appendChild(bubble);
    insertById(el, id);
    return el;
  }

  function renderNotice(text) {
    const p = document.createElement('p');
    p.className = 'notice';
    p.textContent = String(text == null ? '' : text);
    logEl.appendChild(p);
  }

  function setTyping(on) {
    typingEl.hidden = !on;
  }

  // ---- composer ----

  function inputKind(prompt) {
    if (!prompt) return '';
    const k = prompt.input;
    if (k === 'choice') {
      return Array.isArray(prompt.choices) && prompt.choices.length ? 'choice' : 'text';
    }
    return k === 'email' || k === 'phone' || k === 'number' || k === 'text' ? k : 'text';
  }

  function currentPrompt() {
    if (finished || !lastPrompt) return null;
    return maxVisitorId > lastPrompt.id ? null : lastPrompt;
  }

  function clearError() {
    errorEl.textContent = '';
    input.removeAttribute('aria-invalid');
  }

  function showError(msg) {
    errorEl.textContent = msg;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }

  function configureInput(kind, prompt) {
    const set = (type, mode, ac, ph) => {
      input.type = type;
      input.setAttribute('inputmode', mode);
      input.setAttribute('autocomplete', ac);
      input.placeholder = (prompt && prompt.placeholder) || ph;
    };
    input.setAttribute('autocapitalize', kind === 'email' || kind === 'phone' ? 'off' : 'sentences');
    input.spellcheck = kind === 'text' || kind === '';
    switch (kind) {
      case 'email':
        set('email', 'email', 'email', 'name@example.com');
        break;
      case 'phone':
        set('tel', 'tel', 'tel', 'Phone number');
        break;
      case 'number':
        set('text', 'decimal', 'off', 'Number');
        break;
      case 'text':
        set('text', 'text', 'off', 'Type your answer');
        break;
      default:
        set('text', 'text', 'off', 'Type a message');
    }
    label.textContent = prompt ? String(prompt.text || 'Your answer') : 'Message';
  }

  function renderChoices(prompt) {
    choicesEl.textContent = '';
    choicesEl.setAttribute('aria-label', String(prompt.text || 'Choices'));
    for (const c of prompt.choices) {
      if (!c || typeof c !== 'object') continue;
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'choice';
      const value = String(c.value == null ? '' : c.value);
      b.dataset.value = value;
      b.textContent = String(c.label == null ? value : c.label);
      b.addEventListener('click', () => {
        if (b.disabled) return;
        b.classList.add('chosen');
        sendAnswer(prompt.id, value);
      });
      choicesEl.appendChild(b);
    }
    choicesEl.hidden = false;
  }

  // Re-derive the composer from state. Rebuilds only when the active prompt changes,
  // so focus and typed text survive unrelated events.
  function updateComposer() {
    if (finished) {
      if (form.dataset.input !== '' || !input.disabled) {
        form.dataset.input = '';
        choicesEl.textContent = '';
        choicesEl.hidden = true;
        configureInput('', null);
        input.value = '';
        input.placeholder = 'This conversation has ended';
        clearError();
      }
      input.disabled = true;
      sendBtn.disabled = true;
      return;
    }

    const prompt = currentPrompt();
    const id = prompt ? prompt.id : null;
    if (id !== activePromptId) {
      const hadFocus = form.contains(document.activeElement);
      const idle = !document.activeElement || document.activeElement === document.body;
      activePromptId = id;
      const kind = inputKind(prompt);
      form.dataset.input = kind;
      clearError();
      configureInput(kind === 'choice' ? '' : kind, kind === 'choice' ? null : prompt);
      if (kind === 'choice') {
        renderChoices(prompt);
      } else {
        choicesEl.textContent = '';
        choicesEl.hidden = true;
      }
      // Follow the conversation with focus only if the user was already in the composer
      // (or nowhere), so we never yank focus away from what they're reading.
      if (hadFocus || idle) {
        if (kind === 'choice') {
          const first = choicesEl.querySelector('button.choice');
          if (first && hadFocus) first.focus({ preventScroll: true });
        } else if (prompt || hadFocus) {
          input.focus({ preventScroll: true });
        }
      }
    }

    const waiting = !!pending && pending.prompt === activePromptId && activePromptId !== null;
    input.disabled = false;
    sendBtn.disabled = waiting;
    for (const b of choicesEl.querySelectorAll('button.choice')) b.disabled = waiting;
    if (!waiting) {
      for (const b of choicesEl.querySelectorAll('button.choice.chosen')) b.classList.remove('chosen');
    }
  }

  function setPending(promptId) {
    clearPending();
    pending = { prompt: promptId, timer: 0 };
  }

  function armPendingTimer() {
    if (!pending || pending.timer) return;
    const p = pending;
    p.timer = setTimeout(() => {
      if (pending === p) {
        pending = null;
        updateComposer();
      }
    }, PENDING_TIMEOUT_MS);
  }

  function clearPending() {
    if (pending && pending.timer) clearTimeout(pending.timer);
    pending = null;
  }

  function sendAnswer(promptId, value) {
    if (finished) return;
    setPending(promptId);
    transmit({ type: 'answer', prompt: promptId, value });
    updateComposer();
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (finished || sendBtn.disabled) return;
    const prompt = currentPrompt();
    const kind = inputKind(prompt);
    if (kind === 'choice') return;
    const value = input.value.trim();
    if (prompt) {
      const v = VALIDATORS[kind] || VALIDATORS.text;
      if (!v.test(value)) {
        showError(v.message);
        return;
      }
      clearError();
      input.value = '';
      sendAnswer(prompt.id, value);
    } else {
      if (!value) return;
      clearError();
      input.value = '';
      transmit({ type: 'text', text: value });
    }
    input.focus({ preventScroll: true });
    scrollToBottom();
  });

  input.addEventListener('input', () => {
    if (input.getAttribute('aria-invalid')) clearError();
  });

  // ---- protocol ----

  function handleEvent(ev) {
    if (!ev || typeof ev !== 'object' || typeof ev.type !== 'string') return;
    const hasId = Number.isSafeInteger(ev.id) && ev.id > 0;
    const stick = nearBottom();

    switch (ev.type) {
      case 'message': {
        if (!hasId || seen.has(ev.id)) return;
        const role = ev.role === 'visitor' || ev.role === 'system' ? ev.role : 'bot';
        remember(ev.id);
        renderBubble(ev.id, role, ev.text, ev.at);
        if (role === 'visitor') {
          if (ev.id > maxVisitorId) maxVisitorId = ev.id;
          if (pending && ev.id > pending.prompt) clearPending();
        } else if (role === 'bot') {
          setTyping(false);
        }
        updateComposer();
        break;
      }
      case 'prompt': {
        if (!hasId || seen.has(ev.id)) return;
        remember(ev.id);
        renderBubble(ev.id, 'bot', ev.text, ev.at, 'prompt');
        setTyping(false);
        if (!lastPrompt || ev.id > lastPrompt.id) {
          lastPrompt = {
            id: ev.id,
            input: ev.input,
            text: ev.text,
            placeholder: typeof ev.placeholder === 'string' ? ev.placeholder : '',
            choices: Array.isArray(ev.choices) ? ev.choices : [],
          };
        }
        updateComposer();
        break;
      }
      case 'typing':
        if (!finished) setTyping(ev.on === true);
        break;
      case 'closed': {
        if (hasId && !seen.has(ev.id)) {
          remember(ev.id);
          renderBubble(ev.id, 'system', ev.text || 'This conversation has ended.', ev.at, 'closed');
        } else if (!hasId && !finished) {
          renderNotice(ev.text || 'This conversation has ended.');
        }
        finish();
        break;
      }
      case 'error':
        renderNotice(ev.text || 'Something went wrong.');
        // An error usually means our last answer was rejected: let the user try again.
        if (pending) {
          clearPending();
          updateComposer();
        }
        break;
      default:
        return; // unknown types are ignored
    }
    if (stick) scrollToBottom();
  }

  function remember(id) {
    seen.add(id);
    if (id > lastId) lastId = id;
  }

  function finish() {
    finished = true;
    clearPending();
    queue.length = 0;
    setTyping(false);
    clearTimeout(retryTimer);
    clearTimeout(connectTimer);
    setState('closed');
    updateComposer();
    if (sock) {
      const s = sock;
      sock = null;
      try {
        s.close(1000, 'closed');
      } catch (_) {
        /* already closing */
      }
    }
  }

  // ---- connection ----

  function setState(state) {
    body.dataset.state = state;
    let text = '';
    if (state === 'connecting') {
      text = everOpened ? 'Reconnecting…' : 'Connecting…';
      if (queue.length) text += ' Your message will be sent when the connection is back.';
    }
    if (statusEl.textContent !== text) statusEl.textContent = text;
  }

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return proto + '//' + location.host + '/chat/ws?c=' + encodeURIComponent(conversationId);
  }

  function isLive(s) {
    return !!s && (s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING);
  }

  function transmit(frame) {
    if (sock && sock.readyState === WebSocket.OPEN) {
      try {
        sock.send(JSON.stringify(frame));
        if (frame.type === 'answer') armPendingTimer();
        return;
      } catch (err) {
        console.warn('chat: send failed, queueing', err);
      }
    }
    queue.push(frame);
    if (body.dataset.state === 'connecting') setState('connecting');
  }

  function connect() {
    if (finished) return;
    clearTimeout(retryTimer);
    clearTimeout(connectTimer);
    setState('connecting');

    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (err) {
      console.warn('chat: cannot open websocket', err);
      scheduleReconnect();
      return;
    }
    sock = ws;

    // A handshake that hangs (captive portal, half-dead mobile link) would otherwise never retry.
    connectTimer = setTimeout(() => {
      if (sock === ws && ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);

    ws.onopen = () => {
      if (sock !== ws) return;
      clearTimeout(connectTimer);
      openedAt = Date.now();
      everOpened = true;
      // Protocol: resume must be the first frame on every connection.
      ws.send(JSON.stringify({ type: 'resume', after: lastId }));
      const backlog = queue.splice(0, queue.length);
      for (const frame of backlog) transmit(frame);
      setState('open');
    };

    ws.onmessage = (e) => {
      if (sock !== ws || typeof e.data !== 'string') return;
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      try {
        handleEvent(ev);
      } catch (err) {
        console.error('chat: failed to handle event', err, ev);
      }
    };

    ws.onclose = () => {
      clearTimeout(connectTimer);
      if (sock !== ws) return;
      sock = null;
      setTyping(false);
      if (openedAt && Date.now() - openedAt >= STABLE_OPEN_MS) attempt = 0;
      openedAt = 0;
      if (!finished) scheduleReconnect();
    };

    ws.onerror = () => {
      /* a close event always follows; reconnect is handled there */
    };
  }

  function scheduleReconnect() {
    if (finished) return;
    setState('connecting');
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
    const delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.75 + Math.random() * 0.5)));
    attempt++;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  // Come back immediately when the network or the tab returns, instead of waiting out the backoff.
  function reconnectNow() {
    if (finished || isLive(sock)) return;
    attempt = 0;
    connect();
  }

  window.addEventListener('online', reconnectNow);
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) reconnectNow();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });

  // ---- iOS keyboard: size the app to the visual viewport so the composer stays visible ----
  if (window.visualViewport && /iP(hone|ad|od)/.test(navigator.userAgent)) {
    const vv = window.visualViewport;
    const fit = () => {
      if (vv.scale > 1.01) return; // pinch-zoomed: leave layout alone
      const stick = nearBottom();
      document.documentElement.classList.add('vv');
      document.documentElement.style.setProperty('--vvh', vv.height + 'px');
      window.scrollTo(0, 0);
      if (stick) scrollToBottom();
    };
    vv.addEventListener('resize', fit);
    fit();
  }

  // ---- service worker (PWA shell cache) ----
  if ('serviceWorker' in navigator) {
    window.addEventListener('load', () => {
      navigator.serviceWorker.register('/sw.js').catch((err) => {
        console.warn('chat: service worker registration failed', err);
      });
    });
  }

  updateComposer();
  connect();
})();
