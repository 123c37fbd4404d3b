// The fleet as the dashboard knows it: vehicles with their latest live state,
// the list filter (search text + statuses), and change notifications.
// Renderers (map layer, list, panel) subscribe to `fleet` events.

import { api } from './api.js';
import { isNum } from './format.js';
import { statusOf } from './status.js';

export const vehicles = new Map(); // id -> {id, name, device_id, fleet_id, state, status}
export const fleet = new EventTarget();
export const filter = { q: '', statuses: new Set() }; // empty set: every status

let loaded = false;
export const isLoaded = () => loaded;

const emit = (type, detail) => fleet.dispatchEvent(new CustomEvent(type, { detail }));

export function ensureVehicle(id) {
  let v = vehicles.get(id);
  if (!v) {
    v = { id, name: `Vehicle ${id}`, device_id: '', fleet_id: null, state: null, status: 'unknown' };
    vehicles.set(id, v);
  }
  return v;
}

/** Merges a state (REST `state`, snapshot or positions entry); an older fix only updates `online`. */
export function mergeState(v, s) {
  const { vehicle_id: _ignored, ...fields } = s;
  if (v.state && isNum(v.state.t) && isNum(fields.t) && fields.t < v.state.t) {
    if (typeof fields.online === 'boolean') v.state.online = fields.online;
    return false;
  }
  // A fix without engine values replaces the engine values of the one before.
  if (v.state && isNum(fields.t) && fields.t > (v.state.t || 0) && !('eng' in fields)) delete v.state.eng;
  v.state = { ...(v.state || {}), ...fields };
  return true;
}

/** Recomputes every status (time passes: vehicles go offline); emits 'tick'. */
export function restatus(now = Date.now()) {
  for (const v of vehicles.values()) v.status = statusOf(v.state, now);
  emit('tick', { now });
}

export function matches(v) {
  if (filter.statuses.size && !filter.statuses.has(v.status)) return false;
  const q = filter.q;
  return !q || v.name.toLowerCase().includes(q) || (v.device_id || '').toLowerCase().includes(q);
}

export function setFilter({ q, statuses }) {
  if (q !== undefined) filter.q = q.trim().toLowerCase();
  if (statuses !== undefined) filter.statuses = statuses;
  emit('filter');
}

export async function loadVehicles() {
  const list = await api('/vehicles');
  const seen = new Set();
  const now = Date.now();
  for (const item of list) {
    seen.add(item.id);
    const v = ensureVehicle(item.id);
    v.name = item.name || `Vehicle ${item.id}`;
    v.device_id = item.device_id || '';
    v.fleet_id = item.fleet_id ?? null;
    if (item.state) mergeState(v, item.state);
    v.status = statusOf(v.state, now);
  }
  for (const id of [...vehicles.keys()]) if (!seen.has(id)) vehicles.delete(id);
  loaded = true;
  emit('list');
}

/** Live states from the WebSocket: returns ids that were not known (names to fetch). */
export function applyLive(states, now = Date.now()) {
  const unknown = [];
  const changed = [];
  for (const s of states) {
    if (s.vehicle_id == null) continue;
    if (!vehicles.has(s.vehicle_id)) unknown.push(s.vehicle_id);
    const v = ensureVehicle(s.vehicle_id);
    mergeState(v, s);
    v.status = statusOf(v.state, now);
    changed.push(v);
  }
  if (unknown.length) emit('list');
  if (changed.length) emit('states', { changed });
  return unknown;
}

export function reset() {
  vehicles.clear();
  loaded = false;
  filter.q = '';
  filter.statuses = new Set();
  emit('list');
}
