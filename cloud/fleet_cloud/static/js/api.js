// The API client and the session: login, access-token refresh before expiry,
// logout (revoked on the server), and one fetch wrapper with the error shape
// {"error": {"code", "message", "field"}} turned into an ApiError.

const API = '/api/v1';
const KEYS = ['access', 'refresh', 'expires_at', 'email', 'role'];
const store = {
  get: (k) => sessionStorage.getItem(`fleet.${k}`),
  set: (k, v) => sessionStorage.setItem(`fleet.${k}`, v),
  clear: () => KEYS.forEach((k) => sessionStorage.removeItem(`fleet.${k}`)),
};
// Refresh when this share of the token's life is left (at least 30 s before expiry).
const REFRESH_AT_REMAINING = 0.2;

export class AuthError extends Error {}
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function errorOf(res) {
  try {
    const body = await res.json();
    const e = body?.error;
    if (e?.message) return new ApiError(res.status, e.code, e.message, e.field);
  } catch { /* not JSON */ }
  return new ApiError(res.status, 'http', `HTTP ${res.status}`);
}

let refreshTimer = null;
let refreshing = null;            // one refresh at a time: a refresh token works once
let onExpired = () => {};

export const session = {
  get token() { return store.get('access'); },
  get email() { return store.get('email') || ''; },
  get role() { return store.get('role') || ''; },
  get expiresAt() { return Number(store.get('expires_at') || 0); },
  get active() { return !!store.get('access'); },
  can(...roles) { return roles.includes(this.role); },
};

function save(body) {
  store.set('access', body.access_token);
  store.set('refresh', body.refresh_token || '');
  store.set('email', body.user?.email || '');
  store.set('role', body.user?.role || '');
  const ttl = Number(body.expires_in || 0);
  store.set('expires_at', String(Date.now() + ttl * 1000));
  scheduleRefresh(ttl * 1000);
}

function scheduleRefresh(ttlMs) {
  clearTimeout(refreshTimer);
  if (!(ttlMs > 0)) return;
  const lead = Math.max(30_000, ttlMs * REFRESH_AT_REMAINING);
  const due = Math.max(1000, session.expiresAt - Date.now() - lead);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), due);
}

/** Called when the session ends without the user asking (refresh refused, revoked). */
export function onSessionExpired(fn) { onExpired = fn; }

export async function login(email, password) {
  const res = await fetch(`${API}/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!res.ok) throw await errorOf(res);
  save(await res.json());
}

/** Trades the refresh token for a new pair; ends the session when it is refused. */
export function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    const token = store.get('refresh');
    if (!token) throw new AuthError('no refresh token');
    let res;
    try {
      res = await fetch(`${API}/auth/refresh`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ refresh_token: token }),
      });
    } catch (err) {
      // Server unreachable: try again shortly while the access token still works.
      if (Date.now() < session.expiresAt) refreshTimer = setTimeout(() => refresh().catch(() => {}), 15_000);
      throw err;
    }
    if (res.status === 401 || res.status === 422) {
      end();
      onExpired();
      throw new AuthError('session expired');
    }
    if (!res.ok) throw await errorOf(res);
    save(await res.json());
  })().finally(() => { refreshing = null; });
  return refreshing;
}

/** Restores a session after a reload: refreshes first when the access token has expired. */
export async function resume() {
  if (!session.active) return false;
  if (Date.now() < session.expiresAt - 5000) {
    scheduleRefresh(session.expiresAt - Date.now());
    return true;
  }
  try {
    await refresh();
    return true;
  } catch {
    return false;
  }
}

function end() {
  clearTimeout(refreshTimer);
  store.clear();
}

/** Revokes the session on the server (best effort), then forgets it here. */
export async function logout() {
  const token = session.token;
  const refreshToken = store.get('refresh');
  end();
  if (!token) return;
  try {
    await fetch(`${API}/auth/logout`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ refresh_token: refreshToken || null }),
    });
  } catch { /* offline: the token still expires on its own */ }
}

/** A JSON request with the access token; one refresh-and-retry on a 401. */
export async function api(path, { method = 'GET', body, raw = false } = {}) {
  const send = () => fetch(API + path, {
    method,
    headers: {
      Accept: 'application/json',
      Authorization: `Bearer ${session.token}`,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  if (!session.active) throw new AuthError('signed out');
  let res = await send();
  if (res.status === 401 && store.get('refresh')) {
    await refresh();               // throws AuthError when the session is over
    res = await send();
  }
  if (res.status === 401) {
    end();
    onExpired();
    throw new AuthError('session expired');
  }
  if (!res.ok) throw await errorOf(res);
  if (raw || res.status === 204) return res;
  return res.json();
}

export async function uiConfig() {
  const res = await fetch(`${API}/ui-config`, { headers: { Accept: 'application/json' } });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

export function wsUrl() {
  const url = new URL(`${API}/ws`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', session.token || '');
  return url;
}
