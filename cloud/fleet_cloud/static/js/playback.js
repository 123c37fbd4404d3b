// History playback of one vehicle: the track for a time range, a marker that
// replays it (play/pause, 1x..60x, a time slider) and the speed chart, all on
// one clock: moving any of them moves the others.

import { api, AuthError } from './api.js';
import { $, fmtSpeed, fmtTime, fromLocalInput, isNum, toLocalInput } from './format.js';
import { SpeedChart } from './speedchart.js';
import { vehicles } from './fleet.js';

const MAX_POINTS = 5000;         // downsampled by the API beyond this
const DEFAULT_RANGE_MS = 2 * 3600_000;

let map = null;
let chart = null;
let onClosed = () => {};
const pb = { vehicleId: null, t: [], lat: [], lon: [], spd: [], hdg: [], cur: 0, playing: false, raf: 0, last: 0 };
let track = null;
let marker = null;

export function initPlayback(m, { onClose }) {
  map = m;
  onClosed = onClose;
  chart = new SpeedChart($('pb-chart'));
  // The map's zoom and scale controls sit just above the bar while it is open.
  new ResizeObserver(() => {
    document.body.style.setProperty('--pb-h', `${$('playback').offsetHeight}px`);
  }).observe($('playback'));
  $('pb-close').addEventListener('click', closePlayback);
  $('pb-load').addEventListener('click', () => load());
  $('pb-play').addEventListener('click', () => (pb.playing ? pause() : play()));
  $('pb-slider').addEventListener('input', (e) => seek(Number(e.target.value)));
  $('pb-chart').addEventListener('click', (e) => {
    const t = chart.timeAt(e.clientX);
    if (t != null) seek(t);
  });
}

export const playbackOpen = () => pb.vehicleId != null;

/** Opens playback for a vehicle; from/to default to the last two hours. */
export function openPlayback(vehicleId, from, to) {
  closePlayback({ quiet: true });
  pb.vehicleId = vehicleId;
  const end = to ?? Date.now();
  const start = from ?? end - DEFAULT_RANGE_MS;
  $('pb-from').value = toLocalInput(start);
  // The end rounds up to the next minute, so "now" includes the newest fix.
  $('pb-to').value = toLocalInput(Math.ceil(end / 60_000) * 60_000);
  $('pb-title').textContent = vehicles.get(vehicleId)?.name || `Vehicle ${vehicleId}`;
  $('playback').hidden = false;
  document.body.classList.add('mode-playback');
  chart.redraw();
  return load();
}

export function closePlayback({ quiet = false } = {}) {
  if (pb.vehicleId == null) return;
  pause();
  pb.vehicleId = null;
  for (const l of [track, marker]) if (l) map.removeLayer(l);
  track = marker = null;
  $('playback').hidden = true;
  document.body.classList.remove('mode-playback');
  if (!quiet) onClosed();
}

