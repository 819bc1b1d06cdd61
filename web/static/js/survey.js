// Satisfaction survey card: CSAT 1–5 (required), NPS 0–10 and a comment (optional), then a
// thank-you. One renderer serves both places a customer answers:
//   * the customer page, after the contact.closed frame: showSurvey(contactId) fetches the
//     signed-in customer's pending survey and answers it through /api/surveys/<id>;
//   * survey.html, opened from the signed link sent by SMS or e-mail: the token rides in
//     the URL fragment (#t=…), which never reaches the server's logs, and is the only
//     credential of the public /api/surveys/link/<token> routes.
//
// The markup is a constant string (numbers and catalogue keys only); the comment is read
// from the textarea and never written into the page as HTML.

import { api, ApiError } from './api.js';
import { fillSlots } from './chrome.js';
import { clearMessage, showError, showMessage } from './errors.js';
import { applyI18n, initI18n } from './i18n.js';

const CSAT_VALUES = [1, 2, 3, 4, 5];
const NPS_VALUES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const MAX_COMMENT = 1000;

function scale(name, values) {
  return values
    .map(
      (v) =>
        `<span class="survey-choice"><input type="radio" id="survey-${name}-${v}" name="${name}" value="${v}">` +
        `<label for="survey-${name}-${v}">${v}</label></span>`,
    )
    .join('');
}

const CARD_HTML =
  '<h2 id="survey-heading" data-i18n="survey.heading">How did we do?</h2>' +
  '<form id="survey-form" class="survey-form" novalidate>' +
  '<p class="hint" data-i18n="survey.intro">Two quick questions about the conversation you just had.</p>' +
  '<fieldset id="survey-csat" class="survey-scale" aria-describedby="survey-csat-ends">' +
  '<legend data-i18n="survey.csat.label">How satisfied are you with this conversation?</legend>' +
  `<div class="survey-choices">${scale('csat', CSAT_VALUES)}</div>` +
  '<p id="survey-csat-ends" class="survey-ends"><span data-i18n="survey.csat.low">1: very dissatisfied</span>' +
  '<span data-i18n="survey.csat.high">5: very satisfied</span></p>' +
  '</fieldset>' +
  '<fieldset id="survey-nps" class="survey-scale" aria-describedby="survey-nps-ends">' +
  '<legend data-i18n="survey.nps.label">How likely are you to recommend us to a friend? (optional)</legend>' +
  `<div class="survey-choices survey-choices-wide">${scale('nps', NPS_VALUES)}</div>` +
  '<p id="survey-nps-ends" class="survey-ends"><span data-i18n="survey.nps.low">0: not at all likely</span>' +
  '<span data-i18n="survey.nps.high">10: extremely likely</span></p>' +
  '</fieldset>' +
  '<div class="field">' +
  '<label for="survey-comment" data-i18n="survey.comment.label">Anything else you want to tell us? (optional)</label>' +
  `<textarea id="survey-comment" rows="3" maxlength="${MAX_COMMENT}"></textarea>` +
  '</div>' +
  '<p id="survey-error" class="alert" role="alert" hidden></p>' +
  '<div class="survey-actions">' +
  '<button id="survey-submit" type="submit" class="button button-primary" data-i18n="survey.submit">Send feedback</button>' +
  '<button id="survey-dismiss" type="button" class="button button-quiet" data-i18n="survey.dismiss">Not now</button>' +
  '</div>' +
  '</form>' +
  '<p id="survey-thanks" class="survey-thanks" role="status" tabindex="-1" hidden data-i18n="survey.thanks">Thank you for your feedback.</p>';

function chosen(form, name) {
  const input = form.querySelector(`input[name="${name}"]:checked`);
  return input ? Number.parseInt(input.value, 10) : null;
}

/**
 * Render the card into `card` (an element that becomes `#survey-card[data-state]`, states
 * `form`, `sending`, `done`) and call `submit(answer)` with {csat, nps, comment}.
 * `dismissible` shows "Not now" (the customer page: the link comes later anyway).
 */
