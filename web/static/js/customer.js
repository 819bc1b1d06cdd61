// Customer page: start a contact, wait in the queue, chat, escalate to video with consent,
// and follow the identity check the adviser runs (rendering in verify.js).

import { ChatLog, wireComposer } from './chat.js';
import { SESSION_CACHE_PREFIX } from './chrome.js';
import { realtimeErrorMessage, showNotice } from './errors.js';
import { setText } from './i18n.js';
import { randomHex, Realtime } from './realtime.js';
import { ready } from './shell.js';
import { showSurvey } from './survey.js';
import { mountTradingCustomer } from './trading_customer.js';
import { phaseOf, VerifyStore, VerifyView } from './verify.js';
import { VideoCall } from './video.js';

const $ = (id) => document.getElementById(id);

const els = {
  notices: $('notices'),
  contactView: $('contact-view'),
  queue: $('queue-position'),
  agentLine: $('agent-line'),
  agentName: $('agent-name'),
  presence: $('presence-note'),
  log: $('chat-log'),
  chatForm: $('chat-form'),
  composer: $('composer'),
  input: $('chat-input'),
  send: $('chat-send'),
  close: $('close-contact'),
  startForm: $('start-form'),
  startIntro: $('start-intro'),
  skill: $('skill'),
  startText: $('start-text'),
  start: $('start-contact'),
  dialog: $('consent-dialog'),
  consentText: $('consent-text'),
  consentVersion: $('consent-version'),
  termsLabel: document.querySelector('#consent-dialog .consent-terms-label'),
  accept: $('consent-accept'),
  decline: $('consent-decline'),
  stage: $('video-stage'),
  verifyPanel: $('verify-panel'),
};

/** The customer's current contact: {id, state: queued|assigned|closed, agentName}. */
let contact = null;
let starting = false;
let rt;
let log;
let video;
let verifyStore;
let verifyView;
let trading = null; // confirmation cards and balances (trading_customer.js)
let verifyScrolledFor = null;
/** Contacts for which the customer accepted the current video attempt in this tab. */
const consented = new Set();
/** The video.consent_required being answered: {contact_id, consent_version}. */
let consentAsked = null;

function notice(message, level = 'error') {
  showNotice(els.notices, message, { level });
}

function reportError(err) {
  notice(realtimeErrorMessage(err?.code));
}

function label(msg) {
  if (msg.sender === 'customer') return { key: 'chat.sender.you' };
  if (msg.sender === 'agent') return { key: 'chat.sender.adviser' };
  return { key: 'chat.sender.system' };
}

function setQueue(position, waitS) {
  els.queue.dataset.position = String(position);
  els.queue.dataset.wait = String(waitS);
  const minutes = Math.max(1, Math.round(waitS / 60));
  els.queue.replaceChildren();
  const pos = document.createElement('span');
  pos.className = 'queue-number';
  setText(pos, { key: 'customer.queue.position', args: { position } });
  const wait = document.createElement('span');
  wait.className = 'queue-wait';
  setText(wait, waitS < 60 ? { key: 'customer.queue.wait_short' } : { key: 'customer.queue.wait_minutes', args: { minutes } });
  els.queue.append(pos, ' ', wait);
}

function render() {
  const state = contact?.state ?? 'none';
  const open = state === 'queued' || state === 'assigned';
  els.contactView.hidden = contact === null;
  els.contactView.dataset.state = state;
  els.queue.hidden = state !== 'queued' || contact.position === null;
  els.agentLine.hidden = state !== 'assigned';
  if (state !== 'assigned') els.presence.hidden = true;
  els.composer.hidden = !open;
  els.close.parentElement.hidden = !open;
  els.close.disabled = !open;
  els.startForm.hidden = open || rt.status !== 'open';
  setText(els.startIntro, state === 'closed' ? { key: 'customer.start.again' } : { key: 'customer.start.intro' });
  els.start.disabled = starting || open || rt.status !== 'open';
  video.bind(open ? contact.id : null, state === 'assigned');
  trading?.show(contact?.id ?? null);
  renderVerify();
}

