// Agent console: the transactions panel for the selected contact (issue 6). Once the session
// is verified it shows the customer's accounts and a form to prepare an operation
// (`trade.draft`); the drafts of the contact follow below with their state, live from the
// `trade.card` frames, and a Withdraw button while they wait for the customer.
//
// Mounted by agent.js into #trading-slot; agent.js calls `panel.show(contactId, open)`
// whenever the conversation panel changes. Whether the session is verified is asked of the
// server (GET /api/contacts/{id}/accounts: 200, or 409 not_verified) on selection and after
// every `verify.outcome`, so a reload needs no cached state.

import { api, ApiError } from './api.js';
import { realtimeErrorMessage } from './errors.js';
import { applyI18n, LANGUAGE_CHANGE_EVENT, setText } from './i18n.js';
import {
  DraftBook,
  formatMinor,
  maskNumber,
  parseAmount,
  reasonMessage,
  refusalMessage,
  renderAccounts,
  renderCard,
  renderState,
} from './trading.js';

const TERMS = [1, 3, 6, 12, 24, 36, 60];
const KINDS = ['own_transfer', 'payee_transfer', 'term_deposit', 'limit_change'];
/** Which optional fields each kind uses (the rest of the form is hidden). */
const FIELDS = {
  own_transfer: ['from', 'to'],
  payee_transfer: ['from', 'payee'],
  term_deposit: ['from', 'term'],
  limit_change: ['limit'],
};
const AMOUNT_ERRORS = {
  format: { key: 'trading.amount.format' },
  decimals: { key: 'trading.amount.decimals' },
  zero: { key: 'trading.amount.zero' },
  too_large: { key: 'trading.amount.too_large' },
};

const PANEL_HTML =
  '<h2 id="trading-heading" data-i18n="trading.agent.heading">Transactions</h2>' +
  '<p id="trade-status" class="hint hint-tight" role="status"></p>' +
  '<div id="trade-body" class="trade-body" hidden>' +
  '<h3 class="trade-subheading" data-i18n="trading.agent.accounts">The customer\'s accounts</h3>' +
  '<ul id="trade-accounts" class="trade-accounts"></ul>' +
  '<form id="trade-form" class="trade-form" novalidate>' +
  '<div class="field"><label for="trade-kind" data-i18n="trading.form.kind">Operation</label>' +
  '<select id="trade-kind" autocomplete="off">' +
  '<option value="own_transfer" data-i18n="trading.kind.own_transfer">Transfer between own accounts</option>' +
  '<option value="payee_transfer" data-i18n="trading.kind.payee_transfer">Transfer to a payee</option>' +
  '<option value="term_deposit" data-i18n="trading.kind.term_deposit">Open a term deposit</option>' +
  '<option value="limit_change" data-i18n="trading.kind.limit_change">Change the daily transfer limit</option>' +
  '</select></div>' +
  '<div class="field" data-field="from"><label for="trade-from" data-i18n="trading.form.from">From account</label>' +
  '<select id="trade-from" autocomplete="off"></select></div>' +
  '<div class="field" data-field="to"><label for="trade-to" data-i18n="trading.form.to">To account</label>' +
  '<select id="trade-to" autocomplete="off"></select></div>' +
  '<div class="field" data-field="payee"><label for="trade-payee-name" data-i18n="trading.form.payee_name">Payee name</label>' +
  '<input id="trade-payee-name" type="text" maxlength="70" autocomplete="off"></div>' +
  '<div class="field" data-field="payee"><label for="trade-payee-account" data-i18n="trading.form.payee_account">Payee account number</label>' +
  '<input id="trade-payee-account" type="text" maxlength="40" autocomplete="off" spellcheck="false"></div>' +
  '<div class="field" data-field="term"><label for="trade-term" data-i18n="trading.form.term">Term</label>' +
  '<select id="trade-term" autocomplete="off"></select></div>' +
  '<div class="field" data-field="limit"><label for="trade-limit-currency" data-i18n="trading.form.currency">Currency</label>' +
  '<select id="trade-limit-currency" autocomplete="off"></select></div>' +
  '<div class="field"><label id="trade-amount-label" for="trade-amount" data-i18n="trading.form.amount">Amount</label>' +
  '<div class="trade-amount-row"><input id="trade-amount" type="text" inputmode="decimal" autocomplete="off" spellcheck="false"' +
  ' aria-describedby="trade-error">' +
  '<span id="trade-currency" class="tag"></span></div></div>' +
  '<p id="trade-error" class="field-error" role="alert" hidden></p>' +
  '<button id="trade-prepare" type="submit" class="button button-primary" data-i18n="trading.form.prepare">Prepare</button>' +
  '</form>' +
  '<h3 class="trade-subheading" data-i18n="trading.agent.drafts">Prepared for the customer</h3>' +
  '<p id="trade-drafts-empty" class="placeholder" data-i18n="trading.agent.no_drafts">Nothing prepared yet.</p>' +
  '<ul id="trade-drafts" class="trade-drafts" aria-live="polite"></ul>' +
  '</div>';

