// Shared pieces of the collaborative transactions (issue 6) for the agent's panel and the
// customer's confirmation card: amounts in integer minor units (parsed from and formatted
// to decimal strings without floating point), the card as the server rendered it, the
// draft states and refusal reasons as catalogue messages, and the drafts seen so far.
//
// Protocol: docs/signalling.md (trade.*, accounts.balances). Amounts never pass through a
// JavaScript number that could have been rounded: parsing works on the digits.

import { currentLanguage, setText, t } from './i18n.js';

/** Minor-unit exponent per ISO 4217 code (vbank/trading/operations.py CURRENCIES). */
const EXPONENTS = { CNY: 2, USD: 2, EUR: 2, GBP: 2, HKD: 2, CHF: 2, JPY: 0 };
const MAX_AMOUNT_MINOR = 10n ** 15n;

export function exponentOf(currency) {
  return EXPONENTS[currency] ?? 2;
}

/**
 * "12.50" → {minor: 1250}; errors: {error: 'format' | 'decimals' | 'zero' | 'too_large'}.
 * Only plain digits with at most `exponent` decimals after one dot ("12", "12.5", "0.01").
 */
export function parseAmount(text, currency) {
  const exp = exponentOf(currency);
  const m = /^(\d{1,16})(?:\.(\d+))?$/.exec(String(text ?? '').trim());
  if (!m) return { error: 'format' };
  const fraction = m[2] ?? '';
  if (fraction.length > exp) return { error: 'decimals' };
  const minor = BigInt(m[1]) * 10n ** BigInt(exp) + BigInt(fraction.padEnd(exp, '0') || '0');
  if (minor === 0n) return { error: 'zero' };
  if (minor > MAX_AMOUNT_MINOR) return { error: 'too_large' };
  return { minor: Number(minor) }; // ≤ 10^15 < 2^53: exact
}

/** 198750 CNY → "CNY 1,987.50" (English) or "人民币 1,987.50": the cards' own format. */
export function formatMinor(minor, currency) {
  const exp = exponentOf(currency);
  const value = BigInt(minor);
  const sign = value < 0n ? '-' : '';
  const digits = (value < 0n ? -value : value).toString().padStart(exp + 1, '0');
  const units = digits.slice(0, digits.length - exp).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const text = exp ? `${units}.${digits.slice(-exp)}` : units;
  const name = CURRENCY_NAMES[currency] ? t(CURRENCY_NAMES[currency].key) : currency;
  return `${sign}${name} ${text}`;
}

const CURRENCY_NAMES = {
  CNY: { key: 'trading.currency.CNY' },
  USD: { key: 'trading.currency.USD' },
  EUR: { key: 'trading.currency.EUR' },
  GBP: { key: 'trading.currency.GBP' },
  HKD: { key: 'trading.currency.HKD' },
  CHF: { key: 'trading.currency.CHF' },
  JPY: { key: 'trading.currency.JPY' },
};

/** "····1002": how the cards show account numbers. */
export function maskNumber(number) {
  return `····${String(number).slice(-4)}`;
}

// ---- states and reasons -------------------------------------------------------------------

/** Refusal and waiting reasons (vbank/trading rules, operations, ledger, service). */
const REASONS = {
  not_verified: { key: 'trading.reason.not_verified' },
  verification_stale: { key: 'trading.reason.verification_stale' },
  step_up_required: { key: 'trading.reason.step_up_required' },
  draft_expired: { key: 'trading.reason.draft_expired' },
  already_decided: { key: 'trading.reason.already_decided' },
  card_mismatch: { key: 'trading.reason.card_mismatch' },
  contact_closed: { key: 'trading.reason.contact_closed' },
  transferred: { key: 'trading.reason.transferred' },
  too_many_drafts: { key: 'trading.reason.too_many_drafts' },
  unknown_operation: { key: 'trading.reason.unknown_operation' },
  invalid_field: { key: 'trading.reason.invalid_field' },
  non_positive_amount: { key: 'trading.reason.non_positive_amount' },
  amount_too_large: { key: 'trading.reason.amount_too_large' },
  unknown_currency: { key: 'trading.reason.unknown_currency' },
  bad_payee_name: { key: 'trading.reason.bad_payee_name' },
  bad_term: { key: 'trading.reason.bad_term' },
  foreign_account: { key: 'trading.reason.foreign_account' },
  currency_mismatch: { key: 'trading.reason.currency_mismatch' },
  same_account: { key: 'trading.reason.same_account' },
  payee_is_own_account: { key: 'trading.reason.payee_is_own_account' },
  insufficient_funds: { key: 'trading.reason.insufficient_funds' },
  daily_limit_exceeded: { key: 'trading.reason.daily_limit_exceeded' },
  unknown_payee_account: { key: 'trading.reason.unknown_payee_account' },
  unknown_customer: { key: 'trading.reason.unknown_customer' },
  unknown_language: { key: 'trading.reason.unknown_language' },
  bad_idempotency_key: { key: 'trading.reason.bad_idempotency_key' },
  idempotency_key_reused: { key: 'trading.reason.idempotency_key_reused' },
  refused_by_core: { key: 'trading.reason.refused_by_core' },
  backend_unavailable: { key: 'trading.reason.backend_unavailable' },
  status_unknown: { key: 'trading.reason.status_unknown' },
};

