// Fleet live map: sign-in, vehicle list and a Leaflet map fed by the WebSocket hub.
// Plain ES module, no build step. Leaflet is the global `L` (vendor/leaflet, loaded first).
// API contract: docs/api-slice.md.

const API = '/api/v1';
const OFFLINE_AFTER_MS = 5 * 60 * 1000; // no update for 5 min counts as offline
const MOVING_KMH = 3;                    // faster than this counts as moving
const TRAIL_MINUTES = 30;                // history drawn behind the selected vehicle
const LIST_REFRESH_MS = 60 * 1000;       // re-read names / new registrations
const MAX_BACKOFF_MS = 30 * 1000;
const LABELS_MIN_ZOOM = 10;              // permanent name labels only when zoomed in enough
const LABELS_MAX_VEHICLES = 15;          // ...and few enough vehicles in view not to overlap

const $ = (id) => document.getElementById(id);
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

// ---------------------------------------------------------------- session

const session = {
  get token() { return sessionStorage.getItem('fleet.token'); },
  get email() { return sessionStorage.getItem('fleet.email') || ''; },
  get expired() {
    const at = Number(sessionStorage.getItem('fleet.expires_at') || 0);
    return at > 0 && Date.now() >= at;
  },
  save(body, email) {
    sessionStorage.setItem('fleet.token', body.access_token);
    sessionStorage.setItem('fleet.email', body.user?.email || email);
    const ttl = Number(body.expires_in || 0);
    sessionStorage.setItem('fleet.expires_at', ttl > 0 ? String(Date.now() + ttl * 1000) : '0');
  },
  clear() {
    for (const k of ['fleet.token', 'fleet.email', 'fleet.expires_at']) sessionStorage.removeItem(k);
  },
};

class AuthError extends Error {}

async function errorText(res) {
  try {
    const body = await res.json();
    if (body?.error?.message) return body.error.message;
  } catch { /* not JSON */ }
  return `HTTP ${res.status}`;
}

async function api(path) {
  const res = await fetch(API + path, {
    headers: { Accept: 'application/json', Authorization: `Bearer ${session.token}` },
  });
  if (res.status === 401) throw new AuthError(await errorText(res));
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}

// ---------------------------------------------------------------- formatting

function statusOf(state, now) {
  if (!state || !isNum(state.lat) || !isNum(state.lon)) return 'unknown';
  const seen = Math.max(state.t || 0, state.recv || 0);
  if (state.online === false || now - seen > OFFLINE_AFTER_MS) return 'offline';
  return isNum(state.spd) && state.spd > MOVING_KMH ? 'moving' : 'stopped';
}

const STATUS_TEXT = { moving: 'moving', stopped: 'stopped', offline: 'offline', unknown: 'no position' };

function isNum(x) { return typeof x === 'number' && Number.isFinite(x); }

function fmtSpeed(spd) { return isNum(spd) ? `${Math.round(spd)} km/h` : '–'; }

