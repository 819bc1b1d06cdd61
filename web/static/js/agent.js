// Agent console: availability, the contacts routed to this agent, chat, transfer, video, and
// identity verification (face match + liveness, decided by the agent; rendering in verify.js).

import { ChatLog, wireComposer } from './chat.js';
import { realtimeErrorMessage, showNotice } from './errors.js';
import { SESSION_CACHE_PREFIX } from './chrome.js';
import { LANGUAGE_CHANGE_EVENT, setText, t } from './i18n.js';
import { Realtime } from './realtime.js';
import { mountFollowups } from './followups.js';
import { mountTradingAgent } from './trading_agent.js';
import { ready } from './shell.js';
import { phaseOf, referenceProblem, VerifyStore, VerifyView } from './verify.js';
import { ACTIVE_STATES, VideoCall } from './video.js';

const $ = (id) => document.getElementById(id);
const SKILLS = ['accounts', 'cards', 'wealth', 'loans', 'general'];
const STATUSES = ['available', 'away'];

const els = {
  notices: $('notices'),
  status: $('status-select'),
  capacity: $('capacity'),
  statusNote: $('status-note'),
  agentId: $('agent-id'),
  list: $('contact-list'),
  listEmpty: $('contacts-empty'),
  chatEmpty: $('chat-empty'),
  conversation: $('conversation'),
  customerName: $('customer-name'),
  skill: $('contact-skill'),
  presence: $('presence-note'),
  log: $('chat-log'),
  chatForm: $('chat-form'),
  composer: $('composer'),
  input: $('chat-input'),
  send: $('chat-send'),
  actions: $('contact-actions'),
  transferForm: $('transfer-form'),
  transferSkill: $('transfer-skill'),
  transferAgent: $('transfer-agent'),
  transferSubmit: $('transfer-submit'),
  close: $('close-contact'),
  videoContact: $('video-contact'),
  verifyPanel: $('verify-panel'),
  verifyStatus: $('verify-status'),
  verifyOutcome: $('verify-outcome'),
  verifyReference: $('verify-reference'),
  verifyDocument: $('verify-document'),
  verifyAskDoc: $('verify-ask-doc'),
  verifyCapture: $('verify-capture-doc'),
  verifyDocStatus: $('verify-doc-status'),
  verifyStart: $('verify-start'),
  verifyCancel: $('verify-cancel'),
  verifyHint: $('verify-hint'),
  verifyDecide: $('verify-decide'),
  verifyReason: $('verify-reason'),
  verifyReasonError: $('verify-reason-error'),
  verifyApprove: $('verify-approve'),
  verifyReject: $('verify-reject'),
};

/** Open contacts routed to us: id → {id, customerName, skill, customerOnline}. */
const contacts = new Map();
/** The contact shown in the chat panel (may be one that just ended). */
let selected = null;
let selectedOpen = false;
let rt;
let log;
let video;
let verifyStore;
let verifyView;
let trading = null; // transactions panel (trading_agent.js)
let prefsKey = 'vbank.agent';

function notice(message, level = 'error') {
  showNotice(els.notices, message, { level });
}

function reportError(err) {
  notice(realtimeErrorMessage(err?.code));
}

function skillMessage(skill) {
  return SKILLS.includes(skill) ? { key: `skill.${skill}` } : { text: skill ?? '' };
}

// ---- availability ---------------------------------------------------------------------

function loadPrefs() {
  try {
    const data = JSON.parse(localStorage.getItem(prefsKey) ?? '{}');
    return {
      status: STATUSES.includes(data.status) ? data.status : 'away',
      capacity: Number.isInteger(data.capacity) && data.capacity >= 1 && data.capacity <= 10 ? data.capacity : null,
    };
  } catch {
    return { status: 'away', capacity: null };
  }
}

function savePrefs(prefs) {
  try {
    localStorage.setItem(prefsKey, JSON.stringify(prefs));
  } catch {
    // not fatal: the choice applies until the next reconnect
  }
}

function showPrefs(prefs) {
  els.status.value = prefs.status;
  els.capacity.value = prefs.capacity === null ? '' : String(prefs.capacity);
}

function confirmStatus(status) {
  els.status.dataset.confirmed = status;
  setText(els.statusNote, status === 'available' ? { key: 'agent.status.note_available' } : { key: 'agent.status.note_away' });
}

/** Send the availability; returns true if the server accepted it. */
async function sendStatus(prefs) {
  const fields = { status: prefs.status };
  if (prefs.capacity !== null) fields.capacity = prefs.capacity;
  await rt.request('agent.status', fields);
  confirmStatus(prefs.status);
}

