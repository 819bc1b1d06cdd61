// Identity verification (face match + liveness challenge), shared by the customer and agent
// pages. Protocol: the verify.* frames in signaling/protocol.py.
//
// * VerifyStore follows the verify.* frames of every contact: the live progress of the
//   current attempt, the result (agent only), the agent's decision, and the last ID document
//   captured. What a reload needs (result, decision, document, a finished attempt's last
//   progress) is kept in sessionStorage under `vbank.rt.<user id>.verify`, which sign-out
//   clears with the rest of the realtime cache. A running attempt is never cached: a
//   dropped socket ends the video call, and with it the attempt.
// * VerifyView renders one contact's record into a page's #verify-panel: state, guidance,
//   challenge steps, time, good frames; on the agent page also the result (both pictures,
//   distance, threshold, verdicts, reasons) and the outcome. It only renders: the agent's
//   buttons and the decision form are wired by agent.js.
//
// Phases (#verify-panel[data-state]): idle, the progress states running | finished |
// cancelled | failed, then `result` once the agent has the evidence, `decided` once the
// outcome arrived.

import { currentLanguage, LANGUAGE_CHANGE_EVENT, setText, t } from './i18n.js';

export const GUIDANCE_CODES = ['no_face', 'only_you', 'move_closer', 'more_light', 'less_light', 'hold_still'];
export const STEPS = ['blink', 'turn_left', 'turn_right'];
export const STEP_STATUSES = ['pending', 'current', 'passed', 'failed'];
export const PROGRESS_STATES = ['running', 'finished', 'cancelled', 'failed'];
export const PHASES = ['idle', ...PROGRESS_STATES, 'result', 'decided'];
export const REFERENCE_CODES = ['no_face', 'several_faces', 'face_too_small', 'too_large', 'not_an_image', 'too_many_pixels'];
/** Liveness reasons sent as `code` or `code: detail` (vbank/identity/liveness.py). */
export const LIVENESS_REASONS = [
  'timeout', 'face_lost', 'wrong_direction', 'challenge_incomplete',
  'static_video', 'no_motion', 'rigid_face', 'insufficient_frames',
];

const MAX_CACHED = 32;

export function emptyRecord() {
  return {
    attemptId: null,
    reference: null, // on_file | document: the reference of the current attempt
    nextReference: null, // what the agent asked for, until the attempt's first frame
    progress: null,
    maxRemaining: 0,
    result: null,
    outcome: null, // outcome of the current attempt
    lastOutcome: null, // latest outcome of any attempt (contact list badge)
    document: null, // last verify.reference {source: document}
    updated: 0,
  };
}

/** The phase of a record: idle | running | finished | cancelled | failed | result | decided. */
export function phaseOf(rec) {
  if (!rec?.attemptId) return 'idle';
  if (rec.outcome?.attempt_id === rec.attemptId) return 'decided';
  if (rec.result?.attempt_id === rec.attemptId) return 'result';
  const state = rec.progress?.attempt_id === rec.attemptId ? rec.progress.state : null;
  return PROGRESS_STATES.includes(state) ? state : 'idle';
}

function isObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** Per-contact verification state, fed with verify.* frames. */
export class VerifyStore {
  /** @param {{storageKey?: string|null, onChange?: (contactId: string) => void}} options */
  constructor({ storageKey = null, onChange = () => {} } = {}) {
    this.storageKey = storageKey;
    this.onChange = onChange;
    this.records = new Map();
    this.load();
  }

  /** Listen to the verify.* frames (and losses of connection or contacts) of `rt`. */
  attach(rt) {
    for (const type of ['verify.progress', 'verify.result', 'verify.outcome', 'verify.reference']) {
      rt.on(type, (frame) => this.apply(frame));
    }
    // A dropped socket ends the video call and so the attempt; its last frames are lost.
    rt.on('close', () => this.interrupt());
    for (const type of ['contact.closed', 'contact.gone']) rt.on(type, (f) => this.forget(f.contact_id));
  }

  get(contactId) {
    return this.records.get(contactId) ?? emptyRecord();
  }

