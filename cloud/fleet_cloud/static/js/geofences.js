// Geofences: the list in the sidebar, their shapes on the map, drawing a new
// circle or polygon and saving it (POST /geofences), deleting one. The API's
// validation message (self-intersecting polygon, radius out of range...) is
// shown in the form as it is.

import { api, AuthError, session } from './api.js';
import { $, el } from './format.js';
import { DrawTool } from './draw.js';

const EDITORS = ['owner', 'manager'];
const SEV_COLOUR = { info: '#0f766e', warning: '#d97706', critical: '#b42318' };
const LABELS_MIN_ZOOM = 13;
const KIND_TEXT = { circle: 'Circle', polygon: 'Polygon', corridor: 'Corridor' };

let map = null;
let drawTool = null;
let layer = null;
const fences = new Map(); // id -> GeoJSON feature
const shapes = new Map(); // id -> Leaflet layer
let draft = null;         // the shape being named: {kind, center, radius_m} | {kind, ring}
let draftLayer = null;
let onBusy = () => {};

export const geofenceName = (id) => fences.get(id)?.properties?.name || '';

export function initGeofences(m, { beforeDraw }) {
  map = m;
  onBusy = beforeDraw;
  drawTool = new DrawTool(map);
  layer = L.layerGroup().addTo(map);
  const labels = () => map.getContainer().classList.toggle('hide-geofence-labels', map.getZoom() < LABELS_MIN_ZOOM);
  map.on('zoomend', labels);
  labels();
  $('draw-circle').addEventListener('click', () => draw('circle'));
  $('draw-polygon').addEventListener('click', () => draw('polygon'));
  $('geofence-form').addEventListener('submit', save);
  $('geofence-cancel').addEventListener('click', closeForm);
  $('geofences-visible').addEventListener('change', (e) => {
    if (e.target.checked) layer.addTo(map); else map.removeLayer(layer);
  });
}

export function applyRole() {
  const editor = session.can(...EDITORS);
  $('geofence-tools').hidden = !editor;
  $('geofence-readonly').hidden = editor;
}

export async function loadGeofences() {
  const fc = await api('/geofences');
  fences.clear();
  for (const f of fc.features) fences.set(f.id, f);
  renderAll();
}

export function clearGeofences() {
  fences.clear();
  drawTool?.finish(null);
  closeForm();
  renderAll();
}

function shapeOf(f, style) {
  const g = f.geometry;
  const p = f.properties;
  if (g.type === 'Point') return L.circle([g.coordinates[1], g.coordinates[0]], { ...style, radius: p.radius_m });
  if (g.type === 'Polygon') return L.polygon(g.coordinates.map((r) => r.map(([lon, lat]) => [lat, lon])), style);
  const line = g.coordinates.map(([lon, lat]) => [lat, lon]);
  return L.polyline(line, { ...style, weight: 6, opacity: 0.35 });
}

