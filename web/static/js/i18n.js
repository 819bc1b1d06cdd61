// Client-side translations.
//
// Catalogues are flat JSON files (key → string) in /static/i18n/. English is always loaded
// as the fallback, so a key missing from another catalogue shows English rather than a raw
// key; a key missing everywhere shows the key itself (and check_i18n.py catches it in CI).
//
// Markup hooks:
//   data-i18n="key"              → element.textContent
//   data-i18n-placeholder="key"  → placeholder attribute
//   data-i18n-title="key"        → title attribute
//   data-i18n-aria-label="key"   → aria-label attribute
//   data-i18n-args='{"n": 3}'    → interpolation parameters for the keys above

export const SUPPORTED_LANGUAGES = ['en', 'zh-CN'];
export const DEFAULT_LANGUAGE = 'en';
export const STORAGE_KEY = 'vbank.lang';
export const LANGUAGE_CHANGE_EVENT = 'vbank:languagechange';

const ATTRIBUTE_HOOKS = [
  ['data-i18n-placeholder', 'placeholder'],
  ['data-i18n-title', 'title'],
  ['data-i18n-aria-label', 'aria-label'],
];

const catalogues = new Map(); // language → {key: string}
let current = DEFAULT_LANGUAGE;

function readStoredLanguage() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage can be disabled (privacy settings); fall through to detection
  }
}

function storeLanguage(lang) {
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // Not fatal: the choice still applies to this page.
  }
}

/** Stored choice if valid, else the first zh* browser language → zh-CN, else English. */
export function detectLanguage() {
  const stored = readStoredLanguage();
  if (stored !== null && SUPPORTED_LANGUAGES.includes(stored)) return stored;
  const preferred = navigator.languages?.length ? navigator.languages : [navigator.language];
  for (const tag of preferred) {
    if (typeof tag === 'string' && tag.toLowerCase().startsWith('zh')) return 'zh-CN';
  }
  return DEFAULT_LANGUAGE;
}

async function loadCatalogue(lang) {
  if (catalogues.has(lang)) return catalogues.get(lang);
  // Resolved against this module so the pages work wherever /static is mounted.
  const url = new URL(`../i18n/${lang}.json`, import.meta.url);
  let entries = {};
  try {
    const response = await fetch(url, { credentials: 'same-origin' });
    if (response.ok) entries = await response.json();
  } catch {
    // Offline or missing file: keys fall back to English / the key itself.
  }
  catalogues.set(lang, entries);
  return entries;
}

export function currentLanguage() {
  return current;
}

/** True if `key` exists in the current or the English catalogue. */
export function hasKey(key) {
  return key in (catalogues.get(current) ?? {}) || key in (catalogues.get(DEFAULT_LANGUAGE) ?? {});
}

/** Translate `key`, replacing `{name}` placeholders from `params`. */
export function t(key, params = {}) {
  const template =
    catalogues.get(current)?.[key] ?? catalogues.get(DEFAULT_LANGUAGE)?.[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

function argsOf(el) {
  const raw = el.getAttribute('data-i18n-args');
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch {
    return {};
  }
}

/** Translate every hooked element under `root` (the root included) and set <html lang>. */
export function applyI18n(root = document) {
  const scope = root.querySelectorAll ? root : document;
  const select = (attr) => {
    const found = [...scope.querySelectorAll(`[${attr}]`)];
    if (scope instanceof Element && scope.hasAttribute(attr)) found.unshift(scope);
    return found;
  };
  for (const el of select('data-i18n')) {
    el.textContent = t(el.getAttribute('data-i18n'), argsOf(el));
  }
  for (const [hook, target] of ATTRIBUTE_HOOKS) {
    for (const el of select(hook)) {
      el.setAttribute(target, t(el.getAttribute(hook), argsOf(el)));
    }
  }
  document.documentElement.lang = current;
}

/**
 * Put a catalogue message ({key, args}) or literal text ({text}) into `el`, leaving the key
 * on the element so a later language switch re-translates it.
 */
export function setText(el, { key, args, text } = {}) {
  if (!el) return;
  if (args) el.setAttribute('data-i18n-args', JSON.stringify(args));
  else el.removeAttribute('data-i18n-args');
  if (key) {
    el.setAttribute('data-i18n', key);
    el.textContent = t(key, args ?? {});
  } else {
    el.removeAttribute('data-i18n');
    el.textContent = text ?? '';
  }
}

/** Switch language without reloading: store, load, re-apply, then notify listeners. */
export async function setLanguage(lang) {
  if (!SUPPORTED_LANGUAGES.includes(lang)) lang = DEFAULT_LANGUAGE;
  storeLanguage(lang);
  await loadCatalogue(lang);
  current = lang;
  applyI18n(document);
  for (const select of document.querySelectorAll('#lang-switch')) select.value = lang;
  document.dispatchEvent(new CustomEvent(LANGUAGE_CHANGE_EVENT, { detail: { lang } }));
}

function wireLanguageSwitch() {
  const select = document.getElementById('lang-switch');
  if (!select || select.dataset.wired === 'true') return;
  select.dataset.wired = 'true';
  select.value = current;
  select.addEventListener('change', () => {
    void setLanguage(select.value);
  });
}

/** Load catalogues for the detected language, translate the page and wire #lang-switch. */
export async function initI18n(root = document) {
  const lang = detectLanguage();
  await Promise.all([loadCatalogue(DEFAULT_LANGUAGE), loadCatalogue(lang)]);
  current = lang;
  applyI18n(root);
  wireLanguageSwitch();
  return current;
}
