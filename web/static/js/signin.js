// Sign-in page: POST credentials, go to the role home the server returns.

import { api } from './api.js';
import { clearSessionCache, fillSlots } from './chrome.js';
import { clearMessage, showError, showMessage } from './errors.js';
import { applyI18n, initI18n } from './i18n.js';

const FALLBACK_HOME = '/';

/** Only follow same-origin paths, so a tampered response cannot redirect off-site. */
function safeHome(home) {
  return typeof home === 'string' && home.startsWith('/') && !home.startsWith('//')
    && !home.startsWith('/\\')
    ? home
    : FALLBACK_HOME;
}

function setBusy(form, busy) {
  const button = form.querySelector('#signin-submit');
  button.disabled = busy;
  button.setAttribute('data-i18n', busy ? 'signin.submitting' : 'signin.submit');
  form.setAttribute('aria-busy', String(busy));
  applyI18n(button);
}

async function onSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const errorBox = document.getElementById('signin-error');
  const username = document.getElementById('username');
  const password = document.getElementById('password');

  clearMessage(errorBox);
  if (username.value.trim() === '' || password.value === '') {
    showMessage(errorBox, { key: 'signin.missing_fields' });
    (username.value.trim() === '' ? username : password).focus();
    return;
  }

  setBusy(form, true);
  try {
    const result = await api('POST', '/api/auth/signin', {
      username: username.value.trim(),
      password: password.value,
    });
    window.location.assign(safeHome(result?.home));
    return; // keep the button disabled while the next page loads
  } catch (err) {
    showError(errorBox, err);
    password.value = '';
    password.focus();
  }
  setBusy(form, false);
}

async function main() {
  fillSlots();
  clearSessionCache(); // the previous user's cached chat must not outlive their session
  await initI18n();
  const form = document.getElementById('signin-form');
  form.addEventListener('submit', onSubmit);
  // The button ships disabled so nothing can submit the form natively before this runs.
  form.querySelector('#signin-submit').disabled = false;
  document.body.dataset.ready = 'true'; // lets browser tests wait for wiring to finish
}

void main();
