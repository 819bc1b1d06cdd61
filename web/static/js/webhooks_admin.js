// Webhooks admin for supervisors: endpoints (add, enable/disable, rotate secret, delete)
// and the dead-letter list with Redeliver buttons.
//
// Mounted by supervisor.js into <section id="webhooks-admin"> through mountWebhooksAdmin().
// A new signing secret is shown once, in #webhook-secret, right after it was created; the
// server never returns it again. URLs are set with textContent only.

import { api } from './api.js';
import { clearMessage, showError, showMessage } from './errors.js';
import { applyI18n, LANGUAGE_CHANGE_EVENT } from './i18n.js';

const API = '/api/webhooks';
const REFRESH_MS = 15_000;

const EVENT_LABELS = {
  'contact.closed': { key: 'webhooks.event.contact_closed' },
  'survey.invited': { key: 'webhooks.event.survey_invited' },
  'survey.completed': { key: 'webhooks.event.survey_completed' },
  'verification.completed': { key: 'webhooks.event.verification_completed' },
  'transaction.executed': { key: 'webhooks.event.transaction_executed' },
};

const TEMPLATE = `
  <h2 id="webhooks-heading" data-i18n="webhooks.heading">Webhooks</h2>
  <p class="hint hint-tight" data-i18n="webhooks.hint">Signed callbacks (Standard Webhooks) to the bank's other systems.</p>
  <form id="webhook-form" class="webhook-form" novalidate>
    <div class="field">
      <label for="webhook-url" data-i18n="webhooks.url">Receiver URL</label>
      <input id="webhook-url" type="url" inputmode="url" autocomplete="off" required placeholder="https://">
    </div>
    <fieldset id="webhook-types" class="webhook-types">
      <legend data-i18n="webhooks.events">Events</legend>
    </fieldset>
    <div class="field field-check">
      <input id="webhook-allow-private" type="checkbox">
      <label for="webhook-allow-private" data-i18n="webhooks.allow_private">Allow a private or loopback address (internal receivers only)</label>
    </div>
    <button id="webhook-submit" type="submit" class="button button-primary" data-i18n="webhooks.add">Add endpoint</button>
  </form>
  <p id="webhook-error" class="field-error" role="alert" hidden></p>
  <div id="webhook-secret-box" class="notice notice-info" hidden>
    <p data-i18n="webhooks.secret_once">Signing secret: copy it now, it will not be shown again.</p>
    <code id="webhook-secret"></code>
  </div>

  <h3 id="webhook-endpoints-heading" data-i18n="webhooks.endpoints">Endpoints</h3>
  <p id="webhooks-empty" class="placeholder" data-i18n="webhooks.empty" hidden>No endpoints yet.</p>
  <div class="sup-table-wrap">
    <table id="webhook-endpoints" class="sup-table" aria-labelledby="webhook-endpoints-heading">
      <thead>
        <tr>
          <th scope="col" data-i18n="webhooks.col.url">URL</th>
          <th scope="col" data-i18n="webhooks.col.events">Events</th>
          <th scope="col" data-i18n="webhooks.col.state">State</th>
          <th scope="col" class="num" data-i18n="webhooks.col.pending">Pending</th>
          <th scope="col" class="num" data-i18n="webhooks.col.dead">Dead letters</th>
          <th scope="col" data-i18n="webhooks.col.actions">Actions</th>
        </tr>
      </thead>
      <tbody id="webhook-endpoint-rows"></tbody>
    </table>
  </div>

  <h3 id="webhook-dead-heading" data-i18n="webhooks.dead_letters">Dead letters</h3>
  <p id="webhook-dead-empty" class="placeholder" data-i18n="webhooks.dead_empty" hidden>No dead letters.</p>
  <div class="sup-table-wrap">
    <table id="webhook-dead" class="sup-table" aria-labelledby="webhook-dead-heading">
      <thead>
        <tr>
          <th scope="col" data-i18n="webhooks.col.message">Message</th>
          <th scope="col" data-i18n="webhooks.col.event">Event</th>
          <th scope="col" class="num" data-i18n="webhooks.col.endpoint">Endpoint</th>
          <th scope="col" class="num" data-i18n="webhooks.col.attempts">Attempts</th>
          <th scope="col" data-i18n="webhooks.col.last_result">Last result</th>
          <th scope="col" data-i18n="webhooks.col.actions">Actions</th>
        </tr>
      </thead>
      <tbody id="webhook-dead-rows"></tbody>
    </table>
  </div>
`;

function el(tag, { text, key, className, attrs } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (key) node.setAttribute('data-i18n', key);
  else if (text !== undefined) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  return node;
}

function button({ key }, action, id) {
  return el('button', {
    key,
    className: 'button button-secondary-dark button-small',
    attrs: { type: 'button', 'data-action': action, 'data-id': String(id) },
  });
}

function eventLabel(type) {
  return EVENT_LABELS[type] ?? { text: type };
}

function stateLabel(ep) {
  if (ep.enabled) return { key: 'webhooks.state.enabled' };
  if (ep.disabled_reason === 'gone_410') return { key: 'webhooks.state.gone' };
  return { key: 'webhooks.state.disabled' };
}

