// Customer page: the confirmation cards of the operations the adviser prepares (issue 6)
// and the customer's own balances.
//
// A card shows the server's rendering in the page language (`cards[lang]`) exactly as
// sent; Confirm sends `trade.confirm` with `hashes[lang]` of the card on screen, so the
// confirmation binds the text the customer read (what you see is what you sign). Reject
// sends `trade.reject`. Every change arrives as a new `trade.card` frame (pending drafts
// are replayed after a reconnect). Balances come from GET /api/accounts and are refreshed
// by `accounts.balances` after an execution.
//
// Mounted by customer.js into #trading-slot; customer.js calls `panel.show(contactId)`
// with its current contact (cards of other contacts are not shown).

import { api } from './api.js';
import { realtimeErrorMessage } from './errors.js';
import { applyI18n, LANGUAGE_CHANGE_EVENT, setText } from './i18n.js';
import { DraftBook, refusalMessage, renderAccounts, renderCard, renderState } from './trading.js';

const PANEL_HTML =
  '<div id="trade-cards" class="trade-cards" aria-live="polite"></div>' +
  '<div id="trade-balances" class="trade-balances" hidden>' +
  '<h3 class="trade-subheading" data-i18n="trading.customer.accounts">Your accounts</h3>' +
  '<ul id="trade-accounts" class="trade-accounts"></ul>' +
  '</div>';

class TradingCustomerPanel {
  constructor(section, rt) {
    this.section = section;
    this.rt = rt;
    this.book = new DraftBook();
    this.contactId = null;
    this.accounts = [];
    this.sending = new Set(); // draft ids with a confirm / reject in flight
    this.errors = new Map(); // draft id → message of the last refused confirm / reject
    section.innerHTML = PANEL_HTML;
    applyI18n(section);
    this.cards = section.querySelector('#trade-cards');
    this.balances = section.querySelector('#trade-balances');
    this.accountList = section.querySelector('#trade-accounts');
    this.cards.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action]');
      const article = button?.closest('article.trade-card');
      if (article) void this.decide(article, button.dataset.action);
    });
    rt.on('trade.card', (f) => {
      if (!this.book.update(f)) return;
      if (f.state !== 'pending') this.errors.delete(f.draft_id);
      if (f.contact_id === this.contactId) this.renderCards();
    });
    rt.on('accounts.balances', (f) => {
      if (!Array.isArray(f.accounts)) return;
      this.accounts = f.accounts;
      this.renderBalances();
    });
    rt.on('open', () => void this.loadBalances());
    rt.on('status', () => this.renderCards());
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => this.render());
  }

  /** The page's current contact (null: none). */
  show(contactId) {
    if (contactId === this.contactId) return;
    this.contactId = contactId;
    this.renderCards();
  }

  async loadBalances() {
    try {
      const data = await api('GET', '/api/accounts');
      this.accounts = Array.isArray(data?.accounts) ? data.accounts : [];
    } catch {
      return; // not fatal: the next execution sends the balances
    }
    this.renderBalances();
  }

  render() {
    this.renderCards();
    this.renderBalances();
  }

  renderBalances() {
    this.balances.hidden = this.accounts.length === 0;
    renderAccounts(this.accountList, this.accounts);
    this.renderVisibility();
  }

  renderVisibility() {
    this.section.hidden = this.cards.childElementCount === 0 && this.accounts.length === 0;
  }

  renderCards() {
    const drafts = this.contactId ? this.book.list(this.contactId).reverse() : [];
    const focused = document.activeElement?.closest?.('article.trade-card')?.dataset.draftId;
    this.cards.replaceChildren(...drafts.map((f) => this.card(f)));
    if (focused) this.cards.querySelector(`article[data-draft-id="${CSS.escape(focused)}"] .trade-card-state`)?.focus();
    this.renderVisibility();
  }

  card(f) {
    const article = document.createElement('article');
    article.className = 'trade-card';
    article.dataset.draftId = f.draft_id;
    article.dataset.state = f.state;
    article.dataset.reason = f.reason ?? '';
    const body = document.createElement('div');
    body.className = 'trade-card-body';
    article.dataset.lang = renderCard(body, f);
    article.append(body);
    const pending = f.state === 'pending';
    if (pending && f.step_up) {
      const note = document.createElement('p');
      note.className = 'trade-step-up hint';
      setText(note, { key: 'trading.customer.step_up' });
      article.append(note);
    }
    const state = document.createElement('p');
    state.className = 'trade-card-state';
    state.tabIndex = -1;
    renderState(state, 'customer', f);
    article.append(state);
    const error = this.errors.get(f.draft_id);
    if (error) {
      const p = document.createElement('p');
      p.className = 'trade-card-error field-error';
      p.setAttribute('role', 'alert');
      setText(p, error);
      article.append(p);
    }
    if (pending) {
      const actions = document.createElement('div');
      actions.className = 'trade-card-actions';
      const busy = this.sending.has(f.draft_id) || !this.rt.isConnected();
      for (const [action, cls, key] of [
        ['confirm', 'button button-primary trade-confirm', { key: 'trading.customer.confirm' }],
        ['reject', 'button button-secondary-dark trade-reject', { key: 'trading.customer.reject' }],
      ]) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = cls;
        button.dataset.action = action;
        button.disabled = busy;
        setText(button, key);
        actions.append(button);
      }
      article.append(actions);
    }
    return article;
  }

  async decide(article, action) {
    const contactId = this.contactId;
    const draftId = article.dataset.draftId;
    const frame = this.book.get(contactId, draftId);
    if (!frame || frame.state !== 'pending' || this.sending.has(draftId)) return;
    const fields = { contact_id: contactId, draft_id: draftId };
    if (action === 'confirm') {
      const hash = frame.hashes?.[article.dataset.lang];
      if (!hash) return;
      fields.card_hash = hash; // the card on screen, in the language it was shown in
    }
    this.sending.add(draftId);
    this.errors.delete(draftId);
    this.renderCards();
    try {
      await this.rt.request(action === 'confirm' ? 'trade.confirm' : 'trade.reject', fields);
    } catch (err) {
      this.errors.set(draftId, refusalMessage(err, realtimeErrorMessage));
    } finally {
      this.sending.delete(draftId);
      this.renderCards();
    }
  }
}

/** Build the panel into `slot` and load the balances; returns it, or null. */
export function mountTradingCustomer(slot, rt) {
  if (!slot) return null;
  const section = document.createElement('section');
  section.id = 'trading';
  section.className = 'trade-customer';
  section.setAttribute('aria-label', '');
  section.setAttribute('data-i18n-aria-label', 'trading.customer.heading');
  section.hidden = true;
  slot.replaceChildren(section);
  applyI18n(section);
  const panel = new TradingCustomerPanel(section, rt);
  void panel.loadBalances();
  return panel;
}
