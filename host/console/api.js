// The console's only way to the host: the public HTTP API, with the bearer token.
//
// The token lives in this tab's sessionStorage: it goes with every request in the
// `Authorization` header, never in a URL (URLs end up in history and logs) and never
// in a cookie (`credentials: 'omit'`), and it is gone when the tab closes.

const TOKEN_KEY = 'refract.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(secret) {
  sessionStorage.setItem(TOKEN_KEY, secret);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * A failed call. `kind` is `unauthorized` (no token, or the host refused it),
 * `unreachable` (no answer: the host is down or the network is), or `refused` (the
 * host answered with an error; `message` is the host's own).
 */
export class ApiError extends Error {
  constructor(kind, message, { status = 0, code = kind } = {}) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

/** Listeners told when the host refuses the token, so the app can ask for it again. */
const unauthorizedListeners = new Set();

export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function unauthorized(message) {
  clearToken();
  const error = new ApiError('unauthorized', message, { status: 401 });
  for (const listener of unauthorizedListeners) listener(error);
  return error;
}

async function send(method, path, { body, contentType, signal, accept = [] } = {}) {
  const secret = token();
  if (!secret) {
    throw unauthorized('Sign in with the API token first.');
  }
  const headers = { Authorization: `Bearer ${secret}` };
  if (contentType) headers['Content-Type'] = contentType;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: 'no-store', credentials: 'omit', redirect: 'error' });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(
      'unreachable',
      `The host at ${location.origin} does not answer: is \`refract run\` still running? (${error.message})`,
    );
  }
  if (response.status === 401) {
    const answer = await errorOf(response);
    throw unauthorized(`The host refused the token: ${answer.message}`);
  }
  if (!response.ok && !accept.includes(response.status)) {
    const answer = await errorOf(response);
    throw new ApiError('refused', answer.message, { status: response.status, code: answer.code });
  }
  return response;
}

/** The API's error shape `{"error": {"code", "message"}}`, or a description of what came instead. */
async function errorOf(response) {
  const text = await response.text().catch(() => '');
  try {
    const { error } = JSON.parse(text);
    if (error && typeof error.message === 'string') {
      return { code: String(error.code), message: error.message };
    }
  } catch {
    // Not the API's JSON: a proxy's page, or a host this console does not know.
  }
  const shown = text.trim().slice(0, 200);
  return {
    code: `http_${response.status}`,
    message: `HTTP ${response.status} ${response.statusText}${shown ? `: ${shown}` : ''}`,
  };
}

/** GET or POST `path`, answering the parsed JSON body. */
export async function call(method, path, options = {}) {
  const response = await send(method, path, options);
  return response.json();
}

export const get = (path, options) => call('GET', path, options);

export const postJson = (path, value, options = {}) =>
  call('POST', path, { ...options, body: JSON.stringify(value), contentType: 'application/json' });

/** `/health`: answers `{status, reasons}` for 200 and 503 alike. */
export async function health() {
  const response = await send('GET', '/health', { accept: [503] });
  return response.json();
}

/** A query string from an object, skipping empty values; arrays repeat the key. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && String(one).trim() !== '') search.append(key, String(one).trim());
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/**
 * Follows `GET /v1/events/subscribe` (Server-Sent Events) with the token in a header,
 * which EventSource cannot send: the body is read as a stream and split into
 * messages. Calls `onEvent` with each event; resolves when the stream ends; `signal`
 * stops it.
 */
export async function subscribe(params, onEvent, signal) {
  const response = await send('GET', `/v1/events/subscribe${query(params)}`, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
      const data = message
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}
