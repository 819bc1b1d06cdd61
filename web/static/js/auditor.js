// Auditor console: search sessions (contacts), open one, read its timeline, play its
// recordings, see the identity-verification evidence, export the evidence bundle.
//
// Auditors only read. The server records every search, view, playback and export in the
// audit log, so this page holds no secrets of its own and keeps nothing in storage.
// User data (names, chat text, reasons) is only ever set with textContent.

import { api, ApiError, getCsrfToken } from './api.js';
import { clearMessage, showError, showMessage, showNotice } from './errors.js';
import { currentLanguage, LANGUAGE_CHANGE_EVENT, setText, t } from './i18n.js';
import { ready } from './shell.js';

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 25;
const CONTACT_HASH = /^#contact=([A-Za-z0-9_-]{1,64})$/;

const els = {
  notices: $('notices'),
  form: $('search-form'),
  customer: $('search-customer'),
  agent: $('search-agent'),
  from: $('search-from'),
  to: $('search-to'),
  outcome: $('search-outcome'),
  submit: $('search-submit'),
  searchError: $('search-error'),
  status: $('results-status'),
  table: $('results-table'),
  results: $('results'),
  more: $('more-results'),
  view: $('session-view'),
  heading: $('session-heading'),
  integrity: $('integrity'),
  summary: $('session-summary'),
  exportButton: $('export'),
  exportNote: $('export-note'),
  recordings: $('recordings'),
  recordingsEmpty: $('recordings-empty'),
  verifications: $('verifications'),
  verificationsEmpty: $('verifications-empty'),
  timeline: $('timeline'),
};

const ROLE_LABELS = {
  customer: { key: 'role.customer' },
  agent: { key: 'role.agent' },
  auditor: { key: 'role.auditor' },
  supervisor: { key: 'role.supervisor' },
  system: { key: 'auditor.actor.system' },
};

const SKILL_LABELS = {
  accounts: { key: 'skill.accounts' },
  cards: { key: 'skill.cards' },
  wealth: { key: 'skill.wealth' },
  loans: { key: 'skill.loans' },
  general: { key: 'skill.general' },
};

const SIDE_LABELS = {
  customer: { key: 'auditor.recordings.customer' },
  agent: { key: 'auditor.recordings.agent' },
};

const EVENT_LABELS = {
  'contact.queued': { key: 'auditor.event.contact_queued' },
  'contact.assigned': { key: 'auditor.event.contact_assigned' },
  'contact.requeued': { key: 'auditor.event.contact_requeued' },
  'contact.transferred': { key: 'auditor.event.contact_transferred' },
  'contact.closed': { key: 'auditor.event.contact_closed' },
  'chat.message': { key: 'auditor.event.chat_message' },
  'video.requested': { key: 'auditor.event.video_requested' },
  'video.consent': { key: 'auditor.event.video_consent' },
  'video.live': { key: 'auditor.event.video_live' },
  'video.ended': { key: 'auditor.event.video_ended' },
  'recording.finalised': { key: 'auditor.event.recording_finalised' },
  'verify.started': { key: 'auditor.event.verify_started' },
  'verify.attempt_result': { key: 'auditor.event.verify_attempt_result' },
  'verify.decision': { key: 'auditor.event.verify_decision' },
  'verify.cancelled': { key: 'auditor.event.verify_cancelled' },
  'verify.failed': { key: 'auditor.event.verify_failed' },
  'verify.document_refused': { key: 'auditor.event.verify_document_refused' },
  'evidence.viewed': { key: 'auditor.event.evidence_viewed' },
  'transaction.executed': { key: 'auditor.event.transaction_executed' },
  'auditor.viewed': { key: 'auditor.event.auditor_viewed' },
  'auditor.playback': { key: 'auditor.event.auditor_playback' },
  'auditor.export': { key: 'auditor.event.auditor_export' },
};

const INTEGRITY = {
  ok: { key: 'auditor.integrity.ok' },
  pending: { key: 'auditor.integrity.pending' },
  not_checkpointed: { key: 'auditor.integrity.not_checkpointed' },
  failed: { key: 'auditor.integrity.failed' },
  error: { key: 'auditor.integrity.error' },
};

