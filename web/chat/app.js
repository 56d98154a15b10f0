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
  const switchBar = $('switch-bar');
  const switchButtons = { sms: $('switch-sms'), whatsapp: $('switch-whatsapp') };
  const switchPanel = $('switch-panel');
  const switchTitle = $('switch-title');
  const switchPhone = $('switch-phone');
  const switchGo = $('switch-go');
  const switchCancel = $('switch-cancel');
  const switchError = $('switch-error');
  const switchConfirm = $('switch-confirm');
  const switchConfirmText = $('switch-confirm-text');
  const switchCountdown = $('switch-countdown');
  const revertBtn = $('switch-revert');
  const movedEl = $('moved');
  const movedText = $('moved-text');
  const continueBtn = $('continue-here');
  const switchLive = $('switch-live');

  const meta = document.querySelector('meta[name="crossline-conversation"]');
  const conversationId = meta ? meta.content : '';

  // Channels a visitor may move this chat to ("sms,whatsapp", or "" when none).
  const CHANNEL_LABELS = { web: 'web chat', sms: 'SMS', whatsapp: 'WhatsApp' };
  const channelsMeta = document.querySelector('meta[name="crossline-channels"]');
  const available = new Set(
    String((channelsMeta && channelsMeta.content) || '')
      .split(',')
      .map((c) => c.trim().toLowerCase())
      .filter((c) => c === 'sms' || c === 'whatsapp')
  );

  const BACKOFF_START_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const CONNECT_TIMEOUT_MS = 10000;
  // An answer with no echo after this long is assumed lost or rejected; let the user retry.
  const PENDING_TIMEOUT_MS = 6000;
  // A socket that closes sooner than this after opening doesn't reset the backoff,
  // so a server that accepts and immediately drops us isn't hammered.
  const STABLE_OPEN_MS = 3000;
  // A switch request with no answer after this long lets the visitor try again
  // (the server sends the welcome message first, which can take a while).
  const SWITCH_TIMEOUT_MS = 30000;
  // A channel event this soon after our own switch request is its answer: live, not a replay.
  const SWITCH_EXPECT_MS = 60000;
  // Our echoed text arriving this soon after we sent it tells us the server's clock.
  const ECHO_CLOCK_MS = 5000;

  const VALIDATORS = {
    email: {
      test: (v) => /^[^\s@]+@[^\s@]+\.[^\s@]{2,}$/.test(v),
      message: 'Please enter a valid email address, like name@example.com.',
    },
    phone: {
      test: (v) => validPhone(v),
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

  // Loose on purpose: the server normalises to E.164 and has the last word.
  // 7 to 15 digits, optionally after "+" or "00"; spaces, dashes, dots and parentheses allowed.
  function validPhone(v) {
    let rest = String(v || '').trim();
    if (rest.startsWith('+')) rest = rest.slice(1);
    else if (rest.startsWith('00')) rest = rest.slice(2);
    if (!/^[\d\s\-.()]+$/.test(rest)) return false;
    const digits = rest.replace(/\D/g, '').length;
    return digits >= 7 && digits <= 15;
  }

  // ---- state ----
  const seen = new Set(); // ids already rendered (replays repeat events)
  let lastId = 0; // highest rendered id, sent in "resume"
  let maxVisitorId = 0; // a prompt is answered once a visitor message has a larger id
  let lastPrompt = null; // highest-id prompt seen
  let activePromptId = null; // prompt the composer is currently set up for
  let finished = false; // a "closed" event arrived: no more input, no reconnects
  let pending = null; // { prompt, timer } while waiting for the echo of an answer
  const visitorIds = []; // ids of visitor messages (an action prompt's answer restores the prompt it interrupted)

  // Where the conversation is carried, from the highest-id channel event.
  let channel = 'web';
  let channelEventId = 0;
  let channelAddress = null; // masked phone number, for display
  let panel = null; // { channel, opener, busy, timer } while #switch-panel is open
  let revert = null; // { id, revertUntil, deadline (performance.now ms), ticker, tookFocus } while undo is possible
  let switchRequest = null; // { via, afterId, sentAt } our last switch/revert/action answer awaiting its answer
  let continueTimer = 0;
  let clockOffset = null; // local wall clock minus server clock (ms), once learned
  let lastSentAt = 0; // Date.now() when our last text/answer went out

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
    // The operator's "visitor action command" always asks for a phone number.
    if (prompt.action) return 'phone';
    const k = prompt.input;
    if (k === 'choice') {
      return Array.isArray(prompt.choices) && prompt.choices.length ? 'choice' : 'text';
    }
    return k === 'email' || k === 'phone' || k === 'number' || k === 'text' ? k : 'text';
  }

  function currentPrompt() {
    if (finished || !lastPrompt) return null;
    const p = lastPrompt;
    if (maxVisitorId < p.id) return p;
    // Answering an action prompt hands the floor back to the prompt it interrupted
    // (the server restores it), until that one is answered too.
    if (p.action && p.suspended) {
      let after = 0;
      for (const v of visitorIds) if (v > p.id) after++;
      if (after === 1) return p.suspended;
    }
    return null;
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

    // Moved to a phone: the conversation continues there, the composer rests.
    if (channel !== 'web') {
      if (form.dataset.input !== '' || activePromptId !== undefined) {
        form.dataset.input = '';
        choicesEl.textContent = '';
        choicesEl.hidden = true;
        configureInput('', null);
        clearError();
        activePromptId = undefined; // rebuild for the current prompt on the way back
      }
      input.placeholder = 'Continuing on ' + (CHANNEL_LABELS[channel] || 'your phone');
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
    // The switch panel blocks the text area until it is sent or cancelled.
    const blocked = !!panel;
    input.disabled = blocked;
    sendBtn.disabled = waiting || blocked;
    for (const b of choicesEl.querySelectorAll('button.choice')) b.disabled = waiting || blocked;
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
    if (finished || sendBtn.disabled || panel || channel !== 'web') return;
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
      if (prompt.action) requestSwitch('prompt');
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

  // ---- chat switch: move the conversation to SMS / WhatsApp, undo, come back ----

  const PHONE_MESSAGE = 'Please enter a valid phone number (7 to 15 digits), e.g. +34 600 123 456.';

  function isTime(v) {
    return typeof v === 'number' && isFinite(v) && v > 0;
  }

  function channelLabel(ch) {
    return CHANNEL_LABELS[ch] || String(ch);
  }

  function where() {
    return channelLabel(channel) + (channelAddress ? ' (' + channelAddress + ')' : '');
  }

  // Polite announcement for notices that appear outside the log.
  let announceTimer = 0;
  function announce(text) {
    clearTimeout(announceTimer);
    switchLive.textContent = ''; // cleared first so the same words are read again
    announceTimer = setTimeout(() => {
      switchLive.textContent = text;
    }, 60);
  }

  // Remember what we asked for, so its answer (a channel event) is known to be live, not a replay.
  function requestSwitch(via) {
    switchRequest = { via, afterId: lastId, sentAt: performance.now() };
  }

  // Show the switch buttons for the configured channels while the chat is on the web and open.
  function updateSwitchUi() {
    const onWeb = channel === 'web';
    let any = false;
    for (const ch of Object.keys(switchButtons)) {
      const b = switchButtons[ch];
      if (!b) continue;
      const show = !finished && onWeb && available.has(ch);
      b.hidden = !show;
      b.disabled = !!(panel && panel.busy);
      b.setAttribute('aria-expanded', panel && panel.channel === ch ? 'true' : 'false');
      if (show) any = true;
    }
    switchBar.hidden = !any;
  }

  function clearSwitchError() {
    switchError.textContent = '';
    switchPhone.removeAttribute('aria-invalid');
  }

  function showSwitchError(msg) {
    switchError.textContent = msg;
    switchPhone.setAttribute('aria-invalid', 'true');
    switchPhone.focus();
  }

  function setPanelBusy(on) {
    if (panel) panel.busy = on;
    switchGo.disabled = on;
    switchPhone.readOnly = on;
    switchGo.textContent = on ? 'Sending…' : 'Send';
    if (on) switchPanel.setAttribute('aria-busy', 'true');
    else switchPanel.removeAttribute('aria-busy');
  }

  function openPanel(ch, opener) {
    if (finished || channel !== 'web' || !available.has(ch)) return;
    if (panel && panel.busy) return;
    if (panel && panel.channel === ch) {
      switchPhone.focus();
      return;
    }
    panel = { channel: ch, opener: opener || null, busy: false, timer: 0, code: false };
    setPanelMode(false);
    switchPanel.dataset.channel = ch;
    switchTitle.textContent = ch === 'whatsapp' ? 'Continue on WhatsApp' : 'Continue by SMS';
    setPanelBusy(false);
    clearSwitchError();
    switchPanel.hidden = false;
    updateSwitchUi();
    updateComposer(); // blocks the text area while the panel is open
    switchPhone.focus();
  }

  // restoreFocus: back to the button that opened the panel (Cancel / Escape).
  function closePanel(restoreFocus) {
    if (!panel) return;
    const opener = panel.opener;
    clearTimeout(panel.timer);
    setPanelBusy(false);
    panel = null;
    switchPanel.hidden = true;
    clearSwitchError();
    updateSwitchUi();
    updateComposer();
    if (restoreFocus) {
      if (opener && !opener.hidden && !opener.disabled) opener.focus();
      else if (!input.disabled) input.focus({ preventScroll: true });
    }
  }

  switchPanel.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!panel || panel.busy || finished) return;
    const value = switchPhone.value.trim();
    if (panel.code ? !/^[0-9]{4,8}$/.test(value) : !validPhone(value)) {
      showSwitchError(panel.code ? 'Please type the code from the message we sent.' : PHONE_MESSAGE);
      return;
    }
    clearSwitchError();
    const p = panel;
    setPanelBusy(true);
    updateSwitchUi();
    requestSwitch('panel');
    if (p.code) transmit({ type: 'switch', channel: p.channel, code: value });
    else transmit({ type: 'switch', channel: p.channel, phone: value });
    p.timer = setTimeout(() => {
      if (panel !== p || !p.busy) return;
      setPanelBusy(false);
      updateSwitchUi();
      showSwitchError('No answer yet. Please check your connection and try again.');
    }, SWITCH_TIMEOUT_MS);
  });

  switchPhone.addEventListener('input', () => {
    if (switchPhone.getAttribute('aria-invalid')) clearSwitchError();
  });

  switchCancel.addEventListener('click', () => closePanel(true));

  switchPanel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && panel) {
      e.preventDefault();
      closePanel(true);
    }
  });

  for (const ch of Object.keys(switchButtons)) {
    const b = switchButtons[ch];
    if (b) b.addEventListener('click', () => openPanel(ch, b));
  }

  // The latest channel event: where the conversation is now.
  function applyChannel(ev, ch) {
    const receivedWall = Date.now();
    const receivedMono = performance.now();
    const req = switchRequest;
    const answered = !!req && ev.id > req.afterId && receivedMono - req.sentAt < SWITCH_EXPECT_MS;
    if (answered) {
      switchRequest = null;
      if (isTime(ev.at)) clockOffset = receivedWall - ev.at;
    }
    // Follow with focus only if the visitor was busy with the chat, never on a quiet replay.
    const ae = document.activeElement;
    const takeFocus =
      !!panel ||
      (!!ae && ae !== body && (switchPanel.contains(ae) || movedEl.contains(ae) || switchConfirm.contains(ae) || form.contains(ae))) ||
      (answered && (!ae || ae === body));

    channelEventId = ev.id;
    channel = ch;
    channelAddress = typeof ev.address === 'string' && ev.address ? ev.address : null;
    body.dataset.channel = ch;
    clearRevert();
    hideMoved();
    if (panel) closePanel(false);
    updateSwitchUi();
    updateComposer();

    if (ch === 'web') {
      if (takeFocus && !finished) input.focus({ preventScroll: true });
      return;
    }

    let deadline = 0;
    if (isTime(ev.revert_until) && isTime(ev.at) && ev.revert_until > ev.at) {
      // The window's length by the server's own clock, counted from when it reached us:
      // the two clocks never meet, so skew doesn't matter.
      deadline = receivedMono + (ev.revert_until - ev.at);
      if (!answered) {
        // Not the answer to our own request: perhaps an old switch replayed after a reload.
        // Our wall clock (corrected once we know the server's) bounds it as well.
        const offset = clockOffset == null ? 0 : clockOffset;
        deadline = Math.min(deadline, receivedMono + (ev.revert_until + offset - receivedWall));
      }
    }
    if (deadline - receivedMono > 500) startRevert(ev, deadline, takeFocus);
    else showMoved(takeFocus);
  }

  function startRevert(ev, deadline, takeFocus) {
    revert = { id: ev.id, revertUntil: ev.revert_until, deadline, ticker: 0, tookFocus: !!takeFocus };
    switchConfirmText.textContent =
      'Your chat is moving to ' + where() + '. Changed your mind? You can revert it for a few seconds.';
    switchCountdown.textContent = '';
    revertBtn.disabled = false;
    revertBtn.hidden = false;
    switchConfirm.hidden = false;
    tickRevert();
    if (!revert) return; // already over
    revert.ticker = setInterval(tickRevert, 250);
    announce('You can revert the switch for ' + Math.ceil((deadline - performance.now()) / 1000) + ' seconds.');
    if (takeFocus) revertBtn.focus({ preventScroll: true });
  }

  function tickRevert() {
    if (!revert) return;
    const left = revert.deadline - performance.now();
    if (left <= 0) {
      endRevert();
      return;
    }
    const text = Math.ceil(left / 1000) + ' s';
    if (switchCountdown.textContent !== text) switchCountdown.textContent = text;
  }

  // A later event stamped `at` shows the server's clock is at least there.
  function tightenRevert(at) {
    const deadline = performance.now() + (revert.revertUntil - at);
    if (deadline < revert.deadline) {
      revert.deadline = deadline;
      tickRevert();
    }
  }

  function clearRevert() {
    if (revert) clearInterval(revert.ticker);
    revert = null;
    switchConfirm.hidden = true;
    revertBtn.hidden = true;
    switchCountdown.textContent = '';
  }

  // The undo window is over: the conversation carries on on the phone.
  function endRevert() {
    const ae = document.activeElement;
    const hadFocus =
      !!revert && (switchConfirm.contains(ae) || ((!ae || ae === body) && (revert.tookFocus || revertBtn.disabled)));
    clearRevert();
    showMoved(hadFocus);
  }

  function showMoved(takeFocus) {
    if (finished || channel === 'web') return;
    const text = 'This conversation has moved to ' + where() + ' and continues on your phone.';
    movedText.textContent = text;
    clearTimeout(continueTimer);
    continueBtn.disabled = false;
    movedEl.hidden = false;
    announce(text);
    if (takeFocus) continueBtn.focus({ preventScroll: true });
  }

  function hideMoved() {
    clearTimeout(continueTimer);
    continueBtn.disabled = false;
    movedEl.hidden = true;
  }

  revertBtn.addEventListener('click', () => {
    if (!revert || revertBtn.disabled || finished) return;
    revertBtn.disabled = true;
    requestSwitch('revert');
    transmit({ type: 'revert' });
  });

  continueBtn.addEventListener('click', () => {
    if (finished || channel === 'web' || continueBtn.disabled) return;
    continueBtn.disabled = true;
    requestSwitch('web');
    transmit({ type: 'switch', channel: 'web' });
    clearTimeout(continueTimer);
    continueTimer = setTimeout(() => {
      continueBtn.disabled = false;
    }, SWITCH_TIMEOUT_MS);
  });

  // The server refused a switch, a revert or a "continue here" (its text is fit to show).
  const switchPhoneLabel = $('switch-phone-label');

  // The panel asks for a phone number, or (code: true) for the code sent to it.
  function setPanelMode(code) {
    if (panel) panel.code = code;
    switchPhone.value = '';
    if (code) {
      switchPhoneLabel.textContent = 'The code we sent you';
      switchPhone.type = 'text';
      switchPhone.inputMode = 'numeric';
      switchPhone.autocomplete = 'one-time-code';
    } else {
      switchPhoneLabel.textContent = 'Your mobile number';
      switchPhone.type = 'tel';
      switchPhone.inputMode = 'tel';
      switchPhone.autocomplete = 'tel';
    }
  }

  // A code went to the phone: the visitor types it back to finish the move.
  function switchCodeSent(ch, text) {
    switchRequest = null;
    if (!panel || panel.channel !== ch) openPanel(ch, null);
    if (!panel) {
      renderNotice(text);
      return;
    }
    clearTimeout(panel.timer);
    setPanelBusy(false);
    setPanelMode(true);
    updateSwitchUi();
    switchError.textContent = text;
    switchPhone.removeAttribute('aria-invalid');
    switchPhone.focus();
    announce(text);
  }

  function switchFailed(text) {
    const via = switchRequest ? switchRequest.via : null;
    switchRequest = null;
    if (panel && (panel.busy || via === 'panel')) {
      clearTimeout(panel.timer);
      setPanelBusy(false);
      updateSwitchUi();
      showSwitchError(text);
      return;
    }
    renderNotice(text);
    if (via === 'revert' && revert) {
      endRevert(); // too late: the switch stands
    } else if (via === 'web' && channel !== 'web' && !movedEl.hidden) {
      clearTimeout(continueTimer);
      continueBtn.disabled = false;
      continueBtn.focus({ preventScroll: true });
    }
  }

  // The conversation is over: nothing to switch, undo or continue.
  function endSwitchUi() {
    if (panel) {
      clearTimeout(panel.timer);
      setPanelBusy(false);
      panel = null;
      switchPanel.hidden = true;
      clearSwitchError();
    }
    clearRevert();
    hideMoved();
    switchRequest = null;
    updateSwitchUi();
  }

  // ---- web call ("Call us"): WebRTC audio, WHIP-style signalling over HTTP ----
  //
  // POST /chat/call?c=<id> with the complete SDP offer (no trickle ICE); the answer
  // comes back with a Location to DELETE on hang-up. The chat cookie authenticates.

  const callUsBtn = $('call-us');
  const callPanel = $('call-panel');
  const callStatus = $('call-status');
  const callTime = $('call-time');
  const callMute = $('call-mute');
  const callHangup = $('call-hangup');
  const callClose = $('call-close');
  const callAudio = $('call-audio');

  const webrtcMeta = document.querySelector('meta[name="crossline-webrtc"]');
  const webrtcOn = !!webrtcMeta && String(webrtcMeta.content || '').trim().toLowerCase() === 'on';
  const webrtcSupported = typeof window.RTCPeerConnection === 'function';

  // Non-trickle: the offer goes out once gathering is done, or after this long with what we have.
  const ICE_GATHER_TIMEOUT_MS = 2000;
  // Media that hasn't connected after this long won't: give the visitor a clear answer.
  const CALL_CONNECT_TIMEOUT_MS = 20000;
  // Server error bodies are shown to the visitor; keep a runaway one readable.
  const CALL_ERROR_MAX = 300;

  // For browser tests: the live RTCPeerConnection (getStats), or null.
  const callHandle = { pc: null };
  window.crosslineCall = callHandle;

  let call = null; // { pc, stream, location, deleted, ended, connected, startedAt, connectTimer, ticker }
  let callState = 'idle'; // idle | connecting | connected | ended
  let callMuted = false;

  function setCallStatus(text, isError) {
    // Errors interrupt (alert); progress is polite. Role first, so the new words use it.
    const role = isError ? 'alert' : 'status';
    if (callStatus.getAttribute('role') !== role) {
      callStatus.setAttribute('role', role);
      callStatus.setAttribute('aria-live', isError ? 'assertive' : 'polite');
    }
    if (isError) callStatus.dataset.kind = 'error';
    else delete callStatus.dataset.kind;
    callStatus.textContent = text;
  }

  function setCallState(state) {
    callState = state;
    body.dataset.call = state;
    updateCallUi();
  }

  // "Call us" while the chat is open and no call is under way; the panel while there is
  // a call, or its outcome until the visitor closes it.
  function updateCallUi() {
    const busy = callState === 'connecting' || callState === 'connected';
    callUsBtn.hidden = !(webrtcOn && webrtcSupported && !finished && !busy);
    callUsBtn.disabled = busy;
    callUsBtn.setAttribute('aria-expanded', callState === 'idle' ? 'false' : 'true');
    callPanel.hidden = callState === 'idle';
    callPanel.dataset.call = callState;
    callMute.hidden = !busy;
    callHangup.hidden = !busy;
    callHangup.disabled = !busy;
    callClose.hidden = callState !== 'ended';
    callMute.setAttribute('aria-pressed', callMuted ? 'true' : 'false');
    callTime.hidden = !(call && call.startedAt);
  }

  function formatDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return h ? h + ':' + String(m).padStart(2, '0') + ':' + ss : m + ':' + ss;
  }

  function tickCall() {
    if (!call || !call.startedAt) return;
    const text = formatDuration(performance.now() - call.startedAt);
    if (callTime.textContent !== text) callTime.textContent = text;
  }

  function micErrorText(err) {
    const name = err && err.name;
    if (name === 'NotAllowedError' || name === 'PermissionDeniedError' || name === 'SecurityError') {
      return 'Microphone access was blocked. Allow the microphone for this site in your browser and try again.';
    }
    if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
      return 'No microphone was found. Connect one and try again.';
    }
    if (name === 'NotReadableError' || name === 'TrackStartError' || name === 'AbortError') {
      return 'Your microphone could not be started. It may be in use by another app.';
    }
    return 'Your microphone could not be used. Please try again.';
  }

  // The server's reason, fit to show: text, or JSON {error}.
  async function callErrorText(res) {
    let text = '';
    try {
      text = (await res.text()).trim();
    } catch (_) {
      text = '';
    }
    if (text.startsWith('{')) {
      try {
        const j = JSON.parse(text);
        text = j && typeof j.error === 'string' ? j.error.trim() : '';
      } catch (_) {
        /* not JSON after all: show it as text */
      }
    }
    if (text.startsWith('<')) text = ''; // an HTML error page from a proxy says nothing useful
    if (text.length > CALL_ERROR_MAX) text = text.slice(0, CALL_ERROR_MAX) + '…';
    if (text) return text.charAt(0).toUpperCase() + text.slice(1);
    if (res.status === 429 || res.status === 503) return 'All our lines are busy. Please try again in a moment.';
    return 'The call could not be started (error ' + res.status + '). Please try again.';
  }

  // Resolves once ICE gathering is complete, or after `ms` with the candidates so far.
  function iceGathered(pc, ms) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') {
        resolve();
        return;
      }
      let timer = 0;
      const check = () => {
        if (pc.iceGatheringState === 'complete') done();
      };
      const onCandidate = (e) => {
        if (!e.candidate) done(); // the end-of-candidates marker
      };
      function done() {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        pc.removeEventListener('icecandidate', onCandidate);
        resolve();
      }
      pc.addEventListener('icegatheringstatechange', check);
      pc.addEventListener('icecandidate', onCandidate);
      timer = setTimeout(done, ms);
    });
  }

  // Only ever DELETE our own origin, whatever the Location says.
  function sameOriginUrl(value) {
    if (!value) return null;
    try {
      const u = new URL(value, location.href);
      return u.origin === location.origin ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function deleteCall(c) {
    if (!c.location || c.deleted) return;
    c.deleted = true;
    // keepalive lets the request outlive the page (sendBeacon can only POST).
    fetch(c.location, { method: 'DELETE', credentials: 'same-origin', cache: 'no-store', keepalive: true }).catch(
      () => {
        /* the server notices the media stop anyway */
      }
    );
  }

  // Tear down everything local; tell the server unless it is already gone.
  function releaseCall(c) {
    clearTimeout(c.connectTimer);
    clearInterval(c.ticker);
    if (c.stream) for (const t of c.stream.getTracks()) t.stop();
    if (c.pc) {
      c.pc.onconnectionstatechange = null;
      c.pc.oniceconnectionstatechange = null;
      c.pc.ontrack = null;
      try {
        c.pc.close();
      } catch (_) {
        /* already closed */
      }
    }
    deleteCall(c);
    if (callHandle.pc === c.pc) callHandle.pc = null;
    if (callAudio.srcObject) {
      try {
        callAudio.pause();
      } catch (_) {
        /* nothing playing */
      }
      callAudio.srcObject = null;
    }
  }

  // End the current call with `text` as its outcome (an error is announced as an alert).
  function endCall(text, isError) {
    const c = call;
    if (!c || c.ended) return;
    c.ended = true;
    const ae = document.activeElement;
    const hadFocus = !!ae && (callPanel.contains(ae) || ae === body);
    releaseCall(c);
    tickCall(); // the final duration stays on show
    setCallStatus(text, !!isError);
    setCallState('ended');
    // Mute and Hang up are gone: keep keyboard users in the panel rather than lost on <body>.
    if (hadFocus) callClose.focus({ preventScroll: true });
  }

  function onConnectionState(c) {
    if (call !== c || c.ended) return;
    const pc = c.pc;
    // connectionState where there is one; older engines only have the ICE state.
    let st = pc.connectionState;
    if (!st) {
      const ice = pc.iceConnectionState;
      st = ice === 'completed' ? 'connected' : ice;
    }
    if (st === 'connected') {
      if (c.connected) return;
      c.connected = true;
      clearTimeout(c.connectTimer);
      c.startedAt = performance.now();
      tickCall();
      c.ticker = setInterval(tickCall, 1000);
      setCallStatus('Connected', false);
      setCallState('connected');
    } else if (st === 'failed' || st === 'disconnected' || st === 'closed') {
      if (c.connected) endCall('Call ended', false);
      else endCall('The call could not be connected. Please check your connection and try again.', true);
    }
  }

  async function startCall() {
    if (!webrtcOn || finished || (call && !call.ended)) return;
    const c = {
      pc: null,
      stream: null,
      location: null,
      deleted: false,
      ended: false,
      connected: false,
      startedAt: 0,
      connectTimer: 0,
      ticker: 0,
    };
    call = c;
    callMuted = false;
    callTime.textContent = '';
    const hadFocus = document.activeElement === callUsBtn;
    setCallStatus('Connecting…', false);
    setCallState('connecting');
    // "Call us" hides while the call runs: Mute is the harmless place to land.
    if (hadFocus) callMute.focus({ preventScroll: true });

    if (!webrtcSupported || !navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== 'function') {
      endCall(
        window.isSecureContext === false
          ? 'Calls need a secure (https) connection to use your microphone.'
          : 'Your browser cannot make calls. Please try a recent version of Chrome, Firefox, Safari or Edge.',
        true
      );
      return;
    }

    // The microphone first: besides the obvious, once it is granted browsers offer real
    // host candidates instead of mDNS names.
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true },
      });
    } catch (err) {
      console.warn('chat: microphone unavailable', err);
      endCall(micErrorText(err), true);
      return;
    }
    c.stream = stream;
    if (c.ended) {
      releaseCall(c); // hung up while the browser asked for the microphone
      return;
    }
    const track = stream.getAudioTracks()[0];
    if (!track) {
      endCall('Your microphone could not be used. Please try again.', true);
      return;
    }
    track.enabled = !callMuted;

    let pc;
    try {
      // No STUN/TURN: the gateway is reachable directly, host candidates are enough.
      pc = new RTCPeerConnection({ iceServers: [] });
    } catch (err) {
      console.warn('chat: cannot create RTCPeerConnection', err);
      endCall('Your browser could not start the call. Please try again.', true);
      return;
    }
    c.pc = pc;
    callHandle.pc = pc;
    pc.ontrack = (e) => {
      if (call !== c || c.ended) return;
      callAudio.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      const played = callAudio.play();
      if (played && typeof played.catch === 'function') {
        played.catch((err) => console.warn('chat: remote audio did not start', err));
      }
    };
    pc.onconnectionstatechange = () => onConnectionState(c);
    if (!('connectionState' in pc)) pc.oniceconnectionstatechange = () => onConnectionState(c);

    let offerSdp;
    try {
      if (typeof pc.addTransceiver === 'function') {
        pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
      } else {
        pc.addTrack(track, stream);
      }
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, ICE_GATHER_TIMEOUT_MS);
      if (c.ended) return;
      offerSdp = pc.localDescription && pc.localDescription.sdp;
      if (!offerSdp) throw new Error('no local description');
    } catch (err) {
      console.warn('chat: cannot create the call offer', err);
      endCall('Your browser could not start the call. Please try again.', true);
      return;
    }

    let res;
    try {
      res = await fetch('/chat/call?c=' + encodeURIComponent(conversationId), {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp' },
        body: offerSdp,
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (err) {
      console.warn('chat: call request failed', err);
      endCall('Could not reach us. Please check your connection and try again.', true);
      return;
    }
    if (res.ok) c.location = sameOriginUrl(res.headers.get('Location'));
    if (c.ended) {
      deleteCall(c); // hung up while the server was answering: the call it set up must go
      return;
    }
    if (!res.ok) {
      const text = await callErrorText(res);
      endCall(text, true);
      return;
    }

    try {
      const answer = await res.text();
      if (c.ended) return;
      if (!/^v=0/.test(answer.trim())) throw new Error('the answer is not SDP');
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (err) {
      console.warn('chat: bad call answer', err);
      endCall('The call could not be set up. Please try again.', true);
      return;
    }
    if (c.ended) return;
    c.connectTimer = setTimeout(() => {
      if (call === c && !c.connected) {
        endCall('The call could not be connected. Please check your connection and try again.', true);
      }
    }, CALL_CONNECT_TIMEOUT_MS);
    onConnectionState(c); // in case it is already up
  }

  callUsBtn.addEventListener('click', () => {
    if (callUsBtn.hidden || callUsBtn.disabled) return;
    startCall().catch((err) => {
      console.error('chat: call failed', err);
      endCall('Something went wrong with the call. Please try again.', true);
    });
  });

  callHangup.addEventListener('click', () => {
    if (!call || call.ended) return;
    endCall('Call ended', false);
  });

  callMute.addEventListener('click', () => {
    if (!call || call.ended) return;
    callMuted = !callMuted;
    if (call.stream) for (const t of call.stream.getAudioTracks()) t.enabled = !callMuted;
    updateCallUi();
  });

  callClose.addEventListener('click', () => {
    if (call && !call.ended) return;
    const inPanel = callPanel.contains(document.activeElement);
    call = null;
    callMuted = false;
    callTime.textContent = '';
    setCallStatus('', false);
    setCallState('idle');
    if (!inPanel) return;
    if (!callUsBtn.hidden) callUsBtn.focus({ preventScroll: true });
    else if (!input.disabled) input.focus({ preventScroll: true });
  });

  callPanel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && callState === 'ended') {
      e.preventDefault();
      callClose.click();
    }
  });

  // Leaving the page hangs up (DELETE with keepalive outlives the page).
  window.addEventListener('pagehide', () => {
    if (call && !call.ended) endCall('Call ended', false);
  });

  // ---- protocol ----

  function handleEvent(ev) {
    if (!ev || typeof ev !== 'object' || typeof ev.type !== 'string') return;
    const hasId = Number.isSafeInteger(ev.id) && ev.id > 0;
    const stick = nearBottom();
    // Anything stamped after the switch proves the server's clock is at least that far on:
    // a replayed switch followed by later events can't offer an undo that has expired.
    if (revert && hasId && ev.id > revert.id && isTime(ev.at)) tightenRevert(ev.at);

    switch (ev.type) {
      case 'message': {
        if (!hasId || seen.has(ev.id)) return;
        const role =
          ev.role === 'visitor' || ev.role === 'system' || ev.role === 'agent' ? ev.role : 'bot';
        remember(ev.id);
        renderBubble(ev.id, role, ev.text, ev.at);
        if (role === 'visitor') {
          if (ev.id > maxVisitorId) maxVisitorId = ev.id;
          visitorIds.push(ev.id);
          if (pending && ev.id > pending.prompt) clearPending();
          // The echo of what we just sent: learn how far the server's clock is from ours.
          if (lastSentAt && Date.now() - lastSentAt < ECHO_CLOCK_MS && isTime(ev.at)) {
            clockOffset = Date.now() - ev.at;
            lastSentAt = 0;
          }
        } else if (role === 'bot' || role === 'agent') {
          setTyping(false);
        }
        updateComposer();
        break;
      }
      case 'prompt': {
        if (!hasId || seen.has(ev.id)) return;
        remember(ev.id);
        renderBubble(ev.id, 'bot', ev.text, ev.at, ev.action ? 'prompt action' : 'prompt');
        setTyping(false);
        if (!lastPrompt || ev.id > lastPrompt.id) {
          const action = typeof ev.action === 'string' && ev.action ? ev.action : null;
          // An action prompt interrupts the open prompt, which comes back once it is answered.
          const interrupted = action ? currentPrompt() : null;
          lastPrompt = {
            id: ev.id,
            input: action ? 'phone' : ev.input,
            text: ev.text,
            placeholder: typeof ev.placeholder === 'string' ? ev.placeholder : '',
            choices: action || !Array.isArray(ev.choices) ? [] : ev.choices,
            action,
            suspended: interrupted,
          };
        }
        updateComposer();
        break;
      }
      case 'channel': {
        if (!hasId || seen.has(ev.id)) return;
        remember(ev.id);
        const ch = typeof ev.channel === 'string' && CHANNEL_LABELS[ev.channel] ? ev.channel : null;
        const fallback = ch ? 'The conversation continues on ' + CHANNEL_LABELS[ch] + '.' : '';
        renderBubble(ev.id, 'system', ev.text || fallback, ev.at, 'channel');
        // Replays come in id order; only the latest channel event sets the state.
        if (ch && ev.id > channelEventId) applyChannel(ev, ch);
        break;
      }
      case 'switch_failed':
        switchFailed(String(ev.text || 'Sorry, the chat could not be moved. Please try again.'));
        break;
      case 'switch_code':
        switchCodeSent(String(ev.channel || ''), String(ev.text || 'We sent you a code.'));
        break;
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
        // Our switch request may be what was refused (e.g. too many messages).
        if (panel && panel.busy) switchFailed(String(ev.text || 'Something went wrong.'));
        else renderNotice(ev.text || 'Something went wrong.');
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
    endSwitchUi();
    queue.length = 0;
    setTyping(false);
    clearTimeout(retryTimer);
    clearTimeout(connectTimer);
    setState('closed');
    updateComposer();
    updateCallUi(); // no new calls; one under way carries on
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
        if (frame.type === 'answer' || frame.type === 'text') lastSentAt = Date.now();
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

  body.dataset.channel = channel;
  body.dataset.call = callState;
  body.dataset.webrtc = webrtcOn && webrtcSupported ? 'on' : 'off';
  updateSwitchUi();
  updateCallUi();
  updateComposer();
  connect();
})();