  phase(contactId) {
    return phaseOf(this.records.get(contactId));
  }

  /** The latest outcome of the contact (any attempt), or null. */
  lastOutcome(contactId) {
    return this.records.get(contactId)?.lastOutcome ?? null;
  }

  record(contactId) {
    let rec = this.records.get(contactId);
    if (!rec) {
      rec = emptyRecord();
      this.records.set(contactId, rec);
    }
    rec.updated = Date.now();
    return rec;
  }

  /** The agent asked for an attempt against `reference` (labels the result's picture). */
  expect(contactId, reference) {
    this.record(contactId).nextReference = reference;
  }

  /** Start tracking the attempt `attemptId` if it is a new one. */
  adopt(rec, attemptId) {
    if (rec.attemptId === attemptId) return;
    rec.attemptId = attemptId;
    rec.reference = rec.nextReference;
    rec.nextReference = null;
    rec.progress = null;
    rec.maxRemaining = 0;
    rec.result = null;
    rec.outcome = null;
  }

  /** Apply one server frame; returns true if it was a verify.* frame with a contact. */
  apply(frame) {
    if (!isObject(frame) || typeof frame.contact_id !== 'string') return false;
    const id = frame.contact_id;
    const rec = this.record(id);
    switch (frame.type) {
      case 'verify.progress':
        if (typeof frame.attempt_id !== 'string') return false;
        // a stray frame of an attempt that is already decided must not reopen it
        if (rec.attemptId !== frame.attempt_id && rec.lastOutcome?.attempt_id === frame.attempt_id) return false;
        this.adopt(rec, frame.attempt_id);
        rec.progress = frame;
        rec.maxRemaining = Math.max(rec.maxRemaining, Number(frame.remaining_s) || 0);
        break;
      case 'verify.result':
        if (typeof frame.attempt_id !== 'string') return false;
        this.adopt(rec, frame.attempt_id);
        rec.result = frame;
        break;
      case 'verify.outcome':
        if (typeof frame.attempt_id !== 'string') return false;
        if (phaseOf(rec) !== 'running') this.adopt(rec, frame.attempt_id);
        if (rec.attemptId === frame.attempt_id) rec.outcome = frame;
        rec.lastOutcome = frame;
        break;
      case 'verify.reference':
        if (frame.source === 'document') rec.document = frame;
        break;
      default:
        return false;
    }
    this.save();
    this.onChange(id);
    return true;
  }

  /** Running attempts end with the connection: show them as failed. */
  interrupt() {
    for (const [id, rec] of this.records) {
      if (phaseOf(rec) === 'running') {
        rec.progress = { ...rec.progress, state: 'failed', guidance: [] };
        this.save();
        this.onChange(id);
      }
    }
  }

  forget(contactId) {
    if (!this.records.delete(contactId)) return;
    this.save();
    this.onChange(contactId);
  }

  load() {
    if (!this.storageKey) return;
    try {
      const data = JSON.parse(sessionStorage.getItem(this.storageKey) ?? 'null');
      if (!isObject(data) || data.v !== 1 || !isObject(data.contacts)) return;
      for (const [id, saved] of Object.entries(data.contacts)) {
        if (isObject(saved)) this.records.set(id, { ...emptyRecord(), ...saved });
      }
    } catch {
      // unreadable cache: start afresh
    }
  }

  save() {
    if (!this.storageKey) return;
    const contacts = {};
    const newest = [...this.records].sort(([, a], [, b]) => b.updated - a.updated).slice(0, MAX_CACHED);
    for (const [id, rec] of newest) {
      const keep = { ...rec };
      if (phaseOf(rec) === 'running') {
        // the attempt does not survive a reload: keep only what is settled
        keep.attemptId = null;
        keep.progress = null;
        keep.result = null;
        keep.outcome = null;
      }
      contacts[id] = keep;
    }
    try {
      sessionStorage.setItem(this.storageKey, JSON.stringify({ v: 1, contacts }));
    } catch {
      // storage full or disabled: a reload just shows less
    }
  }
}

