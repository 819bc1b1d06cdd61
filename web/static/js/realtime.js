// The websocket to /ws: connect, hello/resume, reconnect with back-off, outbox, dispatch.
//
// One Realtime per page. Protocol: docs/signalling.md (signaling/protocol.py is the truth).
//
// * After every (re)connect: `hello` with {contact_id: last seq displayed}, then a `ping`
//   whose `pong` marks the end of the server's replay (the server handles a connection's
//   frames in order). Then unacknowledged chat lines are resent with their original
//   client_id, the page's sync hooks run (the agent sends its status), and only then is
//   the connection "open": body[data-ws="open"].
// * Chat history, the resume seqs, read marks and the outbox are kept per user in
//   sessionStorage (tab-scoped, cleared at sign-out), so a reload resumes where it was.
//   A contact the server no longer announces after a resync is dropped ("contact.gone").
// * Events: rt.on(type, fn) for every server frame type (unknown types are simply never
//   listened to), plus: open, close, status, contact.gone, chat.pending, chat.acked,
//   chat.failed. chat.message is only emitted once per seq.

import { api, ApiError } from './api.js';
import { SESSION_CACHE_PREFIX } from './chrome.js';
import { setText } from './i18n.js';

export const PROTOCOL_VERSION = 1;

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const SYNC_TIMEOUT_MS = 10000;
const PONG_TIMEOUT_MS = 10000;
const REQUEST_TIMEOUT_MS = 15000;
const RATE_LIMIT_RETRY_MS = 1500;
const MAX_CACHED_MESSAGES = 300;
const MAX_RESUME = 32; // hello.resume holds at most 32 contacts
const CONNECTING_BANNER_DELAY_MS = 1200;
const BACK_ONLINE_BANNER_MS = 3000;

/** A refused or failed request: `code` is the protocol error code, or offline/timeout/disconnected. */
export class RealtimeError extends Error {
  constructor(code, message = '', frame = null) {
    super(message || code);
    this.name = 'RealtimeError';
    this.code = code;
    this.frame = frame;
  }
}

/** Hex string from the CSPRNG (works outside secure contexts, unlike randomUUID). */
export function randomHex(bytes = 8) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

function emptyStore() {
  return { v: 1, contacts: {}, outbox: [] };
}

function emptyContact() {
  // info: the last queue.position / contact.assigned frame; mine: our own client_ids
  return { messages: [], lastSeq: 0, readSeq: 0, info: null, mine: [] };
}

function isObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

export class Realtime {
  /**
   * @param {{userId: string|number, bannerEl?: HTMLElement|null}} options
   */
  constructor({ userId, bannerEl = null }) {
    this.storageKey = `${SESSION_CACHE_PREFIX}${String(userId)}`;
    this.banner = bannerEl;
    this.handlers = new Map();
    this.pending = new Map(); // envelope id → {resolve, reject, timer}
    this.syncHooks = [];
    this.ws = null;
    this.status = 'idle'; // idle | connecting | syncing | open | reconnecting | stopped
    this.role = null;
    this.userId = String(userId);
    this.welcomed = false;
    this.everOpen = false;
    this.attempt = 0;
    this.counter = 0;
    this.idPrefix = `w${randomHex(3)}`;
    this.syncId = null;
    this.announced = null;
    this.sentRead = new Map();
    this.timers = {};
    this.store = this.load();
  }

  // ---------------------------------------------------------------- events