const STEP_LABELS = {
  blink: { key: 'verify.step.agent.blink' },
  turn_left: { key: 'verify.step.agent.turn_left' },
  turn_right: { key: 'verify.step.agent.turn_right' },
};

const LIVENESS_REASONS = {
  timeout: { key: 'verify.reason.timeout' },
  face_lost: { key: 'verify.reason.face_lost' },
  wrong_direction: { key: 'verify.reason.wrong_direction' },
  challenge_incomplete: { key: 'verify.reason.challenge_incomplete' },
  static_video: { key: 'verify.reason.static_video' },
  no_motion: { key: 'verify.reason.no_motion' },
  rigid_face: { key: 'verify.reason.rigid_face' },
  insufficient_frames: { key: 'verify.reason.insufficient_frames' },
};

const DECISIONS = {
  verified: { key: 'auditor.verify.decision_verified' },
  rejected: { key: 'auditor.verify.decision_rejected' },
};

const YES = { key: 'auditor.yes' };
const NO = { key: 'auditor.no' };
const DASH = { text: '—' };

/** The search being paged, the rows shown, and the open session. */
let query = null;
let nextCursor = null;
let openId = null;
let searching = false;

function notice(message, level = 'error') {
  showNotice(els.notices, message, { level });
}

function make(tag, className, message) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (message) setText(el, message);
  return el;
}

// ---- dates -------------------------------------------------------------------------------

function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  return new Intl.DateTimeFormat(currentLanguage(), { dateStyle: 'medium', timeStyle: 'medium' }).format(when);
}

/** A <time> that re-formats itself when the language changes (see refreshTimes). */
function timeEl(iso) {
  if (!iso) return make('span', 'muted', DASH);
  const el = document.createElement('time');
  el.dateTime = iso;
  el.textContent = formatTime(iso);
  return el;
}

function refreshTimes(root = document) {
  for (const el of root.querySelectorAll('time[datetime]')) el.textContent = formatTime(el.dateTime);
}

/** The auditor's local midnight of a yyyy-mm-dd input as an ISO instant (to: the next one). */
function dayBound(value, end) {
  const [y, m, d] = value.split('-').map(Number);
  if (!y || !m || !d) return null;
  return new Date(y, m - 1, end ? d + 1 : d).toISOString();
}

// ---- search ------------------------------------------------------------------------------

function readQuery() {
  const q = {};
  const customer = els.customer.value.trim();
  const agent = els.agent.value.trim();
  if (customer) q.customer = customer;
  if (agent) q.agent = agent;
  const from = els.from.value ? dayBound(els.from.value, false) : null;
  const to = els.to.value ? dayBound(els.to.value, true) : null;
  if (from) q.from = from;
  if (to) q.to = to;
  if (els.outcome.value) q.outcome = els.outcome.value;
  if (q.from && q.to && q.from >= q.to) return null;
  return q;
}

async function search({ more = false } = {}) {
  if (searching) return;
  if (!more) {
    clearMessage(els.searchError);
    const q = readQuery();
    if (q === null) {
      showMessage(els.searchError, { key: 'auditor.search.bad_dates' });
      return;
    }
    query = q;
    nextCursor = null;
  }
  const params = new URLSearchParams({ ...query, limit: String(PAGE_SIZE) });
  if (more && nextCursor) params.set('cursor', nextCursor);
  searching = true;
  els.submit.disabled = true;
  els.more.disabled = true;
  setText(els.status, { key: 'auditor.sessions.loading' });
  try {
    const body = await api('GET', `/api/auditor/sessions?${params}`);
    if (!more) els.results.replaceChildren();
    for (const row of body.sessions) els.results.append(sessionRow(row));
    nextCursor = body.next_cursor;
    const shown = els.results.children.length;
    els.table.hidden = shown === 0;
    els.more.hidden = !nextCursor;
    setText(
      els.status,
      shown === 0 ? { key: 'auditor.sessions.none' } : { key: 'auditor.sessions.count', args: { count: shown } },
    );
  } catch (err) {
    showError(els.searchError, err);
    setText(els.status, { key: 'auditor.sessions.failed' });
  } finally {
    searching = false;
    els.submit.disabled = false;
    els.more.disabled = false;
  }
}

