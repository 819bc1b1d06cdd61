// Rendering of one chat log (#chat-log): messages in seq order, optimistic echoes of our
// own lines until the server confirms them, and notes (not messages) such as "ended".
//
// Each message is `.chat-msg[data-seq][data-sender]`; a line still on its way has
// data-pending="true" and data-client-id instead of data-seq, a line the server refused
// has data-failed="<error code>". Text is always set with textContent.

import { currentLanguage, LANGUAGE_CHANGE_EVENT, setText } from './i18n.js';

const STICK_TO_BOTTOM_PX = 48;

function formatTime(date) {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) return '';
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const options = sameDay
    ? { hour: 'numeric', minute: '2-digit' }
    : { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' };
  try {
    return new Intl.DateTimeFormat(currentLanguage(), options).format(date);
  } catch {
    return date.toISOString().slice(11, 16);
  }
}

export class ChatLog {
  /**
   * @param {HTMLElement} el the #chat-log element (role="log")
   * @param {{selfRole: string, label: (msg: {sender: string, client_id?: string}) => object}} options
   *   label returns the sender's caption as {key, args} or {text}
   */
  constructor(el, { selfRole, label }) {
    this.el = el;
    this.selfRole = selfRole;
    this.label = label;
    this.bySeq = new Map();
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => this.refreshTimes());
  }

  get maxSeq() {
    let max = 0;
    for (const seq of this.bySeq.keys()) max = Math.max(max, seq);
    return max;
  }

  /** Empty the log. */
  clear() {
    this.el.replaceChildren();
    this.bySeq.clear();
  }

  /** Replace the content with `messages` (chat.message frames) and `pending` outbox entries. */
  render(messages, pending = []) {
    this.el.setAttribute('aria-busy', 'true'); // no screen-reader replay of the whole history
    this.clear();
    for (const m of messages) this.add(m, { scroll: false });
    for (const p of pending) this.addPending(p, { scroll: false });
    this.el.setAttribute('aria-busy', 'false');
    this.scrollToEnd();
  }

  nearBottom() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < STICK_TO_BOTTOM_PX;
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  build(sender, text) {
    const item = document.createElement('div');
    item.className = 'chat-msg';
    item.dataset.sender = sender;
    if (sender === this.selfRole) item.classList.add('chat-msg-self');
    else if (sender === 'system') item.classList.add('chat-msg-system');
    else item.classList.add('chat-msg-other');
    const meta = document.createElement('p');
    meta.className = 'chat-meta';
    const who = document.createElement('span');
    who.className = 'chat-sender';
    const time = document.createElement('time');
    time.className = 'chat-time';
    const status = document.createElement('span');
    status.className = 'chat-status';
    status.hidden = true;
    meta.append(who, ' ', time, ' ', status);
    const body = document.createElement('p');
    body.className = 'chat-text';
    body.textContent = text;
    item.append(meta, body);
    return item;
  }

  fillMeta(item, msg) {
    setText(item.querySelector('.chat-sender'), this.label(msg));
    const time = item.querySelector('.chat-time');
    if (msg.ts) {
      time.dateTime = msg.ts;
      time.textContent = formatTime(new Date(msg.ts));
    }
  }

  setStatus(item, message) {
    const status = item.querySelector('.chat-status');
    if (message) {
      setText(status, message);
      status.hidden = false;
    } else {
      status.hidden = true;
      status.textContent = '';
    }
  }

  /** Insert a chat.message (once per seq); replaces our optimistic echo of the same line. */
  add(msg, { scroll = true } = {}) {
    if (this.bySeq.has(msg.seq)) return this.bySeq.get(msg.seq);
    const stick = scroll && this.nearBottom();
    let item = msg.client_id ? this.pendingItem(msg.client_id) : null;
    if (item) {
      item.remove();
    } else {
      item = this.build(msg.sender, msg.text);
    }
    item.dataset.seq = String(msg.seq);
    delete item.dataset.pending;
    delete item.dataset.failed;
    if (msg.client_id) item.dataset.clientId = msg.client_id;
    this.fillMeta(item, msg);
    this.setStatus(item, null);
    this.insertBySeq(item, msg.seq);
    this.bySeq.set(msg.seq, item);
    if (stick || (scroll && msg.sender === this.selfRole)) this.scrollToEnd();
    return item;
  }

  insertBySeq(item, seq) {
    for (const child of this.el.children) {
      const other = Number(child.dataset.seq);
      if ((child.dataset.seq && other > seq) || child.dataset.pending || child.dataset.failed) {
        this.el.insertBefore(item, child);
        return;
      }
    }
    this.el.append(item);
  }

  pendingItem(clientId) {
    for (const child of this.el.querySelectorAll('.chat-msg[data-client-id]')) {
      if (child.dataset.clientId === clientId && !child.dataset.seq) return child;
    }
    return null;
  }

  /** Show our own line before the server has confirmed it. */
  addPending(entry, { scroll = true } = {}) {
    if (this.pendingItem(entry.client_id)) return;
    const item = this.build(this.selfRole, entry.text);
    item.dataset.pending = 'true';
    item.dataset.clientId = entry.client_id;
    this.fillMeta(item, { sender: this.selfRole, client_id: entry.client_id });
    this.setStatus(item, { key: 'chat.sending' });
    this.el.append(item);
    if (scroll) this.scrollToEnd();
  }

  /** The server stored our line as `seq` at `ts` (the sending tab gets no chat.message echo). */
  acked({ client_id: clientId, seq, ts }) {
    const item = this.pendingItem(clientId);
    if (!item || !Number.isInteger(seq)) return;
    if (this.bySeq.has(seq)) {
      item.remove();
      return;
    }
    item.remove();
    item.dataset.seq = String(seq);
    delete item.dataset.pending;
    this.setStatus(item, null);
    const time = item.querySelector('.chat-time');
    const stored = ts ? new Date(ts) : null;
    if (stored && !Number.isNaN(stored.getTime())) {
      time.dateTime = stored.toISOString();
      time.textContent = formatTime(stored);
    } else if (!time.dateTime) {
      const now = new Date();
      time.dateTime = now.toISOString();
      time.textContent = formatTime(now);
    }
    this.insertBySeq(item, seq);
    this.bySeq.set(seq, item);
  }

  /** The server refused our line for good. */
  failed({ client_id: clientId, code }) {
    const item = this.pendingItem(clientId);
    if (!item) return;
    delete item.dataset.pending;
    item.dataset.failed = code || 'error';
    this.setStatus(item, { key: 'chat.not_sent' });
  }

  /** A note in the log that is not a chat message (class chat-note). */
  addNote(message, { variant = 'info' } = {}) {
    const stick = this.nearBottom();
    const note = document.createElement('p');
    note.className = `chat-note chat-note-${variant}`;
    setText(note, message);
    this.el.append(note);
    if (stick) this.scrollToEnd();
    return note;
  }

  /** Re-caption every message (names changed, or a language switch). */
  refreshLabels() {
    for (const item of this.el.querySelectorAll('.chat-msg')) {
      const msg = {
        sender: item.dataset.sender,
        client_id: item.dataset.clientId,
        ts: item.querySelector('.chat-time').dateTime,
      };
      setText(item.querySelector('.chat-sender'), this.label(msg));
    }
  }

  refreshTimes() {
    for (const time of this.el.querySelectorAll('time.chat-time')) {
      if (time.dateTime) time.textContent = formatTime(new Date(time.dateTime));
    }
  }
}

/**
 * Wire a composer form (textarea + submit button): Enter sends, Shift+Enter adds a line.
 * `onSend(text)` returns true when the text was accepted (the field is then emptied).
 */
export function wireComposer(form, input, onSend) {
  const submit = () => {
    const text = input.value.trim();
    if (text === '') {
      input.focus();
      return;
    }
    if (onSend(text)) {
      input.value = '';
      input.focus();
    }
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
}