  /** Listen to a frame type or a local event; returns an unsubscribe function. */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of [...(this.handlers.get(type) ?? [])]) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`realtime: ${type} handler failed`, err);
      }
    }
  }

  /** Run `fn` (may be async) after every resync, before the connection counts as open. */
  onSync(fn) {
    this.syncHooks.push(fn);
  }

  // ---------------------------------------------------------------- storage

  load() {
    try {
      const raw = sessionStorage.getItem(this.storageKey);
      const data = raw ? JSON.parse(raw) : null;
      if (isObject(data) && data.v === 1 && isObject(data.contacts) && Array.isArray(data.outbox)) {
        for (const [id, c] of Object.entries(data.contacts)) {
          if (!isObject(c) || !Array.isArray(c.messages)) delete data.contacts[id];
          else data.contacts[id] = { ...emptyContact(), ...c };
        }
        return data;
      }
    } catch {
      // unreadable cache: start afresh (the server replays the full history)
    }
    return emptyStore();
  }

  save() {
    const write = () => sessionStorage.setItem(this.storageKey, JSON.stringify(this.store));
    try {
      write();
    } catch {
      // Quota: keep fewer lines per contact; the in-memory copy stays complete.
      try {
        for (const c of Object.values(this.store.contacts)) c.messages = c.messages.slice(-50);
        write();
      } catch {
        // storage unavailable: reloads will fetch the full history instead
      }
    }
  }

  contact(contactId, create = false) {
    let c = this.store.contacts[contactId];
    if (!c && create) {
      c = emptyContact();
      this.store.contacts[contactId] = c;
    }
    return c ?? null;
  }

  /** Contact ids currently known (cached or announced). */
  contactIds() {
    return Object.keys(this.store.contacts);
  }

  /** Cached chat.message frames of a contact, in seq order. */
  history(contactId) {
    return [...(this.contact(contactId)?.messages ?? [])];
  }

  /** Last queue.position / contact.assigned frame seen for a contact. */
  info(contactId) {
    return this.contact(contactId)?.info ?? null;
  }

  /** Unsent / unacknowledged chat lines of a contact. */
  outbox(contactId) {
    return this.store.outbox.filter((e) => e.contact_id === contactId);
  }

  /** True if `clientId` was sent from this tab (labels "You" after a transfer). */
  isMine(contactId, clientId) {
    return Boolean(clientId) && (this.contact(contactId)?.mine ?? []).includes(clientId);
  }

  readSeq(contactId) {
    return this.contact(contactId)?.readSeq ?? 0;
  }

  /** Messages from the other side (or the system) after the read mark. */
  unread(contactId) {
    const c = this.contact(contactId);
    if (!c) return 0;
    return c.messages.filter((m) => m.seq > c.readSeq && m.sender !== this.role).length;
  }

  /** Record that everything up to `seq` was displayed and tell the server (chat.read). */
  markRead(contactId, seq) {
    const c = this.contact(contactId);
    if (!c || !Number.isInteger(seq) || seq < 1) return;
    if (seq > c.readSeq) {
      c.readSeq = seq;
      this.save();
    }
    if (this.isConnected() && (this.sentRead.get(contactId) ?? 0) < c.readSeq) {
      this.sentRead.set(contactId, c.readSeq);
      this.sendRaw({ type: 'chat.read', contact_id: contactId, up_to_seq: c.readSeq });
    }
  }

  /** Drop a contact from the cache (closed, transferred away). */
  forget(contactId) {
    delete this.store.contacts[contactId];
    this.store.outbox = this.store.outbox.filter((e) => e.contact_id !== contactId);
    this.sentRead.delete(contactId);
    this.save();
  }

  resumeMap() {
    const entries = Object.entries(this.store.contacts)
      .filter(([, c]) => c.lastSeq > 0)
      .sort(([, a], [, b]) => b.lastSeq - a.lastSeq)
      .slice(0, MAX_RESUME);
    return Object.fromEntries(entries.map(([id, c]) => [id, c.lastSeq]));
  }

  // ---------------------------------------------------------------- connection

  /** Open the socket (once); it then reconnects by itself until stop(). */
  start() {
    if (this.status !== 'idle') return;
    window.addEventListener('online', () => {
      if (this.status === 'reconnecting' && this.timers.retry) {
        clearTimeout(this.timers.retry);
        this.timers.retry = null;
        this.connect();
      }
    });
    // Leaving the page closes the socket: that is not a connection problem to report.
    window.addEventListener('pagehide', () => {
      this.unloading = true;
    });
    window.addEventListener('pageshow', (event) => {
      this.unloading = false;
      if (event.persisted && !this.ws && !this.timers.retry) this.connect();
    });
    this.connect();
  }

  stop() {
    this.setStatus('stopped');
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
    }
  }

  isConnected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.welcomed;
  }

  connect() {
    if (this.status === 'stopped') return;
    this.setStatus(this.everOpen ? 'reconnecting' : 'connecting');
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${window.location.host}/ws`);
    } catch {
      this.scheduleReconnect(false);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.announced = new Set();
      this.syncId = this.nextId('sync');
      this.sendRaw({ type: 'hello', id: this.nextId('hello'), resume: this.resumeMap() });
      this.sendRaw({ type: 'ping', id: this.syncId });
      this.timers.sync = setTimeout(() => this.drop(ws), SYNC_TIMEOUT_MS);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this.receive(event.data);
    };
    ws.onerror = () => {}; // a close event always follows
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  /** Give up on a socket that stopped answering and reconnect at once. */
  drop(ws) {
    if (this.ws !== ws) return;
    ws.onclose = null;
    try {
      ws.close(4000);
    } catch {
      // already closing
    }
    this.closed(ws, 4000);
  }

  closed(ws, code) {
    if (this.ws !== ws) return;
    const wasWelcomed = this.welcomed;
    this.ws = null;
    this.welcomed = false;
    this.quietSync = false;
    this.resyncAfter = false;
    this.announced = null;
    this.syncId = null;
    clearTimeout(this.timers.sync);
    clearTimeout(this.timers.resync);
    this.timers.resync = null;
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.pong);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new RealtimeError('disconnected'));
      this.pending.delete(id);
    }
    for (const entry of this.store.outbox) entry.id = null; // resend after the next sync
    this.sentRead.clear();
    if (this.status === 'stopped' || this.unloading) return;
    this.emit('close', { code });
    this.scheduleReconnect(wasWelcomed, code);
  }

  scheduleReconnect(wasWelcomed, code = 0) {
    if (this.status === 'stopped') return;
    this.setStatus(this.everOpen ? 'reconnecting' : 'connecting');
    if (!wasWelcomed) void this.checkSession();
    const step = code === 1008 ? BACKOFF_MS.length - 1 : Math.min(this.attempt, BACKOFF_MS.length - 1);
    const delay = Math.round(BACKOFF_MS[step] * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => {
      this.timers.retry = null;
      this.connect();
    }, delay);
  }

  /** A socket that never got a welcome may mean the session expired: go and sign in. */
  async checkSession() {
    try {
      await api('GET', '/api/auth/me');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.stop();
        window.location.replace('/signin');
      }
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    const previous = this.status;
    this.status = status;
    const body = document.body;
    if (status === 'open') body.dataset.ws = 'open';
    else if (status === 'stopped') body.dataset.ws = 'closed';
    else body.dataset.ws = this.everOpen ? 'reconnecting' : 'connecting';
    this.updateBanner(previous);
    this.emit('status', { status, previous });
  }

  updateBanner(previous) {
    const el = this.banner;
    if (!el) return;
    clearTimeout(this.timers.banner);
    const show = (key, variant) => {
      setText(el, { key });
      el.dataset.variant = variant;
      el.hidden = false;
    };
    if (this.status === 'reconnecting') {
      show('realtime.reconnecting', 'warning');
    } else if (this.status === 'connecting') {
      // Only if connecting takes a while: no flash on a normal page load.
      this.timers.banner = setTimeout(() => {
        if (this.status === 'connecting') show('realtime.connecting', 'info');
      }, CONNECTING_BANNER_DELAY_MS);
    } else if (this.status === 'open' && this.wasReconnect) {
      show('realtime.reconnected', 'success');
      this.timers.banner = setTimeout(() => {
        el.hidden = true;
      }, BACK_ONLINE_BANNER_MS);
    } else if (this.status !== 'syncing') {
      el.hidden = true;
    }
  }

  // ---------------------------------------------------------------- sending

  nextId(kind) {
    this.counter += 1;
    return `${this.idPrefix}-${kind}-${this.counter}`;
  }

  sendRaw(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...frame }));
    return true;
  }

  /**
   * Send a frame that the server acknowledges; resolves with the `ack` frame, rejects with
   * a RealtimeError (the `error` frame's code, or offline / timeout / disconnected).
   */
  request(type, fields = {}) {
    if (!this.isConnected()) return Promise.reject(new RealtimeError('offline'));
    const id = this.nextId(type.replace(/\W/g, ''));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RealtimeError('timeout'));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.sendRaw({ ...fields, type, id });
    });
  }

  /**
   * Send a frame without waiting for an ack. Returns its envelope id (an `error` frame about
   * it is emitted as "error" with that ref_id), or null when offline.
   */
  send(type, fields = {}) {
    if (!this.isConnected()) return null;
    const id = this.nextId(type.replace(/\W/g, ''));
    this.sendRaw({ ...fields, type, id });
    return id;
  }

  /** Queue a chat line; it is (re)sent until acknowledged. Returns the outbox entry. */
  sendChat(contactId, text) {
    const entry = { contact_id: contactId, client_id: `k${randomHex(8)}`, text, id: null };
    this.store.outbox.push(entry);
    const c = this.contact(contactId, true);
    c.mine = [...c.mine.slice(-199), entry.client_id];
    this.save();
    this.emit('chat.pending', { ...entry });
    if (this.isConnected() && this.announced === null && this.syncId === null) this.transmit(entry);
    return entry;
  }

  transmit(entry) {
    if (!this.isConnected()) return;
    entry.id = this.nextId('chat');
    this.sendRaw({
      type: 'chat.send',
      id: entry.id,
      contact_id: entry.contact_id,
      client_id: entry.client_id,
      text: entry.text,
    });
  }

  removeFromOutbox(entry) {
    const i = this.store.outbox.indexOf(entry);
    if (i >= 0) this.store.outbox.splice(i, 1);
    this.save();
  }

  // ---------------------------------------------------------------- receiving

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!isObject(frame) || typeof frame.type !== 'string') return;
    switch (frame.type) {
      case 'welcome':
        this.welcomed = true;
        this.role = frame.role;
        this.pingEvery = Math.max(5, Number(frame.ping_interval_s) || 20) * 1000;
        if (!this.quietSync) this.setStatus('syncing');
        this.emit('welcome', frame);
        return;
      case 'pong':
        this.onPong(frame);
        return;
      case 'ack':
        this.onAck(frame);
        return;
      case 'error':
        this.onError(frame);
        return;
      case 'queue.position':
      case 'contact.assigned':
      {
        const isNew = !this.store.contacts[frame.contact_id]?.info;
        this.announced?.add(frame.contact_id);
        this.contact(frame.contact_id, true).info = frame;
        this.save();
        // A contact routed to an agent comes without its history (lines the customer sent
        // while queued, or to the previous agent): a quiet hello replays what we lack. One
        // that turns up during a sync may have been routed after the server read our hello.
        if (frame.type === 'contact.assigned' && this.role === 'agent') {
          if (this.announced === null) this.resync();
          else if (isNew) this.resyncAfter = true;
        }
        this.emit(frame.type, frame);
        return;
      }
      case 'chat.message':
        this.onChatMessage(frame);
        return;
      case 'contact.closed':
        this.emit(frame.type, frame);
        this.forget(frame.contact_id);
        return;
      default:
        this.emit(frame.type, frame);
    }
  }

  onChatMessage(frame) {
    if (!Number.isInteger(frame.seq) || typeof frame.contact_id !== 'string') return;
    const c = this.contact(frame.contact_id, true);
    if (c.messages.some((m) => m.seq === frame.seq)) return; // duplicate (dedupe by seq)
    const at = c.messages.findIndex((m) => m.seq > frame.seq);
    if (at < 0) c.messages.push(frame);
    else c.messages.splice(at, 0, frame);
    if (c.messages.length > MAX_CACHED_MESSAGES) c.messages.splice(0, c.messages.length - MAX_CACHED_MESSAGES);
    // lastSeq only advances without gaps, so a resume never skips a missed line
    while (c.messages.some((m) => m.seq === c.lastSeq + 1)) c.lastSeq += 1;
    if (frame.client_id) {
      // our own line already stored by the server (replayed after a reconnect): do not resend
      const sent = this.store.outbox.find(
        (e) => e.contact_id === frame.contact_id && e.client_id === frame.client_id,
      );
      if (sent) this.removeFromOutbox(sent);
    }
    this.save();
    this.emit('chat.message', frame);
  }

  onAck(frame) {
    const waiting = this.pending.get(frame.id);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.pending.delete(frame.id);
      waiting.resolve(frame);
      return;
    }
    const entry = this.store.outbox.find((e) => e.id === frame.id);
    if (entry) {
      this.removeFromOutbox(entry);
      this.emit('chat.acked', {
        contact_id: entry.contact_id, client_id: entry.client_id, seq: frame.seq, ts: frame.ts,
      });
      return;
    }
    this.emit('ack', frame);
  }

  onError(frame) {
    const ref = frame.ref_id;
    const waiting = ref ? this.pending.get(ref) : null;
    if (waiting) {
      clearTimeout(waiting.timer);
      this.pending.delete(ref);
      waiting.reject(new RealtimeError(frame.code, frame.message, frame));
      return;
    }
    const entry = ref ? this.store.outbox.find((e) => e.id === ref) : null;
    if (entry) {
      if (frame.code === 'rate_limited') {
        entry.id = null;
        setTimeout(() => {
          if (this.store.outbox.includes(entry) && entry.id === null && this.isConnected()) {
            this.transmit(entry);
          }
        }, RATE_LIMIT_RETRY_MS);
        return;
      }
      this.removeFromOutbox(entry);
      this.emit('chat.failed', { ...entry, code: frame.code });
      return;
    }
    this.emit('error', frame);
  }

  onPong(frame) {
    if (frame.id && frame.id === this.syncId) {
      this.syncId = null;
      void this.finishSync();
      return;
    }
    if (frame.id && frame.id === this.keepaliveId) {
      this.keepaliveId = null;
      clearTimeout(this.timers.pong);
    }
  }

  /**
   * Ask the server to replay what this tab lacks (a new hello on the same socket) without
   * leaving the "open" state. Batched: several calls in a row make one hello.
   */
  resync() {
    if (this.announced !== null || this.syncId !== null) {
      this.resyncAfter = true; // a sync is running: its hello may predate the news
      return;
    }
    if (this.timers.resync || !this.isConnected()) return;
    this.timers.resync = setTimeout(() => {
      this.timers.resync = null;
      if (!this.isConnected() || this.announced !== null) return;
      this.quietSync = true;
      this.announced = new Set();
      this.syncId = this.nextId('sync');
      this.sendRaw({ type: 'hello', id: this.nextId('hello'), resume: this.resumeMap() });
      this.sendRaw({ type: 'ping', id: this.syncId });
    }, 50);
  }

  async finishSync() {
    clearTimeout(this.timers.sync);
    const ws = this.ws;
    if (this.quietSync) {
      this.quietSync = false;
      this.dropUnannounced();
      this.afterSync();
      return;
    }
    this.dropUnannounced();
    for (const entry of [...this.store.outbox]) if (entry.id === null) this.transmit(entry);
    await Promise.allSettled(this.syncHooks.map((fn) => Promise.resolve().then(fn)));
    if (this.ws !== ws || !this.isConnected()) return;
    this.wasReconnect = this.everOpen;
    this.everOpen = true;
    this.setStatus('open');
    this.attempt = 0;
    this.scheduleKeepalive();
    this.emit('open', { resumed: this.wasReconnect });
    this.afterSync();
  }

  /** Contacts the server did not announce in a sync are closed or no longer ours. */
  dropUnannounced() {
    const announced = this.announced ?? new Set();
    this.announced = null;
    for (const id of this.contactIds()) {
      if (!announced.has(id)) {
        this.forget(id);
        this.emit('contact.gone', { contact_id: id });
      }
    }
  }

  afterSync() {
    if (this.resyncAfter) {
      this.resyncAfter = false;
      this.resync();
    }
  }

  scheduleKeepalive() {
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => {
      const ws = this.ws;
      if (!this.isConnected()) return;
      this.keepaliveId = this.nextId('ka');
      this.sendRaw({ type: 'ping', id: this.keepaliveId });
      this.timers.pong = setTimeout(() => this.drop(ws), PONG_TIMEOUT_MS);
      this.scheduleKeepalive();
    }, this.pingEvery ?? 20000);
  }
}