let lastApplied = null; // JSON of the last availability the server accepted
let capacityTimer = null;

function validCapacity(raw) {
  if (raw === '') return null;
  const n = Number(raw);
  return Number.isInteger(n) && n >= 1 && n <= 10 ? n : undefined;
}

async function applyStatus() {
  clearTimeout(capacityTimer);
  const previous = loadPrefs();
  const capacity = validCapacity(els.capacity.value.trim());
  if (capacity === undefined) {
    notice({ key: 'agent.capacity.invalid' });
    showPrefs(previous);
    return;
  }
  const prefs = { status: STATUSES.includes(els.status.value) ? els.status.value : 'away', capacity };
  if (JSON.stringify(prefs) === lastApplied) return; // e.g. the change event after typing
  try {
    await sendStatus(prefs);
    lastApplied = JSON.stringify(prefs);
    savePrefs(prefs);
  } catch (err) {
    notice(err?.code === 'forbidden' || err?.code === 'invalid_message' ? { key: 'agent.capacity.refused' } : realtimeErrorMessage(err?.code));
    showPrefs(previous);
  }
}

/** After every (re)connect, before the page counts as connected: restore the saved choice. */
async function restoreStatus() {
  const prefs = loadPrefs();
  showPrefs(prefs);
  lastApplied = null;
  try {
    await sendStatus(prefs);
    lastApplied = JSON.stringify(prefs);
  } catch (err) {
    if (prefs.capacity === null) {
      reportError(err);
      return;
    }
    // e.g. more contacts than the saved capacity right now: keep the server's capacity
    try {
      await sendStatus({ ...prefs, capacity: null });
    } catch (again) {
      reportError(again);
    }
  }
}

// ---- contact list ---------------------------------------------------------------------

function itemOf(id) {
  for (const li of els.list.children) if (li.dataset.contactId === id) return li;
  return null;
}

function buildItem(id) {
  const li = document.createElement('li');
  li.className = 'contact-item';
  li.dataset.contactId = id;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'contact-button';
  const name = document.createElement('span');
  name.className = 'contact-name';
  const skill = document.createElement('span');
  skill.className = 'contact-skill';
  const flags = document.createElement('span');
  flags.className = 'contact-flags';
  const videoFlag = document.createElement('span');
  videoFlag.className = 'flag flag-video';
  videoFlag.hidden = true;
  const verifyFlag = document.createElement('span');
  verifyFlag.className = 'flag flag-verify';
  verifyFlag.hidden = true;
  const offline = document.createElement('span');
  offline.className = 'flag flag-offline';
  offline.hidden = true;
  setText(offline, { key: 'agent.contacts.offline' });
  flags.append(videoFlag, verifyFlag, offline);
  const unread = document.createElement('span');
  unread.className = 'unread';
  unread.hidden = true;
  unread.textContent = '0';
  const unreadLabel = document.createElement('span');
  unreadLabel.className = 'visually-hidden unread-label';
  unreadLabel.hidden = true;
  setText(unreadLabel, { key: 'agent.contacts.unread' });
  button.append(name, skill, flags, unread, unreadLabel);
  button.addEventListener('click', () => select(id));
  li.append(button);
  els.list.append(li);
  return li;
}

function renderItem(id) {
  const c = contacts.get(id);
  let li = itemOf(id);
  if (!c) {
    li?.remove();
    return;
  }
  li ??= buildItem(id);
  const button = li.querySelector('.contact-button');
  button.setAttribute('aria-current', String(id === selected));
  li.classList.toggle('is-selected', id === selected);
  const name = li.querySelector('.contact-name');
  if (c.customerName) setText(name, { text: c.customerName });
  else setText(name, { key: 'agent.contacts.unnamed' });
  setText(li.querySelector('.contact-skill'), skillMessage(c.skill));
  const state = video.state(id);
  li.dataset.video = state;
  const videoFlag = li.querySelector('.flag-video');
  const flag = state === 'requested' ? 'agent.contacts.video_requested' : ACTIVE_STATES.has(state) ? 'agent.contacts.video_active' : null;
  videoFlag.hidden = flag === null;
  if (flag) setText(videoFlag, { key: flag });
  // verified: the latest decision approved this contact; verifying: an attempt runs
  const verifyFlag = li.querySelector('.flag-verify');
  const verified = verifyStore.lastOutcome(id)?.outcome === 'verified';
  const verifying = verifyStore.phase(id) === 'running';
  li.dataset.verified = String(verified);
  verifyFlag.dataset.kind = verified ? 'verified' : verifying ? 'verifying' : '';
  verifyFlag.hidden = !verified && !verifying;
  if (verified) setText(verifyFlag, { key: 'agent.contacts.verified' });
  else if (verifying) setText(verifyFlag, { key: 'agent.contacts.verifying' });
  li.querySelector('.flag-offline').hidden = c.customerOnline !== false;
  const count = rt.unread(id);
  const unread = li.querySelector('.unread');
  unread.textContent = String(count);
  unread.hidden = count === 0;
  li.querySelector('.unread-label').hidden = count === 0;
  li.dataset.unread = String(count);
}