function renderAll() {
  layer?.clearLayers();
  shapes.clear();
  const list = $('geofence-list');
  const editor = session.can(...EDITORS);
  const items = [...fences.values()].sort((a, b) => a.properties.name.localeCompare(b.properties.name));
  list.replaceChildren(...items.map((f) => {
    const p = f.properties;
    const colour = SEV_COLOUR[p.severity] || SEV_COLOUR.info;
    const shape = shapeOf(f, { pane: 'geofences', color: colour, weight: 2, fillOpacity: 0.08 });
    shape.bindTooltip(p.name, { sticky: true });
    shape.addTo(layer);
    // The name above the shape, in the geofence pane: under vehicle markers, never over them.
    const b = shape.getBounds();
    L.marker([b.getNorth(), b.getCenter().lng], {
      pane: 'geofences', interactive: false, keyboard: false,
      icon: L.divIcon({ className: 'geofence-label', html: '<span></span>', iconSize: null }),
    }).addTo(layer).getElement().firstChild.textContent = p.name;
    shapes.set(f.id, shape);
    const li = el('li', 'geofence-row');
    li.dataset.geofenceId = String(f.id);
    const main = el('button', 'geofence-main');
    main.type = 'button';
    main.title = 'Show on the map';
    const swatch = el('span', 'swatch');
    swatch.style.borderColor = colour;
    const size = p.kind === 'circle' ? ` · ${Math.round(p.radius_m)} m` : '';
    main.append(swatch, el('span', 'gf-name', p.name), el('span', 'gf-meta', `${KIND_TEXT[p.kind] || p.kind}${size} · ${p.severity}`));
    main.addEventListener('click', () => map.fitBounds(shape.getBounds(), { padding: [60, 60], maxZoom: 17 }));
    li.append(main);
    if (editor) {
      const del = el('button', 'secondary gf-delete', 'Delete');
      del.type = 'button';
      del.title = `Delete ${p.name}`;
      del.setAttribute('aria-label', `Delete geofence ${p.name}`);
      del.addEventListener('click', () => remove(f, li));
      li.append(del);
    }
    return li;
  }));
  const empty = $('geofence-empty');
  empty.hidden = items.length > 0;
  empty.textContent = editor ? 'No geofences yet. Draw a circle or a polygon on the map.' : 'No geofences yet.';
}

async function draw(kind) {
  closeForm();
  onBusy();
  const shape = await drawTool.start(kind);
  if (!shape) return;
  draft = shape;
  const style = { pane: 'geofences', color: '#7c3aed', weight: 2, fillOpacity: 0.15 };
  draftLayer = shape.kind === 'circle'
    ? L.circle(shape.center, { ...style, radius: shape.radius_m })
    : L.polygon(shape.ring, style);
  draftLayer.addTo(map);
  $('geofence-shape').textContent = shape.kind === 'circle'
    ? `Circle, radius ${shape.radius_m.toLocaleString()} m`
    : `Polygon with ${shape.ring.length} corners`;
  $('geofence-error').hidden = true;
  $('geofence-form').hidden = false;
  $('geofence-name').value = '';
  $('geofence-name').focus();
}

function closeForm() {
  draft = null;
  if (draftLayer) map?.removeLayer(draftLayer);
  draftLayer = null;
  $('geofence-form').hidden = true;
}

function showError(msg) {
  $('geofence-error').textContent = msg;
  $('geofence-error').hidden = false;
}

async function save(ev) {
  ev.preventDefault();
  if (!draft) return;
  const name = $('geofence-name').value.trim();
  if (!name) { showError('Give the geofence a name.'); $('geofence-name').focus(); return; }
  const geometry = draft.kind === 'circle'
    ? { type: 'Point', coordinates: [draft.center[1], draft.center[0]] }
    : { type: 'Polygon', coordinates: [[...draft.ring, draft.ring[0]].map(([lat, lon]) => [lon, lat])] };
  const properties = { name, severity: $('geofence-severity').value };
  if (draft.kind === 'circle') properties.radius_m = draft.radius_m;
  const button = $('geofence-save');
  button.disabled = true;
  try {
    const f = await api('/geofences', { method: 'POST', body: { type: 'Feature', geometry, properties } });
    fences.set(f.id, f);
    closeForm();
    renderAll();
  } catch (err) {
    if (err instanceof AuthError) return;
    showError(`Not saved: ${err.message}${err.field ? ` (${err.field})` : ''}`);
  } finally {
    button.disabled = false;
  }
}

async function remove(f, li) {
  if (!confirm(`Delete geofence “${f.properties.name}”? Its past events are kept.`)) return;
  try {
    await api(`/geofences/${f.id}`, { method: 'DELETE' });
    fences.delete(f.id);
    renderAll();
  } catch (err) {
    if (err instanceof AuthError) return;
    li.append(el('span', 'error-text', `Not deleted: ${err.message}`));
  }
}