function fmtAge(t, now) {
  if (!isNum(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function fmtHeading(hdg) {
  if (!isNum(hdg)) return '–';
  const names = ['N', 'NE', 'E', 'SE', 'S', 'SW', 'W', 'NW'];
  return `${Math.round(hdg)}° (${names[Math.round((((hdg % 360) + 360) % 360) / 45) % 8]})`;
}

function fmtTime(t) {
  const d = new Date(t);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

// ---------------------------------------------------------------- app state

const vehicles = new Map(); // id -> {id, name, device_id, fleet_id, state, status, marker, el, rot, label, row}
let uiConfig = { tiles_url: '', tiles_attribution: '', center: [0, 0], zoom: 3 };
let map = null;
let markerLayer = null;
let trailLine = null;
let selectedId = null;
let fitted = false;
let loaded = false; // the vehicle list has been read at least once
let refreshTimer = null;
let tickTimer = null;
let refreshSoon = null;

// ---------------------------------------------------------------- map

const MARKER_HTML =
  '<div class="vm-rot"><svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' +
  '<circle class="vm-disc" cx="12" cy="12" r="10"/>' +
  '<path class="vm-arrow" d="M12 3.5 L17.5 17.5 L12 14.5 L6.5 17.5 Z"/>' +
  '<circle class="vm-dot" cx="12" cy="12" r="3.5"/></svg></div>';

// A light lat/lon grid for when no tile server is configured, so that the map
// still has a sense of place and movement is visible.
const GRID_STEPS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30];

const Graticule = L.LayerGroup.extend({
  onAdd(m) {
    L.LayerGroup.prototype.onAdd.call(this, m);
    m.on('moveend', this.redraw, this);
    this.redraw();
  },
  onRemove(m) {
    m.off('moveend', this.redraw, this);
    L.LayerGroup.prototype.onRemove.call(this, m);
  },
  redraw() {
    const m = this._map;
    this.clearLayers();
    const b = m.getBounds();
    const south = Math.max(b.getSouth(), -85), north = Math.min(b.getNorth(), 85);
    const west = b.getWest(), east = b.getEast();
    const span = Math.max(north - south, (east - west) / 1.5);
    const step = GRID_STEPS.find((s) => span / s <= 8) ?? 30;
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const line = { pane: 'grid', color: '#b8c1cc', weight: 1, opacity: 0.9, interactive: false };
    const label = (text, latlng, cls) => L.marker(latlng, {
      pane: 'grid', interactive: false, keyboard: false,
      icon: L.divIcon({ className: `grid-label ${cls}`, html: text, iconSize: null }),
    });
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      this.addLayer(L.polyline([[lat, west - 360], [lat, east + 360]], line));
      const hemi = lat > 0 ? 'N' : lat < 0 ? 'S' : '';
      this.addLayer(label(`${Math.abs(lat).toFixed(decimals)}°${hemi}`, [lat, west], 'grid-lat'));
    }
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      this.addLayer(L.polyline([[-85, lon], [85, lon]], line));
      const norm = ((((lon + 180) % 360) + 360) % 360) - 180;
      const hemi = norm > 0 ? 'E' : norm < 0 ? 'W' : '';
      this.addLayer(label(`${Math.abs(norm).toFixed(decimals)}°${hemi}`, [north, lon], 'grid-lon'));
    }
  },
});

function initMap() {
  map = L.map('map', {
    center: uiConfig.center, zoom: uiConfig.zoom, minZoom: 2, maxZoom: 19,
    worldCopyJump: true, zoomControl: false,
  });
  // Top corners belong to the grid labels and the details panel.
  L.control.zoom({ position: 'bottomright' }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.createPane('grid').style.zIndex = 250; // above tiles, below tracks and markers
  if (uiConfig.tiles_url) {
    L.tileLayer(uiConfig.tiles_url, {
      maxZoom: 19, attribution: uiConfig.tiles_attribution || '',
    }).addTo(map);
  } else {
    map.getContainer().classList.add('no-tiles');
    map.attributionControl.addAttribution('No map tiles configured: lat/lon grid');
    new Graticule().addTo(map);
  }
  trailLine = L.polyline([], { color: '#0f766e', weight: 3, opacity: 0.7, interactive: false }).addTo(map);
  markerLayer = L.layerGroup().addTo(map);
  map.on('zoomend moveend', updateLabelVisibility);
  updateLabelVisibility();
}

function updateLabelVisibility() {
  if (!map) return;
  // Count what is in view, not the whole fleet: zoomed in on a few vehicles
  // of a big fleet, their names are useful; a crowd of labels is not (the
  // marker's title still names each vehicle on hover).
  const bounds = map.getBounds();
  const inView = [...vehicles.values()].filter((v) => v.marker && bounds.contains(v.marker.getLatLng())).length;
  const show = map.getZoom() >= LABELS_MIN_ZOOM && inView <= LABELS_MAX_VEHICLES;
  map.getContainer().classList.toggle('hide-labels', !show);
}

function ensureMarker(v) {
  if (v.marker) return;
  const icon = L.divIcon({
    className: 'vehicle-marker', html: MARKER_HTML, iconSize: [26, 26], iconAnchor: [13, 13],
  });
  v.marker = L.marker([v.state.lat, v.state.lon], { icon, keyboard: true, riseOnHover: true });
  v.label = document.createElement('span');
  v.marker.bindTooltip(v.label, {
    permanent: true, direction: 'right', offset: [12, 0], className: 'vehicle-label', opacity: 1,
  });
  v.marker.on('click', () => select(v.id, { pan: false }));
  v.marker.on('keypress', (e) => { if (e.originalEvent.key === 'Enter') select(v.id, { pan: false }); });
  v.marker.addTo(markerLayer);
  v.el = v.marker.getElement();
  v.el.dataset.vehicleId = String(v.id);
  v.rot = v.el.querySelector('.vm-rot');
  updateLabelVisibility();
}

function removeMarker(v) {
  if (!v.marker) return;
  markerLayer.removeLayer(v.marker);
  v.marker = v.el = v.rot = v.label = null;
  updateLabelVisibility();
}

function fitToVehicles() {
  const pts = [...vehicles.values()].filter((v) => v.marker).map((v) => [v.state.lat, v.state.lon]);
  if (!pts.length || !map) return false;
  map.fitBounds(L.latLngBounds(pts), { padding: [60, 60], maxZoom: 15, animate: false });
  return true;
}

// ---------------------------------------------------------------- vehicles

function ensureVehicle(id) {
  let v = vehicles.get(id);
  if (!v) {
    v = { id, name: `Vehicle ${id}`, device_id: '', fleet_id: null, state: null, status: null };
    vehicles.set(id, v);
  }
  return v;
}

// Merges a state object (REST `state`, snapshot or positions entry) into the vehicle.
// A fix older than the one shown only updates the online flag.
function mergeState(v, s) {
  const { vehicle_id: _ignored, ...fields } = s;
  if (v.state && isNum(v.state.t) && isNum(fields.t) && fields.t < v.state.t) {
    if (typeof fields.online === 'boolean') v.state.online = fields.online;
    return false;
  }
  v.state = { ...(v.state || {}), ...fields };
  return true;
}

function render(v, now = Date.now()) {
  const s = v.state;
  const status = statusOf(s, now);
  const statusChanged = status !== v.status;
  v.status = status;
  const speed = status === 'unknown' ? '' : fmtSpeed(s.spd);

  if (status !== 'unknown') {
    ensureMarker(v);
    const ll = v.marker.getLatLng();
    if (ll.lat !== s.lat || ll.lng !== s.lon) v.marker.setLatLng([s.lat, s.lon]);
    v.el.dataset.lat = String(s.lat);
    v.el.dataset.lon = String(s.lon);
    v.el.dataset.status = status;
    if (statusChanged) {
      v.el.classList.remove('status-moving', 'status-stopped', 'status-offline');
      v.el.classList.add(`status-${status}`);
    }
    v.el.classList.toggle('no-heading', !isNum(s.hdg));
    v.rot.style.transform = isNum(s.hdg) ? `rotate(${s.hdg}deg)` : '';
    v.el.classList.toggle('selected', v.id === selectedId);
    const text = `${v.name}, ${STATUS_TEXT[status]}, ${speed}`;
    v.el.setAttribute('aria-label', text);
    v.el.title = text;
    v.label.textContent = `${v.name} · ${speed}`;
  } else {
    removeMarker(v);
  }

  if (v.row) {
    const r = v.row;
    if (statusChanged) {
      r.dot.className = `dot status-${status}`;
      r.status.textContent = STATUS_TEXT[status];
    }
    r.name.textContent = v.name;
    r.sub.textContent = v.device_id;
    r.speed.textContent = status === 'unknown' ? 'no position yet' : speed;
    r.age.textContent = status === 'unknown' ? '' : fmtAge(s.t, now);
  }
  if (v.id === selectedId) renderPanel(v, now);
}

function buildRow(v) {
  const li = document.createElement('li');
  li.className = 'vehicle-row';
  li.dataset.vehicleId = String(v.id);
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'row-button';
  const mk = (tag, cls, parent = btn) => {
    const e = document.createElement(tag);
    e.className = cls;
    parent.appendChild(e);
    return e;
  };
  const dot = mk('span', 'dot');
  dot.setAttribute('aria-hidden', 'true');
  const main = mk('span', 'row-main');
  const name = mk('span', 'row-name', main);
  const sub = mk('span', 'row-sub', main);
  const meta = mk('span', 'row-meta');
  const speed = mk('span', 'row-speed', meta);
  const age = mk('span', 'row-age', meta);
  const status = mk('span', 'sr-only');
  btn.addEventListener('click', () => select(v.id));
  li.appendChild(btn);
  v.row = { li, btn, dot, name, sub, speed, age, status };
}

function renderList() {
  const list = $('vehicle-list');
  const sorted = [...vehicles.values()].sort((a, b) => collator.compare(a.name, b.name) || a.id - b.id);
  for (const v of sorted) {
    if (!v.row) buildRow(v);
    list.appendChild(v.row.li); // appending an existing node moves it: this sorts in place
  }
  applyFilter();
}

function applyFilter() {
  const q = $('vehicle-search').value.trim().toLowerCase();
  let shown = 0;
  for (const v of vehicles.values()) {
    if (!v.row) continue;
    const match = !q || v.name.toLowerCase().includes(q) || (v.device_id || '').toLowerCase().includes(q);
    v.row.li.hidden = !match;
    if (match) shown += 1;
  }
  const empty = $('vehicle-empty');
  if (!loaded) {
    empty.textContent = 'Loading vehicles…';
    empty.hidden = false;
  } else if (vehicles.size === 0) {
    empty.textContent = 'No vehicles yet. Vehicles appear here once they are registered.';
    empty.hidden = false;
  } else if (shown === 0) {
    empty.textContent = `No vehicle matches “${$('vehicle-search').value.trim()}”.`;
    empty.hidden = false;
  } else {
    empty.hidden = true;
  }
  renderSummary();
}

function renderSummary() {
  const counts = { moving: 0, stopped: 0, offline: 0, unknown: 0 };
  for (const v of vehicles.values()) counts[v.status || 'unknown'] += 1;
  const n = vehicles.size;
  const parts = [`${n} vehicle${n === 1 ? '' : 's'}`];
  for (const k of ['moving', 'stopped', 'offline']) if (counts[k]) parts.push(`${counts[k]} ${k}`);
  $('vehicle-summary').textContent = n ? parts.join(' · ') : '';
  const banner = $('map-banner');
  const positioned = n - counts.unknown;
  banner.hidden = !loaded || positioned > 0;
  banner.textContent = n ? 'No vehicle has reported a position yet.' : 'No vehicles yet.';
}

function removeVehicle(id) {
  const v = vehicles.get(id);
  if (!v) return;
  removeMarker(v);
  v.row?.li.remove();
  vehicles.delete(id);
  if (selectedId === id) closePanel();
}

async function loadVehicles() {
  const list = await api('/vehicles');
  const seen = new Set();
  for (const item of list) {
    seen.add(item.id);
    const v = ensureVehicle(item.id);
    v.name = item.name || `Vehicle ${item.id}`;
    v.device_id = item.device_id || '';
    v.fleet_id = item.fleet_id ?? null;
    if (item.state) mergeState(v, item.state);
  }
  for (const id of [...vehicles.keys()]) if (!seen.has(id)) removeVehicle(id);
  loaded = true;
  const now = Date.now();
  renderList();
  for (const v of vehicles.values()) render(v, now);
  renderSummary();
  if (!fitted) fitted = fitToVehicles();
}

// A vehicle we did not know appeared on the live feed: fetch names soon.
function scheduleRefresh() {
  if (refreshSoon) return;
  refreshSoon = setTimeout(() => {
    refreshSoon = null;
    loadVehicles().catch(onBackgroundError);
  }, 1000);
}

function onBackgroundError(err) {
  if (err instanceof AuthError) signedOut('Your session has expired. Please sign in again.');
  // Anything else (server briefly unreachable) is retried by the next refresh.
}

// ---------------------------------------------------------------- selection panel

function select(id, { pan = true } = {}) {
  const v = vehicles.get(id);
  if (!v) return;
  const prev = vehicles.get(selectedId);
  selectedId = id;
  for (const x of [prev, v]) {
    if (!x) continue;
    x.row?.li.classList.toggle('selected', x.id === selectedId);
    x.row?.btn.setAttribute('aria-pressed', String(x.id === selectedId));
    x.el?.classList.toggle('selected', x.id === selectedId);
  }
  if (pan && v.marker) map.setView(v.marker.getLatLng(), Math.max(map.getZoom(), 15));
  $('vehicle-panel').hidden = false;
  renderPanel(v, Date.now());
  loadTrail(v);
  if (window.matchMedia('(max-width: 800px)').matches) setSidebar(false);
}

function closePanel() {
  const v = vehicles.get(selectedId);
  selectedId = null;
  if (v) {
    v.row?.li.classList.remove('selected');
    v.row?.btn.setAttribute('aria-pressed', 'false');
    v.el?.classList.remove('selected');
  }
  $('vehicle-panel').hidden = true;
  trailLine?.setLatLngs([]);
}

function renderPanel(v, now) {
  const s = v.state;
  const status = v.status || 'unknown';
  $('panel-title').textContent = v.name;
  $('panel-dot').className = `dot status-${status}`;
  $('panel-status').textContent = STATUS_TEXT[status];
  $('panel-device').textContent = v.device_id || '–';
  const has = status !== 'unknown';
  $('panel-speed').textContent = has ? fmtSpeed(s.spd) : '–';
  $('panel-heading').textContent = has ? fmtHeading(s.hdg) : '–';
  $('panel-position').textContent = has ? `${s.lat.toFixed(5)}, ${s.lon.toFixed(5)}` : 'No position received yet';
  $('panel-updated').textContent = has && isNum(s.t) ? `${fmtTime(s.t)} (${fmtAge(s.t, now)})` : '–';
}

async function loadTrail(v) {
  trailLine.setLatLngs([]);
  const note = $('panel-trail-note');
  note.textContent = '';
  const to = new Date(Date.now() + 60 * 1000);
  const from = new Date(Date.now() - TRAIL_MINUTES * 60 * 1000);
  const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), limit: '2000' });
  try {
    const body = await api(`/vehicles/${v.id}/positions?${q}`);
    if (selectedId !== v.id) return;
    const pts = (body.positions || []).filter((p) => isNum(p.lat) && isNum(p.lon)).map((p) => [p.lat, p.lon]);
    if (v.state && isNum(v.state.lat)) pts.push([v.state.lat, v.state.lon]);
    trailLine.setLatLngs(pts);
    note.textContent = pts.length > 1 ? `Teal line: track of the last ${TRAIL_MINUTES} min` : '';
  } catch (err) {
    if (err instanceof AuthError) return onBackgroundError(err);
    if (selectedId === v.id) note.textContent = 'Track history unavailable right now.';
  }
}

