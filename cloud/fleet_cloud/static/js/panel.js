// The vehicle panel: live speed, heading, ignition, engine values, the age of
// the last update (ticking), and the device's outbox backlog from the status
// the agent publishes (GET /devices?vehicle_id=). Engine values come with each
// fix; GET /vehicles/{id}/engine fills in when the newest fix has none.

import { api, AuthError, session } from './api.js';
import { $, el, fmtAge, fmtHeading, fmtSpeed, fmtTime, isNum } from './format.js';
import { fleet, vehicles } from './fleet.js';
import { statusInfo } from './status.js';

const DEVICE_REFRESH_MS = 15_000;
const ENGINE_FIELDS = [
  ['rpm', 'RPM', (x) => `${Math.round(x)}`],
  ['ect', 'Coolant', (x) => `${Math.round(x)} °C`],
  ['fuel', 'Fuel', (x) => `${Math.round(x)} %`],
  ['vbat', 'Battery', (x) => `${x.toFixed(1)} V`],
  ['load', 'Load', (x) => `${Math.round(x)} %`],
  ['odo', 'Odometer', (x) => `${Math.round(x).toLocaleString()} km`],
];

let currentId = null;
let device = null;       // {status_at, status, engine} for currentId, once loaded
const ENGINE_READERS = ['owner', 'manager', 'dispatcher', 'viewer'];
let deviceTimer = null;

export function initPanel({ onClose, onHistory, onReport }) {
  $('panel-close').addEventListener('click', onClose);
  $('panel-history').addEventListener('click', () => currentId != null && onHistory(currentId));
  $('panel-report').addEventListener('click', () => currentId != null && onReport(currentId));
  fleet.addEventListener('states', (e) => {
    if (e.detail.changed.some((v) => v.id === currentId)) render();
  });
  fleet.addEventListener('tick', render);
}

export function openPanel(id) {
  currentId = id;
  device = null;
  $('vehicle-panel').hidden = false;
  render();
  clearInterval(deviceTimer);
  loadDevice(id);
  deviceTimer = setInterval(() => loadDevice(id), DEVICE_REFRESH_MS);
}

export function closePanel() {
  currentId = null;
  clearInterval(deviceTimer);
  $('vehicle-panel').hidden = true;
}

async function loadDevice(id) {
  try {
    const [devices, engine] = await Promise.all([
      api(`/devices?vehicle_id=${id}`),
      session.can(...ENGINE_READERS) ? api(`/vehicles/${id}/engine`) : { engine: null },
    ]);
    if (id !== currentId) return;
    const d = devices[0];
    device = {
      status_at: d?.status_at ? new Date(d.status_at).getTime() : null,
      status: d?.status || null,
      engine: engine.engine,
    };
    render();
  } catch (err) {
    if (err instanceof AuthError || id !== currentId) return;
    $('panel-backlog').textContent = `unavailable (${err.message})`;
  }
}

function render() {
  const v = vehicles.get(currentId);
  if (!v) return;
  const now = Date.now();
  const s = v.state || {};
  const info = statusInfo(v.status);
  $('panel-title').textContent = v.name;
  $('panel-dot').className = `dot status-${v.status}`;
  const pill = $('panel-status');
  pill.textContent = `${info.label}: ${info.help}`;
  pill.dataset.status = v.status;
  const has = v.status !== 'unknown';
  $('panel-speed').textContent = has ? fmtSpeed(s.spd) : '–';
  $('panel-heading').textContent = has ? fmtHeading(s.hdg) : '–';
  $('panel-position').textContent = has ? `${s.lat.toFixed(5)}, ${s.lon.toFixed(5)}` : 'No position received yet';
  $('panel-updated').textContent = has && isNum(s.t) ? `${fmtAge(s.t, now)} (${fmtTime(s.t)})` : '–';

  // Live engine values ride on the fix; the stored newest sample covers a fix without them.
  const stored = !s.eng && device?.engine;
  const eng = s.eng || (stored ? { ...device.engine, odo: device.engine.odo_km } : null);
  const ign = eng?.ign;
  const readAgo = stored ? ` (read ${fmtAge(eng.t, now)})` : '';
  $('panel-ignition').textContent = ign === true ? `On${readAgo}` : ign === false ? `Off${readAgo}` : 'not reported';
  const dl = $('panel-engine');
  const items = ENGINE_FIELDS.filter(([k]) => isNum(eng?.[k]));
  if (!items.length) {
    dl.replaceChildren(el('dt', '', 'Values'), el('dd', 'muted', 'no OBD-II data from this vehicle'));
  } else {
    const parts = items.flatMap(([k, label, f]) => [el('dt', '', label), el('dd', '', f(eng[k]))]);
    // Not from the newest fix: say how old the values are.
    if (stored) parts.unshift(el('dt', '', 'Read'), el('dd', 'muted', `${fmtAge(eng.t, now)} (newest fix had none)`));
    if (eng.dtc?.length) parts.push(el('dt', '', 'Fault codes'), el('dd', 'warn', eng.dtc.join(', ')));
    dl.replaceChildren(...parts);
  }

  $('panel-device').textContent = v.device_id || 'no device fitted';
  const ob = device?.status?.outbox;
  const backlog = $('panel-backlog');
  backlog.classList.remove('warn');
  if (!device) backlog.textContent = v.device_id ? 'loading…' : '–';
  else if (!device.status) backlog.textContent = 'the device has not sent a status yet';
  else if (!ob) backlog.textContent = 'not reported by the device';
  else if (ob.depth === 0) backlog.textContent = 'none: every fix delivered';
  else {
    const oldest = isNum(ob.oldest_ms) ? `, oldest from ${fmtAge(ob.oldest_ms, now)}` : '';
    backlog.textContent = `${ob.depth.toLocaleString()} fixes waiting${oldest}`;
    backlog.classList.add('warn');
  }
  if (ob?.dropped) backlog.textContent += ` · ${ob.dropped.toLocaleString()} dropped (outbox full)`;
  const statusAge = isNum(device?.status_at) ? ` · status ${fmtAge(device.status_at, now)}` : '';
  const agent = device?.status?.agent;
  $('panel-agent').textContent = device?.status ? `${agent || 'version not reported'}${statusAge}` : '–';
}
