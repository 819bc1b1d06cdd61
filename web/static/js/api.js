// Thin fetch wrapper for the vbank JSON API.
//
// Errors come back as RFC 9457 problem+json; they are thrown as ApiError so callers can
// branch on `status` / `code` instead of parsing responses themselves.
// The CSRF token lives only in module memory (never in storage) so a script injected into
// another page cannot read it from localStorage; it is captured from any response that
// carries `csrf_token` (sign-in, /api/auth/me) and sent on every state-changing request.

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

let csrfToken = null;

/** Remember (or forget, with null) the CSRF token sent as X-CSRF-Token. */
export function setCsrfToken(token) {
  csrfToken = typeof token === 'string' && token !== '' ? token : null;
}

export function getCsrfToken() {
  return csrfToken;
}

export class ApiError extends Error {
  /**
   * @param {{type?: string, title?: string, status?: number, detail?: string, code?: string}} problem
   * @param {number|null} retryAfter seconds from the Retry-After header, if any
   */
  constructor(problem, retryAfter = null) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.name = 'ApiError';
    this.type = problem.type ?? 'about:blank';
    this.title = problem.title ?? '';
    this.status = problem.status ?? 0;
    this.detail = problem.detail ?? '';
    this.code = problem.code ?? null;
    this.retryAfter = retryAfter;
  }
}

function parseRetryAfter(response) {
  const raw = response.headers.get('Retry-After');
  if (raw === null) return null;
  const seconds = Number.parseInt(raw, 10);
  // An HTTP-date is allowed too; we only care about the delta-seconds form the server sends.
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

async function readBody(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      return await response.json();
    } catch {
      return null; // malformed JSON: treat like an empty body
    }
  }
  const text = await response.text();
  return text === '' ? null : text;
}

/**
 * Call the API. Resolves to the parsed JSON body (null for 204), throws ApiError otherwise.
 * Network failures are reported as ApiError with status 0 and code 'network'.
 */
export async function api(method, path, body) {
  const verb = method.toUpperCase();
  const headers = { Accept: 'application/json, application/problem+json' };
  const init = { method: verb, credentials: 'same-origin', headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (!SAFE_METHODS.has(verb) && csrfToken !== null) {
    headers['X-CSRF-Token'] = csrfToken;
  }

  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError({ title: 'Network error', status: 0, detail: String(err), code: 'network' });
  }

  const data = response.status === 204 ? null : await readBody(response);
  if (!response.ok) {
    const problem =
      data !== null && typeof data === 'object'
        ? { ...data, status: data.status ?? response.status }
        : { title: response.statusText, status: response.status, detail: typeof data === 'string' ? data : '' };
    throw new ApiError(problem, parseRetryAfter(response));
  }
  if (data !== null && typeof data === 'object' && typeof data.csrf_token === 'string') {
    setCsrfToken(data.csrf_token);
  }
  return data;
}