// ---------------------------------------------------------------- WebSocket

const live = { ws: null, attempt: 0, timer: null, stopped: true };

function setWsState(state, detail = '') {
  const el = $('ws-state');
  el.textContent = state;
  el.dataset.state = state;
  el.title = detail || `Live updates: ${state}`;
}

function connect() {
  live.stopped = false;
  clearTimeout(live.timer);
  const url = new URL(`${API}/ws`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', session.token);
  const ws = new WebSocket(url);
  live.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: 'subscribe', all: true }));
  ws.onmessage = (ev) => { if (live.ws === ws) onFrame(ev.data); };
  ws.onclose = () => {
    if (live.ws !== ws) return;
    live.ws = null;
    if (!live.stopped) scheduleReconnect();
  };
}

function scheduleReconnect() {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** live.attempt);
  const delay = Math.round(base * (0.75 + Math.random() * 0.5));
  live.attempt += 1;
  setWsState('reconnecting', `Live updates lost; next attempt in ${Math.round(delay / 1000)} s`);
  clearTimeout(live.timer);
  live.timer = setTimeout(reconnect, delay);
}

// Re-reading the vehicle list first checks the token (a 401 means sign in again)
// and that the server is back, so a dead server does not cost a failed WebSocket per try.
async function reconnect() {
  if (live.stopped) return;
  try {
    await loadVehicles();
  } catch (err) {
    if (err instanceof AuthError) return onBackgroundError(err);
    if (!live.stopped) scheduleReconnect();
    return;
  }
  if (!live.stopped) connect();
}