function renderList() {
  for (const li of [...els.list.children]) if (!contacts.has(li.dataset.contactId)) li.remove();
  for (const id of contacts.keys()) renderItem(id);
  els.listEmpty.hidden = contacts.size > 0;
}

// ---- conversation ---------------------------------------------------------------------

function label(msg) {
  if (msg.sender === 'agent') {
    return rt.isMine(selected, msg.client_id) ? { key: 'chat.sender.you' } : { key: 'chat.sender.agent' };
  }
  if (msg.sender === 'customer') {
    const name = contacts.get(selected)?.customerName;
    return name ? { text: name } : { key: 'chat.sender.customer' };
  }
  return { key: 'chat.sender.system' };
}

function select(id) {
  if (!contacts.has(id)) return;
  const changed = selected !== id || !selectedOpen;
  selected = id;
  selectedOpen = true;
  if (changed) {
    log.render(rt.history(id), rt.outbox(id));
    els.transferForm.reset();
  }
  renderConversation();
  markRead();
  renderList();
  bindVideo();
}

function renderConversation() {
  const c = selected ? contacts.get(selected) : null;
  els.chatEmpty.hidden = selected !== null;
  els.conversation.hidden = selected === null;
  els.conversation.dataset.contactId = selected ?? '';
  els.conversation.dataset.state = selectedOpen ? 'open' : 'closed';
  if (c) {
    if (c.customerName) setText(els.customerName, { text: c.customerName });
    else setText(els.customerName, { key: 'agent.contacts.unnamed' });
    setText(els.skill, skillMessage(c.skill));
    setText(els.presence, { key: 'agent.presence.customer_offline' });
    els.presence.hidden = c.customerOnline !== false;
  } else {
    els.presence.hidden = true;
  }
  els.composer.hidden = !selectedOpen;
  els.actions.hidden = !selectedOpen;
  trading?.show(selected, selectedOpen);
}

function markRead() {
  if (!selected || !selectedOpen || document.visibilityState !== 'visible') return;
  const seq = log.maxSeq;
  if (seq > 0) rt.markRead(selected, seq);
  renderItem(selected);
}

/** A contact left this agent (closed, transferred, requeued): keep its log, note why. */
function leave(id, note) {
  if (!contacts.has(id)) return;
  contacts.delete(id);
  video.forget(id);
  if (id === selected) {
    selectedOpen = false;
    log.addNote(note, { variant: 'end' });
    renderConversation();
  }
  renderList();
  bindVideo();
}

function bindVideo() {
  const active = video.activeContact();
  const id = active && contacts.has(active) ? active : selectedOpen ? selected : null;
  video.bind(id, id !== null && contacts.has(id));
  const other = id !== null && id !== selected;
  els.videoContact.hidden = !other;
  if (other) {
    const name = contacts.get(id)?.customerName ?? '';
    setText(els.videoContact, { key: 'agent.video.with', args: { name } });
  }
  renderVerify();
}

async function transfer(event) {
  event.preventDefault();
  if (!selected || !selectedOpen) return;
  const skill = els.transferSkill.value;
  const agent = els.transferAgent.value.trim();
  if ((skill === '') === (agent === '')) {
    notice({ key: 'agent.transfer.choose_one' });
    return;
  }
  if (agent !== '' && !/^\d{1,18}$/.test(agent)) {
    notice({ key: 'agent.transfer.bad_agent' });
    els.transferAgent.focus();
    return;
  }
  const id = selected;
  const fields = agent !== '' ? { contact_id: id, to_agent_id: agent } : { contact_id: id, to_skill: skill };
  els.transferSubmit.disabled = true;
  try {
    await rt.request('contact.transfer', fields);
    rt.forget(id);
    leave(id, agent !== '' ? { key: 'agent.transfer.done_agent', args: { agent } } : { key: 'agent.transfer.done_skill' });
    notice({ key: 'agent.transfer.done' }, 'success');
  } catch (err) {
    if (err?.code === 'forbidden') notice({ key: 'agent.transfer.refused' });
    else if (err?.code === 'not_found') notice({ key: 'agent.transfer.no_agent' });
    else reportError(err);
  } finally {
    els.transferSubmit.disabled = false;
  }
}

