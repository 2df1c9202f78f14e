// Talking to the server: relative URLs (the page works under a proxy's path prefix), the API key typed once and
// kept in sessionStorage (this tab, until it closes), and the server's error messages as Error messages.
'use strict';

const KEY_ITEM = 'higgs-playground-api-key';

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || '';
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

export function headers(extra = {}) {
  const key = apiKey();
  return key ? {...extra, 'X-API-Key': key} : extra;
}

// An answer's message: {success:false, message} from the spec's endpoints, {error:{message}} from /v1.
export async function errorText(response) {
  try {
    const body = await response.json();
    const message = body.message || (body.error && body.error.message) || JSON.stringify(body);
    const hint = response.status === 401 ? ' (type the server\'s API key at the top of the page)' : '';
    return `${response.status}: ${message}${hint}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

export async function request(path, options = {}) {
  const response = await fetch(path, {...options, headers: headers(options.headers || {})});
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export function postJson(path, body, signal) {
  return request(path, {method: 'POST', body: JSON.stringify(body), signal,
                        headers: {'Content-Type': 'application/json'}});
}

// The realtime endpoint next to this page (ws: or wss:), and the subprotocols that carry the key: browsers
// cannot set headers on a WebSocket.
export function openSocket(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const key = apiKey();
  return new WebSocket(url, key ? ['higgs-audio', `higgs-api-key.${key}`] : ['higgs-audio']);
}