function stopLive() {
  live.stopped = true;
  clearTimeout(live.timer);
  if (live.ws) {
    const ws = live.ws;
    live.ws = null;
    ws.onclose = ws.onmessage = null;
    ws.close(1000);
  }
}

function onFrame(text) {
  let msg;
  try { msg = JSON.parse(text); } catch { return; }
  const now = Date.now();
  switch (msg.type) {
    case 'snapshot':
      for (const s of msg.vehicles || []) applyLive(s, now);
      setWsState('connected');
      live.attempt = 0;
      if (!fitted) fitted = fitToVehicles();
      break;
    case 'positions':
      for (const s of msg.vehicles || []) applyLive(s, now);
      break;
    case 'status':
      applyLive({ vehicle_id: msg.vehicle_id, online: msg.online }, now);
      break;
    case 'error':
      $('ws-state').title = `Live updates: ${msg.message || msg.code || 'error'}`;
      break;
    default:
      break;
  }
  renderSummary();
}

function applyLive(s, now) {
  if (s.vehicle_id == null) return;
  if (!vehicles.has(s.vehicle_id)) {
    scheduleRefresh();
    ensureVehicle(s.vehicle_id);
    renderList();
  }
  const v = vehicles.get(s.vehicle_id);
  const moved = mergeState(v, s);
  render(v, now);
  if (moved && v.id === selectedId && isNum(s.lat) && isNum(s.lon)) trailLine.addLatLng([s.lat, s.lon]);
}