// ---- messages ---------------------------------------------------------------------------

/** Instruction or label of a challenge step, from the role's point of view. */
export function stepMessage(step, role) {
  if (!STEPS.includes(step)) return { text: String(step ?? '') };
  return { key: `verify.step.${role === 'agent' ? 'agent' : 'customer'}.${step}` };
}

function stepText(step, role) {
  const m = stepMessage(step, role);
  return m.key ? t(m.key) : m.text;
}

/** Guidance shown for the first guidance code ('' = nothing to correct). */
export function guidanceMessage(code, face, role) {
  const who = role === 'agent' ? 'agent' : 'customer';
  if (GUIDANCE_CODES.includes(code)) return { key: `verify.guidance.${who}.${code}` };
  if (code) return { text: code };
  return { key: `verify.guidance.${who}.${face ? 'ok' : 'searching'}` };
}

/**
 * A liveness reason as a catalogue message. Known codes (`code` or `code: detail`) are
 * translated, with the step names of the detail where the server gives them; anything
 * else is shown as sent.
 */
export function reasonMessage(reason) {
  const raw = String(reason ?? '').trim();
  const m = /^([a-z_]+)(?::\s*(.*))?$/s.exec(raw);
  const code = m?.[1];
  if (!code || !LIVENESS_REASONS.includes(code)) return { text: raw };
  const detail = m[2] ?? '';
  const stepIn = (re) => {
    const found = re.exec(detail);
    return found && STEPS.includes(found[1]) ? found[1] : null;
  };
  if (code === 'timeout') {
    const step = stepIn(/\bno (\w+)/);
    if (step) return { key: 'verify.reason.timeout_step', args: { step: stepText(step, 'agent') } };
    return { key: 'verify.reason.timeout' };
  }
  if (code === 'challenge_incomplete') {
    const step = stepIn(/waiting for (\w+)/);
    if (step) return { key: 'verify.reason.challenge_incomplete_step', args: { step: stepText(step, 'agent') } };
    return { key: 'verify.reason.challenge_incomplete' };
  }
  if (code === 'wrong_direction') {
    const asked = stepIn(/asked (\w+)/);
    const seen = stepIn(/saw (\w+)/);
    if (asked && seen) {
      return {
        key: 'verify.reason.wrong_direction_steps',
        args: { asked: stepText(asked, 'agent'), seen: stepText(seen, 'agent') },
      };
    }
    return { key: 'verify.reason.wrong_direction' };
  }
  return { key: `verify.reason.${code}` };
}

/** Why a captured ID document was refused (verify.reference with ok: false). */
export function referenceProblem(frame) {
  const code = frame?.code;
  if (REFERENCE_CODES.includes(code)) return t(`verify.ref_code.${code}`);
  if (frame?.message) return String(frame.message);
  if (code) return String(code);
  return t('verify.ref_code.unknown');
}

/** Distance or threshold for display: three decimals, "—" when there is none. */
export function formatScore(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(3) : '—';
}

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = sameDay
    ? { hour: 'numeric', minute: '2-digit', second: '2-digit' }
    : { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' };
  try {
    return new Intl.DateTimeFormat(currentLanguage(), options).format(date);
  } catch {
    return date.toISOString().slice(11, 19);
  }
}

/** Only our own server's paths become <img src> (same origin, no data: or other hosts). */
export function safeImageUrl(url) {
  return typeof url === 'string' && /^\/(?![/\\])[\w\-./%?=&]*$/.test(url) ? url : null;
}

// ---- rendering -----------------------------------------------------------------------

/** Set a message only when it changed, so live regions announce news, not repeats. */
function put(el, message) {
  if (!el) return;
  const sig = JSON.stringify(message);
  if (el.dataset.msg === sig) return;
  el.dataset.msg = sig;
  setText(el, message);
}

function show(el, visible) {
  if (el) el.hidden = !visible;
}

/**
 * Renders a VerifyStore record into a #verify-panel. `role` is customer or agent. Missing
 * elements are skipped, so both pages share this with their own subsets of the markup.
 */