class WebhooksAdmin {
  constructor(root) {
    this.root = root;
    root.innerHTML = TEMPLATE;
    const $ = (id) => root.querySelector(`#${id}`);
    this.els = {
      form: $('webhook-form'),
      url: $('webhook-url'),
      types: $('webhook-types'),
      allowPrivate: $('webhook-allow-private'),
      submit: $('webhook-submit'),
      error: $('webhook-error'),
      secretBox: $('webhook-secret-box'),
      secret: $('webhook-secret'),
      empty: $('webhooks-empty'),
      rows: $('webhook-endpoint-rows'),
      deadEmpty: $('webhook-dead-empty'),
      deadRows: $('webhook-dead-rows'),
    };
    for (const type of Object.keys(EVENT_LABELS)) this.addTypeBox(type);
    this.els.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.create();
    });
    root.addEventListener('click', (e) => {
      const target = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
      if (target) void this.act(target.dataset.action, target.dataset.id, target);
    });
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => applyI18n(root));
    applyI18n(root);
  }

  addTypeBox(type) {
    const id = `webhook-type-${type.replace('.', '-')}`;
    const wrap = el('div', { className: 'field field-check' });
    const box = el('input', { attrs: { id, type: 'checkbox', value: type } });
    const label = el('label', { attrs: { for: id } });
    const msg = eventLabel(type);
    if (msg.key) label.setAttribute('data-i18n', msg.key);
    else label.textContent = msg.text;
    wrap.append(box, label);
    this.els.types.append(wrap);
  }

  async refresh() {
    try {
      const [eps, dead] = await Promise.all([
        api('GET', `${API}/endpoints`),
        api('GET', `${API}/dead-letters`),
      ]);
      this.renderEndpoints(eps.endpoints);
      this.renderDead(dead.dead_letters);
    } catch (err) {
      showError(this.els.error, err);
    }
  }

  renderEndpoints(endpoints) {
    const { rows, empty } = this.els;
    rows.replaceChildren();
    empty.hidden = endpoints.length > 0;
    for (const ep of endpoints) {
      const tr = el('tr', { attrs: { 'data-endpoint-id': String(ep.id), 'data-enabled': String(ep.enabled) } });
      tr.append(el('td', { text: ep.url, className: 'webhook-url' }));
      const types = el('td');
      for (const type of ep.event_types) {
        const msg = eventLabel(type);
        types.append(el('span', { className: 'tag', key: msg.key, text: msg.text }), ' ');
      }
      tr.append(types);
      tr.append(el('td', { key: stateLabel(ep).key, className: 'webhook-state' }));
      tr.append(el('td', { text: ep.pending, className: 'num' }));
      tr.append(el('td', { text: ep.dead, className: 'num' }));
      const actions = el('td', { className: 'webhook-actions' });
      actions.append(
        ep.enabled ? button({ key: 'webhooks.disable' }, 'disable', ep.id) : button({ key: 'webhooks.enable' }, 'enable', ep.id),
        button({ key: 'webhooks.rotate' }, 'rotate', ep.id),
        button({ key: 'webhooks.delete' }, 'delete', ep.id),
      );
      tr.append(actions);
      rows.append(tr);
    }
    applyI18n(rows);
  }

  renderDead(letters) {
    const { deadRows, deadEmpty } = this.els;
    deadRows.replaceChildren();
    deadEmpty.hidden = letters.length > 0;
    for (const d of letters) {
      const tr = el('tr', { attrs: { 'data-delivery-id': String(d.id) } });
      tr.append(el('td', { text: d.msg_id, className: 'mono' }));
      const msg = eventLabel(d.event_type);
      tr.append(el('td', { key: msg.key, text: msg.text }));
      tr.append(el('td', { text: d.endpoint_id, className: 'num' }));
      tr.append(el('td', { text: d.attempts, className: 'num' }));
      tr.append(el('td', { text: d.last_status ?? d.last_error ?? '—' }));
      const actions = el('td');
      actions.append(button({ key: 'webhooks.redeliver' }, 'redeliver', d.id));
      tr.append(actions);
      deadRows.append(tr);
    }
    applyI18n(deadRows);
  }

  showSecret(secret) {
    this.els.secret.textContent = secret;
    this.els.secretBox.hidden = false;
  }

  async create() {
    const { url, types, allowPrivate, submit, error } = this.els;
    clearMessage(error);
    const eventTypes = [...types.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value);
    if (url.value.trim() === '' || eventTypes.length === 0) {
      showMessage(error, { key: 'webhooks.form_incomplete' });
      return;
    }
    submit.disabled = true;
    try {
      const body = await api('POST', `${API}/endpoints`, {
        url: url.value.trim(),
        event_types: eventTypes,
        allow_private: allowPrivate.checked,
      });
      this.showSecret(body.secret);
      this.els.form.reset();
      await this.refresh();
    } catch (err) {
      showError(error, err);
    } finally {
      submit.disabled = false;
    }
  }

  async act(action, id, target) {
    clearMessage(this.els.error);
    target.disabled = true;
    try {
      if (action === 'disable' || action === 'enable') {
        await api('POST', `${API}/endpoints/${id}/${action}`, {});
      } else if (action === 'rotate') {
        const body = await api('POST', `${API}/endpoints/${id}/secrets`, {});
        this.showSecret(body.secret);
      } else if (action === 'delete') {
        await api('DELETE', `${API}/endpoints/${id}`);
      } else if (action === 'redeliver') {
        await api('POST', `${API}/dead-letters/${id}/redeliver`, {});
      }
      await this.refresh();
    } catch (err) {
      showError(this.els.error, err);
    } finally {
      target.disabled = false;
    }
  }
}

/** Build the webhooks admin inside `rootElement` and keep it fresh; returns the instance. */
export async function mountWebhooksAdmin(rootElement) {
  const admin = new WebhooksAdmin(rootElement);
  await admin.refresh();
  setInterval(() => {
    if (!document.hidden) void admin.refresh();
  }, REFRESH_MS);
  return admin;
}
