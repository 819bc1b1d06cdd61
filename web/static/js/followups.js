// Agent console: follow-up call tasks opened by low survey scores. Lists the open tasks of
// the agent's skills and the ones they claimed; claim, then close with an outcome.
//
// Mounted by agent.js into #followups-slot. There is no realtime frame for tasks: the
// list refreshes every 30 s, when the tab becomes visible, and on #followups-refresh.
// Customer data (name, comment) is only ever set with textContent.

import { api, ApiError } from './api.js';
import { showError, showNotice } from './errors.js';
import { applyI18n, currentLanguage, LANGUAGE_CHANGE_EVENT, setText } from './i18n.js';

const REFRESH_MS = 30_000;

const PANEL_HTML =
  '<h2 id="followups-heading" data-i18n="followups.heading">Follow-up calls</h2>' +
  '<p class="hint hint-tight" data-i18n="followups.intro">Customers who rated a conversation low. Claim a task, call them back, then close it with the outcome.</p>' +
  '<p id="followups-error" class="alert" role="alert" hidden></p>' +
  '<p id="followups-empty" class="placeholder" data-i18n="followups.empty">No follow-up calls waiting.</p>' +
  '<ul id="followups-list" class="followup-list" aria-labelledby="followups-heading"></ul>' +
  '<button id="followups-refresh" type="button" class="button button-quiet" data-i18n="followups.refresh">Refresh</button>';

const CLOSE_FORM_HTML =
  '<div class="field">' +
  '<label data-i18n="followups.outcome.label">Outcome</label>' +
  '<select class="followup-outcome">' +
  '<option value="reached" data-i18n="followups.outcome.reached">Reached the customer</option>' +
  '<option value="resolved" data-i18n="followups.outcome.resolved">Resolved</option>' +
  '<option value="no_answer" data-i18n="followups.outcome.no_answer">No answer</option>' +
  '<option value="other" data-i18n="followups.outcome.other">Other</option>' +
  '</select></div>' +
  '<div class="field">' +
  '<label data-i18n="followups.note.label">Note (optional)</label>' +
  '<input class="followup-note" type="text" maxlength="500" autocomplete="off">' +
  '</div>' +
  '<button type="button" class="button button-primary followup-close" data-i18n="followups.close">Close task</button>';

function formatDue(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return '';
  return new Intl.DateTimeFormat(currentLanguage(), { dateStyle: 'medium', timeStyle: 'short' }).format(when);
}

class FollowupsPanel {
  constructor(section, notices) {
    this.section = section;
    this.notices = notices;
    this.tasks = [];
    section.innerHTML = PANEL_HTML;
    applyI18n(section);
    this.list = section.querySelector('#followups-list');
    this.empty = section.querySelector('#followups-empty');
    this.error = section.querySelector('#followups-error');
    section.querySelector('#followups-refresh').addEventListener('click', () => void this.refresh());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') void this.refresh();
    });
    document.addEventListener(LANGUAGE_CHANGE_EVENT, () => this.render());
    setInterval(() => void this.refresh(), REFRESH_MS);
  }

  async refresh() {
    try {
      const body = await api('GET', '/api/followups');
      this.tasks = Array.isArray(body?.tasks) ? body.tasks : [];
      this.error.hidden = true;
    } catch (err) {
      showError(this.error, err);
    }
    this.render();
  }

  render() {
    this.list.replaceChildren(...this.tasks.map((task) => this.item(task)));
    this.empty.hidden = this.tasks.length > 0;
    this.section.dataset.count = String(this.tasks.length);
  }

  item(task) {
    const li = document.createElement('li');
    li.className = 'followup-item';
    li.dataset.taskId = task.id;
    li.dataset.state = task.state;
    li.dataset.mine = String(Boolean(task.claimed_by_me));

    const head = document.createElement('p');
    head.className = 'followup-head';
    const name = document.createElement('strong');
    name.className = 'followup-customer';
    name.textContent = task.customer_name ?? '';
    const skill = document.createElement('span');
    skill.className = 'tag';
    setText(skill, { key: `skill.${task.skill}` });
    const score = document.createElement('span');
    score.className = 'followup-score';
    const scoreMessage = task.nps === null ? { key: 'followups.score' } : { key: 'followups.score_nps' };
    setText(score, { ...scoreMessage, args: { csat: task.csat ?? '?', nps: task.nps ?? '' } });
    head.append(name, skill, score);

    const due = document.createElement('p');
    due.className = 'followup-due hint hint-tight';
    due.dataset.overdue = String(new Date(task.due_at).getTime() < Date.now());
    setText(due, { key: 'followups.due', args: { when: formatDue(task.due_at) } });
    li.append(head, due);

    if (task.comment) {
      const comment = document.createElement('p');
      comment.className = 'followup-comment';
      comment.textContent = task.comment;
      li.append(comment);
    }

    const actions = document.createElement('div');
    actions.className = 'followup-actions';
    if (task.state === 'open') {
      const claim = document.createElement('button');
      claim.type = 'button';
      claim.className = 'button button-primary followup-claim';
      setText(claim, { key: 'followups.claim' });
      claim.addEventListener('click', () => void this.claim(task, claim));
      actions.append(claim);
    } else if (task.claimed_by_me) {
      actions.innerHTML = CLOSE_FORM_HTML;
      applyI18n(actions);
      const fields = actions.querySelectorAll('.field');
      fields.forEach((field, i) => {
        const control = field.querySelector('select, input');
        control.id = `followup-${task.id}-${i === 0 ? 'outcome' : 'note'}`;
        field.querySelector('label').htmlFor = control.id;
      });
      const close = actions.querySelector('.followup-close');
      close.addEventListener('click', () => void this.close(task, actions, close));
    }
    li.append(actions);
    return li;
  }

  async claim(task, button) {
    button.disabled = true;
    try {
      await api('POST', `/api/followups/${encodeURIComponent(task.id)}/claim`);
    } catch (err) {
      this.report(err);
    }
    await this.refresh();
  }

  async close(task, actions, button) {
    button.disabled = true;
    const outcome = actions.querySelector('.followup-outcome').value;
    const note = actions.querySelector('.followup-note').value.trim();
    try {
      await api('POST', `/api/followups/${encodeURIComponent(task.id)}/close`, {
        outcome,
        note: note === '' ? null : note,
      });
      showNotice(this.notices, { key: 'followups.closed' }, { level: 'success' });
    } catch (err) {
      this.report(err);
    }
    await this.refresh();
  }

  report(err) {
    if (err instanceof ApiError && err.status === 409) {
      showNotice(this.notices, { key: 'followups.claimed_by_other' });
    } else {
      showError(this.error, err);
    }
  }
}

/** Mount the panel into `slot` (agent page) and load the tasks. */
export function mountFollowups(slot, notices = document.getElementById('notices')) {
  if (!slot) return null;
  const section = document.createElement('section');
  section.id = 'followups';
  section.className = 'panel';
  section.setAttribute('aria-labelledby', 'followups-heading');
  slot.replaceChildren(section);
  const panel = new FollowupsPanel(section, notices);
  void panel.refresh();
  return panel;
}