class TradingAgentPanel {
  constructor(section, rt) {
    this.section = section;
    this.rt = rt;
    this.book = new DraftBook();
    this.accounts = new Map(); // contact id → {status: loading|ok|not_verified|error, accounts}
    this.contactId = null;
    this.busy = false;
    section.innerHTML = PANEL_HTML;
    applyI18n(section);
    const q = (id) => section.querySelector(`#${id}`);
    this.els = {
      status: q('trade-status'),
      body: q('trade-body'),
      accountList: q('trade-accounts'),
      form: q('trade-form'),
      kind: q('trade-kind'),
      from: q('trade-from'),
      to: q('trade-to'),
      payeeName: q('trade-payee-name'),
      payeeAccount: q('trade-payee-account'),
      term: q('trade-term'),
      limitCurrency: q('trade-limit-currency'),
      amountLabel: q('trade-amount-label'),
      amount: q('trade-amount'),
      currency: q('trade-currency'),
      error: q('trade-error'),
      prepare: q('trade-prepare'),
      drafts: q('trade-drafts'),
      draftsEmpty: q('trade-drafts-empty'),
    };
    this.els.term.replaceChildren(
      ...TERMS.map((n) => {
        const option = document.createElement('option');
        option.value = String(n);
        setText(option, { key: 'trading.term.months', args: { n } });
        return option;
      }),
    );
    this.els.kind.addEventListener('change', () => this.renderForm());
    this.els.from.addEventListener('change', () => this.renderForm());
    this.els.limitCurrency.addEventListener('change', () => this.renderForm());
    this.els.amount.addEventListener('input', () => this.showError(null));
    this.els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.prepare();
    });
    this.els.drafts.addEventListener('click', (event) => {
      const button = event.target.closest('button.trade-withdraw');
      if (button) void this.withdraw(button.dataset.draftId);
    });
    rt.on('trade.card', (f) => {
      if (this.book.update(f) && f.contact_id === this.contactId) this.renderDrafts();
    });
    rt.on('accounts.balances', (f) => {
      if (!Array.isArray(f.accounts)) return;
      this.accounts.set(f.contact_id, { status: 'ok', accounts: f.accounts });
      if (f.contact_id === this.contactId) this.render();
    });
    rt.on('verify.outcome', (f) => {
      if (f.contact_id === this.contactId) void this.load(f.contact_id);
      else this.accounts.delete(f.contact_id);
    });
    rt.on('open', () => {
      if (this.contactId) void this.load(this.contactId);
    });
    rt.on('status', () => this.renderForm());
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => this.render());
  }

  /** The conversation panel now shows `contactId` (null: none; open false: it ended). */
  show(contactId, open) {
    const id = open ? contactId : null;
    if (id === this.contactId) return;
    this.contactId = id;
    this.showError(null);
    this.els.form.reset();
    if (id && !this.accounts.has(id)) void this.load(id);
    else this.render();
  }

  async load(contactId) {
    const known = this.accounts.get(contactId);
    if (!known || known.status !== 'ok') this.accounts.set(contactId, { status: 'loading', accounts: [] });
    this.render();
    let entry;
    try {
      const data = await api('GET', `/api/contacts/${encodeURIComponent(contactId)}/accounts`);
      entry = { status: 'ok', accounts: Array.isArray(data?.accounts) ? data.accounts : [] };
    } catch (err) {
      const notVerified = err instanceof ApiError && err.status === 409 && err.code === 'not_verified';
      entry = { status: notVerified ? 'not_verified' : 'error', accounts: [] };
    }
    this.accounts.set(contactId, entry);
    if (contactId === this.contactId) this.render();
  }

  current() {
    return this.contactId ? this.accounts.get(this.contactId) ?? null : null;
  }

  render() {
    const entry = this.current();
    this.section.hidden = this.contactId === null;
    this.section.dataset.status = entry?.status ?? '';
    const ok = entry?.status === 'ok';
    this.els.body.hidden = !ok;
    const status = {
      loading: { key: 'trading.agent.loading' },
      not_verified: { key: 'trading.agent.not_verified' },
      error: { key: 'trading.agent.load_failed' },
    }[entry?.status];
    this.els.status.hidden = !status;
    if (status) setText(this.els.status, status);
    if (!ok) return;
    renderAccounts(this.els.accountList, entry.accounts);
    this.fillAccounts(entry.accounts);
    this.renderForm();
    this.renderDrafts();
  }

  /** Account and currency choices from the customer's accounts, keeping what was chosen. */
  fillAccounts(accounts) {
    const options = (select) => {
      const keep = select.value;
      select.replaceChildren(
        ...accounts.map((a) => {
          const option = document.createElement('option');
          option.value = a.number;
          option.dataset.currency = a.currency;
          const balance = Number.isInteger(a.balance_minor) ? ` (${formatMinor(a.balance_minor, a.currency)})` : '';
          option.textContent = `${a.name} ${maskNumber(a.number)}${balance}`;
          return option;
        }),
      );
      if (accounts.some((a) => a.number === keep)) select.value = keep;
    };
    const to = this.els.to.value;
    options(this.els.from);
    options(this.els.to);
    // a transfer between own accounts starts with two different ones
    if (!accounts.some((a) => a.number === to) && accounts.length > 1) this.els.to.selectedIndex = 1;
    const keep = this.els.limitCurrency.value;
    const currencies = [...new Set(accounts.map((a) => a.currency))];
    this.els.limitCurrency.replaceChildren(
      ...currencies.map((c) => Object.assign(document.createElement('option'), { value: c, textContent: c })),
    );
    if (currencies.includes(keep)) this.els.limitCurrency.value = keep;
  }

  kind() {
    return KINDS.includes(this.els.kind.value) ? this.els.kind.value : 'own_transfer';
  }

  /** The operation's currency: the source account's, or the chosen one for a limit. */
  currency() {
    if (this.kind() === 'limit_change') return this.els.limitCurrency.value;
    return this.els.from.selectedOptions[0]?.dataset.currency ?? '';
  }

  renderForm() {
    const used = FIELDS[this.kind()];
    for (const field of this.els.form.querySelectorAll('[data-field]')) {
      field.hidden = !used.includes(field.dataset.field);
    }
    setText(
      this.els.amountLabel,
      this.kind() === 'limit_change' ? { key: 'trading.form.new_limit' } : { key: 'trading.form.amount' },
    );
    this.els.currency.textContent = this.currency();
    this.els.prepare.disabled = this.busy || !this.rt.isConnected();
  }

  showError(message) {
    this.els.error.hidden = message === null;
    if (message) setText(this.els.error, message);
    else setText(this.els.error, { text: '' });
    if (message) this.els.amount.setAttribute('aria-invalid', 'true');
    else this.els.amount.removeAttribute('aria-invalid');
  }

  /** The operation from the form, or {error} (a catalogue message) if it is not complete. */
  operation() {
    const kind = this.kind();
    const currency = this.currency();
    if (!currency) return { error: { key: 'trading.form.no_account' } };
    const amount = parseAmount(this.els.amount.value, currency);
    if (amount.error) return { error: AMOUNT_ERRORS[amount.error] };
    if (kind === 'limit_change') return { op: { kind, new_daily_limit_minor: amount.minor, currency } };
    const op = { kind, from_account: this.els.from.value, amount_minor: amount.minor, currency };
    if (kind === 'own_transfer') op.to_account = this.els.to.value;
    if (kind === 'term_deposit') op.term_months = Number(this.els.term.value);
    if (kind === 'payee_transfer') {
      op.payee_name = this.els.payeeName.value.trim();
      op.payee_account = this.els.payeeAccount.value.replace(/\s+/g, '').toUpperCase();
      if (!op.payee_name || !op.payee_account) return { error: { key: 'trading.form.payee_required' } };
    }
    return { op };
  }

  async prepare() {
    const contactId = this.contactId;
    if (!contactId || this.busy) return;
    const { op, error } = this.operation();
    if (error) {
      this.showError(error);
      this.els.amount.focus();
      return;
    }
    this.showError(null);
    this.busy = true;
    this.renderForm();
    try {
      await this.rt.request('trade.draft', { contact_id: contactId, operation: op });
      if (contactId === this.contactId) this.els.amount.value = '';
    } catch (err) {
      if (contactId === this.contactId) {
        this.showError(err?.code === 'invalid_message' ? reasonMessage('invalid_field') : refusalMessage(err, realtimeErrorMessage));
      }
    } finally {
      this.busy = false;
      this.renderForm();
    }
  }

  async withdraw(draftId) {
    const contactId = this.contactId;
    if (!contactId || !draftId) return;
    try {
      await this.rt.request('trade.withdraw', { contact_id: contactId, draft_id: draftId });
    } catch (err) {
      if (contactId === this.contactId) this.showError(refusalMessage(err, realtimeErrorMessage));
    }
  }

  renderDrafts() {
    const drafts = this.contactId ? this.book.list(this.contactId).reverse() : [];
    this.els.draftsEmpty.hidden = drafts.length > 0;
    this.els.drafts.replaceChildren(
      ...drafts.map((f) => {
        const li = document.createElement('li');
        li.className = 'trade-draft';
        li.dataset.draftId = f.draft_id;
        li.dataset.state = f.state;
        li.dataset.reason = f.reason ?? '';
        const card = document.createElement('div');
        card.className = 'trade-card-body';
        renderCard(card, f);
        const state = document.createElement('p');
        state.className = 'trade-draft-state';
        renderState(state, 'agent', f);
        li.append(card, state);
        if (f.state === 'pending') {
          const button = document.createElement('button');
          button.type = 'button';
          button.className = 'button button-quiet trade-withdraw';
          button.dataset.draftId = f.draft_id;
          setText(button, { key: 'trading.agent.withdraw' });
          li.append(button);
        }
        return li;
      }),
    );
  }
}

/** Build the panel into `slot` (hidden until a contact is shown); returns it, or null. */
export function mountTradingAgent(slot, rt) {
  if (!slot) return null;
  const section = document.createElement('section');
  section.id = 'trading-panel';
  section.className = 'panel panel-trading';
  section.setAttribute('aria-labelledby', 'trading-heading');
  section.hidden = true;
  slot.replaceChildren(section);
  return new TradingAgentPanel(section, rt);
}
