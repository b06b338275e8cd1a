// Calls to this server's public APIs with the console session cookie. The CSRF token (from the
// sign-in answer) lives only in this module's memory and goes on every state-changing request.

let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

/** An endpoint that this server does not have (404 unknown_url): the panel says "not available". */
export class NotAvailable extends Error {
  constructor(path) {
    super('not available on this server: ' + path);
    this.path = path;
  }
}

/** An OpenAI-style error answer. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || 'HTTP ' + status);
    this.status = status;
    this.code = e.code || null;
    this.param = e.param || null;
  }
}

export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  let json = null;
  if ((resp.headers.get('content-type') || '').startsWith('application/json')) {
    json = await resp.json();
  }
  if (resp.status === 404 && json && json.error && json.error.code === 'unknown_url') {
    throw new NotAvailable(path);
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body === undefined ? {} : body);

/** Every page of a bucketed report (usage or costs), following next_page; at most 100 pages. */
export async function allPages(path, params) {
  const pages = [];
  let page = null;
  for (let i = 0; i < 100; i++) {
    const q = new URLSearchParams(params);
    if (page) q.set('page', page);
    const p = await get(path + '?' + q.toString());
    pages.push(p);
    if (!p.has_more || !p.next_page) return pages;
    page = p.next_page;
  }
  throw new Error('more than 100 pages; choose a wider bucket or a shorter range');
}