async function closeContact() {
  if (!selected || !selectedOpen) return;
  els.close.disabled = true;
  try {
    await rt.request('contact.close', { contact_id: selected });
  } catch (err) {
    reportError(err);
  } finally {
    els.close.disabled = false;
  }
}

// ---- identity verification --------------------------------------------------------------
//
// The panel follows the contact of the video panel (the selected one, or the one whose call
// runs): verification needs that contact's live video.

/** Requests in flight: action (start | capture | cancel | decide) → contact id. */
const verifyPending = new Map();
let verifyShownAttempt = null;

function verifyContact() {
  const id = video?.contactId ?? null;
  return id && contacts.has(id) ? id : null;
}

function verifyBusy(action, id) {
  return verifyPending.get(action) === id;
}

/**
 * Start and cancel swap places, and the outcome replaces the decision form: the control the
 * agent just used disappears. Focus then goes to what took its place, not to <body>.
 */
let verifyFocus = null; // {from, to}

function usable(el) {
  return Boolean(el) && !el.hidden && !el.disabled && el.offsetParent !== null;
}

function applyVerifyFocus() {
  if (!verifyFocus) return;
  const { from, to } = verifyFocus;
  const active = document.activeElement;
  if (active && active !== document.body && active !== from && active !== els.verifyStatus) {
    verifyFocus = null; // the agent has moved on
    return;
  }
  if (usable(to)) {
    verifyFocus = null;
    to.focus();
  } else if (!usable(from) && active === from) {
    els.verifyStatus.focus(); // in between: somewhere in the panel rather than nowhere
  }
}

function renderVerify() {
  if (!verifyView) return;
  const id = verifyContact();
  const rec = id ? verifyStore.get(id) : null;
  verifyView.render(rec, id);
  const phase = phaseOf(rec);
  const running = phase === 'running';
  const live = id !== null && video.state(id) === 'live' && rt.isConnected();
  const reference = els.verifyReference.value === 'document' ? 'document' : 'on_file';
  const documentOk = rec?.document?.ok === true;
  els.verifyReference.disabled = running;
  els.verifyDocument.hidden = reference !== 'document';
  els.verifyAskDoc.disabled = id === null;
  els.verifyCapture.disabled = !live || running || verifyBusy('capture', id);
  els.verifyStart.disabled =
    !live || running || verifyBusy('start', id) || (reference === 'document' && !documentOk);
  els.verifyStart.hidden = running;
  els.verifyCancel.hidden = !running;
  els.verifyCancel.disabled = !running || verifyBusy('cancel', id);
  // what the agent needs to do next, if anything keeps them from starting
  let hint = null;
  if (id === null) hint = 'verify.hint.no_contact';
  else if (!live) hint = 'verify.hint.no_video';
  else if (reference === 'document' && !documentOk && !running) hint = 'verify.hint.document_needed';
  else if (phase === 'idle') hint = 'verify.hint.ready';
  els.verifyHint.hidden = hint === null;
  if (hint) setText(els.verifyHint, { key: hint });
  // the captured ID document, or why it was refused
  const doc = rec?.document;
  const capturing = verifyBusy('capture', id);
  els.verifyDocStatus.hidden = !capturing && !doc;
  els.verifyDocStatus.dataset.ok = capturing ? '' : String(doc?.ok === true);
  if (capturing) setText(els.verifyDocStatus, { key: 'verify.document.capturing' });
  else if (doc?.ok) setText(els.verifyDocStatus, { key: 'verify.document.ok' });
  else if (doc) setText(els.verifyDocStatus, { key: 'verify.document.refused', args: { reason: referenceProblem(doc) } });
  // the decision form: a new result starts with an empty reason
  const attempt = phase === 'result' ? rec.attemptId : null;
  if (attempt !== verifyShownAttempt) {
    verifyShownAttempt = attempt;
    els.verifyReason.value = '';
    showReasonError(false);
  }
  const deciding = verifyBusy('decide', id);
  els.verifyApprove.disabled = deciding || !rt.isConnected();
  els.verifyReject.disabled = deciding || !rt.isConnected();
  applyVerifyFocus();
}

