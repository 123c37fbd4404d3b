// Trips and stops of one vehicle for a time range, as tables, with CSV export
// built in the browser from the same rows (times in ISO-8601 UTC, plain numbers).

import { api, AuthError } from './api.js';
import { $, el, fmtDateTime, fmtDuration, fmtKm, fromLocalInput, isNum, toLocalInput } from './format.js';
import { download, toCsv } from './csv.js';
import { vehicles } from './fleet.js';

const REASONS = {
  motion: 'started moving', ignition_on: 'ignition on', first_fix: 'first fix', data_resumed: 'data resumed',
  parked: 'parked', ignition_off: 'ignition off', no_data: 'no data',
};

const rp = { vehicleId: null, trips: [], stops: [] };
let onPlay = () => {};
let onClosed = () => {};

export function initReports({ play, onClose }) {
  onPlay = play;
  onClosed = onClose;
  $('rp-close').addEventListener('click', closeReport);
  $('rp-load').addEventListener('click', () => load());
  $('rp-trips-csv').addEventListener('click', exportTrips);
  $('rp-stops-csv').addEventListener('click', exportStops);
}

export function openReport(vehicleId) {
  rp.vehicleId = vehicleId;
  const now = Date.now();
  const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
  // Today, or the last 24 h early in the morning when "today" is nearly empty.
  const from = now - midnight.getTime() < 6 * 3600_000 ? now - 24 * 3600_000 : midnight.getTime();
  $('rp-from').value = toLocalInput(from);
  $('rp-to').value = toLocalInput(Math.ceil(now / 60_000) * 60_000);
  $('report-title').textContent = `Trips & stops · ${vehicles.get(vehicleId)?.name || `Vehicle ${vehicleId}`}`;
  $('report').hidden = false;
  document.body.classList.add('mode-report');
  return load();
}

export function closeReport() {
  if (rp.vehicleId == null) return;
  rp.vehicleId = null;
  $('report').hidden = true;
  document.body.classList.remove('mode-report');
  onClosed();
}

async function load() {
  const id = rp.vehicleId;
  const from = fromLocalInput($('rp-from').value);
  const to = fromLocalInput($('rp-to').value) + 59_999;
  const note = $('rp-note');
  if (!isNum(from) || !isNum(to) || from >= to) { note.textContent = 'Choose a start before the end.'; return; }
  note.textContent = 'Loading…';
  const q = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(to).toISOString() });
  try {
    const [trips, stops] = await Promise.all([
      api(`/vehicles/${id}/trips?${q}`), api(`/vehicles/${id}/stops?${q}`),
    ]);
    if (id !== rp.vehicleId) return;
    Object.assign(rp, { trips, stops, from, to });
  } catch (err) {
    if (err instanceof AuthError || id !== rp.vehicleId) return;
    note.textContent = `Could not load the report: ${err.message}`;
    return;
  }
  note.textContent = '';
  renderTrips();
  renderStops();
}

function table(tableEl, header, rows, emptyText) {
  const thead = el('thead');
  const tr = el('tr');
  for (const h of header) tr.append(el('th', '', h));
  thead.append(tr);
  const tbody = el('tbody');
  if (!rows.length) {
    const r = el('tr');
    const td = el('td', 'empty-cell', emptyText);
    td.colSpan = header.length;
    r.append(td);
    tbody.append(r);
  }
  for (const cells of rows) {
    const r = el('tr');
    for (const c of cells) r.append(c instanceof Node ? wrap(c) : el('td', '', c));
    tbody.append(r);
  }
  tableEl.replaceChildren(thead, tbody);
}

function wrap(node) {
  const td = document.createElement('td');
  td.append(node);
  return td;
}

const duration = (s, e) => (e == null ? 'ongoing' : fmtDuration(e - s));

function renderTrips() {
  const now = Date.now();
  const total = rp.trips.reduce((a, t) => a + (t.distance_m || 0), 0);
  const drive = rp.trips.reduce((a, t) => a + ((t.end ?? now) - t.start), 0);
  $('rp-trip-total').textContent = rp.trips.length
    ? `${rp.trips.length} · ${fmtKm(total)} · ${fmtDuration(drive)} driving` : '';
  table($('rp-trips'), ['Start', 'End', 'Duration', 'Distance', 'Max speed', 'Idle', 'Score', ''],
    rp.trips.map((t) => {
      const b = el('button', 'link-like', 'Play');
      b.type = 'button';
      b.title = 'Play this trip back on the map';
      b.addEventListener('click', () => onPlay(rp.vehicleId, t.start, t.end ?? now));
      return [fmtDateTime(t.start), t.end ? fmtDateTime(t.end) : '–', duration(t.start, t.end),
        fmtKm(t.distance_m), `${Math.round(t.max_speed_kmh)} km/h`, fmtDuration(t.idle_s * 1000),
        isNum(t.score) ? String(Math.round(t.score)) : '–', b];
    }), 'No trips in this range.');
  $('rp-trips-csv').disabled = !rp.trips.length;
}

function renderStops() {
  $('rp-stop-total').textContent = rp.stops.length ? String(rp.stops.length) : '';
  table($('rp-stops'), ['Arrived', 'Left', 'Duration', 'Position', 'Why it ended'],
    rp.stops.map((s) => [fmtDateTime(s.start), s.end ? fmtDateTime(s.end) : '–', duration(s.start, s.end),
      `${s.lat.toFixed(5)}, ${s.lon.toFixed(5)}`, s.end_reason ? (REASONS[s.end_reason] || s.end_reason) : 'still there']),
    'No stops in this range.');
  $('rp-stops-csv').disabled = !rp.stops.length;
}

const iso = (t) => (t == null ? '' : new Date(t).toISOString());
const fileStem = () => {
  const v = vehicles.get(rp.vehicleId);
  const name = (v?.name || `vehicle-${rp.vehicleId}`).replace(/[^\w.-]+/g, '_');
  return `${name}_${iso(rp.from).slice(0, 10)}`;
};

function exportTrips() {
  download(`${fileStem()}_trips.csv`, toCsv(
    ['vehicle', 'start_utc', 'end_utc', 'duration_s', 'distance_km', 'max_speed_kmh', 'idle_s', 'overspeed_s',
      'harsh_events', 'score', 'fuel_l', 'start_lat', 'start_lon', 'end_lat', 'end_lon', 'start_reason', 'end_reason'],
    rp.trips.map((t) => [vehicles.get(rp.vehicleId)?.name || rp.vehicleId, iso(t.start), iso(t.end),
      t.end != null ? Math.round((t.end - t.start) / 1000) : '', (t.distance_m / 1000).toFixed(3), t.max_speed_kmh,
      Math.round(t.idle_s), Math.round(t.overspeed_s), t.harsh_count, t.score ?? '', t.fuel_l ?? '',
      t.start_lat, t.start_lon, t.end_lat ?? '', t.end_lon ?? '', t.start_reason, t.end_reason ?? '']),
  ));
}

function exportStops() {
  download(`${fileStem()}_stops.csv`, toCsv(
    ['vehicle', 'start_utc', 'end_utc', 'duration_s', 'lat', 'lon', 'start_reason', 'end_reason'],
    rp.stops.map((s) => [vehicles.get(rp.vehicleId)?.name || rp.vehicleId, iso(s.start), iso(s.end),
      s.end != null ? Math.round((s.end - s.start) / 1000) : '', s.lat, s.lon, s.start_reason, s.end_reason ?? '']),
  ));
}
