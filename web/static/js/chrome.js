// Markup shared by every page (brand, language switch, role-page header), injected by
// shell.js and signin.js so the five HTML files do not each carry a copy.
//
// Only constant strings are inserted as HTML; user data is always set with textContent.
// The strings carry data-i18n keys: the caller runs applyI18n() afterwards.

const BRAND_MARK =
  '<svg class="brand-mark" viewBox="0 0 32 32" aria-hidden="true" focusable="false">' +
  '<path d="M16 3 3 10v3h26v-3L16 3Z"/>' +
  '<path d="M6 15h3v9H6zM12 15h3v9h-3zM17 15h3v9h-3zM23 15h3v9h-3z"/><path d="M3 26h26v3H3z"/></svg>';

const BRAND_HTML =
  BRAND_MARK +
  '<span class="brand-name" data-i18n="app.name">vbank</span>' +
  '<span class="brand-tagline" data-i18n="app.tagline">Video remote banking</span>';

const LANG_SWITCH_HTML =
  '<label class="lang-switch">' +
  '<span class="visually-hidden" data-i18n="lang.label">Language</span>' +
  '<select id="lang-switch" autocomplete="off">' +
  '<option value="en" lang="en">English</option>' +
  '<option value="zh-CN" lang="zh-CN">简体中文</option>' +
  '</select></label>';

const HEADER_HTML =
  '<a class="skip-link" href="#main" data-i18n="shell.skip_to_main">Skip to main content</a>' +
  '<header class="app-header">' +
  `<div class="brand">${BRAND_HTML}</div>` +
  '<div class="header-tools">' +
  '<p id="user-info" class="user-info" hidden>' +
  '<span class="visually-hidden" data-i18n="shell.signed_in_as">Signed in as</span>' +
  '<span id="user-name" class="user-name"></span>' +
  '<span id="user-role" class="role-badge"></span>' +
  '</p>' +
  LANG_SWITCH_HTML +
  '<button id="signout" type="button" class="button button-secondary" disabled ' +
  'data-i18n="shell.signout">Sign out</button>' +
  '</div></header>';

/** Insert the role-page header (skip link, brand, user, language, sign-out) once. */
export function injectHeader(doc = document) {
  if (doc.querySelector('.app-header')) return;
  doc.body.insertAdjacentHTML('afterbegin', HEADER_HTML);
}

/** Fill every `[data-slot="brand"]` and `[data-slot="lang-switch"]` placeholder. */
export function fillSlots(doc = document) {
  for (const slot of doc.querySelectorAll('[data-slot="brand"]')) {
    if (!slot.firstChild) slot.insertAdjacentHTML('afterbegin', BRAND_HTML);
  }
  for (const slot of doc.querySelectorAll('[data-slot="lang-switch"]')) {
    if (!slot.firstChild) slot.insertAdjacentHTML('afterbegin', LANG_SWITCH_HTML);
  }
}

/** Session-scoped caches (chat history, outbox) live under this sessionStorage prefix. */
export const SESSION_CACHE_PREFIX = 'vbank.rt.';

/** Forget the cached chat of whoever used this tab (sign-out, sign-in page). */
export function clearSessionCache() {
  try {
    const doomed = [];
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith(SESSION_CACHE_PREFIX)) doomed.push(key);
    }
    for (const key of doomed) sessionStorage.removeItem(key);
  } catch {
    // storage disabled: nothing was cached either
  }
}
