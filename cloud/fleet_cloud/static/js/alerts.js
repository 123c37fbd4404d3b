// The alert feed: the newest warning/critical events (GET /alerts), then live
// alert frames from the WebSocket, with acknowledge (owner/manager/dispatcher).
// Info-level events (ignition on, motion start...) stay in the event log, as
// GET /alerts does: the feed is what needs a person.

import { api, AuthError, session } from './api.js';
import { $, el, fmtAge, fmtDateTime, isNum } from './format.js';
import { vehicles } from './fleet.js';

const MAX_SHOWN = 200;
const ACKERS = ['owner', 'manager', 'dispatcher'];
const TYPE_TEXT = {
  geofence_enter: 'Entered geofence', geofence_exit: 'Left geofence', geofence_dwell: 'Stayed in geofence',
  overspeed: 'Overspeed', harsh_braking: 'Harsh braking', harsh_acceleration: 'Harsh acceleration',
  idling: 'Idling', low_battery: 'Low battery', dtc_new: 'New fault code', engine_temp_high: 'Engine hot',
  fuel_drop: 'Fuel drop', maintenance_due: 'Maintenance due', route_deviation: 'Off route',
  visit_skipped: 'Stop skipped', visit_failed: 'Stop failed', device_offline: 'Device offline',
  device_online: 'Device online', ignition_on: 'Ignition on', ignition_off: 'Ignition off',
};

const alerts = new Map(); // event id -> event (as EventOut / the alert frame's event)
let geofenceName = () => '';
let onShow = () => {};

export function initAlerts({ geofenceNameOf, show }) {
  geofenceName = geofenceNameOf;
  onShow = show;
  $('alerts-open-only').addEventListener('change', render);
}

export async function loadAlerts() {
  const list = await api('/alerts?limit=100');
  alerts.clear();
  for (const e of list) alerts.set(e.id, e);
  render();
}

export function onLiveAlert(event) {
  if (event.severity === 'info') return;
  const known = alerts.get(event.id);
  alerts.set(event.id, { ...event, acknowledged_at: known?.acknowledged_at ?? null, fresh: true });
  render();
}

export function clearAlerts() {
  alerts.clear();
  render();
}

function describe(e) {
  const d = e.details || {};
  const title = TYPE_TEXT[e.type] || e.type.replaceAll('_', ' ');
  let extra = '';
  if (e.geofence_id != null) extra = d.geofence || geofenceName(e.geofence_id) || `#${e.geofence_id}`;
  else if (e.type === 'overspeed' && isNum(d.speed_kmh)) extra = `${Math.round(d.speed_kmh)} km/h${isNum(d.limit_kmh) ? ` (limit ${Math.round(d.limit_kmh)})` : ''}`;
  else if (d.code) extra = d.code;
  else if (isNum(d.vbat)) extra = `${d.vbat.toFixed(1)} V`;
  else if (isNum(d.coolant_c)) extra = `${Math.round(d.coolant_c)} °C`;
  return extra ? `${title}: ${extra}` : title;
}

async function acknowledge(e, button) {
  button.disabled = true;
  button.textContent = 'Acknowledging…';
  try {
    const done = await api(`/events/${e.id}/acknowledge`, { method: 'POST' });
    alerts.set(e.id, { ...e, ...done, fresh: false });
  } catch (err) {
    if (err instanceof AuthError) return;
    button.disabled = false;
    button.textContent = 'Acknowledge';
    button.title = `Could not acknowledge: ${err.message}`;
    button.parentElement.querySelector('.alert-error')?.remove();
    button.parentElement.append(el('span', 'alert-error error-text', err.message));
    return;
  }
  render();
}

function render() {
  const now = Date.now();
  const openOnly = $('alerts-open-only').checked;
  const sorted = [...alerts.values()].sort((a, b) => b.t - a.t || b.id - a.id);
  const open = sorted.filter((e) => !e.acknowledged_at);
  const shown = (openOnly ? open : sorted).slice(0, MAX_SHOWN);
  const mayAck = session.can(...ACKERS);
  $('alert-list').replaceChildren(...shown.map((e) => {
    const li = el('li', `alert-row sev-${e.severity}`);
    li.dataset.eventId = String(e.id);
    li.dataset.type = e.type;
    if (e.acknowledged_at) li.classList.add('acked');
    if (e.fresh) li.classList.add('fresh');
    const head = el('button', 'alert-main');
    head.type = 'button';
    head.title = 'Show on the map';
    const v = vehicles.get(e.vehicle_id);
    head.append(
      el('span', `sev-tag sev-${e.severity}`, e.severity),
      el('span', 'alert-title', describe(e)),
      el('span', 'alert-meta', `${v?.name || `Vehicle ${e.vehicle_id}`} · ${fmtDateTime(e.t)} (${fmtAge(e.t, now)})`),
    );
    head.addEventListener('click', () => onShow(e));
    li.append(head);
    const foot = el('div', 'alert-foot');
    if (e.acknowledged_at) {
      foot.append(el('span', 'muted small', `Acknowledged ${fmtAge(new Date(e.acknowledged_at).getTime(), now)}`));
    } else if (mayAck) {
      const b = el('button', 'secondary ack-button', 'Acknowledge');
      b.type = 'button';
      b.addEventListener('click', () => acknowledge(e, b));
      foot.append(b);
    }
    if (e.late) foot.append(el('span', 'muted small', 'late data'));
    li.append(foot);
    return li;
  }));
  const badge = $('alert-badge');
  badge.hidden = !open.length;
  badge.textContent = open.length > 99 ? '99+' : String(open.length);
  badge.setAttribute('aria-label', `${open.length} unacknowledged`);
  $('alert-summary').textContent = sorted.length ? `${open.length} unacknowledged of ${sorted.length}` : '';
  const empty = $('alert-empty');
  empty.hidden = shown.length > 0;
  empty.textContent = sorted.length ? 'Every alert is acknowledged.' : 'No alerts. Warnings and critical events appear here as they happen.';
}
