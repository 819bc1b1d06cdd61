// Shared frame of the role pages: header markup, translations, current user, sign-out.
//
// The header (skip link, brand, #user-name, #lang-switch, #signout) is injected from
// chrome.js as soon as this module runs, so the HTML pages only carry their <main>.
//
// Importing this module starts the shell once (ES modules are singletons), so feature
// modules added later can simply do:
//     import { ready } from './shell.js';
//     const user = await ready;   // {id, username, display_name, role}

import { api, ApiError, setCsrfToken } from './api.js';
import { clearSessionCache, injectHeader } from './chrome.js';
import { clearMessage, showError, showMessage } from './errors.js';
import { initI18n } from './i18n.js';

const SIGNIN_PATH = '/signin';
const KNOWN_ROLES = new Set(['customer', 'agent', 'auditor', 'supervisor']);

function goToSignin() {
  // replace(): the protected page should not stay in history behind the sign-in form.
  window.location.replace(SIGNIN_PATH);
}

function fillHeader(user) {
  const name = document.getElementById('user-name');
  if (name) name.textContent = user.display_name || user.username;
  const role = document.getElementById('user-role');
  if (role) {
    if (KNOWN_ROLES.has(user.role)) {
      showMessage(role, { key: `role.${user.role}` });
    } else {
      showMessage(role, { text: String(user.role ?? '') });
    }
  }
  const who = document.getElementById('user-info');
  if (who) who.hidden = false;
}

async function signOut(button) {
  const errorBox = document.getElementById('shell-error');
  if (errorBox) clearMessage(errorBox);
  button.disabled = true;
  try {
    await api('POST', '/api/auth/signout');
  } catch (err) {
    // 401: the session is already gone, which is what the user wanted.
    if (!(err instanceof ApiError && err.status === 401)) {
      if (errorBox) showMessage(errorBox, { key: 'errors.signout_failed' });
      button.disabled = false;
      return;
    }
  }
  setCsrfToken(null);
  clearSessionCache();
  goToSignin();
}

async function start() {
  injectHeader();
  await initI18n();
  let me;
  try {
    me = await api('GET', '/api/auth/me');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      goToSignin();
      return new Promise(() => {}); // never resolves: the page is going away
    }
    const errorBox = document.getElementById('shell-error');
    if (errorBox) showError(errorBox, err);
    throw err;
  }
  fillHeader(me.user);
  const button = document.getElementById('signout');
  if (button) {
    button.addEventListener('click', () => void signOut(button));
    button.disabled = false;
  }
  document.body.dataset.ready = 'true'; // lets browser tests wait for the header to be filled
  return me.user;
}

/** Resolves to the signed-in user once the header is filled. */
export const ready = start();
// Failures are already shown in #shell-error; avoid an "unhandled rejection" console error.
ready.catch(() => {});