function cell(content, className) {
  const td = make('td', className);
  if (content instanceof Node) td.append(content);
  else setText(td, content);
  return td;
}

function sessionRow(row) {
  const tr = make('tr', 'session-row');
  tr.dataset.contactId = row.contact_id;
  tr.dataset.state = row.state;
  if (row.contact_id === openId) tr.setAttribute('aria-current', 'true');
  const open = make('button', 'link-button');
  open.type = 'button';
  open.textContent = row.customer?.name ?? String(row.customer?.id ?? '');
  open.addEventListener('click', (ev) => {
    ev.stopPropagation();
    void openSession(row.contact_id);
  });
  const customer = make('td');
  customer.append(open);
  if (row.customer?.username) customer.append(' ', make('span', 'muted', { text: `@${row.customer.username}` }));
  tr.append(
    cell(timeEl(row.created_at)),
    customer,
    cell(row.agent ? { text: row.agent.name ?? String(row.agent.id) } : DASH),
    cell(SKILL_LABELS[row.skill] ?? { text: row.skill }),
    cell(row.closed_at ? timeEl(row.closed_at) : { key: 'auditor.sessions.open' }),
    cell(row.verified_at ? timeEl(row.verified_at) : DASH),
    cell({ text: String(row.messages) }, 'num'),
    cell({ text: String(row.recordings) }, 'num'),
  );
  tr.addEventListener('click', () => void openSession(row.contact_id));
  return tr;
}

// ---- one session -------------------------------------------------------------------------

