// Boot and wiring: sign-in, the signed-in views, tabs, vehicle selection.
// Each part lives in its own module (see docs/dashboard.md); this one only
// connects them. Plain ES modules, no build step; Leaflet is the global `L`.

import { ApiError, AuthError, login, logout, onSessionExpired, resume, session, uiConfig } from './api.js';
import { $ } from './format.js';
import { fleet, applyLive, loadVehicles, reset as resetFleet, restatus, vehicles } from './fleet.js';
import { fitTo, initMap, map } from './mapview.js';
import { VehicleLayer } from './vehiclelayer.js';
import { initVehicleList, markSelected } from './vehiclelist.js';
import { closePanel, initPanel, openPanel } from './panel.js';
import { retryNow, startLive, stopLive } from './live.js';
import { clearAlerts, initAlerts, loadAlerts, onLiveAlert } from './alerts.js';
import { applyRole, clearGeofences, geofenceName, initGeofences, loadGeofences } from './geofences.js';
import { closePlayback, initPlayback, openPlayback } from './playback.js';
import { closeReport, initReports, openReport } from './reports.js';
import { installColours, renderLegend } from './status.js';

const LIST_REFRESH_MS = 60_000;  // names and new registrations
const NARROW = window.matchMedia('(max-width: 800px)');

let cfg = { tiles_url: '', tiles_attribution: '', center: [0, 0], zoom: 3 };
let layer = null;
let selectedId = null;
let fitted = false;
let tickTimer = null;
let listTimer = null;
let namesSoon = null;

// ---------------------------------------------------------------- selection

function select(id, { pan = true } = {}) {
  const v = vehicles.get(id);
  if (!v) return;
  selectedId = id;
  layer.select(id);
  markSelected(id);
  closeReport();
  openPanel(id);
  if (pan && v.state?.lat != null) centreBesidePanel([v.state.lat, v.state.lon]);
  if (NARROW.matches) setSidebar(false);
}

// Centres the vehicle in the part of the map the panel leaves free (its left, or above it on a narrow screen).
function centreBesidePanel(latlng) {
  const zoom = Math.max(map.getZoom(), 15);
  const r = $('vehicle-panel').getBoundingClientRect();
  const offset = NARROW.matches ? L.point(0, r.height / 2) : L.point((r.width + 12) / 2, 0);
  // A pan glides; a zoom jumps (an animated zoom still running would undo a playback's fit).
  map.setView(map.unproject(map.project(latlng, zoom).add(offset), zoom), zoom, { animate: zoom === map.getZoom() });
}

function unselect() {
  selectedId = null;
  layer?.select(null);
  markSelected(null);
  closePanel();
}

// ---------------------------------------------------------------- views

function setSidebar(open) {
  document.body.classList.toggle('sidebar-open', open);
  $('sidebar-toggle').setAttribute('aria-expanded', String(open));
}

function showTab(name) {
  for (const t of ['vehicles', 'alerts', 'geofences']) {
    const on = t === name;
    $(`tab-${t}`).setAttribute('aria-selected', String(on));
    $(`pane-${t}`).hidden = !on;
  }
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
  ($('login-email').value ? $('login-password') : $('login-email')).focus();
}

async function startApp() {
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('session-bar').hidden = false;
  $('sidebar-toggle').hidden = false;
  $('user-email').textContent = `${session.email} (${session.role})`;
  if (!map) {
    initMap(cfg);
    layer = new VehicleLayer(map, { onSelect: select });
    initGeofences(map, { beforeDraw: () => { unselect(); closePlayback(); closeReport(); } });
    initPlayback(map, { onClose: () => {} });
    wireFleetToMap();
  } else {
    map.invalidateSize();
  }
  applyRole();
  // Installers see vehicles and positions, not the fleet's alerts, geofences or trips (API roles).
  const installer = session.role === 'installer';
  $('tab-alerts').hidden = installer;
  $('tab-geofences').hidden = installer;
  $('panel-report').hidden = installer;
  showTab('vehicles');
  clearInterval(tickTimer);
  tickTimer = setInterval(() => restatus(), 1000);
  clearInterval(listTimer);
  listTimer = setInterval(() => loadVehicles().catch(() => {}), LIST_REFRESH_MS);
  startLive({
    beforeConnect: async () => { await loadVehicles(); fitOnce(); },
    onStates: (states, snapshot) => {
      const unknown = applyLive(states);
      if (unknown.length) fetchNamesSoon();
      if (snapshot) fitOnce();
    },
    onAlert: onLiveAlert,
  });
  if (!installer) {
    loadAlerts().catch(() => {});
    loadGeofences().catch(() => {});
  }
}