function showReasonError(visible) {
  els.verifyReasonError.hidden = !visible;
  if (visible) els.verifyReason.setAttribute('aria-invalid', 'true');
  else els.verifyReason.removeAttribute('aria-invalid');
}

/** A refused verify.* request, as a notice that says what to do. */
function verifyErrorMessage(action, err, reference) {
  const code = err?.code;
  if (action === 'start') {
    if (code === 'not_found' && reference === 'on_file') return { key: 'verify.error.no_reference' };
    if (code === 'out_of_order' && reference === 'document' && !verifyStore.get(verifyContact())?.document?.ok) {
      return { key: 'verify.error.document_first' };
    }
    if (code === 'out_of_order') return { key: 'verify.error.start' };
    if (code === 'invalid_message') return { key: 'verify.error.reference_refused' };
  }
  if (action === 'capture' && code === 'out_of_order') return { key: 'verify.error.capture' };
  if (action === 'cancel' && code === 'out_of_order') return { key: 'verify.error.cancel' };
  if (action === 'decide') {
    if (code === 'invalid_message') return { key: 'verify.decide.reason_required' };
    if (code === 'out_of_order' || code === 'not_found') return { key: 'verify.error.decide' };
  }
  return realtimeErrorMessage(code);
}

/** Send a verify.* request for the panel's contact; refusals become notices. */
async function verifyRequest(action, type, fields = {}, context = {}) {
  const id = verifyContact();
  if (!id || verifyPending.has(action)) return false;
  verifyPending.set(action, id);
  renderVerify();
  try {
    await rt.request(type, { contact_id: id, ...fields });
    return true;
  } catch (err) {
    notice(verifyErrorMessage(action, err, context.reference));
    if (verifyFocus) {
      // refused: the control the agent used stays where it was
      const { from } = verifyFocus;
      verifyFocus = null;
      queueMicrotask(() => {
        const active = document.activeElement;
        if (usable(from) && (active === null || active === document.body || active === els.verifyStatus)) from.focus();
      });
    }
    return false;
  } finally {
    verifyPending.delete(action);
    renderVerify();
  }
}

function startVerify() {
  const id = verifyContact();
  if (!id) return;
  const reference = els.verifyReference.value === 'document' ? 'document' : 'on_file';
  verifyStore.expect(id, reference);
  verifyFocus = { from: els.verifyStart, to: els.verifyCancel };
  void verifyRequest('start', 'verify.start', { reference }, { reference });
}

async function decideVerify(approve) {
  const id = verifyContact();
  const rec = id ? verifyStore.get(id) : null;
  if (!rec || phaseOf(rec) !== 'result') return;
  const reason = els.verifyReason.value.trim();
  if (!approve && reason === '') {
    showReasonError(true);
    els.verifyReason.focus();
    return;
  }
  showReasonError(false);
  verifyFocus = { from: approve ? els.verifyApprove : els.verifyReject, to: els.verifyOutcome };
  const fields = { attempt_id: rec.attemptId, approve };
  if (reason !== '') fields.reason = reason;
  if (await verifyRequest('decide', 'verify.decide', fields)) els.verifyReason.value = '';
}

/** Put a request for the ID document into the chat composer (the agent sends it). */
function askForDocument() {
  const id = verifyContact();
  if (!id) return;
  if (id !== selected || !selectedOpen) select(id);
  els.input.value = t('verify.document.ask_text');
  els.input.focus();
}

function wireVerify() {
  els.verifyReference.addEventListener('change', renderVerify);
  els.verifyAskDoc.addEventListener('click', askForDocument);
  els.verifyCapture.addEventListener('click', () => {
    verifyFocus = { from: els.verifyCapture, to: els.verifyCapture }; // back once it is done
    void verifyRequest('capture', 'verify.capture_document');
  });
  els.verifyStart.addEventListener('click', startVerify);
  els.verifyCancel.addEventListener('click', () => {
    verifyFocus = { from: els.verifyCancel, to: els.verifyStart };
    void verifyRequest('cancel', 'verify.cancel');
  });
  els.verifyApprove.addEventListener('click', () => void decideVerify(true));
  els.verifyReject.addEventListener('click', () => void decideVerify(false));
  els.verifyDecide.addEventListener('submit', (event) => event.preventDefault());
  els.verifyReason.addEventListener('input', () => {
    if (els.verifyReason.value.trim() !== '') showReasonError(false);
  });
  document.addEventListener(LANGUAGE_CHANGE_EVENT, renderVerify); // composed strings
}