async function openSession(contactId) {
  let body;
  try {
    body = await api('GET', `/api/auditor/sessions/${encodeURIComponent(contactId)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) notice({ key: 'auditor.session.not_found' });
    else notice(err instanceof ApiError && err.detail ? { text: err.detail } : { key: 'auditor.session.failed' });
    return;
  }
  openId = contactId;
  for (const tr of els.results.querySelectorAll('tr.session-row')) {
    if (tr.dataset.contactId === contactId) tr.setAttribute('aria-current', 'true');
    else tr.removeAttribute('aria-current');
  }
  if (window.location.hash !== `#contact=${contactId}`) {
    window.history.replaceState(null, '', `#contact=${contactId}`);
  }
  renderSession(body);
  els.view.hidden = false;
  els.heading.focus();
}

function renderSession(body) {
  const c = body.contact;
  els.view.dataset.contactId = c.contact_id;
  setText(els.heading, { key: 'auditor.session.title', args: { name: c.customer?.name ?? '' } });
  renderIntegrity(body.integrity);
  renderSummary(c, body.events.length);
  renderExport(body.export_available);
  renderRecordings(body.recordings);
  renderVerifications(body.verifications);
  els.timeline.replaceChildren(...body.events.map(timelineItem));
}

function renderIntegrity(integrity) {
  const status = integrity?.status ?? 'error';
  els.integrity.dataset.status = status;
  els.integrity.dataset.ok = integrity?.ok === true ? 'true' : integrity?.ok === false ? 'false' : 'unknown';
  const message = INTEGRITY[status] ?? INTEGRITY.error;
  setText(els.integrity, {
    ...message,
    args: {
      size: integrity?.checkpoint_size ?? 0,
      pending: integrity?.pending ?? 0,
      reason: integrity?.reason ?? '',
    },
  });
}

function summaryEntry(label, value) {
  const dt = make('dt', '', label);
  const dd = make('dd');
  if (value instanceof Node) dd.append(value);
  else setText(dd, value);
  return [dt, dd];
}

function person(p) {
  return p ? { text: p.name ?? `#${p.id}` } : DASH;
}

function renderSummary(c, eventCount) {
  els.summary.replaceChildren(
    ...summaryEntry({ key: 'auditor.col.customer' }, person(c.customer)),
    ...summaryEntry({ key: 'auditor.col.agent' }, person(c.agent)),
    ...summaryEntry({ key: 'auditor.col.skill' }, SKILL_LABELS[c.skill] ?? { text: c.skill }),
    ...summaryEntry({ key: 'auditor.col.started' }, timeEl(c.created_at)),
    ...summaryEntry({ key: 'auditor.col.closed' }, c.closed_at ? timeEl(c.closed_at) : { key: 'auditor.sessions.open' }),
    ...summaryEntry({ key: 'auditor.col.verified' }, c.verified_at ? timeEl(c.verified_at) : DASH),
    ...summaryEntry({ key: 'auditor.col.messages' }, { text: String(c.messages) }),
    ...summaryEntry({ key: 'auditor.session.events' }, { text: String(eventCount) }),
    ...summaryEntry({ key: 'auditor.session.reference' }, { text: c.contact_id }),
  );
}

function renderExport(available) {
  els.exportButton.disabled = !available;
  setText(els.exportNote, available ? { key: 'auditor.export.hint' } : { key: 'auditor.export.unavailable' });
}

function formatBytes(n) {
  if (typeof n !== 'number') return '';
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1024))} KB`;
}

function renderRecordings(recordings) {
  els.recordingsEmpty.hidden = recordings.length > 0;
  const byAttempt = new Map();
  for (const rec of recordings) {
    if (!byAttempt.has(rec.attempt)) byAttempt.set(rec.attempt, []);
    byAttempt.get(rec.attempt).push(rec);
  }
  const groups = [];
  for (const [attempt, recs] of [...byAttempt.entries()].sort((a, b) => a[0] - b[0])) {
    const group = make('div', 'recording-group');
    group.dataset.attempt = String(attempt);
    group.append(make('h4', '', { key: 'auditor.recordings.call', args: { n: attempt } }));
    const row = make('div', 'recording-row');
    for (const rec of recs.sort((a, b) => (a.side === 'customer' ? -1 : b.side === 'customer' ? 1 : 0))) {
      const figure = make('figure', 'recording-figure');
      const video = document.createElement('video');
      video.className = 'recording';
      video.dataset.side = rec.side;
      video.dataset.attempt = String(rec.attempt);
      video.controls = true;
      video.preload = 'none'; // no bytes (and no audited playback) until the auditor presses play
      video.playsInline = true;
      video.src = rec.url;
      const sideLabel = SIDE_LABELS[rec.side] ?? SIDE_LABELS.agent;
      video.setAttribute('data-i18n-aria-label', sideLabel.key);
      video.setAttribute('aria-label', t(sideLabel.key));
      video.addEventListener('error', () => notice({ key: 'auditor.recordings.failed' }));
      const caption = make('figcaption');
      caption.append(make('span', 'recording-side', SIDE_LABELS[rec.side] ?? { text: rec.side }));
      const meta = [];
      if (typeof rec.duration_s === 'number') meta.push(`${rec.duration_s.toFixed(1)} s`);
      if (typeof rec.bytes === 'number') meta.push(formatBytes(rec.bytes));
      if (meta.length) caption.append(' ', make('span', 'muted', { text: meta.join(' · ') }));
      if (rec.encrypted) caption.append(' ', make('span', 'tag', { key: 'auditor.recordings.encrypted' }));
      figure.append(video, caption);
      row.append(figure);
    }
    group.append(row);
    groups.push(group);
  }
  els.recordings.replaceChildren(...groups);
}

function stat(label, value) {
  const wrap = make('div', 'audit-stat');
  wrap.append(make('dt', '', label));
  const dd = make('dd');
  if (value instanceof Node) dd.append(value);
  else setText(dd, value);
  wrap.append(dd);
  return wrap;
}

function snapshot(url, kind) {
  const figure = make('figure', 'snapshot-figure');
  const label = kind === 'reference' ? { key: 'auditor.verify.reference' } : { key: 'auditor.verify.live' };
  if (url) {
    const img = document.createElement('img');
    img.className = 'snapshot';
    img.dataset.kind = kind;
    img.decoding = 'async';
    img.alt = t(label.key);
    img.setAttribute('data-i18n-aria-label', label.key);
    img.src = url; // each load is an audited view on the server
    figure.append(img);
  } else {
    figure.append(make('p', 'placeholder', { key: 'auditor.verify.no_image' }));
  }
  figure.append(make('figcaption', '', label));
  return figure;
}

function yesNo(value) {
  if (value === true) return YES;
  if (value === false) return NO;
  return DASH;
}

/** Liveness findings ("code" or "code: detail"): the catalogue's wording, else as logged. */
function reasonList(reasons) {
  const list = make('ul', 'audit-list');
  for (const reason of reasons) {
    const code = reason.split(':')[0].trim();
    list.append(make('li', '', LIVENESS_REASONS[code] ?? { text: reason }));
  }
  return list;
}

function stepList(steps) {
  const list = make('ol', 'audit-list');
  for (const step of steps) list.append(make('li', '', STEP_LABELS[step] ?? { text: step }));
  return list;
}

function verificationCard(v) {
  const card = make('article', 'verification-card');
  card.dataset.attemptId = v.attempt_id;
  card.dataset.decision = v.decision ?? '';
  const images = make('div', 'snapshot-row');
  images.append(snapshot(v.snapshots.reference, 'reference'), snapshot(v.snapshots.live, 'live'));
  const stats = make('dl', 'audit-stats');
  stats.append(
    stat({ key: 'auditor.verify.started' }, timeEl(v.started_at)),
    stat(
      { key: 'auditor.verify.distance' },
      v.distance === null ? DASH : { key: 'auditor.verify.distance_value', args: { distance: v.distance.toFixed(3), threshold: v.threshold.toFixed(3) } },
    ),
    stat({ key: 'auditor.verify.match' }, yesNo(v.match)),
    stat({ key: 'auditor.verify.liveness' }, yesNo(v.liveness_passed)),
    stat({ key: 'auditor.verify.reasons' }, v.liveness_reasons.length ? reasonList(v.liveness_reasons) : DASH),
    stat({ key: 'auditor.verify.challenge' }, v.challenge.length ? stepList(v.challenge) : DASH),
    stat({ key: 'auditor.verify.good_frames' }, { text: String(v.good_frames) }),
    stat({ key: 'auditor.verify.decision' }, v.decision ? DECISIONS[v.decision] ?? { text: v.decision } : { key: 'auditor.verify.undecided' }),
    stat({ key: 'auditor.verify.decision_reason' }, v.decision_reason ? { text: v.decision_reason } : DASH),
    stat({ key: 'auditor.verify.decided_at' }, timeEl(v.decided_at)),
  );
  card.append(images, stats);
  return card;
}

function renderVerifications(list) {
  els.verificationsEmpty.hidden = list.length > 0;
  els.verifications.replaceChildren(...list.map(verificationCard));
}

// ---- timeline ----------------------------------------------------------------------------

function eventBody(ev) {
  const body = make('div', 'timeline-body');
  if (ev.chat) {
    const quote = make('blockquote', 'timeline-chat');
    quote.textContent = ev.chat.text;
    body.append(quote);
    if (!ev.chat.text_matches) body.append(make('p', 'verify-warning', { key: 'auditor.chat.text_changed' }));
  } else if (ev.consent) {
    body.append(
      make('p', '', {
        key: ev.consent.accepted ? 'auditor.consent.accepted' : 'auditor.consent.declined',
        args: { version: ev.consent.version ?? '' },
      }),
    );
    if (ev.consent.text) {
      const terms = make('details', 'timeline-consent');
      terms.append(make('summary', '', { key: 'auditor.consent.text' }), make('p', '', { text: ev.consent.text }));
      body.append(terms);
    }
  } else if (ev.recording) {
    const line = make('p');
    line.append(
      make('span', '', { key: 'auditor.recording.line', args: { n: ev.recording.attempt } }),
      ' ',
      make('span', 'tag', SIDE_LABELS[ev.recording.side] ?? { text: ev.recording.side }),
    );
    body.append(line);
  } else if (ev.verification && ev.type === 'verify.decision') {
    const v = ev.verification;
    body.append(
      make('p', '', v.decision ? DECISIONS[v.decision] ?? { text: v.decision } : { key: 'auditor.verify.undecided' }),
    );
    if (v.decision_reason) body.append(make('p', 'muted', { text: v.decision_reason }));
  } else if (ev.verification && ev.type === 'verify.attempt_result') {
    const v = ev.verification;
    body.append(
      make('p', '', {
        key: 'auditor.verify.result_line',
        args: {
          distance: v.distance === null ? '—' : v.distance.toFixed(3),
          threshold: v.threshold.toFixed(3),
        },
      }),
    );
    const flags = make('p');
    flags.append(
      make('span', 'tag', v.match ? { key: 'auditor.verify.matched' } : { key: 'auditor.verify.not_matched' }),
      ' ',
      make('span', 'tag', v.liveness_passed ? { key: 'auditor.verify.live_ok' } : { key: 'auditor.verify.live_failed' }),
    );
    body.append(flags);
  }
  return body;
}

function timelineItem(ev) {
  const li = make('li', 'timeline-item');
  li.dataset.type = ev.type;
  li.dataset.seq = String(ev.seq);
  li.dataset.actorRole = ev.actor_role;
  const meta = make('p', 'timeline-meta');
  meta.append(
    timeEl(ev.ts),
    ' ',
    make('span', 'tag', ROLE_LABELS[ev.actor_role] ?? { text: ev.actor_role }),
  );
  if (ev.actor?.name) meta.append(' ', make('span', 'timeline-actor', { text: ev.actor.name }));
  meta.append(' ', make('span', 'timeline-seq muted', { text: `#${ev.seq}` }));
  const title = make('p', 'timeline-title', EVENT_LABELS[ev.type] ?? { text: ev.type });
  const raw = make('details', 'timeline-raw');
  const pre = make('pre');
  pre.textContent = JSON.stringify({ type: ev.type, payload: ev.payload }, null, 2);
  raw.append(make('summary', '', { key: 'auditor.timeline.raw' }), pre);
  li.append(meta, title, eventBody(ev), raw);
  return li;
}

