// Render an ApiError (or any error) into a message element, translated where possible.
//
// A problem whose `code` has an `errors.<code>` key in the catalogue is shown translated;
// the key is left on the element as data-i18n so a later language switch re-translates it.
// Anything else shows the server's `detail` verbatim (it is already human-readable).

import { ApiError } from './api.js';
import { applyI18n, hasKey } from './i18n.js';

function messageFor(err) {
  if (err instanceof ApiError) {
    if (err.code === 'throttled' && err.retryAfter !== null && hasKey('errors.throttled_retry')) {
      return { key: 'errors.throttled_retry', args: { seconds: err.retryAfter } };
    }
    if (err.code && hasKey(`errors.${err.code}`)) return { key: `errors.${err.code}` };
    if (err.detail) return { text: err.detail };
    if (err.title) return { text: err.title };
  }
  return { key: 'errors.unknown' };
}

/** Show `err` in `el` (and unhide it). */
export function showError(el, err) {
  showMessage(el, messageFor(err));
}

/** Show a catalogue message ({key, args}) or a literal one ({text}) in `el`. */
export function showMessage(el, { key, args, text }) {
  el.removeAttribute('data-i18n-args');
  if (key) {
    el.setAttribute('data-i18n', key);
    if (args) el.setAttribute('data-i18n-args', JSON.stringify(args));
    applyI18n(el);
  } else {
    el.removeAttribute('data-i18n');
    el.textContent = text ?? '';
  }
  el.hidden = false;
}

/** Empty and hide a message element. */
export function clearMessage(el) {
  el.removeAttribute('data-i18n');
  el.removeAttribute('data-i18n-args');
  el.textContent = '';
  el.hidden = true;
}

// ---- Non-blocking notices (websocket errors and other transient news) ------------------

/** Error codes of the realtime protocol (error frames) plus the client's own failures. */
export const REALTIME_ERROR_CODES = [
  'bad_json', 'too_large', 'unknown_type', 'invalid_message', 'unsupported_version',
  'forbidden', 'not_found', 'rate_limited', 'out_of_order', 'bad_sdp', 'refused', 'internal',
  'offline', 'timeout', 'disconnected',
];

/** Catalogue message for a realtime error code (`ws_errors.<code>`, else a generic one). */
export function realtimeErrorMessage(code) {
  return REALTIME_ERROR_CODES.includes(code) ? { key: `ws_errors.${code}` } : { key: 'ws_errors.generic' };
}

const NOTICE_TIMEOUT_MS = 8000;

/**
 * Add a dismissible notice to `container` (an aria-live region) without stealing focus.
 * `message` is {key, args} or {text}; level is info | success | error.
 */
export function showNotice(container, message, { level = 'error', timeoutMs = NOTICE_TIMEOUT_MS } = {}) {
  if (!container) return null;
  const notice = document.createElement('div');
  notice.className = `notice notice-${level}`;
  const text = document.createElement('p');
  text.className = 'notice-text';
  showMessage(text, message);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'notice-close';
  close.setAttribute('data-i18n-aria-label', 'common.dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => notice.remove());
  notice.append(text, close);
  applyI18n(notice);
  // keep at most a handful on screen
  while (container.children.length >= 4) container.firstElementChild.remove();
  container.append(notice);
  if (timeoutMs > 0) setTimeout(() => notice.remove(), timeoutMs);
  return notice;
}