/** The identity check of the current contact: shown from its first progress frame on. */
function renderVerify() {
  if (!verifyView) return;
  const id = contact && contact.state !== 'closed' ? contact.id : null;
  const rec = id ? verifyStore.get(id) : null;
  verifyView.render(rec, id);
  const phase = phaseOf(rec);
  els.verifyPanel.hidden = phase === 'idle';
  // while the challenge runs the customer's own picture is the big one (app.css)
  els.stage.dataset.verifying = String(phase === 'running');
  if (phase === 'running' && rec.attemptId !== verifyScrolledFor) {
    verifyScrolledFor = rec.attemptId;
    // narrow screens put the video below the chat: bring camera and instructions into view
    const smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    els.verifyPanel.closest('section')?.scrollIntoView({ block: 'nearest', behavior: smooth ? 'smooth' : 'auto' });
  }
}

/** Show a contact (from the cache or the server), rebuilding the log if it is another one. */
function adopt(contactId) {
  if (contact?.id === contactId && contact.state !== 'closed') return;
  contact = { id: contactId, state: 'queued', agentName: '', position: null };
  log.render(rt.history(contactId), rt.outbox(contactId));
  markRead();
}

function markRead() {
  if (!contact || document.visibilityState !== 'visible') return;
  const seq = log.maxSeq;
  if (seq > 0) rt.markRead(contact.id, seq);
}

function onQueue(f) {
  const wasAssigned = contact?.id === f.contact_id && contact.state === 'assigned';
  adopt(f.contact_id);
  contact.state = 'queued';
  contact.position = f.position;
  setQueue(f.position, f.estimated_wait_s);
  if (wasAssigned && rt.status === 'open') log.addNote({ key: 'customer.note.requeued' });
  render();
}

function onAssigned(f) {
  const before = contact?.id === f.contact_id ? contact : null;
  adopt(f.contact_id);
  const live = rt.status === 'open';
  if (live && before?.state === 'queued') {
    log.addNote({ key: 'customer.note.joined', args: { name: f.agent_name } });
  } else if (live && before?.state === 'assigned' && before.agentName !== f.agent_name) {
    log.addNote({ key: 'customer.note.transferred', args: { name: f.agent_name } });
  }
  contact.state = 'assigned';
  contact.agentName = f.agent_name;
  els.agentName.textContent = f.agent_name;
  render();
}

function ended(contactId, reason) {
  if (contact?.id !== contactId) return;
  contact.state = 'closed';
  consented.delete(contactId);
  closeConsent();
  const known = ['customer', 'agent', 'timeout', 'abandoned', 'system'];
  log.addNote({ key: `customer.closed.${known.includes(reason) ? reason : 'system'}` }, { variant: 'end' });
  render();
}

async function startContact(event) {
  event.preventDefault();
  if (starting) return;
  const text = els.startText.value.trim();
  const fields = { skill: els.skill.value };
  if (text) {
    fields.text = text;
    fields.client_id = `k${randomHex(8)}`;
  }
  starting = true;
  render();
  try {
    const ack = await rt.request('contact.start', fields);
    els.startText.value = '';
    contact = null;
    adopt(ack.contact_id);
    render();
    els.input.focus();
  } catch (err) {
    reportError(err);
  } finally {
    starting = false;
    render();
  }
}

async function closeContact() {
  if (!contact) return;
  els.close.disabled = true;
  try {
    await rt.request('contact.close', { contact_id: contact.id });
  } catch (err) {
    reportError(err);
  } finally {
    render();
  }
}

// ---- consent --------------------------------------------------------------------------

function openConsent(f) {
  if (!contact || f.contact_id !== contact.id || contact.state !== 'assigned') return;
  consentAsked = { contact_id: f.contact_id, consent_version: f.consent_version };
  const text = typeof f.consent_text === 'string' ? f.consent_text.trim() : '';
  els.consentText.textContent = text;
  els.consentText.parentElement.hidden = text === '';
  els.termsLabel.hidden = text === '';
  setText(els.consentVersion, { key: 'consent.version', args: { version: f.consent_version } });
  if (!els.dialog.open) els.dialog.showModal();
}

function closeConsent() {
  consentAsked = null;
  if (els.dialog.open) els.dialog.close();
}

