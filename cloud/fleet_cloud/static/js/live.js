// The WebSocket: subscribe to the whole fleet, hand position/status frames to
// the fleet store and alert frames to the alert feed; reconnect with backoff.
// The server closes the socket when the access token expires (1008): we then
// reconnect at once with the refreshed token.

import { session, wsUrl } from './api.js';
import { $ } from './format.js';

const MAX_BACKOFF_MS = 30_000;
const live = { ws: null, attempt: 0, timer: null, stopped: true, handlers: null };

function setState(state, detail = '') {
  const s = $('ws-state');
  s.textContent = state;
  s.dataset.state = state;
  s.title = detail || `Live updates: ${state}`;
}

/** handlers: {beforeConnect: async () => void, onStates(list), onStatus(frame), onAlert(event)} */
export function startLive(handlers) {
  live.handlers = handlers;
  live.stopped = false;
  live.attempt = 0;
  setState('connecting');
  reconnect();
}

export function stopLive() {
  live.stopped = true;
  clearTimeout(live.timer);
  const ws = live.ws;
  live.ws = null;
  if (ws) {
    ws.onclose = ws.onmessage = null;
    ws.close(1000);
  }
}

function connect() {
  clearTimeout(live.timer);
  const ws = new WebSocket(wsUrl());
  live.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: 'subscribe', all: true }));
  ws.onmessage = (ev) => { if (live.ws === ws) onFrame(ev.data); };
  ws.onclose = (ev) => {
    if (live.ws !== ws) return;
    live.ws = null;
    if (live.stopped) return;
    // Token expired on an open socket: the session refreshes on its own; come back now.
    if (ev.code === 1008 && ev.reason === 'token expired' && session.active) {
      live.attempt = 0;
      live.timer = setTimeout(reconnect, 250);
      return;
    }
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** live.attempt);
  const delay = Math.round(base * (0.75 + Math.random() * 0.5));
  live.attempt += 1;
  setState('reconnecting', `Live updates lost; next attempt in ${Math.round(delay / 1000)} s`);
  clearTimeout(live.timer);
  live.timer = setTimeout(reconnect, delay);
}

// A REST call first checks the token (refreshing it if needed) and that the
// server is back, so a dead server does not cost a failed WebSocket per try.
async function reconnect() {
  if (live.stopped) return;
  try {
    await live.handlers.beforeConnect();
  } catch {
    if (!live.stopped && session.active) scheduleReconnect();
    return;
  }
  if (!live.stopped) connect();
}

export function retryNow() {
  if (!live.stopped && !live.ws) { clearTimeout(live.timer); reconnect(); }
}

function onFrame(text) {
  let msg;
  try { msg = JSON.parse(text); } catch { return; }
  const h = live.handlers;
  switch (msg.type) {
    case 'snapshot':
      h.onStates(msg.vehicles || [], true);
      setState('connected');
      live.attempt = 0;
      break;
    case 'positions':
      h.onStates(msg.vehicles || [], false);
      break;
    case 'status':
      h.onStates([{ vehicle_id: msg.vehicle_id, online: msg.online }], false);
      break;
    case 'alert':
      if (msg.event) h.onAlert(msg.event);
      break;
    case 'error':
      $('ws-state').title = `Live updates: ${msg.message || msg.code || 'error'}`;
      break;
    default:
      break;
  }
}
