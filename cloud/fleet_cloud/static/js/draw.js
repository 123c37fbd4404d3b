// Drawing a circle or a polygon on the map, on plain Leaflet events.
//
// Why not leaflet-draw: its last release (1.0.4) is from 2018, it patches
// Leaflet internals, and we need two shapes: a few dozen lines here, with
// touch-friendly taps (click-click, no dragging) for tablets.

import { $ } from './format.js';

const MIN_RADIUS_M = 20;
const CLOSE_PX = 14; // a click this near the first vertex closes the polygon
const STYLE = { pane: 'geofences', color: '#7c3aed', weight: 2, fillOpacity: 0.12, dashArray: '6 4' };

export class DrawTool {
  constructor(map) {
    this.map = map;
    this.active = null;
    $('draw-cancel').addEventListener('click', () => this.finish(null));
    $('draw-finish').addEventListener('click', () => this.closePolygon());
    document.addEventListener('keydown', (e) => {
      if (!this.active) return;
      if (e.key === 'Escape') { e.stopPropagation(); this.finish(null); }
      if (e.key === 'Backspace' && this.active.kind === 'polygon') { e.preventDefault(); this.undoVertex(); }
      if (e.key === 'Enter' && this.active.kind === 'polygon') this.closePolygon();
    }, true);
  }

  /** Resolves with {kind:'circle', center:[lat, lon], radius_m} or {kind:'polygon', ring}, or null. */
  start(kind) {
    this.finish(null);
    return new Promise((resolve) => {
      const map = this.map;
      const layer = L.layerGroup().addTo(map);
      this.active = { kind, resolve, layer, points: [], shape: null, band: null };
      map.doubleClickZoom.disable();
      map.getContainer().classList.add('drawing');
      this.onClick = (e) => this.click(e.latlng);
      this.onMove = (e) => this.move(e.latlng);
      this.onDbl = () => this.closePolygon();
      map.on('click', this.onClick);
      map.on('mousemove', this.onMove);
      map.on('dblclick', this.onDbl);
      $('draw-hint').hidden = false;
      this.hint();
    });
  }

  hint() {
    const a = this.active;
    const n = a.points.length;
    let text;
    if (a.kind === 'circle') {
      text = n === 0 ? 'Click the centre of the circle.' : 'Click again to set the radius.';
    } else {
      text = n < 3 ? `Click to add corners (${n} of at least 3).`
        : 'Click to add corners; click the first corner, double-click or press Finish to close.';
    }
    $('draw-hint-text').textContent = text;
    $('draw-finish').hidden = !(a.kind === 'polygon' && n >= 3);
  }

  click(ll) {
    const a = this.active;
    if (!a) return;
    if (a.kind === 'circle') {
      if (!a.points.length) {
        a.points.push(ll);
        a.shape = L.circle(ll, { ...STYLE, radius: MIN_RADIUS_M }).addTo(a.layer);
        L.circleMarker(ll, { pane: 'geofences', radius: 3, color: STYLE.color }).addTo(a.layer);
      } else {
        const r = Math.max(MIN_RADIUS_M, a.points[0].distanceTo(ll));
        this.finish({ kind: 'circle', center: [a.points[0].lat, a.points[0].lng], radius_m: Math.round(r) });
        return;
      }
    } else {
      if (a.points.length >= 3) {
        const first = this.map.latLngToContainerPoint(a.points[0]);
        if (first.distanceTo(this.map.latLngToContainerPoint(ll)) <= CLOSE_PX) { this.closePolygon(); return; }
      }
      // The two clicks of a double-click add one corner, not two.
      const last = a.points[a.points.length - 1];
      if (last && this.map.latLngToContainerPoint(last).distanceTo(this.map.latLngToContainerPoint(ll)) < 3) return;
      a.points.push(ll);
      L.circleMarker(ll, { pane: 'geofences', radius: a.points.length === 1 ? 6 : 4, color: STYLE.color, fillOpacity: 1 })
        .addTo(a.layer);
      if (!a.shape) a.shape = L.polygon([], STYLE).addTo(a.layer);
      a.shape.setLatLngs(a.points);
    }
    this.hint();
  }

  move(ll) {
    const a = this.active;
    if (!a || !a.points.length) return;
    if (a.kind === 'circle') {
      a.shape.setRadius(Math.max(MIN_RADIUS_M, a.points[0].distanceTo(ll)));
    } else {
      if (!a.band) a.band = L.polyline([], { ...STYLE, fill: false, interactive: false }).addTo(a.layer);
      a.band.setLatLngs([a.points[a.points.length - 1], ll, a.points[0]]);
    }
  }

  undoVertex() {
    const a = this.active;
    if (!a?.points.length) return;
    a.points.pop();
    a.layer.clearLayers();
    a.shape = a.band = null;
    const pts = a.points;
    a.points = [];
    for (const p of pts) this.click(p);
    this.hint();
  }

  closePolygon() {
    const a = this.active;
    if (!a || a.kind !== 'polygon' || a.points.length < 3) return;
    const ring = a.points.map((p) => [p.lat, p.lng]);
    this.finish({ kind: 'polygon', ring });
  }

  finish(result) {
    const a = this.active;
    if (!a) return;
    this.active = null;
    const map = this.map;
    map.off('click', this.onClick);
    map.off('mousemove', this.onMove);
    map.off('dblclick', this.onDbl);
    map.removeLayer(a.layer);
    map.getContainer().classList.remove('drawing');
    setTimeout(() => map.doubleClickZoom.enable(), 300); // not the closing double-click
    $('draw-hint').hidden = true;
    a.resolve(result);
  }
}