// ---------------------------------------------------------------- views

function setSidebar(open) {
  document.body.classList.toggle('sidebar-open', open);
  $('sidebar-toggle').setAttribute('aria-expanded', String(open));
}

function showLogin({ notice = '', error = '' } = {}) {
  $('app-view').hidden = true;
  $('session-bar').hidden = true;
  $('sidebar-toggle').hidden = true;
  $('login-view').hidden = false;
  $('login-notice').textContent = notice;
  $('login-notice').hidden = !notice;
  $('login-error').textContent = error;
  $('login-error').hidden = !error;
  $('login-email').value = $('login-email').value || session.email;
  ($('login-email').value ? $('login-password') : $('login-email')).focus();
}

function startApp() {
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('session-bar').hidden = false;
  $('sidebar-toggle').hidden = false;
  $('user-email').textContent = session.email;
  setWsState('connecting');
  if (!map) initMap();
  else map.invalidateSize();
  renderList();
  clearInterval(tickTimer);
  tickTimer = setInterval(tick, 1000);
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => loadVehicles().catch(onBackgroundError), LIST_REFRESH_MS);
  live.attempt = 0;
  live.stopped = false;
  reconnect().catch(onBackgroundError);
}

function tick() {
  const now = Date.now();
  for (const v of vehicles.values()) render(v, now);
  renderSummary();
}

