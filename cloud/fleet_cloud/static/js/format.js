// Formatting helpers: numbers, times, durations, distances. No state.

export const $ = (id) => document.getElementById(id);
export const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
export const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

export const fmtSpeed = (spd) => (isNum(spd) ? `${Math.round(spd)} km/h` : '–');

export function fmtAge(t, now) {
  if (!isNum(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

const COMPASS = ['N', 'NE', 'E', 'SE', 'S', 'SW', 'W', 'NW'];
export function fmtHeading(hdg) {
  if (!isNum(hdg)) return '–';
  return `${Math.round(hdg)}° ${COMPASS[Math.round((((hdg % 360) + 360) % 360) / 45) % 8]}`;
}

export function fmtTime(t) {
  const d = new Date(t);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' });
}

export function fmtDateTime(t) {
  return new Date(t).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
}

export function fmtDuration(ms) {
  if (!isNum(ms) || ms < 0) return '–';
  const m = Math.round(ms / 60000);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

export const fmtKm = (m) => (isNum(m) ? `${(m / 1000).toFixed(1)} km` : '–');

/** A Date as the value of an <input type="datetime-local"> (local time, minutes). */
export function toLocalInput(t) {
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The value of a datetime-local input as UTC ms, or NaN when empty/invalid. */
export const fromLocalInput = (value) => (value ? new Date(value).getTime() : NaN);
