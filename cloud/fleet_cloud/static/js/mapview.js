// The Leaflet map: created once, with tiles when /ui-config names a tile server
// and a labelled lat/lon grid otherwise (the map must work with no internet).

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
    const line = { pane: 'grid', color: '#c3cad3', weight: 1, opacity: 0.9, interactive: false };
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

export let map = null;

export function initMap(cfg) {
  map = L.map('map', {
    center: cfg.center, zoom: cfg.zoom, minZoom: 2, maxZoom: 19,
    worldCopyJump: true, zoomControl: false,
  });
  L.control.zoom({ position: 'bottomright' }).addTo(map);
  L.control.scale({ imperial: false, position: 'bottomleft' }).addTo(map);
  map.createPane('grid').style.zIndex = 250;       // above tiles, below shapes and markers
  map.createPane('geofences').style.zIndex = 350;  // below tracks
  map.createPane('track').style.zIndex = 420;
  map.createPane('playback').style.zIndex = 660;   // above vehicle markers
  if (cfg.tiles_url) {
    L.tileLayer(cfg.tiles_url, { maxZoom: 19, attribution: cfg.tiles_attribution || '' }).addTo(map);
  } else {
    map.getContainer().classList.add('no-tiles');
    map.attributionControl.addAttribution('No map tiles configured: lat/lon grid');
    new Graticule().addTo(map);
  }
  // A hook for tests and for debugging from the console; nothing in the app reads it.
  window.fleetDashboard = { map };
  return map;
}

export function fitTo(points, maxZoom = 15) {
  if (!map || !points.length) return false;
  map.fitBounds(L.latLngBounds(points), { padding: [60, 60], maxZoom, animate: false });
  return true;
}