// ---- export ------------------------------------------------------------------------------

async function exportBundle() {
  const contactId = openId;
  if (!contactId) return;
  els.exportButton.disabled = true;
  setText(els.exportNote, { key: 'auditor.export.working' });
  try {
    const response = await fetch(`/api/auditor/sessions/${encodeURIComponent(contactId)}/export`, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { Accept: 'application/zip, application/problem+json', 'X-CSRF-Token': getCsrfToken() ?? '' },
    });
    if (!response.ok) {
      let problem = {};
      try {
        problem = await response.json();
      } catch {
        // not a problem document: keep the status only
      }
      throw new ApiError({ ...problem, status: response.status });
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement('a');
    link.href = url;
    link.download = `vbank-evidence-${contactId}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    setText(els.exportNote, { key: 'auditor.export.done' });
  } catch (err) {
    if (err instanceof ApiError && err.code === 'export_unavailable') {
      setText(els.exportNote, { key: 'auditor.export.unavailable' });
    } else {
      setText(els.exportNote, err instanceof ApiError && err.detail ? { text: err.detail } : { key: 'auditor.export.failed' });
    }
  } finally {
    els.exportButton.disabled = false;
  }
}

// ---- start -------------------------------------------------------------------------------

async function main() {
  await ready;
  els.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void search();
  });
  els.more.addEventListener('click', () => void search({ more: true }));
  els.exportButton.addEventListener('click', () => void exportBundle());
  document.addEventListener(LANGUAGE_CHANGE_EVENT, () => refreshTimes());
  window.addEventListener('hashchange', () => {
    const m = CONTACT_HASH.exec(window.location.hash);
    if (m && m[1] !== openId) void openSession(m[1]);
  });
  await search();
  const m = CONTACT_HASH.exec(window.location.hash);
  if (m) await openSession(m[1]);
  document.body.dataset.auditorReady = 'true';
}

void main().catch(() => {
  // shell.js shows start-up failures in #shell-error
});