function teardown() {
  stopLive();
  clearInterval(tickTimer);
  clearInterval(refreshTimer);
  clearTimeout(refreshSoon);
  refreshSoon = null;
  closePanel();
  for (const id of [...vehicles.keys()]) removeVehicle(id);
  fitted = false;
  loaded = false;
  applyFilter();
}

function signedOut(notice) {
  const email = session.email;
  session.clear();
  teardown();
  if (!$('login-email').value) $('login-email').value = email;
  showLogin({ notice });
}

async function onLogin(ev) {
  ev.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  const showError = (msg) => {
    $('login-error').textContent = msg;
    $('login-error').hidden = false;
  };
  $('login-error').hidden = true;
  $('login-notice').hidden = true;
  if (!email || !password) return showError('Enter your email and password.');
  const button = $('login-submit');
  button.disabled = true;
  button.textContent = 'Signing in…';
  try {
    const res = await fetch(`${API}/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    if (res.status === 401) return showError('Wrong email or password.');
    if (res.status === 429) return showError('Too many attempts. Wait a minute and try again.');
    if (res.status === 422) return showError('Enter a valid email address.');
    if (!res.ok) return showError(`Sign-in failed: ${await errorText(res)}`);
    session.save(await res.json(), email);
    $('login-password').value = '';
    startApp();
  } catch {
    showError('Cannot reach the server. Check the connection and try again.');
  } finally {
    button.disabled = false;
    button.textContent = 'Sign in';
  }
}

async function boot() {
  try {
    const res = await fetch(`${API}/ui-config`, { headers: { Accept: 'application/json' } });
    if (res.ok) uiConfig = { ...uiConfig, ...(await res.json()) };
  } catch { /* keep the defaults: the map still works without tiles */ }

  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => signedOut('You have signed out.'));
  $('vehicle-search').addEventListener('input', applyFilter);
  $('panel-close').addEventListener('click', closePanel);
  $('sidebar-toggle').addEventListener('click', () =>
    setSidebar(!document.body.classList.contains('sidebar-open')));
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (document.body.classList.contains('sidebar-open')) setSidebar(false);
    else if (selectedId != null) closePanel();
  });
  window.addEventListener('online', () => {
    if (!live.stopped && !live.ws) { clearTimeout(live.timer); reconnect(); }
  });

  if (session.token && !session.expired) startApp();
  else if (session.token) signedOut('Your session has expired. Please sign in again.');
  else showLogin();
}

boot();
