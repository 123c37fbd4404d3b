// Vehicle status: the one definition of moving / idle / stopped / offline, their
// colours and the words the legend uses. Markers, list dots, filters, the panel
// and the legend all read this table; the CSS gets the colours as variables.

import { isNum } from './format.js';

export const MOVING_KMH = 3;                 // faster than this counts as moving
export const OFFLINE_AFTER_MS = 5 * 60_000;  // nothing heard for 5 min counts as offline

export const STATUSES = [
  { key: 'moving', label: 'Moving', colour: '#15803d', help: `faster than ${MOVING_KMH} km/h` },
  { key: 'idle', label: 'Idle', colour: '#d97706', help: 'engine on, not moving' },
  { key: 'stopped', label: 'Stopped', colour: '#2563eb', help: 'not moving, engine off or not reported' },
  { key: 'offline', label: 'Offline', colour: '#6b7280', help: 'device offline, or silent for 5 min' },
];
export const NO_POSITION = { key: 'unknown', label: 'No position', colour: '#b6bcc6', help: 'never reported a position' };

const BY_KEY = new Map([...STATUSES, NO_POSITION].map((s) => [s.key, s]));
export const statusInfo = (key) => BY_KEY.get(key) || NO_POSITION;

/** The status of a live state object ({t, recv, lat, lon, spd, online, eng}). */
export function statusOf(state, now) {
  if (!state || !isNum(state.lat) || !isNum(state.lon)) return 'unknown';
  const seen = Math.max(state.t || 0, state.recv || 0);
  if (state.online === false || now - seen > OFFLINE_AFTER_MS) return 'offline';
  if (isNum(state.spd) && state.spd > MOVING_KMH) return 'moving';
  return state.eng?.ign === true ? 'idle' : 'stopped';
}

/** Publishes the colours to CSS (--moving, --idle, ...) so stylesheets never repeat them. */
export function installColours(root = document.documentElement) {
  for (const s of [...STATUSES, NO_POSITION]) root.style.setProperty(`--${s.key}`, s.colour);
}

export function renderLegend(ul) {
  ul.replaceChildren(...STATUSES.map((s) => {
    const li = document.createElement('li');
    li.title = s.help;
    const dot = document.createElement('span');
    dot.className = `dot status-${s.key}`;
    dot.setAttribute('aria-hidden', 'true');
    const text = document.createElement('span');
    text.innerHTML = `<b></b> <span class="muted"></span>`;
    text.querySelector('b').textContent = s.label;
    text.querySelector('.muted').textContent = s.help;
    li.append(dot, text);
    return li;
  }));
}