/** The catalogue message for a reason code (an unknown code is shown as itself). */
export function reasonMessage(reason) {
  return REASONS[reason] ?? { key: 'trading.reason.other', args: { reason: String(reason ?? '') } };
}

/** The message for a refused trade.* request (a RealtimeError): its reason, else the code. */
export function refusalMessage(err, fallback) {
  if (err?.code === 'refused' && err.frame?.reason) return reasonMessage(err.frame.reason);
  return fallback(err?.code);
}

const STATES = {
  agent: {
    pending: { key: 'trading.state.agent.pending' },
    confirmed: { key: 'trading.state.agent.confirmed' },
    executed: { key: 'trading.state.agent.executed' },
    failed: { key: 'trading.state.agent.failed' },
    status_unknown: { key: 'trading.state.agent.status_unknown' },
    rejected: { key: 'trading.state.agent.rejected' },
    withdrawn: { key: 'trading.state.agent.withdrawn' },
    expired: { key: 'trading.state.agent.expired' },
  },
  customer: {
    pending: { key: 'trading.state.customer.pending' },
    confirmed: { key: 'trading.state.customer.confirmed' },
    executed: { key: 'trading.state.customer.executed' },
    failed: { key: 'trading.state.customer.failed' },
    status_unknown: { key: 'trading.state.customer.status_unknown' },
    rejected: { key: 'trading.state.customer.rejected' },
    withdrawn: { key: 'trading.state.customer.withdrawn' },
    expired: { key: 'trading.state.customer.expired' },
  },
};

const FRESH_FACE_CHECK = new Set(['step_up_required', 'verification_stale']);

/** What a draft's state means for `role`; a pending draft waiting for a face check says so. */
export function stateMessage(role, frame) {
  if (frame.state === 'pending' && FRESH_FACE_CHECK.has(frame.reason)) {
    return role === 'agent' ? { key: 'trading.state.agent.face_check' } : { key: 'trading.state.customer.face_check' };
  }
  return STATES[role]?.[frame.state] ?? { text: String(frame.state) };
}

// ---- rendering ------------------------------------------------------------------------------

/** The card in `lang` if the server rendered it (en, zh-CN), else English. */
export function cardLang(frame, lang = currentLanguage()) {
  return frame.cards?.[lang] ? lang : 'en';
}

/**
 * Render the card of a trade.card frame into `el`: its title and lines exactly as sent
 * (the customer's confirmation binds the hash of this text). Returns the language shown.
 */
export function renderCard(el, frame, lang = currentLanguage()) {
  const shown = cardLang(frame, lang);
  const card = frame.cards?.[shown] ?? { title: '', lines: [] };
  const title = document.createElement('h3');
  title.className = 'trade-card-title';
  title.textContent = card.title;
  const lines = document.createElement('dl');
  lines.className = 'trade-card-lines';
  for (const [label, value] of card.lines ?? []) {
    const row = document.createElement('div');
    row.className = 'trade-card-line';
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = value;
    row.append(dt, dd);
    lines.append(row);
  }
  el.replaceChildren(title, lines);
  el.lang = shown;
  el.dataset.lang = shown;
  return shown;
}

/** The customer's accounts as list items (name, masked number, balance). */
export function renderAccounts(list, accounts) {
  list.replaceChildren(
    ...accounts.map((a) => {
      const li = document.createElement('li');
      li.className = 'trade-account';
      li.dataset.number = a.number;
      li.dataset.currency = a.currency;
      li.dataset.balanceMinor = String(a.balance_minor ?? '');
      const name = document.createElement('span');
      name.className = 'account-name';
      name.textContent = `${a.name} ${maskNumber(a.number)}`;
      const balance = document.createElement('span');
      balance.className = 'account-balance';
      balance.textContent = Number.isInteger(a.balance_minor) ? formatMinor(a.balance_minor, a.currency) : '';
      li.append(name, balance);
      return li;
    }),
  );
}

/**
 * Fill `el` with a draft's state for `role` (.trade-state) and, when there is one, the
 * reason it failed or waits (.trade-reason) or the bank's reference once executed.
 */
export function renderState(el, role, frame) {
  el.dataset.state = frame.state;
  const state = document.createElement('span');
  state.className = 'trade-state';
  setText(state, stateMessage(role, frame));
  let why = null;
  if (frame.state === 'executed' && frame.reference) {
    why = { key: 'trading.reference', args: { reference: frame.reference } };
  } else if (frame.reason && !FRESH_FACE_CHECK.has(frame.reason)) {
    why = reasonMessage(frame.reason);
  }
  if (why === null) {
    el.replaceChildren(state);
    return;
  }
  const detail = document.createElement('span');
  detail.className = 'trade-reason';
  setText(detail, why);
  el.replaceChildren(state, ' ', detail);
}

/** The trade.card frames seen, per contact, in the order the drafts first arrived. */
export class DraftBook {
  constructor() {
    this.byContact = new Map(); // contact id → Map(draft id → frame)
  }

  update(frame) {
    if (typeof frame?.contact_id !== 'string' || typeof frame.draft_id !== 'string') return false;
    if (!this.byContact.has(frame.contact_id)) this.byContact.set(frame.contact_id, new Map());
    this.byContact.get(frame.contact_id).set(frame.draft_id, frame);
    return true;
  }

  list(contactId) {
    return [...(this.byContact.get(contactId)?.values() ?? [])];
  }

  get(contactId, draftId) {
    return this.byContact.get(contactId)?.get(draftId) ?? null;
  }
}
