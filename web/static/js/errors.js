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