function wireFleetToMap() {
  fleet.addEventListener('states', (e) => layer.update(e.detail.changed));
  for (const type of ['list', 'filter', 'tick']) fleet.addEventListener(type, () => layer.schedule());
}

function fitOnce() {
  if (fitted) return;
  const pts = [...vehicles.values()].filter((v) => v.state?.lat != null).map((v) => [v.state.lat, v.state.lon]);
  fitted = fitTo(pts);
}

// A vehicle we did not know appeared on the live feed: fetch names soon.
function fetchNamesSoon() {
  if (namesSoon) return;
  namesSoon = setTimeout(() => { namesSoon = null; loadVehicles().catch(() => {}); }, 1000);
}

function teardown() {
  stopLive();
  clearInterval(tickTimer);
  clearInterval(listTimer);
  clearTimeout(namesSoon);
  namesSoon = null;
  closePlayback({ quiet: true });
  closeReport();
  unselect();
  layer?.clear();
  resetFleet();
  clearAlerts();
  clearGeofences();
  fitted = false;
}

function signedOut(notice) {
  const email = session.email;
  teardown();
  if (!$('login-email').value) $('login-email').value = email;
  showLogin({ notice });
}

async function onLogin(ev) {
  ev.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  const showError = (msg) => { $('login-error').textContent = msg; $('login-error').hidden = false; };
  $('login-error').hidden = true;
  $('login-notice').hidden = true;
  if (!email || !password) return showError('Enter your email and password.');
  const button = $('login-submit');
  button.disabled = true;
  button.textContent = 'Signing in…';
  try {
    await login(email, password);
    $('login-password').value = '';
    startApp();
  } catch (err) {
    if (!(err instanceof ApiError)) showError('Cannot reach the server. Check the connection and try again.');
    else if (err.status === 401) showError('Wrong email or password.');
    else if (err.status === 429) showError(`Too many attempts: ${err.message}.`);
    else if (err.status === 422) showError('Enter a valid email address.');
    else showError(`Sign-in failed: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = 'Sign in';
  }
}

function showAlertOnMap(e) {
  if (e.lat != null) map.setView([e.lat, e.lon], Math.max(map.getZoom(), 15));
  if (vehicles.has(e.vehicle_id)) select(e.vehicle_id, { pan: e.lat == null });
}

async function boot() {
  installColours();
  renderLegend($('legend'));
  try { cfg = { ...cfg, ...(await uiConfig()) }; } catch { /* defaults: the map works without tiles */ }

  initVehicleList(select);
  initPanel({
    onClose: unselect,
    onHistory: (id) => { closeReport(); openPlayback(id); },
    onReport: (id) => { closePlayback({ quiet: true }); openReport(id); },
  });
  initAlerts({ geofenceNameOf: geofenceName, show: showAlertOnMap });
  initReports({
    play: (id, from, to) => { closeReport(); openPlayback(id, from, to); },
    onClose: () => {},
  });
  onSessionExpired(() => signedOut('Your session has expired. Please sign in again.'));

  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', async () => {
    teardown();
    await logout();
    showLogin({ notice: 'You have signed out.' });
  });
  for (const t of ['vehicles', 'alerts', 'geofences']) $(`tab-${t}`).addEventListener('click', () => showTab(t));
  $('sidebar-toggle').addEventListener('click', () => setSidebar(!document.body.classList.contains('sidebar-open')));
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape') return;
    if (document.body.classList.contains('sidebar-open')) setSidebar(false);
    else if (!$('report').hidden) closeReport();
    else if (!$('playback').hidden) closePlayback();
    else if (selectedId != null) unselect();
  });
  window.addEventListener('online', retryNow);

  const hadSession = session.active;
  if (await resume()) startApp();
  else if ($('login-view').hidden) {
    showLogin(hadSession ? { notice: 'Your session has expired. Please sign in again.' } : {});
  }
}

// Unexpected rejections from background work must not leave a half-signed-in page.
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason instanceof AuthError) e.preventDefault();
});

boot();
