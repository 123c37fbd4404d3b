// Vehicle markers on the map, with our own grid clustering.
//
// Why not leaflet.markercluster: our markers move several times a second, and
// markercluster re-inserts a moved marker into its cluster tree on every move.
// A screen-space grid recomputed at most twice a second is one O(n) pass, keeps
// only what is in view in the DOM (thousands of vehicles cost no DOM nodes
// off-screen), and lets a cluster show its status mix in the status colours.

import { fmtSpeed, isNum } from './format.js';
import { matches, vehicles } from './fleet.js';
import { STATUSES, statusInfo } from './status.js';

const CELL_PX = 60;              // vehicles closer than about this on screen share a cluster
const NO_CLUSTER_ZOOM = 17;      // street level: every vehicle on its own
const LABELS_MIN_ZOOM = 10;      // name labels only when zoomed in enough...
const LABELS_MAX = 15;           // ...and few enough single markers in view not to overlap
const REBUILD_EVERY_MS = 500;

// The element is born with its heading: set later, the rotation would animate
// from north on every marker that appears.
const markerHtml = (hdg) =>
  `<div class="vm-rot"${isNum(hdg) ? ` style="transform: rotate(${hdg}deg)"` : ''}>` +
  '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' +
  '<circle class="vm-disc" cx="12" cy="12" r="10"/>' +
  '<path class="vm-arrow" d="M12 3.5 L17.5 17.5 L12 14.5 L6.5 17.5 Z"/>' +
  '<circle class="vm-dot" cx="12" cy="12" r="3.5"/></svg></div>';

export class VehicleLayer {
  constructor(map, { onSelect }) {
    this.map = map;
    this.onSelect = onSelect;
    this.group = L.layerGroup().addTo(map);
    this.markers = new Map();   // vehicle id -> {marker, el, rot, label, shown}
    this.clusters = new Map();  // cell key -> L.marker
    this.selectedId = null;
    this.lastBuild = 0;
    this.timer = null;
    map.on('moveend zoomend', () => this.rebuild());
  }

  /** Re-cluster soon (at most every REBUILD_EVERY_MS). */
  schedule() {
    if (this.timer) return;
    const wait = Math.max(0, this.lastBuild + REBUILD_EVERY_MS - performance.now());
    this.timer = setTimeout(() => { this.timer = null; this.rebuild(); }, wait);
  }

  select(id) {
    const prev = this.markers.get(this.selectedId);
    this.selectedId = id;
    if (prev?.shown) this.paint(vehicles.get(prev.id));
    this.rebuild();
  }

  /** Moves and repaints markers that are on the map; clustering follows on the next rebuild. */
  update(changed) {
    for (const v of changed) {
      const m = this.markers.get(v.id);
      if (m?.shown && isNum(v.state?.lat)) {
        const ll = m.marker.getLatLng();
        if (ll.lat !== v.state.lat || ll.lng !== v.state.lon) m.marker.setLatLng([v.state.lat, v.state.lon]);
        this.paint(v);
      }
    }
    this.schedule();
  }

  rebuild() {
    clearTimeout(this.timer);
    this.timer = null;
    this.lastBuild = performance.now();
    const map = this.map;
    const zoom = map.getZoom();
    const view = map.getPixelBounds().pad(0.25);
    const cells = new Map();
    const solo = [];
    for (const v of vehicles.values()) {
      if (v.status === 'unknown' || !isNum(v.state?.lat) || !matches(v)) continue;
      const p = map.project([v.state.lat, v.state.lon], zoom);
      if (!view.contains(p) && v.id !== this.selectedId) continue;
      if (zoom >= NO_CLUSTER_ZOOM || v.id === this.selectedId) { solo.push(v); continue; }
      const key = `${Math.floor(p.x / CELL_PX)}:${Math.floor(p.y / CELL_PX)}`;
      const cell = cells.get(key);
      if (cell) cell.push(v); else cells.set(key, [v]);
    }
    const keepMarkers = new Set();
    const keepClusters = new Set();
    for (const [key, members] of cells) {
      if (members.length === 1) solo.push(members[0]);
      else { keepClusters.add(key); this.showCluster(key, members); }
    }
    for (const v of solo) { keepMarkers.add(v.id); this.showMarker(v); }
    for (const [id, m] of this.markers) {
      if (m.shown && !keepMarkers.has(id)) { this.group.removeLayer(m.marker); m.shown = false; }
      if (!vehicles.has(id)) this.markers.delete(id);
    }
    for (const [key, c] of this.clusters) {
      if (!keepClusters.has(key)) { this.group.removeLayer(c); this.clusters.delete(key); }
    }
    // Closed, a label costs nothing when its marker moves (an open one is measured
    // by Leaflet on every move, a forced layout per marker).
    const labels = zoom >= LABELS_MIN_ZOOM && solo.length <= LABELS_MAX;
    for (const v of solo) {
      const mk = this.markers.get(v.id).marker;
      if (labels && !mk.isTooltipOpen()) mk.openTooltip();
      else if (!labels && mk.isTooltipOpen()) mk.closeTooltip();
    }
  }