async function load() {
  const id = pb.vehicleId;
  const from = fromLocalInput($('pb-from').value);
  // datetime-local has minute precision: the end minute is included.
  const to = fromLocalInput($('pb-to').value) + 59_999;
  const note = $('pb-note');
  if (!isNum(from) || !isNum(to) || from >= to) {
    note.textContent = 'Choose a start before the end.';
    return;
  }
  pause();
  note.textContent = 'Loading…';
  const q = new URLSearchParams({
    from: new Date(from).toISOString(), to: new Date(to).toISOString(),
    format: 'columns', max_points: String(MAX_POINTS), limit: '100000',
  });
  let body;
  try {
    body = await api(`/vehicles/${id}/positions?${q}`);
  } catch (err) {
    if (err instanceof AuthError || id !== pb.vehicleId) return;
    note.textContent = `Could not load the history: ${err.message}`;
    return;
  }
  if (id !== pb.vehicleId) return;
  Object.assign(pb, { t: body.t, lat: body.lat, lon: body.lon, spd: body.spd, hdg: body.hdg });
  const n = pb.t.length;
  for (const l of [track, marker]) if (l) map.removeLayer(l);
  track = marker = null;
  chart.setData(pb.t, pb.spd);
  const slider = $('pb-slider');
  slider.disabled = n < 2;
  $('pb-play').disabled = n < 2;
  if (!n) {
    note.textContent = 'No positions in this range.';
    $('pb-time').textContent = '';
    $('pb-speed-now').textContent = '';
    return;
  }
  note.textContent = `${n.toLocaleString()} positions`;
  const pts = pb.t.map((_, i) => [pb.lat[i], pb.lon[i]]);
  track = L.polyline(pts, { pane: 'track', color: '#0f766e', weight: 4, opacity: 0.8, interactive: false }).addTo(map);
  const icon = L.divIcon({
    className: 'playback-marker',
    html: '<div class="vm-rot"><svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="10"/><path d="M12 3.5 L17.5 17.5 L12 14.5 L6.5 17.5 Z"/></svg></div>',
    iconSize: [28, 28], iconAnchor: [14, 14],
  });
  marker = L.marker(pts[0], { icon, pane: 'playback', interactive: false, keyboard: false }).addTo(map);
  map.stop(); // a pan still gliding would carry the map off the track
  map.fitBounds(track.getBounds(), {
    paddingTopLeft: [40, 40], paddingBottomRight: [40, 220], maxZoom: 16, animate: false,
  });
  slider.min = String(pb.t[0]);
  slider.max = String(pb.t[n - 1]);
  slider.step = '1000';
  seek(pb.t[0]);
}

/** Index i with t[i] <= time < t[i+1] (binary search). */
function indexAt(time) {
  let lo = 0, hi = pb.t.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (pb.t[mid] <= time) lo = mid; else hi = mid - 1;
  }
  return lo;
}

function seek(time) {
  const n = pb.t.length;
  if (!n) return;
  pb.cur = Math.min(pb.t[n - 1], Math.max(pb.t[0], time));
  const i = indexAt(pb.cur);
  const j = Math.min(n - 1, i + 1);
  const span = pb.t[j] - pb.t[i];
  const f = span > 0 ? (pb.cur - pb.t[i]) / span : 0;
  const lat = pb.lat[i] + (pb.lat[j] - pb.lat[i]) * f;
  const lon = pb.lon[i] + (pb.lon[j] - pb.lon[i]) * f;
  marker?.setLatLng([lat, lon]);
  const el = marker?.getElement();
  if (el) {
    const hdg = pb.hdg[i];
    el.querySelector('.vm-rot').style.transform = isNum(hdg) ? `rotate(${hdg}deg)` : '';
    el.dataset.t = String(Math.round(pb.cur));
    el.dataset.lat = String(lat);
    el.dataset.lon = String(lon);
  }
  const slider = $('pb-slider');
  if (Number(slider.value) !== Math.round(pb.cur)) slider.value = String(Math.round(pb.cur));
  $('pb-time').textContent = fmtTime(pb.cur);
  $('pb-speed-now').textContent = fmtSpeed(pb.spd[i]);
  chart.setCursor(pb.cur);
  if (pb.playing && !map.getBounds().pad(-0.1).contains([lat, lon])) map.panTo([lat, lon], { animate: false });
}

function play() {
  const n = pb.t.length;
  if (n < 2) return;
  if (pb.cur >= pb.t[n - 1]) seek(pb.t[0]);
  pb.playing = true;
  pb.last = performance.now();
  $('pb-play').innerHTML = '&#10074;&#10074;';
  $('pb-play').setAttribute('aria-label', 'Pause');
  const frame = (now) => {
    if (!pb.playing) return;
    const dt = now - pb.last;
    pb.last = now;
    seek(pb.cur + dt * Number($('pb-speed').value));
    if (pb.cur >= pb.t[pb.t.length - 1]) { pause(); return; }
    pb.raf = requestAnimationFrame(frame);
  };
  pb.raf = requestAnimationFrame(frame);
}

function pause() {
  pb.playing = false;
  cancelAnimationFrame(pb.raf);
  $('pb-play').innerHTML = '&#9654;';
  $('pb-play').setAttribute('aria-label', 'Play');
}