function answerConsent(accept) {
  const asked = consentAsked;
  closeConsent();
  if (!asked) return;
  if (accept) consented.add(asked.contact_id);
  const sent = rt.send('video.consent', { ...asked, accept });
  if (sent === null) {
    consented.delete(asked.contact_id);
    notice({ key: 'ws_errors.offline' });
  }
}

function onVideoState(f) {
  // A new attempt needs a new consent; leaving consent_pending closes a dialog still open.
  if (f.state === 'none' || f.state === 'ended' || f.state === 'requested') consented.delete(f.contact_id);
  if (f.state !== 'consent_pending' && consentAsked?.contact_id === f.contact_id) closeConsent();
}

// ---- wiring ---------------------------------------------------------------------------

async function main() {
  const user = await ready;
  rt = new Realtime({ userId: user.id, bannerEl: $('connection-banner') });
  trading = mountTradingCustomer($('trading-slot'), rt);
  log = new ChatLog(els.log, { selfRole: 'customer', label });
  verifyStore = new VerifyStore({
    storageKey: `${SESSION_CACHE_PREFIX}${user.id}.verify`,
    onChange: (id) => {
      if (id === contact?.id) renderVerify();
    },
  });
  verifyView = new VerifyView(els.verifyPanel, { role: 'customer' });
  verifyStore.attach(rt);
  video = new VideoCall({
    rt,
    role: 'customer',
    els: {
      state: $('video-state'),
      request: $('video-request'),
      hangup: $('video-hangup'),
      stage: $('video-stage'),
      local: $('local-video'),
      remote: $('remote-video'),
    },
    mayStart: (id) => consented.has(id) && contact?.id === id,
    onNotice: notice,
  });

  // A reload shows the cached conversation at once; the resync confirms or ends it.
  const cached = rt.contactIds().find((id) => rt.info(id));
  if (cached) {
    const info = rt.info(cached);
    if (info.type === 'contact.assigned') onAssigned(info);
    else onQueue(info);
  }

  rt.on('queue.position', onQueue);
  rt.on('contact.assigned', onAssigned);
  rt.on('chat.message', (f) => {
    if (!contact || contact.id !== f.contact_id) {
      if (contact && contact.state !== 'closed') return;
      adopt(f.contact_id);
      render();
    }
    log.add(f);
    markRead();
  });
  rt.on('chat.pending', (e) => e.contact_id === contact?.id && log.addPending(e));
  rt.on('chat.acked', (e) => e.contact_id === contact?.id && log.acked(e));
  rt.on('chat.failed', (e) => {
    if (e.contact_id === contact?.id) log.failed(e);
    reportError(e);
  });
  rt.on('contact.closed', (f) => {
    ended(f.contact_id, f.reason);
    void showSurvey(f.contact_id); // the bank's satisfaction survey, if one was offered
  });
  rt.on('contact.gone', (f) => ended(f.contact_id, 'system'));
  rt.on('presence', (f) => {
    if (f.contact_id !== contact?.id || f.role !== 'agent') return;
    setText(els.presence, { key: 'customer.presence.agent_offline' });
    els.presence.hidden = f.online;
  });
  rt.on('video.consent_required', openConsent);
  rt.on('video.state', onVideoState);
  rt.on('video.ended', (f) => {
    consented.delete(f.contact_id);
    if (consentAsked?.contact_id === f.contact_id) closeConsent();
  });
  rt.on('error', reportError);
  rt.on('status', render);
  rt.on('open', () => {
    render();
    markRead();
  });

  els.startForm.addEventListener('submit', (event) => void startContact(event));
  els.close.addEventListener('click', () => void closeContact());
  wireComposer(els.chatForm, els.input, (text) => {
    if (!contact || contact.state === 'closed') return false;
    rt.sendChat(contact.id, text);
    return true;
  });
  els.accept.addEventListener('click', () => answerConsent(true));
  els.decline.addEventListener('click', () => answerConsent(false));
  els.dialog.addEventListener('cancel', (event) => {
    event.preventDefault(); // Escape means "no": answer explicitly instead of leaving it pending
    answerConsent(false);
  });
  document.addEventListener('visibilitychange', markRead);

  render();
  rt.start();
}

void main();