  showMarker(v) {
    let m = this.markers.get(v.id);
    if (!m) {
      const icon = L.divIcon({ className: 'vehicle-marker', html: '', iconSize: [26, 26], iconAnchor: [13, 13] });
      const marker = L.marker([v.state.lat, v.state.lon], { icon, keyboard: true, riseOnHover: true });
      const label = document.createElement('span');
      marker.bindTooltip(label, { permanent: true, direction: 'right', offset: [12, 0], className: 'vehicle-label', opacity: 1 });
      marker.on('click', () => this.onSelect(v.id, { pan: false }));
      marker.on('keypress', (e) => { if (e.originalEvent.key === 'Enter') this.onSelect(v.id, { pan: false }); });
      m = { id: v.id, marker, label, el: null, rot: null, shown: false, status: null };
      this.markers.set(v.id, m);
    }
    if (!m.shown) {
      m.marker.options.icon.options.html = markerHtml(v.state.hdg);
      m.marker.setLatLng([v.state.lat, v.state.lon]);
      this.group.addLayer(m.marker);
      m.el = m.marker.getElement();   // Leaflet makes a new element on every add
      m.rot = m.el.querySelector('.vm-rot');
      m.el.dataset.vehicleId = String(v.id);
      m.status = null;
      m.selected = null;
      m.shown = true;
    } else {
      const ll = m.marker.getLatLng();
      if (ll.lat !== v.state.lat || ll.lng !== v.state.lon) m.marker.setLatLng([v.state.lat, v.state.lon]);
    }
    this.paint(v);
  }

  paint(v) {
    const m = this.markers.get(v.id);
    if (!m?.shown || !v.state) return;
    const s = v.state;
    if (m.status !== v.status) {
      m.el.classList.remove(...STATUSES.map((x) => `status-${x.key}`));
      m.el.classList.add(`status-${v.status}`);
      m.status = v.status;
    }
    m.el.dataset.lat = String(s.lat);
    m.el.dataset.lon = String(s.lon);
    m.el.dataset.status = v.status;
    m.el.classList.toggle('no-heading', !isNum(s.hdg));
    m.rot.style.transform = isNum(s.hdg) ? `rotate(${s.hdg}deg)` : '';
    const selected = v.id === this.selectedId;
    if (m.selected !== selected) {
      m.el.classList.toggle('selected', selected);
      m.marker.setZIndexOffset(selected ? 1000 : 0);
      m.selected = selected;
    }
    const text = `${v.name}, ${statusInfo(v.status).label.toLowerCase()}, ${fmtSpeed(s.spd)}`;
    m.el.setAttribute('aria-label', text);
    m.el.title = text;
    m.label.textContent = `${v.name} · ${fmtSpeed(s.spd)}`;
  }

  showCluster(key, members) {
    let lat = 0, lon = 0;
    const counts = new Map();
    for (const v of members) {
      lat += v.state.lat;
      lon += v.state.lon;
      counts.set(v.status, (counts.get(v.status) || 0) + 1);
    }
    const ll = [lat / members.length, lon / members.length];
    const n = members.length;
    // A ring in the status colours, in legend order, each share by its count.
    let acc = 0;
    const stops = STATUSES.filter((s) => counts.get(s.key)).map((s) => {
      const from = (acc / n) * 360;
      acc += counts.get(s.key);
      return `var(--${s.key}) ${from}deg ${(acc / n) * 360}deg`;
    });
    const size = n < 10 ? 34 : n < 100 ? 40 : 48;
    const html = `<div class="vc-ring" style="background: conic-gradient(${stops.join(', ')})"><span>${n}</span></div>`;
    const title = `${n} vehicles: ` + STATUSES.filter((s) => counts.get(s.key))
      .map((s) => `${counts.get(s.key)} ${s.label.toLowerCase()}`).join(', ') + '. Click to zoom in.';
    let c = this.clusters.get(key);
    if (!c) {
      c = L.marker(ll, { keyboard: true });
      c.on('click', () => {
        const pts = c.members.map((v) => [v.state.lat, v.state.lon]);
        this.map.fitBounds(L.latLngBounds(pts), { padding: [80, 80], maxZoom: NO_CLUSTER_ZOOM });
      });
      this.clusters.set(key, c);
      this.group.addLayer(c);
    } else {
      c.setLatLng(ll);
    }
    c.members = members;
    if (c.html !== html) {
      c.setIcon(L.divIcon({ className: 'vehicle-cluster', html, iconSize: [size, size], iconAnchor: [size / 2, size / 2] }));
      c.html = html;
    }
    const el = c.getElement();
    if (el) { el.title = title; el.setAttribute('aria-label', title); el.dataset.count = String(n); }
  }

  clear() {
    this.group.clearLayers();
    this.markers.clear();
    this.clusters.clear();
    this.selectedId = null;
  }
}