// ---- wiring ---------------------------------------------------------------------------

function onAssigned(f) {
  const known = contacts.get(f.contact_id);
  const fresh = !known;
  contacts.set(f.contact_id, {
    id: f.contact_id,
    customerName: f.customer_name ?? known?.customerName ?? '',
    skill: f.skill,
    customerOnline: known?.customerOnline ?? true,
  });
  if (fresh && rt.status === 'open') {
    notice({ key: 'agent.note.new_contact', args: { name: f.customer_name ?? '' } }, 'info');
  }
  if (f.contact_id === selected) {
    if (!selectedOpen) select(f.contact_id);
    else {
      renderConversation();
      log.refreshLabels();
    }
  }
  renderList();
  bindVideo();
}

async function main() {
  const user = await ready;
  mountFollowups(document.getElementById('followups-slot')); // low-score call-backs
  prefsKey = `vbank.agent.${user.id}`;
  els.agentId.textContent = String(user.id);
  rt = new Realtime({ userId: user.id, bannerEl: $('connection-banner') });
  trading = mountTradingAgent($('trading-slot'), rt);
  log = new ChatLog(els.log, { selfRole: 'agent', label });
  verifyStore = new VerifyStore({
    storageKey: `${SESSION_CACHE_PREFIX}${user.id}.verify`,
    onChange: (id) => {
      renderItem(id);
      if (id === verifyContact()) renderVerify();
    },
  });
  verifyView = new VerifyView(els.verifyPanel, { role: 'agent' });
  video = new VideoCall({
    rt,
    role: 'agent',
    els: {
      state: $('video-state'),
      request: $('video-request'),
      hangup: $('video-hangup'),
      stage: $('video-stage'),
      local: $('local-video'),
      remote: $('remote-video'),
    },
    onNotice: notice,
    onChange: (id) => {
      renderItem(id);
      bindVideo();
    },
  });
  showPrefs(loadPrefs());

  // A reload shows the cached contacts at once; the resync confirms or drops them.
  for (const id of rt.contactIds()) {
    const info = rt.info(id);
    if (info?.type === 'contact.assigned') onAssigned(info);
  }

  rt.onSync(restoreStatus);
  verifyStore.attach(rt);
  rt.on('contact.assigned', onAssigned);
  rt.on('chat.message', (f) => {
    if (f.contact_id === selected && selectedOpen) {
      log.add(f);
      markRead();
    }
    renderItem(f.contact_id);
  });
  rt.on('chat.pending', (e) => e.contact_id === selected && log.addPending(e));
  rt.on('chat.acked', (e) => e.contact_id === selected && log.acked(e));
  rt.on('chat.failed', (e) => {
    if (e.contact_id === selected) log.failed(e);
    reportError(e);
  });
  rt.on('contact.closed', (f) => {
    const known = ['customer', 'agent', 'timeout', 'abandoned', 'system'];
    leave(f.contact_id, { key: `agent.closed.${known.includes(f.reason) ? f.reason : 'system'}` });
  });
  rt.on('contact.gone', (f) => leave(f.contact_id, { key: 'agent.closed.gone' }));
  rt.on('presence', (f) => {
    const c = contacts.get(f.contact_id);
    if (!c || f.role !== 'customer') return;
    c.customerOnline = f.online;
    renderItem(f.contact_id);
    if (f.contact_id === selected) renderConversation();
  });
  rt.on('error', reportError);
  rt.on('open', () => {
    renderList();
    markRead();
  });
  rt.on('status', renderVerify);

  els.status.addEventListener('change', () => void applyStatus());
  els.capacity.addEventListener('change', () => void applyStatus());
  // typing a valid number applies it shortly, without waiting for the field to lose focus
  els.capacity.addEventListener('input', () => {
    clearTimeout(capacityTimer);
    if (validCapacity(els.capacity.value.trim()) === undefined) return;
    capacityTimer = setTimeout(() => void applyStatus(), 600);
  });
  els.transferForm.addEventListener('submit', (event) => void transfer(event));
  els.close.addEventListener('click', () => void closeContact());
  wireVerify();
  wireComposer(els.chatForm, els.input, (text) => {
    if (!selected || !selectedOpen) return false;
    rt.sendChat(selected, text);
    return true;
  });
  document.addEventListener('visibilitychange', markRead);

  renderList();
  renderConversation();
  bindVideo();
  rt.start();
}

void main();