export class VerifyView {
  constructor(root, { role }) {
    this.root = root;
    this.role = role === 'agent' ? 'agent' : 'customer';
    const q = (id) => root.querySelector(`#${id}`);
    this.els = {
      status: q('verify-status'),
      live: q('verify-live'),
      guidance: q('verify-guidance'),
      steps: q('verify-steps'),
      instruction: q('verify-instruction'),
      instructionBox: q('verify-instruction-box'),
      stats: q('verify-stats'),
      goodFrames: q('verify-good-frames'),
      remaining: q('verify-remaining'),
      timebar: q('verify-timebar'),
      result: q('verify-result'),
      match: q('verify-match'),
      liveness: q('verify-liveness'),
      distance: q('verify-distance'),
      threshold: q('verify-threshold'),
      meaning: q('verify-meaning'),
      refImg: q('verify-ref-img'),
      refCaption: q('verify-ref-caption'),
      liveImg: q('verify-live-img'),
      reasons: q('verify-reasons'),
      reasonsBox: q('verify-reasons-box'),
      warning: q('verify-warning'),
      decide: q('verify-decide'),
      outcome: q('verify-outcome'),
      announcer: q('verify-announcer'),
    };
    this.rec = emptyRecord();
    this.contactId = null;
    this.stepStatus = new Map(); // step → status last shown (announcements)
    for (const img of [this.els.refImg, this.els.liveImg]) {
      img?.addEventListener('error', () => {
        img.hidden = true;
        img.nextElementSibling?.removeAttribute('hidden');
      });
    }
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => this.refresh());
  }

  /** Re-render everything (language switch: composed strings and times). */
  refresh() {
    for (const el of this.root.querySelectorAll('[data-msg]')) delete el.dataset.msg;
    const rec = this.rec;
    this.rec = null;
    this.render(rec, this.contactId, { announce: false });
  }

  /** Show `rec` (a VerifyStore record) of `contactId`. */
  render(rec, contactId = null, { announce = true } = {}) {
    rec ??= emptyRecord();
    const switched = contactId !== this.contactId || rec.attemptId !== this.rec?.attemptId;
    this.rec = rec;
    this.contactId = contactId;
    if (switched) this.stepStatus.clear();
    const phase = phaseOf(rec);
    this.root.dataset.state = phase;
    this.root.dataset.attempt = rec.attemptId ?? '';
    put(this.els.status, { key: `verify.state.${this.role}.${phase}` });
    // once decided, #verify-outcome says it (one announcement, not two)
    show(this.els.status, phase !== 'decided' || !this.els.outcome);
    this.renderProgress(rec, phase, announce && !switched);
    if (this.role === 'agent') this.renderResult(rec, phase);
    this.renderOutcome(rec, phase);
  }

  renderProgress(rec, phase, announce) {
    const { els } = this;
    const progress = rec.progress?.attempt_id === rec.attemptId ? rec.progress : null;
    const running = phase === 'running';
    show(els.live, progress !== null && (this.role === 'agent' || phase !== 'decided'));
    // guidance: only while the challenge runs
    const guidanceCode = running ? (progress.guidance?.[0] ?? '') : '';
    if (els.guidance) {
      els.guidance.dataset.code = guidanceCode;
      els.guidance.dataset.ok = String(running && guidanceCode === '' && Boolean(progress.face));
      show(els.guidance, running);
      if (running) put(els.guidance, guidanceMessage(guidanceCode, progress.face, this.role));
    }
    this.renderSteps(progress?.steps ?? [], announce, running);
    this.renderInstruction(progress, running);
    if (els.goodFrames) {
      const n = Number.isInteger(progress?.good_frames) ? progress.good_frames : 0;
      els.goodFrames.dataset.count = String(n);
      if (els.goodFrames.textContent !== String(n)) els.goodFrames.textContent = String(n);
    }
    const seconds = Math.max(0, Math.ceil(Number(progress?.remaining_s) || 0));
    if (els.remaining) {
      els.remaining.dataset.seconds = String(seconds);
      show(els.remaining.closest('.verify-stat, .verify-time') ?? els.remaining, running);
      put(els.remaining, { key: 'verify.remaining', args: { seconds } });
    }
    if (els.timebar) {
      show(els.timebar, running);
      const max = Math.max(rec.maxRemaining || 0, Number(progress?.remaining_s) || 0, 1);
      els.timebar.max = max;
      els.timebar.value = running ? Number(progress.remaining_s) || 0 : 0;
    }
  }

  renderSteps(steps, announce, running) {
    const list = this.els.steps;
    if (!list) return;
    const same =
      list.children.length === steps.length &&
      steps.every((s, i) => list.children[i].dataset.step === String(s.step));
    if (!same) {
      list.replaceChildren();
      for (const s of steps) {
        const li = document.createElement('li');
        li.className = 'verify-step';
        li.dataset.step = String(s.step);
        const icon = document.createElement('span');
        icon.className = 'verify-step-icon';
        icon.setAttribute('aria-hidden', 'true');
        const label = document.createElement('span');
        label.className = 'verify-step-label';
        const status = document.createElement('span');
        status.className = 'verify-step-status visually-hidden';
        li.append(icon, label, status);
        list.append(li);
      }
    }
    show(list, steps.length > 0);
    steps.forEach((s, i) => {
      const li = list.children[i];
      const status = STEP_STATUSES.includes(s.status) ? s.status : 'pending';
      li.dataset.status = status;
      // a stopped attempt has no current step: the one it stopped at was not done
      const shown = status === 'current' && !running ? 'failed' : status;
      if (shown === 'current') li.setAttribute('aria-current', 'step');
      else li.removeAttribute('aria-current');
      put(li.querySelector('.verify-step-label'), stepMessage(s.step, this.role));
      put(li.querySelector('.verify-step-status'), { key: `verify.status.${shown}` });
      const before = this.stepStatus.get(i);
      this.stepStatus.set(i, status);
      if (!announce || before === undefined || before === status) return;
      if (status === 'passed') this.announce({ key: 'verify.announce.passed', args: { step: stepText(s.step, this.role) } });
      else if (status === 'failed') this.announce({ key: 'verify.announce.failed', args: { step: stepText(s.step, this.role) } });
    });
  }

  /** #verify-instruction holds exactly the current step's instruction (or "all done"). */
  renderInstruction(progress, running) {
    const el = this.els.instruction;
    if (!el) return;
    const box = this.els.instructionBox ?? el;
    const current = running ? progress.steps?.find((s) => s.status === 'current') : null;
    const allDone = running && progress.steps?.length > 0 && progress.steps.every((s) => s.status === 'passed');
    el.dataset.step = current ? String(current.step) : '';
    box.dataset.step = el.dataset.step;
    show(box, Boolean(current) || allDone);
    let main;
    let sub = null;
    if (current) {
      main = this.role === 'agent'
        ? { key: 'verify.instruction.agent_now', args: { step: stepText(current.step, 'agent') } }
        : stepMessage(current.step, 'customer');
      if (this.role === 'customer' && (current.step === 'turn_left' || current.step === 'turn_right')) {
        sub = { key: 'verify.instruction.turn_back' };
      }
    } else if (allDone) {
      main = { key: 'verify.instruction.done' };
    } else {
      main = { text: '' };
    }
    // main and sub change together: one announcement of the (atomic) box
    put(el, main);
    const subEl = box.querySelector('.verify-instruction-sub');
    if (subEl) {
      show(subEl, sub !== null);
      put(subEl, sub ?? { text: '' });
    }
  }

  renderResult(rec, phase) {
    const { els } = this;
    const r = rec.result?.attempt_id === rec.attemptId ? rec.result : null;
    show(els.result, r !== null);
    if (!r || !els.result) return;
    const noFace = !(typeof r.distance === 'number' && Number.isFinite(r.distance));
    els.result.dataset.match = String(r.match === true);
    els.result.dataset.liveness = String(r.liveness_passed === true);
    if (els.match) {
      els.match.dataset.ok = String(r.match === true);
      put(els.match, r.match ? { key: 'verify.result.match' } : noFace ? { key: 'verify.result.no_distance' } : { key: 'verify.result.no_match' });
    }
    if (els.liveness) {
      els.liveness.dataset.ok = String(r.liveness_passed === true);
      put(els.liveness, r.liveness_passed ? { key: 'verify.result.liveness_passed' } : { key: 'verify.result.liveness_failed' });
    }
    if (els.distance) {
      els.distance.textContent = formatScore(r.distance);
      els.distance.dataset.value = noFace ? '' : String(r.distance);
    }
    if (els.threshold) {
      els.threshold.textContent = formatScore(r.threshold);
      els.threshold.dataset.value = String(r.threshold);
    }
    if (els.meaning) {
      els.meaning.textContent = typeof r.meaning === 'string' ? r.meaning : '';
      els.meaning.parentElement.hidden = !r.meaning;
    }
    const reference = rec.reference === 'on_file' || rec.reference === 'document' ? rec.reference : 'unknown';
    put(els.refCaption, { key: `verify.result.reference.${reference}` });
    this.setImage(els.refImg, r.reference_url, t('verify.result.ref_alt'));
    this.setImage(els.liveImg, r.live_url, t('verify.result.live_alt'));
    if (els.reasons) {
      const reasons = Array.isArray(r.liveness_reasons) ? r.liveness_reasons : [];
      const sig = JSON.stringify([currentLanguage(), reasons]);
      if (els.reasons.dataset.sig !== sig) {
        els.reasons.dataset.sig = sig;
        els.reasons.replaceChildren(
          ...reasons.map((reason) => {
            const li = document.createElement('li');
            const message = reasonMessage(reason);
            setText(li, message);
            if (message.text !== undefined) li.lang = 'en'; // as the server wrote it
            li.dataset.reason = String(reason).split(':')[0];
            return li;
          }),
        );
      }
      show(els.reasonsBox ?? els.reasons, reasons.length > 0);
    }
    show(els.warning, phase === 'result' && !(r.match && r.liveness_passed));
    show(els.decide, phase === 'result');
  }

  setImage(img, url, alt) {
    if (!img) return;
    const src = safeImageUrl(url);
    const placeholder = img.nextElementSibling;
    img.alt = alt;
    if (src === null) {
      img.removeAttribute('src');
      img.hidden = true;
      placeholder?.removeAttribute('hidden');
      return;
    }
    if (img.getAttribute('src') !== src) {
      img.hidden = false;
      placeholder?.setAttribute('hidden', '');
      img.src = src;
    }
  }

  renderOutcome(rec, phase) {
    const el = this.els.outcome;
    if (!el) return;
    const o = phase === 'decided' ? rec.outcome : null;
    show(el, o !== null);
    el.dataset.outcome = o?.outcome ?? '';
    if (!o) return;
    const verified = o.outcome === 'verified';
    const main = this.role === 'agent'
      ? { key: verified ? 'verify.outcome.agent.verified' : 'verify.outcome.agent.rejected', args: { time: formatTime(o.at) } }
      : { key: verified ? 'verify.outcome.customer.verified' : 'verify.outcome.customer.rejected' };
    const reason = typeof o.reason === 'string' && o.reason.trim() ? o.reason : null;
    const sig = JSON.stringify([main, reason]);
    if (el.dataset.msg === sig) return;
    el.dataset.msg = sig;
    const mainEl = document.createElement('span');
    mainEl.className = 'verify-outcome-main';
    setText(mainEl, main);
    el.replaceChildren(mainEl);
    if (reason) {
      const reasonEl = document.createElement('span');
      reasonEl.className = 'verify-outcome-reason';
      setText(reasonEl, { key: 'verify.outcome.reason', args: { reason } });
      el.append(' ', reasonEl);
    }
  }

  /** Say something through the panel's polite live region (step passed / failed). */
  announce(message) {
    const el = this.els.announcer;
    if (!el) return;
    setText(el, message);
  }
}
