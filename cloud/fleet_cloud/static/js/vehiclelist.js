// The vehicle list in the sidebar: search, status filter chips with counts,
// one row per vehicle (name, device, speed, age of the last update).

import { $, collator, el, fmtAge, fmtSpeed } from './format.js';
import { filter, fleet, isLoaded, matches, setFilter, vehicles } from './fleet.js';
import { STATUSES, statusInfo } from './status.js';

const rows = new Map(); // vehicle id -> {li, btn, dot, name, sub, speed, age, status, lastStatus}
let onSelect = () => {};
let selectedId = null;
let countsSoon = 0; // one repaint and recount per frame however many live frames arrive
let onScreen = null;
const onScreenIds = new Set();
const dirty = new Set();

function flush() {
  countsSoon = 0;
  const now = Date.now();
  for (const id of dirty) { const v = vehicles.get(id); if (v) paintRow(v, now); }
  dirty.clear();
  applyFilter();
}

export function initVehicleList(select) {
  onSelect = select;
  $('vehicle-search').addEventListener('input', (e) => setFilter({ q: e.target.value }));
  const chips = $('status-filter');
  for (const s of STATUSES) {
    const b = el('button', 'chip');
    b.type = 'button';
    b.dataset.status = s.key;
    b.setAttribute('aria-pressed', 'false');
    b.title = `Show only ${s.label.toLowerCase()} vehicles (${s.help})`;
    b.append(el('span', `dot status-${s.key}`), el('span', 'chip-label', s.label), el('span', 'chip-count', '0'));
    b.addEventListener('click', () => {
      const next = new Set(filter.statuses);
      if (next.has(s.key)) next.delete(s.key); else next.add(s.key);
      setFilter({ statuses: next });
    });
    chips.append(b);
  }
  fleet.addEventListener('list', renderList);
  fleet.addEventListener('filter', () => { syncChips(); applyFilter(); });
  // Only rows on screen (or near it) are repainted: a fleet of thousands would
  // otherwise rewrite thousands of rows several times a second.
  onScreen = new IntersectionObserver((entries) => {
    const now = Date.now();
    for (const e of entries) {
      const id = Number(e.target.dataset.vehicleId);
      if (e.isIntersecting) { onScreenIds.add(id); const v = vehicles.get(id); if (v) paintRow(v, now); }
      else onScreenIds.delete(id);
    }
  }, { root: $('vehicle-list'), rootMargin: '300px 0px' });
  fleet.addEventListener('states', (e) => {
    for (const v of e.detail.changed) if (onScreenIds.has(v.id)) dirty.add(v.id);
    if (!countsSoon) countsSoon = requestAnimationFrame(flush);
  });
  fleet.addEventListener('tick', (e) => {
    for (const id of onScreenIds) { const v = vehicles.get(id); if (v) paintRow(v, e.detail.now); }
    applyFilter();
  });
}

export function markSelected(id) {
  for (const x of [rows.get(selectedId), rows.get(id)]) {
    if (!x) continue;
    const on = x.id === id;
    x.li.classList.toggle('selected', on);
    x.btn.setAttribute('aria-pressed', String(on));
  }
  selectedId = id;
}

function buildRow(v) {
  const li = el('li', 'vehicle-row');
  li.dataset.vehicleId = String(v.id);
  const btn = el('button', 'row-button');
  btn.type = 'button';
  btn.setAttribute('aria-pressed', 'false');
  const dot = el('span', 'dot');
  dot.setAttribute('aria-hidden', 'true');
  const main = el('span', 'row-main');
  const name = el('span', 'row-name');
  const sub = el('span', 'row-sub');
  main.append(name, sub);
  const meta = el('span', 'row-meta');
  const speed = el('span', 'row-speed');
  const age = el('span', 'row-age');
  meta.append(speed, age);
  const status = el('span', 'sr-only');
  btn.append(dot, main, meta, status);
  btn.addEventListener('click', () => onSelect(v.id));
  li.append(btn);
  const row = { id: v.id, li, btn, dot, name, sub, speed, age, status, lastStatus: null };
  rows.set(v.id, row);
  onScreen.observe(li);
  return row;
}

function paintRow(v, now) {
  const r = rows.get(v.id);
  if (!r) return;
  if (r.lastStatus !== v.status) {
    r.dot.className = `dot status-${v.status}`;
    r.status.textContent = statusInfo(v.status).label;
    r.lastStatus = v.status;
  }
  r.name.textContent = v.name;
  r.sub.textContent = v.device_id || 'no device';
  const has = v.status !== 'unknown';
  r.speed.textContent = has ? (v.status === 'moving' ? fmtSpeed(v.state.spd) : statusInfo(v.status).label) : 'no position yet';
  r.age.textContent = has ? fmtAge(v.state.t, now) : '';
}

function renderList() {
  const list = $('vehicle-list');
  for (const [id, r] of rows) {
    if (!vehicles.has(id)) { onScreen.unobserve(r.li); r.li.remove(); rows.delete(id); onScreenIds.delete(id); }
  }
  const sorted = [...vehicles.values()].sort((a, b) => collator.compare(a.name, b.name) || a.id - b.id);
  const now = Date.now();
  for (const v of sorted) {
    const r = rows.get(v.id) || buildRow(v);
    paintRow(v, now);
    list.appendChild(r.li); // appending an existing node moves it: this sorts in place
  }
  markSelected(selectedId);
  applyFilter();
}

function syncChips() {
  for (const b of $('status-filter').children) {
    b.setAttribute('aria-pressed', String(filter.statuses.has(b.dataset.status)));
  }
}

function applyFilter() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s.key, 0]));
  let shown = 0;
  for (const v of vehicles.values()) {
    if (v.status in counts) counts[v.status] += 1;
    const r = rows.get(v.id);
    if (!r) continue;
    const ok = matches(v);
    r.li.hidden = !ok;
    if (ok) shown += 1;
  }
  for (const b of $('status-filter').children) b.querySelector('.chip-count').textContent = String(counts[b.dataset.status]);
  const n = vehicles.size;
  const filtered = filter.q || filter.statuses.size;
  $('vehicle-summary').textContent = !n ? '' : filtered ? `${shown} of ${n} vehicles shown` : `${n} vehicle${n === 1 ? '' : 's'}`;
  const empty = $('vehicle-empty');
  empty.hidden = false;
  if (!isLoaded()) empty.textContent = 'Loading vehicles…';
  else if (!n) empty.textContent = 'No vehicles yet. Vehicles appear here once they are registered.';
  else if (!shown) empty.textContent = 'No vehicle matches the search and status filter.';
  else empty.hidden = true;
  const positioned = [...vehicles.values()].some((v) => v.status !== 'unknown');
  const banner = $('map-banner');
  banner.hidden = !isLoaded() || positioned;
  banner.textContent = n ? 'No vehicle has reported a position yet.' : 'No vehicles yet.';
}