export function renderSurveyCard(card, { submit, dismissible = true }) {
  card.id = 'survey-card';
  card.classList.add('survey-card');
  card.setAttribute('aria-labelledby', 'survey-heading');
  card.innerHTML = CARD_HTML;
  applyI18n(card);
  const form = card.querySelector('#survey-form');
  const error = card.querySelector('#survey-error');
  const sendButton = card.querySelector('#survey-submit');
  const dismiss = card.querySelector('#survey-dismiss');
  const thanks = card.querySelector('#survey-thanks');
  dismiss.hidden = !dismissible;
  card.dataset.state = 'form';
  card.hidden = false;

  const done = (message) => {
    form.hidden = true;
    if (message) showMessage(thanks, message);
    thanks.hidden = false;
    card.dataset.state = 'done';
    thanks.focus();
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearMessage(error);
    const csat = chosen(form, 'csat');
    if (csat === null) {
      showMessage(error, { key: 'survey.csat_required' });
      form.querySelector('#survey-csat-1').focus();
      return;
    }
    const comment = form.querySelector('#survey-comment').value.trim().slice(0, MAX_COMMENT);
    const answer = { csat, nps: chosen(form, 'nps'), comment: comment === '' ? null : comment };
    sendButton.disabled = true;
    card.dataset.state = 'sending';
    try {
      await submit(answer);
      done(null);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'already_answered') {
        done({ key: 'survey.already_answered' });
        return;
      }
      showError(error, err);
      sendButton.disabled = false;
      card.dataset.state = 'form';
    }
  });
  dismiss.addEventListener('click', () => {
    card.hidden = true;
    card.dataset.state = 'dismissed';
  });
  return card;
}

/**
 * Customer page hook: show the survey of `contactId` if the bank offered one (a contact
 * that never reached an adviser, or a customer asked recently, gets none).
 */
export async function showSurvey(contactId) {
  const slot = document.getElementById('survey-slot');
  if (!slot) return false;
  let pending;
  try {
    const query = contactId ? `?contact_id=${encodeURIComponent(contactId)}` : '';
    pending = (await api('GET', `/api/surveys/pending${query}`))?.survey;
  } catch {
    return false; // no survey is better than an error box after a finished conversation
  }
  if (!pending || typeof pending.id !== 'string') return false;
  const card = document.createElement('section');
  slot.replaceChildren(card);
  renderSurveyCard(card, {
    submit: (answer) => api('POST', `/api/surveys/${encodeURIComponent(pending.id)}`, answer),
  });
  card.dataset.surveyId = pending.id;
  return true;
}

// ---- survey.html: the page the signed link opens ---------------------------------------

function tokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  const token = params.get('t') ?? '';
  return /^[A-Za-z0-9_-]{20,128}$/.test(token) ? token : null;
}

const LINK_PROBLEMS = {
  invalid_link: { key: 'survey.link.invalid_link' },
  link_expired: { key: 'survey.link.link_expired' },
  already_answered: { key: 'survey.link.already_answered' },
  unavailable: { key: 'survey.link.unavailable' },
};

async function linkPage() {
  fillSlots();
  await initI18n();
  const slot = document.getElementById('survey-slot');
  const problem = document.getElementById('survey-link-problem');
  const showProblem = (code) => {
    const known = Object.hasOwn(LINK_PROBLEMS, code) ? code : 'unavailable';
    problem.dataset.code = known;
    showMessage(problem, LINK_PROBLEMS[known]);
  };
  const token = tokenFromFragment();
  if (token === null) {
    showProblem('invalid_link');
  } else {
    try {
      await api('GET', `/api/surveys/link/${token}`);
      const card = document.createElement('section');
      slot.replaceChildren(card);
      renderSurveyCard(card, {
        dismissible: false,
        submit: async (answer) => {
          await api('POST', `/api/surveys/link/${token}`, answer);
          // the link is used up: keep it out of the history and bookmarks
          window.history.replaceState(null, '', window.location.pathname);
        },
      });
    } catch (err) {
      showProblem(err instanceof ApiError && err.code ? err.code : 'unavailable');
    }
  }
  document.body.dataset.ready = 'true';
}

if (document.body?.dataset.page === 'survey') void linkPage();
